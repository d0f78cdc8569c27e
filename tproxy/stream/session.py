# -*- test-case-name: tests.test_stream -*-
"""
:class:`StreamSession`: one client connection and its upstream connection,
from the accept through the phases and connect attempts to the pipe (its
close: :mod:`tproxy.stream.closing`; the life of a connection is in
:mod:`tproxy.stream`).
"""

from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from zope.interface import implementer

from tproxy.context import Response
from tproxy.fastio import install_fast_write
from tproxy.phase_resume import _first_result, _until_response, is_deferred
from tproxy.proxy_protocol import header as proxy_protocol_header
from tproxy.stream.closing import SessionClosing
from tproxy.stream.context import (
    ACCESS_DENIED, BALANCER_REFUSED, CONNECT_FAILED, CONNECT_TIMEOUT, NO_PEER,
    PLUGIN_ERROR, StreamContext, _host_port)
from tproxy.stream.phases import _is_refusal
from tproxy.stream.pipe import _WAITING, PENDING_LIMIT, _Reader, _watch_tls_close
from tproxy.stream.upstream import _UpstreamConnector

# one namespace for the stream proxy's modules (what a log filter selects)
log = Logger(namespace="tproxy.stream")


@implementer(IHalfCloseableProtocol)
class StreamSession(SessionClosing, Protocol):
    """
    One client connection and its upstream connection: the phases, the
    connect attempts and the pipe (see :mod:`tproxy.stream`); how it ends:
    :class:`~tproxy.stream.closing.SessionClosing`.

    :ivar ctx: the :class:`~tproxy.stream.context.StreamContext`.
    :ivar upstream: the upstream protocol once connected (``None`` before).
    :ivar done: ``stream_log`` ran; nothing more happens.
    :ivar awaited: ``(Deferred, phase)`` of the ``stream_access`` or
        ``balancer`` walk awaited: at most the idle timeout (then
        ``"plugin_timeout"``), cancelled when the connection ends first.
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
    awaited = None
    tls_fin = False

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
        _watch_tls_close(t, self)
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
        elif is_deferred(r):
            self._await(r, "stream_access", self._accessed)
        else:
            self._refuse(r)

    def _await(self, d, phase, then):
        """``then(result)`` once ``d``, ``phase``'s walk, fires (:attr:`awaited`)."""
        self.awaited = (d, phase)
        d.addCallbacks(self._answered, self._phase_failed, (then,))

    def _answered(self, r, then):
        self.awaited = None
        then(r)

    def _phase_failed(self, failure):
        self.awaited = None
        if self.closing is None:     # (else: cancelled by _end)
            self._plugin_error(failure)

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
        if is_deferred(r):
            self._await(r, "balancer", self._balanced)
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
        why = reason.getErrorMessage()
        # the health state logs the peer's changes of state (not a line per
        # attempt) and keeps its last error
        ctx.gateway.health.failed(ctx.peer, "timeout" if kind == CONNECT_TIMEOUT
                                  else "connect", why)
        self.last_failure = kind
        tries = self.factory.tries
        if not tries or len(ctx.tried) < tries:   # 0: until the balancer has no peer left
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
        # one call fewer per chunk; nobody to send to once a TLS client closed
        up.dataReceived = (self._upstream_data if not self.client_gone
                           else self._upstream_dropped)
        self.upstream = up
        self.up_reader = _Reader(ut)
        ctx = self.ctx
        if ctx.peer.health is not None:
            ctx.gateway.health.succeeded(ctx.peer)
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
        if not self.client_gone:
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
