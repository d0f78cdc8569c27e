# -*- test-case-name: tests.test_stream -*-
"""
The state of one TCP connection through a stream listener:
:class:`StreamContext`, and the values of its ``reason`` (why a connection
ended).
"""

# -- why a connection ended (ctx.reason) -----------------------------------------

#: The client sent its FIN first, then the upstream did (or the client
#: closed before anything else happened).
CLIENT_CLOSED = "client_closed"
#: The upstream closed first (FIN, then the client's FIN; or a plain close).
UPSTREAM_CLOSED = "upstream_closed"
#: The client connection failed (reset, broken pipe): the upstream is aborted.
CLIENT_RESET = "client_reset"
#: The upstream connection failed after it was established.
UPSTREAM_RESET = "upstream_reset"
#: No byte either way for the idle timeout.
IDLE_TIMEOUT = "idle_timeout"
#: The last connect attempt failed (refused, unreachable) ...
CONNECT_FAILED = "connect_failed"
#: ... or timed out.
CONNECT_TIMEOUT = "connect_timeout"
#: The balancer found no live peer (none at all, or every one tried).
NO_PEER = "no_peer"
#: A ``stream_access`` implementation refused the connection.
ACCESS_DENIED = "access_denied"
#: A ``balancer`` implementation returned a :class:`tproxy.Response`.
BALANCER_REFUSED = "balancer_refused"
#: A hook implementation raised (or its Deferred failed).
PLUGIN_ERROR = "plugin_error"
#: An awaited ``stream_access`` or ``balancer`` did not answer within the
#: idle timeout.
PLUGIN_TIMEOUT = "plugin_timeout"
#: tproxy was stopping and the connection outlasted ``shutdown_timeout``:
#: both sides aborted.
SHUTDOWN = "shutdown"

_CLEAN = frozenset([CLIENT_CLOSED, UPSTREAM_CLOSED])


class StreamContext(object):
    """
    Everything the phases of one TCP connection share; handed to
    ``stream_access``, ``balancer`` and ``stream_log``.

    It has the attributes the built-in ``least_conn`` balancer reads from an
    HTTP :class:`~tproxy.context.RequestContext` (``gateway``, ``route``), so
    a balancer written for HTTP works unchanged; ``request`` is always
    ``None`` (a balancer can test it to tell the two apart).

    :ivar gateway: the :class:`tproxy.gateway.Gateway`.
    :ivar stream: the listener's configuration entry (``listen``, ``group``,
        ``proxy_protocol``, ``tries``, ``timeouts``).
    :ivar route: the registry group the peers come from (the stream's
        ``group``; a plugin may change it in ``stream_access``).
    :ivar vars: a ``dict`` for plugins' own per-connection values.
    :ivar connection_id: a number unique within the listener.
    :ivar client_addr: the client's IP address (``str``; ``None`` if the
        listener is not TCP), ``client_port`` its port.
    :ivar server_addr: the address the client connected to, ``server_port``
        its port.
    :ivar peer: the :class:`tproxy.registry.Peer` chosen last (``None``).
    :ivar tried: the peers tried so far, in order (a tuple); the last one is
        ``peer``, so in ``stream_log`` it includes the peer connected to.
    :ivar bytes_received: bytes read from the client.
    :ivar bytes_sent: bytes written to the client.
    :ivar upstream_bytes_sent: bytes written to the upstream (the PROXY
        protocol header included).
    :ivar upstream_bytes_received: bytes read from the upstream.
    :ivar start: clock time of the accept; ``end`` of the close (``None``
        before ``stream_log``).
    :ivar upstream_start: clock time the first connect attempt started;
        ``upstream_connected`` when a connection was established.
    :ivar reason: why the connection ended (``None`` while it lasts):
        ``"client_closed"``, ``"upstream_closed"``, ``"client_reset"``,
        ``"upstream_reset"``, ``"idle_timeout"``, ``"connect_failed"``,
        ``"connect_timeout"``, ``"no_peer"``, ``"access_denied"``,
        ``"balancer_refused"``, ``"plugin_error"``, ``"plugin_timeout"``
        or ``"shutdown"``.
    :ivar error: ``None`` if it ended with a clean close on either side,
        else ``reason``.
    :ivar status: nginx's ``$status`` of a stream session: ``200`` once the
        upstream connection was established (however it ended), ``403``
        refused by ``stream_access``, ``500`` plugin error (or timeout),
        ``502`` no peer could be reached, ``503`` refused by a balancer,
        ``499`` the client reset the connection before an upstream was
        connected; ``0`` while undecided.
    :ivar plugins: the listener's phase lists (tproxy's; read only).
    """

    __slots__ = ("gateway", "stream", "route", "vars", "connection_id",
                 "client_addr", "client_port", "server_addr", "server_port",
                 "peer", "tried", "bytes_received", "bytes_sent",
                 "upstream_bytes_sent", "upstream_bytes_received", "start",
                 "end", "upstream_start", "upstream_connected", "reason",
                 "error", "status", "plugins", "_awaited")

    #: Always ``None``: a stream has no HTTP request.
    request = None

    def __init__(self, gateway, stream, client=(None, None), server=(None, None),
                 start=0.0, connection_id=0, plugins=None):
        self.gateway = gateway
        self.stream = stream
        self.route = stream["group"]
        self.vars = {}
        self.connection_id = connection_id
        self.client_addr, self.client_port = client
        self.server_addr, self.server_port = server
        self.peer = None
        self.tried = ()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.upstream_bytes_sent = 0
        self.upstream_bytes_received = 0
        self.start = start
        self.end = None
        self.upstream_start = None
        self.upstream_connected = None
        self.reason = None
        self.error = None
        self.status = 0
        self.plugins = plugins

    def session_time(self):
        """Seconds from the accept to the close (nginx's ``$session_time``)."""
        return (self.end if self.end is not None else self.start) - self.start

    def upstream_connect_time(self):
        """Seconds from the first connect attempt to the established
        connection (retries included); ``None`` if none was established."""
        if self.upstream_connected is None:
            return None
        return self.upstream_connected - self.upstream_start

    @property
    def client(self):
        """``"host:port"`` of the client (``None`` when unknown)."""
        return _address(self.client_addr, self.client_port)

    @property
    def upstream_addr(self):
        """``peer.address`` of the last peer tried (``"host:port"``, an IPv6
        host in brackets: ``"[::1]:6379"``), or ``None``."""
        return self.peer.address if self.peer is not None else None

    def __repr__(self):
        return "<StreamContext %s %s -> %s %s>" % (
            self.route, self.client, self.upstream_addr, self.reason or "open")


def _address(host, port):
    if host is None:
        return None
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def _host_port(address):
    """``(host, port)`` of an ``IAddress`` (``(None, None)`` if not IP)."""
    return getattr(address, "host", None), getattr(address, "port", None)
