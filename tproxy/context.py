# -*- test-case-name: tests.test_phases -*-
"""
What the phases of one request share: the request view, the routing decision,
the chosen peer, timings and the plugins' own variables.
"""

import json
import os

from twisted.internet.defer import succeed

from tproxy.http.headers import Headers
from tproxy.http.response_fields import block_fields


#: the process's part of request ids made from numbers (see RequestContext)
_ID_PREFIX = os.urandom(4).hex()
#: the block of 256 request numbers whose id text was made last, and its text
_ID_BLOCK = [-1, ""]
_HEX2 = tuple("%02x" % i for i in range(256))


def _forked():
    """A forked child (a worker forked by its fork server,
    :mod:`tproxy.worker_forks`) is a process of its own: its own prefix."""
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(4).hex()
    _ID_BLOCK[:] = [-1, ""]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


class Request(object):
    """
    The client's request as the phases see it.

    :ivar method: ``"GET"``, ...
    :ivar path: the decoded-as-latin-1 path of the target, without the query.
    :ivar query: the query string without ``?`` (``""`` when absent).
    :ivar version: ``"1.1"`` or ``"1.0"``.
    :ivar headers: a :class:`~tproxy.http.headers.Headers`; what is in it when
        the balancer has run is what goes upstream (after hop-by-hop removal).
    :ivar client_addr: the client's address (believed from X-Real-IP /
        X-Forwarded-For only when the peer is a trusted proxy).
    :ivar remote_addr: the address of the TCP peer, always.
    :ivar scheme: ``"http"`` or ``"https"``.
    :ivar watched: the lower-case names (``bytes``) of the watched fields
        (:func:`tproxy.http.wire.watch_field`) the client sent, a tuple
        (usually empty); ``None`` when not known (a request made by other
        code than tproxy's reader): look in ``headers`` then.
    :ivar content_length: the body's length the client declared in its
        ``Content-Length`` (an ``int``; read only), ``None`` for a chunked
        body or none: ``headers`` has no ``Content-Length`` (tproxy frames
        the body itself), and the body may not have arrived yet.
    """

    __slots__ = ("method", "path", "query", "version", "headers",
                 "client_addr", "remote_addr", "scheme", "watched", "_content_length")

    def __init__(self, method, path, query="", version="1.1", headers=None,
                 client_addr="127.0.0.1", remote_addr=None, scheme="http", watched=None):
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers if headers is not None else Headers()
        self.client_addr = client_addr
        self.remote_addr = remote_addr if remote_addr is not None else client_addr
        self.scheme = scheme
        self.watched = watched
        # (_content_length: set by the reader for a request with a
        # Content-Length only, so that the others cost nothing)

    @property
    def content_length(self):
        """The declared ``Content-Length`` (``int``), ``None`` for a chunked
        body or none."""
        try:
            return self._content_length
        except AttributeError:
            return None

    @property
    def uri(self):
        """The request target: path and query."""
        return self.path + "?" + self.query if self.query else self.path

    @property
    def host(self):
        """The Host header without a port, lower-cased ('' when absent)."""
        h = self.headers.get("host") or ""
        if h.startswith("["):
            return h[:h.find("]") + 1].lower()
        return h.rsplit(":", 1)[0].lower() if ":" in h else h.lower()


class Response(object):
    """
    A response made by a plugin (``access``, ``rewrite`` or ``balancer``), sent
    instead of contacting an upstream.

    :param status: the status code.
    :param body: ``bytes`` or ``str`` (sent as UTF-8).
    :param headers: a mapping or a list of ``(name, value)`` pairs.
    """

    __slots__ = ("status", "headers", "body")

    def __init__(self, status, body=b"", headers=None):
        self.status = int(status)
        self.body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if headers is None:
            headers = []
        elif hasattr(headers, "items"):
            headers = list(headers.items())
        self.headers = Headers([(_b(n), _b(v)) for n, v in headers])

    @classmethod
    def json(cls, status, obj, headers=None):
        """A response whose body is ``obj`` as JSON."""
        r = cls(status, json.dumps(obj, separators=(",", ":")) + "\n", headers)
        r.headers.set("Content-Type", "application/json")
        return r

    @classmethod
    def error(cls, status, message, **fields):
        """A JSON error response: ``{"error": message, **fields}``."""
        body = {"error": message}
        body.update(fields)
        return cls.json(status, body)

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:40])


def _b(s):
    return s if isinstance(s, bytes) else str(s).encode("latin-1")


class ResponseHead(object):
    """
    The status and headers of a response on its way to the client, as
    ``header_filter`` sees them.

    :ivar status: the status code (``int``); a filter may change it.
    :ivar reason: the upstream's reason phrase (``bytes``); ``b""`` for
        tproxy's own phrase of the status.
    :ivar headers: a mutable :class:`~tproxy.http.headers.Headers`, hop-by-hop
        fields already removed.
    :ivar from_upstream: ``True`` for the response of the upstream peer
        (``ctx.peer``), ``False`` for one tproxy or a plugin made: an
        ``access`` denial, a ``503`` without a live peer, a ``502`` / ``504``
        after an upstream failure (``ctx.error`` says which), a ``408``.
    """

    __slots__ = ("status", "reason", "headers")

    #: a class attribute: set per class, so telling costs nothing per request
    from_upstream = False

    def __init__(self, status, headers, reason=b""):
        self.status = status
        self.headers = headers
        self.reason = reason


class _UpstreamResponseHead(ResponseHead):
    """
    The head of a response received from the upstream peer, its
    ``headers`` made when a filter first reads them (most read only the
    status, or nothing).  Until then the head holds the fields as received
    (hop-by-hop ones removed): ``_fields``, their pairs, or ``None`` and
    ``_lines``, their lines joined by CRLF; ``_headers`` is ``None`` while
    no filter read or set ``headers``, and the head goes to the client as
    received (:mod:`tproxy.http.response`).
    """

    __slots__ = ("_headers", "_fields", "_lines")

    from_upstream = True

    def __init__(self, status, reason, fields, lines):
        self.status = status
        self.reason = reason
        self._headers = None
        self._fields = fields
        self._lines = lines

    @property
    def headers(self):
        """A mutable :class:`~tproxy.http.headers.Headers` of the fields."""
        headers = self._headers
        if headers is None:
            fields = self._fields
            if fields is None:
                fields = self._fields = block_fields(self._lines)
            # (a copy: the fields received stay, to tell a change by)
            headers = self._headers = Headers(fields[:])
        return headers

    @headers.setter
    def headers(self, headers):
        self._headers = headers

    def _changed_fields(self):
        """The pairs a filter left when they are not the ones received, else
        ``None`` (not read, or left as they were: a comparison at C speed)."""
        headers = self._headers
        if headers is None or headers.raw == self._fields:
            return None
        return headers.raw


class RequestContext(object):
    """
    Everything the phases of one request share (OpenResty's ``ngx.ctx`` and
    ``ngx.var``): the ``ctx`` argument of every request hook.

    :ivar gateway: the :class:`tproxy.gateway.Gateway`.
    :ivar request: the :class:`Request`.
    :ivar request_id: a unique id (in the access log); given as a number,
        it is made a string (this process's random prefix and the number in
        hex) when first read.
    :ivar vars: a ``dict`` for plugins' own per-request values.
    :ivar route: the upstream group chosen by the router (``None`` before).
    :ivar consumer: the name of the authenticated caller, set by an
        authentication plugin in ``access`` (``None``: anonymous); the
        plugins after it (``rate_limit``'s ``consumer`` key, logs) read it.
    :ivar upstream_path: the path (with query) sent upstream.
    :ivar upstream_headers: ``(name, value)`` pairs added to the upstream
        request (replacing any field of the same name).
    :ivar peer: the :class:`tproxy.registry.Peer` chosen last (``None``
        until a balancer chose one, and when none did).
    :ivar tried: a tuple of the peers chosen so far, in order; the last one
        is ``peer``, so in ``log`` it includes the peer that answered.
    :ivar status: the status sent to the client (``0`` while unknown; ``499``
        when the client went away before a status was known).
    :ivar bytes_sent: response bytes written to the client (head included).
    :ivar error: why the request did not end normally, ``None`` if it did:
        ``"client_abort"``, ``"client_timeout"`` (a ``408``: the client
        stopped sending its body for ``proxy.client_body_timeout`` seconds),
        ``"client_send_timeout"`` (the response cut: the client read none of
        it for ``proxy.client_send_timeout`` seconds),
        ``"body_too_large"`` (past :attr:`max_body_size`),
        ``"upstream_connect"``, ``"upstream_timeout"``,
        ``"upstream_error"``, ``"upstream_invalid"`` (not HTTP, or framing
        tproxy refuses), ``"upstream_header_too_big"`` (a response head
        past ``proxy.max_upstream_header_size``), ``"plugin_error"``,
        ``"plugin_timeout"`` (an awaited ``rewrite``, ``access``,
        ``balancer``, ``header_filter`` or ``body_filter`` that did not
        answer within ``timeouts.read``),
        ``"internal_error"`` (a defect of tproxy's own, logged),
        ``"no_peer"``, ``"no_route"`` (the ``routes`` built-in),
        ``"bad_request"``, ``"header_timeout"``, ``"target_too_long"``,
        ``"header_too_large"``, ``"not_implemented"``,
        ``"version_not_supported"`` (a request refused before any plugin
        saw it: only its ``log`` runs, see
        :func:`tproxy.http.refusals.refused_context`),
        ``"shutdown"``, ``"idle_timeout"`` / ``"upstream_reset"`` (an
        upgraded connection, see :mod:`tproxy.http.tunnel`).  In ``header_filter`` a response made after an
        upstream failure already carries it; ``response.from_upstream``
        (:class:`ResponseHead`) tells an upstream's response from one tproxy
        or a plugin made.
    :ivar plugins: the :class:`tproxy.phases.PhaseSet` of the request's route
        (known after the every-route ``rewrite`` implementations ran).
    :ivar start: the clock's time when the request head was read.
    :ivar upstream_start: the clock's time the first peer was chosen
        (``None``: no upstream contacted).
    :ivar upstream_end: the clock's time the upstream's response ended or
        failed (``None`` before).
    :ivar end: the clock's time the response to the client ended (``None``
        before).
    :ivar upstream_addr: ``peer.address`` (``"host:port"``, an IPv6 host in
        brackets: ``"[::1]:8080"``) or ``None``; see :attr:`upstream_addr`.
    """

    __slots__ = ("gateway", "request", "_request_id", "vars", "route",
                 "consumer", "upstream_path", "upstream_headers", "peer", "tried", "status",
                 "bytes_sent", "error", "start", "upstream_start",
                 "upstream_end", "end", "plugins", "_exchange", "_awaited")

    def __init__(self, gateway, request, request_id="", start=0.0):
        self.gateway = gateway
        self.request = request
        self._request_id = request_id
        self.vars = {}
        self.route = None
        self.consumer = None
        # (request.uri, inlined: once per request)
        self.upstream_path = request.path + "?" + request.query if request.query else request.path
        self.upstream_headers = []
        self.peer = None
        self.tried = ()
        self.status = 0
        self.bytes_sent = 0
        self.error = None
        self.start = start
        self.upstream_start = None
        self.upstream_end = None
        self.end = None
        #: the connection's exchange serving the request (private: tproxy's HTTP side)
        self._exchange = None
        phases = getattr(gateway, "phases", None)
        self.plugins = phases.default if phases is not None else None

    @property
    def request_id(self):
        """The request's id; made on first use when tproxy gave a number (most
        requests never need it: no work per request for them)."""
        rid = self._request_id
        if type(rid) is int:
            # the numbers follow each other: the text of the first 6 hex
            # digits is made once per 256 (a third of the cost of "%08x")
            block = rid >> 8
            if block != _ID_BLOCK[0]:
                _ID_BLOCK[:] = [block, "%s%06x" % (_ID_PREFIX, block)]
            rid = self._request_id = _ID_BLOCK[1] + _HEX2[rid & 255]
        return rid

    @request_id.setter
    def request_id(self, value):
        self._request_id = value

    @property
    def max_body_size(self):
        """
        The bytes the request body may have (``None``: no limit); starts as
        ``proxy.max_body_size``.  A ``rewrite`` or ``access`` implementation
        may set it for this request (a per-route limit): a declared
        ``Content-Length`` is checked against it once ``access`` is over, and
        a chunked body's decoded bytes as they arrive (those that arrived
        before were counted against the limit in force then).  Past it:
        ``413``, or, once the response has started, the upstream request is
        aborted and the connection closed (``ctx.error`` is
        ``"body_too_large"``).
        """
        ex = self._exchange
        if ex is not None:
            return ex.body_limit
        return self.gateway.config["proxy"]["max_body_size"]

    @max_body_size.setter
    def max_body_size(self, value):
        if value is not None and (type(value) is not int or value < 0):
            raise ValueError("max_body_size is a number of bytes or None, not %r" % (value,))
        if self._exchange is not None:
            self._exchange.body_limit = value

    def read_body_prefix(self, n):
        """
        The first ``n`` bytes of the request body (fewer if it is shorter,
        ``b""`` without a body), as a Deferred, for ``rewrite``, ``access``
        and ``balancer`` implementations that route or decide on content.
        tproxy holds the bytes back, bounded by ``n``, and sends them upstream
        unchanged; the rest of the body streams as usual.
        """
        if self._exchange is None:
            return succeed(b"")
        return self._exchange.read_body_prefix(n)

    def request_time(self):
        """Seconds from the request head to the end of the response."""
        return (self.end if self.end is not None else self.start) - self.start

    def upstream_time(self):
        """Seconds spent with the upstream (``None`` if never contacted)."""
        if self.upstream_start is None:
            return None
        end = self.upstream_end if self.upstream_end is not None else self.end
        return (end if end is not None else self.upstream_start) - self.upstream_start

    @property
    def upstream_addr(self):
        """
        ``"host:port"`` of the last peer chosen (``ctx.peer.address``: the
        host as registered, an IPv6 address in brackets, ``"[::1]:8080"``,
        the port in decimal), or ``None`` when no peer was chosen.  Unlike
        nginx's ``$upstream_addr`` it names one peer, not every peer tried
        (those are ``ctx.tried``).
        """
        return self.peer.address if self.peer is not None else None
