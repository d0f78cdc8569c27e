"""
Tests of the graceful shutdown (``shutdown_timeout``): what
:meth:`tproxy.tap.GatewayService.stopService` does to the connections open
when tproxy stops.  On the fake clock of :mod:`tproxy.testing` (a service
over a harness's gateway and listener), but for the listener itself, which
real loopback sockets show (a service built by :func:`tproxy.tap.makeService`
listening on free ports).
"""

from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import formatEvent

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import ConfigError, validate_config
from tproxy.http.closing import DRAIN_FIRST_REQUEST
from tproxy.plugins import build_plugin_manager
from tproxy.tap import GatewayService, makeService
from tproxy.testing import Harness, StreamHarness, StreamServer, echo

from tests.helpers import ProxyTestCase, capture_log, request, silent, until
from tests.test_stream import Client

LOCAL = "tcp:0:interface=127.0.0.1"
UP = "127.0.0.1:9001"
DB = "127.0.0.1:5432"


def upstreams(groups):
    """``{group: [server]}`` as the ``upstreams`` setting."""
    return {name: {"peers": [s.address for s in servers]}
            for name, servers in groups.items()}


class ShutdownTestCase(ProxyTestCase):
    """Starts a :class:`tproxy.tap.GatewayService` on real loopback ports;
    stops it in the cleanups."""

    def setUp(self):
        ProxyTestCase.setUp(self)
        self.service = None
        self.stopping = None

    async def start(self, upstream_groups=None, **config):
        """Start tproxy; ``self.proxy_port`` is its proxy listener."""
        cfg = {"listen": LOCAL, "admin": {"listen": LOCAL},
               "upstreams": upstreams(upstream_groups or {}),
               "plugins": ["router", "least_conn"]}
        cfg.update(config)
        cfg = validate_config(cfg)
        options = SimpleNamespace(config=cfg, plugin_manager=build_plugin_manager(
            cfg, entry_points=[]))
        self.service = makeService(options, reactor=reactor)
        self.service.startService()
        self.addCleanup(self._stop_service)
        await until(lambda: len(self.service.ports) == 2)
        self.ports = {p.factory: p.getHost().port for p in self.service.ports}
        self.http = [f for _, _, f in self.service.listeners][0]
        self.proxy_port = self.ports[self.http]
        return self.service

    async def _stop_service(self):
        if self.stopping is None:
            self.stopping = self.service.stopService()
        # a failed test does not wait for the drain
        self.http.abort()
        await self.stopping

    def stop(self):
        """Stop tproxy: the stop's Deferred (``self.stopped`` says whether it
        completed: ``called`` is true as soon as the listeners are closed)."""
        self.stopped = []
        self.stopping = self.service.stopService()
        self.stopping.addCallback(lambda r: self.stopped.append(True))
        return self.stopping

    async def client(self, port=None):
        """A raw HTTP client connected to the proxy (or ``port``)."""
        return await self.connect(SimpleNamespace(port=port or self.proxy_port))


class Drain(object):
    """
    A :class:`tproxy.tap.GatewayService` over a harness's gateway and
    listener factory (nothing listens: the harness's clients connect to the
    factory in memory), stopped on the harness's clock.
    """

    def __init__(self, test, harness):
        self.harness = harness
        self.service = GatewayService(harness.gateway, [("proxy", None, harness.factory)])
        self.events = capture_log(test)
        self.stopped = []

    def stop(self):
        """Stop the service (the drain starts); ``stopped`` is ``[True]``
        once the stop completed."""
        d = self.service.stopService()
        d.addCallback(lambda _: self.stopped.append(True))
        self.harness.flush()
        return d

    def messages(self):
        """The log messages of tproxy.tap."""
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == "tproxy.tap"]


def http_harness(upstream=echo, **config):
    """A harness whose group ``default`` is one peer answered by ``upstream``."""
    config.setdefault("upstreams", {"default": {"peers": [UP]}})
    return Harness(config=config, plugins=["router", "least_conn"],
                   servers={UP: upstream})


class HttpDrainTests(SynchronousTestCase):
    """HTTP connections: idle ones close, busy ones finish, then close (on
    the fake clock: "at once" is "without the clock moving")."""

    def test_inFlightCompletes(self):
        """A request in flight when tproxy stops is answered, with
        ``Connection: close``; the stop completes after it."""
        answer = Deferred()
        h = http_harness(lambda request: answer)
        drain = Drain(self, h)
        conn = h.connect()
        conn.send_request("GET", "/slow")
        drain.stop()
        h.advance(5)
        self.assertEqual((drain.stopped, conn.closed, h.contexts), ([], False, []))
        answer.callback((200, {}, b"done"))
        h.flush()
        self.assertEqual(drain.stopped, [True])
        [resp] = conn.responses
        self.assertEqual((resp.status, resp.body), (200, b"done"))
        self.assertEqual(resp.headers.get("Connection"), "close")
        self.assertTrue(conn.closed)
        self.assertEqual(h.factory.open_connections, 0)
        self.assertIn("stopping: draining 1 HTTP connection(s) and 0 stream session(s) "
                      "(shutdown_timeout 10 s)", drain.messages())

    def test_queuedAnswered(self):
        """Requests read (pipelined) before the stop are all answered, the
        last one with ``Connection: close``; one sent after it is not."""
        answers = []

        def later(request):
            answers.append(Deferred())
            return answers[-1]
        h = http_harness(later)
        drain = Drain(self, h)
        conn = h.connect()
        conn.send_request("GET", "/1", flush=False)
        conn.send_request("GET", "/2")
        drain.stop()
        conn.send_request("GET", "/3")
        while answers:
            answers.pop(0).callback((200, {}, b"ok"))
            h.flush()
        self.assertEqual(drain.stopped, [True])
        self.assertTrue(conn.closed)
        self.assertEqual([r.headers.get("Connection") for r in conn.responses],
                         [None, "close"])
        self.assertEqual([r.uri for r in h.upstream_requests], ["/1", "/2"])

    def test_idleNextRequestAnswered(self):
        """An idle keep-alive connection's next request, begun within
        DRAIN_FIRST_REQUEST seconds of the stop (a busy client may have sent
        it before it could see a close), is answered with ``Connection:
        close``; then the connection closes."""
        h = http_harness()
        drain = Drain(self, h)
        conn = h.connect()
        self.assertIsNone(conn.request("GET", "/1").headers.get("Connection"))
        drain.stop()
        h.advance(DRAIN_FIRST_REQUEST * 0.9)
        self.assertEqual((conn.closed, drain.stopped), (False, []))
        conn.send_request("GET", "/2")
        h.flush()
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, None), (200, "close")])
        self.assertEqual([r.uri for r in h.upstream_requests], ["/1", "/2"])
        self.assertEqual((conn.closed, drain.stopped), (True, [True]))

    def test_idleSilentClosed(self):
        """An idle keep-alive connection that sends nothing more closes
        DRAIN_FIRST_REQUEST seconds after the stop began, not later (its
        keep-alive timeout does not hold the stop)."""
        h = http_harness()
        drain = Drain(self, h)
        conn = h.connect()
        conn.request("GET", "/")
        drain.stop()
        h.advance(DRAIN_FIRST_REQUEST - 0.01)
        self.assertEqual((conn.closed, drain.stopped), (False, []))
        h.advance(0.01)
        self.assertEqual((conn.closed, drain.stopped), (True, [True]))
        self.assertEqual(len(conn.responses), 1)
        self.assertEqual(h.factory.open_connections, 0)

    def test_headSentBeforeStop(self):
        """A response whose head went out (keep-alive) before the stop began
        cannot say ``Connection: close``: the connection is idle after it as
        any other, and the client's next request, begun within
        DRAIN_FIRST_REQUEST seconds, is answered with ``Connection: close``
        (closing right after the response would meet that request)."""
        from tests.test_proxy_connections import scripted
        from tests.upstreams import Scripted
        h = scripted({"default": {UP: Scripted(lambda request: [
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab", b"cd"])}})
        drain = Drain(self, h)
        conn = h.connect()
        conn.send_request("GET", "/1")
        self.assertEqual(conn.responses, [], "the body's end not sent yet")
        drain.stop()
        h.advance(DRAIN_FIRST_REQUEST * 0.5)
        [first] = conn.responses
        self.assertEqual((first.body, first.headers.get("Connection")), (b"abcd", None))
        self.assertEqual((conn.closed, drain.stopped), (False, []))
        conn.send_request("GET", "/2")
        h.advance(DRAIN_FIRST_REQUEST * 0.1)
        self.assertEqual([(r.body, r.headers.get("Connection")) for r in conn.responses],
                         [(b"abcd", None), (b"abcd", "close")])
        self.assertEqual((conn.closed, drain.stopped), (True, [True]))

    def test_partialHeadAnswered(self):
        """A connection receiving a request head when the stop begins has
        that request answered, with ``Connection: close``, then closes."""
        h = http_harness()
        drain = Drain(self, h)
        conn = h.connect()
        conn.send(b"GET /late HTTP/1.1\r\nHost: x\r\n")
        drain.stop()
        self.assertEqual((conn.closed, drain.stopped), (False, []))
        conn.send(b"\r\n")
        h.flush()
        [resp] = conn.responses
        self.assertEqual((resp.status, resp.headers.get("Connection")), (200, "close"))
        self.assertEqual([r.uri for r in h.upstream_requests], ["/late"])
        self.assertEqual((conn.closed, drain.stopped), (True, [True]))

    def test_newConnectionFirstRequest(self):
        """A connection accepted before the stop that has sent nothing yet
        (its request on the way) is answered if the request begins within
        DRAIN_FIRST_REQUEST seconds, with ``Connection: close``."""
        h = http_harness()
        drain = Drain(self, h)
        conn = h.connect()
        drain.stop()
        h.advance(DRAIN_FIRST_REQUEST * 0.9)
        self.assertEqual((conn.closed, drain.stopped), (False, []))
        conn.send_request("GET", "/first")
        h.flush()
        [resp] = conn.responses
        self.assertEqual((resp.status, resp.headers.get("Connection")), (200, "close"))
        self.assertEqual((conn.closed, drain.stopped), (True, [True]))

    def test_newConnectionSilent(self):
        """A new connection that stays silent does not hold the stop for
        its first-request timeout: it closes DRAIN_FIRST_REQUEST seconds
        after the stop began, unanswered."""
        h = http_harness()
        drain = Drain(self, h)
        conn = h.connect()
        drain.stop()
        h.advance(DRAIN_FIRST_REQUEST - 0.01)
        self.assertEqual((conn.closed, drain.stopped), (False, []))
        h.advance(0.01)
        self.assertEqual((conn.closed, drain.stopped, conn.received), (True, [True], b""))
        self.assertEqual(h.factory.open_connections, 0)

    def test_acceptedWhileDraining(self):
        """A connection a draining factory gets anyway is one accepted just
        before the stop: its first request is answered, with ``Connection:
        close``."""
        h = http_harness()
        h.factory.drain()
        conn = h.connect()
        conn.send_request("GET", "/")
        h.flush()
        [resp] = conn.responses
        self.assertEqual((resp.status, resp.headers.get("Connection")), (200, "close"))
        self.assertTrue(conn.closed)

    def test_timeoutAborts(self):
        """A request still in flight after ``shutdown_timeout`` is cut, and
        the stop completes then, not before."""
        h = http_harness(lambda request: Deferred(), shutdown_timeout=0.2)
        drain = Drain(self, h)
        conn = h.connect()
        conn.send_request("GET", "/")
        drain.stop()
        h.advance(0.19)
        self.assertEqual((drain.stopped, conn.closed), ([], False))
        h.advance(0.01)
        self.assertEqual((drain.stopped, conn.closed), ([True], True))
        self.assertEqual(conn.received, b"")
        [ctx] = h.contexts
        self.assertEqual((ctx.status, ctx.error), (503, "shutdown"))
        self.assertEqual(h.factory.open_connections, 0)
        self.assertIn("stopped: 1 HTTP connection(s) and 0 stream session(s) aborted "
                      "after shutdown_timeout (0.2 s)", drain.messages())

    def test_zeroTimeout(self):
        """``shutdown_timeout`` 0: every connection is cut at once."""
        h = http_harness(lambda request: Deferred(), shutdown_timeout=0)
        drain = Drain(self, h)
        conn = h.connect()
        conn.send_request("GET", "/")
        drain.stop()
        self.assertEqual((drain.stopped, conn.closed, conn.received), ([True], True, b""))
        self.assertEqual([ctx.status for ctx in h.contexts], [503])

    def test_nothingOpen(self):
        """Nothing to drain: the stop completes at once, no timer left."""
        h = http_harness()
        drain = Drain(self, h)
        drain.stop()
        self.assertEqual(drain.stopped, [True])
        self.assertEqual([c for c in h.clock.getDelayedCalls()
                          if c.func.__qualname__.startswith("GatewayService")], [])


class ListenerTests(ShutdownTestCase):
    """What only a real listener shows: it stops accepting as the drain
    starts (real loopback sockets)."""

    async def test_newConnectionsRefused(self):
        """While draining, tproxy accepts no connection."""
        up = self.upstream(silent)
        await self.start({"default": [up]})
        client = await self.client()
        client.send(request("GET", "/"))
        await until(lambda: up.heads)
        stopped = self.stop()
        self.assertFalse(self.stopped)
        with self.assertRaises(ConnectionRefusedError):
            await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.1", self.proxy_port), Client())
        self.assertFalse(self.stopped)    # the request in flight holds the stop
        self.http.abort()
        await stopped


class StreamDrainTests(SynchronousTestCase):
    """Stream sessions go on while draining; they are cut at the timeout."""

    def harness(self, **config):
        config.setdefault("upstreams", {"db": {"peers": [DB]}})
        h = StreamHarness(config=config, stream={"group": "db"},
                          plugins=["least_conn"], servers={DB: StreamServer(echo=True)})
        return h, Drain(self, h)

    def test_sessionSurvivesThenAborted(self):
        h, drain = self.harness(shutdown_timeout=0.3)
        client = h.connect()
        client.send(b"ping")
        drain.stop()
        h.advance(0.2)
        client.send(b"pong")
        self.assertEqual(client.received, b"pingpong")
        self.assertEqual(drain.stopped, [])
        h.advance(0.1)
        self.assertEqual(drain.stopped, [True])
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status, ctx.error),
                         ("shutdown", 200, "shutdown"))
        self.assertEqual(h.factory.open_connections, 0)
        self.assertIn("stopping: draining 0 HTTP connection(s) and 1 stream session(s) "
                      "(shutdown_timeout 0.3 s)", drain.messages())
        self.assertIn("stopped: 0 HTTP connection(s) and 1 stream session(s) aborted "
                      "after shutdown_timeout (0.3 s)", drain.messages())

    def test_sessionEndsByItself(self):
        """A session that ends during the drain ends it (no wait for the
        timeout)."""
        h, drain = self.harness()
        client = h.connect()
        client.send(b"ping")
        drain.stop()
        h.advance(1)
        self.assertEqual(drain.stopped, [])
        client.half_close()
        self.assertEqual(drain.stopped, [True])
        [ctx] = h.logged
        self.assertEqual(ctx.reason, "client_closed")


class SettingTests(SynchronousTestCase):
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
