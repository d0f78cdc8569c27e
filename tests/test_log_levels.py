"""
``log_level`` (:mod:`tproxy.log_levels`): what twistd's log gets, and the
per-client lines (malformed requests, client timeouts) logged at ``debug``
only when asked for.
"""

from twisted.logger import LogLevel, LogLevelFilterPredicate, Logger
from twisted.trial.unittest import SynchronousTestCase

from tproxy import log_levels
from tproxy.log_levels import level_filter, level_the_log, set_log_level
from tproxy.testing import Harness
from tproxy.worker import worker_observer
from tests.helpers import capture_log, log_messages

UP = "127.0.0.1:9001"


def _client_lines(events):
    return [m for m in (log_messages(events, "tproxy.http.connection")
                        + log_messages(events, "tproxy.http.exchange"))
            if m.startswith(("bad request from", "client ", "request body too large"))]


class ClientErrorTests(SynchronousTestCase):
    """A malformed request is answered ``400`` whatever the level; its line
    is logged (at ``debug``) only with ``"log_level": "debug"``."""

    def harness(self, **config):
        config["upstreams"] = {"default": {"peers": [UP]}}
        return Harness(config=config, plugins=["router", "least_conn"])

    def test_default_no_line(self):
        """By default a bad request builds no log event at all."""
        h = self.harness()
        events = capture_log(self)
        conn = h.connect()
        conn.send(b"GARBAGE\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses], [400])
        self.assertTrue(conn.closed)
        self.assertEqual(_client_lines(events), [])

    def test_debug_line(self):
        """With ``debug`` the line is there, at level ``debug``."""
        h = self.harness(log_level="debug")
        events = capture_log(self)
        conn = h.connect()
        conn.send(b"GARBAGE\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses], [400])
        lines = _client_lines(events)
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith("bad request from "), lines)
        self.assertEqual(
            [e["log_level"] for e in events
             if e.get("log_namespace") == "tproxy.http.connection"], [LogLevel.debug])

    def silent_after(self, level, data):
        """``data`` sent at ``level``, then 61 s of silence: the responses
        and the client lines logged."""
        h = self.harness(log_level=level)
        events = capture_log(self)
        conn = h.connect()
        conn.send(data)
        h.advance(61)
        return [r.status for r in conn.responses], _client_lines(events)

    def test_header_timeout(self):
        """A head that never ends: ``408``, and its line only with ``debug``."""
        for level, expected in (("info", 0), ("debug", 1)):
            statuses, lines = self.silent_after(level, b"GET / HTTP/1.1\r\nHost: x\r\n")
            self.assertEqual(statuses, [408], level)
            self.assertEqual(len(lines), expected, level)

    def test_body_timeout(self):
        """A body that never comes: its line only with ``debug``."""
        for level, expected in (("info", 0), ("debug", 1)):
            _, lines = self.silent_after(
                level, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            self.assertEqual(len(lines), expected, (level, lines))
            if expected:
                self.assertIn("sent no body for 60s", lines[0])


    def test_body_too_large(self):
        """A declared body over ``proxy.max_body_size``: ``413``, and its
        line only with ``debug``."""
        for level, expected in (("info", []), ("debug", [
                "request body too large: 11 bytes for a limit of 10"])):
            h = self.harness(log_level=level, proxy={"max_body_size": 10})
            events = capture_log(self)
            conn = h.connect()
            conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
            self.assertEqual([r.status for r in conn.responses], [413], level)
            self.assertEqual(_client_lines(events), expected, level)


class FilterTests(SynchronousTestCase):
    """The filter in front of twistd's log (and a worker's)."""

    def setUp(self):
        self.addCleanup(set_log_level, "info")

    def emit(self, observer, namespace="tproxy.x"):
        log = Logger(namespace=namespace, observer=observer)
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.error("e")
        log.critical("c")

    def test_levels(self):
        """Each level lets itself and those above it through."""
        predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
        seen = []
        observer = level_filter(seen.append, predicate)
        self.emit(observer)
        self.assertEqual([e["log_format"] for e in seen], ["i", "w", "e", "c"])
        for name, expected in (("debug", "diwec"), ("warn", "wec"), ("error", "ec"),
                               ("critical", "c")):
            del seen[:]
            set_log_level(name, predicate)
            self.emit(observer)
            self.assertEqual("".join(e["log_format"] for e in seen), expected, name)

    def test_level_the_log(self):
        """The observers twistd begins the log with are filtered on the
        process's level, which a later call (a reload) changes."""
        begun = []

        class Beginner(object):
            def beginLoggingTo(self, observers, *args, **kwargs):
                begun.extend(observers)

        beginner = Beginner()
        level_the_log("error", beginner)
        level_the_log("error", beginner)    # idempotent: wrapped once
        seen = []
        beginner.beginLoggingTo([seen.append])
        self.assertEqual(len(begun), 1)
        self.emit(begun[0])
        self.assertEqual("".join(e["log_format"] for e in seen), "ec")
        set_log_level("debug")
        del seen[:]
        self.emit(begun[0])
        self.assertEqual("".join(e["log_format"] for e in seen), "diwec")

    def test_withQuiet(self):
        """The level and the Redis clients' quiet (two wraps of the one
        ``beginLoggingTo``) both apply to the log begun, each once."""
        from tproxy.redis_connections import quiet_the_log
        begun = []

        class Beginner(object):
            def beginLoggingTo(self, observers, *args, **kwargs):
                begun.extend(observers)

        beginner = Beginner()
        quiet_the_log(beginner)
        level_the_log("info", beginner)
        quiet_the_log(beginner)
        level_the_log("info", beginner)
        seen = []
        beginner.beginLoggingTo([seen.append])
        self.assertEqual(len(begun), 1)
        self.emit(begun[0])
        begun[0]({"message": ("Discarding dead connection.",), "isError": 0,
                  "log_level": LogLevel.info, "log_namespace": "log_legacy"})
        # (debug: below the level; the info line of a dead connection: noise)
        self.assertEqual([e.get("log_format") for e in seen], ["i", "w", "e", "c"])

    def test_worker_observer(self):
        """A worker's log: ``info`` until its configuration sets the level."""
        seen = []
        observer = worker_observer(seen.append)
        self.emit(observer)
        self.assertEqual("".join(e["log_format"] for e in seen), "iwec")
        del seen[:]
        set_log_level("debug")
        self.emit(observer)
        self.assertEqual("".join(e["log_format"] for e in seen), "diwec")
        self.assertIs(log_levels.predicate.logLevelForNamespace(""), LogLevel.debug)


class UpstreamErrorTests(SynchronousTestCase):
    """An upstream's protocol errors are ``error`` lines (nginx's level for
    "upstream sent invalid header" and "upstream sent too big header"): an
    operator's ``"log_level": "error"`` still shows them."""

    def errors_of(self, answer, **config):
        from tests.test_proxy_connections import scripted
        from tests.upstreams import Scripted
        h = scripted({"default": {UP: Scripted(lambda request: answer)}}, **config)
        events = capture_log(self)
        resp = h.connect().request("GET", "/")
        self.assertEqual(resp.status, 502)
        from twisted.logger import formatEvent
        return [(e["log_level"], formatEvent(e)) for e in events
                if e.get("log_namespace", "").startswith("tproxy.http")]

    def test_invalidResponse(self):
        [(level, message)] = self.errors_of(b"NOT HTTP AT ALL\r\n\r\n")
        self.assertEqual(level, LogLevel.error)
        self.assertTrue(message.startswith("invalid response from 127.0.0.1:9001"), message)

    def test_tooBigHeader(self):
        [(level, message)] = self.errors_of(
            b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 70000 + b"\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(level, LogLevel.error)
        self.assertIn("sent too big header", message)
