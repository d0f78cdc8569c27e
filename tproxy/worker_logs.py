# -*- test-case-name: tests.test_worker_logs -*-
"""
The workers' log events, relayed to the parent (``"workers"`` above 1):
whatever a worker logs (its own lines, the plugins' errors and warnings,
the ``"logger"`` target's access lines) reaches the observers of the
parent's log -- twistd's ``--logfile``, ``--logger``, standard output --
tagged with the worker (``[worker PID namespace#level]``; the events carry
``worker``, its index, and ``worker_pid``).

Each worker has a UNIX socket pair of its own for them, beside its control
channel (:mod:`tproxy.control`): the parent names the worker's end in its
``hello`` answer (``"log": FD``).  An event is one line of JSON
(:func:`encode_event`): its time, level, namespace, system, its text as
formatted in the worker (with the traceback of a failure), and its fields
that JSON can carry (others as their ``str``).

In the worker (:class:`LogRelay`, the observer of its log): the lines of a
reactor turn are written together, with one non-blocking ``write``; what
the socket does not take waits, and past :data:`MAX_BACKLOG` bytes waiting
an event is dropped and counted (a worker flooding its log while the
parent cannot keep up: the worker's memory stays bounded, and the next line
that gets through says how many were dropped).  Before the parent said
where (its ``hello`` answer), the events wait; a parent that says nothing
of it (an older tproxy, through a reload), one gone (``EPIPE``) and the
events logged after the worker's end had its time (:data:`CLOSE_TIMEOUT`)
go to the worker's standard output, tagged, as they would without a
relay.

In the parent (:class:`RelayedLog`, the protocol of its end): each line
becomes an event of the parent's log; reading is bounded by the line's
length (:data:`MAX_LINE`) and the reactor's read size, so the parent's
memory stays bounded too: a worker it cannot keep up with finds its socket
full and drops.  The parent reads a worker's lines before it acts on that
worker's ``ready`` and end (:meth:`RelayedLog.read_now`): its log keeps
their order.
"""

import json
import os
import select
import threading
import time

from twisted.logger import InvalidLogLevelError, LogLevel, Logger, eventAsText
from twisted.protocols.basic import LineOnlyReceiver

__all__ = ["CLOSE_TIMEOUT", "LogRelay", "MAX_BACKLOG", "MAX_LINE", "RelayedLog",
           "decode_event", "encode_event", "worker_system"]

log = Logger()

#: the longest line a worker sends for one event (bytes): a longer event
#: loses its fields, then the end of its text
MAX_LINE = 64 * 1024

#: bytes of lines a worker keeps while the parent does not take them;
#: beyond, events are dropped (and counted)
MAX_BACKLOG = 1024 * 1024

#: seconds between two attempts to write lines the socket did not take
RETRY = 0.05

#: seconds a stopping worker waits for the parent to take its last lines
CLOSE_TIMEOUT = 2.0

_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode


def worker_system(pid, system, namespace, level):
    """The ``log_system`` of a worker's event in the parent's log: ``worker
    PID`` and its own system, or its ``namespace#level``."""
    if system in (None, "-"):
        system = "{}#{}".format(namespace or "-", level.name if level is not None else "-")
    return "worker {} {}".format(pid, system)


def encode_event(event):
    """
    ``event`` as the line a worker sends (bytes, ASCII, ending in a
    newline), or ``None`` for an event without text (nothing a log file
    would show).  At most :data:`MAX_LINE` bytes: a longer one without its
    fields, its text cut if need be.
    """
    text = eventAsText(event, includeTimestamp=False, includeSystem=False)
    if not text:
        return None
    level = event.get("log_level")
    wire = {"time": event.get("log_time") or time.time(),
            "level": level.name if level is not None else None,
            "namespace": event.get("log_namespace"), "system": event.get("log_system"),
            "text": text}
    if "log_legacy" not in event:     # (a legacy event's keys are its text's)
        fields = {key: value for key, value in event.items() if not key.startswith("log_")}
        if fields:
            wire["fields"] = fields
    try:
        line = _dumps(wire)
    except Exception:                 # (a field JSON cannot take, even as str)
        wire.pop("fields", None)
        line = _dumps(wire)
    if len(line) >= MAX_LINE:
        wire.pop("fields", None)
        line = _dumps(wire)
        if len(line) >= MAX_LINE:
            keep = MAX_LINE // 8      # (escaped, a character takes up to 6 bytes)
            wire["text"] = "{}... ({} characters cut)".format(text[:keep], len(text) - keep)
            for key in ("namespace", "system"):
                if isinstance(wire[key], str):
                    wire[key] = wire[key][:200]
            line = _dumps(wire)
    return line.encode("ascii") + b"\n"


def decode_event(line, index, pid):
    """
    The event of the parent's log for ``line`` (bytes, without its newline)
    of worker ``index`` (pid ``pid``): its fields, the worker's time, level
    and namespace, its text as the message, :func:`worker_system` as its
    system (``pid`` ``None``: the worker's own system, for the worker's
    standard output).

    :raises ValueError: ``line`` is not an event's.
    """
    wire = json.loads(line)
    if not isinstance(wire, dict) or not isinstance(wire.get("text"), str):
        raise ValueError("not an event")
    fields = wire.get("fields")
    event = dict(fields) if isinstance(fields, dict) else {}
    try:
        level = LogLevel.levelWithName(wire.get("level"))
    except InvalidLogLevelError:
        level = LogLevel.info
    namespace = wire.get("namespace")
    namespace = namespace if isinstance(namespace, str) else "-"
    system = wire.get("system")
    system = system if isinstance(system, str) else None
    event.update(
        log_time=float(wire.get("time") or time.time()), log_level=level,
        log_namespace=namespace,
        # (the text as the worker made it: braces are not fields here)
        log_format=wire["text"].replace("{", "{{").replace("}", "}}"))
    if pid is None:
        event["log_system"] = system
    else:
        event.update(log_system=worker_system(pid, system, namespace, level),
                     worker=index, worker_pid=pid)
    return event


class LogRelay(object):
    """
    A worker's log observer: the events relayed to the parent (see the
    module docstring).

    :param reactor: the worker's reactor (for the turn's batch).
    :param fallback: the observer of the events not relayed (the worker's
        standard output).
    """

    def __init__(self, reactor, fallback):
        self.reactor = reactor
        self.fallback = fallback
        #: the socket's descriptor; ``None`` until :meth:`start`
        self.fd = None
        #: ``None``: not told where yet; ``True``: relaying; ``False``: to ``fallback``
        self.relaying = None
        self.dropped = 0
        self._lines = []
        self._size = 0       # bytes of _lines and _pending
        self._pending = b""  # of a write the socket took in part
        self._call = None
        self._thread = threading.get_ident()

    def __call__(self, event):
        if self.relaying is False:
            self.fallback(event)
            return
        if threading.get_ident() != self._thread:
            self.reactor.callFromThread(self, event)
            return
        line = encode_event(event)
        if line is None:
            return
        if self._size + len(line) > MAX_BACKLOG:
            self.dropped += 1
            return
        self._lines.append(line)
        self._size += len(line)
        if self.relaying and self._call is None:
            self._call = self.reactor.callLater(0, self._later)

    def start(self, fd):
        """Relay to the socket ``fd`` (``None``: the parent relays nothing:
        to ``fallback`` from now on); the events waiting go there."""
        if fd is None:
            self._to_fallback()
            return
        os.set_blocking(fd, False)
        self.fd = fd
        self.relaying = True
        self.flush()

    def _later(self):
        self._call = None
        self.flush()

    def flush(self):
        """Write the lines waiting (as much as the socket takes now)."""
        if not self.relaying:
            return
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if self.dropped and self._size < MAX_BACKLOG // 2:
            self._dropped_line()
        data = self._pending + b"".join(self._lines)
        self._lines = []
        view = memoryview(data)
        try:
            while view:
                try:
                    view = view[os.write(self.fd, view):]
                except InterruptedError:
                    continue
        except BlockingIOError:
            pass
        except OSError:             # (the parent is gone: EPIPE)
            self._pending, self._size = bytes(view), len(view)
            self._to_fallback()
            return
        self._pending = bytes(view)
        self._size = len(self._pending)
        if self._pending:
            self._call = self.reactor.callLater(RETRY, self._later)

    def _dropped_line(self):
        """The line saying how many events were dropped, first in line."""
        event = {"log_namespace": __name__, "log_level": LogLevel.warn,
                 "log_time": time.time(), "dropped": self.dropped,
                 "log_format": "{dropped} log event(s) dropped: the parent did not take "
                               "them in time"}
        line = encode_event(event)
        self._lines.insert(0, line)
        self._size += len(line)
        self.dropped = 0

    def _to_fallback(self):
        """From now on, events go to ``fallback``; so do those waiting."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.relaying = False
        waiting = b"".join(self._lines)
        pending, self._pending, self._lines, self._size = self._pending, b"", [], 0
        for line in (pending + waiting).splitlines():
            try:
                self.fallback(decode_event(line, None, None))
            except ValueError:
                pass    # (the rest of a line whose start was written)
        if self.dropped:
            self.fallback({"log_namespace": __name__, "log_level": LogLevel.warn,
                           "log_time": time.time(), "dropped": self.dropped,
                           "log_format": "{dropped} log event(s) dropped"})
            self.dropped = 0

    def close(self, timeout=CLOSE_TIMEOUT):
        """
        The worker's end: write what waits, for at most ``timeout`` seconds
        (the reactor has stopped: the writes wait here), and close the
        socket; events logged later go to ``fallback``.
        """
        if self.relaying:
            deadline = time.monotonic() + timeout
            self.flush()
            while self.relaying and self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.dropped += self._pending.count(b"\n")
                    self._pending, self._size = b"", 0
                    break
                try:
                    select.select([], [self.fd], [], left)
                except InterruptedError:
                    pass
                self.flush()
        if self.relaying is not False:
            self._to_fallback()     # (what could not be written: how many)
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


class RelayedLog(LineOnlyReceiver):
    """
    The parent's end of a worker's log socket: each line an event of the
    parent's log (:func:`decode_event`).

    :param handle: the worker's :class:`tproxy.worker_handles.WorkerHandle`
        (its ``index`` and ``pid`` tag the events).
    :param observer: where the events go (default: the parent's log).
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE

    def __init__(self, handle, observer=None):
        self.handle = handle
        self.observer = observer if observer is not None else log.observer
        self.unreadable = 0
        self.received = 0

    def lineReceived(self, line):
        try:
            event = decode_event(line, self.handle.index, self.handle.pid)
        except (ValueError, TypeError):
            self.unreadable += 1
            if self.unreadable == 1:
                log.error("worker {index} (pid {pid}): an unreadable log line dropped "
                          "({size} bytes)", index=self.handle.index, pid=self.handle.pid,
                          size=len(line))
            return
        self.observer(event)

    def lineLengthExceeded(self, line):
        # (a worker sends none: dropped as unreadable, and so is the rest of
        # the line that follows; the connection stays)
        self._buffer = b""
        self.lineReceived(b"")

    def dataReceived(self, data):
        self.received += len(data)
        LineOnlyReceiver.dataReceived(self, data)

    def read_now(self):
        """Read what the worker has written so far (before the parent acts
        on what the worker said on its control channel: the order of the
        parent's log is the worker's)."""
        transport = self.transport
        if transport is None or transport.disconnected:
            return
        for _ in range(MAX_BACKLOG // transport.bufferSize + 1):
            before = self.received
            if transport.doRead() is not None or self.received == before:
                return    # (nothing more now; or the end, which the reactor sees too)
