# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
The stream harness (:class:`StreamHarness`): stream listeners, their stub
upstream servers and clients that can half-close and reset (see
:mod:`tproxy.testing`).
"""

from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from tproxy.admin_page import install as install_status_page
from tproxy.addresses import parse_host_port
from tproxy.stream import StreamFactory
from tproxy.testing._network import UNREACHABLE, _Network, _address, _text
from tproxy.testing._tcp import _ConnectionEnd, _TCPPump, _TCPTransport


#: The address a :class:`StreamHarness`'s clients connect to by default.
_STREAM_ADDRESS = ("127.0.0.1", 6380)


@implementer(IHalfCloseableProtocol)
class StreamConnection(_ConnectionEnd, Protocol):
    """
    One end of a TCP connection of a :class:`StreamHarness`: a client of the
    listener (:meth:`StreamHarness.connect`) or a stub server's end of an
    upstream connection (:attr:`StreamHarness.upstream_connections`).

    Every method moves bytes until nothing more happens, like the harness's.

    :ivar received: the bytes received so far (``bytes``).
    :ivar eof: the other end sent its FIN (it half-closed or closed).
    :ivar closed: this end is gone: closed by either side or reset.
    :ivar reset: it ended with a reset (an abort on either side, a
        shutdown...) rather than a clean close.
    :ivar echo: whether it sends back every byte it receives.
    :ivar close_on_eof: whether it closes as soon as the other end's FIN
        arrives (as most clients and servers do); with ``False`` it stays
        half-open until :meth:`close`, :meth:`half_close` or :meth:`abort`.
    """

    _harness = None
    _session = None

    def __init__(self, echo=False, greeting=b"", close_on_eof=True):
        self.echo = echo
        self.greeting = greeting
        self.close_on_eof = close_on_eof
        self._received = bytearray()
        self.eof = False
        self.closed = False
        self.reset = False

    @property
    def received(self):
        """The bytes received so far."""
        return bytes(self._received)

    @property
    def context(self):
        """
        The :class:`~tproxy.stream.StreamContext` of the proxy's session this
        connection belongs to (``None`` for a connection tproxy did not make).
        """
        return self._session.ctx if self._session is not None else None

    @property
    def local(self):
        """``"host:port"`` of this end."""
        return _text(self.transport.getHost())

    @property
    def remote(self):
        """``"host:port"`` of the other end (tproxy's)."""
        return _text(self.transport.getPeer())

    # -- the protocol ----------------------------------------------------------

    def connectionMade(self):
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data):
        self._received += data
        if self.echo:
            self.transport.write(data)

    # -- what a test calls -----------------------------------------------------

    def _act(self, what):
        harness = self._harness
        if harness is None:
            what()
            return
        with harness._observing():
            what()
            harness.flush()

    def send(self, data):
        """Send ``data`` (``bytes``) to the other end."""
        self._act(lambda: self.transport.write(data))

    def __repr__(self):
        return "<StreamConnection received={} eof={} closed={} reset={}>".format(
            len(self._received), self.eof, self.closed, self.reset)


class StreamServer(Factory):
    """
    A stub TCP server for a :class:`StreamHarness` (a value of its
    ``servers``): each connection is a :class:`StreamConnection` that records
    what it receives.

    :param echo: send every byte received back.
    :param greeting: ``bytes`` to send as soon as a connection is made.
    :param close_on_eof: close a connection when the proxy's FIN arrives
        (with ``False``, the test closes it).

    :ivar connections: its :class:`StreamConnection` s, in order.
    """

    noisy = False

    def __init__(self, echo=False, greeting=b"", close_on_eof=True):
        self.echo = echo
        self.greeting = greeting
        self.close_on_eof = close_on_eof
        self.connections = []

    def buildProtocol(self, addr):
        """A new :class:`StreamConnection`, recorded in :attr:`connections`."""
        p = StreamConnection(self.echo, self.greeting, self.close_on_eof)
        p.factory = self
        self.connections.append(p)
        return p


class StreamHarness(_Network):
    """
    A gateway with its plugins and one stream listener
    (:class:`tproxy.stream.StreamFactory`), whose network and clock are in
    memory: clients connect with :meth:`connect`, the upstream group's
    addresses are answered by stub servers (:class:`StreamServer`).

    A FIN is a FIN and a reset a reset: a half-close (:meth:`StreamConnection.
    half_close`) reaches the other side as ``readConnectionLost``, so the
    listener behaves as on a plain TCP socket::

        h = StreamHarness(
            config={"upstreams": {"redis": {"peers": ["127.0.0.1:6379"]}}},
            stream={"group": "redis", "timeouts": {"idle": 30}},
            plugins=["least_conn", MyStreamPlugin()],
            servers={"127.0.0.1:6379": StreamServer(echo=True)},
        )
        client = h.connect(client="192.0.2.7")
        client.send(b"PING\\r\\n")
        assert client.received == b"PING\\r\\n"
        client.close()
        [ctx] = h.logged
        assert ctx.reason == "client_closed"

    :param config: a configuration ``dict`` as for :class:`Harness`.
    :param stream: the listener's entry of ``streams`` (``group`` required,
        ``listen`` may be left out; ``proxy_protocol``, ``tries``,
        ``timeouts``); it replaces the configuration's ``streams``.  Without
        it, the configuration's first ``streams`` entry is the listener.
    :param plugins: as for :class:`Harness` (names, entries and plugin
        objects); the listener needs a ``balancer`` (``"least_conn"``).
    :param servers: the stub upstream servers: ``{"host:port": stub}``, a
        stub being a :class:`StreamServer`, any other
        :class:`~twisted.internet.interfaces.IProtocolFactory` or
        :data:`UNREACHABLE` (its connect attempts time out after the
        stream's ``timeouts.connect``).  An address with no stub refuses
        connections.
    :param entry_points: as for :class:`Harness`.

    :raises tproxy.config.ConfigError: for an invalid configuration or plugin.
    :raises ValueError: when there is no stream entry at all.

    :ivar clock: the :class:`~twisted.internet.testing.MemoryReactorClock`
        (also ``reactor``).
    :ivar gateway: the :class:`tproxy.gateway.Gateway`.
    :ivar registry: the gateway's registry.
    :ivar config: the validated configuration.
    :ivar stream: the listener's validated entry.
    :ivar factory: the :class:`tproxy.stream.StreamFactory` (``sessions``:
        the open ones).
    :ivar clients: the :class:`StreamConnection` s :meth:`connect` made.
    :ivar upstream_connections: the stub servers' ends (:class:`StreamConnection`)
        of every upstream connection tproxy made, in order.
    :ivar logged: the :class:`~tproxy.stream.StreamContext` of every ended
        connection, in the order ``stream_log`` ran (the harness's
        implementation runs after every other one).
    :ivar events: the :mod:`twisted.logger` events emitted while the harness
        was working (see :meth:`messages`).
    """

    def __init__(self, config=None, stream=None, plugins=None, servers=None,
                 entry_points=None):
        _Network.__init__(self, servers)
        self.clients = []
        self.upstream_connections = []
        config = dict(config or {})
        if stream is not None:
            entry = dict(stream)
            entry.setdefault("listen", "tcp:{}".format(_STREAM_ADDRESS[1]))
            config["streams"] = [entry]
        elif not config.get("streams"):
            raise ValueError("StreamHarness: no stream (give stream={'group': ...} "
                             "or a configuration with a 'streams' entry)")
        self._start(config, plugins, entry_points)
        self.stream = self.config["streams"][0]
        self.logged = self._recorder.logged
        self.factory = StreamFactory(self.gateway, self.stream)
        # the admin listener's status page and its JSON endpoints, as twistd has them
        install_status_page(self.gateway, [("stream", self.stream["listen"], self.factory)])

    def _server_factory(self, stub):
        if stub is UNREACHABLE or IProtocolFactory.providedBy(stub):
            return stub
        raise TypeError("a stub stream server is a StreamServer, an IProtocolFactory "
                        "or UNREACHABLE, not {!r}".format(stub))

    def _connect(self, client, client_address, server, server_address):
        """Connect two protocols with in-memory TCP transports."""
        client_io = _TCPTransport(client, isServer=False, hostAddress=client_address,
                                  peerAddress=server_address)
        server_io = _TCPTransport(server, isServer=True, hostAddress=server_address,
                                  peerAddress=client_address)
        if isinstance(server, StreamConnection):
            # a stub's end of an upstream connection of a session
            server._harness = self
            server._session = getattr(client, "session", None)
            self.upstream_connections.append(server)
        server.makeConnection(server_io)
        client.makeConnection(client_io)
        self._pumps.append(_TCPPump(client, server, client_io, server_io, False,
                                    clock=self.clock))

    # -- what a test calls --------------------------------------------------------

    def connect(self, client="127.0.0.1", port=None, server=None, close_on_eof=True):
        """
        Open a client connection to the listener.  ``stream_access`` runs
        and the upstream connection is made (or not) before this returns.

        :param client: the client's IP address (``ctx.client_addr``).
        :param port: the client's port (default: a new one each time).
        :param server: ``"host:port"`` the client connects to
            (``ctx.server_addr``, ``ctx.server_port``; default
            ``"127.0.0.1:6380"``).
        :param close_on_eof: as for :class:`StreamConnection`: the client
            closes when the proxy's FIN arrives.
        :return: a :class:`StreamConnection` (``context`` is the session's
            :class:`~tproxy.stream.StreamContext`).
        """
        protocol = StreamConnection(close_on_eof=close_on_eof)
        protocol._harness = self
        client_address = _address(client, next(self._ports) if port is None else port)
        host, server_port = parse_host_port(server) if server else _STREAM_ADDRESS
        with self._observing():
            session = self.factory.buildProtocol(client_address)
            protocol._session = session
            self.clients.append(protocol)
            self._connect(protocol, client_address, session, _address(host, server_port))
            self.flush()
        return protocol

    def stop(self):
        """
        Stop as tproxy does once ``shutdown_timeout`` is over: the open
        sessions are aborted (``ctx.reason`` ``"shutdown"``), then the
        gateway's ``on_stop`` callbacks run.
        """
        with self._observing():
            self.factory.abort()
            self.flush()
            self._wait(self.gateway.stop, "stopping the gateway")
