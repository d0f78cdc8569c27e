# -*- test-case-name: tests.test_access_log -*-
"""
The built-in ``access_log`` plugin: one JSON line per request, written from
the ``log`` phase (which runs exactly once per request, however it ended),
and one per TCP connection of ``streams`` (``stream_log``).

The record, in this key order (the default ``fields``)::

    {"time":"2025-01-31T12:00:00.123Z","request_id":"...",
     "client":"203.0.113.9","method":"GET","uri":"/api/v1/users?q=1",
     "status":200,"bytes_sent":512,"request_time":0.004,
     "upstream_addr":"10.0.0.5:9001","upstream_time":0.003,
     "route":"api","error":null}

(one line, compact separators, non-ASCII escaped: the line is ASCII).

- ``time``: UTC, ISO 8601 with milliseconds, when the request ended (the
  gateway reactor's clock).
- ``client``: ``ctx.request.client_addr`` (a forwarded address only from a
  trusted proxy).  ``uri``: the target as the client sent it (before the
  router stripped a prefix).  ``bytes_sent``: response bytes to the client,
  head included.  ``request_time`` / ``upstream_time``: seconds, to the
  microsecond (``0.004000``); ``upstream_addr`` / ``upstream_time`` are ``null`` when no
  upstream was contacted.  ``route``: the group (``X-Route-Prefix``).
  ``error``: ``null`` or why the request did not end normally
  (``"client_abort"``, ``"upstream_timeout"``, ``"no_peer"``, ...).
- ``fields`` chooses which of these appear, in which order (a TCP
  connection's line, below, has its own fixed fields);
  ``request_headers`` / ``response_headers`` add an object of the named
  header fields (``"*"``: all of them) at the end, and the values of the
  fields named in ``redact`` are written ``"[redacted]"``.

Where the lines go (``target``):

- ``"stdout"`` (the default) or ``"stderr"``: the process's file descriptor,
  for containers and journald.
- ``"file"``: appended to ``path``; when a write would take the file past
  ``max_size`` bytes it is renamed ``path.1`` (``path.1`` becoming
  ``path.2``, ..., up to ``keep`` files) and a new one started.  The gateway's
  ``reopen`` (``SIGUSR1`` under ``twistd``, what logrotate's ``postrotate``
  sends) closes and reopens ``path``.
- ``"logger"``: a :mod:`twisted.logger` event of the namespace
  ``tproxy.builtins.access_log`` with the format ``"{access_log}"`` and the
  record (an :class:`AccessRecord`) in the field ``access_log``: into
  twistd's own log, and into ``tproxy.testing``'s ``Harness.events``.  It is
  the slow way (~60 µs per request against ~2 µs), kept for tests and for
  small setups.

Lines are not written one by one: they are collected, and written with one
system call when ``buffer_size`` bytes are waiting, ``flush_interval`` seconds
after the first line of a batch, and when the gateway stops.  A write
failure (disk full, a closed pipe) drops the batch and says so once in the
log; a descriptor that cannot take more (non-blocking, full) keeps the rest
for the next batch, up to 64 times ``buffer_size``, after which lines are
dropped and counted.  A blocking descriptor (the usual stdout, a file) that
cannot take a batch at once holds tproxy until it does, as nginx's log
writes do: a log collector that stops reading stops the proxy.

Disable the plugin (leave it out of ``plugins``) for no logging work at all.
"""

import json
import sys
import time as _time
from json.encoder import encode_basestring_ascii as _esc

from twisted.logger import Logger

from tproxy import hookimpl
from tproxy.config import ConfigError
from tproxy.context import RequestContext
from tproxy.log_sinks import FdSink, FileSink, is_devnull

log = Logger()

_dumps = json.JSONEncoder(separators=(",", ":")).encode

#: The fields of a request's record, in their default order.
FIELDS = ("time", "request_id", "client", "method", "uri", "status",
          "bytes_sent", "request_time", "upstream_addr", "upstream_time",
          "route", "error")

#: The header fields whose values are not written, by default.
REDACT = ("authorization", "proxy-authorization", "cookie", "set-cookie")

_REDACTED = '"[redacted]"'
_MILLIS = tuple('.%03dZ"' % i for i in range(1000))
#: the text of the statuses 0..999 (a subscript: cheaper than formatting)
_STATUS = {i: str(i) for i in range(1000)}
#: ``ctx.request_id`` without the property: CPython 3.11 does not specialise
#: a property's read, which costs ~250 instructions more than this call
_request_id = RequestContext.request_id.fget
#: The ``%`` conversion of each field's value in a line (the others are
#: JSON text already).
_FORMATS = {"status": "%d", "bytes_sent": "%d", "request_time": "%.6f"}
_RESPONSE_VAR = "access_log.response_headers"
#: Unwritten bytes kept (in multiples of ``buffer_size``) when the target
#: cannot take them; beyond this, lines are dropped.
_BACKLOG = 64


class AccessLogError(Exception):
    """The access log's file cannot be opened (tproxy does not start)."""


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


def _headers_schema(what):
    return {
        "type": "array", "default": [], "uniqueItems": True,
        "items": {"type": "string", "pattern": "^([!#$%&'*+.^_`|~0-9A-Za-z-]+|[*])$"},
        "description": "{} header fields added to each record (\"*\": every "
                       "one)".format(what),
    }


class Plugin(object):
    """
    The JSON access log (``log`` and ``stream_log`` phases; see the module
    docstring).

    :param settings: :attr:`settings_schema`'s keys: ``target``, ``path``,
        ``max_size``, ``keep``, ``buffer_size``, ``flush_interval``,
        ``fields``, ``request_headers``, ``response_headers``, ``redact``.
    :raises ConfigError: for ``target: "file"`` without ``path``, or a
        ``path`` with another target.
    """

    settings_schema = {
        "type": "object",
        "properties": {
            "target": {
                "enum": ["stdout", "stderr", "file", "logger"],
                "description": "where the lines go; default \"file\" when path "
                               "is set, else \"stdout\"",
            },
            "path": {"type": ["string", "null"], "minLength": 1, "default": None,
                     "description": "the file of the \"file\" target"},
            "max_size": {"type": ["integer", "null"], "minimum": 1,
                         "default": 100 * 1024 * 1024,
                         "description": "rotate the file before it grows past "
                                        "this many bytes (null: never)"},
            "keep": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 5,
                     "description": "rotated files kept (path.1 ... path.N)"},
            "buffer_size": {"type": "integer", "minimum": 0, "maximum": 16 * 1024 * 1024,
                            "default": 65536,
                            "description": "write when this many bytes wait (0: "
                                           "every line at once)"},
            "flush_interval": {"type": "number", "exclusiveMinimum": 0,
                               "maximum": 60, "default": 0.1,
                               "description": "seconds a line may wait"},
            "fields": {"type": "array", "items": {"enum": list(FIELDS)},
                       "uniqueItems": True, "default": list(FIELDS)},
            "request_headers": _headers_schema("request"),
            "response_headers": _headers_schema("response"),
            "redact": {"type": "array", "items": {"type": "string"},
                       "default": list(REDACT),
                       "description": "header fields written as \"[redacted]\""},
        },
        "additionalProperties": False,
    }

    def __init__(self, settings=None):
        settings = settings or {}
        self.path = settings.get("path")
        self.target = settings.get("target") or ("file" if self.path else "stdout")
        if self.target == "file" and not self.path:
            raise ConfigError(("path", "the \"file\" target needs a path"))
        if self.path and self.target != "file":
            raise ConfigError(("path", "a path is only for the \"file\" target "
                                       "(target is {!r})".format(self.target)))
        self.max_size = settings.get("max_size", 100 * 1024 * 1024)
        self.keep = settings.get("keep", 5)
        self.buffer_size = settings.get("buffer_size", 65536)
        self.flush_interval = settings.get("flush_interval", 0.1)
        self.fields = tuple(settings.get("fields", FIELDS))
        self.redact = frozenset(h.lower() for h in settings.get("redact", REDACT))
        self.request_headers = _header_names(settings.get("request_headers", ()))
        self.response_headers = _header_names(settings.get("response_headers", ()))
        if not self.response_headers:
            # no header_filter implementation at all: a request pays nothing
            # for a feature that is off
            self.header_filter = None
        self._template = _template(self.fields, self.request_headers,
                                   self.response_headers)
        self._default_fields = self.fields == FIELDS
        self._default_line = (self._default_fields and self.request_headers is None
                              and self.response_headers is None)
        self._logger = self.target == "logger"
        self._pick = _picker(self.fields)
        self.reactor = None
        self._sink = None
        self._buffer = []
        self._buffered = 0
        self._timer = None
        self._dropped = 0
        self._failed = False
        self._second = None
        self._second_ms = -(1 << 62)   # the second's first millisecond (none yet)
        self._second_text = ""
        self._ms_lo = self._ms_hi = 0.0   # the millisecond of _ms_text
        self._ms_text = ""

    # -- the record -----------------------------------------------------------

    def _iso(self, t):
        """``t`` (epoch seconds) as a JSON string: ISO 8601, UTC, milliseconds."""
        return self._iso_ms(int(t * 1000.0 + 0.5))

    def _iso_ms(self, ms):
        """``ms`` (epoch milliseconds) as a JSON string (see :meth:`_iso`)."""
        second = ms // 1000
        if second != self._second:  # format the date once a second
            self._second = second
            self._second_ms = second * 1000
            self._second_text = _time.strftime('"%Y-%m-%dT%H:%M:%S', _time.gmtime(second))
        return self._second_text + _MILLIS[ms - second * 1000]

    def line(self, ctx):
        """
        The JSON text of a finished request's record (no newline).

        The strings are escaped by :mod:`json`'s C escaper, those that repeat
        (addresses, methods, routes, errors) once (:data:`_QUOTED`); the
        default fields are one f-string (no format to parse at run time),
        other choices a ``%`` template made once.  (The text is made by
        :meth:`log`, which writes it.)
        """
        return self.log(ctx, False)

    def record(self, ctx):
        """The :class:`AccessRecord` of a finished request (its :meth:`line` as a
        ``dict``, keys in order)."""
        return json.loads(self.line(ctx), object_pairs_hook=AccessRecord)

    def stream_record(self, ctx):
        """The :class:`AccessRecord` of a finished TCP connection."""
        end = ctx.end if ctx.end is not None else ctx.gateway.reactor.seconds()
        return AccessRecord((
            ("time", json.loads(self._iso(end))),
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

    # -- output ---------------------------------------------------------------

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

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Open the target; write and close it when the gateway stops, reopen
        it on the gateway's ``reopen``."""
        self.reactor = gateway.reactor
        if self.target != "logger":
            if self._sink is None:
                try:
                    self._open()
                except OSError as e:
                    raise AccessLogError("access_log cannot open {}: {}".format(
                        self.path, e.strerror or e))
            if self.target == "stdout" and is_devnull(self._sink.fd):
                log.warn("access_log: the target is stdout, which is /dev/null "
                         "(twistd without -n?): use \"target\": \"file\"")
            gateway.on_stop(self.close)
            on_reopen = getattr(gateway, "on_reopen", None)
            if on_reopen is not None:
                on_reopen(self.reopen)

    @hookimpl(trylast=True)
    def header_filter(self, ctx, response):
        """Keep the response header fields to log (only with
        ``response_headers``: without them the plugin has no
        ``header_filter``)."""
        ctx.vars[_RESPONSE_VAR] = _headers_json(
            response.headers, self.response_headers, self.redact)

    @hookimpl
    def log(self, ctx, write=True):
        """
        Write the request's line (:meth:`line`; ``write=False`` returns it
        instead): one function from the context to the batch, the common
        case without a call of tproxy's own.
        """
        request = ctx.request
        end = ctx.end
        if end is None:
            end = ctx.gateway.reactor.seconds()
            elapsed = 0.0
        else:
            elapsed = end - ctx.start
        upstream_start = ctx.upstream_start
        if upstream_start is None:
            upstream_time = "null"
        else:
            upstream_end = ctx.upstream_end
            if upstream_end is None:
                upstream_end = end if ctx.end is not None else upstream_start
            upstream_time = f"{upstream_end - upstream_start:.6f}"
        if not self._ms_lo <= end < self._ms_hi:
            # a new millisecond (many requests end in the same one: a
            # comparison of floats tells, cheaper than computing it)
            ms = int(end * 1000.0 + 0.5)
            i = ms - self._second_ms
            if not 0 <= i < 1000:
                self._iso_ms(ms)   # (a new second)
                i = ms - self._second_ms
            self._ms_lo = (ms - 0.5) / 1000.0
            self._ms_hi = (ms + 0.5) / 1000.0
            self._ms_text = self._second_text + _MILLIS[i]
        quoted = _QUOTED
        peer = ctx.peer
        address = peer.address if peer is not None else None
        try:   # (subscripts: cheaper than calls)
            client = quoted[request.client_addr]
            method = quoted[request.method]
            peer = quoted[address]
            route = quoted[ctx.route]
            error = quoted[ctx.error]
            status = _STATUS[ctx.status]
        except KeyError:   # a string seen for the first time (or a status past 999)
            client, method, peer, route, error = [
                quoted.get(x) or _quote(x)
                for x in (request.client_addr, request.method, address, ctx.route, ctx.error)]
            status = _STATUS.get(ctx.status) or f"{ctx.status}"
        rid = _request_id(ctx)
        rid = _esc(rid) if rid is not None else "null"
        query = request.query   # (request.uri, inlined)
        uri = _esc(request.path + "?" + query if query else request.path)
        if self._default_line:
            line = (f'{{"time":{self._ms_text},"request_id":{rid},"client":{client},'
                    f'"method":{method},"uri":{uri},"status":{status},'
                    f'"bytes_sent":{ctx.bytes_sent},"request_time":{elapsed:.6f},'
                    f'"upstream_addr":{peer},"upstream_time":{upstream_time},'
                    f'"route":{route},"error":{error}}}')
        else:
            values = (self._ms_text, rid, client, method, uri, ctx.status, ctx.bytes_sent,
                      elapsed, peer, upstream_time, route, error)
            if not self._default_fields:
                values = self._pick(values)
            if self.request_headers is not None:
                values += (_headers_json(request.headers, self.request_headers, self.redact),)
            if self.response_headers is not None:
                values += (ctx.vars.get(_RESPONSE_VAR, "{}"),)
            line = self._template % values
        if not write:
            return line
        if self._logger:
            return self.write(line)
        # (write, inlined)
        self._buffer.append(line)
        size = self._buffered = self._buffered + len(line) + 1
        if size >= self.buffer_size:
            self.flush()
        elif self._timer is None and self.reactor is not None:
            self._timer = self.reactor.callLater(self.flush_interval, self._flush_timer)

    @hookimpl
    def stream_log(self, ctx):
        """Write a TCP connection's line (``streams``)."""
        self.write(_dumps(self.stream_record(ctx)))


#: JSON text of the strings that repeat from request to request (methods,
#: client and upstream addresses, routes, errors), ``None`` as ``null``
_QUOTED = {None: "null"}
_QUOTED_MAX = 4096


def _quote(text):
    """``text`` (or ``None``) as JSON text, remembered in :data:`_QUOTED`."""
    if len(_QUOTED) >= _QUOTED_MAX:
        _QUOTED.clear()
        _QUOTED[None] = "null"
    quoted = _QUOTED[text] = _esc(text)
    return quoted


def _header_names(names):
    """``None`` (no headers), ``"*"`` (all), or the lower-cased names as
    ``bytes``."""
    if not names:
        return None
    if "*" in names:
        return "*"
    return tuple(n.lower().encode("ascii") for n in names)


def _headers_json(headers, names, redact):
    """The JSON object of the header fields ``names`` of ``headers`` (a
    :class:`tproxy.http.headers.Headers`): lower-case names, repeated fields
    joined with ``", "``, an absent one ``null``, redacted ones hidden; one
    pass over the fields."""
    found = {}
    every = names == "*"
    for name, value in headers.raw:
        key = name.lower()
        if every or key in names:
            found[key] = found[key] + b", " + value if key in found else value
    if every:
        items = [(k.decode("latin-1"), v) for k, v in found.items()]
    else:
        items = [(k.decode("latin-1"), found.get(k)) for k in names]
    return "{%s}" % ",".join([
        '%s:%s' % (_esc(k), _REDACTED if k in redact and v is not None
                   else "null" if v is None else _esc(v.decode("latin-1")))
        for k, v in items])


def _template(fields, request_headers, response_headers):
    """The ``%`` format of a line: ``{"time":%s,...}``."""
    names = list(fields)
    if request_headers is not None:
        names.append("request_headers")
    if response_headers is not None:
        names.append("response_headers")
    return "{" + ",".join('"%s":%s' % (n, _FORMATS.get(n, "%s")) for n in names) + "}"


def _picker(fields):
    """A function taking the values of :data:`FIELDS` to those of ``fields``."""
    indexes = [FIELDS.index(f) for f in fields]
    return lambda values: tuple([values[i] for i in indexes])


__all__ = ["Plugin", "AccessRecord", "AccessLogError", "FIELDS", "REDACT"]
