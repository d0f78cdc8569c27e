"""
tproxy's two shortcuts through Twisted internals (:mod:`tproxy.fastio`,
:mod:`tproxy.reactor`): bytes arrive complete and in order, writes leave at
once when nothing is buffered, and both step aside where they do not apply.
"""

from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tproxy import fastio, fastio_accept
from tproxy.reactor import FastEPollReactor, install


class Collect(Protocol):
    def __init__(self, want):
        self.want = want
        self.data = bytearray()
        self.done = Deferred()

        self.ended = Deferred()

    def dataReceived(self, data):
        self.data += data
        if len(self.data) >= self.want and not self.done.called:
            self.done.callback(bytes(self.data))

    def connectionLost(self, reason):
        self.ended.callback(bytes(self.data))


class Connected(Protocol):
    def __init__(self, ready):
        self.ready = ready

    def connectionMade(self):
        self.ready.callback(self)


class FastWriteTests(TestCase):

    def connect(self, want):
        """A listening collector and a connected client protocol."""
        self.collector = Collect(want)
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: self.collector),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        ready = Deferred()
        factory = Factory.forProtocol(lambda: Connected(ready))
        from twisted.internet.endpoints import TCP4ClientEndpoint
        d = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(factory)

        def connected(proto):
            self.addCleanup(proto.transport.loseConnection)
            return proto
        return d.addCallback(connected)

    def test_writesAtOnce(self):
        """With nothing buffered, a write leaves before the reactor turns."""
        if not fastio.ENABLED:
            raise SkipTest("fast write disabled on Twisted %s" % fastio.TWISTED_VERSION)

        def go(proto):
            t = proto.transport
            self.assertTrue(fastio.install_fast_write(t))
            t.write(b"hello ")
            t.writeSequence([b"wor", b"ld"])
            self.assertEqual((t.dataBuffer, t._tempDataBuffer), (b"", []))
            return self.collector.done
        d = self.connect(len(b"hello world"))
        d.addCallback(go)
        d.addCallback(self.assertEqual, b"hello world")
        return d

    def test_largeWritesKeepOrder(self):
        """What the socket does not take is buffered; order is kept."""
        pieces = [bytes([i % 251]) * 700000 for i in range(12)]
        expected = b"".join(pieces)

        def go(proto):
            fastio.install_fast_write(proto.transport)
            for i, piece in enumerate(pieces):
                if i % 2:
                    proto.transport.writeSequence([piece[:1000], piece[1000:]])
                else:
                    proto.transport.write(piece)
            return self.collector.done
        d = self.connect(len(expected))
        d.addCallback(go)
        d.addCallback(lambda got: self.assertTrue(got == expected, "bytes differ"))
        return d


    def test_closesAtOnce(self):
        """With ``close=True`` and nothing buffered, ``loseConnection``
        closes before it returns (``connectionLost`` has run, done); the peer
        gets every byte, then the end of the stream."""
        if not fastio.ENABLED:
            raise SkipTest("fast write disabled on Twisted %s" % fastio.TWISTED_VERSION)
        lost = []

        def go(proto):
            t = proto.transport
            proto.connectionLost = lost.append
            self.assertTrue(fastio.install_fast_write(t, close=True))
            t.write(b"bye")
            t.loseConnection()
            self.assertFalse(t.connected)
            [reason] = lost
            self.assertTrue(reason.check(ConnectionDone))
            return self.collector.ended
        d = self.connect(3)
        d.addCallback(go)
        d.addCallback(lambda data: self.assertEqual(data, b"bye"))
        return d

    def test_closeAfterBuffer(self):
        """With bytes buffered, ``loseConnection`` is Twisted's own: the
        connection closes once they are sent, and none is lost."""
        piece = b"x" * 1000000
        sent = []

        def go(proto):
            t = proto.transport
            fastio.install_fast_write(t, close=True)
            while not (t.dataBuffer or t._tempDataBuffer) and len(sent) < 64:
                t.write(piece)   # (the peer reads nothing yet)
                sent.append(piece)
            self.assertTrue(t.dataBuffer or t._tempDataBuffer,
                            "the socket took it all: nothing tested")
            expected.append(b"".join(sent))
            t.loseConnection()
            self.assertTrue(t.connected)
            return self.collector.ended
        expected = []
        d = self.connect(1)
        d.addCallback(go)
        d.addCallback(lambda data: self.assertTrue(data == expected[0], "bytes differ"))
        return d


class Served(Protocol):
    """The server side of a connection: says ``hello`` and closes; tells
    ``seen`` its transport, and ``closed`` whether it was lost (and why)
    when ``loseConnection`` returned."""

    lost = None

    def __init__(self, seen, closed):
        self.seen = seen
        self.closed = closed

    def connectionMade(self):
        t = self.transport
        fastio.install_fast_write(t, close=True)   # (as an HTTP connection)
        t.setTcpNoDelay(True)
        self.seen(t)
        t.write(b"hello")
        t.loseConnection()
        self.closed(self.lost)

    def connectionLost(self, reason):
        self.lost = reason


class FastListenerTests(TestCase):
    """:func:`tproxy.fastio_accept.fast_listener`: the HTTP listener's connections
    are :class:`~tproxy.fastio.FastServer` transports."""

    def setUp(self):
        if not fastio.ENABLED:
            raise SkipTest("fast write disabled on Twisted %s" % fastio.TWISTED_VERSION)
        self.seen = self.closed = None

    def listen(self):
        port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: Served(self.seen, self.closed)),
            interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port

    def fetch(self, port):
        """Connect to ``port``: what the server sent before the close."""
        from twisted.internet.endpoints import TCP4ClientEndpoint
        collector = Collect(5)
        d = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda: collector))
        return d.addCallback(lambda _: collector.ended)

    async def test_connections(self):
        """Its connections write, set ``TCP_NODELAY`` and close at once
        (``connectionLost`` ran before ``loseConnection`` returned), and the
        peer gets every byte; each time (the second connection takes
        ``TCP_NODELAY`` from the listening socket)."""
        seen, closed = [], []
        self.seen = lambda t: seen.append((type(t), t.getTcpNoDelay()))
        self.closed = closed.append
        port = self.listen()
        self.patch(fastio.FastServer, "nodelay_inherited", None)
        self.assertTrue(fastio_accept.fast_listener(port))
        for _ in range(2):
            self.assertEqual(await self.fetch(port), b"hello")
            self.assertEqual(seen.pop(), (fastio.FastServer, True))
            self.assertTrue(closed.pop().check(ConnectionDone))
        self.assertTrue(fastio.FastServer.nodelay_inherited)

    async def test_noCycle(self):
        """A connection closed leaves no reference cycle: its transport is
        freed with its protocol, the collector off (the collections it
        needed held every request for milliseconds)."""
        import gc
        import platform
        import weakref
        if platform.python_implementation() == "PyPy":
            raise SkipTest("PyPy frees objects by its collector, not by reference counts")
        refs = []
        self.seen = lambda t: refs.append(weakref.ref(t))
        self.closed = lambda lost: None
        port = self.listen()
        self.assertTrue(fastio_accept.fast_listener(port))
        gc.disable()
        self.addCleanup(gc.enable)
        self.assertEqual(await self.fetch(port), b"hello")
        [ref] = refs
        self.assertIsNone(ref())

    def test_sameAsTwisted(self):
        """A FastServer has what ``tcp.Server.__init__`` gives a connection
        (its log prefix and ``repr`` made when read), and reads alike."""
        import socket
        from twisted.internet import tcp
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        self.addCleanup(listener.close)
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        made = []
        for kind in (tcp.Server, fastio.FastServer):
            client = socket.create_connection(listener.getsockname())
            self.addCleanup(client.close)
            sock, addr = listener.accept()
            t = kind(sock, Protocol(), addr, port, 7, reactor)
            self.addCleanup(t.connectionLost, Failure(ConnectionDone()))
            made.append(t)
        stock, fast = made
        fastio._inline(stock)   # (as FastServer.__init__)
        lazy = {"logstr", "repstr"}
        self.assertEqual(set(vars(fast)) | lazy, set(vars(stock)))
        self.assertFalse(lazy & set(vars(fast)))
        own = {"socket", "fileno", "protocol", "client"}
        self.assertEqual({k: v for k, v in vars(fast).items() if k not in own},
                         {k: v for k, v in vars(stock).items() if k not in own | lazy})
        self.assertEqual(repr(fast), repr(stock))
        self.assertEqual(fast.logPrefix(), stock.logPrefix())
        self.assertEqual(fast.getPeer().port, fast.client[1])

    def test_acceptsWhatWaits(self):
        """One read of the listener accepts every connection waiting, each
        with its protocol connected, and accepts as many next time (Twisted's
        ``numberAccepts``)."""
        import socket
        made, protocols = [], []

        def build(addr):
            made.append(addr)
            protocols.append(Protocol())
            return protocols[-1]
        factory = Factory.forProtocol(Protocol)
        factory.buildProtocol = build
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertTrue(fastio_accept.fast_listener(port))
        clients = [socket.create_connection(("127.0.0.1", port.getHost().port))
                   for _ in range(3)]
        for c in clients:
            self.addCleanup(c.close)
        port.doRead()
        for p in protocols:
            self.addCleanup(p.transport.loseConnection)
        self.assertEqual([a.port for a in made], [c.getsockname()[1] for c in clients])
        self.assertEqual([type(p.transport) for p in protocols], [fastio.FastServer] * 3)
        self.assertEqual(port.numberAccepts, 3)

    def test_acceptErrorsToTwisted(self):
        """An error of ``accept`` other than "nothing waiting" is Twisted's
        to handle (here ``ECONNABORTED``: logged, nothing accepted)."""
        import errno

        class Refusing(object):
            calls = 0

            def _accept(self):
                raise OSError(errno.ECONNABORTED, "aborted")

            def accept(self):
                Refusing.calls += 1
                self._accept()
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertTrue(fastio_accept.fast_listener(port))
        real = port.socket
        port.socket = Refusing()
        self.addCleanup(setattr, port, "socket", real)
        port.doRead()
        self.assertEqual(Refusing.calls, 1)

    def test_otherListeners(self):
        """A listener that is not plain TCP keeps Twisted's transports."""
        from twisted.internet.testing import MemoryReactor
        memory = MemoryReactor()
        self.assertFalse(fastio_accept.fast_listener(memory.listenTCP(0, Factory())))
        self.patch(fastio, "ENABLED", False)
        self.assertFalse(fastio_accept.fast_listener(self.listen()))

class FallbackTests(SynchronousTestCase):

    def test_otherTransports(self):
        """Anything but a plain TCP connection keeps the stock write."""
        from twisted.internet.testing import StringTransport
        self.assertFalse(fastio.install_fast_write(StringTransport()))

    def test_untestedTwisted(self):
        """On a Twisted release the shortcuts were not checked against, stock."""
        self.patch(fastio, "ENABLED", False)
        self.assertFalse(fastio.install_fast_write(object()))


class FastClientTests(TestCase):
    """:func:`tproxy.fastio.connect_tcp`: the upstream pool's plain TCP
    connections are :class:`~tproxy.fastio.FastClient` transports."""

    def setUp(self):
        if not fastio.ENABLED:
            raise SkipTest("fast write disabled on Twisted %s" % fastio.TWISTED_VERSION)

    async def test_upstreamConnection(self):
        """A pooled upstream connection sends bytes by the fast write, lets
        go of the exchange it was made for, and once it is lost leaves no reference
        cycle: its protocol, transport and connector are freed with the
        collector off (CPython)."""
        import gc
        import platform
        import weakref
        from types import SimpleNamespace
        from twisted.internet.task import deferLater
        from tproxy.http.pool import UpstreamPool
        from tproxy.registry import Peer
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        peer_side = Collect(len(request))
        port = reactor.listenTCP(0, Factory.forProtocol(lambda: peer_side),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        made, connected, lost = [], Deferred(), Deferred()
        exchange = SimpleNamespace(
            upstream_connected=lambda conn, reused: (made.append(conn),
                                                     connected.callback(None)))

        class Pool(UpstreamPool):
            def _forget(self, conn):
                UpstreamPool._forget(self, conn)
                lost.callback(None)   # (the connection's connectionLost)
        host, number = "127.0.0.1", port.getHost().port
        peer = Peer(None, host, number)
        gc.disable()
        self.addCleanup(gc.enable)
        Pool(reactor).connect(peer, exchange)
        await connected
        conn = made.pop()
        self.assertIs(type(conn.transport), fastio.FastClient)
        self.assertIsNone(conn.factory.exchange)
        # (through the transport: the compiled UpstreamProtocol.start takes
        # only a real Exchange)
        conn.transport.write(request)
        self.assertEqual(await peer_side.done, request)
        refs = [weakref.ref(o) for o in (conn, conn.transport, conn.transport.connector)]
        del conn
        peer_side.transport.loseConnection()
        await lost
        await deferLater(reactor, 0, lambda: None)   # (out of connectionLost's frames)
        if platform.python_implementation() != "PyPy":
            # (PyPy frees objects by its collector, not by reference counts)
            self.assertEqual([ref() for ref in refs], [None, None, None])


    async def test_namesKnownAtOnce(self):
        """Twenty connections opened together, written to past what the socket
        takes (Twisted's buffer), with a producer, paused, then lost (one
        closed, one aborted, the others closed by the peer): their transports set
        no name beyond :data:`tproxy.fastio.CLIENT_NAMES`, none of which is a
        descriptor of the class, and on CPython keep no dictionary of their
        own (its values inline: their referents are values, no ``dict``)."""
        import gc
        import platform
        from twisted.internet.task import deferLater
        from tproxy.fastio import CLIENT_NAMES, FastClient, connect_tcp
        for name in CLIENT_NAMES:
            self.assertFalse(hasattr(type(getattr(FastClient, name, None)), "__set__"), name)
        ends = []
        port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: ends.append(Collect(0)) or ends[-1]),
            interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        made, lost = [], []

        class Producing(Protocol):
            def connectionMade(self):
                self.transport.registerProducer(self, True)
                made.append(self)
                if len(made) == 20:
                    ready.callback(None)

            def pauseProducing(self):
                pass

            def resumeProducing(self):
                pass

            def stopProducing(self):
                pass

            def connectionLost(self, reason):
                lost.append(self)
                if len(lost) == 20:
                    gone.callback(None)

        ready, gone = Deferred(), Deferred()
        factory = ClientFactory.forProtocol(Producing)
        for _ in range(20):
            connect_tcp(reactor, "127.0.0.1", port.getHost().port, factory, 5)
        await ready
        transports = [p.transport for p in made]
        for t in transports:
            self.assertIs(type(t), FastClient)
            t.write(b"x" * (8 << 20))   # (more than the socket takes: buffered)
            t.pauseProducing()
            t.resumeProducing()
        inline = platform.python_implementation() == "CPython"
        for t in transports:
            if inline:
                self.assertNotIn(dict, [type(r) for r in gc.get_referents(t)])
        transports[0].loseConnection()
        transports[1].abortConnection()
        await deferLater(reactor, 0, lambda: None)
        for end in ends:
            end.transport.loseConnection()
        await gone
        names = set()
        for t in transports:
            if inline:
                self.assertNotIn(dict, [type(r) for r in gc.get_referents(t)])
            names.update(vars(t))   # (which gives it a dictionary)
        self.assertEqual(names - set(CLIENT_NAMES), set())

    async def test_refused(self):
        """A connection the peer refuses fails the exchange, as Twisted's
        own connector does."""
        import socket
        from types import SimpleNamespace
        from twisted.internet.error import ConnectionRefusedError
        from tproxy.http.pool import UpstreamPool
        from tproxy.registry import Peer
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            number = s.getsockname()[1]    # (free, with nothing listening)
        failed = Deferred()
        exchange = SimpleNamespace(upstream_connect_failed=lambda why: failed.callback([why]))
        peer = Peer(None, "127.0.0.1", number)
        UpstreamPool(reactor).connect(peer, exchange)
        [reason] = await failed
        self.assertTrue(reason.check(ConnectionRefusedError))


class ReactorTests(SynchronousTestCase):

    def test_dispatch(self):
        """The fast reactor delivers connections and bytes like the stock one."""
        r = FastEPollReactor()
        got = Collect(5)
        port = r.listenTCP(0, Factory.forProtocol(lambda: got), interface="127.0.0.1")
        ready = Deferred()
        r.connectTCP("127.0.0.1", port.getHost().port,
                     ClientFactory.forProtocol(lambda: Connected(ready)))
        for _ in range(200):
            r.iterate(0.01)
            if ready.called:
                break
        client = self.successResultOf(ready)
        client.transport.write(b"12345")
        for _ in range(200):
            r.iterate(0.01)
            if got.done.called:
                break
        self.assertEqual(self.successResultOf(got.done), b"12345")
        client.transport.abortConnection()
        port.stopListening()
        for _ in range(5):
            r.iterate(0)
        r.disconnectAll()
        for reader in list(r.getReaders()) + list(r.getWriters()):
            r.removeReader(reader)
            r.removeWriter(reader)
        r._poller.close()
        r.waker.connectionLost(None)

    def _pair(self, server_protocol):
        """A connected client -> server pair on a fresh fast reactor:
        ``(reactor, client protocol, cleanup)``."""
        r = FastEPollReactor()
        port = r.listenTCP(0, Factory.forProtocol(lambda: server_protocol),
                           interface="127.0.0.1")
        ready = Deferred()
        r.connectTCP("127.0.0.1", port.getHost().port,
                     ClientFactory.forProtocol(lambda: Connected(ready)))
        self._spin(r, lambda: ready.called and server_protocol.transport is not None)
        client = self.successResultOf(ready)

        def cleanup():
            port.stopListening()
            r.disconnectAll()
            for _ in range(5):
                r.iterate(0)
            for reader in list(r.getReaders()) + list(r.getWriters()):
                r.removeReader(reader)
                r.removeWriter(reader)
            r._poller.close()
            r.waker.connectionLost(None)
        return r, client, cleanup

    def _spin(self, r, done):
        for _ in range(300):
            r.iterate(0.01)
            if done():
                return
        self.fail("the reactor did not get there")

    def test_readShortcutAssumptions(self):
        """The read shortcut does what ``Connection.doRead`` does: it is used
        only for transports that use that very method."""
        from twisted.internet import tcp
        from tproxy.reactor import _TCP_TYPES
        for t in _TCP_TYPES:
            self.assertIs(t.doRead, tcp.Connection.doRead)
            self.assertIs(t._dataReceived, tcp.Connection._dataReceived)
        # (the HTTP listener's and the upstream connections take it too)
        self.assertIn(fastio.FastServer, _TCP_TYPES)
        self.assertIn(fastio.FastClient, _TCP_TYPES)

    def test_endOfFile(self):
        """The peer closing its side ends the connection with
        ``ConnectionDone`` after the bytes sent before it."""
        from twisted.internet.error import ConnectionDone

        class Server(Collect):
            lost = None

            def connectionLost(self, reason):
                self.lost = reason
        server = Server(3)
        r, client, cleanup = self._pair(server)
        try:
            client.transport.write(b"abc")
            client.transport.loseConnection()
            self._spin(r, lambda: server.lost is not None)
            self.assertEqual(bytes(server.data), b"abc")
            self.assertTrue(server.lost.check(ConnectionDone))
        finally:
            cleanup()

    def _roundTrips(self, buffer_size=None):
        """Bytes of several reads, some of them larger than the read buffer,
        arrive whole and in order on the fast reactor's read path."""
        payload = b"".join(b"%06d" % i for i in range(40000))   # 240,000 bytes

        class Server(Collect):
            # keeps each read as given: a view of a reused buffer would change
            def dataReceived(self, data):
                self.chunks.append(data)
                Collect.dataReceived(self, data)
        server = Server(len(payload))
        server.chunks = []
        r, client, cleanup = self._pair(server)
        try:
            if buffer_size is not None:
                server.transport.bufferSize = buffer_size
            payload = b"first" + payload[5:]
            client.transport.write(b"first")
            self._spin(r, lambda: len(server.data) >= 5)
            client.transport.write(payload[5:])
            self._spin(r, lambda: server.done.called)
            self.assertEqual(self.successResultOf(server.done)[5:], payload[5:])
            self.assertEqual(b"".join(server.chunks), payload)
            self.assertEqual({type(c) for c in server.chunks}, {bytes})
            self.assertEqual(bytes(server.data[:5]), b"first")
        finally:
            cleanup()

    def test_readInto(self):
        """Reading into the reactor's one buffer (PyPy's path, forced here)
        delivers every byte in order, a copy of each read (the buffer is
        reused by the next read)."""
        import tproxy.reactor as module
        self.patch(module, "_RECV_INTO", True)
        self._roundTrips()

    def test_readIntoLargerBuffer(self):
        """A transport reading more than the reactor's buffer at a time
        takes ``recv``."""
        import tproxy.reactor as module
        self.patch(module, "_RECV_INTO", True)
        self._roundTrips(buffer_size=module._READ_SIZE * 2)

    def test_readPlain(self):
        """CPython's path (``recv``, forced here) delivers the same bytes."""
        import tproxy.reactor as module
        self.patch(module, "_RECV_INTO", False)
        self._roundTrips()

    def test_dataReceivedRaises(self):
        """An exception from ``dataReceived`` is logged and closes that
        connection with the exception as the reason, as in stock Twisted."""
        class Boom(Exception):
            pass

        class Server(Protocol):
            lost = None

            def dataReceived(self, data):
                raise Boom()

            def connectionLost(self, reason):
                self.lost = reason
        server = Server()
        r, client, cleanup = self._pair(server)
        try:
            client.transport.write(b"x")
            self._spin(r, lambda: server.lost is not None)
            self.assertTrue(server.lost.check(Boom))
            self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        finally:
            cleanup()

    def test_cachedClock(self):
        """With the cached clock (PyPy's, forced here), ``seconds()`` during a
        dispatch is the time the poll returned, the same at every call; outside
        a dispatch it reads the clock."""
        import time

        import tproxy.reactor as module
        self.patch(module, "_CACHED_CLOCK", True)

        class Server(Collect):
            def dataReceived(self, data):
                self.seen = (r.seconds(), r.seconds(), r._now)
                Collect.dataReceived(self, data)
        server = Server(3)
        r, client, cleanup = self._pair(server)
        try:
            self.assertIsNone(r._now)
            before = time.time()
            client.transport.write(b"abc")
            self._spin(r, lambda: server.done.called)
            after = time.time()
            first, second, now = server.seen
            self.assertEqual((first, second), (now, now))
            self.assertTrue(before <= now <= after, (before, now, after))
            self.assertIsNone(r._now)
            outside = r.seconds()
            self.assertTrue(after <= outside <= time.time())
        finally:
            cleanup()

    def test_stockClock(self):
        """Without the cached clock (CPython's), ``seconds`` is Twisted's."""
        import tproxy.reactor as module
        from twisted.python.runtime import seconds
        self.patch(module, "_CACHED_CLOCK", False)
        r = FastEPollReactor()
        self.assertIs(r.seconds, seconds)
        r._poller.close()
        r.waker.connectionLost(None)

    def test_dispatchIsOurs(self):
        """The reactor's loop calls the shortcut, not the stock ``doPoll``."""
        r = FastEPollReactor()
        self.assertIs(type(r).doIteration, FastEPollReactor.doPoll)
        r._poller.close()
        r.waker.connectionLost(None)

    def test_installFallsBack(self):
        """On an untested Twisted, ``-r tproxy`` installs the stock epoll reactor."""
        import tproxy.reactor as module
        installed = []
        self.patch(module, "TWISTED_VERSION", "0.0.0")
        self.patch(module, "installReactor", installed.append)
        r = install()
        self.assertEqual(type(r).__name__, "EPollReactor")
        self.assertEqual(installed, [r])
        r._poller.close()
        r.waker.connectionLost(None)
