# -*- test-case-name: tests.test_proxy -*-
"""
The client-facing HTTP/1.1 listener: :class:`ProxyFactory` makes a
:class:`~tproxy.http.connection.ProxyProtocol` per client connection and
holds what they share (the gateway, the upstream pool, the limits), and
drains them when the proxy stops.
"""

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Factory
from zope.interface import implementer

from tproxy.http.bases import ListenerFields
from tproxy.http.closing import drain
from tproxy.http.connection import ProxyProtocol
from tproxy.http.deadlines import FirstTimers
from tproxy.http.retry import RetryPolicy
from tproxy.http.pool import UpstreamPool, upstream_tls
from tproxy import trust


@implementer(IProtocolNegotiationFactory)
class ProxyFactory(ListenerFields, Factory):
    """
    Makes a :class:`ProxyProtocol` per client connection, and holds what they
    share: the gateway, its phases, the upstream pool and the limits.

    :param gateway: the :class:`tproxy.gateway.Gateway`.

    :ivar connections: the open :class:`ProxyProtocol` objects.
    :ivar draining: :meth:`drain` was called (the proxy is stopping).

    Behind TLS (an ``ssl:`` endpoint, or ``tls`` of the configuration) it
    negotiates ALPN ``http/1.1``: Twisted's ALPN callback fails the handshake
    of a client offering ALPN when the factory names no protocol.
    """

    noisy = False

    #: what :attr:`tproxy.gateway.Gateway.listeners` says this is
    kind = "http"

    def __init__(self, gateway, scheme="http"):
        self.clock = gateway.reactor
        #: ``clock.seconds``, looked up once (read on every request)
        self.seconds = self.clock.seconds
        self.scheme = scheme
        self.pool = UpstreamPool(gateway.reactor)
        #: the connections' first timers (see ProxyProtocol.connectionMade)
        self.first_timers = FirstTimers(gateway.reactor)
        gateway.registry.subscribe(self.pool)   # removed peers' idle connections close
        self.use(gateway)
        #: requests read so far (their contexts' request ids are made from it)
        self.requests = 0
        self.connections = set()
        # (read on every request: an instance attribute, see Exchange.__init__)
        self.draining = False
        # the gateway lists its listeners (metrics read them when scraped)
        listeners = getattr(gateway, "listeners", None)
        if listeners is not None:
            listeners.append(self)
        self._drained = []     # Deferreds of drain(), fired once none is open

    def use(self, gateway):
        """
        Serve the requests read from now on with ``gateway`` (a reload: see
        :mod:`tproxy.reload`) and its configuration's limits and timeouts.
        A request holds the gateway it started with (``ctx.gateway``), so
        one in flight finishes with the phases it began with; a keep-alive
        connection's next request gets the new one.
        """
        self.gateway = gateway
        self.phases = gateway.phases
        cfg = gateway.config
        proxy, timeouts = cfg["proxy"], cfg["timeouts"]
        self.tries = proxy["tries"]
        self.keepalive_timeout = proxy["keepalive_timeout"]
        self.keepalive_requests = proxy["keepalive_requests"]
        self.header_timeout = proxy["header_timeout"]
        #: the timer of a new connection (see ProxyProtocol.check_timeout)
        self.first_timeout = min(self.keepalive_timeout, self.header_timeout)
        self.max_line = proxy["max_line_size"]
        self.max_header = proxy["max_header_size"]
        self.max_body = proxy["max_body_size"]
        self.max_header_line = proxy["max_header_line"]
        #: a head read within this many bytes cannot pass the three limits
        #: above: it is not counted field by field (see RequestReader)
        self.max_unchecked = min(self.max_line, self.max_header, self.max_header_line) * 4 // 5
        self.body_buffer = proxy["client_body_buffer_size"]
        self.body_timeout = proxy["client_body_timeout"]
        self.client_send_timeout = proxy["client_send_timeout"]
        self.underscores = proxy["underscores_in_headers"]
        self.lingering_time = proxy["lingering_time"]
        self.lingering_timeout = proxy["lingering_timeout"]
        self.send_timeout = timeouts["send"]
        self.read_timeout = timeouts["read"]
        self.upgrade_protocols = frozenset(p.lower() for p in proxy["upgrade_protocols"])
        self.upgrade_idle_timeout = proxy["upgrade_idle_timeout"]
        #: the per-client lines (a malformed request, a client timeout) are
        #: logged, at ``debug``, only when ``log_level`` is ``"debug"``: else
        #: a refused request does not even build a log event
        self.log_client_errors = cfg.get("log_level") == "debug"
        self.trusted = trust.configured(cfg)
        pool = self.pool     # one pool for the listener's life: its settings change
        pool.connect_timeout = timeouts["connect"]
        pool.read_timeout = timeouts["read"]
        pool.max_idle = proxy["upstream_keepalive"]
        pool.idle_timeout = proxy["upstream_keepalive_timeout"]
        pool.max_header_size = proxy["max_upstream_header_size"]
        self.health = gateway.health
        self.retry = RetryPolicy(proxy)
        pool.set_tls(upstream_tls(cfg))

    def acceptableProtocols(self):
        """The ALPN protocols spoken (``IProtocolNegotiationFactory``)."""
        return [b"http/1.1"]

    @property
    def open_connections(self):
        """The number of client connections open now."""
        return len(self.connections)

    def buildProtocol(self, addr):
        p = ProxyProtocol()
        p.factory = self
        return p

    # -- graceful shutdown ---------------------------------------------------------

    def drain(self):
        """
        Stop serving, gracefully (the listener no longer accepts): a
        connection serving or receiving a request answers it and the
        requests already read behind it, the last response saying
        ``Connection: close``, and then closes; an idle one (keep-alive
        between requests, or accepted and silent so far) may begin its next
        request within :data:`~tproxy.http.closing.DRAIN_FIRST_REQUEST`
        seconds, answered the same way, else closes then (see
        :func:`tproxy.http.closing.drain`).

        :return: a Deferred that fires once no connection is open.
        """
        if not self.draining:   # (a second call only waits too)
            self.draining = True
            for p in list(self.connections):
                drain(p)
        d = Deferred()
        if self.connections:
            self._drained.append(d)
        else:
            d.callback(None)
        return d

    def abort(self):
        """
        Cut every connection still open (a request in flight ends as the
        client's abort would).

        :return: how many were cut.
        """
        connections = list(self.connections)
        for p in connections:
            p.lost_as = "shutdown"
            p.abort()
        return len(connections)

    def _connection_lost(self, p):
        self.connections.discard(p)
        if self._drained and not self.connections:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)


__all__ = ["ProxyFactory", "ProxyProtocol"]
