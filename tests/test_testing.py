"""
Tests for :mod:`tproxy.testing`: the in-memory harness plugin authors test
with -- requests in, stub upstreams answering, contexts and log events
recorded, the clock moved by hand.
"""

import json
import os
import random

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tproxy import Response, hookimpl
from tproxy.config import ConfigError, validate_config
from tproxy.testing._clock import _Clock
from tproxy.testing import (UNREACHABLE, Harness, RequestPending,
                            ResponseIncomplete, StreamHarness, StreamServer,
                            StubResponse, UpstreamRequest, echo)

from tests import plugin_with_class
from tests.helpers import temp_path

UP = "127.0.0.1:9001"

#: The access log as twisted.logger events (``Harness.events``).
LOGGER = {"name": "access_log", "settings": {"target": "logger"}}


def one_group(*peers, **extra):
    """A configuration with the group ``api`` of ``peers``."""
    config = {"upstreams": {"api": {"peers": list(peers or [UP])}}}
    config.update(extra)
    return config


ROUTING = ["router", "least_conn"]


class Tag(object):
    """Adds ``X-Tag: <value>`` to every response; ``value`` is a setting."""

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"value": {"type": "string", "default": "tagged"}},
    }

    def __init__(self, settings):
        self.value = settings["value"]

    @hookimpl
    def header_filter(self, response):
        """Tag the response."""
        response.headers.add("X-Tag", self.value)


class Deny(object):
    """Answers ``403`` in ``access``."""

    @hookimpl
    def access(self, ctx):
        """Deny."""
        ctx.vars["denied"] = True
        return Response.error(403, "go away")


class LastInLog(object):
    """A ``log`` implementation that asks to run last."""

    @hookimpl(trylast=True)
    def log(self, ctx):
        """Mark the context."""
        ctx.vars["last"] = True


class Ticker(object):
    """Starts a ``LoopingCall`` every 10 s from ``init_worker``."""

    log = Logger()

    def __init__(self):
        self.ticks = []

    @hookimpl
    def init_worker(self, gateway):
        """Start ticking on the gateway's clock."""
        loop = LoopingCall(self.tick, gateway)
        loop.clock = gateway.reactor
        loop.start(10, now=False)
        gateway.on_stop(loop.stop)

    def tick(self, gateway):
        self.ticks.append(gateway.reactor.seconds())
        self.log.info("tick {n}", n=len(self.ticks))


class Hello(object):
    """An admin endpoint ``GET /hello``."""

    @hookimpl
    def init_worker(self, gateway):
        """Add the route."""
        gateway.admin.route("GET", "/hello", lambda request: (
            200, {"hello": request.args.get("name", "world")}))


class Broken(object):
    """``init_worker`` fails."""

    @hookimpl
    def init_worker(self):
        """Fail."""
        raise ValueError("cannot start")


class Chunks(Resource):
    """A twisted.web resource streaming its body in three writes."""

    isLeaf = True

    def render_GET(self, request):
        for part in (b"one ", b"two ", b"three"):
            request.write(part)
        request.finish()
        return NOT_DONE_YET


class Raw(Protocol):
    """An upstream that sends ``self.factory.data`` and closes."""

    def dataReceived(self, data):
        self.transport.write(self.factory.data)
        self.transport.loseConnection()


def raw_server(data):
    factory = Factory.forProtocol(Raw)
    factory.data = data
    return factory


class RequestTests(SynchronousTestCase):
    """A request goes in, the stub answers, everyone's view is recorded."""

    def test_echo(self):
        """
        The client gets the stub's answer; the stub saw the proxied request;
        the context shows the route and the peer.
        """
        h = Harness(one_group(), ROUTING, {UP: echo})
        response = h.request("GET", "/api/users?id=1", headers={"X-A": "b"})
        self.assertIsInstance(response, StubResponse)
        self.assertEqual((response.status, response.reason), (200, "OK"))
        self.assertEqual(response.headers.get("content-type"), "application/json")
        seen = response.json()
        self.assertEqual((seen["server"], seen["uri"]), (UP, "/users?id=1"))
        self.assertEqual(seen["headers"]["x-a"], "b")

        [received] = h.upstream_requests
        self.assertIsInstance(received, UpstreamRequest)
        self.assertEqual((received.server, received.method, received.uri),
                         (UP, "GET", "/users?id=1"))
        self.assertEqual((received.path, received.query), ("/users", "id=1"))
        self.assertEqual(received.headers.get("x-route-prefix"), "api")
        self.assertEqual(received.headers.get("x-forwarded-for"), "127.0.0.1")

        [ctx] = h.contexts
        self.assertEqual((ctx.status, ctx.route, ctx.upstream_addr, ctx.error),
                         (200, "api", UP, None))

    def test_body(self):
        """A request body reaches the stub; ``str`` bodies are sent as UTF-8."""
        h = Harness(one_group(), ROUTING, {UP: echo})
        h.request("POST", "/api/x", body="h\u00e9")
        self.assertEqual(h.upstream_requests[0].body, "h\u00e9".encode("utf-8"))
        self.assertEqual(h.upstream_requests[0].headers.get("content-length"), "3")

    def test_handlerAnswer(self):
        """A handler's status, headers and body are all the client gets."""
        h = Harness(one_group(), ROUTING, {UP: lambda request: (
            201, [("X-One", "1"), ("X-One", "2")], "made")})
        response = h.request("PUT", "/api/x")
        self.assertEqual(response.status, 201)
        self.assertEqual(response.headers.items(), [
            ("X-One", "1"), ("X-One", "2"), ("Content-Length", "4"),
            ("Date", "Thu, 01 Jan 1970 00:00:00 GMT")])   # (tproxy's: the clock's)
        self.assertEqual(response.body, b"made")

    def test_asyncHandler(self):
        """A handler may be ``async def``."""
        async def handler(request):
            return 200, {}, request.method
        h = Harness(one_group(), ROUTING, {UP: handler})
        self.assertEqual(h.request("DELETE", "/api/x").body, b"DELETE")

    def test_resource(self):
        """A twisted.web resource answers; a chunked body arrives whole."""
        h = Harness(one_group(), ROUTING, {UP: Chunks()})
        response = h.request("GET", "/api/x")
        self.assertEqual(response.body, b"one two three")
        self.assertEqual(response.headers.get("transfer-encoding"), "chunked")
        self.assertEqual(h.upstream_requests[0].uri, "/x")

    def test_head(self):
        """A response to HEAD has no body, whatever its Content-Length says."""
        h = Harness(one_group(), ROUTING, {UP: lambda r: (200, {"Content-Length": "5"}, b"")})
        response = h.request("HEAD", "/api/x")
        self.assertEqual((response.status, response.body), (200, b""))
        self.assertEqual(response.headers.get("content-length"), "5")

    def test_clientAddress(self):
        """``client`` is the address the proxy sees the request come from."""
        h = Harness(one_group(), ROUTING, {UP: echo})
        h.request("GET", "/api/x", client="10.0.0.7")
        self.assertEqual(h.contexts[0].request.client_addr, "10.0.0.7")
        self.assertEqual(h.upstream_requests[0].headers.get("x-real-ip"), "10.0.0.7")

    def test_ipv6Server(self):
        """Stub servers may have IPv6 addresses."""
        h = Harness(one_group("[::1]:9001"), ROUTING, {"[::1]:9001": echo})
        self.assertEqual(h.request("GET", "/api/x").json()["server"], "[::1]:9001")

    def test_keepAliveUpstream(self):
        """tproxy reuses its upstream connection: the stub sees one client."""
        h = Harness(one_group(), ROUTING, {UP: echo})
        h.request("GET", "/api/1")
        h.request("GET", "/api/2")
        clients = {r.client for r in h.upstream_requests}
        self.assertEqual(len(clients), 1)

    def test_defaults(self):
        """
        Without arguments: the default configuration and plugins, no upstream,
        so ``503``.
        """
        h = Harness()
        self.assertEqual(h.config, validate_config({}))
        response = h.request("GET", "/x")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.json(), {"error": "no live upstream", "group": "default"})
        self.assertEqual(h.contexts[0].error, "no_peer")
        self.assertEqual(h.upstream_requests, [])


class QuietConnectionTests(SynchronousTestCase):
    """A connection with nothing to move rests while the harness moves the
    others' bytes, and moves again once asked for something."""

    def test_restsUntilAsked(self):
        h = Harness(one_group(), ROUTING, {UP: echo})
        kept = h.connect()
        self.assertEqual(kept.request("GET", "/api/a").status, 200)
        [pump] = [p for p in h._pumps if p.clientIO.protocol is kept]
        self.assertTrue(pump.quiet)
        # the pooled upstream connection rests too, between requests
        self.assertTrue(all(p.quiet for p in h._pumps))
        moved = []
        original = type(pump).pump
        self.patch(type(pump), "pump", lambda self, *a, **k: (
            moved.append(self), original(self, *a, **k))[1])
        self.assertEqual(h.request("GET", "/api/b").status, 200)
        self.assertNotIn(pump, moved)
        self.assertEqual(kept.request("GET", "/api/c").status, 200)
        self.assertIn(pump, moved)
        kept.half_close()
        self.assertTrue(kept.closed)


class StopReadingTests(SynchronousTestCase):
    """``ClientConnection.stop_reading``: a client that does not read its
    response, as on a socket whose buffers fill."""

    def test_heldThenDelivered(self):
        """Nothing arrives while the client does not read; the proxy's
        transport says it is full past 64 KiB (the proxy stops reading the
        upstream), and everything arrives once the client reads again."""
        big = b"x" * (256 * 1024)
        h = Harness(one_group(), ROUTING, {UP: lambda req: (200, {}, big)})
        conn = h.connect()
        conn.stop_reading()
        conn.send(b"GET /api/big HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(conn.received, b"")
        [pump] = [p for p in h._pumps if p.clientIO.protocol is conn]
        self.assertTrue(pump.serverIO.producer_paused)
        conn.read_again()
        self.assertFalse(pump.serverIO.producer_paused)
        resp, = conn.responses
        self.assertEqual(resp.body, big)

    def test_smallNotPaused(self):
        """A response under 64 KiB waits too, but does not fill the transport."""
        h = Harness(one_group(), ROUTING, {UP: echo})
        conn = h.connect()
        conn.stop_reading()
        conn.send(b"GET /api/a HTTP/1.1\r\nHost: x\r\n\r\n")
        [pump] = [p for p in h._pumps if p.clientIO.protocol is conn]
        self.assertEqual(conn.received, b"")
        self.assertFalse(pump.serverIO.producer_paused)
        conn.read_again()
        self.assertEqual(conn.responses[0].status, 200)


class UnreachableTests(SynchronousTestCase):
    """Refused connections, connections that hang, upstreams that never answer."""

    def test_refused(self):
        """An address without a stub refuses: the next peer is tried."""
        h = Harness(one_group("127.0.0.1:9001", "127.0.0.1:9002"), ROUTING,
                    {"127.0.0.1:9002": echo})
        for _ in range(2):
            self.assertEqual(h.request("GET", "/api/x").status, 200)
        tried = [[p.address for p in ctx.tried] for ctx in h.contexts]
        self.assertIn(["127.0.0.1:9001", "127.0.0.1:9002"], tried)
        self.assertEqual({ctx.peer.address for ctx in h.contexts}, {"127.0.0.1:9002"})

    def test_allRefused(self):
        """Every peer refusing is a ``502``."""
        h = Harness(one_group(), ROUTING)
        response = h.request("GET", "/api/x")
        self.assertEqual(response.status, 502)
        self.assertEqual(h.contexts[0].error, "upstream_connect")

    def test_unreachable(self):
        """
        An :data:`UNREACHABLE` server's connection fails when the connect
        timeout has passed on the harness's clock.
        """
        h = Harness(one_group(timeouts={"connect": 5}), ROUTING, {UP: UNREACHABLE})
        pending = h.request("GET", "/api/x", wait=False)
        h.advance(4.9)
        self.assertFalse(pending.done)
        h.advance(0.1)
        self.assertEqual(pending.result().status, 504)
        self.assertEqual(h.contexts[0].error, "upstream_timeout")
        self.assertEqual(h.contexts[0].request_time(), 5)

    def test_pendingRaises(self):
        """Waiting for a response that cannot come without time raises."""
        h = Harness(one_group(), ROUTING, {UP: lambda request: Deferred()})
        e = self.assertRaises(RequestPending, h.request, "GET", "/api/x")
        self.assertIn("GET /api/x", str(e))
        self.assertEqual(len(h.upstream_requests), 1)
        self.assertEqual(h.contexts, [])

    def test_readTimeout(self):
        """A stub that never answers: ``504`` after ``timeouts.read``."""
        h = Harness(one_group(timeouts={"read": 30}), ROUTING,
                    {UP: lambda request: Deferred()})
        pending = h.request("GET", "/api/x", wait=False)
        self.assertRaises(RequestPending, pending.result)
        h.advance(30)
        self.assertEqual(pending.result().status, 504)
        self.assertEqual(h.contexts[0].error, "upstream_timeout")

    def test_lateAnswer(self):
        """A handler's Deferred fired by the test delivers the response."""
        answers = []

        def later(request):
            answers.append(Deferred())
            return answers[-1]
        h = Harness(one_group(), ROUTING, {UP: later})
        pending = h.request("GET", "/api/x", wait=False)
        h.advance(2)
        answers[0].callback((200, {}, b"at last"))
        self.assertEqual(pending.result().body, b"at last")
        self.assertEqual(h.contexts[0].upstream_time(), 2)

    def test_clientAbort(self):
        """:meth:`PendingRequest.abort` is a client going away."""
        h = Harness(one_group(), ROUTING, {UP: lambda request: Deferred()})
        pending = h.request("GET", "/api/x", wait=False)
        pending.abort()
        [ctx] = h.contexts
        self.assertEqual((ctx.status, ctx.error), (499, "client_abort"))
        self.assertEqual(ctx.peer.active, 0)

    def test_notHttp(self):
        """An IProtocolFactory stub can send anything: here, not HTTP."""
        h = Harness(one_group(), ROUTING, {UP: raw_server(b"SMTP ready\r\n\r\n")})
        self.assertEqual(h.request("GET", "/api/x").status, 502)
        self.assertEqual(h.contexts[0].error, "upstream_invalid")

    def test_incomplete(self):
        """A response cut short raises :class:`ResponseIncomplete`."""
        h = Harness(one_group(), ROUTING, {UP: raw_server(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")})
        e = self.assertRaises(ResponseIncomplete, h.request, "GET", "/api/x")
        self.assertEqual(e.partial.status, 200)
        self.assertEqual(h.contexts[0].error, "upstream_error")

    def test_handlerFails(self):
        """A handler that raises answers ``500`` and logs the error."""
        h = Harness(one_group(), ROUTING, {UP: lambda request: 1 // 0})
        self.assertEqual(h.request("GET", "/api/x").status, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class PluginTests(SynchronousTestCase):
    """Plugins by name, by object, with settings, in order."""

    def test_classWithSettings(self):
        """
        A class is made with its validated settings; listed twice it runs
        twice, in order.
        """
        h = Harness(one_group(), ROUTING + [
            {"name": Tag, "settings": {"value": "a"}},
            {"name": Tag, "settings": {"value": "b"}}, Tag], {UP: echo})
        self.assertEqual(h.request("GET", "/api/x").headers.get_all("x-tag"),
                         ["a", "b", "tagged"])
        self.assertEqual(h.gateway.phases.names("header_filter"), ["Tag", "Tag#2", "Tag#3"])

    def test_badSettings(self):
        """Settings are validated: a ConfigError names the entry."""
        e = self.assertRaises(ConfigError, Harness, plugins=[
            {"name": Tag, "settings": {"value": 1}}])
        self.assertEqual(e.path, "plugins[0].settings.value")

    def test_instanceAndModule(self):
        """An instance is registered as it is; a module like a named one."""
        h = Harness(one_group(), [Deny(), plugin_with_class], {UP: echo})
        self.assertEqual(h.request("GET", "/api/x").status, 403)
        self.assertEqual(h.gateway.phases.names("access"),
                         ["Deny", "tests.plugin_with_class"])
        self.assertEqual(h.contexts[0].vars, {"denied": True})
        self.assertEqual(h.upstream_requests, [])

    def test_names(self):
        """Plugins named as in conf.json: built-ins and dotted paths."""
        h = Harness(one_group(), ROUTING + ["tests.plugin_with_class"], {UP: echo})
        self.assertEqual([p["name"] for p in h.config["plugins"]],
                         ["router", "least_conn", "tests.plugin_with_class"])

    def test_routes(self):
        """An object entry may be enabled for some routes only."""
        h = Harness(one_group(**{"upstreams": {"api": {"peers": [UP]},
                                               "web": {"peers": [UP]}}}),
                    ["router", {"name": Tag, "settings": {"value": "api only"},
                                "routes": ["api"]}, "least_conn"], {UP: echo})
        self.assertEqual(h.request("GET", "/api/x").headers.get("x-tag"), "api only")
        self.assertNotIn("x-tag", h.request("GET", "/web/x").headers)

    def test_recorderRunsLast(self):
        """The harness's ``log`` runs after every other one, trylast ones too."""
        h = Harness(one_group(), [LastInLog()] + ROUTING + [LOGGER], {UP: echo})
        self.assertEqual(h.gateway.phases.names("log"),
                         ["access_log", "LastInLog", "tproxy.testing"])
        h.request("GET", "/api/x")
        self.assertTrue(h.contexts[0].vars["last"])

    def test_configUntouched(self):
        """The gateway's configuration lists the plugins given, no more."""
        h = Harness(plugins=ROUTING)
        self.assertEqual(h.gateway.config["plugins"], [
            {"name": "router", "settings": {}}, {"name": "least_conn", "settings": {}}])

    def test_startFails(self):
        """A failing ``init_worker`` fails the harness's construction."""
        self.assertRaises(ValueError, Harness, plugins=[Broken()])


class ClockTests(SynchronousTestCase):
    """The clock moves only with :meth:`Harness.advance`."""

    def test_sameOrderAsTwisted(self):
        """The harness's clock keeps its calls, and runs them, in the order
        Twisted's ``Clock`` does, whatever is scheduled, rescheduled
        (earlier, later, delayed) or cancelled, and from within calls."""
        self.assertIsInstance(Harness().clock, _Clock)
        self.assertTrue(issubclass(_Clock, MemoryReactorClock))
        rnd = random.Random(1)
        clocks = [(_Clock(), []), (MemoryReactorClock(), [])]
        for step in range(600):
            op, when = rnd.random(), rnd.choice((0, 0.5, 1, 1, 2, 3.5))
            nested, n = rnd.random() < 0.2, len(clocks[1][0].calls)
            k = rnd.randrange(n) if n else None
            for clock, fired in clocks:
                calls = clock.getDelayedCalls()
                if op < 0.4 or k is None:
                    clock.callLater(when, lambda f=fired, s=step, c=clock, w=when: (
                        f.append(s), nested and c.callLater(w / 2, f.append, -s)))
                elif op < 0.55:
                    calls[k].reset(when)
                elif op < 0.65:
                    calls[k].delay(when - 1)
                elif op < 0.75:
                    calls[k].cancel()
                else:
                    clock.advance(when / 2)
            self.assertEqual(clocks[0][1], clocks[1][1], step)
            self.assertEqual([c.getTime() for c in clocks[0][0].getDelayedCalls()],
                             [c.getTime() for c in clocks[1][0].getDelayedCalls()], step)
        self.assertGreater(len(clocks[0][1]), 200)

    def test_loopingCall(self):
        """Timers fire at their own times on the way; their logs are kept."""
        ticker = Ticker()
        h = Harness(plugins=[ticker])
        self.assertEqual(ticker.ticks, [])
        h.advance(35)
        self.assertEqual(ticker.ticks, [10, 20, 30])
        self.assertEqual(h.clock.seconds(), 35)
        self.assertEqual([m for m in h.messages() if m.startswith("tick")],
                         ["tick 1", "tick 2", "tick 3"])

    def test_stop(self):
        """:meth:`Harness.stop` runs the ``on_stop`` callbacks."""
        ticker = Ticker()
        h = Harness(plugins=[ticker])
        h.stop()
        h.advance(100)
        self.assertEqual(ticker.ticks, [])

    def test_fractions(self):
        """Advancing by fractions lands on exact times."""
        h = Harness()
        for _ in range(10):
            h.advance(0.1)
        self.assertAlmostEqual(h.clock.seconds(), 1.0)


class AdminTests(SynchronousTestCase):
    """The admin API, without HTTP."""

    def test_route(self):
        """A plugin's admin route answers."""
        h = Harness(plugins=[Hello()])
        answer = h.admin("GET", "/hello?name=tproxy")
        self.assertEqual((answer.status, answer.obj), (200, {"hello": "tproxy"}))
        self.assertEqual(h.admin("GET", "/nope").status, 404)

    def test_token(self):
        """The token check applies."""
        h = Harness(config={"admin": {"token": "s3cret"}}, plugins=[Hello()])
        self.assertEqual(h.admin("GET", "/hello").status, 401)
        answer = h.admin("GET", "/hello", headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(answer.status, 200)


class EventTests(SynchronousTestCase):
    """What was logged while the harness worked."""

    def test_accessLogTargetKept(self):
        """An access_log entry with a target of its own keeps it."""
        path = os.path.abspath(temp_path(self))
        h = Harness(one_group(), ROUTING + [
            {"name": "access_log", "settings": {"path": path}}], {UP: echo})
        h.request("GET", "/api/x")
        h.stop()
        with open(path) as f:
            self.assertEqual(json.loads(f.read())["uri"], "/api/x")
        self.assertEqual([e for e in h.events if "access_log" in e], [])

    def test_accessLog(self):
        """The access_log plugin's records are among the events (its default
        target in a harness is ``"logger"``)."""
        h = Harness(one_group(), ROUTING + ["access_log"], {UP: echo})
        self.assertEqual(h.gateway.plugins.get_plugin("access_log").target, "logger")
        self.assertEqual(h.config["plugins"][-1], {"name": "access_log", "settings": {}})
        h.request("GET", "/api/x")
        [record] = [e["access_log"] for e in h.events if "access_log" in e]
        self.assertEqual((record["status"], record["route"], record["upstream_addr"]),
                         (200, "api", UP))
        self.assertEqual(json.loads(h.messages()[-1]), record)


# -- the stream harness ------------------------------------------------------------


REDIS = "127.0.0.1:6379"


class AllowList(object):
    """A ``stream_access`` plugin: refuses the clients of ``denied``."""

    def __init__(self, *denied):
        self.denied = denied

    @hookimpl
    def stream_access(self, ctx):
        """Refuse the clients in ``denied`` with a Redis error."""
        if ctx.client_addr in self.denied:
            return b"-ERR not allowed\r\n"
        ctx.vars["allowed"] = True
        return None


class StreamLog(object):
    """A ``stream_log`` plugin: counts the calls per connection id."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def stream_log(self, ctx):
        """Record the connection."""
        self.calls.append((ctx.connection_id, ctx.reason))


def stream_harness(*plugins, **kwargs):
    """A stream listener of the group ``redis`` with ``plugins`` and ``least_conn``."""
    servers = kwargs.pop("servers", None)
    if servers is None:
        servers = {REDIS: StreamServer(echo=True)}
    stream = dict({"group": "redis", "timeouts": {"idle": 30, "connect": 5}}, **kwargs)
    return StreamHarness(
        config={"upstreams": {"redis": {"peers": [REDIS]}}},
        stream=stream, plugins=list(plugins) + ["least_conn"], servers=servers)


class StreamHarnessTests(SynchronousTestCase):
    """:class:`StreamHarness`: a stream listener, clients and stub servers in memory."""

    def test_accessDenied(self):
        """A client ``stream_access`` refuses gets the bytes, then is closed."""
        log = StreamLog()
        h = stream_harness(AllowList("192.0.2.66"), log)
        client = h.connect(client="192.0.2.66")
        self.assertEqual(client.received, b"-ERR not allowed\r\n")
        self.assertTrue(client.eof)
        self.assertTrue(client.closed)
        self.assertFalse(client.reset)
        [ctx] = h.logged
        self.assertIs(ctx, client.context)
        self.assertEqual((ctx.reason, ctx.status, ctx.error), ("access_denied", 403,
                                                               "access_denied"))
        self.assertEqual(ctx.client_addr, "192.0.2.66")
        self.assertEqual(ctx.tried, ())
        self.assertEqual(h.upstream_connections, [])
        self.assertEqual(log.calls, [(1, "access_denied")])
        self.assertIn("stream redis: 192.0.2.66:40000 refused by stream_access", h.messages())

    def test_echoBothWays(self):
        """Bytes go through a stub upstream and back; a half-close ends it cleanly."""
        server = StreamServer(echo=True)
        h = stream_harness(AllowList(), servers={REDIS: server})
        client = h.connect(client="192.0.2.7", port=5555)
        client.send(b"PING\r\n")
        client.send(b"GET k\r\n")
        [upstream] = h.upstream_connections
        self.assertEqual(server.connections, [upstream])
        self.assertEqual(upstream.received, b"PING\r\nGET k\r\n")
        self.assertEqual(client.received, b"PING\r\nGET k\r\n")
        self.assertEqual(upstream.local, REDIS)
        self.assertIs(upstream.context, client.context)
        self.assertEqual(h.logged, [])
        client.half_close()
        self.assertTrue(upstream.eof)
        self.assertTrue(client.eof)
        self.assertTrue(client.closed and upstream.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status, ctx.error), ("client_closed", 200, None))
        self.assertEqual(ctx.client, "192.0.2.7:5555")
        self.assertEqual((ctx.server_addr, ctx.server_port), ("127.0.0.1", 6380))
        self.assertEqual(ctx.upstream_addr, REDIS)
        self.assertEqual((ctx.bytes_received, ctx.bytes_sent), (13, 13))
        self.assertEqual((ctx.upstream_bytes_sent, ctx.upstream_bytes_received), (13, 13))
        self.assertTrue(ctx.vars["allowed"])
        self.assertEqual(ctx.peer.active, 0)

    def test_upstreamSpeaksFirst(self):
        """A stub's greeting and close reach the client: ``upstream_closed``."""
        h = stream_harness(servers={REDIS: StreamServer(greeting=b"hello\n")})
        client = h.connect(close_on_eof=False)
        self.assertEqual(client.received, b"hello\n")
        h.upstream_connections[0].close()
        self.assertTrue(client.eof)
        self.assertFalse(client.closed)     # half-open until it closes
        self.assertEqual(h.logged, [])
        client.close()
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status), ("upstream_closed", 200))

    def test_idleTimeout(self):
        """No byte for ``timeouts.idle``: both sides are closed (a FIN, as
        nginx's ``proxy_timeout``: the client reads an end, not a reset)."""
        h = stream_harness()
        client = h.connect()
        client.send(b"x")
        h.advance(29)
        self.assertFalse(client.closed)
        self.assertEqual(h.logged, [])
        h.advance(1)
        upstream = h.upstream_connections[0]
        self.assertEqual((client.received, client.eof, client.closed, client.reset),
                         (b"x", True, True, False))
        self.assertEqual((upstream.eof, upstream.closed, upstream.reset), (True, True, False))
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status), ("idle_timeout", 200))
        self.assertEqual(ctx.session_time(), 30)

    def test_idleTimeoutUnread(self):
        """The idle timeout's close sends what is buffered; to a client that
        reads none of it, the connection is aborted 5 s later (the upstream,
        which took its FIN, is closed)."""
        h = stream_harness(timeouts={"idle": 30})
        client = h.connect()
        client.stop_reading()
        upstream = h.upstream_connections[0]
        upstream.send(b"+" * 100000)
        self.assertEqual(client.received, b"")
        h.advance(30)
        self.assertEqual((upstream.eof, upstream.closed, upstream.reset), (True, True, False))
        self.assertFalse(client.closed)
        self.assertEqual(h.logged, [])
        h.advance(4.9)
        self.assertFalse(client.closed)
        h.advance(0.1)
        self.assertEqual((client.closed, client.reset), (True, True))
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status), ("idle_timeout", 200))
        self.assertEqual(ctx.session_time(), 35)

    def test_resets(self):
        """An abort on either side is a reset on the other."""
        h = stream_harness()
        first = h.connect()
        first.abort()
        self.assertTrue(h.upstream_connections[0].reset)
        second = h.connect()
        h.upstream_connections[1].abort()
        self.assertTrue(second.closed)
        self.assertEqual([(c.reason, c.status) for c in h.logged],
                         [("client_reset", 200), ("upstream_reset", 200)])

    def test_connectTimeout(self):
        """An unreachable stub: the connect attempt times out on the clock."""
        h = stream_harness(servers={REDIS: UNREACHABLE}, tries=1)
        client = h.connect()
        client.send(b"early")
        h.advance(4.5)
        self.assertEqual(h.logged, [])
        h.advance(0.5)
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status), ("connect_timeout", 502))

    def test_refused(self):
        """An address without a stub refuses: 502 once no peer is left."""
        h = stream_harness(servers={})
        client = h.connect()
        self.assertTrue(client.closed)
        [ctx] = h.logged
        self.assertEqual((ctx.reason, ctx.status, len(ctx.tried)), ("connect_failed", 502, 1))

    def test_logOncePerSession(self):
        """``stream_log`` runs exactly once per connection, however it ends."""
        log = StreamLog()
        h = stream_harness(AllowList("192.0.2.66"), log)
        h.connect(client="192.0.2.66")
        h.connect().close()
        h.connect().abort()
        h.connect().half_close()
        idle = h.connect()
        h.advance(60)
        self.assertTrue(idle.closed)
        h.advance(600)
        self.assertEqual(sorted(log.calls), [
            (1, "access_denied"), (2, "client_closed"), (3, "client_reset"),
            (4, "client_closed"), (5, "idle_timeout")])
        self.assertEqual([c.connection_id for c in h.logged], [1, 2, 3, 4, 5])
        self.assertEqual(h.factory.sessions, set())

    def test_stop(self):
        """``stop`` aborts the open sessions: ``shutdown``."""
        h = stream_harness()
        client = h.connect()
        h.stop()
        self.assertTrue(client.reset)
        self.assertEqual([c.reason for c in h.logged], ["shutdown"])

    def test_proxyProtocol(self):
        """The upstream receives the PROXY header with the client's address."""
        h = stream_harness(proxy_protocol="v1")
        h.connect(client="192.0.2.1", port=56324).send(b"x")
        self.assertEqual(h.upstream_connections[0].received,
                         b"PROXY TCP4 192.0.2.1 127.0.0.1 56324 6380\r\nx")

    def test_streamFromConfig(self):
        """Without ``stream``, the configuration's first entry is the listener."""
        h = StreamHarness(config={"streams": [{"listen": "tcp:7000", "group": "g"}]},
                          plugins=["least_conn"])
        self.assertEqual(h.stream["group"], "g")
        self.assertEqual(h.stream["tries"], 0)   # (validated: defaults applied)
        self.assertEqual(h.connect().context.reason, "no_peer")
        self.assertRaises(ValueError, StreamHarness)

    def test_badStub(self):
        """A stub stream server must be a protocol factory."""
        self.assertRaises(TypeError, stream_harness, servers={REDIS: echo})
