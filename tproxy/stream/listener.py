# -*- test-case-name: tests.test_stream -*-
"""
:class:`StreamFactory`: one stream listener, making a
:class:`~tproxy.stream.session.StreamSession` per client connection.
"""

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory

from tproxy.proxy_protocol import header as proxy_protocol_header
from tproxy.stream.phases import stream_phases
from tproxy.stream.session import StreamSession


class StreamFactory(Factory):
    """
    One stream listener: makes a :class:`StreamSession` per client connection.

    :param gateway: the :class:`tproxy.gateway.Gateway` (its ``reactor``
        connects upstream and times the timeouts; its plugin manager's hooks
        are resolved once, see :meth:`refresh`).
    :param stream: the listener's configuration entry: ``group`` (required),
        ``proxy_protocol`` (``None``, ``"v1"`` or ``"v2"``), ``tries``
        (default 0: each peer once), ``timeouts`` (``connect``: 60, ``idle``: 600 seconds).

    :ivar sessions: the open :class:`StreamSession` objects.
    :ivar handshakes: the TLS client connections whose handshake is not
        done yet (their session starts after it; see
        :mod:`tproxy.tls_listener`).
    """

    noisy = False

    #: what :attr:`tproxy.gateway.Gateway.listeners` says this is
    kind = "stream"

    def __init__(self, gateway, stream):
        self.reactor = gateway.reactor
        self.clock = gateway.reactor
        self.use(gateway, stream)
        self.sessions = set()
        self.handshakes = set()
        listeners = getattr(gateway, "listeners", None)
        if listeners is not None:
            listeners.append(self)
        self._drained = []     # Deferreds of drain(), fired once none is open
        self._ids = 0

    def use(self, gateway, stream):
        """
        Serve the connections accepted from now on with ``gateway`` and the
        configuration entry ``stream`` (a reload, see :mod:`tproxy.reload`);
        a session open goes on with the gateway it started with.
        """
        self.gateway = gateway
        self.stream = stream
        self.group = stream["group"]
        self.tries = stream.get("tries", 0)
        timeouts = stream.get("timeouts") or {}
        self.connect_timeout = timeouts.get("connect", 60)
        self.idle_timeout = timeouts.get("idle", 600)
        self.proxy_protocol = stream.get("proxy_protocol")
        if self.proxy_protocol is not None:
            proxy_protocol_header(self.proxy_protocol, None, None)  # ValueError if unknown
        self.refresh()

    def refresh(self):
        """Resolve the hook implementations again (after plugins changed)."""
        self.plugins = stream_phases(self.gateway.plugins, self.group)

    @property
    def open_connections(self):
        """The number of client connections open now (sessions, and TLS
        clients still in their handshake)."""
        return len(self.sessions) + len(self.handshakes)

    @property
    def accepted(self):
        """The number of client connections accepted so far."""
        return self._ids

    def buildProtocol(self, addr):
        """A :class:`StreamSession` for a new client connection."""
        p = StreamSession()
        p.factory = self
        return p

    def next_id(self):
        """A connection id unique within this listener."""
        self._ids += 1
        return self._ids

    def drain(self):
        """
        A Deferred that fires once every session has ended (the listener no
        longer accepts; the sessions open go on until they end by themselves
        or :meth:`abort`, and a TLS client in its handshake until its
        session ends).
        """
        d = Deferred()
        if self.sessions or self.handshakes:
            self._drained.append(d)
        else:
            d.callback(None)
        return d

    def abort(self):
        """
        End every open session at once (``ctx.reason`` ``"shutdown"``), and
        close the TLS clients still in their handshake.

        :return: how many were ended.
        """
        sessions = [s for s in self.sessions if not s.done]
        for s in sessions:
            s.shutdown()
        handshakes = list(self.handshakes)
        for p in handshakes:
            p.transport.abortConnection()
        return len(sessions) + len(handshakes)

    def handshake_ended(self, tls_protocol):
        """A TLS client's handshake ended: its session has started, or it
        closed first."""
        self.handshakes.discard(tls_protocol)
        self._maybe_drained()

    def _maybe_drained(self):
        if self._drained and not self.sessions and not self.handshakes:
            self._all_closed()

    def _all_closed(self):
        waiting, self._drained = self._drained, []
        for d in waiting:
            d.callback(None)
