"""
Tests for :mod:`tproxy.registry` (the in-memory registry, with a ``Clock``)
and the cleanup timer of :mod:`tproxy.builtins.registry`.
"""

import pluggy
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tproxy import hookspecs
from tproxy.builtins import registry as registry_plugin
from tproxy.gateway import Gateway
from tproxy.registry import IRegistry, IRegistryListener, MemoryRegistry


@implementer(IRegistryListener)
class RecordingListener(object):
    """Records every notification as ``(event, group, host, port)``."""

    def __init__(self):
        self.events = []

    def peer_added(self, peer):
        self.events.append(("added", peer.group.name, peer.host, peer.port))

    def peer_removed(self, peer):
        self.events.append(("removed", peer.group.name, peer.host, peer.port))

    def peer_changed(self, peer):
        self.events.append(("changed", peer.group.name, peer.host, peer.port))


def make_config(ttl=60, cleanup_interval=10, token=None, trusted_proxies=(),
                upstreams=None):
    """A configuration shaped like ``tproxy.config.load_config``'s result."""
    return {
        "listen": "tcp:0",
        "admin": {"listen": "tcp:0:interface=127.0.0.1", "token": token},
        "registry": {"ttl": ttl, "cleanup_interval": cleanup_interval},
        "trusted_proxies": list(trusted_proxies),
        "timeouts": {"connect": 60, "send": 60, "read": 90},
        "upstreams": upstreams or {},
        "plugins": [{"name": "registry", "settings": {}}],
    }


def make_gateway(reactor, registry=None, **config):
    """
    A :class:`Gateway` on ``reactor`` (a ``Clock`` or the real reactor) with
    the ``registry`` plugin registered; not started.

    :return: ``(gateway, plugin)``.
    """
    pm = pluggy.PluginManager("tproxy")
    pm.add_hookspecs(hookspecs)
    plugin = registry_plugin.Plugin({})
    pm.register(plugin, name="registry")
    return Gateway(make_config(**config), reactor, pm, registry), plugin


class MemoryRegistryTests(SynchronousTestCase):
    """Registration, heartbeat, expiry and notifications."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = MemoryRegistry(self.clock, ttl=60)
        self.listener = RecordingListener()
        self.registry.subscribe(self.listener)

    def test_interface(self):
        """MemoryRegistry provides IRegistry."""
        self.assertTrue(verifyObject(IRegistry, self.registry))
        self.assertTrue(verifyObject(IRegistryListener, self.listener))

    def test_register(self):
        """A new registration is live for ttl seconds, in its group."""
        peer, created = self.registry.register("api", "10.0.0.1", 8080, 3)
        self.assertTrue(created)
        self.assertEqual((peer.host, peer.port, peer.weight, peer.group.name),
                         ("10.0.0.1", 8080, 3, "api"))
        self.assertFalse(peer.static)
        self.assertEqual(peer.created_time, 1000)
        self.assertEqual(peer.last_heartbeat, 1000)
        self.assertEqual(peer.expires_at, 1060)
        self.assertEqual(peer.address, "10.0.0.1:8080")
        self.assertIs(self.registry.group("api").peers[("10.0.0.1", 8080)], peer)
        self.assertTrue(self.registry.group("api").has_live(1000))
        self.assertEqual(self.listener.events, [("added", "api", "10.0.0.1", 8080)])

    def test_defaultWeight(self):
        """Without a weight a new peer weighs 1."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080)
        self.assertEqual(peer.weight, 1)

    def test_ipv6Address(self):
        """An IPv6 host is bracketed in ``address``."""
        peer, _ = self.registry.register("api", "::1", 8080)
        self.assertEqual(peer.address, "[::1]:8080")

    def test_heartbeat(self):
        """A heartbeat keeps the peer object and its creation time and
        pushes its expiry ttl seconds past now."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080)
        self.clock.advance(50)
        again, created = self.registry.register("api", "10.0.0.1", 8080)
        self.assertFalse(created)
        self.assertIs(again, peer)
        self.assertEqual(peer.created_time, 1000)
        self.assertEqual(peer.last_heartbeat, 1050)
        self.assertEqual(peer.expires_at, 1110)
        self.clock.advance(50)
        self.assertTrue(peer.is_live(self.registry.now()))
        self.assertEqual(self.registry.expire(), [])
        self.assertEqual(self.listener.events, [("added", "api", "10.0.0.1", 8080)])

    def test_heartbeatKeepsWeight(self):
        """A heartbeat without a weight keeps the weight; with one, changes
        it and tells the listeners."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080, 5)
        self.registry.register("api", "10.0.0.1", 8080)
        self.assertEqual(peer.weight, 5)
        self.registry.register("api", "10.0.0.1", 8080, 5)
        self.assertEqual(len(self.listener.events), 1)
        self.registry.register("api", "10.0.0.1", 8080, 2)
        self.assertEqual(peer.weight, 2)
        self.assertEqual(self.listener.events[-1], ("changed", "api", "10.0.0.1", 8080))

    def test_sameServerTwoGroups(self):
        """host:port in two groups are two peers."""
        a, _ = self.registry.register("api", "10.0.0.1", 8080)
        b, created = self.registry.register("web", "10.0.0.1", 8080)
        self.assertTrue(created)
        self.assertIsNot(a, b)
        self.assertEqual([g.name for g in self.registry.groups()], ["api", "web"])

    def test_expiredNeverLive(self):
        """At ttl after the last heartbeat a peer is no longer live, even
        before expire() removes it."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080)
        group = self.registry.group("api")
        self.clock.advance(59.999)
        self.assertTrue(peer.is_live(self.registry.now()))
        self.assertTrue(group.has_live(self.registry.now()))
        self.clock.advance(0.001)
        self.assertFalse(peer.is_live(self.registry.now()))
        self.assertFalse(group.has_live(self.registry.now()))
        self.assertFalse(group.has_live(self.registry.now() + 1000))

    def test_expire(self):
        """expire() removes what has expired, tells the listeners, and drops
        the emptied group."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080)
        self.clock.advance(59)
        self.assertEqual(self.registry.expire(), [])
        self.clock.advance(1)
        self.assertEqual(self.registry.expire(), [peer])
        self.assertIsNone(self.registry.group("api"))
        self.assertEqual(self.registry.groups(), [])
        self.assertEqual(self.listener.events[-1], ("removed", "api", "10.0.0.1", 8080))
        self.assertEqual(self.registry.expire(), [])

    def test_expireInHeartbeatOrder(self):
        """Only the peers whose last heartbeat is old enough expire."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        c, _ = self.registry.register("web", "10.0.0.1", 3)
        self.clock.advance(30)
        self.registry.register("api", "10.0.0.1", 1)  # a heartbeats
        self.clock.advance(30)
        self.assertEqual(self.registry.expire(), [b, c])
        self.assertEqual(list(self.registry.group("api").peers.values()), [a])
        self.assertTrue(self.registry.group("api").has_live(self.registry.now()))
        self.clock.advance(30)
        self.assertEqual(self.registry.expire(), [a])

    def test_heartbeatOrderIsConstantTime(self):
        """A heartbeat moves the peer to the young end of the expiry order
        (an ``OrderedDict`` move, O(1)), so expire() never scans live peers."""
        for port in range(1, 1001):
            self.registry.register("api", "10.0.0.1", port)
        self.registry.register("api", "10.0.0.1", 1)
        order = list(self.registry._by_age)
        self.assertEqual(order[0], ("api", "10.0.0.1", 2))
        self.assertEqual(order[-1], ("api", "10.0.0.1", 1))

    def test_reRegisterAfterExpiry(self):
        """A registration whose ttl passed is over: registering again before
        the cleanup is a new registration, as it is after the cleanup."""
        old, _ = self.registry.register("api", "10.0.0.1", 8080, 4)
        self.clock.advance(61)
        new, created = self.registry.register("api", "10.0.0.1", 8080)
        self.assertTrue(created)
        self.assertIsNot(new, old)
        # (member: whether it is in its group, which tproxy reads per request)
        self.assertEqual((old.member, new.member), (False, True))
        self.assertEqual(new.created_time, 1061)
        self.assertEqual(new.weight, 1)
        self.assertTrue(new.is_live(self.registry.now()))
        self.assertEqual(self.listener.events, [
            ("added", "api", "10.0.0.1", 8080),
            ("removed", "api", "10.0.0.1", 8080),
            ("added", "api", "10.0.0.1", 8080)])
        self.assertEqual(self.registry.expire(), [])
        self.clock.advance(60)
        self.assertEqual(self.registry.expire(), [new])
        self.assertFalse(new.member)

    def test_deregister(self):
        """deregister() removes a dynamic peer and returns it; None if absent."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080)
        self.assertIsNone(self.registry.deregister("api", "10.0.0.1", 8081))
        self.assertIsNone(self.registry.deregister("web", "10.0.0.1", 8080))
        self.assertIs(self.registry.deregister("api", "10.0.0.1", 8080), peer)
        self.assertIsNone(self.registry.group("api"))
        self.assertEqual(self.listener.events[-1], ("removed", "api", "10.0.0.1", 8080))
        self.clock.advance(100)
        self.assertEqual(self.registry.expire(), [])

    def test_hasLiveAfterRemoval(self):
        """Removing the peer that lived longest shortens the group's life."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        self.clock.advance(10)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        group = self.registry.group("api")
        self.assertTrue(group.has_live(1065))
        self.registry.deregister("api", "10.0.0.1", 2)
        self.assertTrue(group.has_live(1059))
        self.assertFalse(group.has_live(1065))

    def test_staticNeverExpires(self):
        """A static peer never expires and cannot be deregistered; a
        registration of it is a harmless heartbeat."""
        peer = self.registry.add_static("api", "10.0.0.1", 8080, 2)
        self.assertTrue(peer.static)
        self.clock.advance(10 ** 9)
        self.assertTrue(peer.is_live(self.registry.now()))
        self.assertTrue(self.registry.group("api").has_live(self.registry.now()))
        self.assertEqual(self.registry.expire(), [])
        self.assertIsNone(self.registry.deregister("api", "10.0.0.1", 8080))
        again, created = self.registry.register("api", "10.0.0.1", 8080)
        self.assertIs(again, peer)
        self.assertFalse(created)
        self.assertTrue(peer.static)
        self.assertEqual(peer.weight, 2)
        self.assertIsNone(peer.as_dict()["expires_at"])

    def test_staticAndDynamic(self):
        """A group with a static peer stays live when its dynamic peers expire."""
        self.registry.add_static("api", "10.0.0.1", 1)
        dynamic, _ = self.registry.register("api", "10.0.0.1", 2)
        self.clock.advance(60)
        self.assertEqual(self.registry.expire(), [dynamic])
        self.assertTrue(self.registry.group("api").has_live(self.registry.now()))

    def test_acquireRelease(self):
        """acquire/release count requests in flight and notify listeners."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080)
        peer.acquire()
        peer.acquire()
        self.assertEqual((peer.active, peer.total), (2, 2))
        peer.release()
        self.assertEqual((peer.active, peer.total), (1, 2))
        self.assertEqual(self.listener.events[1:],
                         [("changed", "api", "10.0.0.1", 8080)] * 3)
        view = peer.as_dict()
        self.assertEqual(view["conn_count"], 1)
        self.assertEqual(view["total_requests"], 2)

    def test_asDict(self):
        """The status view of a peer: the fields of /upstream/status."""
        peer, _ = self.registry.register("api", "10.0.0.1", 8080, 3)
        self.assertEqual(peer.as_dict(), {
            "host": "10.0.0.1", "port": 8080, "prefix": "api", "weight": 3,
            "conn_count": 0, "max_conns": 0, "total_requests": 0, "static": False,
            "last_heartbeat": 1000, "created_time": 1000, "expires_at": 1060})


class FlakyRegistry(MemoryRegistry):
    """A MemoryRegistry whose expire() fails (raises, or returns a failed
    Deferred) on chosen calls, and may answer with a Deferred."""

    def __init__(self, clock, ttl, failures=(), deferred=False):
        MemoryRegistry.__init__(self, clock, ttl)
        self.calls = 0
        self.failures = set(failures)
        self.deferred = deferred

    def expire(self):
        self.calls += 1
        if self.calls in self.failures:
            if self.deferred:
                return fail(ZeroDivisionError("boom"))
            raise ZeroDivisionError("boom")
        gone = MemoryRegistry.expire(self)
        return succeed(gone) if self.deferred else gone


class CleanupTimerTests(SynchronousTestCase):
    """The registry plugin's LoopingCall, driven by a Clock."""

    def start(self, make_registry=None, ttl=60, cleanup_interval=10):
        """Start a gateway on a new Clock; ``make_registry(clock)`` makes its
        registry (default: the gateway's own)."""
        self.clock = Clock()
        registry = make_registry(self.clock) if make_registry else None
        self.gateway, self.plugin = make_gateway(
            self.clock, registry, ttl=ttl, cleanup_interval=cleanup_interval)
        self.registry = self.gateway.registry
        self.successResultOf(self.gateway.start())

    def test_goneAfterTtlPlusInterval(self):
        """A peer not refreshed is removed at most ttl + cleanup_interval
        seconds after its last heartbeat, and never selected after ttl."""
        self.start()
        self.clock.advance(3)  # out of phase with the timer
        peer, _ = self.registry.register("api", "10.0.0.1", 8080)
        for _ in range(59):
            self.clock.advance(1)
            self.assertTrue(peer.is_live(self.registry.now()))
        self.clock.advance(1)
        self.assertFalse(peer.is_live(self.registry.now()))
        self.assertFalse(self.registry.group("api").has_live(self.registry.now()))
        for _ in range(10):
            self.clock.advance(1)
        self.assertIsNone(self.registry.group("api"))

    def test_heartbeatsKeepItAlive(self):
        """A peer that heartbeats within ttl stays."""
        self.start()
        self.registry.register("api", "10.0.0.1", 8080)
        for _ in range(20):
            self.clock.advance(30)
            self.registry.register("api", "10.0.0.1", 8080)
        self.assertEqual(len(self.registry.group("api").peers), 1)

    def test_staticSurvivesCleanup(self):
        """Static peers of the configuration are never cleaned up."""
        self.clock = Clock()
        self.gateway, _ = make_gateway(self.clock, upstreams={
            "api": {"peers": [{"host": "10.0.0.9", "port": 80, "weight": 1}]}})
        self.successResultOf(self.gateway.start())
        self.clock.pump([10] * 100)
        peer = self.gateway.registry.group("api").peers[("10.0.0.9", 80)]
        self.assertTrue(peer.static)

    def test_interval(self):
        """The timer runs every cleanup_interval seconds, first after one."""
        self.start(lambda clock: FlakyRegistry(clock, 60), cleanup_interval=7)
        registry = self.registry
        self.assertEqual(registry.calls, 0)
        self.clock.advance(7)
        self.assertEqual(registry.calls, 1)
        self.clock.pump([7] * 3)
        self.assertEqual(registry.calls, 4)

    def test_logsExpired(self):
        """Each expired peer is logged with its fields."""
        self.start()
        self.registry.register("api", "10.0.0.1", 8080)
        self.registry.register("default", "::1", 9000)
        with capturedLogs() as events:
            self.clock.pump([10] * 7)
        expired = [e for e in events if "expired" in e.get("log_format", "")]
        self.assertEqual(sorted(e["server"] for e in expired),
                         ["api:10.0.0.1:8080", "default:[::1]:9000"])
        self.assertEqual(sorted((e["host"], e["port"]) for e in expired),
                         [("10.0.0.1", 8080), ("::1", 9000)])

    def test_survivesException(self):
        """An exception in expire() is logged and the loop goes on."""
        self.start(lambda clock: FlakyRegistry(clock, 60, failures={1, 2}))
        self._survives(self.registry)

    def test_survivesFailedDeferred(self):
        """A failed Deferred from expire() is logged and the loop goes on."""
        self.start(lambda clock: FlakyRegistry(clock, 60, failures={1, 2},
                                               deferred=True))
        self._survives(self.registry)

    def _survives(self, registry):
        self.registry.register("api", "10.0.0.1", 8080)
        self.clock.pump([10] * 2)
        self.assertEqual(registry.calls, 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)
        self.clock.pump([10] * 5)
        self.assertEqual(registry.calls, 7)
        self.assertIsNone(self.registry.group("api"))

    def test_noTimerOnReplica(self):
        """A worker's replica (an IRegistryReplica) is swept by its parent:
        the plugin starts no cleanup timer on it."""
        from tproxy.replica_registry import ReplicaRegistry
        self.start(lambda clock: ReplicaRegistry(clock, 60))
        self.assertIsNone(self.plugin._loop)

    def test_timerOnRegistryWithReplicaAttribute(self):
        """Only the interface makes a replica: a registry with an attribute
        that happens to be called ``replica`` is swept."""
        class Named(FlakyRegistry):
            replica = True
        self.start(lambda clock: Named(clock, 60))
        self.assertTrue(self.plugin._loop.running)
        self.clock.advance(10)
        self.assertEqual(self.registry.calls, 1)

    def test_stop(self):
        """Stopping the gateway stops the timer."""
        self.start()
        self.assertTrue(self.plugin._loop.running)
        self.successResultOf(self.gateway.stop())
        self.assertFalse(self.plugin._loop.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_routes(self):
        """init_worker adds the admin routes."""
        self.start()
        self.assertEqual(sorted(self.gateway.admin.routes), [
            ("DELETE", "/upstream/servers"),
            ("GET", "/healthz"), ("GET", "/readyz"),   # the gateway's own
            ("GET", "/upstream/add"), ("GET", "/upstream/remove"),
            ("GET", "/upstream/servers"), ("GET", "/upstream/status"),
            ("POST", "/upstream/add"), ("POST", "/upstream/remove"),
            ("POST", "/upstream/servers"), ("PUT", "/upstream/servers")])
