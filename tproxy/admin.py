# -*- test-case-name: tests.test_admin -*-
"""
The admin listener: a small JSON API on its own endpoint (loopback by
default), with optional bearer-token authentication.  Plugins add endpoints
with :meth:`AdminRoutes.route` from ``init_worker``::

    @hookimpl
    def init_worker(gateway):
        gateway.admin.route("GET", "/hello", lambda request: (200, {"hi": 1}))

A path may have parameters: a segment written ``{name}`` matches any one
non-empty segment, percent-decoded into ``request.params["name"]``
(``admin.route("GET", "/routes/{name}", handler)``); a path without
parameters wins over one with.

A request meets, in order: the token check (``401``; not for a route made
with ``public=True``, such as the health endpoints ``/healthz`` and
``/readyz`` that orchestrators' probes call without a token), the path
(``404``), the method (``405``), then the handler; an exception in the handler
is a ``500`` with a logged traceback.  Every answer is a JSON document, except
what a handler returns as an :class:`AdminResponse` with a body and a
``Content-Type`` of its own (``prometheus``'s ``GET /metrics`` text)::

    AdminResponse(200, None, [("Content-Type", "text/plain; version=0.0.4")],
                  body=text)

:meth:`AdminRoutes.handle` runs the same steps without HTTP (for test
harnesses); :meth:`AdminRoutes.site` serves them over HTTP.
"""

import hmac
import json
from urllib.parse import parse_qsl, unquote

from twisted.internet.defer import maybeDeferred, succeed
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = ["AdminRequest", "AdminResponse", "AdminRoutes", "MAX_BODY_SIZE"]

log = Logger()

#: The largest request body the admin listener reads (bytes); more is a 413.
MAX_BODY_SIZE = 1024 * 1024

_FORM = "application/x-www-form-urlencoded"


class AdminRequest(object):
    """
    What an admin handler receives.

    :ivar method: ``"GET"``, ...
    :ivar path: the request path (``"/upstream/add"``), without the query.
    :ivar args: ``{name: str}``: the first value of each query argument (and,
        for a body of type ``application/x-www-form-urlencoded``, of each form
        field the query does not already have).
    :ivar headers: ``{lower-case name: str}`` (repeated fields joined with
        ``", "``).
    :ivar body: the request body (``bytes``; at most :data:`MAX_BODY_SIZE`).
    :ivar client_addr: the TCP peer's address (``str``), or ``None`` when the
        transport has none (a UNIX socket).
    :ivar params: ``{name: str}``: the path parameters of the route that
        matched (``{}`` for a route without).
    """

    __slots__ = ("method", "path", "args", "headers", "body", "client_addr",
                 "params")

    def __init__(self, method, path, args=None, headers=None, body=b"",
                 client_addr=None):
        self.method = method.upper()
        self.path = path
        self.args = dict(args or {})
        self.headers = dict((k.lower(), v) for k, v in (headers or {}).items())
        self.body = body
        self.client_addr = client_addr
        self.params = {}

    @classmethod
    def from_uri(cls, method, uri, headers=None, body=b"", client_addr=None):
        """
        Build a request from a request target (``"/upstream/add?port=80"``).

        :raises ValueError: if the query string is not valid UTF-8 after
            percent-decoding.
        """
        path, _, query = uri.partition("?")
        args = _parse_args(query)
        headers = dict((k.lower(), v) for k, v in (headers or {}).items())
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if body and ctype == _FORM:
            for name, value in _parse_args(body.decode("latin-1")).items():
                args.setdefault(name, value)
        return cls(method, path, args, headers, body, client_addr)

    def __repr__(self):
        return "<AdminRequest %s %s>" % (self.method, self.path)


def _parse_args(query):
    """``{name: first value}`` of a query string (blank values kept)."""
    args = {}
    for name, value in parse_qsl(query, keep_blank_values=True,
                                 encoding="utf-8", errors="strict"):
        args.setdefault(name, value)
    return args


class AdminResponse(object):
    """
    The answer to one admin request.

    :ivar status: the status code.
    :ivar obj: the JSON-able document.
    :ivar headers: extra ``(name, value)`` pairs (``Allow``,
        ``WWW-Authenticate``); ``Content-Type`` is added when sent.
    :ivar body: ``obj`` encoded as JSON (``bytes``).
    """

    __slots__ = ("status", "obj", "headers", "body")

    def __init__(self, status, obj, headers=(), body=None):
        self.status = status
        self.obj = obj
        self.headers = list(headers)
        self.body = body if body is not None else _encode(obj)

    def __repr__(self):
        return "<AdminResponse %d %r>" % (self.status, self.body[:60])


def _encode(obj):
    return (json.dumps(obj, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _raw(text):
    """The bytes of a header value decoded as latin-1 (or given as text)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _bind(segments, path):
    """
    ``{name: value}`` of the parameters of the route whose path is
    ``segments`` (split at ``/``) if it serves ``path``, else ``None``.
    """
    parts = path.split("/")
    if len(parts) != len(segments):
        return None
    params = {}
    for want, got in zip(segments, parts):
        if want.startswith("{") and want.endswith("}"):
            if not got:
                return None
            try:
                params[want[1:-1]] = unquote(got, errors="strict")
            except UnicodeDecodeError:
                return None
        elif want != got:
            return None
    return params


def _error(status, message, headers=(), **fields):
    obj = {"error": message}
    obj.update(fields)
    return AdminResponse(status, obj, headers)


class AdminRoutes(object):
    """
    The table of admin endpoints.

    A handler is ``handler(request) -> (status, obj)`` (or a Deferred /
    coroutine of it) where ``request`` is an :class:`AdminRequest`; ``obj`` is
    sent as JSON.  A handler may also return an :class:`AdminResponse`, sent
    as it is (its ``body``, and its ``Content-Type`` if it has one).  Unknown paths get ``404``, a known path with another method
    ``405`` (with ``Allow``), a missing/wrong token ``401`` (with
    ``WWW-Authenticate: Bearer``), an exception in a handler ``500`` -- all
    with a JSON ``error``.  A ``GET`` route also answers ``HEAD``.

    :param token: the bearer token every request must send as
        ``Authorization: Bearer <token>``; ``None`` (or ``""``) for none.
    """

    def __init__(self, token=None):
        self.token = token
        self.routes = {}  # (method, path) -> handler
        self.patterns = {}  # (method, path with {params}) -> (segments, handler)
        self.public = set()  # paths served without the token

    def route(self, method, path, handler, public=False):
        """
        Serve ``method path`` with ``handler`` (replacing an earlier one).
        A segment ``{name}`` of ``path`` is a parameter (see the module
        docstring).

        :param public: serve the path without the token check (for what
            must answer callers that cannot send one: health probes); a
            plain path only, never one with parameters.
        """
        key = (method.upper(), path)
        if public:
            if "{" in path:
                raise ValueError("a public admin route has no parameters: %r" % (path,))
            self.public.add(path)
        if "{" in path:
            self.patterns[key] = (path.split("/"), handler)
        else:
            self.routes[key] = handler

    def _pattern(self, method, path):
        """``(handler, params)`` of the pattern route serving ``method path``,
        or ``(None, None)``."""
        for (m, _), (segments, handler) in self.patterns.items():
            if m == method:
                params = _bind(segments, path)
                if params is not None:
                    return handler, params
        return None, None

    def allowed(self, path):
        """The methods served at ``path``, sorted (``[]`` for an unknown path)."""
        methods = set(m for (m, p) in self.routes if p == path)
        for (m, _), (segments, _) in self.patterns.items():
            if _bind(segments, path) is not None:
                methods.add(m)
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    def _authorized(self, request):
        if not self.token:
            return True
        scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(_raw(credentials.strip()),
                                   self.token.encode("utf-8"))

    def dispatch(self, request):
        """
        Authenticate and route ``request``; never fails.

        :param request: an :class:`AdminRequest`.
        :return: a Deferred firing with an :class:`AdminResponse`.
        """
        if not self._authorized(request) and request.path not in self.public:
            challenge = ('Bearer realm="tproxy-admin", error="invalid_token"'
                         if "authorization" in request.headers
                         else 'Bearer realm="tproxy-admin"')
            return succeed(_error(401, "missing or invalid bearer token",
                                  [("WWW-Authenticate", challenge)]))
        method = request.method
        handler = self.routes.get((method, request.path))
        if handler is None and method == "HEAD":
            handler = self.routes.get(("GET", request.path))
        if handler is None and self.patterns:
            handler, params = self._pattern(method, request.path)
            if handler is None and method == "HEAD":
                handler, params = self._pattern("GET", request.path)
            if handler is not None:
                request.params = params
        if handler is None:
            allowed = self.allowed(request.path)
            if not allowed:
                return succeed(_error(404, "not found", path=request.path))
            return succeed(_error(405, "method not allowed",
                                  [("Allow", ", ".join(allowed))],
                                  method=method, allowed=allowed))
        d = maybeDeferred(handler, request)
        d.addCallback(self._respond, request)
        d.addErrback(self._failed, request)
        return d

    def _respond(self, result, request):
        if isinstance(result, AdminResponse):
            return result
        status, obj = result
        status = int(status)
        if not 100 <= status <= 599:
            raise ValueError("status %r out of range" % (status,))
        return AdminResponse(status, obj)

    def _failed(self, failure, request):
        log.failure("admin handler for {method} {path} failed", failure,
                    method=request.method, path=request.path)
        return _error(500, "internal error", path=request.path)

    def handle(self, request):
        """
        Authenticate and route ``request`` without HTTP (for test harnesses).

        :param request: an :class:`AdminRequest`.
        :return: a Deferred firing with ``(status, obj)``.
        """
        return self.dispatch(request).addCallback(lambda r: (r.status, r.obj))

    def resource(self):
        """The :class:`twisted.web.resource.IResource` serving the table."""
        return _AdminResource(self)

    def site(self):
        """
        The ``twisted.web.server.Site`` serving the table, for a listener on
        the admin endpoint.  It writes no access log and bounds request bodies
        to :data:`MAX_BODY_SIZE` (``413``).
        """
        return _AdminSite(self.resource(), logPath=None)


class _BoundedRequest(Request):
    """
    A request that refuses a body over :data:`MAX_BODY_SIZE`.

    Twisted reads a whole body before rendering; checking ``Content-Length``
    (and the count of chunked bytes) as it arrives answers ``413`` and closes
    the connection instead of buffering it.
    """

    _refused = False
    _received = 0

    def gotLength(self, length):
        if length is not None and length > MAX_BODY_SIZE:
            # no "100 Continue" for a body we will not read
            self.requestHeaders.removeHeader(b"expect")
            self._refuse()
            length = 0
        Request.gotLength(self, length)

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._received += len(data)
        if self._received > MAX_BODY_SIZE:
            self._refuse()
            return
        Request.handleContentChunk(self, data)

    def _refuse(self):
        self._refused = True
        body = _error(413, "request body too large", limit=MAX_BODY_SIZE).body
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n"
            b"Connection: close\r\n\r\n" + body)
        self.channel.loseConnection()

    def process(self):
        if not self._refused:
            Request.process(self)


class _AdminSite(Site):
    """A ``Site`` without access log lines and with bounded bodies."""

    noisy = False
    requestFactory = _BoundedRequest

    def log(self, request):
        pass


class _AdminResource(Resource):
    """The one leaf resource of the admin site: hands every request to
    :meth:`AdminRoutes.dispatch` and writes the JSON answer."""

    isLeaf = True

    def __init__(self, routes):
        Resource.__init__(self)
        self.routes = routes

    def render(self, request):
        gone = []
        request.notifyFinish().addErrback(lambda f: gone.append(f))
        try:
            admin_request = _from_twisted(request)
        except (UnicodeDecodeError, ValueError):
            d = succeed(_error(400, "query string is not valid UTF-8"))
        else:
            d = self.routes.dispatch(admin_request)
        d.addCallback(self._write, request, gone)
        d.addErrback(lambda f: log.failure("writing an admin response failed", f))
        return NOT_DONE_YET

    def _write(self, response, request, gone):
        if gone:
            return
        request.setResponseCode(response.status)
        for name, value in response.headers:
            request.responseHeaders.addRawHeader(name, value)
        if not request.responseHeaders.hasHeader(b"Content-Type"):
            request.responseHeaders.setRawHeaders(b"Content-Type", [b"application/json"])
        request.responseHeaders.setRawHeaders(b"Cache-Control", [b"no-store"])
        request.setHeader(b"Content-Length", b"%d" % (len(response.body),))
        if request.method != b"HEAD":
            request.write(response.body)
        request.finish()


def _from_twisted(request):
    """An :class:`AdminRequest` from a ``twisted.web`` request."""
    headers = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        headers[name.decode("latin-1").lower()] = ", ".join(
            v.decode("latin-1") for v in values)
    addr = request.getClientAddress()
    request.content.seek(0)
    body = request.content.read()
    return AdminRequest.from_uri(
        request.method.decode("latin-1"), request.uri.decode("latin-1"),
        headers, body, getattr(addr, "host", None))
