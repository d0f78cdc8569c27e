"""
Tests for :mod:`tproxy.builtins.rate_limit` with ``policy: redis`` against a
real ``redis-server`` started on a free loopback port (and stopped by its
PID), through proxies listening on real sockets: counters shared between
gateways, the ``EVALSHA`` / ``EVAL`` fallback, and what happens when Redis is
unreachable or silent.
"""

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from tests.helpers import ProxyTestCase, capture_log, log_messages, until
from tests.redis_server import redis_command, start_redis


class Silent(Protocol):
    """Accepts and never answers (a Redis that hangs)."""


class RedisPolicyTests(ProxyTestCase):
    """Two gateways sharing one Redis."""

    def setUp(self):
        ProxyTestCase.setUp(self)
        self.events = capture_log(self)

    def messages(self):
        return log_messages(self.events, "tproxy.builtins.rate_limit")

    async def gateway(self, up, port, **settings):
        settings.setdefault("policy", "redis")
        redis = settings.setdefault("redis", {})
        redis.setdefault("port", port)
        redis.setdefault("retry_interval", 0.1)
        # a real Redis answers within 0.1 s (the default), but not always a
        # loaded CI machine's: a late answer would let a request through
        redis.setdefault("timeout", 10)
        return await self.proxy({"default": [up]}, plugins=[
            "router", {"name": "rate_limit", "settings": settings}, "least_conn"])

    async def test_sharedBetweenGateways(self):
        """Both gateways take from the same bucket; the RateLimit fields say so."""
        port = await start_redis(self)
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
        port = await start_redis(self)
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
        """Redis down: requests pass without waiting (logged once); when it
        is back (logged once), counting resumes."""
        port = self.closed_port()
        up = self.upstream()
        # the first request waits for the timeout (the connection is being
        # tried): a short one while Redis is down
        proxy = await self.gateway(up, port, rate=1, period=60, on_redis_error="allow",
                                   redis={"timeout": 0.05, "retry_interval": 0.01})
        for _ in range(3):
            resp = await self.get(proxy, "/")
            self.assertEqual(resp.status, 200)
            self.assertIsNone(resp.header("RateLimit-Limit"))
        [down] = self.messages()
        self.assertIn("Redis at 127.0.0.1:%d failed" % port, down)
        self.assertIn("requests are allowed", down)
        # ... and the usual generous one once it is back (a loaded machine's
        # late answer would let the last request through)
        proxy.gateway.plugins.get_plugin("rate_limit").redis.timeout = 10
        await start_redis(self, port)
        await until(lambda: len(self.messages()) == 2, 10, message="the probe")
        self.assertIn("answers again", self.messages()[1])
        self.assertEqual((await self.get(proxy, "/")).status, 200)
        self.assertEqual((await self.get(proxy, "/")).status, 429)

    async def test_silentFailClosed(self):
        """Redis that does not answer within the timeout: with ``deny``, 503;
        later requests are refused at once, not after another timeout."""
        factory = Factory.forProtocol(Silent)
        listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self._listeners.append(listener)
        up = self.upstream()
        proxy = await self.gateway(up, listener.getHost().port, rate=5,
                                   on_redis_error="deny",
                                   redis={"timeout": 0.05, "retry_interval": 30})
        for _ in range(2):
            resp = await self.get(proxy, "/")
            self.assertEqual(resp.status, 503)
            self.assertEqual(resp.json(), {"error": "rate limit unavailable"})
            self.assertEqual(resp.header("Retry-After"), "30")
        [down] = self.messages()
        self.assertIn("no answer within 0.05 s", down)
        self.assertIn("refused (503)", down)
        plugin = proxy.gateway.plugins.get_plugin("rate_limit")
        self.assertFalse(plugin.redis.up)
        self.assertEqual(up.requests, [])
