"""
Tests for :mod:`tproxy.builtins.least_conn`: fewest active requests relative
to weight, rotation among equals, ``tried`` and expired peers skipped, an
index that follows the registry and stays small.
"""

import json
import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from tproxy import Request, RequestContext
from tproxy.builtins import _least_conn_index, least_conn

from tests.test_router import make_gateway
from tests.test_routes import count_lines_in


class _Picking(object):
    """Calls the plugin's balancer directly, on a gateway on a Clock."""

    small_group = 0

    def setUp(self):
        self.gateway = make_gateway(ttl=60)
        self.registry = self.gateway.registry
        self.clock = self.gateway.reactor
        self.plugin = least_conn.Plugin({})
        self.plugin.small_group = self.small_group
        self.plugin.init_worker(self.gateway)

    def pick(self, group="api", tried=()):
        ctx = RequestContext(self.gateway, Request("GET", "/x"))
        ctx.route = group
        return self.plugin.balancer(ctx, tried)

    def held(self, n, group="api"):
        """``n`` picks whose requests stay in flight; the peers' counts."""
        counts = Counter()
        for _ in range(n):
            peer = self.pick(group)
            peer.acquire()
            counts[peer.port] += 1
        return counts

    def cycled(self, n, group="api"):
        """``n`` picks, each request ending before the next; the counts."""
        counts = Counter()
        for _ in range(n):
            peer = self.pick(group)
            peer.acquire()
            peer.release()
            counts[peer.port] += 1
        return counts

    def index(self, group="api"):
        return self.registry.group(group).state[self.plugin._key]


class LeastConnTests(_Picking, SynchronousTestCase):
    """The balancer's choices; every group indexed (``small_group`` 0),
    whatever its size."""

    def test_choosesOnly(self):
        """A pick does not change counts; without a change it is the same peer."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        first = self.pick()
        self.assertIs(self.pick(), first)
        self.assertEqual((a.active, b.active), (0, 0))

    def test_fewestActive(self):
        """The peer with the fewest requests in flight is chosen."""
        peers = [self.registry.register("api", "10.0.0.1", p)[0] for p in (1, 2, 3)]
        peers[0].acquire()
        peers[0].acquire()
        peers[2].acquire()
        self.assertIs(self.pick(), peers[1])
        peers[1].acquire()
        peers[1].acquire()
        self.assertIs(self.pick(), peers[2])

    def test_weights(self):
        """Weight 2 carries twice the concurrent load of weight 1."""
        self.registry.register("api", "10.0.0.1", 1, weight=2)
        self.registry.register("api", "10.0.0.1", 2, weight=1)
        self.registry.register("api", "10.0.0.1", 3, weight=3)
        self.assertEqual(self.held(600), {1: 200, 2: 100, 3: 300})

    def test_weightChange(self):
        """A heartbeat with a new weight re-scores the peer."""
        self.registry.register("api", "10.0.0.1", 1)
        self.registry.register("api", "10.0.0.1", 2)
        self.assertEqual(self.held(10), {1: 5, 2: 5})
        self.registry.register("api", "10.0.0.1", 2, weight=4)
        # 2 now scores 5/4 < 5: it takes 15 more before 1 gets one
        self.assertEqual(self.held(15), {2: 15})

    def test_tiesRotate(self):
        """Equal peers with requests that end at once share picks evenly."""
        for port in range(1, 4):
            self.registry.register("api", "10.0.0.1", port)
        counts = self.cycled(1000)
        self.assertEqual(sorted(counts.values()), [333, 333, 334])
        self.assertEqual([p.active for p in self.registry.group("api").peers.values()],
                         [0, 0, 0])

    def test_tiesInTurnAfterRequestsEndOutOfOrder(self):
        """Requests held by five equal peers end in another order than they
        started: the next round gives the peers their turns in the order
        their requests ended (a peer leaving the middle of its bucket
        leaves the others' order as it was)."""
        peers = [self.registry.register("api", "10.0.0.1", port)[0] for port in range(1, 6)]
        self.assertEqual(self.held(5), {1: 1, 2: 1, 3: 1, 4: 1, 5: 1})
        for i in (2, 0, 4, 1, 3):
            peers[i].release()
        self.assertEqual([self.held(1).popitem()[0] for _ in range(5)], [3, 1, 5, 2, 4])

    def test_tiesRotateWeighted(self):
        """Rotation holds for equal weights above one."""
        for port in range(1, 5):
            self.registry.register("api", "10.0.0.1", port, weight=5)
        self.assertEqual(set(self.cycled(400).values()), {100})

    def test_tiesShareByWeight(self):
        """Requests one after another (every peer at 0 in flight) are
        shared by weight, as nginx's weighted round-robin breaks ties: not
        all to the heaviest peer."""
        for port, weight in ((1, 3), (2, 2), (3, 1)):
            self.registry.register("api", "10.0.0.1", port, weight=weight)
        self.assertEqual(self.cycled(600), {1: 300, 2: 200, 3: 100})
        # and smoothly: every 6 requests in a row hold each peer's share
        self.assertEqual(self.cycled(6), {1: 3, 2: 2, 3: 1})

    def test_tiesShareBySlowStartRamp(self):
        """A peer warming up (``ramp`` below 1) takes its reduced share of
        sequential requests."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        b.ramp = 0.25
        b.notify_changed()
        self.assertEqual(self.cycled(500), {1: 400, 2: 100})

    def test_idlePeerTakesItsShareNotABurst(self):
        """A peer that sat out (busy, or new) is not given every request
        until its turns catch up with the others'."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        self.cycled(1000)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        self.assertEqual(self.cycled(10), {1: 5, 2: 5})

    def test_concurrentSpread(self):
        """Held requests spread evenly and all counts return to 0."""
        peers = [self.registry.register("api", "10.0.0.1", p)[0] for p in range(1, 5)]
        inflight = []
        for _ in range(100):
            peer = self.pick()
            peer.acquire()
            inflight.append(peer)
        self.assertEqual([p.active for p in peers], [25, 25, 25, 25])
        for peer in inflight:
            peer.release()
        self.assertEqual([p.active for p in peers], [0, 0, 0, 0])

    def test_triedExcluded(self):
        """Peers in ``tried`` are skipped and stay in the index."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        c, _ = self.registry.register("api", "10.0.0.1", 3)
        first = self.pick()
        second = self.pick(tried=(first,))
        third = self.pick(tried=(first, second))
        self.assertEqual({first, second, third}, {a, b, c})
        self.assertIsNone(self.pick(tried=(a, b, c)))
        self.assertIs(self.pick(), first)
        self.assertEqual(len(self.index().key_of), 3)

    def test_expiredSkipped(self):
        """A peer past its TTL is never chosen, and leaves the index."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        self.clock.advance(30)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        self.clock.advance(31)  # a expired (not yet removed), b live until 90
        self.assertEqual(self.cycled(10), {2: 10})
        self.assertNotIn(a, self.index().key_of)
        self.assertIsNone(self.pick(tried=(b,)))
        # registering again after expiry makes a new peer, chosen again
        a2, created = self.registry.register("api", "10.0.0.1", 1)
        self.assertTrue(created)
        self.assertIs(self.pick(tried=(b,)), a2)
        self.assertEqual(self.cycled(10), {1: 5, 2: 5})

    def test_expiredWithRequestsInFlight(self):
        """A peer that expires while busy is dropped; its releases are ignored."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        self.clock.advance(30)
        self.registry.register("api", "10.0.0.1", 2)
        self.assertEqual(self.held(4), {1: 2, 2: 2})
        self.clock.advance(31)
        self.assertEqual(self.cycled(3), {2: 3})
        a.release()
        a.release()
        self.assertNotIn(a, self.index().key_of)
        self.assertEqual(self.cycled(3), {2: 3})

    def test_allExpired(self):
        """No live peer: ``None`` (tproxy answers 503); the index empties."""
        self.registry.register("api", "10.0.0.1", 1)
        self.registry.register("api", "10.0.0.1", 2)
        self.assertIsNotNone(self.pick())
        index = self.index()
        self.clock.advance(61)
        self.assertIsNone(self.pick())
        self.assertEqual((index.key_of, index.passes), ({}, {}))
        self.registry.expire()
        self.assertIsNone(self.registry.group("api"))
        self.assertIsNone(self.pick())

    def test_noRouteOrGroup(self):
        """No route or an unknown group: ``None``."""
        self.assertIsNone(self.pick(None))
        self.assertIsNone(self.pick("nosuch"))

    def test_peerAddedWhileRunning(self):
        """A new peer takes requests until its count catches up."""
        self.registry.register("api", "10.0.0.1", 1)
        self.registry.register("api", "10.0.0.1", 2)
        self.assertEqual(self.held(10), {1: 5, 2: 5})
        c, _ = self.registry.register("api", "10.0.0.1", 3)
        self.assertEqual(self.held(5), {3: 5})
        self.assertEqual(sorted(self.held(3).values()), [1, 1, 1])

    def test_peerRemovedWhileRunning(self):
        """A removed peer is never chosen, even when its requests end later."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        self.registry.register("api", "10.0.0.1", 2)
        self.held(4)
        self.assertEqual(self.registry.deregister("api", "10.0.0.1", 1), a)
        self.assertEqual(self.cycled(5), {2: 5})
        a.release()
        a.release()
        self.assertNotIn(a, self.index().key_of)
        self.assertEqual(self.cycled(5), {2: 5})
        # the same address registered again is a new peer, chosen again
        self.registry.register("api", "10.0.0.1", 1)
        self.assertEqual(self.held(1), {1: 1})

    def test_groupRecreated(self):
        """A group emptied and registered again gets a fresh index."""
        self.registry.register("api", "10.0.0.1", 1)
        self.pick()
        self.registry.deregister("api", "10.0.0.1", 1)
        self.assertIsNone(self.pick())
        self.registry.register("api", "10.0.0.1", 2)
        self.assertEqual(self.pick().port, 2)

    def test_twoPluginsOneRegistry(self):
        """Two least_conn plugins following one registry keep their own
        turns: each peer's record (kept with the peer) is its own index's."""
        other = least_conn.Plugin({})
        other.small_group = 0
        other.init_worker(self.gateway)
        for port in (1, 2, 3):
            self.registry.register("api", "10.0.0.1", port)

        def pick(plugin):
            ctx = RequestContext(self.gateway, Request("GET", "/x"))
            ctx.route = "api"
            return plugin.balancer(ctx, ())

        seen = []
        for plugin in [self.plugin, other, other, self.plugin] * 3:
            peer = pick(plugin)
            peer.acquire()
            peer.release()
            seen.append(peer.port)
        # both follow every request, so the peers take turns across both
        # (the other's first pick: its index is built then, every pass
        # from the same start)
        self.assertEqual(seen, [1, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2])
        self.assertIsNot(self.index(), other._index_of(self.registry.group("api").peers[("10.0.0.1", 1)]))

    def test_staticPeersBeforeInit(self):
        """Peers present before the plugin starts (static ones) are indexed."""
        gateway = make_gateway()
        gateway.registry.add_static("api", "10.0.0.1", 1)
        gateway.registry.add_static("api", "10.0.0.1", 2)
        plugin = least_conn.Plugin()
        ctx = RequestContext(gateway, Request("GET", "/x"))
        ctx.route = "api"
        seen = set()
        for _ in range(4):
            peer = plugin.balancer(ctx, ())  # attaches on first use
            peer.acquire()
            seen.add(peer.port)
        self.assertEqual(seen, {1, 2})

    def test_indexStaysSmall(self):
        """Keys seen once do not pile up under many acquire/release pairs."""
        peers = [self.registry.register("api", "10.0.0.1", p, weight=p)[0]
                 for p in range(1, 6)]
        self.pick()
        for i in range(20000):    # counts reach 500 by i ~ 3,750: hundreds of scores
            peer = peers[i % 5]
            peer.acquire()
            if i % 3 == 0 or peer.active > 500:
                peer.release()
        index = self.index()
        self.assertEqual(sum(map(len, index.buckets.values())), 5)
        self.assertEqual(set(index.key_of), set(peers))
        self.assertEqual(set(index.passes), set(peers))
        # (emptied buckets are swept beyond 4 * peers + 16; stale keys
        # <= 2 * buckets + 8 when one is added)
        self.assertLessEqual(len(index.buckets), 4 * len(peers) + 17)
        self.assertLessEqual(len(index.keys), 2 * (4 * len(peers) + 17) + 9)
        self.assertEqual(index.queued, set(index.keys))
        self.assertLessEqual(set(index.buckets), index.queued)
        # the scores are current: the least loaded peer comes first
        best = min(peers, key=lambda p: p.active / p.weight)
        self.assertIs(self.pick(), best)
        for peer in peers:
            while peer.active:
                peer.release()
        self.assertEqual({k[0] for k, b in index.buckets.items() if b}, {0.0})

    def test_leastLoadedThroughManyRounds(self):
        """Requests held and ended in a random order over many rounds (keys
        come and go, emptied buckets are used again for other keys): every
        pick is a peer with the fewest requests in flight for its weight."""
        peers = [self.registry.register("api", "10.0.0.1", p, weight=1 + p % 3)[0]
                 for p in range(1, 13)]
        rng = random.Random(11)
        held = []
        for _ in range(6000):
            if held and (len(held) > 40 or rng.random() < 0.45):
                held.pop(rng.randrange(len(held))).release()
                continue
            peer = self.pick()
            self.assertEqual(peer.active / peer.weight,
                             min(p.active / p.weight for p in peers))
            peer.acquire()
            held.append(peer)
        for peer in held:
            peer.release()
        self.assertEqual([p.active for p in peers], [0] * 12)
        self.assertEqual(len(self.cycled(12 * 20)), 12)

    def test_skipWholeBucket(self):
        """When every peer of the lowest score was tried, the next score is used."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        c, _ = self.registry.register("api", "10.0.0.1", 3)
        c.acquire()
        self.assertIs(self.pick(tried=(a, b)), c)
        self.assertIn(self.pick(), (a, b))
        self.assertEqual(sorted(k[0] for k in self.index().keys), [0.0, 1.0])

    def test_throughPhases(self):
        """Registered in a plugin manager, it answers the ``balancer`` phase."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        self.gateway.plugins.register(self.plugin, "least_conn")
        self.gateway.phases.refresh()
        ctx = RequestContext(self.gateway, Request("GET", "/x"))
        ctx.route = "api"
        self.assertIs(self.gateway.phases.balancer(ctx, ()), a)
        self.assertIsNone(self.gateway.phases.balancer(ctx, (a,)))

    def test_costIndependentOfPeerCount(self):
        """Picks cost the same at 10 and 10,000 peers (lines executed, the
        plugin's and its index's)."""
        def cost(n):
            gateway = make_gateway()
            for i in range(n):
                gateway.registry.register("api", "10.%d.%d.%d" % (
                    i >> 16, (i >> 8) & 255, i & 255), 80)
            plugin = least_conn.Plugin()
            ctx = RequestContext(gateway, Request("GET", "/x"))
            ctx.route = "api"
            plugin.balancer(ctx, ()).acquire()  # builds the index

            def run():
                held = []
                for i in range(300):
                    peer = plugin.balancer(ctx, ())
                    peer.acquire()
                    if i % 2:
                        peer.release()
                    else:
                        held.append(peer)
                for peer in held:
                    peer.release()
            return count_lines_in(run, (least_conn, _least_conn_index))
        small, large = cost(10), cost(10000)
        self.assertGreater(small, 300)
        self.assertLessEqual(large, small * 1.1)


class SmallGroupTests(_Picking, SynchronousTestCase):
    """The same choices when groups of up to ``small_group`` peers are
    scanned at each pick instead of indexed (the built-in default: 8)."""

    small_group = least_conn.Plugin.small_group

    # the tests of LeastConnTests that look at choices only (the others look
    # into the index too)
    test_choosesOnly = LeastConnTests.test_choosesOnly
    test_fewestActive = LeastConnTests.test_fewestActive
    test_weights = LeastConnTests.test_weights
    test_weightChange = LeastConnTests.test_weightChange
    test_tiesRotate = LeastConnTests.test_tiesRotate
    test_tiesRotateWeighted = LeastConnTests.test_tiesRotateWeighted
    test_tiesShareByWeight = LeastConnTests.test_tiesShareByWeight
    test_tiesShareBySlowStartRamp = LeastConnTests.test_tiesShareBySlowStartRamp
    test_idlePeerTakesItsShareNotABurst = LeastConnTests.test_idlePeerTakesItsShareNotABurst
    test_concurrentSpread = LeastConnTests.test_concurrentSpread
    test_noRouteOrGroup = LeastConnTests.test_noRouteOrGroup
    test_peerAddedWhileRunning = LeastConnTests.test_peerAddedWhileRunning
    test_groupRecreated = LeastConnTests.test_groupRecreated
    test_staticPeersBeforeInit = LeastConnTests.test_staticPeersBeforeInit
    test_throughPhases = LeastConnTests.test_throughPhases
    test_costIndependentOfPeerCount = LeastConnTests.test_costIndependentOfPeerCount

    def test_noIndexWhileSmall(self):
        """A small group is not indexed; once it grows past ``small_group``
        it is, and the choices stay the same."""
        peers = [self.registry.register("api", "10.0.0.1", p)[0]
                 for p in range(1, self.small_group + 1)]
        peers[0].acquire()
        self.assertIs(self.pick(), peers[1])
        self.assertNotIsInstance(self.registry.group("api").state[self.plugin._key],
                                 least_conn._Index)
        more, _ = self.registry.register("api", "10.0.0.1", 100)
        # peers[1:] changed never, "more" is new: the first unchanged wins
        self.assertIs(self.pick(), peers[1])
        self.assertIsInstance(self.registry.group("api").state[self.plugin._key],
                              least_conn._Index)
        self.assertEqual(sum(self.cycled(900).values()), 900)
        counts = self.held(9 * 8)   # 9 equal peers, 72 requests in flight
        self.assertEqual(set(counts.values()), {8})
        self.assertEqual(counts[more.port], 8)

    def test_onePeer(self):
        """A group of one peer (picked without a loop when it is usable):
        picked and its turn recorded while live, healthy, not full and not
        tried; otherwise as the loop says (unhealthy: only when allowed)."""
        a, _ = self.registry.register("api", "10.0.0.1", 1, max_conns=1)
        self.assertIs(self.plugin.choose("api", ()), a)
        state = self.registry.group("api").state[self.plugin._key]
        self.assertEqual(list(state.passes), [a])
        self.assertEqual(self.cycled(3), {1: 3})
        self.assertIsNone(self.plugin.choose("api", (a,)))
        a.acquire()
        self.assertIsNone(self.plugin.choose("api", ()))   # full
        a.release()
        a.healthy = False
        self.assertIs(self.plugin.choose("api", ()), a)
        self.assertIsNone(self.plugin.choose("api", (), False))
        a.healthy = True
        self.clock.advance(61)   # expired (ttl 60)
        self.assertIsNone(self.plugin.choose("api", ()))

    def test_countsFollowedOnceIndexed(self):
        """While its groups are small the plugin follows no count changes
        (acquire and release call nothing; on CPython); once one is indexed
        it does, once, and the index spreads requests in flight."""
        peers = [self.registry.register("api", "10.0.0.1", p)[0]
                 for p in range(1, self.small_group + 1)]
        self.assertEqual(sum(self.cycled(10).values()), 10)
        if least_conn._FOLLOW_LATE:
            self.assertEqual(list(peers[0]._notify), [])
        self.registry.register("api", "10.0.0.1", 100)
        self.pick()
        self.assertEqual(list(peers[0]._notify), [self.plugin.peer_changed])
        self.assertEqual(self.registry.subscribers().count(self.plugin), 1)
        self.assertEqual(set(self.held(9 * 3).values()), {3})

    def test_onePeerBalancer(self):
        """The balancer's pick in a group of one peer (its usual request):
        the peer while usable, its turns recorded as the scan records them;
        none when tried or expired, ``503`` when full, the unhealthy peer
        when nothing else is left (``when_all_down`` ``try_all``)."""
        a, _ = self.registry.register("api", "10.0.0.1", 1, max_conns=1)
        a.weight = 2
        self.assertEqual(self.cycled(3), {1: 3})
        state = self.registry.group("api").state[self.plugin._key]
        # each request given adds 1 / weight, from the pass of the last one
        self.assertEqual((state.passes[a], state.vt), ([1.0, 2], 0.5))
        self.assertIsNone(self.pick(tried=(a,)))
        a.acquire()
        busy = self.pick()
        self.assertEqual((busy.status, json.loads(busy.body)["error"]),
                         (503, "all upstreams busy"))
        a.release()
        a.healthy = False
        self.assertIs(self.pick(), a)
        a.healthy = True
        self.assertEqual(self.cycled(2), {1: 2})
        self.assertEqual((state.passes[a], state.vt), ([2.5, 5], 2.0))
        self.clock.advance(61)   # expired (ttl 60)
        self.assertIsNone(self.pick())

    def test_removedForgotten(self):
        """A removed peer of a small group leaves no trace in its state."""
        a, _ = self.registry.register("api", "10.0.0.1", 1)
        b, _ = self.registry.register("api", "10.0.0.1", 2)
        self.cycled(4)
        self.registry.deregister("api", "10.0.0.1", 1)
        state = self.registry.group("api").state[self.plugin._key]
        self.assertEqual(set(state.passes), {b})
        self.assertEqual(self.cycled(3), {2: 3})
