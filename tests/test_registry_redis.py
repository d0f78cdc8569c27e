"""
Tests for :mod:`tproxy.registry_redis`: registries and gateways sharing one
real ``redis-server`` (started by the tests on a free loopback port); real
``twistd`` processes sharing one: :class:`tests.processes.test_workers.SharedRegistryTests`.

Timestamps come from a fake ``Clock`` where the subject is expiry (the
registries talk to Redis over the real reactor, but their clock is the
test's), so the TTL semantics are compared with :class:`MemoryRegistry`
exactly; gateways that proxy real requests use the real reactor.
"""

import json

import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent

from tests.helpers import (ClockedReactor, ProxyTestCase, capture_log, log_messages, turns,
                           until)
from tests.redis_server import logged, redis_command, run_redis, shared_redis
from tests.test_replica import Recorder
from tproxy.registry import MemoryRegistry, RegistryUnavailable
from tproxy.registry_redis import RedisRegistry, parse_url
from tproxy.config import ConfigError, validate_config

NAMESPACE = "tproxy.registry_redis"

#: seconds a write would wait for Redis: one that waited would outlast the
#: test's own timeout
FOREVER = 3600


class _Listener(Recorder):
    """Records additions and removals (not the count changes)."""

    peer_changed = None


class RedisTestCase(ProxyTestCase):
    """Starts Redis; makes registries on it (stopped in the cleanups)."""

    def setUp(self):
        ProxyTestCase.setUp(self)
        self.events = capture_log(self)

    def messages(self):
        return log_messages(self.events, "tproxy.registry_redis")

    async def registry(self, port, clock=None, timers=None, **settings):
        """A started registry on Redis at ``port``; ``clock``: its timestamps'
        (default: the real reactor's); ``timers``: its reactor (default: the
        real one; a :class:`ClockedReactor` for timers on a fake clock)."""
        settings.setdefault("url", "redis://127.0.0.1:%d/0" % port)
        settings.setdefault("retry_interval", 0.05)
        settings.setdefault("timeout", 1)
        registry = RedisRegistry(clock if clock is not None else reactor, settings,
                                 reactor=timers if timers is not None else reactor)
        self.addCleanup(registry.stop)
        await registry.start()
        return registry


def view(registry):
    """What ``/upstream/status`` shows of a registry, without the per-instance
    counts: ``{group: (routable, {address: (weight, max_conns, created,
    last_heartbeat, expires_at, live)})}``."""
    now = registry.now()
    out = {}
    for g in registry.groups():
        out[g.name] = (g.routable, dict(
            (p.address, (p.weight, p.max_conns, p.created_time, p.last_heartbeat,
                         p.expires_at, p.is_live(now)))
            for p in g.peers.values()))
    return out


class SharedRegistryTests(RedisTestCase):
    """Two registries on one Redis see each other's writes."""

    async def test_registerPropagates(self):
        server = await shared_redis(self)
        clock = Clock()
        clock.advance(1000)
        a = await self.registry(server.port, clock)
        b = await self.registry(server.port, clock)
        listener = _Listener()
        b.subscribe(listener)
        peer, created = await a.register("api", "10.0.0.1", 9001, weight=3)
        self.assertTrue(created)
        self.assertEqual(peer.weight, 3)
        self.assertEqual(peer.expires_at, 1060)
        await until(lambda: b.group("api") is not None, message="b to see it")
        self.assertEqual(view(a), view(b))
        self.assertEqual(listener.events, [("added", "10.0.0.1:9001")])
        clock.advance(30)
        peer, created = await b.register("api", "10.0.0.1", 9001, max_conns=5,
                                         routable=False)
        self.assertFalse(created)
        await until(lambda: a.group("api").peers[("10.0.0.1", 9001)].max_conns == 5)
        self.assertEqual(view(a), view(b))
        self.assertEqual(view(a), {"api": (False, {"10.0.0.1:9001": (
            3, 5, 1000, 1030, 1090, True)})})
        in_b = b.group("api").peers[("10.0.0.1", 9001)]
        self.assertTrue(in_b.member)
        removed = await a.deregister("api", "10.0.0.1", 9001)
        self.assertEqual(removed.address, "10.0.0.1:9001")
        self.assertFalse(removed.member)
        await until(lambda: b.group("api") is None)
        self.assertFalse(in_b.member)
        self.assertEqual(listener.events[-1], ("removed", "10.0.0.1:9001"))
        self.assertIsNone(await a.deregister("api", "10.0.0.1", 9001))
        self.assertEqual([m.split(" at ")[0] for m in self.messages()],
                         ["registry: shared through Redis"] * 2)

    async def test_heartbeatsOfOneTurn(self):
        """The registrations of one reactor turn are one script run (one
        version, one published message); the same server twice in it ends
        as its last heartbeat said, for the writer and the others."""
        server = await shared_redis(self)
        clock = Clock()
        clock.advance(1000)
        a = await self.registry(server.port, clock)
        b = await self.registry(server.port, clock)
        before = int(await redis_command(server.port, "GET", "tproxy:version") or 0)
        results = await defer.gatherResults([
            a.register("api", "10.0.0.1", 1), a.register("api", "10.0.0.2", 2, weight=2),
            a.register("api", "10.0.0.1", 1, weight=5)])
        self.assertEqual([(p.address, created) for p, created in results],
                         [("10.0.0.1:1", True), ("10.0.0.2:2", True), ("10.0.0.1:1", False)])
        self.assertEqual(int(await redis_command(server.port, "GET", "tproxy:version")),
                         before + 1)
        await until(lambda: b.group("api") is not None and len(b.group("api").peers) == 2)
        self.assertEqual(view(a), view(b))
        self.assertEqual(b.group("api").peers[("10.0.0.1", 1)].weight, 5)

    async def test_sameSemanticsAsMemory(self):
        """One scenario on the in-memory registry and on a Redis one (each
        with its own fake clock): the same peers, times, weights, liveness,
        ``routable`` and ``created`` flags at every step, and the same
        expiries."""
        server = await shared_redis(self)
        mem_clock, red_clock = Clock(), Clock()
        memory = MemoryRegistry(mem_clock, ttl=60)
        redis = await self.registry(server.port, red_clock, ttl=60)
        outcomes = {id(memory): [], id(redis): []}

        async def call(registry, method, *args, **kw):
            result = getattr(registry, method)(*args, **kw)
            if hasattr(result, "addCallback"):
                result = await result
            return result

        async def step(method, *args, **kw):
            for registry in (memory, redis):
                result = await call(registry, method, *args, **kw)
                if method == "register":
                    result = (result[0].address, result[1])
                elif method == "expire":
                    result = sorted(p.address for p in result)
                elif method == "deregister":
                    result = result.address if result is not None else None
                elif method in ("add_static", "remove_static"):
                    result = result.address
                outcomes[id(registry)].append(result)
            self.assertEqual(view(memory), view(redis), (method, args, kw))

        def advance(seconds):
            mem_clock.advance(seconds)
            red_clock.advance(seconds)

        advance(1000)
        await step("register", "api", "10.0.0.1", 1)
        await step("register", "api", "10.0.0.2", 2, weight=5, max_conns=3,
                   routable=False)
        await step("add_static", "api", "10.0.0.9", 80, 2, 10)
        advance(30)
        await step("register", "api", "10.0.0.1", 1, weight=2)   # heartbeat
        await step("register", "api", "10.0.0.9", 80, weight=4)  # a static one
        await step("deregister", "api", "10.0.0.9", 80)          # static: None
        advance(29.5)
        await step("expire")                                     # nothing yet
        advance(0.5)
        # 10.0.0.2 expires at 1060 exactly: not live, then swept
        await step("expire")
        advance(30)
        # 10.0.0.1 expired at 1090: registering again is a new registration
        await step("register", "api", "10.0.0.1", 1)
        await step("register", "web", "10.0.0.3", 3, routable=False)
        await step("deregister", "web", "10.0.0.3", 3)
        await step("register", "web", "10.0.0.3", 3)             # a new group: routable
        advance(61)
        await step("expire")
        await step("remove_static", "api", "10.0.0.9", 80)
        self.assertEqual(outcomes[id(memory)], outcomes[id(redis)])
        self.assertEqual(outcomes[id(redis)], [
            ("10.0.0.1:1", True), ("10.0.0.2:2", True), "10.0.0.9:80",
            ("10.0.0.1:1", False), ("10.0.0.9:80", False), None, [], ["10.0.0.2:2"],
            ("10.0.0.1:1", True), ("10.0.0.3:3", True), "10.0.0.3:3",
            ("10.0.0.3:3", True), ["10.0.0.1:1", "10.0.0.3:3"], "10.0.0.9:80"])

    async def test_sweepIsIdempotent(self):
        """Two instances sweeping at once remove (and report) an expired
        registration once; both replicas lose it."""
        server = await shared_redis(self)
        clock = Clock()
        a = await self.registry(server.port, clock, ttl=10)
        b = await self.registry(server.port, clock, ttl=10)
        for port in range(1, 6):
            await a.register("api", "10.0.0.1", port)
        await until(lambda: b.group("api") is not None and len(b.group("api").peers) == 5)
        clock.advance(10)
        swept = [a.expire(), b.expire()]
        removed = [p.address for d in swept for p in await d]
        self.assertEqual(sorted(removed), ["10.0.0.1:%d" % p for p in range(1, 6)])
        await until(lambda: a.group("api") is None and b.group("api") is None)
        keys = await redis_command(server.port, "KEYS", "tproxy:*")
        self.assertEqual(sorted(keys), ["tproxy:epoch", "tproxy:version"])

    async def test_sweepInBatches(self):
        """One ``expire`` removes everything due, ``sweep_limit`` at a time."""
        server = await shared_redis(self)
        clock = Clock()
        a = await self.registry(server.port, clock, ttl=10)
        a.sweep_limit = 2
        for port in range(1, 6):
            await a.register("api", "10.0.0.1", port)
        clock.advance(10)
        self.assertEqual(len(await a.expire()), 5)
        self.assertIsNone(a.group("api"))

    async def test_readOnlyReplica(self):
        """Pointed at a replica (a failover the configuration did not
        follow): changes are a RegistryUnavailable with Redis's reason,
        logged once; the replica's data still serves."""
        primary = await run_redis(self)
        replica = await run_redis(self)
        a = await self.registry(primary.port)
        await a.register("api", "10.0.0.1", 80)
        await redis_command(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))
        await until_true(lambda: replica_synced(replica.port), "the replica to sync")
        b = await self.registry(replica.port)
        self.assertEqual(list(b.group("api").peers), [("10.0.0.1", 80)])
        for _ in range(2):
            with self.assertRaises(RegistryUnavailable) as caught:
                await b.register("api", "10.0.0.2", 80)
            self.assertIn("READONLY", str(caught.exception))
        self.assertEqual(len([m for m in self.messages() if "refused" in m]), 1)
        self.assertTrue(b.up)

    async def test_staticShadowsShared(self):
        """A static peer is this instance's configuration: a registration of
        the same server through another instance is hidden behind it here,
        and appears when a reload drops the static peer."""
        server = await shared_redis(self)
        a = await self.registry(server.port)
        b = await self.registry(server.port)
        a.add_static("api", "10.0.0.1", 80, 2)
        await b.register("api", "10.0.0.1", 80, weight=7)
        await until(lambda: "api 10.0.0.1 80" in str(a.updater.shadow.keys()) or
                    ("api", "10.0.0.1", 80) in a.updater.shadow)
        peer = a.group("api").peers[("10.0.0.1", 80)]
        self.assertTrue(peer.static)
        self.assertEqual(peer.weight, 2)
        a.remove_static("api", "10.0.0.1", 80)
        peer = a.group("api").peers[("10.0.0.1", 80)]
        self.assertFalse(peer.static)
        self.assertEqual(peer.weight, 7)

    async def test_resyncCatchesUnpublishedChanges(self):
        """The periodic full resync is a safety net: a change that was
        never published (written behind tproxy's back) reaches the replica."""
        server = await shared_redis(self)
        timers = ClockedReactor()
        a = await self.registry(server.port, timers=timers, resync_interval=30)
        await a.register("api", "10.0.0.1", 80)
        await redis_command(server.port, "HDEL", "tproxy:peers", "api 10.0.0.1 80")
        timers.advance(29)
        await turns()
        self.assertIsNotNone(a.group("api"))
        timers.advance(1)
        await until(lambda: a.group("api") is None, message="the resync")

    async def test_separatePrefixes(self):
        """Two fleets on one Redis with other key prefixes do not meet."""
        server = await shared_redis(self)
        a = await self.registry(server.port, key_prefix="one:")
        b = await self.registry(server.port, key_prefix="two:")
        await a.register("api", "10.0.0.1", 80)
        await b.register("api", "10.0.0.2", 80)
        self.assertEqual(list(a.group("api").peers), [("10.0.0.1", 80)])
        self.assertEqual(list(b.group("api").peers), [("10.0.0.2", 80)])


class OutageTests(RedisTestCase):
    """Redis stopped and started again."""

    async def test_holdRefuseRestore(self):
        """While Redis is away the replica serves and holds what it has
        (nothing expires, even past the TTL), writes fail at once with
        RegistryUnavailable, and it is logged once; when Redis comes back
        empty, what was held is put back with one more TTL, and logged
        once."""
        server = await run_redis(self)
        clock = Clock()
        clock.advance(1000)
        a = await self.registry(server.port, clock, ttl=60)
        b = await self.registry(server.port, clock, ttl=60)
        await a.register("api", "10.0.0.1", 80, weight=3)
        spec = {"name": "r1", "group": "api"}
        self.assertEqual(await b.shared_routes.put("r1", spec), "created")
        await until(lambda: b.group("api") is not None and a.shared_routes.specs())
        await server.stop()
        await until(lambda: not a.up and not b.up, 15, message="both to see it")
        with self.assertRaises(RegistryUnavailable):
            await a.register("api", "10.0.0.2", 80)
        with self.assertRaises(RegistryUnavailable):
            await a.deregister("api", "10.0.0.1", 80)
        for _ in range(12):       # past the TTL: held, not expired
            clock.advance(10)
            self.assertEqual(a.expire(), [])   # as the cleanup timers call it
            self.assertEqual(b.expire(), [])
        peer = a.group("api").peers[("10.0.0.1", 80)]
        self.assertTrue(peer.is_live(clock.seconds()))
        down = [m for m in self.messages() if "unreachable" in m]
        self.assertEqual(len(down), 2, down)      # once per instance
        await run_redis(self, server.port)         # empty: it lost everything
        await until(lambda: a.up and b.up, 15, message="both to catch up")
        for registry in (a, b):
            peer = registry.group("api").peers[("10.0.0.1", 80)]
            self.assertEqual(peer.weight, 3)
            self.assertEqual(peer.expires_at, 1180)  # one TTL after Redis is back  # one TTL after Redis is back
            self.assertEqual(peer.created_time, 1000)
        again = [m for m in self.messages() if "answers again" in m]
        self.assertEqual(len(again), 2, again)
        self.assertEqual(len([m for m in self.messages() if "unreachable" in m]), 2)
        raw = await redis_command(server.port, "HGET", "tproxy:peers", "api 10.0.0.1 80")
        self.assertEqual(json.loads(raw)["x"], 1180)
        peer, created = await b.register("api", "10.0.0.1", 80)
        self.assertFalse(created)
        # the route made before is back in Redis too (it had lost it)
        self.assertEqual(a.shared_routes.specs(), [spec])
        self.assertEqual(b.shared_routes.specs(), [spec])
        self.assertEqual(await redis_command(server.port, "HKEYS", "tproxy:routes"), ["r1"])
        self.assertEqual(await b.shared_routes.put("r2", dict(spec, name="r2")), "created")
        await until(lambda: len(a.shared_routes.specs()) == 2)
        self.assertEqual([r["name"] for r in a.shared_routes.specs()], ["r1", "r2"])

    async def test_seededWhileAway(self):
        """An instance started while Redis is away (a worker, at a reload)
        seeded with what another holds (its parent's ``held_state``, which
        is ``None`` while Redis answers) serves it, holds it, and puts it
        back, as its own, when Redis answers (empty)."""
        server = await run_redis(self)
        clock = Clock()
        clock.advance(1000)
        a = await self.registry(server.port, clock, ttl=60)
        await a.register("api", "10.0.0.1", 80, weight=3, routable=False)
        spec = {"name": "r1", "group": "api"}
        self.assertEqual(await a.shared_routes.put("r1", spec), "created")
        self.assertIsNone(a.held_state())
        await server.stop()
        await until(lambda: not a.up, 15, message="a to see it")
        b = RedisRegistry(clock, {"url": "redis://127.0.0.1:%d/0" % server.port, "ttl": 60,
                                  "retry_interval": 0.05, "timeout": 1}, reactor=reactor)
        self.addCleanup(b.stop)
        b.seed(json.loads(json.dumps(a.held_state())))
        await b.start()
        self.assertFalse(b.up)
        self.assertEqual(view(b), view(a))
        self.assertEqual(b.group("api").peers[("10.0.0.1", 80)].weight, 3)
        self.assertFalse(b.group("api").routable)
        self.assertEqual(b.shared_routes.specs(), [spec])
        for _ in range(12):       # past the TTL: held, not expired
            clock.advance(10)
            self.assertEqual(a.expire(), [])   # as the cleanup timers call it
            self.assertEqual(b.expire(), [])
        await run_redis(self, server.port)         # empty: it lost everything
        await until(lambda: a.up and b.up, 15, message="both to catch up")
        self.assertEqual(view(b), view(a))
        self.assertEqual(b.group("api").peers[("10.0.0.1", 80)].expires_at, 1180)
        self.assertEqual(await redis_command(server.port, "HKEYS", "tproxy:routes"), ["r1"])

    async def test_commandConnectionsLost(self):
        """Only the command connections die (the subscriber's lives): Redis
        counts as away at once, logged once; writes fail at once however long
        ``timeout`` is, and change nothing; when the pool has reconnected
        (logged once), writes work again."""
        server = await run_redis(self)
        a = await self.registry(server.port, timeout=FOREVER)
        await a.register("api", "10.0.0.1", 80)
        self.assertEqual(await a.shared_routes.put("r1", {"name": "r1"}), "created")
        await until(lambda: a._factory.size == 2, message="both command connections")
        def state():    # (held while Redis is away: a later expiry)
            return ([(p.address, p.weight, p.created_time) for p in a.group("api").peers.values()],
                    a.shared_routes.specs())
        before = state()
        down = logged(self, NAMESPACE, "unreachable")
        await redis_command(server.port, "CLIENT", "KILL", "TYPE", "normal")
        self.assertIn("unreachable (connection lost)", await down)
        self.assertTrue(a._subscribed)
        self.failureResultOf(a.register("api", "10.0.0.2", 80), RegistryUnavailable)
        self.failureResultOf(a.deregister("api", "10.0.0.1", 80), RegistryUnavailable)
        self.failureResultOf(a.shared_routes.put("r2", {"name": "r2"}), RegistryUnavailable)
        self.failureResultOf(a.shared_routes.delete("r1"), RegistryUnavailable)
        self.assertEqual(state(), before)
        back = logged(self, NAMESPACE, "answers again")
        await back
        peer, created = await a.register("api", "10.0.0.2", 80)
        self.assertTrue(created)
        self.assertEqual(len([m for m in self.messages() if "unreachable" in m]), 1)
        self.assertEqual(len([m for m in self.messages() if "answers again" in m]), 1)

    test_commandConnectionsLost.timeout = 20

    def test_addressConnectedDirectly(self):
        """An IP address in the URL is connected to directly (a refusal is
        known at once), a name through HostnameEndpoint."""
        from twisted.internet.endpoints import (HostnameEndpoint, TCP4ClientEndpoint,
                                                TCP6ClientEndpoint)
        for host, kind in [("127.0.0.1", TCP4ClientEndpoint), ("[::1]", TCP6ClientEndpoint),
                           ("localhost", HostnameEndpoint)]:
            registry = RedisRegistry(reactor, {"url": "redis://%s:6379/0" % host})
            self.assertIsInstance(registry._endpoint(None).endpoint, kind, host)

    async def test_ipv6(self):
        """A Redis on an IPv6 address, ``redis://[::1]:port/0``: the registry
        connects, writes and reads its writes back from Redis."""
        server = await run_redis(self, bind="::1")
        a = await self.registry(server.port, url="redis://[::1]:%d/0" % server.port)
        self.assertTrue(a.up)
        self.assertEqual(a.address, "[::1]:%d/0" % server.port)
        await a.register("api", "10.0.0.1", 80)
        b = await self.registry(server.port, url="redis://[::1]:%d/0" % server.port)
        self.assertEqual(sorted(b.group("api").peers), [("10.0.0.1", 80)])

    async def test_unreachableAtStart(self):
        """No Redis at start: the gateway's registry starts anyway (after
        ``timeout``), logs it once, and catches up when Redis comes."""
        port = self.closed_port()
        a = await self.registry(port, timeout=0.2)
        self.assertFalse(a.up)
        self.assertEqual(len([m for m in self.messages() if "unreachable" in m]), 1)
        await run_redis(self, port)
        await until(lambda: a.up, 15, message="the registry to connect")
        await a.register("api", "10.0.0.1", 80)


class ConfigTests(ProxyTestCase):
    """``registry.backend``, ``registry.url``, ``registry.key_prefix``."""

    def test_defaults(self):
        registry = validate_config({})["registry"]
        self.assertEqual(registry["backend"], "memory")
        self.assertEqual(registry["url"], "redis://127.0.0.1:6379/0")
        self.assertEqual(registry["key_prefix"], "tproxy:")

    def test_badUrl(self):
        with self.assertRaises(ConfigError) as caught:
            validate_config({"registry": {"backend": "redis", "url": "http://x:1"}})
        self.assertEqual(caught.exception.path, "registry.url")
        for url in ("redis://x:70000/0", "redis://x:0", "redis://x:/1"):
            with self.assertRaises(ConfigError) as caught:
                validate_config({"registry": {"url": url}})
            self.assertEqual(caught.exception.path, "registry.url")
        with self.assertRaises(ConfigError) as caught:
            parse_url("redis://x:70000/0")
        self.assertEqual(caught.exception.path, "registry.url")
        validate_config({"registry": {"url": "redis://:pw@h:65535/15"}})
        with self.assertRaises(ConfigError) as caught:
            validate_config({"registry": {"key_prefix": "my fleet:"}})
        self.assertEqual(str(caught.exception), "<config>: registry.key_prefix: "
                         "key_prefix 'my fleet:' has a space")

    def test_reloadKeepsTheRegistry(self):
        """A reload cannot switch the registry: it says so."""
        from tproxy.testing import Harness
        events = capture_log(self)
        harness = Harness({"registry": {"key_prefix": "a:"}})
        harness.reload({"registry": {"key_prefix": "b:", "ttl": 30}})
        self.assertEqual(harness.registry.ttl, 30)
        changed = [formatEvent(e) for e in events if "changed:" in formatEvent(e)]
        self.assertEqual(changed, ["registry.key_prefix changed: it takes effect at the "
                                   "next restart (a reload keeps the registry and its "
                                   "connection)"])

    def test_parseUrl(self):
        self.assertEqual(parse_url("redis://:s3cret@cache.internal:6380/2"),
                         ("cache.internal", 6380, 2, "s3cret"))
        self.assertEqual(parse_url("redis://10.0.0.5"), ("10.0.0.5", 6379, 0, None))
        self.assertEqual(parse_url("redis://[::1]:6379/0"), ("::1", 6379, 0, None))
        self.assertEqual(parse_url("redis://:pw@[2001:db8::5]/3"), ("2001:db8::5", 6379, 3, "pw"))
        validate_config({"registry": {"url": "redis://[::1]:6379/0"}})
        validate_config({"registry": {"url": "redis://:pw@[2001:db8::5]"}})
        for url in ("redis://[::1", "redis://[::1]6379", "redis://[localhost]:6379",
                    "redis://[::1]:70000/0", "redis://[]:1"):
            with self.assertRaises(ConfigError) as caught:
                parse_url(url)
            self.assertEqual(caught.exception.path, "registry.url", url)
        for url in ("redis://[::1", "redis://[::1]6379", "redis://[::1]:70000", "redis://::1"):
            with self.assertRaises(ConfigError) as caught:
                validate_config({"registry": {"url": url}})
            self.assertEqual(caught.exception.path, "registry.url", url)


class _Admin(object):
    """An admin listener's base URL, for :meth:`ProxyTestCase.get`."""

    def __init__(self, base):
        self.base = base

    def url(self, path):
        return self.base + path


class GatewayTests(RedisTestCase):
    """Gateways (in this process, on real sockets) sharing one Redis."""

    async def fleet(self, port, n=2, **registry):
        registry.setdefault("url", "redis://127.0.0.1:%d/0" % port)
        registry.setdefault("retry_interval", 0.05)
        registry.setdefault("timeout", 1)
        out = []
        for _ in range(n):
            proxy = await self.proxy(
                {}, plugins=["registry", {"name": "routes", "settings": {"routes": [
                    {"name": "configured", "group": "api",
                     "match": {"path": {"mode": "prefix", "value": "/conf/"}}}]}},
                    "router", "least_conn"],
                registry=dict(registry, backend="redis"))
            out.append((proxy, _Admin(self.admin(proxy))))
        return out

    async def test_registrationsAndRoutesShared(self):
        """A registration and a route made through one gateway's admin API
        serve requests through the other; removals too."""
        server = await shared_redis(self)
        up = self.upstream()
        (a, admin_a), (b, admin_b) = await self.fleet(server.port)
        resp = await self.get(admin_a, "/upstream/add?host=127.0.0.1&port=%d&prefix=api"
                              % up.port)
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.json()["created"])
        await until(lambda: b.gateway.registry.group("api") is not None)
        resp = await self.get(b, "/api/x")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.json()["uri"], "/x")
        status = (await self.get(admin_b, "/upstream/status")).json()
        self.assertEqual([(g["prefix"], [s["port"] for s in g["servers"]])
                          for g in status["groups"]], [("api", [up.port])])

        route = {"group": "api", "match": {"path": {"mode": "prefix", "value": "/r1/"}},
                 "strip_prefix": True}
        resp = await self.get(admin_a, "/routes/r1", method="PUT",
                              data=json.dumps(route).encode())
        self.assertEqual(resp.status, 201, resp.body)
        await until(lambda: "r1" in b.plugin("routes").table.by_name)
        self.assertEqual((await self.get(b, "/r1/y")).json()["uri"], "/y")
        names = [r["name"] for r in (await self.get(admin_b, "/routes")).json()["routes"]]
        self.assertEqual(names, ["configured", "r1"])
        # a POST of an existing name is a 409 everywhere; a configured route
        # is this instance's configuration
        resp = await self.get(admin_b, "/routes", method="POST",
                              data=json.dumps(dict(route, name="r1")).encode())
        self.assertEqual(resp.status, 409)
        resp = await self.get(admin_b, "/routes/configured", method="DELETE")
        self.assertEqual(resp.status, 409)
        resp = await self.get(admin_b, "/routes/r1", method="DELETE")
        self.assertEqual(resp.status, 200)
        await until(lambda: "r1" not in a.plugin("routes").table.by_name)
        self.assertEqual((await self.get(admin_a, "/routes/r1", method="DELETE")).status,
                         404)

        resp = await self.get(admin_b, "/upstream/remove?host=127.0.0.1&port=%d&prefix=api"
                              % up.port)
        self.assertEqual(resp.status, 200, resp.body)
        await until(lambda: a.gateway.registry.group("api") is None)
        resp = await self.get(admin_a, "/upstream/remove?host=127.0.0.1&port=%d&prefix=api"
                              % up.port)
        self.assertEqual(resp.status, 404)
        self.assertEqual(resp.json()["error"], "server not registered")

    async def test_cleanupTimerRuns(self):
        """The registry plugin sweeps a shared registry (it is not a worker's
        replica, whose parent sweeps)."""
        server = await shared_redis(self)
        [(a, _)] = await self.fleet(server.port, n=1)
        self.assertTrue(a.plugin("registry")._loop.running)

    async def test_commandConnectionsRefused(self):
        """Redis takes no more clients: the command connections, killed, cannot
        come back, while the subscriber's lives.  An admin write is answered
        at once with a 503 and a JSON error (not after ``timeout``), and
        changes nothing; when Redis takes them again, writes work again."""
        server = await run_redis(self)
        up = self.upstream()
        [(a, admin)] = await self.fleet(server.port, n=1, timeout=FOREVER)
        registry = a.gateway.registry
        add = "/upstream/add?host=127.0.0.1&port=%d&prefix=api" % up.port
        self.assertEqual((await self.get(admin, add)).status, 200)
        await until(lambda: registry._factory.size == 2, message="both command connections")
        down = logged(self, NAMESPACE, "unreachable")
        conn = await txredisapi.Connection("127.0.0.1", server.port, reconnect=False)
        self.addCleanup(conn.disconnect)
        # this connection and the subscriber's: no room for another
        await conn.execute_command("CONFIG", "SET", "maxclients", "2")
        await conn.execute_command("CLIENT", "KILL", "TYPE", "normal")
        await down
        route = {"group": "api", "match": {"path": {"mode": "prefix", "value": "/r/"}}}
        for path, method, data in [
                (add, "GET", None), (add.replace("add", "remove"), "GET", None),
                ("/routes/r", "PUT", json.dumps(route).encode())]:
            resp = await self.get(admin, path, method=method, data=data)
            self.assertEqual(resp.status, 503, (path, resp.body))
            self.assertIn("unavailable", resp.json()["error"])
        self.assertEqual(list(registry.group("api").peers), [("127.0.0.1", up.port)])
        self.assertNotIn("r", a.plugin("routes").table.by_name)
        back = logged(self, NAMESPACE, "answers again")
        await conn.execute_command("CONFIG", "SET", "maxclients", "10000")
        await back
        resp = await self.get(admin, "/routes/r", method="PUT", data=json.dumps(route).encode())
        self.assertEqual(resp.status, 201, resp.body)

    test_commandConnectionsRefused.timeout = 20

    async def test_restartUnderLoad(self):
        """Redis stopped and started again while requests flow through both
        gateways: no request to the live peer is lost; heartbeats and route
        changes meanwhile are a 503 with a JSON error; it is logged once
        each way per gateway; heartbeats work again afterwards."""
        server = await run_redis(self)
        up = self.upstream()
        (a, admin_a), (b, admin_b) = await self.fleet(server.port)
        add = "/upstream/add?host=127.0.0.1&port=%d&prefix=api" % up.port
        self.assertEqual((await self.get(admin_a, add)).status, 200)
        route = {"group": "api", "match": {"path": {"mode": "prefix", "value": "/r0/"}}}
        resp = await self.get(admin_a, "/routes/r0", method="PUT",
                              data=json.dumps(route).encode())
        self.assertEqual(resp.status, 201)
        await until(lambda: b.gateway.registry.group("api") is not None
                    and "r0" in b.plugin("routes").table.by_name)
        statuses = []
        running = [True]

        async def load(proxy):
            while running[0]:
                for path in ("/api/", "/r0/"):     # a registration, a shared route
                    statuses.append((await self.get(proxy, path)).status)
        loads = [defer.ensureDeferred(load(p)) for p in (a, b, a, b)]
        await until(lambda: len(statuses) >= 20, message="some requests")
        await server.stop()
        await until(lambda: not a.gateway.registry.up and not b.gateway.registry.up, 15)
        before = len(statuses)
        await until(lambda: len(statuses) >= before + 20, 15, message="requests while down")
        resp = await self.get(admin_b, add)
        self.assertEqual(resp.status, 503)
        self.assertIn("unavailable", resp.json()["error"])
        self.assertEqual(resp.header("Retry-After"), "1")
        resp = await self.get(admin_b, "/routes/r2", method="PUT", data=json.dumps(
            {"group": "api", "match": {"path": {"mode": "prefix", "value": "/r2/"}}}
        ).encode())
        self.assertEqual(resp.status, 503)
        await run_redis(self, server.port)
        await until(lambda: a.gateway.registry.up and b.gateway.registry.up, 15,
                    message="both to catch up")
        before = len(statuses)
        await until(lambda: len(statuses) >= before + 20, 15, message="requests after")
        running[0] = False
        await defer.DeferredList(loads)
        self.assertEqual(set(statuses), {200}, statuses)
        self.assertEqual((await self.get(admin_b, add)).status, 200)
        names = [r["name"] for r in (await self.get(admin_b, "/routes")).json()["routes"]]
        self.assertEqual(names, ["configured", "r0"])   # put back in the empty Redis
        messages = self.messages()
        self.assertEqual(len([m for m in messages if "unreachable" in m]), 2, messages)
        self.assertEqual(len([m for m in messages if "answers again" in m]), 2, messages)


async def until_true(check, message, timeout=10.0):
    """Wait until the coroutine function ``check()`` (a request to a real
    process: it waits for its answer) returns true."""
    deadline = reactor.seconds() + timeout
    while not await check():
        if reactor.seconds() > deadline:
            raise AssertionError("timed out waiting for " + message)


async def replica_synced(port):
    info = await redis_command(port, "INFO", "replication")
    return "master_link_status:up" in info
