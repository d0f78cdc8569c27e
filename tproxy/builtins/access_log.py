# -*- test-case-name: tests.test_access_log -*-
"""
The built-in ``access_log`` plugin: one JSON object per request, written from
the ``log`` phase (which runs exactly once per request, however it ended).

The record, in this key order::

    {"time":"2025-01-31T12:00:00.123Z","request_id":"...",
     "client":"203.0.113.9","method":"GET","uri":"/api/v1/users?q=1",
     "status":200,"bytes_sent":512,"request_time":0.004,
     "upstream_addr":"10.0.0.5:9001","upstream_time":0.003,
     "route":"api","error":null}

(one line, compact separators, non-ASCII escaped).

- ``time``: UTC, ISO 8601 with milliseconds, when the request ended (the
  gateway reactor's clock).
- ``client``: ``ctx.request.client_addr`` (a forwarded address only from a
  trusted proxy).  ``uri``: the target as the client sent it (before the
  router stripped a prefix).  ``bytes_sent``: response bytes to the client,
  head included.  ``request_time`` / ``upstream_time``: seconds, rounded to
  the microsecond; ``upstream_addr`` / ``upstream_time`` are ``null`` when no
  upstream was contacted.  ``route``: the group (``X-Route-Prefix``).
  ``error``: ``null`` or why the request did not end normally
  (``"client_abort"``, ``"upstream_timeout"``, ``"no_peer"``, ...).

Where the lines go:

- By default, through :mod:`twisted.logger` as an event of the namespace
  ``tproxy.builtins.access_log`` with the format ``"{access_log}"`` and the
  record in the field ``access_log``.  A text observer (``twistd``'s log
  file) prints the record as its JSON line; a JSON observer
  (``--log-format=json``, :func:`twisted.logger.jsonFileLogObserver`) keeps
  it as a JSON object under ``"access_log"``.  Filter on the namespace to
  route access lines to their own observer.
- With the setting ``"path"``, each record is appended as a line to that
  file instead (opened once, at ``init_worker`` or first use, line-buffered,
  closed when the gateway stops).

TCP connections of ``streams`` get one line each from ``stream_log``:
``time``, ``connection_id``, ``client``, ``listen``, ``status`` (nginx's stream
``$status``), ``bytes_received`` / ``bytes_sent`` (from / to the client),
``session_time``, ``upstream_addr``, ``route`` (the group), ``reason`` (why
it closed) and ``error``.

Disable the plugin (leave it out of ``plugins``) for no logging work at all.
"""

import json
import time as _time

from twisted.logger import Logger

from tproxy import hookimpl

log = Logger()

_dumps = json.JSONEncoder(separators=(",", ":")).encode


class AccessRecord(dict):
    """
    One request's record: a ``dict`` of the fields, which formats (``str``,
    ``format``) as its JSON text, so that the event's message is the JSON line.
    """

    __slots__ = ()

    def __str__(self):
        return _dumps(self)

    def __format__(self, spec):
        return format(_dumps(self), spec)


class Plugin(object):
    """
    The JSON access log (``log`` phase).

    :param settings: ``{"path": None}``: a file to append lines to instead of
        logging through :mod:`twisted.logger`.
    """

    settings_schema = {
        "type": "object",
        "properties": {
            "path": {
                "type": ["string", "null"],
                "default": None,
                "description": "append the JSON lines to this file instead "
                               "of emitting twisted.logger events",
            },
        },
        "additionalProperties": False,
    }

    def __init__(self, settings=None):
        settings = settings or {}
        self.path = settings.get("path")
        self._file = None
        self._second = None
        self._second_text = ""

    # -- output ---------------------------------------------------------------

    def _open(self):
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")
        return self._file

    def close(self):
        """Close the file (if any); a later record opens it again."""
        f, self._file = self._file, None
        if f is not None:
            f.close()

    def _iso(self, t):
        """``t`` (epoch seconds) in ISO 8601, UTC, to the millisecond."""
        second, milli = divmod(int(round(t * 1000)), 1000)
        if second != self._second:  # format the date once a second
            self._second = second
            self._second_text = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second))
        return "%s.%03dZ" % (self._second_text, milli)

    def record(self, ctx):
        """The :class:`AccessRecord` of a finished request."""
        request = ctx.request
        end = ctx.end
        if end is None:
            end = ctx.gateway.reactor.seconds()
        upstream_time = ctx.upstream_time()
        return AccessRecord((
            ("time", self._iso(end)),
            ("request_id", ctx.request_id),
            ("client", request.client_addr),
            ("method", request.method),
            ("uri", request.uri),
            ("status", ctx.status),
            ("bytes_sent", ctx.bytes_sent),
            ("request_time", round(ctx.request_time(), 6)),
            ("upstream_addr", ctx.upstream_addr),
            ("upstream_time", None if upstream_time is None else round(upstream_time, 6)),
            ("route", ctx.route),
            ("error", ctx.error),
        ))

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Open the file (with ``path``) and close it when the gateway stops."""
        if self.path is not None:
            if self._file is None:
                self._open()
            gateway.on_stop(self.close)

    def stream_record(self, ctx):
        """The :class:`AccessRecord` of a finished TCP connection."""
        end = ctx.end if ctx.end is not None else ctx.gateway.reactor.seconds()
        return AccessRecord((
            ("time", self._iso(end)),
            ("connection_id", ctx.connection_id),
            ("client", ctx.client_addr),
            ("listen", ctx.stream["listen"]),
            ("status", ctx.status),
            ("bytes_received", ctx.bytes_received),
            ("bytes_sent", ctx.bytes_sent),
            ("session_time", round(ctx.session_time(), 6)),
            ("upstream_addr", ctx.upstream_addr),
            ("route", ctx.route),
            ("reason", ctx.reason),
            ("error", ctx.error),
        ))

    def _write(self, record):
        if self.path is None:
            log.info("{access_log}", access_log=record)
        else:
            f = self._file if self._file is not None else self._open()
            f.write(_dumps(record) + "\n")

    @hookimpl
    def log(self, ctx):
        """Write the request's record."""
        self._write(self.record(ctx))

    @hookimpl
    def stream_log(self, ctx):
        """Write a TCP connection's record (``streams``)."""
        self._write(self.stream_record(ctx))


__all__ = ["Plugin", "AccessRecord"]
