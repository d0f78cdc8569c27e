# -*- test-case-name: tests.test_upgrade -*-
"""
Tests for :mod:`tproxy.http.tunnel`: ``Upgrade`` requests (WebSocket).

The lifecycle (phases, pool, counts, ``log``, timeouts) is tested on the
fake clock through :mod:`tproxy.testing`; the tunnel itself with a real
WebSocket client and server (the ``websockets`` library's threaded API) over
loopback sockets.
"""

import os
import threading

from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from tproxy import hookimpl
from tproxy.context import Response
from tproxy.http.tunnel import upgrade_offer
from tproxy.testing import Harness

from tests.helpers import ProxyTestCase, turns, until

try:
    import websockets
    from websockets.sync.client import connect as ws_connect
    from websockets.sync.server import serve as ws_serve
except ImportError:   # pragma: no cover - the test extra is not installed
    websockets = None


HANDSHAKE = (b"GET /ws/chat HTTP/1.1\r\nHost: example.com\r\n"
             b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             b"Sec-WebSocket-Version: 13\r\n\r\n")

SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
          b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


class _StubConnection(Protocol):
    """One connection to :class:`StubUpgradeServer`."""

    def connectionMade(self):
        self.buf = b""
        self.switched = False
        self.factory.connections.append(self)

    def dataReceived(self, data):
        if self.switched:
            self.factory.tunneled.append(data)
            self.transport.write(b"echo:" + data)
            return
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.factory.heads.append(head + b"\r\n\r\n")
            upgrade = b"\r\nupgrade:" in head.lower()
            if upgrade and self.factory.answer == 101:
                self.switched = True
                self.transport.write(SWITCH + self.factory.greeting)
                if self.buf:
                    self.dataReceived(b"")
                return
            self.transport.write(b"HTTP/1.1 %d Nope\r\nContent-Length: 4\r\n\r\nnope"
                                 % (self.factory.answer if upgrade else 200))

    def connectionLost(self, reason):
        self.factory.closed += 1
        self.factory.reasons.append(reason.type)


class StubUpgradeServer(Factory):
    """
    A stub upstream for the harness: answers an upgrade request with
    ``answer`` (``101``, then echoes every read prefixed with ``echo:``),
    any other request with ``200``.
    """

    protocol = _StubConnection

    def __init__(self, answer=101, greeting=b""):
        self.answer = answer
        self.greeting = greeting
        self.connections = []
        self.heads = []
        self.tunneled = []
        self.closed = 0
        self.reasons = []   # (the exception type each connection ended with)

    def buildProtocol(self, addr):
        p = self.protocol()
        p.factory = self
        return p


class Auth(object):
    """Refuses requests without ``X-Key: k`` in ``access``."""

    @hookimpl
    def access(self, ctx):
        if ctx.request.headers.get("x-key") != "k":
            return Response.json(401, {"error": "who are you"})


class Stamp(object):
    """Adds a field to every response head it sees (and records it)."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def header_filter(self, ctx, response):
        self.seen.append((response.status, response.from_upstream))
        response.headers.set("X-Seen", "yes")


def harness(server, plugins=(), **proxy):
    return Harness({"upstreams": {"ws": {"peers": ["10.0.0.1:80"]}},
                    "proxy": proxy},
                   plugins=["router", "least_conn"] + list(plugins),
                   servers={"10.0.0.1:80": server})


class LifecycleTests(SynchronousTestCase):
    """The handshake and the tunnel through the phases, on the fake clock."""

    def test_switch_and_pipe(self):
        """A 101 reaches the client with the upgrade fields; bytes go both
        ways, unparsed; the request went up with its upgrade fields."""
        server = StubUpgradeServer(greeting=b"hi")
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        head, _, rest = c.received.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nConnection: upgrade", head)
        self.assertIn(b"\r\nUpgrade: websocket", head)
        self.assertIn(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head)
        self.assertEqual(rest, b"hi")
        up = server.heads[0].lower()
        self.assertIn(b"\r\nconnection: upgrade\r\n", up)
        self.assertIn(b"\r\nupgrade: websocket\r\n", up)
        self.assertIn(b"sec-websocket-key: dghlihnhbxbszsbub25jzq==", up)
        c.send(b"GET / HTTP/1.1\r\n\r\n")   # not HTTP any more: passed as bytes
        self.assertEqual(server.tunneled, [b"GET / HTTP/1.1\r\n\r\n"])
        self.assertTrue(c.received.endswith(b"hiecho:GET / HTTP/1.1\r\n\r\n"))
        self.assertEqual(h.contexts, [])           # log: not yet
        (peer,) = h.registry.group("ws").peers.values()
        self.assertEqual(peer.active, 1)           # held for the tunnel's life
        c.close()
        self.assertEqual(len(h.contexts), 1)       # log once, at the end
        ctx = h.contexts[0]
        self.assertEqual(ctx.status, 101)
        self.assertIsNone(ctx.error)
        self.assertEqual(ctx.upgrade, "websocket")
        self.assertEqual(ctx.upgrade_bytes_up, 18)
        self.assertEqual(ctx.upgrade_bytes_down, 2 + 5 + 18)
        self.assertEqual(ctx.bytes_sent, len(head) + 4 + 25)
        self.assertEqual(peer.active, 0)
        self.assertEqual(server.closed, 1)
        self.assertEqual(h.factory.open_connections, 0)

    def test_upstream_closes(self):
        """The upstream closing ends the tunnel: the client connection
        closes after what the upstream sent, log runs once."""
        server = StubUpgradeServer()
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE + b"early")
        self.assertEqual(server.tunneled, [b"early"])
        server.connections[0].transport.loseConnection()
        h.flush()
        self.assertTrue(c.closed)
        self.assertTrue(c.received.endswith(b"echo:early"))
        self.assertEqual(len(h.contexts), 1)
        self.assertIsNone(h.contexts[0].error)
        (peer,) = h.registry.group("ws").peers.values()
        self.assertEqual(peer.active, 0)

    def test_early_bytes(self):
        """Bytes the client sent right behind the head, in the same read,
        go upstream after the 101, not parsed as HTTP."""
        server = StubUpgradeServer()
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE + b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(len(server.heads), 1)
        self.assertEqual(server.tunneled, [b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"])

    def test_idle_timeout(self):
        """Nothing either way for proxy.upgrade_idle_timeout: both closed
        (a FIN each, as nginx's ``proxy_read_timeout`` closes: no reset), log
        once with the error, the count released."""
        server = StubUpgradeServer()
        h = harness(server, upgrade_idle_timeout=30)
        c = h.connect()
        c.send(HANDSHAKE)
        h.advance(20)
        c.send(b"ping")            # traffic: the timeout counts from here
        h.advance(20)
        self.assertFalse(c.closed)
        h.advance(10.5)
        self.assertEqual((c.closed, c.reset), (True, False))
        self.assertEqual(server.reasons, [ConnectionDone])
        self.assertEqual([ctx.error for ctx in h.contexts], ["idle_timeout"])
        (peer,) = h.registry.group("ws").peers.values()
        self.assertEqual(peer.active, 0)

    def test_upstream_refuses(self):
        """A 4xx to the handshake is an ordinary response; the connection
        goes on as HTTP, and the upstream connection is not pooled."""
        server = StubUpgradeServer(answer=403)
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 403 Nope\r\n"), c.received)
        self.assertTrue(c.received.endswith(b"\r\n\r\nnope"))
        self.assertNotIn(b"Connection: close", c.received)
        self.assertEqual([ctx.status for ctx in h.contexts], [403])
        self.assertEqual(h.factory.pool.idle, {})
        self.assertEqual(server.closed, 1)
        c.send(b"GET /ws/next HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertTrue(c.received.endswith(b"HTTP/1.1 200 Nope\r\nContent-Length: 4\r\n"
                                            b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\nnope"))
        self.assertEqual([ctx.status for ctx in h.contexts], [403, 200])
        self.assertFalse(c.closed)
        (peer,) = h.registry.group("ws").peers.values()
        self.assertEqual(peer.active, 0)

    def test_refused_with_early_bytes(self):
        """Refused, with bytes already sent behind the head (meant for the
        new protocol): they are not parsed as HTTP, the connection closes."""
        server = StubUpgradeServer(answer=400)
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE + b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertIn(b"Connection: close", c.received)
        self.assertTrue(c.closed)
        self.assertEqual(len(server.heads), 1)
        self.assertEqual([ctx.status for ctx in h.contexts], [400])

    def test_access_applies(self):
        """access runs: a refused handshake never reaches the upstream, and
        the connection goes on as HTTP."""
        server = StubUpgradeServer()
        h = harness(server, [Auth()])
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 401 "))
        self.assertEqual(server.heads, [])
        c.send(HANDSHAKE.replace(b"\r\n\r\n", b"\r\nX-Key: k\r\n\r\n"))
        self.assertIn(b"HTTP/1.1 101 ", c.received)
        c.close()
        self.assertEqual([ctx.status for ctx in h.contexts], [401, 101])

    def test_fresh_connection(self):
        """An upgrade never takes a pooled upstream connection."""
        server = StubUpgradeServer()
        h = harness(server)
        self.assertEqual(h.request("GET", "/ws/plain").status, 200)
        self.assertEqual(sum(len(v) for v in h.factory.pool.idle.values()), 1)
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertIn(b"HTTP/1.1 101 ", c.received)
        self.assertEqual(len(server.connections), 2)
        self.assertEqual(sum(len(v) for v in h.factory.pool.idle.values()), 1)
        c.close()

    def test_header_filter_sees_101(self):
        stamp = Stamp()
        server = StubUpgradeServer()
        h = harness(server, [stamp])
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertEqual(stamp.seen, [(101, True)])   # (the upstream's head)
        self.assertIn(b"\r\nX-Seen: yes\r\n", c.received)
        c.close()
        self.assertEqual(len(h.contexts), 1)

    def test_header_filter_turns_101_down(self):
        """A header_filter that changes the 101's status: that answer, no
        tunnel, the connections closed, log once."""
        class Deny(object):
            @hookimpl
            def header_filter(self, ctx, response):
                response.status = 403
        server = StubUpgradeServer(greeting=b"hi")
        h = harness(server, [Deny()])
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 403 Forbidden\r\n"), c.received)
        self.assertTrue(c.received.endswith(b"\r\n\r\n"), c.received)
        self.assertTrue(c.closed)
        self.assertEqual(server.closed, 1)
        self.assertEqual([ctx.status for ctx in h.contexts], [403])
        (peer,) = h.registry.group("ws").peers.values()
        self.assertEqual(peer.active, 0)

    def test_other_protocol_plain(self):
        """A protocol not in proxy.upgrade_protocols: a plain request
        without the upgrade fields, and the connection goes on as HTTP (as
        nginx without the two proxy_set_header lines)."""
        server = StubUpgradeServer()
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE.replace(b"Upgrade: websocket", b"Upgrade: h2c"))
        self.assertNotIn(b"upgrade", server.heads[0].lower())
        self.assertTrue(c.received.startswith(b"HTTP/1.1 200 "))
        self.assertNotIn(b"\r\nConnection: close\r\n", c.received)
        self.assertFalse(c.closed)

    def test_configured_protocol(self):
        """Another protocol, once listed, is tunneled too."""
        server = StubUpgradeServer()
        h = harness(server, upgrade_protocols=["websocket", "h2c"])
        c = h.connect()
        c.send(HANDSHAKE.replace(b"Upgrade: websocket", b"Upgrade: h2c"))
        self.assertIn(b"\r\nupgrade: h2c\r\n", server.heads[0].lower())
        self.assertIn(b"HTTP/1.1 101 ", c.received)
        c.close()
        self.assertEqual(h.contexts[0].upgrade, "h2c")

    def test_no_peer(self):
        """No live peer: the handshake is answered 503 as any request."""
        h = Harness({"upstreams": {}}, plugins=["router", "least_conn"])
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 503 "), c.received)
        self.assertEqual(len(h.contexts), 1)

    def test_client_aborts_during_handshake(self):
        """The client goes before the upstream answered: log once, the
        upstream connection dropped, the count released."""
        server = StubUpgradeServer(answer=None)
        server.protocol = type("Silent", (_StubConnection,), {
            "dataReceived": lambda self, data: None})
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE)
        c.close()
        self.assertEqual([ctx.error for ctx in h.contexts], ["client_abort"])
        (peer,) = h.registry.group("ws").peers.values()
        self.assertEqual(peer.active, 0)

    def test_shutdown(self):
        """A stopping tproxy lets a tunnel flow (its drain waits), and
        aborts it when the time is over: log once, error "shutdown"."""
        server = StubUpgradeServer()
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE)
        drained = h.factory.drain()
        h.flush()
        self.assertNoResult(drained)
        c.send(b"still")
        self.assertTrue(c.received.endswith(b"echo:still"))
        self.assertEqual(h.factory.abort(), 1)
        h.flush()
        self.successResultOf(drained)
        self.assertEqual([ctx.error for ctx in h.contexts], ["shutdown"])
        self.assertEqual(server.closed, 1)
        (peer,) = h.registry.group("ws").peers.values()
        self.assertEqual(peer.active, 0)

    def test_101_without_upgrade_field(self):
        """A 101 without Upgrade and Connection: upgrade is invalid: 502."""
        server = StubUpgradeServer()
        server.protocol = type("Bad", (_StubConnection,), {
            "dataReceived": lambda self, data: self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n")})
        h = harness(server)
        c = h.connect()
        c.send(HANDSHAKE)
        self.assertTrue(c.received.startswith(b"HTTP/1.1 502 "), c.received)
        self.assertEqual([ctx.error for ctx in h.contexts], ["upstream_invalid"])


class OfferTests(SynchronousTestCase):
    """Which Upgrade values are tunneled, and what goes upstream."""

    def test_offer(self):
        ws = frozenset(["websocket"])
        self.assertEqual(upgrade_offer(ws, b"WebSocket", "1.1", False), b"WebSocket")
        self.assertEqual(upgrade_offer(ws, b"foo/2, websocket", "1.1", False), b"websocket")
        self.assertIsNone(upgrade_offer(ws, b"h2c", "1.1", False))
        self.assertIsNone(upgrade_offer(ws, b"", "1.1", False))
        self.assertIsNone(upgrade_offer(ws, b"websocket", "1.0", False))
        self.assertIsNone(upgrade_offer(ws, b"websocket", "1.1", True))
        self.assertIsNone(upgrade_offer(frozenset(), b"websocket", "1.1", False))


# websockets' keepalive thread joins the reader thread while the connection's
# owner does too: PyPy 3.9's threading races on two concurrent joins
# ("cannot release un-acquired lock"), so the tests' connections never ping.
NO_PING = {"ping_interval": None}


def _ws_echo_server():
    """A websockets echo server in a thread: (server, port)."""
    def echo(ws):
        for message in ws:
            ws.send(message)

    def refuse(connection, request):
        if request.path.endswith("refused"):
            return connection.respond(403, "no\n")

    server = ws_serve(echo, "127.0.0.1", 0, process_request=refuse, **NO_PING)
    # (its shutdown looks every SHUTDOWN_POLLING_INTERVAL, 0.1 s, whether the
    # connections' threads have ended: a test's cleanup waited that long)
    server.SHUTDOWN_POLLING_INTERVAL = 0.002
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.socket.getsockname()[1]


class WebSocketTests(ProxyTestCase):
    """The ``websockets`` client through tproxy to a ``websockets`` server."""

    timeout = 20

    if websockets is None:   # pragma: no cover
        skip = "websockets is not installed (the test extra)"

    async def ws_proxy(self):
        server, port = _ws_echo_server()
        self.addCleanup(deferToThread, server.shutdown)
        proxy = await self.proxy({"ws": ["127.0.0.1:%d" % port]})
        return proxy

    async def test_echo(self):
        proxy = await self.ws_proxy()
        big = os.urandom(600000)   # 600 kB (random: not compressed), backpressure on the way

        def talk():
            with ws_connect("ws://127.0.0.1:%d/ws/echo" % proxy.port,
                            max_size=None, **NO_PING) as ws:
                got = []
                for m in ("hello", b"\x00\x01", big, "bye"):
                    ws.send(m)
                    got.append(ws.recv())
                return got
        got = await deferToThread(talk)
        self.assertEqual(got, ["hello", b"\x00\x01", big, "bye"])
        await until(lambda: proxy.logged, message="log")
        (ctx,) = proxy.logged
        self.assertEqual(ctx.status, 101)
        self.assertIsNone(ctx.error)
        self.assertGreater(ctx.upgrade_bytes_up, len(big))
        self.assertGreater(ctx.upgrade_bytes_down, len(big))
        self.assertEqual(proxy.active(), {p.port: 0 for p in proxy.peers()})

    async def test_refused(self):
        proxy = await self.ws_proxy()

        def talk():
            try:
                with ws_connect("ws://127.0.0.1:%d/ws/refused" % proxy.port,
                                **NO_PING):
                    pass
            except websockets.exceptions.InvalidStatus as e:
                return e.response.status_code
        self.assertEqual(await deferToThread(talk), 403)
        await until(lambda: proxy.logged, message="log")
        self.assertEqual([ctx.status for ctx in proxy.logged], [403])

    async def test_half_close(self):
        """The client's FIN reaches the upstream as a FIN, and the upstream's
        answer still comes back."""
        conns = []

        class Backend(Protocol):
            buf = b""

            def connectionMade(self):
                conns.append(self)

            def dataReceived(self, data):
                self.buf += data
                if b"\r\n\r\n" in self.buf and not getattr(self, "switched", False):
                    self.switched = True
                    self.buf = b""
                    self.transport.write(SWITCH)

            def readConnectionLost(self):
                self.transport.write(b"got:" + self.buf)
                self.transport.loseConnection()

        from twisted.internet.interfaces import IHalfCloseableProtocol
        from zope.interface import classImplements
        classImplements(Backend, IHalfCloseableProtocol)
        listener = reactor.listenTCP(0, Factory.forProtocol(Backend), interface="127.0.0.1")
        self._listeners.append(listener)
        proxy = await self.proxy({"ws": ["127.0.0.1:%d" % listener.getHost().port]})
        client = await self.connect(proxy)
        client.send(HANDSHAKE + b"payload")
        await until(lambda: b"\r\n\r\n" in client.data, message="the 101")
        client.transport.loseWriteConnection()
        await client.lost
        self.assertTrue(bytes(client.data).endswith(b"got:payload"), client.data)
        await until(lambda: proxy.logged, message="log")
        self.assertIsNone(proxy.logged[0].error)

    async def test_download_to_slow_reader_is_bounded(self):
        """32 MiB from the upstream to a client that stops reading: the
        upstream is not read while the client's buffer is full; then it all
        arrives."""
        size = 32 * 1024 * 1024
        block = os.urandom(65536)

        class Source(Protocol):
            paused = False
            left = size

            def dataReceived(self, data):
                if not self.left == size:
                    return
                self.transport.registerProducer(self, True)
                self.transport.write(SWITCH)
                reactor.callLater(0, self.resumeProducing)

            def resumeProducing(self):
                self.paused = False
                while not self.paused and self.left > 0:
                    self.left -= len(block)
                    self.transport.write(block)

            def pauseProducing(self):
                self.paused = True

            def stopProducing(self):
                pass
        sources = []

        class SourceFactory(Factory):
            def buildProtocol(self, addr):
                p = Source()
                sources.append(p)
                return p
        listener = reactor.listenTCP(0, SourceFactory(), interface="127.0.0.1")
        self._listeners.append(listener)
        proxy = await self.proxy({"ws": ["127.0.0.1:%d" % listener.getHost().port]})
        client = await self.connect(proxy)
        client.send(HANDSHAKE)
        await until(lambda: b"\r\n\r\n" in client.data, message="the 101")
        client.transport.pauseProducing()
        (p,) = proxy.factory.protocols
        tunnel = p.exchange.tunnel
        await until(lambda: tunnel.upstream_reader.paused,
                    message="the proxy to pause the upstream")
        await until(lambda: sources[0].paused, message="the source to pause")
        await turns()   # reactor iterations in which a paused side could still move
        self.assertTrue(tunnel.upstream_reader.paused)
        up = tunnel.upstream.transport
        self.assertNotIn(up, reactor.getReaders())   # the proxy stopped reading it
        pending = len(p.transport.dataBuffer) - p.transport.offset + p.transport._tempDataLen
        self.assertLess(pending, 3 * 65536)
        self.assertLess(tunnel.ctx.upgrade_bytes_down, size // 2)
        client.transport.resumeProducing()
        await until(lambda: len(client.data) >= size + len(SWITCH) - 40,
                    timeout=15, message="the whole download")
        client.transport.loseConnection()
        await until(lambda: proxy.logged, message="log")
        self.assertEqual(proxy.logged[0].upgrade_bytes_down, size)
