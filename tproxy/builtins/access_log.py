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
- A request refused before any plugin saw it (a malformed head, one too
  large, a header timeout: ``"bad_request"``, ``"header_too_large"``,
  ``"header_timeout"`` ...) has its line too, as in nginx: ``method``
  ``null`` and ``uri`` ``""`` when its request line could not be read,
  ``route`` and the upstream fields ``null`` (docs/plugins.md, ``log``).
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
import time as _time
from json.encoder import encode_basestring_ascii as _esc

from twisted.logger import Logger

from tproxy import hookimpl
from tproxy.builtins._access_log_output import AccessRecord, LineBatches, _dumps
from tproxy.builtins._access_log_settings import (
    FIELDS, REDACT, SETTINGS_SCHEMA, header_names, picker, target_of, template)
from tproxy.context import RequestContext
from tproxy.log_sinks import is_devnull

log = Logger()

_REDACTED = '"[redacted]"'
_MILLIS = tuple('.%03dZ"' % i for i in range(1000))
#: the text of the statuses 0..999 (a subscript: cheaper than formatting)
_STATUS = {i: str(i) for i in range(1000)}
#: ``ctx.request_id`` without the property: CPython 3.11 does not specialise
#: a property's read, which costs ~250 instructions more than this call
_request_id = RequestContext.request_id.fget
_RESPONSE_VAR = "access_log.response_headers"


class AccessLogError(Exception):
    """The access log's file cannot be opened (tproxy does not start)."""


class Plugin(LineBatches):
    """
    The JSON access log (``log`` and ``stream_log`` phases; see the module
    docstring).

    :param settings: :attr:`settings_schema`'s keys: ``target``, ``path``,
        ``max_size``, ``keep``, ``buffer_size``, ``flush_interval``,
        ``fields``, ``request_headers``, ``response_headers``, ``redact``.
    :raises ConfigError: for ``target: "file"`` without ``path``, or a
        ``path`` with another target.
    """

    settings_schema = SETTINGS_SCHEMA

    def __init__(self, settings=None):
        settings = settings or {}
        self.target, self.path = target_of(settings)
        self.max_size = settings.get("max_size", 100 * 1024 * 1024)
        self.keep = settings.get("keep", 5)
        self.buffer_size = settings.get("buffer_size", 65536)
        self.flush_interval = settings.get("flush_interval", 0.1)
        self.fields = tuple(settings.get("fields", FIELDS))
        self.redact = frozenset(h.lower() for h in settings.get("redact", REDACT))
        self.request_headers = header_names(settings.get("request_headers", ()))
        self.response_headers = header_names(settings.get("response_headers", ()))
        if not self.response_headers:
            # no header_filter implementation at all: a request pays nothing
            # for a feature that is off
            self.header_filter = None
        self._template = template(self.fields, self.request_headers,
                                  self.response_headers)
        self._default_fields = self.fields == FIELDS
        self._default_line = (self._default_fields and self.request_headers is None
                              and self.response_headers is None)
        self._logger = self.target == "logger"
        self._pick = picker(self.fields)
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


__all__ = ["Plugin", "AccessRecord", "AccessLogError", "FIELDS", "REDACT"]
