"""
Tests for :mod:`tproxy.builtins.access_log`: one JSON line per request, its
fields, and its targets (stdout/stderr, a rotated file, twisted.logger),
written in batches.
"""

import json
import os

from twisted.logger import eventAsJSON, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Request, RequestContext
from tproxy.builtins import access_log
from tproxy.config import ConfigError, validate_config
from tproxy.http import connection, pyparser, reader
from tproxy.http.headers import Headers
from tproxy.log_sinks import FdSink
from tproxy.plugins import build_plugin_manager
from tproxy.testing import Harness

from tests.helpers import temp_path
from tests.test_router import make_gateway

FIELDS = ["time", "request_id", "client", "method", "uri", "status",
          "bytes_sent", "request_time", "upstream_addr", "upstream_time",
          "route", "error"]

RECORD = {
    "time": "2023-11-14T22:13:20.255Z", "request_id": "r-1",
    "client": "203.0.113.9", "method": "GET",
    "uri": "/api/v1/users?q=1", "status": 200, "bytes_sent": 512,
    "request_time": 0.005, "upstream_addr": "10.0.0.5:9001",
    "upstream_time": 0.003, "route": "api", "error": None}


class _Base(SynchronousTestCase):

    def setUp(self):
        self.gateway = make_gateway()
        self.clock = self.gateway.reactor
        self.clock.advance(1700000000.25)  # 2023-11-14T22:13:20.250Z
        self.events = []
        observer = lambda e: self.events.append(e) if "access_log" in e else None
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def proxied(self, headers=None):
        """A request that went to an upstream and succeeded."""
        peer, _ = self.gateway.registry.register("api", "10.0.0.5", 9001)
        ctx = RequestContext(
            self.gateway,
            Request("GET", "/api/v1/users", "q=1", client_addr="203.0.113.9",
                    remote_addr="127.0.0.1", headers=headers),
            request_id="r-1", start=self.clock.seconds())
        ctx.route = "api"
        ctx.upstream_path = "/v1/users?q=1"
        ctx.peer = peer
        ctx.tried = (peer,)
        ctx.upstream_start = ctx.start + 0.001
        ctx.upstream_end = ctx.start + 0.004
        ctx.end = ctx.start + 0.005
        ctx.status = 200
        ctx.bytes_sent = 512
        return ctx

    def plugin(self, **settings):
        """A started plugin (``init_worker`` run on the test's gateway)."""
        plugin = access_log.Plugin(settings)
        plugin.init_worker(self.gateway)
        self.addCleanup(plugin.close)
        return plugin

    def file_plugin(self, **settings):
        path = os.path.abspath(temp_path(self))
        return self.plugin(target="file", path=path, **settings), path


def read_lines(path):
    with open(path) as f:
        text = f.read()
    if text:
        assert text.endswith("\n"), text
    return [json.loads(line) for line in text.splitlines()]


class RecordTests(_Base):
    """The line of a finished request."""

    def test_line(self):
        """Every field, in order, compact, one line."""
        line = access_log.Plugin().line(self.proxied())
        self.assertNotIn("\n", line)
        self.assertNotIn(", ", line)
        record = json.loads(line)
        self.assertEqual(list(record), FIELDS)
        self.assertEqual(record, RECORD)
        self.assertEqual(list(access_log.FIELDS), FIELDS)

    def test_new_strings(self):
        """A string seen for the first time (here a route, after the client,
        method and peer were seen) is escaped once, like the others; and a
        request ending in another millisecond gets that millisecond."""
        plugin = access_log.Plugin()
        plugin.line(self.proxied())
        ctx = self.proxied()
        ctx.route = 'new "route" \x01 %s' % self.id()
        ctx.error = "upstream_timeout"
        ctx.end += 0.0016
        record = json.loads(plugin.line(ctx))
        self.assertEqual((record["client"], record["method"], record["upstream_addr"],
                          record["route"], record["error"], record["time"]),
                         ("203.0.113.9", "GET", "10.0.0.5:9001", ctx.route,
                          "upstream_timeout", "2023-11-14T22:13:20.257Z"))

    def test_text(self):
        """The line as written: times to the microsecond."""
        self.assertEqual(access_log.Plugin().line(self.proxied()), (
            '{"time":"2023-11-14T22:13:20.255Z","request_id":"r-1","client":'
            '"203.0.113.9","method":"GET","uri":"/api/v1/users?q=1","status":200,'
            '"bytes_sent":512,"request_time":0.005000,"upstream_addr":"10.0.0.5:9001",'
            '"upstream_time":0.003000,"route":"api","error":null}'))

    def test_withoutUpstream(self):
        """A request that never reached an upstream has null upstream fields."""
        ctx = RequestContext(self.gateway, Request("POST", "/x"), "r-2",
                             start=self.clock.seconds())
        ctx.route = "default"
        ctx.status = 503
        ctx.error = "no_peer"
        ctx.bytes_sent = 120
        self.clock.advance(0.5)
        record = json.loads(access_log.Plugin().line(ctx))  # ctx.end unset: the clock's time
        self.assertEqual(
            (record["time"], record["upstream_addr"], record["upstream_time"],
             record["status"], record["error"], record["request_time"], record["route"]),
            ("2023-11-14T22:13:20.750Z", None, None, 503, "no_peer", 0.0, "default"))

    def test_nulls(self):
        """No route, no client address: ``null``."""
        ctx = RequestContext(self.gateway, Request("GET", "/", client_addr=None), "r")
        record = json.loads(access_log.Plugin().line(ctx))
        self.assertEqual((record["route"], record["client"]), (None, None))

    def test_escaping(self):
        """Quotes, control and non-ASCII characters stay valid JSON; the line is
        ASCII."""
        ctx = self.proxied()
        ctx.request.path = '/a"b\\c\x01\xe9\u2028'
        ctx.error = 'x"y'
        line = access_log.Plugin().line(ctx)
        line.encode("ascii")
        record = json.loads(line)
        self.assertEqual(record["uri"], '/a"b\\c\x01\xe9\u2028?q=1')
        self.assertEqual(record["error"], 'x"y')

    def test_fields(self):
        """``fields`` chooses the fields and their order."""
        line = access_log.Plugin({"fields": ["status", "uri", "time"]}).line(self.proxied())
        self.assertEqual(line, '{"status":200,"uri":"/api/v1/users?q=1",'
                               '"time":"2023-11-14T22:13:20.255Z"}')

    def test_requestHeaders(self):
        """Named request header fields are added; repeated ones joined, absent
        ones null, redacted ones hidden."""
        headers = Headers([(b"User-Agent", b"curl/8"), (b"Accept", b"a"),
                           (b"accept", b"b"), (b"Authorization", b"Bearer s3cret")])
        plugin = access_log.Plugin({"request_headers": ["User-Agent", "accept",
                                                        "Authorization", "X-Missing"]})
        line = plugin.line(self.proxied(headers))
        self.assertNotIn("s3cret", line)
        record = json.loads(line)
        self.assertEqual(list(record), FIELDS + ["request_headers"])
        self.assertEqual(record["request_headers"], {
            "user-agent": "curl/8", "accept": "a, b", "authorization": "[redacted]",
            "x-missing": None})

    def test_allRequestHeaders(self):
        """``"*"`` logs every field; ``redact`` replaces the default list."""
        headers = Headers([(b"Cookie", b"c=1"), (b"X-Key", b"k\xe9")])
        plugin = access_log.Plugin({"request_headers": ["*"], "redact": ["X-Key"]})
        record = json.loads(plugin.line(self.proxied(headers)))
        self.assertEqual(record["request_headers"], {"cookie": "c=1", "x-key": "[redacted]"})
        plugin = access_log.Plugin({"request_headers": ["*"]})
        record = json.loads(plugin.line(self.proxied(headers)))
        self.assertEqual(record["request_headers"], {"cookie": "[redacted]", "x-key": "k\xe9"})

    def test_record(self):
        """:meth:`record` is the line as an ordered ``dict``, which formats as
        JSON."""
        plugin = access_log.Plugin()
        record = plugin.record(self.proxied())
        self.assertEqual(list(record), FIELDS)
        self.assertEqual(record, RECORD)
        self.assertEqual(json.loads(str(record)), RECORD)
        self.assertEqual(json.loads("{}".format(record)), RECORD)


class LoggerTargetTests(_Base):
    """``"target": "logger"``: twisted.logger events, as before."""

    def test_event(self):
        """The event's text is the record's JSON line."""
        plugin = self.plugin(target="logger")
        plugin.log(self.proxied())
        self.assertEqual(len(self.events), 1)
        event = self.events[0]
        self.assertEqual(event["log_namespace"], "tproxy.builtins.access_log")
        self.assertEqual(json.loads(formatEvent(event)), RECORD)

    def test_jsonObserverKeepsFields(self):
        """A JSON log observer keeps the record as an object."""
        self.plugin(target="logger").log(self.proxied())
        event = json.loads(eventAsJSON(self.events[0]))
        self.assertEqual(list(event["access_log"]), FIELDS)
        self.assertEqual(event["access_log"], RECORD)

    def test_throughPhases(self):
        """Registered in a plugin manager, it runs as the ``log`` phase."""
        self.gateway.plugins.register(access_log.Plugin({"target": "logger"}), "access_log")
        self.gateway.phases.refresh()
        self.gateway.phases.log(self.proxied())
        self.assertEqual(len(self.events), 1)


class BatchTests(_Base):
    """Lines are written in batches, not one system call each."""

    def test_timer(self):
        """Lines wait up to ``flush_interval``, then go out together."""
        plugin, path = self.file_plugin(flush_interval=0.5)
        for _ in range(3):
            plugin.log(self.proxied())
        self.assertEqual(read_lines(path), [])
        self.clock.advance(0.4)
        plugin.log(self.proxied())
        self.assertEqual(read_lines(path), [])
        self.clock.advance(0.1)
        self.assertEqual([r["request_id"] for r in read_lines(path)], ["r-1"] * 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.events, [])

    def test_bufferSize(self):
        """A full buffer is written at once (and the timer cancelled)."""
        line = access_log.Plugin().line(self.proxied())
        plugin, path = self.file_plugin(buffer_size=3 * (len(line) + 1))
        plugin.log(self.proxied())
        plugin.log(self.proxied())
        self.assertEqual(read_lines(path), [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        plugin.log(self.proxied())
        self.assertEqual(len(read_lines(path)), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unbuffered(self):
        """``buffer_size`` 0 writes each line at once."""
        plugin, path = self.file_plugin(buffer_size=0)
        plugin.log(self.proxied())
        self.assertEqual(read_lines(path), [RECORD])

    def test_stop(self):
        """Stopping the gateway writes what waits and closes the file."""
        plugin, path = self.file_plugin()
        plugin.log(self.proxied())
        self.successResultOf(self.gateway.stop())
        self.assertEqual(read_lines(path), [RECORD])
        self.assertIsNone(plugin._sink)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_openedOnFirstUse(self):
        """Without ``init_worker`` the file is opened by the first write."""
        path = os.path.abspath(temp_path(self))
        plugin = access_log.Plugin({"path": path})
        self.addCleanup(plugin.close)
        self.assertEqual(plugin.target, "file")
        plugin.log(self.proxied())
        plugin.flush()
        self.assertEqual(read_lines(path), [RECORD])

    def test_writeFailure(self):
        """A failing write drops the batch, is logged once, and never raises."""
        if not os.path.exists("/dev/full"):
            raise self.skipTest("no /dev/full")
        errors = []
        observer = lambda e: errors.append(e) if e.get("log_level") is not None \
            and e["log_level"].name in ("error", "warn") else None
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        plugin = self.plugin(target="file", path="/dev/full", buffer_size=0)
        plugin.log(self.proxied())
        plugin.log(self.proxied())
        self.assertEqual(len(errors), 1)
        self.assertIn("cannot write to /dev/full", formatEvent(errors[0]))
        self.assertEqual(plugin._dropped, 2)


class FdSinkTests(SynchronousTestCase):
    """The stdout/stderr target: a descriptor the process has."""

    def test_pipe(self):
        """Bytes written go to the descriptor."""
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        sink = FdSink(w, "pipe")
        self.assertEqual(sink.write(b"a\nb\n"), 0)
        self.assertEqual(os.read(r, 100), b"a\nb\n")

    def test_full(self):
        """A full non-blocking descriptor keeps the rest for later."""
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        os.set_blocking(w, False)
        sink = FdSink(w, "pipe")
        data = b"x" * 99 + b"\n"
        left = 0
        for _ in range(10000):
            left = sink.write(data)
            if left:
                break
        self.assertTrue(left)
        got = b""
        while True:
            try:
                chunk = os.read(r, 1 << 20)
            except BlockingIOError:
                break
            got += chunk
            if len(chunk) < 1 << 20 and not sink.pending:
                break
            os.set_blocking(r, False)
            sink.write(b"")
        self.assertEqual(sink.pending, b"")
        self.assertEqual(set(got.split(b"\n")), {b"x" * 99, b""})

    def test_stdoutTarget(self):
        """The default target is stdout."""
        plugin = access_log.Plugin()
        self.assertEqual(plugin.target, "stdout")
        self.assertEqual(plugin._open().fd, 1)


class StdoutReopenTests(_Base):
    """``reopen`` of a descriptor target writes what waits, nothing more."""

    def test_reopenDescriptor(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        plugin = access_log.Plugin({"target": "stdout"})
        plugin._sink = FdSink(w, "stdout")
        plugin.init_worker(self.gateway)
        plugin.log(self.proxied())
        self.gateway.reopen()
        self.assertEqual(json.loads(os.read(r, 65536)), RECORD)
        self.assertEqual(plugin._sink.fd, w)
        self.assertEqual([e for e in events if "reopened" in e.get("log_format", "")], [])
        file_plugin, path = self.file_plugin()  # the same observer sees a file's
        self.gateway.reopen()
        self.assertEqual(len([e for e in events if "reopened" in e.get("log_format", "")]), 1)


class RotationTests(_Base):
    """The ``"file"`` target's rotation by size and reopening."""

    def test_rotate(self):
        """Past ``max_size`` the file moves to path.1 (path.1 to path.2 ...), and
        at most ``keep`` rotated files are kept; lines stay whole."""
        line = access_log.Plugin().line(self.proxied())
        size = len(line) + 1
        plugin, path = self.file_plugin(max_size=2 * size, keep=2, buffer_size=0)
        for i in range(7):
            ctx = self.proxied()
            ctx.status = 200 + i
            plugin.log(ctx)
        statuses = lambda p: [r["status"] for r in read_lines(p)]
        self.assertEqual(statuses(path), [206])
        self.assertEqual(statuses(path + ".1"), [204, 205])
        self.assertEqual(statuses(path + ".2"), [202, 203])
        self.assertFalse(os.path.exists(path + ".3"))

    def test_keepZero(self):
        """``keep`` 0 starts the file again."""
        line = access_log.Plugin().line(self.proxied())
        plugin, path = self.file_plugin(max_size=len(line) + 1, keep=0, buffer_size=0)
        plugin.log(self.proxied())
        plugin.log(self.proxied())
        self.assertEqual(len(read_lines(path)), 1)
        name = os.path.basename(path)
        self.assertEqual([n for n in os.listdir(os.path.dirname(path)) if n.startswith(name)],
                         [name])

    def test_noLimit(self):
        """``max_size`` null never rotates."""
        plugin, path = self.file_plugin(max_size=None, buffer_size=0)
        for _ in range(5):
            plugin.log(self.proxied())
        self.assertEqual(len(read_lines(path)), 5)
        self.assertFalse(os.path.exists(path + ".1"))

    def test_devNull(self):
        """A file that is not a regular file is never rotated."""
        plugin = self.plugin(target="file", path=os.devnull, max_size=1, buffer_size=0)
        plugin.log(self.proxied())
        plugin.log(self.proxied())
        self.assertTrue(os.path.exists(os.devnull))

    def test_reopenFails(self):
        """A file that cannot be reopened: lines are dropped and counted, and
        the next write tries again."""
        directory = os.path.abspath(temp_path(self))
        os.makedirs(directory)
        path = os.path.join(directory, "access.log")
        plugin = self.plugin(path=path, buffer_size=0)
        plugin.log(self.proxied())
        os.rename(path, path + ".1")
        moved = directory + ".gone"
        os.rename(directory, moved)
        self.gateway.reopen()
        plugin.log(self.proxied())
        self.assertEqual(plugin._dropped, 1)
        os.rename(moved, directory)
        plugin.log(self.proxied())
        self.assertEqual(len(read_lines(path)), 1)
        self.assertEqual(len(read_lines(path + ".1")), 1)

    def test_cannotOpen(self):
        """A file that cannot be opened when the gateway starts (its
        directory gone since the settings were checked) stops the start with
        its reason."""
        directory = os.path.abspath(temp_path(self))
        os.mkdir(directory)
        plugin = access_log.Plugin({"path": directory + "/such"})
        os.rmdir(directory)
        e = self.assertRaises(access_log.AccessLogError, plugin.init_worker, self.gateway)
        self.assertIn("access_log cannot open ", str(e))
        self.assertTrue(str(e).endswith("/such: No such file or directory"), str(e))

    def test_reopen(self):
        """``gateway.reopen`` (SIGUSR1) writes what waits to the old file, then
        opens the path again (as logrotate expects after renaming it)."""
        plugin, path = self.file_plugin()
        plugin.log(self.proxied())
        os.rename(path, path + ".old")
        self.gateway.reopen()
        ctx = self.proxied()
        ctx.status = 201
        plugin.log(ctx)
        plugin.flush()
        self.assertEqual([r["status"] for r in read_lines(path + ".old")], [200])
        self.assertEqual([r["status"] for r in read_lines(path)], [201])


class SettingsTests(SynchronousTestCase):
    """The settings, checked when tproxy starts."""

    def errors(self, settings):
        config = validate_config({"plugins": [{"name": "access_log", "settings": settings}]})
        with self.assertRaises(ConfigError) as caught:
            build_plugin_manager(config, entry_points=[])
        return caught.exception.errors

    def test_fileWithoutPath(self):
        self.assertEqual(self.errors({"target": "file"}), [
            ("plugins[0].settings.path",
             "the \"file\" target needs a path (plugin 'access_log')")])

    def test_pathWithOtherTarget(self):
        [(path, message)] = self.errors({"target": "stdout", "path": "/tmp/x"})
        self.assertEqual(path, "plugins[0].settings.path")

    def test_unknownField(self):
        [(path, message)] = self.errors({"fields": ["status", "nope"]})
        self.assertEqual(path, "plugins[0].settings.fields[1]")

    def test_pathInMissingDirectory(self):
        """A path whose directory does not exist is a configuration error
        naming the setting (``--check``, a reload), not a failed start."""
        missing = os.path.abspath(temp_path(self))
        [(path, message)] = self.errors({"path": missing + "/access.log"})
        self.assertEqual((path, message), (
            "plugins[0].settings.path",
            "cannot create {0}/access.log: the directory {0} does not exist "
            "(plugin 'access_log')".format(missing)))

    def test_pathIsDirectory(self):
        """A path naming a directory is a configuration error."""
        directory = os.path.abspath(temp_path(self))
        os.mkdir(directory)
        [(path, message)] = self.errors({"path": directory})
        self.assertEqual((path, message), (
            "plugins[0].settings.path",
            "{} is a directory (plugin 'access_log')".format(directory)))

    def test_badTarget(self):
        [(path, message)] = self.errors({"target": "syslog"})
        self.assertEqual(path, "plugins[0].settings.target")

    def test_defaults(self):
        """The defaults, pinned."""
        plugin = access_log.Plugin({})
        self.assertEqual(
            (plugin.target, plugin.path, plugin.max_size, plugin.keep,
             plugin.buffer_size, plugin.flush_interval, plugin.fields,
             plugin.request_headers, plugin.response_headers, sorted(plugin.redact)),
            ("stdout", None, 100 * 1024 * 1024, 5, 65536, 0.1, tuple(FIELDS), None, None,
             ["authorization", "cookie", "proxy-authorization", "set-cookie"]))


UP = "127.0.0.1:9001"


def echo(request):
    return 200, {"Set-Cookie": "sid=1", "X-Up": "yes"}, b"ok"


class HarnessTests(SynchronousTestCase):
    """Through whole requests on the harness."""

    def harness(self, **settings):
        settings.setdefault("target", "logger")
        return Harness(config={"upstreams": {"api": {"peers": [UP]}}},
                       plugins=["router", "least_conn",
                                {"name": "access_log", "settings": settings}],
                       servers={UP: echo})

    def records(self, h):
        return [e["access_log"] for e in h.events if "access_log" in e]

    def test_responseHeaders(self):
        """``response_headers``: the head sent to the client, as the plugins
        left it."""
        h = self.harness(response_headers=["X-Up", "set-cookie", "content-length"])
        h.request("GET", "/api/x")
        [record] = self.records(h)
        self.assertEqual(record["response_headers"], {
            "x-up": "yes", "set-cookie": "[redacted]", "content-length": "2"})

    def test_noHeaderFilter(self):
        """Without ``response_headers`` the plugin has no ``header_filter``: a
        request pays nothing for it."""
        h = self.harness()
        self.assertEqual(h.gateway.phases.names("header_filter"), [])
        self.assertFalse(h.gateway.phases.default.has_header_filter)
        h = self.harness(response_headers=["x-up"])
        self.assertEqual(h.gateway.phases.names("header_filter"), ["access_log"])

    def test_fileTarget(self):
        """The default batching on the harness's clock; ``stop`` writes."""
        path = os.path.abspath(temp_path(self))
        h = self.harness(target="file", path=path)
        h.request("GET", "/api/x")
        h.request("GET", "/api/y")
        self.assertEqual(read_lines(path), [])
        h.advance(0.1)
        self.assertEqual([r["uri"] for r in read_lines(path)], ["/api/x", "/api/y"])
        h.request("GET", "/api/z")
        h.stop()
        self.assertEqual(len(read_lines(path)), 3)
        self.assertEqual(self.records(h), [])


class RefusedRequestTests(SynchronousTestCase):
    """
    A request refused before any plugin saw it (a malformed head, one too
    large, a header timeout) gets its line, as in nginx's access log: its
    status, ``error`` the refusal's code, no route, no upstream; a connection
    that sent nothing gets none.
    """

    def harness(self, **proxy):
        return Harness(config={"upstreams": {"api": {"peers": [UP]}}, "proxy": proxy},
                       plugins=["router", "least_conn",
                                {"name": "access_log", "settings": {"target": "logger"}}],
                       servers={UP: echo})

    def records(self, h):
        return [e["access_log"] for e in h.events if "access_log" in e]

    def refused(self, h, data):
        """Send ``data`` on a new connection; its one record."""
        conn = h.connect()
        conn.send(data)
        self.assertTrue(conn.closed)
        [record] = self.records(h)
        self.assertEqual(record["bytes_sent"], len(conn.received))
        self.assertEqual((record["route"], record["upstream_addr"], record["upstream_time"]),
                         (None, None, None))
        self.assertEqual(record["client"], "127.0.0.1")
        return record

    def test_malformed(self):
        """Bytes that are no request line: 400, no method, an empty uri."""
        record = self.refused(self.harness(), b"GARBAGE\r\n\r\n")
        self.assertEqual((record["status"], record["error"], record["method"], record["uri"]),
                         (400, "bad_request", None, ""))
        self.assertEqual(tuple(record), tuple(access_log.FIELDS))

    def test_invalidHost(self):
        """A parsed request line with an invalid Host: its method and uri."""
        record = self.refused(self.harness(), b"GET /a?b=1 HTTP/1.1\r\nHost: a b\r\n\r\n")
        self.assertEqual((record["status"], record["error"], record["method"], record["uri"]),
                         (400, "bad_request", "GET", "/a?b=1"))

    def test_headTooLarge(self):
        """Header fields past ``max_header_size``: 431."""
        record = self.refused(self.harness(), b"GET /big HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)) + b"\r\n")
        self.assertEqual((record["status"], record["error"], record["uri"]),
                         (431, "header_too_large", "/big"))

    def test_headerTimeout(self):
        """Part of a head, then silence: 408 after ``header_timeout``, the
        time waited as ``request_time``."""
        h = self.harness(header_timeout=2.0)
        conn = h.connect()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        h.advance(1.5)
        self.assertEqual(self.records(h), [])
        h.advance(0.5)
        self.assertTrue(conn.closed)
        [record] = self.records(h)
        self.assertEqual((record["status"], record["error"], record["request_time"]),
                         (408, "header_timeout", 2.0))
        self.assertEqual(record["bytes_sent"], len(conn.received))

    def test_silentConnection(self):
        """A connection that sent nothing: closed with no line (as nginx),
        whether it times out or closes itself."""
        h = self.harness()
        h.connect()
        h.advance(3600)
        h.connect().transport.loseConnection()
        h.advance(1)
        self.assertEqual(self.records(h), [])

    def test_afterGood(self):
        """A malformed request behind a good one on a kept-alive connection:
        the good one's line unchanged, then the refused one's."""
        h = self.harness()
        conn = h.connect()
        conn.send(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n")
        good, bad = self.records(h)
        self.assertEqual((good["status"], good["method"], good["uri"], good["route"],
                          good["upstream_addr"], good["error"]),
                         (200, "GET", "/api/x", "api", UP, None))
        self.assertEqual((bad["status"], bad["error"], bad["method"]), (400, "bad_request", None))
        self.assertNotEqual(good["request_id"], bad["request_id"])


class PartialHeadTests(SynchronousTestCase):
    """
    A head refused before its end (``header_timeout``, too large) whose
    request line was complete: its line has the method and uri, with the
    parser in use (httptools on CPython) and with the pure-Python parser,
    which reports a request line once it is complete, as httptools does.
    """

    #: the parser module the connections use (None: tproxy.http.parsing's)
    parser = None

    def setUp(self):
        if self.parser is not None:
            self.patch(connection, "HttpRequestParser", self.parser.HttpRequestParser)
            for name in ("HttpParserError", "HttpParserInvalidMethodError", "HttpParserUpgrade"):
                self.patch(reader, name, getattr(self.parser, name))

    harness = RefusedRequestTests.harness
    records = RefusedRequestTests.records

    def refused(self, h, reads, advance=0):
        """Send ``reads`` on a new connection, then wait ``advance``
        seconds; the connection's one record."""
        conn = h.connect()
        for data in reads:
            conn.send(data)
        h.advance(advance)
        self.assertTrue(conn.closed)
        [record] = self.records(h)
        return (record["status"], record["error"], record["method"], record["uri"])

    def test_headerTimeout(self):
        """The request line and a field, then silence: the 408's line has
        the method and uri."""
        h = self.harness(header_timeout=2.0)
        self.assertEqual(self.refused(h, [b"GET /slow HTTP/1.1\r\nHost: x\r\n"], 2.0),
                         (408, "header_timeout", "GET", "/slow"))

    def test_headerTimeoutCut(self):
        """The same, the head cut in pieces (the line's CRLF split)."""
        h = self.harness(header_timeout=2.0)
        self.assertEqual(self.refused(h, [b"POST /slow?a=", b"1 HTTP/1.1\r", b"\nHost:"], 2.0),
                         (408, "header_timeout", "POST", "/slow?a=1"))

    def test_tooLarge(self):
        """A head that grows past ``max_header_size`` before its end: the
        431's line has the method and uri."""
        h = self.harness(max_header_size=4096)
        fields = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
        self.assertEqual(self.refused(h, [b"GET /big HTTP/1.1\r\nHost: x\r\n", fields]),
                         (431, "header_too_large", "GET", "/big"))

    def test_headerLineTooLong(self):
        """A header line that does not end: the 400's line has the method
        and uri."""
        h = self.harness(max_header_line=1024)
        self.assertEqual(self.refused(h, [b"GET /long HTTP/1.1\r\nX-A: ", b"v" * 2048]),
                         (400, "bad_request", "GET", "/long"))

    def test_invalidLine(self):
        """An invalid request line is refused once it ends, not at the end
        of its head (or after ``header_timeout``)."""
        h = self.harness(header_timeout=2.0)
        self.assertEqual(self.refused(h, [b"GET /bad HTTP/1.1x\r\nHost: x\r\n"]),
                         (400, "bad_request", "GET", "/bad"))

    def test_lineIncomplete(self):
        """A head refused before its request line ended: no method."""
        h = self.harness(header_timeout=2.0)
        self.assertEqual(self.refused(h, [b"GET"], 2.0), (408, "header_timeout", None, ""))


class PythonParserPartialHeadTests(PartialHeadTests):
    """:class:`PartialHeadTests` with the pure-Python parser (the one in
    use on PyPy, or with ``TPROXY_PARSER=python``)."""

    parser = pyparser
