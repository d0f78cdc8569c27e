# -*- test-case-name: tests.test_stream -*-
"""
The TCP (L4) proxy: nginx's ``stream {}``, through tproxy's plugin phases.

Each entry of the configuration's ``streams`` list is a listener
(:class:`StreamFactory`) whose connections are piped, byte for byte, to a
peer of one registry group: the same groups as HTTP routes, static
``upstreams`` and run-time registrations alike (the TTL applies).

The life of one connection (the hooks are in :mod:`tproxy.hookspecs`)::

    accept                          a StreamContext (client and server address)
    stream_access(ctx)              every impl in order, until one refuses
                                    (returns False or bytes): the connection
                                    is closed (after those bytes)
    balancer(ctx, tried)            the HTTP hook, unchanged: the first Peer
                                    wins; peer.acquire(), connect (with the
                                    connect timeout); on failure or timeout
                                    peer.release() and ask again with the
                                    peer in ``tried``, up to ``tries`` peers
    [PROXY protocol header, if configured, then the bytes the client sent
     while the upstream was connecting, then the pipe, both ways]
    stream_log(ctx)                 every impl, exactly once, when both
                                    connections are closed

Client bytes that arrive before the upstream connection is ready are kept (up
to :data:`PENDING_LIMIT`; beyond it the client is not read until then).

The pipe
--------
Each connection's reading side is registered as a streaming producer of the
other connection's transport: when a transport's write buffer passes
Twisted's ``bufferSize`` (64 KiB) the other side stops being read until it
drains, so a slow reader slows the writer down and memory per connection stays
at about two buffers per direction, however many bytes pass.

A FIN is forwarded as a FIN (``IHalfCloseableProtocol``): when the client
shuts down its writing side, the upstream connection's writing side is shut
down once the bytes before it are sent, and the reply keeps flowing back; the
same the other way.  When both sides have sent their FIN the connections
close.  (A client connection over TLS cannot be half-closed: the upstream's
FIN closes it.)  A reset on one side aborts the other; an upstream that closes (or
resets) has what it sent flushed to the client first.

The idle timeout counts from the last byte read on either side; it also
bounds how long closing connections may take to flush.  The peer's
``active`` count is taken when the connect attempt starts and released
exactly once, when the attempt fails or the upstream connection closes.

Why a connection ended is ``ctx.reason`` (see :class:`StreamContext`).
"""

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, TimeoutError as TxTimeoutError
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from tproxy.context import Response
from tproxy.fastio import install_fast_write
from tproxy.phases import _adapt, _awaitable, _first_result, _until_response
from tproxy.proxy_protocol import header as proxy_protocol_header

__all__ = ["StreamContext", "StreamFactory", "StreamPhaseSet", "StreamSession",
           "stream_phases", "PENDING_LIMIT", "CLIENT_CLOSED", "UPSTREAM_CLOSED",
           "CLIENT_RESET", "UPSTREAM_RESET", "IDLE_TIMEOUT", "CONNECT_FAILED",
           "CONNECT_TIMEOUT", "NO_PEER", "ACCESS_DENIED", "BALANCER_REFUSED",
           "PLUGIN_ERROR"]

log = Logger()

#: Client bytes kept while the upstream connection is not ready; past this the
#: client is not read until it is.
PENDING_LIMIT = 65536

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

_CLEAN = frozenset([CLIENT_CLOSED, UPSTREAM_CLOSED])

# why a reader is not read
_FULL = 1       # the other side's write buffer is full
_WAITING = 2    # (client) no upstream yet and PENDING_LIMIT reached


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
    :ivar tried: the peers tried so far, in order (a tuple).
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
        ``"balancer_refused"`` or ``"plugin_error"``.
    :ivar error: ``None`` if it ended with a clean close on either side,
        else ``reason``.
    :ivar status: nginx's ``$status`` of a stream session: ``200`` once the
        upstream connection was established (however it ended), ``403``
        refused by ``stream_access``, ``500`` plugin error, ``502`` no peer
        could be reached, ``503`` refused by a balancer, ``499`` the client
        reset the connection before an upstream was connected; ``0`` while
        undecided.
    :ivar plugins: the :class:`StreamPhaseSet` of the listener.
    """

    __slots__ = ("gateway", "stream", "route", "vars", "connection_id",
                 "client_addr", "client_port", "server_addr", "server_port",
                 "peer", "tried", "bytes_received", "bytes_sent",
                 "upstream_bytes_sent", "upstream_bytes_received", "start",
                 "end", "upstream_start", "upstream_connected", "reason",
                 "error", "status", "plugins")

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
        """``"host:port"`` of the last peer tried, or ``None``."""
        return self.peer.address if self.peer is not None else None

    def __repr__(self):
        return "<StreamContext %s %s -> %s %s>" % (
            self.route, self.client, self.upstream_addr, self.reason or "open")


def _address(host, port):
    if host is None:
        return None
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def _half_closeable(transport):
    """
    Whether ``transport`` can shut down its writing side alone: plain TCP and
    UNIX sockets can; TLS cannot (a wrapping protocol even claims the
    interfaces of the socket under it, hence the type test).
    """
    return isinstance(transport, tcp.Connection) and not transport.TLS


def _host_port(address):
    """``(host, port)`` of an ``IAddress`` (``(None, None)`` if not IP)."""
    return getattr(address, "host", None), getattr(address, "port", None)


# ---------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------

#: The stream phases and their arguments, in the order a connection meets them.
STREAM_PHASES = (
    ("stream_access", ("ctx",)),
    ("balancer", ("ctx", "tried")),
    ("stream_log", ("ctx",)),
)


class StreamPhaseSet(object):
    """
    The implementations that run for the connections of one stream listener,
    phase by phase, in execution order.
    """

    __slots__ = ("access", "balancer", "log")

    def __init__(self, access, balancer, log):
        self.access = access
        self.balancer = balancer
        self.log = log


def stream_phases(plugin_manager, group):
    """
    Resolve the :class:`StreamPhaseSet` of connections to ``group``.

    The order is the HTTP phases' (:meth:`tproxy.phases.Phases.refresh`):
    pluggy calls the last registered implementation first and the loader
    registers plugins in reverse config order, so the reversed
    ``get_hookimpls()`` is config order.  A plugin enabled for some routes
    only (``"routes"`` in its entry) runs for the streams whose group is one
    of them.
    """
    hooks = plugin_manager.hook
    scopes = getattr(plugin_manager, "tproxy_scopes", {}) or {}

    def pick(name, argnames):
        caller = getattr(hooks, name, None)
        if caller is None:
            return []
        out = []
        for impl in reversed(caller.get_hookimpls()):
            scope = scopes.get(impl.plugin_name)
            if scope is None or group in scope:
                out.append(_adapt(impl, argnames))
        return out

    lists = dict((name, pick(name, argnames)) for name, argnames in STREAM_PHASES)
    return StreamPhaseSet(lists["stream_access"], lists["balancer"], lists["stream_log"])


def _is_refusal(r):
    """A ``stream_access`` result that refuses: ``False`` or bytes to send."""
    return r is False or isinstance(r, (bytes, bytearray))


def _run_log(impls, ctx):
    for fn in impls:
        try:
            d = _awaitable(fn(ctx))
        except Exception:
            log.failure("stream_log failed for {client} -> {group}",
                        client=ctx.client, group=ctx.route)
            continue
        if d is not None:
            d.addErrback(lambda f: log.failure(
                "stream_log failed for {client} -> {group}", f,
                client=ctx.client, group=ctx.route))


# ---------------------------------------------------------------------------
# the listener and the pipe
# ---------------------------------------------------------------------------


class StreamFactory(Factory):
    """
    One stream listener: makes a :class:`StreamSession` per client connection.

    :param gateway: the :class:`tproxy.gateway.Gateway` (its ``reactor``
        connects upstream and times the timeouts; its plugin manager's hooks
        are resolved once, see :meth:`refresh`).
    :param stream: the listener's configuration entry: ``group`` (required),
        ``proxy_protocol`` (``None``, ``"v1"`` or ``"v2"``), ``tries``
        (default 3), ``timeouts`` (``connect``: 60, ``idle``: 600 seconds).

    :ivar sessions: the open :class:`StreamSession` objects.
    """

    noisy = False

    def __init__(self, gateway, stream):
        self.gateway = gateway
        self.stream = stream
        self.group = stream["group"]
        self.reactor = gateway.reactor
        self.clock = gateway.reactor
        self.tries = stream.get("tries", 3)
        timeouts = stream.get("timeouts") or {}
        self.connect_timeout = timeouts.get("connect", 60)
        self.idle_timeout = timeouts.get("idle", 600)
        self.proxy_protocol = stream.get("proxy_protocol")
        if self.proxy_protocol is not None:
            proxy_protocol_header(self.proxy_protocol, None, None)  # ValueError if unknown
        self.sessions = set()
        self._ids = 0
        self.refresh()

    def refresh(self):
        """Resolve the hook implementations again (after plugins changed)."""
        self.plugins = stream_phases(self.gateway.plugins, self.group)

    @property
    def open_connections(self):
        """The number of client connections open now."""
        return len(self.sessions)

    def buildProtocol(self, addr):
        """A :class:`StreamSession` for a new client connection."""
        p = StreamSession()
        p.factory = self
        return p

    def next_id(self):
        """A connection id unique within this listener."""
        self._ids += 1
        return self._ids


@implementer(IPushProducer)
class _Reader(object):
    """
    The reading side of one connection, as the producer of the other side's
    transport.  It is read only while no reason to pause holds and its read
    side is open (a transport whose FIN arrived must not be read again).
    """

    __slots__ = ("transport", "paused", "closed")

    def __init__(self, transport):
        self.transport = transport
        self.paused = 0
        self.closed = False

    def pause(self, why):
        if not self.paused and not self.closed:
            self.transport.pauseProducing()
        self.paused |= why

    def resume(self, why):
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resumeProducing()

    def pauseProducing(self):
        self.pause(_FULL)

    def resumeProducing(self):
        self.resume(_FULL)

    def stopProducing(self):
        # the consumer's connection is gone: its own connectionLost tells the
        # session, which closes this side
        pass


@implementer(IHalfCloseableProtocol)
class StreamSession(Protocol):
    """
    One client connection and its upstream connection: the phases, the
    connect attempts and the pipe (see the module docstring).

    :ivar ctx: the :class:`StreamContext`.
    :ivar upstream: the upstream protocol once connected (``None`` before).
    :ivar done: ``stream_log`` ran; nothing more happens.
    """

    upstream = None
    up_reader = None
    connector = None
    peer_held = None
    last_failure = None
    idle_call = None
    closing = None
    client_eof = False
    upstream_eof = False
    client_gone = False
    first_eof = None
    done = False

    # -- accept and phases --------------------------------------------------------

    def connectionMade(self):
        """A client connected: make its context and run ``stream_access``."""
        f = self.factory
        t = self.transport
        install_fast_write(t)
        self.seconds = f.clock.seconds
        now = self.last = self.seconds()
        self.ctx = ctx = StreamContext(
            f.gateway, f.stream, _host_port(t.getPeer()), _host_port(t.getHost()),
            start=now, connection_id=f.next_id(), plugins=f.plugins)
        self.reader = _Reader(t)
        self.pending = []
        self.pending_size = 0
        f.sessions.add(self)
        self.idle_call = f.clock.callLater(f.idle_timeout, self._idle_check)
        try:
            r = _until_response(ctx.plugins.access, ctx, 0, _is_refusal)
        except Exception:
            return self._plugin_error()
        if r is None:
            self._balance()
        elif isinstance(r, Deferred):
            r.addCallbacks(self._accessed, self._plugin_error)
        else:
            self._refuse(r)

    def _accessed(self, r):
        if self.closing is not None:
            return
        if r is None:
            self._balance()
        else:
            self._refuse(r)

    def _refuse(self, r):
        if r:
            data = bytes(r)
            self.ctx.bytes_sent += len(data)
            self.transport.write(data)
        log.debug("stream {group}: {client} refused by stream_access",
                  group=self.ctx.route, client=self.ctx.client)
        self._end(ACCESS_DENIED, 403, abort=False)

    def _balance(self):
        ctx = self.ctx
        try:
            r = _first_result(ctx.plugins.balancer, ctx, ctx.tried, 0)
        except Exception:
            return self._plugin_error()
        if isinstance(r, Deferred):
            r.addCallbacks(self._balanced, self._plugin_error)
        else:
            self._balanced(r)

    def _balanced(self, peer):
        if self.closing is not None:
            return
        if peer is None:
            self._end(self.last_failure or NO_PEER, 502, abort=False)
            return
        if isinstance(peer, Response):
            self._end(BALANCER_REFUSED, 503, abort=False)
            return
        f = self.factory
        ctx = self.ctx
        ctx.peer = peer
        ctx.tried = ctx.tried + (peer,)
        peer.acquire()
        self.peer_held = peer
        if ctx.upstream_start is None:
            ctx.upstream_start = self.seconds()
        try:
            self.connector = f.reactor.connectTCP(
                peer.host, peer.port, _UpstreamConnector(self),
                timeout=f.connect_timeout)
        except Exception:
            log.failure("stream {group}: cannot connect to {peer}",
                        group=ctx.route, peer=peer.address)
            self._release_peer()
            self._end(CONNECT_FAILED, 502, abort=False)

    def _release_peer(self):
        peer, self.peer_held = self.peer_held, None
        if peer is not None:
            peer.release()

    def _plugin_error(self, failure=None):
        ctx = self.ctx
        if failure is None:
            log.failure("plugin error in stream {group} from {client}",
                        group=ctx.route, client=ctx.client)
        else:
            log.failure("plugin error in stream {group} from {client}", failure,
                        group=ctx.route, client=ctx.client)
        self._end(PLUGIN_ERROR, 500, abort=True)

    # -- the upstream connection --------------------------------------------------

    def _connect_failed(self, reason):
        self.connector = None
        self._release_peer()
        if self.closing is not None:
            self._maybe_finish()
            return
        ctx = self.ctx
        kind = CONNECT_TIMEOUT if reason.check(TxTimeoutError) else CONNECT_FAILED
        log.info("stream {group}: upstream {peer} failed: {why}", group=ctx.route,
                 peer=ctx.upstream_addr, why=reason.getErrorMessage())
        self.last_failure = kind
        if len(ctx.tried) < self.factory.tries:
            self._balance()
        else:
            self._end(kind, 502, abort=False)

    def _upstream_connected(self, up):
        self.connector = None
        ut = up.transport
        if self.closing is not None:
            ut.abortConnection()
            return
        install_fast_write(ut)
        up.dataReceived = self._upstream_data   # one call fewer per chunk
        self.upstream = up
        self.up_reader = _Reader(ut)
        ctx = self.ctx
        ctx.upstream_connected = self.last = self.seconds()
        f = self.factory
        first = []
        if f.proxy_protocol is not None:
            first.append(proxy_protocol_header(
                f.proxy_protocol, (ctx.client_addr, ctx.client_port),
                (ctx.server_addr, ctx.server_port)))
        if self.pending:
            first.extend(self.pending)
        self.pending = None
        if first:
            ctx.upstream_bytes_sent += sum(len(b) for b in first)
            ut.writeSequence(first)
        # the client's full buffer pauses the upstream, and the other way round
        self.transport.registerProducer(self.up_reader, True)
        if self.client_eof:
            ut.loseWriteConnection()
        else:
            ut.registerProducer(self.reader, True)
            self.reader.resume(_WAITING)

    # -- bytes ---------------------------------------------------------------------

    def dataReceived(self, data):
        """Bytes from the client: to the upstream, or kept until it is ready."""
        ctx = self.ctx
        n = len(data)
        ctx.bytes_received += n
        up = self.upstream
        if up is not None:
            self.last = self.seconds()
            ctx.upstream_bytes_sent += n
            up.transport.write(data)
        elif self.closing is None:
            self.pending.append(data)
            self.pending_size += n
            if self.pending_size >= PENDING_LIMIT:
                self.reader.pause(_WAITING)

    def _upstream_data(self, data):
        ctx = self.ctx
        n = len(data)
        ctx.upstream_bytes_received += n
        ctx.bytes_sent += n
        self.last = self.seconds()
        self.transport.write(data)

    # -- closing -------------------------------------------------------------------

    def readConnectionLost(self):
        """The client sent its FIN: forward it to the upstream."""
        self.reader.closed = True
        self.client_eof = True
        if self.first_eof is None:
            self.first_eof = CLIENT_CLOSED
        up = self.upstream
        if self.closing is not None or up is None:
            return  # not connected yet: sent after the pending bytes
        ut = up.transport
        ut.unregisterProducer()
        ut.loseWriteConnection()
        self._maybe_both_eof()

    def writeConnectionLost(self):
        """Our FIN to the client was sent (nothing to do)."""

    def _upstream_eof(self):
        self.up_reader.closed = True
        self.upstream_eof = True
        if self.first_eof is None:
            self.first_eof = UPSTREAM_CLOSED
        if self.closing is not None:
            return
        t = self.transport
        if not _half_closeable(t):
            # a TLS client connection cannot send a FIN alone: close it
            self._end(UPSTREAM_CLOSED, 200, abort=False)
            return
        t.unregisterProducer()
        t.loseWriteConnection()
        self._maybe_both_eof()

    def _maybe_both_eof(self):
        if self.client_eof and self.upstream_eof:
            self._end(self.first_eof, 200, abort=False)

    def connectionLost(self, reason):
        """The client connection is closed."""
        self.client_gone = True
        self.reader.closed = True
        if self.closing is None:
            if self.upstream is None:
                self._end(CLIENT_RESET, 499, abort=True)
            elif reason.check(ConnectionDone):
                self._end(CLIENT_CLOSED, 200, abort=True)
            else:
                self._end(CLIENT_RESET, 200, abort=True)
        self._maybe_finish()

    def _upstream_lost(self, reason):
        if self.up_reader is not None:
            self.up_reader.closed = True
        self._release_peer()
        if self.closing is None:
            clean = reason.check(ConnectionDone) is not None
            self._end(UPSTREAM_CLOSED if clean else UPSTREAM_RESET, 200, abort=False)
        self._maybe_finish()

    def _idle_check(self):
        self.idle_call = None
        if self.done:
            return
        f = self.factory
        now = self.seconds()
        if self.connector is not None:
            self.last = now  # an attempt in progress has its own timeout
        left = self.last + f.idle_timeout - now
        if left > 0:
            self.idle_call = f.clock.callLater(left, self._idle_check)
            return
        self._end(IDLE_TIMEOUT, 200 if self.upstream is not None else 502, abort=True)

    def _end(self, reason, status, abort):
        """
        Decide that the connection ends (the first decision names the reason)
        and close both sides: gracefully (what is buffered is sent first) or
        at once.  ``stream_log`` runs when both are closed.
        """
        if self.closing is None:
            self.closing = reason
            ctx = self.ctx
            ctx.reason = reason
            ctx.status = status
            ctx.error = None if reason in _CLEAN else reason
        elif not abort:
            return
        c = self.connector
        if c is not None:
            self.connector = None
            try:
                c.stopConnecting()   # calls _connect_failed, which releases the peer
            except Exception:
                self._release_peer()
        up = self.upstream
        transports = []
        if not self.client_gone:
            transports.append(self.transport)
        if up is not None and not up.gone:
            transports.append(up.transport)
        for t in transports:
            if t.connected:
                t.unregisterProducer()
                if abort:
                    t.abortConnection()
                else:
                    t.loseConnection()
        if self.idle_call is None and not self.done:
            self.idle_call = self.factory.clock.callLater(
                self.factory.idle_timeout, self._idle_check)
        self._maybe_finish()

    def _maybe_finish(self):
        if self.done or self.closing is None or not self.client_gone:
            return
        if self.connector is not None:
            return
        up = self.upstream
        if up is not None and not up.gone:
            return
        self._finish()

    def _finish(self):
        self.done = True
        call, self.idle_call = self.idle_call, None
        if call is not None and call.active():
            call.cancel()
        self._release_peer()
        f = self.factory
        f.sessions.discard(self)
        ctx = self.ctx
        ctx.end = self.seconds()
        _run_log(ctx.plugins.log, ctx)


class _UpstreamConnector(ClientFactory):
    """One connect attempt of a :class:`StreamSession`."""

    noisy = False

    def __init__(self, session):
        self.session = session

    def buildProtocol(self, addr):
        p = _UpstreamProtocol()
        p.session = self.session
        return p

    def clientConnectionFailed(self, connector, reason):
        self.session._connect_failed(reason)


@implementer(IHalfCloseableProtocol)
class _UpstreamProtocol(Protocol):
    """The upstream side of a :class:`StreamSession`: reports to it."""

    session = None
    gone = False

    def connectionMade(self):
        self.session._upstream_connected(self)

    def dataReceived(self, data):
        # replaced by the session's _upstream_data once connected
        self.session._upstream_data(data)

    def readConnectionLost(self):
        self.session._upstream_eof()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.gone = True
        if self.session.upstream is self:
            self.session._upstream_lost(reason)
