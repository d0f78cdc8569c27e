# -*- test-case-name: tests.test_proxy_connections -*-
"""
The keep-alive pool of upstream connections per peer: an idle
connection for an exchange at once, or a new one (plain or TLS).  It knows
peers and sockets, nothing about routing.
"""

from twisted.internet.protocol import ClientFactory

from tproxy.fastio import connect_tcp
from tproxy.http.deadlines import Deadlines
from tproxy.http.upstream import MAX_HEADER_SIZE, UpstreamProtocol


class _ConnectFactory(ClientFactory):
    """Connects one new upstream connection for one exchange."""

    protocol = UpstreamProtocol
    noisy = False

    def __init__(self, pool, key, exchange):
        self.pool = pool
        self.key = key
        self.exchange = exchange

    def buildProtocol(self, addr):
        p = UpstreamProtocol(self.pool, self.key)
        p.factory = self
        return p

    def clientConnectionFailed(self, connector, reason):
        self.exchange.upstream_connect_failed(reason)


class UpstreamPool(object):
    """
    Keep-alive connections per peer: ``idle`` maps a
    :class:`~tproxy.registry.Peer` (``(peer, creator)`` for TLS) to its idle
    connections.  The peer itself is the key, hashed by identity: at
    10,000 peers a ``(host, port)`` key read and hashed its tuple, its
    ``str`` and its ``int`` from memory no cache held, at each request
    (the peer is at hand: the balancer has just read it).  Two groups
    listing one address pool apart, as their peers count apart.

    :param reactor: an ``IReactorTCP`` + ``IReactorTime``.
    :param connect_timeout: seconds for a new connection.
    :param max_idle: idle connections kept per peer (0 disables keep-alive).
    :param idle_timeout: seconds an idle connection is kept.
    :param max_header_size: bytes of a response head a peer may send (more:
        ``502``; ``proxy.max_upstream_header_size``).
    :param tls: the upstreams that speak TLS: ``{group name: tls object,
        (group name, host, port): tls object}`` (the ``tls`` of an
        ``upstreams`` group or of one of its peers, see
        :func:`tproxy.tls_upstream.client_creator`).  Their connections are pooled
        apart from plain ones to the same address.
    """

    def __init__(self, reactor, connect_timeout=60, max_idle=32, idle_timeout=60,
                 max_header_size=MAX_HEADER_SIZE, tls=None):
        self.reactor = reactor
        #: the clock's ``seconds`` (read at each ``set_deadline``: one
        #: attribute, not the reactor's method looked up each time)
        self.seconds = reactor.seconds
        #: the connections' deadlines (see ``UpstreamProtocol.set_deadline``)
        self.deadlines = Deadlines(reactor)
        #: seconds a response may be silent (``timeouts.read``)
        self.read_timeout = 60
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.max_header_size = max_header_size
        self.idle = {}      # peer or (peer, creator) -> [UpstreamProtocol], most recent last
        self.tls = tls or {}
        self._creators = {}  # (group, host, port) -> IOpenSSLClientConnectionCreator or None

    def connect(self, peer, exchange, fresh=False):
        """
        Give ``exchange`` a connection to ``peer``: an idle one at once
        (``exchange.upstream_connected(conn, True)``), or a new one later
        (``upstream_connected(conn, False)`` or ``upstream_connect_failed``);
        always a new one if ``fresh``.  An idle connection whose last
        response ended in the read being parsed now (a request pipelined
        behind it) is given once that read is parsed whole, or, if bytes
        followed the response, a new one instead (see
        :class:`~tproxy.http.upstream.UpstreamProtocol`).
        """
        key = peer
        creator = None
        if self.tls:
            creator = self._creator(peer)
            if creator is not None:
                key = (peer, creator)
        idle = None if fresh else self.idle.get(key)
        while idle:
            conn = idle.pop()
            conn.idle = False
            if conn.transport.connected and not conn.transport.disconnecting:
                if conn.reading:
                    conn.due = (peer, exchange)
                    return
                exchange.upstream_connected(conn, True)
                return
        factory = _ConnectFactory(self, key, exchange)
        if creator is None:
            # (a tproxy.fastio.FastClient transport on Twisted's reactors)
            connect_tcp(self.reactor, peer.host, peer.port, factory, self.connect_timeout)
        else:
            self.reactor.connectSSL(peer.host, peer.port, factory, creator,
                                    timeout=self.connect_timeout)

    def set_tls(self, tls):
        """The upstreams that speak TLS (see the class docstring); a reload
        may change them.  The idle TLS connections close: made with the
        settings before, no request would take them any more."""
        self.tls = tls or {}
        self._creators = {}
        for key in [k for k in self.idle if type(k) is tuple]:
            for conn in list(self.idle[key]):
                self._expire(conn)

    def _creator(self, peer):
        group = peer.group.name
        key = (group, peer.host, peer.port)
        try:
            return self._creators[key]
        except KeyError:
            pass
        spec = self.tls.get(key, self.tls.get(group))
        creator = None
        if spec:
            from tproxy.tls_upstream import client_creator
            creator = client_creator({} if spec is True else spec, peer.host)
        if len(self._creators) > 4096:
            self._creators.clear()   # registered peers come and go
        self._creators[key] = creator
        return creator

    def _idle(self, conn):
        idle = self.idle.get(conn.key)
        if idle is None:
            idle = self.idle[conn.key] = []
        if len(idle) >= self.max_idle or not conn.transport.connected:
            conn.abort()
            return
        conn.idle = True
        conn.set_deadline(self.idle_timeout)
        idle.append(conn)

    def _expire(self, conn):
        conn._cancel_timer()
        self._forget(conn)
        conn.transport.unregisterProducer()
        conn.transport.loseConnection()

    def _forget(self, conn):
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self.idle[conn.key]

    # -- the registry's changes (an IRegistryListener) ------------------------

    def peer_added(self, peer):
        """Nothing to do."""

    def peer_removed(self, peer):
        """A peer left its group (removed, expired): close its idle
        connections, plain and TLS (those in use finish their exchange,
        then close: see ``Exchange.upstream_end``)."""
        keys = [peer]
        if self.tls:
            # its TLS connections' key: (peer, the creator they were made
            # with), looked for among all keys when the creators' cache
            # lost it (past 4096 places)
            place = (peer.group.name, peer.host, peer.port)
            if place not in self._creators:
                keys.extend(k for k in self.idle if type(k) is tuple and k[0] is peer)
            elif self._creators[place] is not None:
                keys.append((peer, self._creators[place]))
        for key in keys:
            for conn in list(self.idle.get(key, ())):
                self._expire(conn)

    peer_changed = None

    def close(self):
        """Close every idle connection."""
        for conns in list(self.idle.values()):
            for conn in list(conns):
                self._expire(conn)


def upstream_tls(config):
    """
    The ``tls`` argument of :class:`UpstreamPool` from a configuration:
    ``{group: tls, (group, host, port): tls}`` of the groups and peers whose
    ``tls`` is set (empty when none is: then TLS costs nothing per request).
    """
    out = {}
    for group, spec in config.get("upstreams", {}).items():
        if spec.get("tls"):
            out[group] = spec["tls"]
        for peer in spec["peers"]:
            if "tls" in peer:
                out[(group, peer["host"], peer["port"])] = peer["tls"]
    return out
