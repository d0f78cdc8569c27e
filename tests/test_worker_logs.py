"""
The relay of a worker's log events to the parent's log
(:mod:`tproxy.worker_logs`): the worker's side on a fake clock and a real
socket pair (what the kernel's buffer takes is the subject of the bounds),
the parent's side fed lines.  The whole path, a real ``twistd --logfile``
with workers: :mod:`tests.processes.test_worker_logs`.
"""

import json
import os
import socket

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent, formatEventAsClassicLogText
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import TestCase

from tproxy.builtins._access_log_output import AccessRecord
from tproxy.worker_logs import (MAX_BACKLOG, MAX_LINE, LogRelay, RelayedLog, decode_event,
                                encode_event)
from tests.helpers import capture_log, log_messages


def logged(emit):
    """The events ``emit(log)`` logs with a Logger of namespace ``plugin``."""
    events = []
    emit(Logger(namespace="plugin", observer=events.append))
    return events


def through(event, index=1, pid=4242):
    """``event`` as the parent's log has it."""
    return decode_event(encode_event(event)[:-1], index, pid)


class _Handle(object):
    index = 1
    pid = 4242


class EventTests(TestCase):
    """An event keeps its text, level, time and fields on the way, and
    says which worker logged it."""

    def test_line(self):
        [event] = logged(lambda log: log.warn("peer {peer} failed {n} times: {{braces}}",
                                              peer="10.0.0.1:80", n=3))
        seen = through(event)
        self.assertEqual(formatEvent(seen), "peer 10.0.0.1:80 failed 3 times: {braces}")
        self.assertEqual(seen["log_level"], LogLevel.warn)
        self.assertEqual(seen["log_namespace"], "plugin")
        self.assertEqual(seen["log_time"], event["log_time"])
        self.assertEqual((seen["peer"], seen["n"]), ("10.0.0.1:80", 3))
        self.assertEqual((seen["worker"], seen["worker_pid"]), (1, 4242))
        self.assertEqual(formatEventAsClassicLogText(seen, formatTime=lambda t: "T"),
                         "T [worker 4242 plugin#warn] peer 10.0.0.1:80 failed 3 times: "
                         "{braces}\n")

    def test_system(self):
        """An event's own system (a connection's) stays, after the worker."""
        seen = through({"log_format": "x", "log_system": "ProxyProtocol,3,127.0.0.1",
                        "log_namespace": "n", "log_level": LogLevel.info})
        self.assertEqual(seen["log_system"], "worker 4242 ProxyProtocol,3,127.0.0.1")

    def test_accessRecord(self):
        """The ``"logger"`` target's line: its JSON text, its fields."""
        record = AccessRecord(status=503, uri="/x", upstream_addr=None)
        [event] = logged(lambda log: log.info("{access_log}", access_log=record))
        seen = through(event)
        self.assertEqual(json.loads(formatEvent(seen)), record)
        self.assertEqual(seen["access_log"], record)

    def test_failure(self):
        """A failure's traceback is in the text, as twistd's log writes it."""
        def emit(log):
            try:
                1 / 0
            except ZeroDivisionError:
                log.failure("a plugin failed")
        [event] = logged(emit)
        text = formatEventAsClassicLogText(through(event))
        self.assertIn("a plugin failed\n\tTraceback (most recent call last):", text)
        self.assertIn("ZeroDivisionError: division by zero", text)
        self.assertEqual(text, formatEventAsClassicLogText(event).replace(
            "[plugin#critical]", "[worker 4242 plugin#critical]"))

    def test_oddFields(self):
        """A field JSON cannot carry goes as its ``str``; one that not even
        that takes (a loop) takes the fields out, not the text."""
        class Odd(object):
            def __str__(self):
                return "odd"
        seen = through({"log_format": "{x}", "x": Odd(), "log_level": LogLevel.info})
        self.assertEqual((formatEvent(seen), seen["x"]), ("odd", "odd"))
        loop = []
        loop.append(loop)
        seen = through({"log_format": "a loop", "loop": loop, "log_level": LogLevel.info})
        self.assertEqual(formatEvent(seen), "a loop")
        self.assertNotIn("loop", seen)

    def test_long(self):
        """An event is one line of at most MAX_LINE bytes: fields go first,
        then the end of the text."""
        big = "x" * (2 * MAX_LINE)
        line = encode_event({"log_format": "{big}", "big": big, "log_level": LogLevel.info})
        self.assertLessEqual(len(line), MAX_LINE)
        self.assertEqual(line.count(b"\n"), 1)
        text = formatEvent(decode_event(line[:-1], 0, 1))
        self.assertTrue(text.startswith("x" * 1000), text[:20])
        self.assertTrue(text.endswith("characters cut)"), text[-40:])
        line = encode_event({"log_format": "short", "big": big, "log_level": LogLevel.info})
        self.assertNotIn("big", decode_event(line[:-1], 0, 1))

    def test_noText(self):
        """An event without text (nothing a log file shows) is not sent."""
        self.assertIsNone(encode_event({"log_level": LogLevel.info}))


class RelayTests(TestCase):
    """The worker's side: a batch per reactor turn, bounded while the parent
    does not read, the rest on standard output."""

    def setUp(self):
        self.clock = Clock()
        self.fallback = []
        self.relay = LogRelay(self.clock, self.fallback.append)
        self.parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(self.parent.close)
        self.parent.setblocking(False)
        self.fd = os.dup(child.fileno())
        child.close()
        self.addCleanup(self.relay.close, 0)
        self.log = Logger(namespace="plugin", observer=self.relay)
        self.partial = b""

    def received(self):
        """The texts of the lines the parent can read now (whole lines)."""
        data = self.partial
        while True:
            try:
                chunk = self.parent.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [formatEvent(decode_event(line, 0, 1)) for line in lines]

    def test_batchPerTurn(self):
        """Events wait until the parent says where; then each turn's are
        written together, at the end of the turn."""
        self.log.info("before {n}", n=1)
        self.relay.start(self.fd)
        self.assertEqual(self.received(), ["before 1"])
        self.log.info("a")
        self.log.info("b")
        self.assertEqual(self.received(), [])
        self.clock.advance(0)
        self.assertEqual(self.received(), ["a", "b"])
        self.assertEqual(self.fallback, [])

    def test_flush(self):
        """:meth:`flush` writes at once (before the ``ready`` notice)."""
        self.relay.start(self.fd)
        self.log.info("ready")
        self.relay.flush()
        self.assertEqual(self.received(), ["ready"])

    def test_bounded(self):
        """A parent that does not read: the worker keeps at most MAX_BACKLOG
        bytes, drops the rest and counts them; once the parent reads again,
        the first line says how many."""
        self.relay.start(self.fd)
        text = "y" * 1000
        sent = 0
        while self.relay.dropped < 100:
            self.log.info("{n} {text}", n=sent, text=text)
            sent += 1
            self.clock.advance(0)
        self.assertLessEqual(self.relay._size, MAX_BACKLOG)
        dropped = self.relay.dropped
        lines = []
        while True:
            got = self.received()
            if not got and not self.relay._size and not self.partial:
                break
            lines.extend(got)
            self.clock.advance(1)   # (the retries)
        self.log.info("after")
        self.clock.advance(0)
        lines.extend(self.received())
        notices = [line for line in lines if "dropped" in line]
        self.assertEqual(notices, ["%d log event(s) dropped: the parent did not take them "
                                   "in time" % dropped])
        self.assertEqual(lines[-1], "after")
        numbers = [int(line.split()[0]) for line in lines if line.endswith(text)]
        self.assertEqual(len(numbers) + dropped, sent)
        self.assertEqual(numbers, sorted(numbers))

    def test_noRelay(self):
        """A parent that relays nothing (an older one): the events, those
        waiting too, go to standard output."""
        self.log.info("early")
        self.relay.start(None)
        self.log.info("late")
        self.assertEqual([formatEvent(e) for e in self.fallback], ["early", "late"])
        os.close(self.fd)

    def test_parentGone(self):
        """The parent gone: what waits and what follows go to standard output."""
        self.relay.start(self.fd)
        self.parent.close()
        self.log.info("one")
        self.log.info("two")
        self.clock.advance(0)
        self.log.info("three")
        self.assertEqual([formatEvent(e) for e in self.fallback], ["one", "two", "three"])
        self.assertEqual([e.get("log_system") for e in self.fallback], [None] * 3)

    def test_close(self):
        """A stopping worker writes what waits, then closes; later events go
        to standard output."""
        self.relay.start(self.fd)
        self.log.info("last")
        self.relay.close()
        self.log.info("after the end")
        self.assertEqual(self.received(), ["last"])
        self.assertEqual(self.parent.recv(10), b"")
        self.assertEqual([formatEvent(e) for e in self.fallback], ["after the end"])

    def test_closeNobodyReads(self):
        """A parent that does not read: the worker's end waits ``timeout``
        seconds at most, then says on its standard output what it dropped."""
        self.relay.start(self.fd)
        while self.relay._size < MAX_BACKLOG // 2:
            self.log.info("{text}", text="z" * 10000)
            self.clock.advance(0)
        self.relay.close(timeout=0)
        [notice] = [formatEvent(e) for e in self.fallback]
        self.assertRegex(notice, r"^\d+ log event\(s\) dropped$")

    def test_closeBeforeStart(self):
        """A worker that ends before the parent answered (gone): its events
        go to standard output."""
        self.log.info("could not start")
        self.relay.close()
        self.assertEqual([formatEvent(e) for e in self.fallback], ["could not start"])
        os.close(self.fd)


class _Reads(StringTransport):
    """A transport whose ``doRead`` hands the protocol one chunk a call."""

    bufferSize = 65536
    disconnected = False

    def __init__(self, protocol, chunks):
        StringTransport.__init__(self)
        self.protocol = protocol
        self.chunks = list(chunks)

    def doRead(self):
        if self.chunks:
            self.protocol.dataReceived(self.chunks.pop(0))


class RelayedLogTests(TestCase):
    """The parent's side: each line an event of its log."""

    def setUp(self):
        self.events = []
        self.protocol = RelayedLog(_Handle(), self.events.append)

    def test_lines(self):
        lines = b"".join(encode_event({"log_format": "line %d" % i, "log_level": LogLevel.info,
                                       "log_namespace": "n"}) for i in range(3))
        self.protocol.makeConnection(StringTransport())
        self.protocol.dataReceived(lines[:10])
        self.protocol.dataReceived(lines[10:])
        self.assertEqual([formatEvent(e) for e in self.events], ["line 0", "line 1", "line 2"])
        self.assertEqual(self.events[0]["log_system"], "worker 4242 n#info")

    def test_unreadable(self):
        """A line that is not an event is dropped; the first says so."""
        logged = capture_log(self)
        self.protocol.makeConnection(StringTransport())
        self.protocol.dataReceived(b"garbage\n[1]\n" + encode_event(
            {"log_format": "fine", "log_level": LogLevel.info}))
        self.assertEqual([formatEvent(e) for e in self.events], ["fine"])
        self.assertEqual(log_messages(logged, "tproxy.worker_logs"), [
            "worker 1 (pid 4242): an unreadable log line dropped (7 bytes)"])

    def test_tooLong(self):
        """A line past MAX_LINE (a worker sends none) is dropped without
        being kept whole; the lines after it are read."""
        logged = capture_log(self)
        self.protocol.makeConnection(StringTransport())
        for _ in range(4):
            self.protocol.dataReceived(b"x" * MAX_LINE)
            self.assertLessEqual(len(self.protocol._buffer), MAX_LINE)
        self.protocol.dataReceived(b"x\n" + encode_event(
            {"log_format": "fine", "log_level": LogLevel.info}))
        self.assertEqual([formatEvent(e) for e in self.events], ["fine"])
        self.assertEqual(len(log_messages(logged, "tproxy.worker_logs")), 1)

    def test_readNow(self):
        """:meth:`read_now` reads what the worker wrote, until nothing is left."""
        chunks = [encode_event({"log_format": "line %d" % i, "log_level": LogLevel.info})
                  for i in range(3)]
        self.protocol.makeConnection(_Reads(self.protocol, chunks))
        self.protocol.read_now()
        self.assertEqual([formatEvent(e) for e in self.events], ["line 0", "line 1", "line 2"])

