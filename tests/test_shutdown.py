"""
Tests of the graceful shutdown (``shutdown_timeout``): what
:meth:`tproxy.tap.GatewayService.stopService` does to the connections open
when tproxy stops.  Real loopback sockets, a service built by
:func:`tproxy.tap.makeService` listening on free ports.
"""

from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import formatEvent, globalLogPublisher

from tproxy.config import ConfigError, validate_config
from tproxy.plugins import build_plugin_manager
from tproxy.tap import makeService

from tests.helpers import (LOG_RECORDER, ProxyTestCase, delayed, request, silent, sleep,
                           until)
from tests.test_stream import RECORDER, Backend, Client

LOCAL = "tcp:0:interface=127.0.0.1"


def upstreams(groups):
    """``{group: [server]}`` as the ``upstreams`` setting."""
    return {name: {"peers": [s.address for s in servers]}
            for name, servers in groups.items()}


class ShutdownTestCase(ProxyTestCase):
    """Starts a :class:`tproxy.tap.GatewayService`; stops it in the cleanups."""

    def setUp(self):
        ProxyTestCase.setUp(self)
        self.service = None
        self.stopping = None
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def start(self, upstream_groups=None, streams=(), **config):
        """Start tproxy; ``self.proxy_port`` is its proxy listener."""
        cfg = {"listen": LOCAL, "admin": {"listen": LOCAL},
               "upstreams": upstreams(upstream_groups or {}),
               "plugins": ["router", "least_conn", LOG_RECORDER, RECORDER],
               "streams": [{"listen": LOCAL, "group": g} for g in streams]}
        cfg.update(config)
        cfg = validate_config(cfg)
        options = SimpleNamespace(config=cfg, plugin_manager=build_plugin_manager(
            cfg, entry_points=[]))
        self.service = makeService(options, reactor=reactor)
        self.service.startService()
        self.addCleanup(self._stop_service)
        await until(lambda: len(self.service.ports) == 2 + len(streams))
        self.ports = {p.factory: p.getHost().port for p in self.service.ports}
        factories = [f for _, _, f in self.service.listeners]
        self.http = factories[0]
        self.streams = factories[2:]
        self.proxy_port = self.ports[self.http]
        return self.service

    async def _stop_service(self):
        if self.stopping is None:
            self.stopping = self.service.stopService()
        # a failed test does not wait for the drain
        for f in [self.http] + self.streams:
            f.abort()
        await self.stopping

    def stop(self):
        """Stop tproxy: the stop's Deferred (``self.stopped`` says whether it
        completed: ``called`` is true as soon as the listeners are closed)."""
        self.stopped = []
        self.stopping = self.service.stopService()
        self.stopping.addCallback(lambda r: self.stopped.append(True))
        return self.stopping

    @property
    def logged(self):
        """The contexts of HTTP requests ``log`` ran for."""
        return self.service.gateway.plugins.get_plugin(LOG_RECORDER).logged

    @property
    def stream_logged(self):
        """The contexts of stream sessions ``stream_log`` ran for."""
        return self.service.gateway.plugins.get_plugin(RECORDER).logged

    def messages(self):
        """The log messages of tproxy.tap."""
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == "tproxy.tap"]

    async def client(self, port=None):
        """A raw HTTP client connected to the proxy (or ``port``)."""
        return await self.connect(SimpleNamespace(port=port or self.proxy_port))

    def backend(self):
        """An echoing TCP backend."""
        b = Backend("echo")
        b.port = reactor.listenTCP(0, b, interface="127.0.0.1")

        async def close():
            await b.port.stopListening()
            for conn in b.connections:
                if conn.transport.connected:
                    conn.transport.abortConnection()
            for conn in b.connections:
                await conn.closed
        self.addCleanup(close)
        return b

    async def stream_client(self, port):
        client = Client()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)

        def close():
            if not client.gone:
                client.transport.abortConnection()
            return client.lost
        self.addCleanup(close)
        return client


class HttpDrainTests(ShutdownTestCase):
    """HTTP connections: idle ones close, busy ones finish, then close."""

    async def test_inFlightCompletes(self):
        """A request in flight when tproxy stops is answered, with
        ``Connection: close``; the stop completes after it."""
        up = self.upstream(delayed(0.3))
        await self.start({"default": [up]})
        client = await self.client()
        client.send(request("GET", "/slow"))
        await until(lambda: up.heads)
        stopped = self.stop()
        at_stop = []
        stopped.addCallback(lambda _: at_stop.append(len(self.logged)))
        await sleep(0.05)
        self.assertFalse(self.stopped)
        self.assertFalse(client.closed)
        await stopped
        self.assertEqual(at_stop, [1])
        self.assertEqual(self.logged[0].status, 200)
        await client.wait_closed()
        (resp,) = client.finals()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.json()["uri"], "/slow")
        self.assertEqual(resp.header("Connection"), "close")
        self.assertEqual(self.http.open_connections, 0)
        self.assertIn("stopping: draining 1 HTTP connection(s) and 0 stream session(s) "
                      "(shutdown_timeout 10 s)", self.messages())

    async def test_queuedAnswered(self):
        """Requests read (pipelined) before the stop are all answered, the
        last one with ``Connection: close``; one sent after it is not."""
        up = self.upstream(delayed(0.2))
        await self.start({"default": [up]})
        client = await self.client()
        client.send(request("GET", "/1") + request("GET", "/2"))
        await until(lambda: up.heads)
        stopped = self.stop()
        await sleep(0.02)
        client.send(request("GET", "/3"))
        await stopped
        await client.wait_closed()
        resps = client.finals()
        self.assertEqual([r.json()["uri"] for r in resps], ["/1", "/2"])
        self.assertEqual([r.header("Connection") for r in resps], [None, "close"])
        self.assertEqual([r.uri for r in up.requests], ["/1", "/2"])

    async def test_idleClosedAtOnce(self):
        """An idle keep-alive connection is closed as the stop begins."""
        up = self.upstream()
        await self.start({"default": [up]})
        client = await self.client()
        client.send(request("GET", "/"))
        (resp,) = await client.wait_responses(1)
        self.assertIsNone(resp.header("Connection"))
        start = reactor.seconds()
        await self.stop()
        await client.wait_closed(timeout=1)
        self.assertLess(reactor.seconds() - start, 1)
        self.assertEqual(len(client.finals()), 1)

    async def test_partialHeadClosed(self):
        """A connection receiving a request head is not serving a request
        yet: it closes, the request unanswered."""
        up = self.upstream()
        await self.start({"default": [up]})
        client = await self.client()
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await until(lambda: next(iter(self.http.connections)).head_start is not None)
        await self.stop()
        await client.wait_closed(timeout=1)
        self.assertEqual(client.data, b"")
        self.assertEqual(up.heads, [])

    async def test_newConnectionsRefused(self):
        """While draining, tproxy accepts no connection."""
        up = self.upstream(delayed(0.2))
        await self.start({"default": [up]})
        client = await self.client()
        client.send(request("GET", "/"))
        await until(lambda: up.heads)
        stopped = self.stop()
        await sleep(0.02)
        self.assertFalse(self.stopped)
        with self.assertRaises(ConnectionRefusedError):
            await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), Client())
        await stopped
        (resp,) = await client.wait_responses(1)
        self.assertEqual(resp.status, 200)

    async def test_acceptedWhileDraining(self):
        """A connection a draining factory gets anyway is closed at once."""
        await self.start()
        await self.http.drain()
        client = await self.client()
        client.send(request("GET", "/"))
        await client.wait_closed(timeout=1)
        self.assertEqual(client.data, b"")

    async def test_timeoutAborts(self):
        """A request still in flight after ``shutdown_timeout`` is cut, and
        the stop completes."""
        up = self.upstream(silent)
        await self.start({"default": [up]}, shutdown_timeout=0.2)
        client = await self.client()
        client.send(request("GET", "/"))
        await until(lambda: up.heads)
        start = reactor.seconds()
        await self.stop()
        self.assertGreaterEqual(reactor.seconds() - start, 0.15)
        self.assertLess(reactor.seconds() - start, 1.5)
        await client.wait_closed(timeout=1)
        self.assertEqual(client.data, b"")
        (ctx,) = self.logged
        self.assertEqual((ctx.status, ctx.error), (503, "shutdown"))
        self.assertEqual(self.http.open_connections, 0)
        await until(lambda: not up.open)   # the upstream connection is cut too
        self.assertIn("stopped: 1 HTTP connection(s) and 0 stream session(s) aborted "
                      "after shutdown_timeout (0.2 s)", self.messages())

    async def test_zeroTimeout(self):
        """``shutdown_timeout`` 0: every connection is cut at once."""
        up = self.upstream(silent)
        await self.start({"default": [up]}, shutdown_timeout=0)
        client = await self.client()
        client.send(request("GET", "/"))
        await until(lambda: up.heads)
        start = reactor.seconds()
        await self.stop()
        await client.wait_closed(timeout=1)
        self.assertLess(reactor.seconds() - start, 0.5)
        self.assertEqual(client.data, b"")
        self.assertEqual([ctx.status for ctx in self.logged], [503])

    async def test_nothingOpen(self):
        """Nothing to drain: the stop completes at once, no timer left."""
        await self.start()
        await self.stop()
        self.assertEqual(self.service.ports, [])
        self.assertEqual([c for c in reactor.getDelayedCalls() if c.active()
                          and c.func.__qualname__.startswith("GatewayService")], [])


class StreamDrainTests(ShutdownTestCase):
    """Stream sessions go on while draining; they are cut at the timeout."""

    async def test_sessionSurvivesThenAborted(self):
        b = self.backend()
        await self.start({"db": [b]}, streams=["db"], shutdown_timeout=0.3)
        client = await self.stream_client(self.ports[self.streams[0]])
        client.send(b"ping")
        await client.wait_for(4)
        start = reactor.seconds()
        stopped = self.stop()
        await sleep(0.1)
        client.send(b"pong")
        await client.wait_for(8)
        self.assertEqual(bytes(client.data), b"pingpong")
        self.assertFalse(self.stopped)
        await stopped
        self.assertGreaterEqual(reactor.seconds() - start, 0.25)
        await until(lambda: client.gone, timeout=1)
        (ctx,) = self.stream_logged
        self.assertEqual((ctx.reason, ctx.status, ctx.error),
                         ("shutdown", 200, "shutdown"))
        self.assertEqual(self.streams[0].open_connections, 0)
        self.assertIn("stopping: draining 0 HTTP connection(s) and 1 stream session(s) "
                      "(shutdown_timeout 0.3 s)", self.messages())
        self.assertIn("stopped: 0 HTTP connection(s) and 1 stream session(s) aborted "
                      "after shutdown_timeout (0.3 s)", self.messages())

    async def test_sessionEndsByItself(self):
        """A session that ends during the drain ends it (no wait for the
        timeout)."""
        b = self.backend()
        await self.start({"db": [b]}, streams=["db"])
        client = await self.stream_client(self.ports[self.streams[0]])
        client.send(b"ping")
        await client.wait_for(4)
        stopped = self.stop()
        await sleep(0.02)
        self.assertFalse(self.stopped)
        start = reactor.seconds()
        client.shutdown_write()
        await stopped
        self.assertLess(reactor.seconds() - start, 1)
        (ctx,) = self.stream_logged
        self.assertEqual(ctx.reason, "client_closed")


class SettingTests(ProxyTestCase):
    """``shutdown_timeout`` is validated."""

    def test_valid(self):
        self.assertEqual(validate_config({})["shutdown_timeout"], 10)
        self.assertEqual(validate_config({"shutdown_timeout": 0})["shutdown_timeout"], 0)
        self.assertEqual(validate_config({"shutdown_timeout": 2.5})["shutdown_timeout"],
                         2.5)

    def test_invalid(self):
        e = self.assertRaises(ConfigError, validate_config, {"shutdown_timeout": -1},
                              source="etc/conf.json")
        self.assertEqual(str(e), "etc/conf.json: shutdown_timeout: -1 is out of range "
                                 "(must be at least 0)")
        e = self.assertRaises(ConfigError, validate_config, {"shutdown_timeout": "10"},
                              source="etc/conf.json")
        self.assertEqual(str(e), "etc/conf.json: shutdown_timeout: expected a number, "
                                 "got \"10\"")
