"""
Tests for :mod:`tproxy.replica`: the parent's publishing registry and the
workers' replicas, joined by real control channels over in-memory
transports, on a fake clock.
"""

from twisted.internet.task import Clock
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from tproxy.control import ControlProtocol
from tproxy.registry import IRegistry, MemoryRegistry
from tproxy.replica import HEARTBEAT_DELAY, PublishingRegistry, ReplicaRegistry, snapshot


class WorkerSide(object):
    """A worker's end of the control channel, as far as the registry goes
    (what :class:`tproxy.worker.Worker` does with a ``registry`` message),
    counting the messages."""

    def __init__(self, replica, messages):
        self.replica = replica
        self.messages = messages

    def control_registry(self, message):
        self.messages.append(len(message["peers"]))
        self.replica.apply(message["peers"], message.get("groups"))
        return True


class Recorder(object):
    """An ``IRegistryListener`` that records what it hears."""

    def __init__(self):
        self.events = []

    def peer_added(self, peer):
        self.events.append(("added", peer.address))

    def peer_removed(self, peer):
        self.events.append(("removed", peer.address))

    def peer_changed(self, peer):
        self.events.append(("changed", peer.address))


class Box(object):
    """A parent's registry and ``n`` workers' replicas, on one clock."""

    def __init__(self, n=2, ttl=60, static=()):
        self.clock = Clock()
        self.clock.advance(1000)
        self.parent = PublishingRegistry(MemoryRegistry(self.clock, ttl=ttl), self.clock)
        self.workers = []
        self.pumps = []
        self.messages = []
        for group, host, port in static:
            self.parent.add_static(group, host, port)
        for _ in range(n):
            self.add_worker(static)

    def add_worker(self, static=()):
        replica = ReplicaRegistry(self.clock, ttl=self.parent.ttl)
        for group, host, port in static:
            replica.add_static(group, host, port)
        state = snapshot(self.parent.backend)
        replica.apply(state["peers"], state["groups"])
        worker = WorkerSide(replica, self.messages)
        worker_end, parent_end, pump = connectedServerAndClient(
            lambda: ControlProtocol(object()), lambda: ControlProtocol(worker))
        self.parent.channels.append(parent_end)
        self.workers.append(replica)
        self.pumps.append(pump)
        return replica

    def turn(self):
        """End the reactor turn (the batch is sent); deliver everything."""
        self.clock.advance(0)
        for pump in self.pumps:
            pump.flush()

    def peers(self, registry):
        return sorted((g.name, p.address, p.weight, p.max_conns, p.static,
                       p.created_time, p.last_heartbeat, p.expires_at, g.routable)
                      for g in registry.groups() for p in g.peers.values())


class PublishingTests(TestCase):

    def test_interface(self):
        """Both sides are registries."""
        box = Box(1)
        verifyObject(IRegistry, box.parent)
        verifyObject(IRegistry, box.workers[0])

    def test_registrationReachesEveryWorker(self):
        """A registration is sent at the end of the turn; ``synced`` fires
        once every worker has applied it."""
        box = Box(2)
        box.parent.register("api", "10.0.0.1", 80, weight=3)
        synced = box.parent.synced()
        self.assertNoResult(synced)
        self.assertEqual([box.peers(w) for w in box.workers], [[], []])
        box.clock.advance(0)
        self.assertNoResult(synced)    # sent, not yet acknowledged
        box.turn()
        self.successResultOf(synced)
        for w in box.workers:
            self.assertEqual(box.peers(w), box.peers(box.parent))
        self.assertEqual(box.peers(box.parent)[0][:3], ("api", "10.0.0.1:80", 3))
        self.successResultOf(box.parent.synced())    # nothing left to wait for

    def test_oneMessagePerTurn(self):
        """Many changes in one turn go in one message per worker."""
        box = Box(2)
        for port in range(1, 101):
            box.parent.register("api", "10.0.0.1", port)
        box.parent.register("api", "10.0.0.1", 1)   # a heartbeat of one of them
        box.turn()
        self.assertEqual(box.messages, [100, 100])
        self.assertEqual(len(box.workers[1].group("api").peers), 100)

    def test_largeBatchInSlices(self):
        """A large batch goes in messages of ``CHUNK`` peers, the next sent
        once the worker has acknowledged the previous; ``synced`` waits for
        the last."""
        box = Box(1)
        for port in range(1, 2501):
            box.parent.register("api", "10.0.0.1", port)
        synced = box.parent.synced()
        box.clock.advance(0)
        self.assertEqual(len(box.parent._senders[box.parent.channels[0]].queue), 2)
        box.turn()
        self.successResultOf(synced)
        self.assertEqual(box.messages, [1000, 1000, 500])
        self.assertEqual(box.peers(box.workers[0]), box.peers(box.parent))

    def test_heartbeat(self):
        """A heartbeat (nothing changed but the expiry) is answered at once
        and sent within ``HEARTBEAT_DELAY``, with the others of that time,
        extending the replicas' ``expires_at`` on the same peer."""
        box = Box(1)
        box.parent.register("api", "10.0.0.1", 80)
        box.parent.register("api", "10.0.0.2", 80)
        box.turn()
        replica = box.workers[0]
        peer = replica.group("api").peers[("10.0.0.1", 80)]
        box.clock.advance(30)
        box.parent.register("api", "10.0.0.1", 80)
        self.successResultOf(box.parent.synced())
        box.turn()
        self.assertEqual(peer.expires_at, 1060)   # not yet
        box.clock.advance(HEARTBEAT_DELAY / 2)
        box.parent.register("api", "10.0.0.2", 80)
        box.clock.advance(HEARTBEAT_DELAY / 2)
        box.turn()
        self.assertIs(replica.group("api").peers[("10.0.0.1", 80)], peer)
        self.assertEqual(peer.expires_at, 1030 + 60)
        self.assertEqual(box.peers(replica), box.peers(box.parent))
        self.assertEqual(box.messages, [2, 2])

    def test_heartbeatDelayWithinTtl(self):
        """With a short TTL a heartbeat waits a quarter of it at most."""
        box = Box(1, ttl=2)
        box.parent.register("api", "10.0.0.1", 80)
        box.turn()
        box.clock.advance(1)
        box.parent.register("api", "10.0.0.1", 80)
        box.clock.advance(0.5)
        box.turn()
        self.assertEqual(box.peers(box.workers[0]), box.peers(box.parent))

    def test_changesDoNotWait(self):
        """A heartbeat that changes the weight, or its group's routable flag
        (set on the group by the registry plugin after ``register``), is sent
        at once, and ``synced`` waits for it; so are heartbeats pending then."""
        box = Box(1)
        for host in ("10.0.0.1", "10.0.0.2"):
            box.parent.register("api", host, 80)
        box.turn()
        replica = box.workers[0]
        box.clock.advance(10)
        box.parent.register("api", "10.0.0.2", 80)          # waits
        box.parent.register("api", "10.0.0.1", 80, weight=9)
        synced = box.parent.synced()
        self.assertNoResult(synced)
        box.turn()
        self.successResultOf(synced)
        self.assertEqual(box.peers(replica), box.peers(box.parent))
        box.parent.register("api", "10.0.0.1", 80)
        box.parent.group("api").routable = False
        synced = box.parent.synced()
        self.assertNoResult(synced)
        box.turn()
        self.successResultOf(synced)
        self.assertFalse(replica.group("api").routable)
        # as the registry plugin sets it now: through register(routable=)
        box.parent.register("api", "10.0.0.1", 80, routable=True)
        synced = box.parent.synced()
        self.assertNoResult(synced)
        box.turn()
        self.successResultOf(synced)
        self.assertTrue(replica.group("api").routable)

    def test_expiryOnceInTheParent(self):
        """The replica never expires anything itself (a peer past its time is
        not live there); the parent's sweep removes it everywhere."""
        box = Box(1)
        box.parent.register("api", "10.0.0.1", 80)
        box.turn()
        replica = box.workers[0]
        box.clock.advance(61)
        self.assertEqual(replica.expire(), [])
        peer = replica.group("api").peers[("10.0.0.1", 80)]
        self.assertFalse(peer.is_live(box.clock.seconds()))
        self.assertEqual([p.address for p in box.parent.expire()], ["10.0.0.1:80"])
        box.turn()
        self.assertIsNone(replica.group("api"))

    def test_removeAndListeners(self):
        """Removals, weight changes and ``routable`` reach the replicas'
        listeners as in one process."""
        box = Box(1)
        replica = box.workers[0]
        heard = Recorder()
        replica.subscribe(heard)
        box.parent.register("api", "10.0.0.1", 80)
        box.turn()
        box.parent.register("api", "10.0.0.1", 80, weight=5)
        box.parent.group("api").routable = False
        box.turn()
        self.assertFalse(replica.group("api").routable)
        self.assertEqual(replica.group("api").peers[("10.0.0.1", 80)].weight, 5)
        peer = replica.group("api").peers[("10.0.0.1", 80)]
        self.assertTrue(peer.member)
        box.parent.deregister("api", "10.0.0.1", 80)
        box.turn()
        self.assertIsNone(replica.group("api"))
        self.assertFalse(peer.member)
        self.assertEqual(heard.events, [("added", "10.0.0.1:80"), ("changed", "10.0.0.1:80"),
                                        ("removed", "10.0.0.1:80")])

    def test_newRegistrationNewPeer(self):
        """A registration after the old one expired (not swept yet) is a new
        peer in the replica too: expiry is final for a Peer."""
        box = Box(1)
        box.parent.register("api", "10.0.0.1", 80)
        box.turn()
        replica = box.workers[0]
        old = replica.group("api").peers[("10.0.0.1", 80)]
        box.clock.advance(61)
        box.parent.register("api", "10.0.0.1", 80)
        box.turn()
        new = replica.group("api").peers[("10.0.0.1", 80)]
        self.assertIsNot(new, old)
        self.assertEqual((old.member, new.member), (False, True))
        self.assertTrue(new.is_live(box.clock.seconds()))

    def test_staticPeersAreTheWorkersOwn(self):
        """Static peers come from each worker's configuration: the parent's
        messages change their weight only, never add or remove them."""
        box = Box(1, static=[("web", "10.0.0.9", 80)])
        replica = box.workers[0]
        box.parent.register("web", "10.0.0.9", 80, weight=4)   # a static peer heartbeating
        box.parent.add_static("other", "10.0.0.8", 80)         # not in the worker's file
        box.turn()
        self.assertEqual(replica.group("web").peers[("10.0.0.9", 80)].weight, 4)
        self.assertIsNone(replica.group("other"))
        box.parent.remove_static("web", "10.0.0.9", 80)
        box.turn()
        self.assertIsNotNone(replica.group("web"))

    def test_snapshot(self):
        """A worker started later begins from a snapshot of the registry."""
        box = Box(1)
        box.parent.register("api", "10.0.0.1", 80, weight=2, max_conns=7)
        box.parent.register("b", "::1", 81)
        box.parent.group("b").routable = False
        box.turn()
        late = box.add_worker()
        self.assertEqual(box.peers(late), box.peers(box.parent))

    def test_goneWorker(self):
        """A worker whose channel closed does not hold ``synced`` back."""
        box = Box(2)
        box.parent.register("api", "10.0.0.1", 80)
        synced = box.parent.synced()
        box.clock.advance(0)
        box.pumps[1].client.transport.loseConnection()
        box.turn()
        self.successResultOf(synced)

    def test_countsAreTheWorkers(self):
        """In-flight counts stay in the worker that counts them."""
        box = Box(2)
        box.parent.register("api", "10.0.0.1", 80)
        box.turn()
        peer = box.workers[0].group("api").peers[("10.0.0.1", 80)]
        peer.acquire()
        peer.acquire()
        peer.release()
        self.assertEqual(box.workers[0].counts(), [["api", "10.0.0.1", 80, 1, 2, True]])
        self.assertEqual(box.workers[1].counts(), [])
        box.workers[1].group("api").peers[("10.0.0.1", 80)].healthy = False
        self.assertEqual(box.workers[1].counts(), [["api", "10.0.0.1", 80, 0, 0, False]])
        self.assertEqual(box.parent.group("api").peers[("10.0.0.1", 80)].active, 0)
