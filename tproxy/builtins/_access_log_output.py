# -*- test-case-name: tests.test_access_log -*-
"""
Where the ``access_log`` plugin's lines go: :class:`LineBatches`, the
plugin's base class, collects them and writes a batch with one system call
to the target's sink (:mod:`tproxy.log_sinks`), on its flush timer, when the
gateway stops and before the file is reopened; :class:`AccessRecord` is a
record as a ``dict`` (the ``"logger"`` target's event field).  Logged under
``tproxy.builtins.access_log``, the plugin's namespace, as are the events of
the ``"logger"`` target.
"""

import json
import sys

from twisted.logger import Logger

from tproxy.log_sinks import FdSink, FileSink

log = Logger(namespace="tproxy.builtins.access_log")

_dumps = json.JSONEncoder(separators=(",", ":")).encode

#: Unwritten bytes kept (in multiples of ``buffer_size``) when the target
#: cannot take them; beyond this, lines are dropped.
_BACKLOG = 64


class AccessRecord(dict):
    """
    One record as a ``dict`` of the fields, which formats (``str``,
    ``format``) as its JSON text, so that a :mod:`twisted.logger` event's
    message is the JSON line (the ``"logger"`` target).
    """

    __slots__ = ()

    def __str__(self):
        return _dumps(self)

    def __format__(self, spec):
        return format(_dumps(self), spec)


class LineBatches(object):
    """
    The output of :class:`tproxy.builtins.access_log.Plugin`, its base
    class: the plugin sets ``target``, ``path``, ``max_size``, ``keep``,
    ``buffer_size``, ``flush_interval``, ``reactor`` and the batch's
    ``_logger``, ``_sink``, ``_buffer``, ``_buffered``, ``_timer``,
    ``_dropped``, ``_failed`` (its ``log`` phase appends to the batch
    itself, as :meth:`write` does).
    """

    def _open(self):
        """The sink of the target (opened once)."""
        if self.target == "stdout":
            self._sink = FdSink(sys.__stdout__.fileno() if sys.__stdout__ else 1, "stdout")
        elif self.target == "stderr":
            self._sink = FdSink(sys.__stderr__.fileno() if sys.__stderr__ else 2, "stderr")
        else:
            self._sink = FileSink(self.path, self.max_size, self.keep)
        return self._sink

    def write(self, line):
        """
        Queue one line (``str``, ASCII, no newline) for the target; write the
        batch when ``buffer_size`` is reached, else arm the flush timer.
        """
        if self._logger:
            log.info("{access_log}", access_log=json.loads(line, object_pairs_hook=AccessRecord))
            return
        self._buffer.append(line)
        size = self._buffered = self._buffered + len(line) + 1
        if size >= self.buffer_size:
            self.flush()
        elif self._timer is None and self.reactor is not None:
            self._timer = self.reactor.callLater(self.flush_interval, self._flush_timer)

    def _flush_timer(self):
        self._timer = None
        try:
            self.flush()
        except Exception:
            log.failure("access_log: flushing failed")

    def flush(self):
        """Write the lines waiting, with one system call (more if the target
        takes part of them); never raises ``OSError``."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        lines, self._buffer, self._buffered = self._buffer, [], 0
        sink = self._sink
        count = len(lines)
        if not count and (sink is None or not sink.pending):
            return
        if count:
            lines.append("")   # (the last newline, without copying the batch again)
            data = "\n".join(lines).encode("ascii")
        else:
            data = b""
        try:
            if sink is None:
                sink = self._open()
            left = sink.write(data)
        except OSError as e:
            self._dropped += count
            if not self._failed:
                self._failed = True
                log.error("access_log: cannot write to {target}: {error}; lines are "
                          "dropped until a write succeeds",
                          target=self.path or self.target, error=e.strerror or str(e))
            return
        if left and left > _BACKLOG * max(self.buffer_size, 65536):
            self._dropped += sink.drop()
        if self._failed and not left:
            self._failed = False
            log.warn("access_log: writing to {target} again ({dropped} lines dropped)",
                     target=sink.name, dropped=self._dropped)
            self._dropped = 0

    def reopen(self):
        """Write what waits, then reopen the file of the ``"file"`` target
        (after logrotate renamed it)."""
        if self.target == "logger":
            return
        self.flush()
        if self._sink is not None and self._sink.path is not None:
            self._sink.reopen()
            log.info("access_log: reopened {target}", target=self._sink.name)

    def close(self):
        """Write what waits and close the target (a later line opens it again)."""
        if self.target == "logger":
            return
        self.flush()
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close()


__all__ = ["AccessRecord", "LineBatches"]
