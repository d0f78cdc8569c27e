"""
Tests for :mod:`tproxy.builtins.rate_limit` with ``policy: local``, through
:mod:`tproxy.testing` on the fake clock (the Redis policy:
``tests.test_rate_limit_redis``).
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.builtins._rate_limit_algorithms import SlidingWindow, TokenBucket
from tproxy.builtins._rate_limit_stores import LocalStore
from tproxy.config import ConfigError
from tproxy.testing import Harness, echo

UPSTREAMS = {"upstreams": {"default": {"peers": ["127.0.0.1:9001"]},
                           "api": {"peers": ["127.0.0.1:9002"]}}}


def harness(routes=None, **settings):
    entry = {"name": "rate_limit", "settings": settings}
    if routes is not None:
        entry["routes"] = routes
    return Harness(config=UPSTREAMS, plugins=["router", entry, "least_conn"],
                   servers={"127.0.0.1:9001": echo, "127.0.0.1:9002": echo})


def fields(response):
    return tuple(response.headers.get(n) for n in (
        "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))


class TokenBucketTests(SynchronousTestCase):
    """``algorithm: token_bucket`` (the default) on the fake clock."""

    def test_burstThenRefused(self):
        """``burst`` requests pass at once; the next gets a 429 with
        Retry-After and the RateLimit fields, and no upstream sees it."""
        h = harness(rate=1, burst=3)
        got = [h.request("GET", "/x") for _ in range(3)]
        self.assertEqual([r.status for r in got], [200, 200, 200])
        self.assertEqual([fields(r) for r in got],
                         [("3", "2", "1"), ("3", "1", "2"), ("3", "0", "3")])
        refused = h.request("GET", "/x")
        self.assertEqual(refused.status, 429)
        self.assertEqual(refused.json(), {"error": "rate limit exceeded", "retry_after": 1})
        self.assertEqual(refused.headers.get("Retry-After"), "1")
        self.assertEqual(fields(refused), ("3", "0", "3"))
        self.assertEqual(len(h.upstream_requests), 3)
        self.assertEqual(h.contexts[-1].status, 429)

    def test_refill(self):
        """Tokens come back at ``rate / period`` per second of the reactor's clock."""
        h = harness(rate=2, period=10, burst=2)   # one token every 5 s
        self.assertEqual([h.request("GET", "/").status for _ in range(3)], [200, 200, 429])
        self.assertEqual(h.request("GET", "/").headers.get("Retry-After"), "5")
        h.advance(4.9)
        self.assertEqual(h.request("GET", "/").status, 429)
        h.advance(0.1)
        self.assertEqual(h.request("GET", "/").status, 200)
        self.assertEqual(h.request("GET", "/").status, 429)

    def test_perClient(self):
        """The default key is the client's address."""
        h = harness(rate=1)
        self.assertEqual(h.request("GET", "/", client="192.0.2.1").status, 200)
        self.assertEqual(h.request("GET", "/", client="192.0.2.1").status, 429)
        self.assertEqual(h.request("GET", "/", client="192.0.2.2").status, 200)

    def test_headerKey(self):
        """A header as the key; without it, the client's address stands in."""
        h = harness(rate=1, key="header:X-API-Key")
        self.assertEqual(h.request("GET", "/", headers={"X-API-Key": "a"}).status, 200)
        self.assertEqual(h.request("GET", "/", headers={"X-API-Key": "a"}).status, 429)
        self.assertEqual(h.request("GET", "/", headers={"X-API-Key": "b"}).status, 200)
        self.assertEqual(h.request("GET", "/").status, 200)
        self.assertEqual(h.request("GET", "/").status, 429)

    def test_headerCannotSpendAnAddressQuota(self):
        """A header holding an address is not that client's count: a client
        sending ``X-API-Key: 192.0.2.7`` neither spends nor shares the
        quota of 192.0.2.7, which sends no key."""
        h = harness(rate=1, key=["header:X-API-Key", "route"])
        spoof = {"X-API-Key": "192.0.2.7"}
        self.assertEqual(h.request("GET", "/", headers=spoof, client="192.0.2.66").status,
                         200)
        self.assertEqual(h.request("GET", "/", client="192.0.2.7").status, 200)
        self.assertEqual(h.request("GET", "/", client="192.0.2.7").status, 429)
        self.assertEqual(h.request("GET", "/", headers=spoof, client="192.0.2.66").status,
                         429)

    def test_consumerKey(self):
        """``consumer`` counts per ``ctx.consumer`` (set by an auth plugin)."""
        from tproxy import hookimpl

        class Auth(object):
            @hookimpl
            def access(self, ctx):
                ctx.consumer = ctx.request.headers.get("X-User")

        h = Harness(config=UPSTREAMS, plugins=[
            "router", Auth(), {"name": "rate_limit", "settings": {"rate": 1, "key": "consumer"}},
            "least_conn"], servers={"127.0.0.1:9001": echo})
        self.assertEqual(h.request("GET", "/", headers={"X-User": "alice"}).status, 200)
        self.assertEqual(h.request("GET", "/", headers={"X-User": "alice"}).status, 429)
        self.assertEqual(h.request("GET", "/", headers={"X-User": "bob"}).status, 200)

    def test_routeKeyAndCombined(self):
        """``route`` counts every client of a route together; a list combines parts."""
        h = harness(rate=1, key="route")
        self.assertEqual(h.request("GET", "/api/a", client="192.0.2.1").status, 200)
        self.assertEqual(h.request("GET", "/api/a", client="192.0.2.2").status, 429)
        self.assertEqual(h.request("GET", "/b", client="192.0.2.2").status, 200)
        h = harness(rate=1, key=["route", "client_addr"])
        self.assertEqual(h.request("GET", "/api/a", client="192.0.2.1").status, 200)
        self.assertEqual(h.request("GET", "/api/a", client="192.0.2.2").status, 200)
        self.assertEqual(h.request("GET", "/b", client="192.0.2.2").status, 200)
        self.assertEqual(h.request("GET", "/api/b", client="192.0.2.2").status, 429)

    def test_perRoute(self):
        """Enabled for some routes only, the others are not limited (nor told)."""
        h = harness(routes=["api"], rate=1)
        self.assertEqual(h.request("GET", "/api/x").status, 200)
        self.assertEqual(h.request("GET", "/api/x").status, 429)
        free = h.request("GET", "/other")
        self.assertEqual(free.status, 200)
        self.assertIsNone(free.headers.get("RateLimit-Limit"))

    def test_headersOff(self):
        """``"headers": false``: allowed responses carry no RateLimit fields
        (and the plugin has no header_filter to run); a 429 still does."""
        h = harness(rate=1, headers=False)
        self.assertIsNone(h.request("GET", "/").headers.get("RateLimit-Limit"))
        self.assertEqual(h.request("GET", "/").headers.get("RateLimit-Limit"), "1")
        self.assertNotIn("rate_limit", h.gateway.phases.names("header_filter"))


class SlidingWindowTests(SynchronousTestCase):
    """``algorithm: sliding_window``."""

    def test_window(self):
        """At most ``rate`` in the window; the previous window weighs by its overlap."""
        h = harness(algorithm="sliding_window", rate=4, period=10)
        h.advance(1000)                   # the start of a window
        got = [h.request("GET", "/") for _ in range(5)]
        self.assertEqual([r.status for r in got], [200, 200, 200, 200, 429])
        self.assertEqual([fields(r)[1] for r in got], ["3", "2", "1", "0", "0"])
        self.assertEqual(got[0].headers.get("RateLimit-Reset"), "10")
        # in the next window the 4 weigh 4 * (1 - elapsed): one more fits
        # once a quarter of it has gone, 12.5 s from now
        self.assertEqual(got[4].headers.get("Retry-After"), "13")
        # a 429's RateLimit-Reset is not before its Retry-After: at the
        # window's end (10 s) the quota is still spent
        self.assertEqual(got[4].headers.get("RateLimit-Reset"), "13")
        h.advance(12.5)                   # 25 % into the next window: 4 * 0.75 = 3 used
        self.assertEqual(h.request("GET", "/").status, 200)
        self.assertEqual(h.request("GET", "/").status, 429)

    def test_arithmetic(self):
        """The Decision's numbers, straight from the algorithm."""
        w = SlidingWindow(10, 60)
        state = w.fresh(600)
        for _ in range(6):
            w.decide(state, 600)
        d = w.decide(state, 630)          # window 10, half-way: 6 in it
        self.assertEqual((d.allowed, d.remaining, d.reset), (True, 3, 30))
        state = [9, 10, 0]                # window 9 full
        d = w.decide(state, 600)          # at the start of window 10
        self.assertEqual((d.allowed, d.retry_after), (False, 6))   # 10 % of it


class LocalStoreTests(SynchronousTestCase):
    """Memory: bounded, idle records dropped."""

    def test_boundedKeys(self):
        store = LocalStore(TokenBucket(1, 1, 1), max_keys=3)
        for i in range(10):
            store.decide("k%d" % i, 0.0)
        self.assertEqual(list(store.records), ["k7", "k8", "k9"])

    def test_idleDropped(self):
        """A key idle past the time its bucket refills is dropped when a new
        key comes (memory grows only then)."""
        store = LocalStore(TokenBucket(1, 1, 5), max_keys=100)    # full again after 5 s
        for i in range(4):
            store.decide("k%d" % i, float(i))
        store.decide("k9", 5.5)           # k0 idle for 5.5 s: dropped
        self.assertEqual(list(store.records), ["k1", "k2", "k3", "k9"])
        store.decide("k9", 100.0)         # a known key: nothing dropped
        self.assertEqual(list(store.records), ["k1", "k2", "k3", "k9"])
        store.decide("k10", 100.0)        # a new one: at most two dropped
        self.assertEqual(list(store.records), ["k3", "k9", "k10"])

    def test_lruOrder(self):
        """A key seen again moves to the end: it is not the next evicted."""
        store = LocalStore(TokenBucket(1, 1, 1), max_keys=2)
        store.decide("a", 0.0)
        store.decide("b", 0.0)
        store.decide("a", 0.0)
        store.decide("c", 0.0)
        self.assertEqual(list(store.records), ["a", "c"])

    def test_longIdentifierHashed(self):
        """A long header value is kept as its digest (bounded memory per key)."""
        h = harness(rate=1, key="header:X-K")
        h.request("GET", "/", headers={"X-K": "v" * 5000})
        plugin = h.gateway.plugins.get_plugin("rate_limit")
        [key] = plugin.store.records
        self.assertEqual(len(key), 40)


class SettingsTests(SynchronousTestCase):
    """Bad settings are refused with their JSON path."""

    def assertRefused(self, settings, path):
        with self.assertRaises(ConfigError) as e:
            harness(**settings)
        self.assertIn(path, str(e.exception))

    def test_errors(self):
        self.assertRefused({}, "plugins[1].settings")
        self.assertRefused({"rate": 0}, "plugins[1].settings.rate")
        self.assertRefused({"rate": 1, "key": "cookie:x"}, "plugins[1].settings.key")
        self.assertRefused({"rate": 1, "policy": "memcached"}, "plugins[1].settings.policy")
        self.assertRefused({"rate": 1, "redis": {"port": 0}}, "plugins[1].settings.redis.port")
        self.assertRefused({"rate": 1.5, "algorithm": "sliding_window"},
                           "plugins[1].settings.rate")
        self.assertRefused({"rate": 1, "burst": 2, "algorithm": "sliding_window"},
                           "plugins[1].settings.burst")

    def test_rateOutOfRange(self):
        """A rate so slow that ``rate / period`` is 0 (a ZeroDivisionError at
        start, not a config error), slower than one request a year, or
        infinite is refused by its path; so is a period past a year."""
        for settings, path in [
                ({"rate": 1e-300, "period": 1e300}, "plugins[1].settings.period"),
                ({"rate": 1e-320, "period": 10}, "plugins[1].settings.rate"),
                ({"rate": 1, "period": 31536001}, "plugins[1].settings.period"),
                ({"rate": 0.5, "period": 31536000}, "plugins[1].settings.rate"),
                ({"rate": 1e308, "period": 1e-308}, "plugins[1].settings.rate")]:
            with self.assertRaises(ConfigError) as e:
                harness(**settings)
            self.assertEqual(e.exception.path, path, settings)
        harness(rate=1, period=31536000)
