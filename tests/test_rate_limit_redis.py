"""
Tests for :mod:`tproxy.builtins.rate_limit` with ``policy: redis`` against a
real ``redis-server`` started on a free loopback port (and stopped by its
PID), through proxies listening on real sockets: counters shared between
gateways, the ``EVALSHA`` / ``EVAL`` fallback, and what happens when Redis is
unreachable or silent.
"""

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol

from tproxy.builtins._rate_limit_algorithms import TokenBucket
from tproxy.builtins._rate_limit_stores import RedisStore

from tests.helpers import (ClockedReactor, ProxyTestCase, capture_log, log_messages, turns,
                           until)
from tests.redis_server import (logged as redis_logged, redis_command, run_redis, shared_redis,
                                 start_redis)

NAMESPACE = "tproxy.builtins.rate_limit"

#: seconds a request would wait for Redis: a request that waited would
#: outlast the test's own timeout
FOREVER = 3600


class Silent(Protocol):
    """Accepts and never answers (a Redis that hangs)."""


def logged(case, text):
    """The first message of the plugin containing ``text`` from now on."""
    return redis_logged(case, NAMESPACE, text)


class RedisPolicyTests(ProxyTestCase):
    """Two gateways sharing one Redis."""

    #: no test waits long for anything: one that waited ``FOREVER`` fails
    timeout = 30

    def setUp(self):
        ProxyTestCase.setUp(self)
        self.events = capture_log(self)

    def messages(self):
        return log_messages(self.events, NAMESPACE)

    async def gateway(self, up, port, clock=None, **settings):
        settings.setdefault("policy", "redis")
        redis = settings.setdefault("redis", {})
        redis.setdefault("port", port)
        redis.setdefault("retry_interval", 0.1)
        # a real Redis answers within 0.1 s (the default), but not always a
        # loaded CI machine's: a late answer would let a request through
        redis.setdefault("timeout", 10)
        return await self.proxy({"default": [up]}, plugins=[
            "router", {"name": "rate_limit", "settings": settings}, "least_conn"], clock=clock)

    async def test_sharedBetweenGateways(self):
        """Both gateways take from the same bucket; the RateLimit fields say so."""
        port = (await shared_redis(self)).port
        up = self.upstream()
        a = await self.gateway(up, port, rate=1, period=60, burst=3)
        b = await self.gateway(up, port, rate=1, period=60, burst=3)
        statuses = []
        for proxy in (a, b, a, b):
            resp = await self.get(proxy, "/x")
            statuses.append(resp.status)
        self.assertEqual(statuses, [200, 200, 200, 429])
        self.assertEqual(resp.header("RateLimit-Limit"), "3")
        self.assertEqual(resp.header("RateLimit-Remaining"), "0")
        self.assertEqual(resp.header("Retry-After"), "60")
        self.assertEqual(resp.json()["error"], "rate limit exceeded")
        self.assertEqual(len(up.requests), 3)
        # one hash per key, which expires
        keys = await redis_command(port, "KEYS", "tproxy:rl:*")
        self.assertEqual(len(keys), 1)
        ttl = await redis_command(port, "PTTL", keys[0])
        self.assertTrue(0 < ttl <= 181000, ttl)

    async def test_slidingWindowAndScriptFlush(self):
        """The sliding window in Redis; after SCRIPT FLUSH (NOSCRIPT) the
        script is sent again with EVAL and the counting goes on."""
        port = (await shared_redis(self)).port
        up = self.upstream()
        proxy = await self.gateway(up, port, algorithm="sliding_window", rate=2, period=60)
        first = await self.get(proxy, "/")
        self.assertEqual(first.status, 200)
        self.assertEqual(first.header("RateLimit-Remaining"), "1")
        await redis_command(port, "SCRIPT", "FLUSH")
        self.assertEqual((await self.get(proxy, "/")).status, 200)
        self.assertEqual((await self.get(proxy, "/")).status, 429)
        self.assertEqual(self.messages(), [])

    async def test_unreachableFailOpenThenBack(self):
        """No Redis at start: the refused connection is logged once and
        requests pass at once (not after ``redis.timeout``); when Redis comes
        (logged once), counting resumes."""
        port = self.closed_port()
        up = self.upstream()
        down = logged(self, "failed")
        proxy = await self.gateway(up, port, rate=1, period=60, on_redis_error="allow",
                                   redis={"timeout": FOREVER, "retry_interval": 0.01})
        for _ in range(3):
            resp = await self.get(proxy, "/")
            self.assertEqual(resp.status, 200)
            self.assertIsNone(resp.header("RateLimit-Limit"))
        self.assertIn("Redis at 127.0.0.1:%d failed (cannot connect: " % port, await down)
        self.assertIn("requests are allowed", self.messages()[0])
        back = logged(self, "answers again")
        await start_redis(self, port)
        await back
        self.assertEqual((await self.get(proxy, "/")).status, 200)
        self.assertEqual((await self.get(proxy, "/")).status, 429)
        self.assertEqual(len(self.messages()), 2)

    async def test_waitingForTheFirstConnection(self):
        """A decision asked for while the first connection is being made
        waits for it, and is answered (``None``) as soon as it fails."""
        settings = {"host": "127.0.0.1", "port": self.closed_port(), "db": 0,
                    "password": None, "pool_size": 2, "timeout": FOREVER,
                    "connect_timeout": 1, "retry_interval": 30}
        store = RedisStore(TokenBucket(1, 1, 1), settings, "test:")
        store.start(reactor)
        self.addCleanup(store.stop)
        pending = store.decide("k")         # connecting: not refused yet
        self.assertFalse(pending.called)
        self.assertIsNone(await pending)
        self.assertFalse(store.up)
        self.assertIsNone(store.decide("k"))    # known down: at once
        [down] = self.messages()
        self.assertIn("failed (cannot connect: ", down)

    async def test_stoppedAnswersAtOnce(self):
        """Redis stopped while the gateway runs: the lost connections are
        logged once and every request is refused (``deny``) at once, however
        long ``redis.timeout`` is; when Redis is back (logged once), counting
        resumes."""
        server = await run_redis(self)
        up = self.upstream()
        proxy = await self.gateway(up, server.port, rate=1, period=60, burst=2,
                                   on_redis_error="deny",
                                   redis={"timeout": FOREVER, "retry_interval": 0.01})
        self.assertEqual((await self.get(proxy, "/")).header("RateLimit-Remaining"), "1")
        down = logged(self, "failed")
        await server.stop()
        self.assertIn("failed (connection lost); requests are refused (503)", await down)
        store = proxy.plugin("rate_limit").redis
        self.assertIsNone(store.decide("k"))    # no Deferred: Redis is not asked
        for _ in range(3):
            resp = await self.get(proxy, "/")
            self.assertEqual(resp.status, 503)
            self.assertEqual(resp.json(), {"error": "rate limit unavailable"})
        back = logged(self, "answers again")
        await run_redis(self, server.port)      # empty: a full bucket
        await back
        resp = await self.get(proxy, "/")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("RateLimit-Remaining"), "1")
        self.assertEqual(len(self.messages()), 2, self.messages())
        self.assertEqual(len(up.requests), 2)

    def silent_redis(self):
        """A server that reads commands and never answers: the list of what
        it received, and its port."""
        received = []

        class Recording(Silent):
            def dataReceived(self, data):
                received.append(data)
        listener = reactor.listenTCP(0, Factory.forProtocol(Recording), interface="127.0.0.1")
        self._listeners.append(listener)
        return received, listener.getHost().port

    async def test_clientGoneWhileWaiting(self):
        """A client that goes away while its decision is awaited: the wait
        is cancelled, and that is no failure of Redis (still up, no line)."""
        received, redis_port = self.silent_redis()
        up = self.upstream()
        proxy = await self.gateway(up, redis_port, rate=5)
        client = await self.connect(proxy)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: received, message="the command to reach Redis")
        client.transport.abortConnection()
        await client.lost
        await until(lambda: proxy.factory.open_connections == 0,
                    message="the proxy to see the client gone")
        plugin = proxy.gateway.plugins.get_plugin("rate_limit")
        self.assertTrue(plugin.redis.up)
        self.assertEqual(self.messages(), [])
        self.assertEqual(up.requests, [])

    async def test_silentFailClosed(self):
        """Redis that does not answer within the timeout: with ``deny``, 503;
        later requests are refused at once, not after another timeout (the
        proxy's clock a fake one, moved once the command reached Redis)."""
        received, redis_port = self.silent_redis()
        up = self.upstream()
        clock = ClockedReactor()
        proxy = await self.gateway(up, redis_port, clock=clock, rate=5,
                                   on_redis_error="deny",
                                   redis={"timeout": 0.05, "retry_interval": 30})
        first = defer.ensureDeferred(self.get(proxy, "/"))
        await until(lambda: received, message="the command to reach Redis")
        clock.advance(0.05 - 2 ** -7)
        await turns()
        self.assertFalse(first.called)
        clock.advance(2 ** -7)
        for i in range(2):
            resp = await first if i == 0 else await self.get(proxy, "/")
            self.assertEqual(resp.status, 503)
            self.assertEqual(resp.json(), {"error": "rate limit unavailable"})
            self.assertEqual(resp.header("Retry-After"), "30")
        [down] = self.messages()
        self.assertIn("no answer within 0.05 s", down)
        self.assertIn("refused (503)", down)
        plugin = proxy.gateway.plugins.get_plugin("rate_limit")
        self.assertFalse(plugin.redis.up)
        self.assertEqual(up.requests, [])
