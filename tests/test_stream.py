"""
Tests for :mod:`tproxy.stream` (the TCP proxy) and :mod:`tproxy.proxy_protocol`:
real loopback sockets, test backends started here, a stream listener built
from a configuration dict.
"""

import hashlib
import os
import socket
import struct

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.trial import unittest
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

try:
    from twisted.internet import ssl
except ImportError:  # no pyOpenSSL
    ssl = None

from tproxy import hookimpl
from tproxy.config import ConfigError, validate_config
from tproxy.gateway import Gateway
from tproxy.plugins import build_plugin_manager
from tproxy.proxy_protocol import V2_SIGNATURE, header, v1_header, v2_header
from tproxy.stream import StreamContext, StreamFactory
from tproxy.stream.pipe import PENDING_LIMIT
from tproxy.testing import UNREACHABLE, StreamHarness, StreamServer

from tests.helpers import pattern_digest, turns, until

RECORDER = "tests.test_stream:Recorder"

MiB = 1024 * 1024
BLOCK = os.urandom(65536)

#: The access log as twisted.logger events (what these tests observe).
LOGGER = {"name": "access_log", "settings": {"target": "logger"}}


def pattern(size):
    """``size`` bytes of the test pattern, as a list of blocks."""
    full, rest = divmod(size, len(BLOCK))
    return [BLOCK] * full + ([BLOCK[:rest]] if rest else [])


def digest(size):
    """The sha256 of ``size`` bytes of the test pattern (once per size)."""
    return pattern_digest(("stream", size), lambda: pattern(size))


def reset(transport):
    """Close with a TCP RST (SO_LINGER 0)."""
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abortConnection()


def buffered(transport):
    """Bytes waiting in a Twisted TCP transport's write buffer."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class Recorder(object):
    """
    A plugin: ``stream_access`` calls ``fns["access"](ctx)`` when set;
    ``stream_log`` records every context in ``logged``.
    """

    def __init__(self, settings):
        self.fns = {}
        self.logged = []

    @hookimpl
    def stream_access(self, ctx):
        """Calls ``fns["access"](ctx)``."""
        fn = self.fns.get("access")
        return None if fn is None else fn(ctx)

    @hookimpl
    def stream_log(self, ctx):
        """Records ``ctx``."""
        self.logged.append(ctx)


# -- backends ------------------------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class BackendConnection(Protocol):
    """One connection to a :class:`Backend`; what it does is the backend's ``kind``."""

    def connectionMade(self):
        b = self.factory
        b.connections.append(self)
        b.open += 1
        self.received = bytearray() if b.kind == "record" else None
        self.count = 0
        self.sha = hashlib.sha256()
        self.eof = False
        self.closed = defer.Deferred()
        if b.kind == "source":
            self.transport.registerProducer(_Source(self.transport, b.size, self), True)
        elif b.kind == "greet":
            self.transport.write(b"hello\n")
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        b = self.factory
        self.count += len(data)
        if b.kind == "echo" or b.kind == "greet":
            self.transport.write(data)
        elif b.kind == "sink":
            self.sha.update(data)
            if b.on_data is not None:
                b.on_data(self)
        elif b.kind == "record":
            self.received += data

    def readConnectionLost(self):
        self.eof = True
        b = self.factory
        if b.kind == "sink":
            self.transport.write(b"%d %s\n" % (self.count, self.sha.hexdigest().encode()))
        elif b.kind == "echo" and b.reply_after_eof:
            self.transport.write(b.reply_after_eof)
        if b.kind != "source":
            self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.factory.open -= 1
        self.reason = reason
        self.closed.callback(None)


@implementer(IPushProducer)
class _Source(object):
    """Writes ``size`` bytes of the pattern to ``transport``, with backpressure."""

    def __init__(self, transport, size, conn):
        self.transport = transport
        self.blocks = pattern(size)
        self.conn = conn
        self.paused = False
        reactor.callLater(0, self.resumeProducing)

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.blocks:
            self.transport.write(self.blocks.pop())
        if not self.blocks and not self.paused and self.transport.connected:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def pauseProducing(self):
        self.paused = True

    def stopProducing(self):
        self.blocks = []


class Backend(Factory):
    """
    A test upstream: ``echo`` (echoes; on FIN, sends ``reply_after_eof`` and
    closes), ``sink`` (counts and hashes; on FIN answers ``"<count> <sha256>"``
    and closes), ``source`` (sends ``size`` pattern bytes, then closes),
    ``greet`` (sends ``hello`` and its FIN at once, then echoes) or
    ``record`` (keeps every byte).
    """

    protocol = BackendConnection
    noisy = False

    def __init__(self, kind="echo", size=0, reply_after_eof=b""):
        self.kind = kind
        self.size = size
        self.reply_after_eof = reply_after_eof
        self.connections = []
        self.open = 0
        self.on_data = None
        self.port = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port.getHost().port


# -- clients -----------------------------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """A test client: keeps (or hashes) what it receives, knows about FINs."""

    def __init__(self, keep=True, close_on_eof=True):
        self.keep = keep
        self.close_on_eof = close_on_eof
        self.data = bytearray()
        self.count = 0
        self.sha = hashlib.sha256()
        self.on_data = None
        self.eof = defer.Deferred()
        self.lost = defer.Deferred()
        self.gone = False
        self.write_closed = False

    def dataReceived(self, data):
        self.count += len(data)
        if self.keep:
            self.data += data
        else:
            self.sha.update(data)
        if self.on_data is not None:
            self.on_data(self)

    def readConnectionLost(self):
        self.eof.callback(None)
        if self.close_on_eof or self.write_closed:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        self.write_closed = True
        if self.eof.called:   # both halves are closed
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.gone = True
        if not self.eof.called:
            self.eof.callback(None)
        self.reason = reason
        self.lost.callback(None)

    def send(self, data):
        self.transport.write(data)

    def shutdown_write(self):
        self.transport.loseWriteConnection()

    async def wait_for(self, n):
        await until(lambda: self.count >= n, message="%d bytes" % n)


class Listener(object):
    """A stream listener under test."""

    def __init__(self, gateway, factory, port):
        self.gateway = gateway
        self.factory = factory
        self.port = port

    @property
    def recorder(self):
        return self.gateway.plugins.get_plugin("tests.test_stream:Recorder")

    @property
    def logged(self):
        return self.recorder.logged

    def peers(self):
        return [p for g in self.gateway.registry.groups() for p in g.peers.values()]

    def peer(self, backend):
        return next(p for p in self.peers() if p.address == backend.address)

    def session(self):
        """The only open session."""
        (s,) = self.factory.sessions
        return s


class StreamTestCase(unittest.TestCase):
    """Backends, a stream listener and clients; all closed afterwards."""

    timeout = 15

    def setUp(self):
        self._baseline = set(reactor.getReaders()) | set(reactor.getWriters())
        self.addCleanup(self._wait_quiet)
        self._backends = []
        self._clients = []
        self._listeners = []

    async def _wait_quiet(self):
        for c in self._clients:
            if not c.gone:
                c.transport.abortConnection()
        for c in self._clients:
            await c.lost
        for listener in self._listeners:
            await listener.port.stopListening()
        for b in self._backends:
            await b.port.stopListening()
            for conn in b.connections:
                if conn.transport.connected:
                    conn.transport.abortConnection()
        for b in self._backends:
            for conn in b.connections:
                if not conn.closed.called:
                    await conn.closed
        for listener in self._listeners:
            await listener.gateway.stop()

        def leftover():
            now = set(reactor.getReaders()) | set(reactor.getWriters())
            return now - self._baseline - set(getattr(reactor, "_internalReaders", ()))
        try:
            await until(lambda: not leftover(), message="the reactor to be clean")
        except AssertionError:
            raise AssertionError("left open: %r" % (leftover(),))
        for listener in self._listeners:
            self.assertEqual(listener.factory.open_connections, 0)
            leaked = {p.address: p.active for p in listener.peers() if p.active}
            self.assertEqual(leaked, {}, "peer counts not back to 0")

    def backend(self, kind="echo", **kw):
        b = Backend(kind, **kw)
        b.port = reactor.listenTCP(0, b, interface="127.0.0.1")
        self._backends.append(b)
        return b

    def closed_port(self):
        """A loopback port nobody listens on (connections are refused)."""
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        number = port.getHost().port
        port.stopListening()
        return "127.0.0.1:%d" % number

    def black_hole(self):
        """A loopback port whose accept queue is full: connecting hangs."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        fillers = []
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(s.getsockname())
            fillers.append(c)

        def close():
            for c in fillers:
                c.close()
            s.close()
        self.addCleanup(close)
        return "127.0.0.1:%d" % s.getsockname()[1]

    async def listener(self, peers=(), group="db", registry=None, plugins=None,
                       **stream):
        """
        Start a stream listener for ``group`` whose static peers are
        ``peers`` (backends, ``"host:port"`` or ``(backend, weight)``).
        """
        members = []
        for m in peers:
            weight = 1
            if isinstance(m, tuple):
                m, weight = m
            addr = m.address if isinstance(m, Backend) else m
            host, port = addr.rsplit(":", 1)
            members.append({"host": host, "port": int(port), "weight": weight})
        stream = dict({"listen": "tcp:0:interface=127.0.0.1", "group": group}, **stream)
        cfg = validate_config({
            "upstreams": {group: {"peers": members}} if members else {},
            "plugins": list(plugins if plugins is not None else ["least_conn"]) + [RECORDER],
            "streams": [stream],
        })
        gateway = Gateway(cfg, reactor, build_plugin_manager(cfg, entry_points=[]),
                          registry=registry)
        await gateway.start()
        factory = StreamFactory(gateway, cfg["streams"][0])
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        listener = Listener(gateway, factory, port)
        self._listeners.append(listener)
        return listener

    async def connect(self, listener, keep=True, close_on_eof=True):
        client = Client(keep, close_on_eof)
        await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", listener.port.getHost().port), client)
        self._clients.append(client)
        return client

    async def logged(self, listener, n=1):
        """Wait until ``stream_log`` ran ``n`` times; the contexts."""
        await until(lambda: len(listener.logged) >= n, message="%d stream_log calls" % n)
        await turns()     # a second call for the same session would come now
        self.assertEqual(len(listener.logged), n)
        self.assertEqual(len({id(c) for c in listener.logged}), n)
        return listener.logged


# -- the pipe ---------------------------------------------------------------------------


class PipeTests(StreamTestCase):

    async def test_echo(self):
        """Bytes go both ways; a clean close is logged once with the counts."""
        echo = self.backend()
        listener = await self.listener([echo])
        client = await self.connect(listener)
        client.send(b"hello")
        await client.wait_for(5)
        client_port = client.transport.getHost().port
        self.assertEqual(bytes(client.data), b"hello")
        self.assertEqual(listener.peer(echo).active, 1)
        self.assertEqual(listener.peer(echo).as_dict()["conn_count"], 1)
        client.send(b" world")
        await client.wait_for(11)
        client.transport.loseConnection()
        (ctx,) = await self.logged(listener)
        self.assertIsInstance(ctx, StreamContext)
        self.assertEqual((ctx.bytes_received, ctx.bytes_sent), (11, 11))
        self.assertEqual((ctx.upstream_bytes_sent, ctx.upstream_bytes_received), (11, 11))
        self.assertEqual((ctx.reason, ctx.error, ctx.status), ("client_closed", None, 200))
        self.assertEqual(ctx.upstream_addr, echo.address)
        self.assertEqual(ctx.client_addr, "127.0.0.1")
        self.assertEqual(ctx.client_port, client_port)
        self.assertEqual(ctx.server_port, listener.port.getHost().port)
        self.assertEqual(ctx.route, "db")
        self.assertIsNone(ctx.request)
        self.assertGreaterEqual(ctx.session_time(), 0)
        self.assertGreaterEqual(ctx.upstream_connect_time(), 0)
        self.assertEqual(listener.peer(echo).active, 0)
        self.assertEqual(listener.peer(echo).total, 1)
        await until(lambda: echo.open == 0)

    async def test_upload_to_slow_sink_is_bounded(self):
        """
        32 MiB to a sink that stops reading, then reads slowly: the proxy
        stops reading the client while its buffer towards the sink is full,
        so the buffer stays bounded; the client's FIN then reaches the sink,
        whose answer comes back on the half-closed connection.
        """
        size = 32 * MiB
        sink = self.backend("sink")
        listener = await self.listener([sink])
        client = await self.connect(listener)
        await until(lambda: sink.open == 1)
        session = listener.session()
        seen = {"max": 0}

        def stall(conn):
            # stop reading at once: everything backs up to the client
            sink.on_data = None
            conn.transport.pauseProducing()
        sink.on_data = stall

        sent = defer.Deferred()

        @implementer(IPushProducer)
        class Upload(object):
            blocks = pattern(size)
            paused = False

            def resumeProducing(self):
                self.paused = False
                while not self.paused and self.blocks:
                    client.send(self.blocks.pop())
                if not self.blocks and not sent.called:
                    client.transport.unregisterProducer()
                    client.shutdown_write()
                    sent.callback(None)

            def pauseProducing(self):
                self.paused = True

            def stopProducing(self):
                self.blocks = []
        up = Upload()
        client.transport.registerProducer(up, True)
        up.resumeProducing()

        await until(lambda: session.reader.paused and up.paused,
                    message="the proxy and the client to pause")
        await turns()
        self.assertTrue(session.reader.paused)
        self.assertNotIn(session.transport, reactor.getReaders())
        self.assertLess(buffered(session.upstream.transport), 3 * 65536)
        received_while_stalled = session.ctx.bytes_received
        self.assertLess(received_while_stalled, size // 2)

        def slow(conn):
            seen["max"] = max(seen["max"], buffered(session.upstream.transport))
            if conn.count // MiB != (conn.count - 65536) // MiB:
                conn.transport.pauseProducing()
                reactor.callLater(0.001, conn.transport.resumeProducing)
        sink.on_data = slow
        sink.connections[0].transport.resumeProducing()
        await sent
        await client.lost
        self.assertEqual(bytes(client.data), b"%d %s\n" % (size, digest(size).encode()))
        self.assertLess(seen["max"], 3 * 65536)
        (ctx,) = await self.logged(listener)
        self.assertEqual(ctx.bytes_received, size)
        self.assertEqual(ctx.upstream_bytes_sent, size)
        self.assertEqual(ctx.bytes_sent, len(client.data))
        self.assertEqual(ctx.reason, "client_closed")

    async def test_download_to_slow_reader_is_bounded(self):
        """
        32 MiB from the upstream to a client that stops reading, then reads
        slowly: the upstream is not read while the client's buffer is full.
        """
        size = 32 * MiB
        source = self.backend("source", size=size)
        listener = await self.listener([source])
        client = await self.connect(listener, keep=False, close_on_eof=False)
        seen = {"max": 0}

        def stall(c):
            client.on_data = None
            c.transport.pauseProducing()
        client.on_data = stall
        await until(lambda: client.count and listener.factory.sessions
                    and listener.session().up_reader.paused,
                    message="the proxy to pause the upstream")
        session = listener.session()
        producer = source.connections[0].transport.producer
        await until(lambda: producer.paused, message="the source to pause")
        await turns()
        self.assertTrue(session.up_reader.paused)
        self.assertNotIn(session.upstream.transport, reactor.getReaders())
        self.assertLess(buffered(session.transport), 3 * 65536)
        self.assertLess(session.ctx.bytes_sent, size // 2)

        def slow(c):
            seen["max"] = max(seen["max"], buffered(session.transport))
            if c.count // MiB != (c.count - 65536) // MiB:
                c.transport.pauseProducing()
                reactor.callLater(0.001, c.transport.resumeProducing)
        client.on_data = slow
        client.transport.resumeProducing()
        await client.eof
        self.assertEqual(client.count, size)
        self.assertEqual(client.sha.hexdigest(), digest(size))
        self.assertLess(seen["max"], 3 * 65536)
        # the upstream's FIN came through; the client may still talk
        self.assertFalse(client.gone)
        client.transport.loseConnection()
        (ctx,) = await self.logged(listener)
        self.assertEqual((ctx.bytes_sent, ctx.upstream_bytes_received), (size, size))
        self.assertEqual((ctx.reason, ctx.status), ("upstream_closed", 200))

    async def test_client_half_close(self):
        """The client's FIN reaches the upstream; its reply still comes back."""
        echo = self.backend(reply_after_eof=b"bye\n")
        listener = await self.listener([echo])
        client = await self.connect(listener)
        client.send(b"abc")
        await client.wait_for(3)
        client.shutdown_write()
        await until(lambda: echo.connections and echo.connections[0].eof,
                    message="the FIN at the upstream")
        await client.eof
        self.assertEqual(bytes(client.data), b"abcbye\n")
        await client.lost
        (ctx,) = await self.logged(listener)
        self.assertEqual((ctx.bytes_received, ctx.bytes_sent), (3, 7))
        self.assertEqual(ctx.reason, "client_closed")

    async def test_upstream_half_close(self):
        """The upstream's FIN reaches the client, which can still send."""
        greet = self.backend("greet")
        listener = await self.listener([greet])
        client = await self.connect(listener, close_on_eof=False)
        await client.eof
        self.assertEqual(bytes(client.data), b"hello\n")
        self.assertFalse(client.gone)
        client.send(b"after fin")
        await until(lambda: greet.connections[0].count == 9)
        client.shutdown_write()
        await client.lost
        (ctx,) = await self.logged(listener)
        self.assertEqual((ctx.bytes_received, ctx.bytes_sent), (9, 6))
        self.assertEqual(ctx.reason, "upstream_closed")

    async def test_bytes_before_connect_are_kept(self):
        """
        What the client sends while the upstream is not connected yet (here
        ``stream_access`` waits) is kept, up to a limit past which the
        client is not read, and then sent in order.
        """
        echo = self.backend()
        listener = await self.listener([echo])
        gate = defer.Deferred()
        listener.recorder.fns["access"] = lambda ctx: gate
        client = await self.connect(listener, keep=False)
        size = 4 * MiB
        for block in pattern(size):
            client.send(block)
        await until(lambda: listener.factory.sessions)
        session = listener.session()
        await until(lambda: session.reader.paused, message="the client paused")
        await turns()
        self.assertLess(session.pending_size, PENDING_LIMIT + 2 * 65536)
        self.assertEqual(echo.open, 0)
        gate.callback(None)
        await client.wait_for(size)
        self.assertEqual(client.sha.hexdigest(), digest(size))
        client.transport.loseConnection()
        (ctx,) = await self.logged(listener)
        self.assertEqual(ctx.bytes_received, size)

    async def test_client_reset_aborts_upstream(self):
        echo = self.backend()
        listener = await self.listener([echo])
        client = await self.connect(listener)
        client.send(b"x")
        await client.wait_for(1)
        reset(client.transport)
        await echo.connections[0].closed
        (ctx,) = await self.logged(listener)
        self.assertEqual((ctx.reason, ctx.error), ("client_reset", "client_reset"))
        self.assertEqual(listener.peer(echo).active, 0)

    async def test_upstream_reset_closes_client(self):
        echo = self.backend()
        listener = await self.listener([echo])
        client = await self.connect(listener)
        client.send(b"x")
        await client.wait_for(1)
        reset(echo.connections[0].transport)
        await client.lost
        (ctx,) = await self.logged(listener)
        self.assertEqual(ctx.reason, "upstream_reset")
        self.assertEqual(ctx.status, 200)


class TLSTests(StreamTestCase):
    """A listener terminating TLS (no half-close there: a FIN closes)."""

    if ssl is None:
        skip = "pyOpenSSL is not installed"

    async def tls_listener(self, peers):
        import twisted.test
        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        with open(pem, "rb") as f:
            server_options = ssl.PrivateCertificate.loadPEM(f.read()).options()
        listener = await self.listener(peers)
        await listener.port.stopListening()
        listener.port = reactor.listenSSL(0, listener.factory, server_options,
                                          interface="127.0.0.1")
        return listener

    async def tls_connect(self, listener):
        client = Client()
        made = defer.Deferred()
        client.connectionMade = lambda: made.callback(None)
        reactor.connectSSL("127.0.0.1", listener.port.getHost().port,
                           ClientFactory.forProtocol(lambda: client), ssl.CertificateOptions())
        await made
        self._clients.append(client)
        return client

    async def test_upstream_fin_closes(self):
        greet = self.backend("greet")
        listener = await self.tls_listener([greet])
        client = await self.tls_connect(listener)
        await client.lost
        self.assertEqual(bytes(client.data), b"hello\n")
        (ctx,) = await self.logged(listener)
        self.assertEqual(ctx.reason, "upstream_closed")

    async def test_client_close(self):
        echo = self.backend()
        listener = await self.tls_listener([echo])
        client = await self.tls_connect(listener)
        client.send(b"secret")
        await client.wait_for(6)
        self.assertEqual(bytes(client.data), b"secret")
        client.transport.loseConnection()
        await client.lost
        (ctx,) = await self.logged(listener)
        self.assertEqual((ctx.reason, ctx.bytes_received, ctx.bytes_sent),
                         ("client_closed", 6, 6))


# -- peers, retries and timeouts ---------------------------------------------------------------


def stream_harness(peers, servers, group="db", **stream):
    """A :class:`tproxy.testing.StreamHarness`: a listener of ``group``
    (``peers``: addresses or ``(address, weight)``) with least_conn."""
    spec = [p if isinstance(p, str) else
            {"host": p[0].split(":")[0], "port": int(p[0].split(":")[1]), "weight": p[1]}
            for p in peers]
    return StreamHarness(config={"upstreams": {group: {"peers": spec}} if spec else {}},
                         stream=dict({"group": group}, **stream),
                         plugins=["least_conn"], servers=servers)


A, B, C = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"


def actives(h, group="db"):
    return {p.address: p.active for p in h.registry.group(group).peers.values()}


class BalancingTests(SynchronousTestCase):
    """Choosing, retrying and timing out peers (on the fake clock)."""

    def test_refused_peer_is_skipped(self):
        """A peer that refuses the connection is released and the next one tried."""
        h = stream_harness([A, B], {B: StreamServer(echo=True)})   # A refuses
        client = h.connect()
        client.send(b"ping")
        self.assertEqual(client.received, b"ping")
        client.close()
        [ctx] = h.logged
        self.assertEqual([p.address for p in ctx.tried], [A, B])
        self.assertEqual((ctx.upstream_addr, ctx.reason), (B, "client_closed"))
        self.assertEqual(actives(h), {A: 0, B: 0})
        self.assertEqual(h.registry.group("db").peers[("127.0.0.1", 7002)].total, 1)

    def test_every_peer_refuses(self):
        """No peer answers: ``connect_failed``, 502, every peer tried once
        (``tries`` 0, the default)."""
        h = stream_harness([A, B, C, "127.0.0.1:7004"], {})
        client = h.connect()
        client.send(b"lost")
        self.assertEqual((client.received, client.closed), (b"", True))
        [ctx] = h.logged
        self.assertEqual(sorted(p.address for p in ctx.tried), [A, B, C, "127.0.0.1:7004"])
        self.assertEqual((ctx.reason, ctx.status, ctx.error),
                         ("connect_failed", 502, "connect_failed"))

    def test_tries_limit(self):
        """``tries`` peers at most."""
        echo = StreamServer(echo=True)
        h = stream_harness([A, B, C, "127.0.0.1:7004"], {"127.0.0.1:7004": echo}, tries=2)
        client = h.connect()
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((len(ctx.tried), ctx.reason), (2, "connect_failed"))
        self.assertEqual(echo.connections, [])

    def test_connect_timeout(self):
        """A peer that does not accept in time is given up (and the next
        tried); the last one timing out is ``connect_timeout``."""
        h = stream_harness([A, B], {A: UNREACHABLE, B: StreamServer(echo=True)},
                           timeouts={"connect": 0.25})
        client = h.connect()
        client.send(b"late")
        self.assertEqual(client.received, b"")
        h.advance(0.25)
        self.assertEqual(client.received, b"late")
        client.close()
        [ctx] = h.logged
        self.assertEqual([p.address for p in ctx.tried], [A, B])
        self.assertEqual(ctx.upstream_connect_time(), 0.25)

        h = stream_harness([A], {A: UNREACHABLE}, tries=1, timeouts={"connect": 0.125})
        client = h.connect()
        h.advance(0.125)
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status), ("connect_timeout", 502))

    def test_idle_timeout(self):
        """No byte either way for ``timeouts.idle``: both connections are
        closed; activity keeps them open."""
        echo = StreamServer(echo=True)
        h = stream_harness([A], {A: echo}, timeouts={"idle": 0.25})
        client = h.connect()
        for _ in range(3):
            client.send(b"x")
            h.advance(0.125)
        # the last byte at 0.25: closed at 0.5, not before
        h.advance(0.125 - 2 ** -7)
        self.assertFalse(client.closed)
        h.advance(2 ** -7)
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.error, ctx.status),
                         ("idle_timeout", "idle_timeout", 200))
        self.assertEqual(ctx.session_time(), 0.5)
        self.assertTrue(echo.connections[0].closed)

    def test_no_peer(self):
        h = stream_harness([], {}, group="nobody")
        client = h.connect()
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status, ctx.tried), ("no_peer", 502, ()))

    def test_least_conn_over_long_lived_connections(self):
        """Open connections are what least_conn counts; weights are honoured."""
        servers = {a: StreamServer(echo=True) for a in (A, B, C)}
        h = stream_harness([A, B, (C, 2)], servers)
        clients = [h.connect() for _ in range(8)]
        self.assertEqual([len(servers[a].connections) for a in (A, B, C)], [2, 2, 4])
        self.assertEqual(actives(h), {A: 2, B: 2, C: 4})
        # close A's two: the next two connections go to A
        for client in clients:
            if client.context.peer.address == A:
                client.close()
        self.assertEqual(actives(h)[A], 0)
        clients += [h.connect() for _ in range(2)]
        self.assertEqual(actives(h), {A: 2, B: 2, C: 4})
        for client in clients:
            client.close()
        self.assertEqual(len(h.logged), 10)
        self.assertEqual([h.registry.group("db").peers[("127.0.0.1", int(a[-4:]))].total
                          for a in (A, B, C)], [4, 2, 4])

    def test_registered_peers_and_ttl(self):
        """Run-time registrations serve streams too, until their TTL passes."""
        h = stream_harness([], {A: StreamServer(echo=True)}, group="cache")
        h.registry.register("cache", "127.0.0.1", 7001)
        client = h.connect()
        client.send(b"hi")
        self.assertEqual(client.received, b"hi")
        client.close()
        h.advance(h.registry.ttl + 1)
        client = h.connect()
        self.assertTrue(client.closed)
        self.assertEqual([c.reason for c in h.logged], ["client_closed", "no_peer"])


# -- phases ---------------------------------------------------------------------------------------


def recorded_harness(peers=(A,), servers=None, plugins=("least_conn",), group="db",
                     **stream):
    """A stream harness with the :class:`Recorder` plugin (``h.recorder``)
    after ``plugins``."""
    if servers is None:
        servers = {a: StreamServer(echo=True) for a in peers}
    h = StreamHarness(config={"upstreams": {group: {"peers": list(peers)}} if peers else {}},
                      stream=dict({"group": group}, **stream),
                      plugins=list(plugins) + [RECORDER], servers=servers)
    h.recorder = h.plugin(RECORDER)
    return h


class PhaseTests(SynchronousTestCase):
    """``stream_access``, the balancer and ``stream_log`` (on the fake clock)."""

    def test_access_refuses_with_bytes(self):
        h = recorded_harness()
        seen = []

        def deny(ctx):
            seen.append((ctx.client_addr, ctx.route))
            return b"-ERR denied\r\n"
        h.recorder.fns["access"] = deny
        client = h.connect()
        self.assertEqual((client.received, client.closed), (b"-ERR denied\r\n", True))
        self.assertEqual(seen, [("127.0.0.1", "db")])
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status, ctx.bytes_sent, ctx.peer),
                         ("access_denied", 403, 13, None))
        self.assertEqual(h.upstream_connections, [])

    def test_access_refuses_later(self):
        """An ``async`` ``stream_access`` returning ``False`` refuses; the
        bytes sent meanwhile are counted, not forwarded."""
        h = recorded_harness()

        async def deny(ctx):
            await task.deferLater(ctx.gateway.reactor, 0.25, lambda: None)
            return False
        h.recorder.fns["access"] = deny
        client = h.connect()
        client.send(b"data")
        self.assertFalse(client.closed)
        h.advance(0.25)
        self.assertEqual((client.received, client.closed), (b"", True))
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.bytes_received), ("access_denied", 4))
        self.assertEqual(h.upstream_connections, [])

    def test_client_fin_before_connect(self):
        """A FIN that arrives before the upstream is connected (here
        ``stream_access`` waits) follows the bytes; the upstream's answer
        still reaches the half-closed client."""
        h = recorded_harness(servers={A: StreamServer(close_on_eof=False)})
        gate = defer.Deferred()
        h.recorder.fns["access"] = lambda ctx: gate
        client = h.connect(close_on_eof=False)
        client.send(b"x" * 1000)
        client.half_close()
        [session] = h.factory.sessions
        self.assertTrue(session.client_eof)
        self.assertEqual(h.upstream_connections, [])
        gate.callback(None)
        h.flush()
        [up] = h.upstream_connections
        self.assertEqual((up.received, up.eof), (b"x" * 1000, True))
        up.send(b"1000\n")
        up.close()
        self.assertEqual((client.received, client.eof), (b"1000\n", True))
        client.close()
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.bytes_received, ctx.bytes_sent),
                         ("client_closed", 1000, 5))

    def test_access_may_reroute(self):
        """``stream_access`` may change ``ctx.route``: the balancer follows it."""
        one, two = StreamServer(echo=True), StreamServer(echo=True)
        h = recorded_harness([A], {A: one, B: two})
        h.registry.add_static("db-replica", "127.0.0.1", 7002)

        def reroute(ctx):
            ctx.route = "db-replica"
        h.recorder.fns["access"] = reroute
        client = h.connect()
        client.send(b"r")
        self.assertEqual(client.received, b"r")
        self.assertEqual((len(one.connections), len(two.connections)), (0, 1))

    def test_plugin_error(self):
        h = recorded_harness()
        h.recorder.fns["access"] = lambda ctx: 1 / 0
        client = h.connect()
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status), ("plugin_error", 500))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_access_other_values(self):
        """A ``stream_access`` result other than ``None``, ``False`` or bytes
        (a ``str`` meant as the refusal, ``True``), at once or awaited, is a
        plugin error: the connection is closed, not let through."""
        for value in ("-ERR denied\r\n", True, 403):
            for later in (False, True):
                h = recorded_harness()
                fn = (lambda ctx, v=value: defer.succeed(v)) if later else \
                    (lambda ctx, v=value: v)
                h.recorder.fns["access"] = fn
                client = h.connect()
                self.assertEqual((client.received, client.closed), (b"", True), value)
                [ctx] = h.logged
                self.assertEqual((ctx.reason, ctx.status), ("plugin_error", 500))
                self.assertEqual(h.upstream_connections, [])
                [error] = self.flushLoggedErrors(TypeError)
                self.assertIn("a stream_access implementation returns None, False, bytes",
                              str(error.value))

    def test_stream_log_errors_are_contained(self):
        h = recorded_harness(plugins=["least_conn", "tests.test_stream:BrokenLog"])
        client = h.connect()
        client.close()
        self.assertEqual(len(h.logged), 1)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_http_hooks_do_not_run_for_streams(self):
        """``access``/``log`` (HTTP) implementations never see a stream."""
        h = recorded_harness(plugins=["registry", "router", "least_conn", "access_log",
                                      "tests.test_stream:HttpOnly"])
        client = h.connect()
        client.send(b"z")
        self.assertEqual(client.received, b"z")
        client.close()
        self.assertEqual(len(h.logged), 1)
        self.assertEqual(h.plugin("tests.test_stream:HttpOnly").calls, [])

    def test_access_log_line(self):
        """The built-in access_log writes one JSON line per TCP connection."""
        import json
        h = recorded_harness(plugins=["least_conn", "access_log"])
        client = h.connect()
        client.send(b"hello")
        client.close()
        lines = [json.loads(str(e["access_log"])) for e in h.events
                 if e.get("log_namespace") == "tproxy.builtins.access_log"]
        self.assertEqual(len(lines), 1)
        line = lines[0]
        self.assertEqual((line["bytes_received"], line["bytes_sent"], line["status"],
                          line["route"], line["reason"], line["error"], line["upstream_addr"]),
                         (5, 5, 200, "db", "client_closed", None, A))


class BrokenLog(object):
    """A ``stream_log`` that raises."""

    def __init__(self, settings):
        pass

    @hookimpl
    def stream_log(self, ctx):
        raise KeyError("broken")


class HttpOnly(object):
    """HTTP ``access`` and ``log``, recording calls."""

    def __init__(self, settings):
        self.calls = []

    @hookimpl
    def access(self, ctx):
        self.calls.append("access")

    @hookimpl
    def log(self, ctx):
        self.calls.append("log")


# -- PROXY protocol -------------------------------------------------------------------------


class ProxyProtocolTests(SynchronousTestCase):
    """The PROXY protocol header, before the client's bytes."""

    def first_bytes(self, version):
        h = recorded_harness(proxy_protocol=version)
        client = h.connect(client="192.0.2.1", port=56324)
        client.send(b"PING\r\n")
        data = h.upstream_connections[0].received
        client.close()
        [ctx] = h.logged
        self.assertEqual((ctx.upstream_bytes_sent, ctx.bytes_received), (len(data), 6))
        return data

    def test_v1(self):
        self.assertEqual(self.first_bytes("v1"),
                         b"PROXY TCP4 192.0.2.1 127.0.0.1 56324 6380\r\nPING\r\n")

    def test_v2(self):
        expected = (b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
                    b"\x21\x11\x00\x0c"
                    b"\xc0\x00\x02\x01\x7f\x00\x00\x01"
                    + struct.pack("!HH", 56324, 6380) + b"PING\r\n")
        self.assertEqual(self.first_bytes("v2"), expected)


class ProxyProtocolHeaderTests(unittest.TestCase):

    def test_v1_ipv4(self):
        self.assertEqual(v1_header(("192.0.2.1", 56324), ("198.51.100.7", 443)),
                         b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n")

    def test_v1_ipv6(self):
        self.assertEqual(
            v1_header(("2001:db8::1", 1), ("2001:0db8:0:0:0:0:0:2", 65535)),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n")

    def test_v1_mapped_ipv4(self):
        self.assertEqual(v1_header(("::ffff:10.0.0.1", 5), ("::ffff:10.0.0.2", 6)),
                         b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n")

    def test_v1_unknown(self):
        self.assertEqual(v1_header((None, None), ("127.0.0.1", 80)), b"PROXY UNKNOWN\r\n")
        self.assertEqual(v1_header(None, None), b"PROXY UNKNOWN\r\n")

    def test_v2_ipv4(self):
        self.assertEqual(
            v2_header(("192.0.2.1", 56324), ("198.51.100.7", 443)),
            V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 1, 198, 51, 100, 7])
            + b"\xdc\x04\x01\xbb")

    def test_v2_ipv6(self):
        h = v2_header(("2001:db8::1", 80), ("::1", 8080))
        self.assertEqual(len(h), 52)
        self.assertEqual(h[:16], V2_SIGNATURE + b"\x21\x21\x00\x24")
        self.assertEqual(h[16:32], socket.inet_pton(socket.AF_INET6, "2001:db8::1"))
        self.assertEqual(h[32:48], socket.inet_pton(socket.AF_INET6, "::1"))
        self.assertEqual(h[48:], b"\x00\x50\x1f\x90")

    def test_v2_unknown(self):
        self.assertEqual(v2_header(None, None), V2_SIGNATURE + b"\x21\x00\x00\x00")

    def test_unknown_version(self):
        self.assertRaises(ValueError, header, "v3", None, None)


# -- configuration --------------------------------------------------------------------------------


class ConfigTests(unittest.TestCase):

    def test_defaults(self):
        cfg = validate_config({"streams": [{"listen": "tcp:6380", "group": "redis"}]})
        self.assertEqual(cfg["streams"], [{
            "listen": "tcp:6380", "group": "redis", "proxy_protocol": None,
            "tries": 0, "timeouts": {"connect": 60, "idle": 600}}])
        self.assertEqual(validate_config({})["streams"], [])

    def test_errors(self):
        cases = [
            ({"listen": "tcp:6380"}, "streams[0]: missing key 'group'"),
            ({"group": "x"}, "streams[0]: missing key 'listen'"),
            ({"listen": "tcp:6380", "group": "a b"}, "streams[0].group: "),
            ({"listen": "tcp:6380", "group": "x", "proxy_protocol": "v3"},
             'streams[0].proxy_protocol: "v3" is not one of null, "v1", "v2"'),
            ({"listen": "tcp:6380", "group": "x", "tries": -1},
             "streams[0].tries: -1 is out of range (must be at least 0)"),
            ({"listen": "tcp:6380", "group": "x", "timeouts": {"idle": 0}},
             "streams[0].timeouts.idle: 0 is out of range (must be greater than 0)"),
            ({"listen": "tcp:6380", "group": "x", "timeouts": {"read": 1}},
             "streams[0].timeouts.read: unknown key"),
            ({"listen": "tcp:99999", "group": "x"}, "streams[0].listen: bad endpoint"),
            ({"listen": "tcp:6380", "group": "x", "extra": 1},
             "streams[0].extra: unknown key"),
        ]
        for stream, message in cases:
            with self.assertRaises(ConfigError) as e:
                validate_config({"streams": [stream]}, source="c.json")
            self.assertIn("c.json: " + message, str(e.exception), stream)

    def test_example(self):
        from tproxy.config import load_config
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "etc", "redis-stream.json")
        cfg = load_config(path)
        self.assertEqual([(s["listen"], s["group"]) for s in cfg["streams"]],
                         [("tcp:6380:interface=127.0.0.1", "redis")])
        self.assertEqual(cfg["upstreams"]["redis"]["peers"],
                         [{"host": "127.0.0.1", "port": 6379, "weight": 1, "max_conns": 0}])


# -- docs/streams.md ------------------------------------------------------------------------------

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "docs", "streams.md")


def doc_blocks():
    import re
    with open(DOCS, encoding="utf-8") as f:
        return re.findall(r"^```python\n(.*?)^```", f.read(), re.S | re.M)


class DocsTests(SynchronousTestCase):
    """The code of docs/streams.md compiles, and its example plugin works."""

    def test_blocks_compile(self):
        blocks = doc_blocks()
        self.assertGreaterEqual(len(blocks), 2)
        for block in blocks:
            compile(block, DOCS, "exec")

    def _example(self):
        import sys
        import types
        [code] = [b for b in doc_blocks() if "class Plugin" in b]
        module = types.ModuleType("tests._streams_doc_plugin")
        exec(compile(code, DOCS, "exec"), module.__dict__)
        sys.modules[module.__name__] = module
        self.addCleanup(sys.modules.pop, module.__name__, None)
        return module.__name__

    def test_connection_limit_example(self):
        name = self._example()
        h = recorded_harness(plugins=[
            {"name": name, "settings": {"allow": ["127.0.0.0/8"], "per_client": 1}},
            "least_conn"])
        first = h.connect()
        first.send(b"1")
        self.assertEqual(first.received, b"1")
        second = h.connect()
        self.assertEqual((second.received, second.closed),
                         (b"-ERR too many connections\r\n", True))
        first.close()
        self.assertEqual(len(h.logged), 2)
        third = h.connect()
        third.send(b"3")
        self.assertEqual(third.received, b"3")
        third.close()
        self.assertEqual(len(h.logged), 3)

    def test_allow_list_example(self):
        name = self._example()
        h = recorded_harness(plugins=[
            {"name": name, "settings": {"allow": ["10.0.0.0/8"]}}, "least_conn"])
        client = h.connect()
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, client.received), ("access_denied", b""))
