# -*- test-case-name: tests.test_docs,tests.test_phases,tests.test_plugins -*-
"""
The hook contract of tproxy: one hook per phase of a request (and of a TCP
connection of a ``streams`` listener).

Every phase is a pluggy hook of the project ``tproxy``.  A plugin implements
some of them with :data:`tproxy.hookimpl`; an implementation may accept any
subset of the arguments a hook declares, and may return a plain value, a
:class:`~twisted.internet.defer.Deferred` or a coroutine: the request waits
for it (pluggy itself does not await; :mod:`tproxy.phases` drives the phases).

The life of one HTTP request::

    init_worker(gateway)                once per process, before traffic
    ---- per request ----
    rewrite(ctx)                        every impl, in order
    access(ctx)                         every impl, until one returns a Response
    balancer(ctx, tried)                first non-None Peer wins; asked again,
                                        with the failed peer in ``tried``,
                                        when connecting to it fails
    [tproxy sends the request upstream and streams the body]
    header_filter(ctx, response)        every impl, before the status line is sent
    body_filter(ctx, chunk, eof)        every impl, for every chunk of the body
    log(ctx)                            every impl, exactly once, however the
                                        request ended

The life of one TCP connection of a ``streams`` listener
(:mod:`tproxy.stream`; ``ctx`` is a :class:`tproxy.stream.StreamContext`)::

    init_worker(gateway)                once per process, before traffic
    ---- per connection ----
    stream_access(ctx)                  every impl, until one refuses (returns
                                        False, or bytes to send before closing)
    balancer(ctx, tried)                the same hook as HTTP: first non-None
                                        Peer wins; asked again, with the failed
                                        peer in ``tried``, when connecting to it
                                        fails or times out (``tries`` in all)
    [PROXY protocol header if configured; bytes piped both ways, with
     backpressure and half-close, until both sides closed or the idle timeout]
    stream_log(ctx)                     every impl, exactly once, however the
                                        connection ended

The ``certificate(server_name, client_addr)`` hook runs at TLS handshakes
of a listener with ``tls`` (HTTP or ``streams``), once per SNI name (cached),
before any request or stream phase of the connection.

``access`` and ``log`` never see a stream (their implementations expect an
HTTP request); ``rewrite``, ``header_filter`` and ``body_filter`` have no
stream counterpart.  A stream's ``balancer`` gets a context whose
``request`` is ``None``.

Execution order: the order of the ``plugins`` list of the configuration
(first listed runs first), adjusted only by pluggy's ``tryfirst`` /
``trylast`` markers.  ``twistd tproxy --list-plugins`` prints it per phase.

An exception raised by an implementation (or a failed Deferred) ends the
request with a ``500`` JSON response, the traceback is logged, and ``log``
still runs.
"""

from pluggy import HookspecMarker

hookspec = HookspecMarker("tproxy")

# ---------------------------------------------------------------------------
# process lifecycle
# ---------------------------------------------------------------------------


@hookspec
def init_worker(gateway):
    """
    Called once when the gateway starts, before the listeners accept traffic.

    Start timers here (``LoopingCall(...).start`` with ``gateway.reactor`` as
    clock), register admin endpoints with ``gateway.admin.route``, and keep
    per-process state on the plugin object.  Startup waits for a returned
    Deferred or coroutine; a failure stops startup.

    :param gateway: the :class:`tproxy.gateway.Gateway`: ``reactor``,
        ``config``, ``registry``, ``admin`` (``admin.route(method, path,
        handler, public=False)``; handlers return ``(status, obj)`` or a
        :class:`tproxy.admin.AdminResponse`), ``trusted_proxies``
        (``remote_addr in gateway.trusted_proxies``: the request came
        through a trusted proxy), ``listeners`` (the listening factories,
        for metrics), and ``on_stop(fn)`` to register cleanup that runs when
        the process stops.
    :return: ``None`` (or an awaitable of it).
    """


# ---------------------------------------------------------------------------
# per request, in order
# ---------------------------------------------------------------------------


@hookspec
def rewrite(ctx):
    """
    First phase of every request: choose the route and rewrite the request.

    The built-in ``router`` sets ``ctx.route`` (the upstream group) and
    ``ctx.upstream_path`` here.  Implementations may change
    ``ctx.upstream_path``, ``ctx.request.headers`` (sent upstream),
    ``ctx.upstream_headers`` and ``ctx.vars``.

    :param ctx: the :class:`tproxy.context.RequestContext`.
    :return: ``None``; returning a :class:`tproxy.Response` ends the request
        with it (no upstream is contacted).
    """


@hookspec
def access(ctx):
    """
    Decide whether the request may proceed (authentication, rate limits, allow
    lists).

    All implementations run in order until one returns a
    :class:`tproxy.Response`: that response is sent to the client, no upstream
    is contacted, and the remaining ``access`` implementations do not run.

    :param ctx: the :class:`tproxy.context.RequestContext`; ``ctx.route`` is set.
    :return: ``None`` to let the request proceed, or a :class:`tproxy.Response`.
    """


@hookspec(firstresult=True)
def balancer(ctx, tried):
    """
    Choose the upstream peer for the request.

    Stops at the first non-``None`` result.  When the attempt on the chosen
    peer fails and ``proxy.next_upstream`` allows a retry, the hook is called
    again with that peer added to ``tried``, up to ``proxy.tries`` times in
    all (``0``: every peer once).  Prefer peers whose ``peer.healthy`` is
    true (:mod:`tproxy.health`); when none is, choose an unhealthy one only
    if ``ctx.gateway.health.try_unhealthy()``.

    :param ctx: the :class:`tproxy.context.RequestContext`; ``ctx.route`` names
        the group.  For a connection of a ``streams`` listener, a
        :class:`tproxy.stream.StreamContext` (``ctx.request`` is ``None``;
        ``gateway``, ``route``, ``vars``, ``peer`` and ``tried`` are there).
    :param tried: a tuple of the :class:`tproxy.registry.Peer` objects already
        tried for this request (empty on the first call); do not return them.
    :return: a :class:`tproxy.registry.Peer`; or ``None`` to leave the choice
        to the next implementation (if none chooses, the client gets ``503``);
        or a :class:`tproxy.Response` to end the request with it.
    """


@hookspec
def header_filter(ctx, response):
    """
    Inspect or change the response head before it is sent to the client.

    Runs for upstream responses and for responses tproxy makes itself (errors,
    ``access`` denials), and for the ``101`` of an upgrade (WebSocket).

    :param ctx: the :class:`tproxy.context.RequestContext`.
    :param response: the :class:`tproxy.context.ResponseHead`: ``status``
        (int, may be changed) and ``headers`` (a mutable
        :class:`tproxy.http.headers.Headers`).
    :return: ``None``.
    """


@hookspec
def body_filter(ctx, chunk, eof):
    """
    Inspect or replace each chunk of the response body, in order.

    :param ctx: the :class:`tproxy.context.RequestContext`.
    :param chunk: the bytes about to be sent (may be empty when ``eof``).
    :param eof: ``True`` for the last call of the response.
    :return: ``None`` to send ``chunk`` unchanged, or the ``bytes`` to send
        instead (a changed length makes tproxy send the body chunked; set it
        up in ``header_filter`` by removing ``Content-Length``).
    """


@hookspec
def log(ctx):
    """
    Called exactly once per request, after the response ended or failed:
    success, upstream error, client abort, access denial or a plugin exception.

    ``ctx.status``, ``ctx.bytes_sent``, ``ctx.error``, ``ctx.peer``,
    ``ctx.upstream_time()`` and ``ctx.request_time()`` describe what happened.
    For an upgraded (WebSocket) request it runs when the tunnel ends, both
    connections closed (:mod:`tproxy.http.tunnel`).
    Exceptions here are logged and otherwise ignored.

    :param ctx: the :class:`tproxy.context.RequestContext`.
    :return: ``None``.
    """


# ---------------------------------------------------------------------------
# per TCP connection of a ``streams`` listener (besides init_worker and
# balancer, shared with HTTP)
# ---------------------------------------------------------------------------


@hookspec
def stream_access(ctx):
    """
    Decide whether a TCP connection may proceed (allow lists, connection
    limits); the client's address is ``ctx.client_addr``.

    Runs when the connection is accepted, before any upstream is chosen.  The
    implementations run in order until one refuses; bytes the client sends
    meanwhile are kept (bounded) and forwarded later.  An implementation may
    also change ``ctx.route`` (the group the balancer chooses from) and
    ``ctx.vars``.

    :param ctx: the :class:`tproxy.stream.StreamContext`.
    :return: ``None`` to let the connection proceed; ``False`` to close it at
        once; or ``bytes`` to send to the client before closing it (a
        protocol's error message, such as ``b"-ERR denied\\r\\n"``).  Any
        other value (``True``, a ``str``) is a plugin error: the connection
        is closed and the error logged, as for an exception.
    """


@hookspec
def stream_log(ctx):
    """
    Called exactly once per TCP connection, when both the client and the
    upstream connection are closed, however it ended: closed by either side,
    reset, idle timeout, no reachable peer, refused, or a plugin exception.

    ``ctx.client``, ``ctx.upstream_addr`` (the peer), ``ctx.bytes_received`` /
    ``ctx.bytes_sent`` (client side), ``ctx.upstream_bytes_sent`` /
    ``ctx.upstream_bytes_received``, ``ctx.session_time()``, ``ctx.reason``
    (why it closed), ``ctx.error`` and ``ctx.status`` (nginx's stream
    ``$status``) describe what happened.  Exceptions here are logged and
    otherwise ignored.

    :param ctx: the :class:`tproxy.stream.StreamContext`.
    :return: ``None``.
    """


# ---------------------------------------------------------------------------
# per TLS handshake of a listener with ``tls`` (HTTP or ``streams``)
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def certificate(server_name, client_addr):
    """
    Choose the certificate of a TLS handshake (nginx's and OpenResty's
    ``ssl_certificate_by_lua``): serve certificates from a store, issue them
    on first sight, and so on.

    Runs once per SNI name, not per handshake: the result is cached for the
    process's life (up to :data:`tproxy.tls.CACHE_SIZE` names, least
    recently used forgotten first).  It may be async: the first client
    naming ``server_name`` waits for the result before its handshake goes
    on.  Without an implementation, and for clients sending no name, the
    listener's ``tls.sni`` table and ``tls.cert`` serve (see
    :mod:`tproxy.tls`).

    :param server_name: the SNI name the client sent, in lower case
        (``"api.example.com"``): always a DNS host name (a client sending
        anything else is served as one sending none).
    :param client_addr: the IP address of the first client asking for it.
    :return: ``(certificate_pem, key_pem)`` (``bytes`` or ``str``; the
        certificate may be followed by its chain), or ``None`` to let the
        next implementation, and then the ``tls`` configuration, choose.
        An exception, or a result that is not a usable pair, is logged and
        the configuration's choice serves that handshake (not cached), as
        it does after 10 seconds without an answer.
        Stops at the first non-``None`` result.
    """
