# -*- test-case-name: tests.test_admin,tests.test_admin_security -*-
"""
The admin listener: a small JSON API on its own endpoint (loopback by
default), with optional bearer-token authentication.  Plugins add endpoints
with :meth:`AdminRoutes.route` from ``init_worker``::

    @hookimpl
    def init_worker(gateway):
        gateway.admin.route("GET", "/hello", lambda request: (200, {"hi": 1}))

A handler receives an :class:`AdminRequest` (``method``, ``path``, ``args``,
``json``, ``headers``, ``body``, ``client_addr``, ``params``; it and
:class:`AdminResponse` live in :mod:`tproxy.admin_messages`) and returns
``(status, obj)`` (or a Deferred / coroutine of it); ``obj`` is sent as JSON.
A handler that changes state calls :meth:`AdminRequest.audit`.

A path may have parameters: a segment written ``{name}`` matches any one
non-empty segment, percent-decoded into ``request.params["name"]``
(``admin.route("GET", "/routes/{name}", handler)``); a path without
parameters wins over one with.  Two plugins registering the same method and
path is an error at start (naming both).

The admin API changes routing for every client, so a request meets, in
order:

1. the token check (``401``), before anything of the request is parsed
   (not for a route made with ``public=True``, such as the health endpoints
   ``/healthz`` and ``/readyz`` that orchestrators' probes call without a
   token, or the status page's HTML; such a route, which holds no data,
   also skips the ``Host`` and browser checks of 2 and 3, as a probe may
   name the listener any way it likes);
2. the ``Host`` check (``421``): only names of the admin listener are
   accepted (loopback addresses, ``localhost``, the address the connection
   came in on, and ``admin.hosts``), so that a web page cannot reach it
   through DNS rebinding -- unless the request carries ``admin.token``,
   which no such page has (a backend in another container may then name
   the listener as its network does);
3. the browser check (``403``): a ``Sec-Fetch-Site`` other than
   ``same-origin`` or ``none``, an ``Origin`` other than the listener's
   own, or (without ``Origin``: an old browser's ``GET``) a ``Referer``
   naming a page of another origin, is a request a web page made -- unless
   that origin is one of ``admin.origins``, which also gets CORS answers
   (its ``OPTIONS`` preflight is answered ``204`` before the token check:
   browsers send no credentials with it);
4. the query string, form and JSON body (``400`` when they cannot be
   decoded);
5. the path (``404``), the method (``405``), then the handler; an exception in
   the handler (or, a defect, in a step before it) is a ``500`` with a logged
   traceback.

(Checks 1 to 3, and the preflight, are :mod:`tproxy.admin_checks`.)

Every answer is a JSON document, except what a handler returns as an
:class:`AdminResponse` with a body and a ``Content-Type`` of its own
(``prometheus``'s ``GET /metrics`` text)::

    AdminResponse(200, None, [("Content-Type", "text/plain; version=0.0.4")],
                  body=text)

Scripts (curl, a backend's cron job) send no ``Origin``,
``Sec-Fetch-Site`` or ``Referer``, and are served.

The HTTP side (:meth:`AdminRoutes.site`, :mod:`tproxy.admin_http`) uses the
proxy's request parser, with the limits of :data:`MAX_LINE_SIZE` (``414`` for
a request line, ``431`` for a header line), :data:`MAX_HEADER_SIZE` (``431``)
and :data:`MAX_BODY_SIZE` (``413``), answered in JSON as the proxy does.
:meth:`AdminRoutes.handle` runs the same steps without HTTP.
"""

from inspect import iscoroutine
from urllib.parse import unquote

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from tproxy.admin_checks import (
    browser_refused, configured_origin, host_refused, logged_refusal, preflight,
    token_accepted)
from tproxy.admin_messages import AdminRequest, AdminResponse, _error, as_response, not_found

__all__ = ["AdminRequest", "AdminResponse", "AdminRoutes", "DuplicateRoute", "as_response",
           "MAX_BODY_SIZE", "MAX_LINE_SIZE", "MAX_HEADER_SIZE", "IDLE_TIMEOUT"]

log = Logger()

#: The largest request body the admin listener reads (bytes); more is a 413.
MAX_BODY_SIZE = 1024 * 1024

#: The longest request line (``414``) or header line (``431``), in bytes.
MAX_LINE_SIZE = 16 * 1024

#: The largest request head, all lines together (``431``).
MAX_HEADER_SIZE = 64 * 1024

#: Seconds an admin connection may stay silent (or keep a request unfinished:
#: ``408``) before it is closed.
IDLE_TIMEOUT = 60

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


class DuplicateRoute(ValueError):
    """Two plugins registered the same admin method and path."""


class AdminRoutes(object):
    """
    The table of admin endpoints and the checks every request meets (see the
    module docstring).

    A handler is ``handler(request) -> (status, obj)`` (or a Deferred /
    coroutine of it) where ``request`` is an :class:`AdminRequest`; ``obj`` is
    sent as JSON.  A handler may also return an :class:`AdminResponse`, sent
    as it is (its ``body``, and its ``Content-Type`` if it has one).  Unknown
    paths get ``404``, a known path with another method ``405`` (with
    ``Allow``), a missing/wrong token ``401`` (with ``WWW-Authenticate:
    Bearer``), an exception in a handler ``500`` -- all with a JSON
    ``error``.  A ``GET`` route also answers ``HEAD``, unless it changes
    state (``changes``).

    :param token: the bearer token every request must send as
        ``Authorization: Bearer <token>``; ``None`` (or ``""``) for none.
    :param hosts: more names (or addresses) a ``Host`` may give for the
        admin listener (``admin.hosts``).
    :param origins: the ``Origin`` values accepted besides the listener's
        own (``admin.origins``: ``"https://ops.example.com"``).
    :param clock: the ``IReactorTime`` of the HTTP side's timeouts (default:
        the global reactor).

    :ivar registering: the name of the plugin whose ``init_worker`` runs now
        (set by the phase driver), recorded as the owner of its routes.
    """

    registering = None

    def __init__(self, token=None, hosts=(), origins=(), clock=None):
        self.token = token
        self.hosts = frozenset(h.lower() for h in hosts)
        self.origins = frozenset(o.lower().rstrip("/") for o in origins)
        self.clock = clock
        self.routes = {}  # (method, path) -> handler
        self.patterns = {}  # (method, path with {params}) -> (segments, handler)
        self.owners = {}  # (method, path) -> plugin name (None: not a plugin's)
        self.public = set()  # (method, path) served without the token
        self.changing = set()  # paths of GET routes that change state (no HEAD)
        self.shared = set()  # (method, path) changing state every process reads
        self.gathers = {}  # (method, path) -> how the workers' answers combine

    def route(self, method, path, handler, public=False, shared=False, gather=None,
              changes=False):
        """
        Serve ``method path`` with ``handler``.  A segment ``{name}`` of
        ``path`` is a parameter (see the module docstring).  Registering a
        route again replaces it, unless it was another plugin's.

        :param public: serve the path without the token check, nor the
            ``Host`` and browser checks: only for what must answer callers
            that cannot send a token (health probes) or what holds no data
            (the status page's HTML); a plain path only, never one with
            parameters.  Registering it again without ``public`` makes it
            private again.
        :param shared: what the route changes lives in a store every process
            reads (the registry, a Redis the instances share): with
            ``"workers"``, the parent's answer is enough.  A route that
            changes a plugin's state in memory (``shared`` false) is made
            in every worker too.
        :param gather: for a ``GET`` route showing what each process holds
            (request counts, a cache's entries): with ``"workers"``, the
            parent asks every worker the same request and answers
            ``gather(request, answer, workers)``, where ``answer`` is the
            parent's own :class:`AdminResponse` and ``workers`` a list of
            ``(worker index, AdminResponse)`` of the workers that answered
            within 2 s; it returns the :class:`AdminResponse` to send (or a
            ``(status, obj)`` pair).  Without workers it is never called.
        :param changes: a ``GET`` route that changes state (the registry's
            heartbeat, ``GET /upstream/add``): no ``HEAD`` there (``405``),
            since no client expects one to change anything.  A plain path.
        :raises DuplicateRoute: if another plugin registered ``method path``
            (the message names both).
        """
        key = (method.upper(), path)
        if public:
            if "{" in path:
                raise ValueError("a public admin route has no parameters: %r" % (path,))
        if changes and (key[0] != "GET" or "{" in path):
            raise ValueError("changes is for a GET route without parameters: %r" % (path,))
        if gather is not None and (key[0] != "GET" or "{" in path):
            raise ValueError("gather is for a GET route without parameters: %r" % (path,))
        owner = self.registering
        if key in self.owners and self.owners[key] != owner:
            raise DuplicateRoute(
                "admin route {} {} is registered by two plugins: {} and {}".format(
                    key[0], path, _who(self.owners[key]), _who(owner)))
        self.owners[key] = owner
        if public:
            self.public.add(key)
        else:
            self.public.discard(key)
        if shared:
            self.shared.add(key)
        else:
            self.shared.discard(key)
        if changes:
            self.changing.add(path)
        elif key[0] == "GET":
            self.changing.discard(path)
        if gather is not None:
            self.gathers[key] = gather
        else:
            self.gathers.pop(key, None)
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
        if "GET" in methods and path not in self.changing:
            methods.add("HEAD")
        return sorted(methods)

    def _is_public(self, request):
        method = "GET" if request.method == "HEAD" else request.method
        return (method, request.path) in self.public

    def _authorized(self, request):
        return token_accepted(request, self.token)

    def dispatch(self, request):
        """
        Check, authenticate and route ``request``; never fails.  A request
        from one of ``admin.origins`` gets the CORS fields that let its page
        read the answer, and its preflight (``OPTIONS``) is answered.

        :param request: an :class:`AdminRequest`.
        :return: a Deferred firing with an :class:`AdminResponse`.
        """
        answer = self.answer(request)
        return answer if isinstance(answer, Deferred) else succeed(answer)

    def answer(self, request):
        """:meth:`dispatch`, with the :class:`AdminResponse` itself when it
        is ready at once (most answers: no Deferred to run), else a
        Deferred of it."""
        origin = configured_origin(request, self.origins)
        if origin is None:
            return self._dispatch(request)
        if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
            answer = preflight(request)
        else:
            answer = self._dispatch(request)

        def cors(response):
            response.headers.extend([("Access-Control-Allow-Origin", origin),
                                     ("Vary", "Origin")])
            return response
        if isinstance(answer, Deferred):
            return answer.addCallback(cors)
        return cors(answer)

    def _dispatch(self, request):
        """The answer to ``request`` without CORS: an :class:`AdminResponse`,
        or a Deferred of one (a handler that answers later)."""
        authorized = self._authorized(request)
        public = self._is_public(request)
        if not authorized and not public:
            challenge = ('Bearer realm="tproxy-admin", error="invalid_token"'
                         if "authorization" in request.headers
                         else 'Bearer realm="tproxy-admin"')
            return logged_refusal(request, _error(401, "missing or invalid bearer token",
                                                  [("WWW-Authenticate", challenge)]))
        request.authenticated = bool(self.token) and authorized
        if not public:
            # a request carrying the token is no web page's drive-by: it may
            # name the listener as its network does (a container's name, a
            # published address); without a token, the Host is the defence
            refused = ((None if request.authenticated else host_refused(request, self.hosts))
                       or browser_refused(request, self.origins))
            if refused is not None:
                return logged_refusal(request, refused)
        try:
            request.decode()
        except ValueError as e:
            return _error(400, str(e))
        method = request.method
        handler = self.routes.get((method, request.path))
        if handler is None and method == "HEAD" and request.path not in self.changing:
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
                return not_found(request.path, [p for _, p in self.routes]
                                  + [p for _, p in self.patterns])
            return _error(405, "method not allowed", [("Allow", ", ".join(allowed))],
                          method=method, allowed=allowed)
        try:
            result = handler(request)
            if not isinstance(result, Deferred) and not iscoroutine(result):
                # answered at once (a heartbeat): no callbacks to run
                return self._respond(result, request)
        except Exception:
            return self._failed(Failure(), request)
        d = ensureDeferred(result)
        d.addCallback(self._respond, request)
        d.addErrback(self._failed, request)
        return d

    def _respond(self, result, request):
        return as_response(result)

    def _failed(self, failure, request):
        log.failure("admin handler for {method} {path} failed", failure,
                    method=request.method, path=request.path)
        return _error(500, "internal error", path=request.path)

    def handle(self, request):
        """
        Check, authenticate and route ``request`` without HTTP (for test
        harnesses).

        :param request: an :class:`AdminRequest`.
        :return: a Deferred firing with ``(status, obj)``.
        """
        return self.dispatch(request).addCallback(lambda r: (r.status, r.obj))

    def site(self):
        """
        The protocol factory serving the table over HTTP/1.1, for a listener
        on the admin endpoint (see the module docstring for its limits).
        """
        from tproxy.admin_http import AdminFactory
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        return AdminFactory(self, clock)


def _who(owner):
    if owner is None:
        return "tproxy itself (or code outside any plugin's init_worker)"
    return "plugin {!r}".format(owner)
