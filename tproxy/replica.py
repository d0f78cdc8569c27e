# -*- test-case-name: tests.test_replica -*-
"""
One registry for a box of workers: the parent owns it, each worker holds a
replica.

- In the parent, :class:`PublishingRegistry` wraps the registry backend
  (:class:`tproxy.registry.MemoryRegistry`, or any other
  :class:`~tproxy.registry.IRegistry`): the admin API, heartbeats, TTL
  expiry and the cleanup timer run there, once for the box.  Every change
  (a registration, a heartbeat, a removal, an expiry, a weight) marks the
  peer; at the end of the reactor turn the marked peers' state is sent to
  every worker in one ``registry`` message (:meth:`PublishingRegistry.flush`),
  however many heartbeats arrived in that turn.
- In a worker, :class:`ReplicaRegistry` (:mod:`tproxy.replica_registry`,
  importable from here) is a ``MemoryRegistry`` whose
  dynamic peers come only from the parent (:meth:`ReplicaRegistry.apply`):
  it never expires anything itself (the parent's expiry reaches it as a
  removal), and its peers' ``active`` / ``total`` are the worker's own
  counts, changed per request in the worker's memory only, as in a single
  process.

The bound: :meth:`PublishingRegistry.synced` fires once every worker has
acknowledged every change made so far; the parent's admin API answers a
request only then (or after :data:`SYNC_TIMEOUT` seconds, logged), so when
``/upstream/add`` has answered, every worker routes to the new peer.  A
heartbeat that changes nothing but the peer's expiry is the exception: it
is sent with the others of the next :data:`HEARTBEAT_DELAY` seconds (at most
a quarter of the TTL), long before the expiry it renews could pass, and the
admin API answers it at once.

Static peers (the configuration's ``upstreams``) are each worker's own,
built from the same configuration; what the parent sends about them only
changes their ``weight`` and ``max_conns`` (a static peer heartbeating
with ``weight=``).
"""

import json
from collections import deque

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from zope.interface import implementer

from tproxy.registry import INFINITY, IRegistry
from tproxy.replica_registry import ReplicaRegistry, counts

__all__ = ["HEARTBEAT_DELAY", "PublishingRegistry", "ReplicaRegistry", "SYNC_TIMEOUT",
           "SharedRegistryPublisher", "counts", "peer_state", "snapshot"]

log = Logger()

#: seconds the parent's admin API waits for the workers to acknowledge a
#: change before it answers anyway (a worker that hangs; logged)
SYNC_TIMEOUT = 2.0

#: peers per ``registry`` message (a worker applies one at a time)
CHUNK = 1000

#: seconds a heartbeat (a registration renewed, nothing else changed) may
#: wait before it is sent to the workers, with the others of that time
#: (at most a quarter of the TTL)
HEARTBEAT_DELAY = 1.0


def peer_state(registry, key):
    """
    What the parent sends about the peer ``key`` = ``(group, host, port)``:
    ``[group, host, port, weight, max_conns, static, created_time,
    last_heartbeat, expires_at or None]``, or ``[group, host, port]`` when
    the registry no longer has it.
    """
    group, host, port = key
    g = registry.group(group)
    peer = g.peers.get((host, port)) if g is not None else None
    if peer is None:
        return [group, host, port]
    return [group, host, port, peer.weight, peer.max_conns, peer.static,
            peer.created_time, peer.last_heartbeat,
            None if peer.expires_at == INFINITY else peer.expires_at]


def snapshot(registry):
    """``{"peers": [state, ...], "groups": {name: routable}}`` of every
    peer of ``registry`` (what a new worker starts from)."""
    peers = []
    groups = {}
    for g in registry.groups():
        groups[g.name] = g.routable
        for host, port in g.peers:
            peers.append(peer_state(registry, (g.name, host, port)))
    return {"peers": peers, "groups": groups}


@implementer(IRegistry)
class PublishingRegistry(object):
    """
    The parent's registry: ``backend`` (an ``IRegistry``) whose changes are
    sent to the workers' replicas.

    :param backend: the registry that keeps the state.
    :param clock: ``IReactorTime`` (``callLater(0, ...)`` ends a batch).

    :ivar channels: the workers' :class:`tproxy.control.ControlProtocol`,
        added once they have their snapshot.
    """

    #: the workers hold replicas of this registry, fed by it
    replicates = True
    #: writes are answered at once (by the in-memory backend)
    shared = False

    def __init__(self, backend, clock):
        self.backend = backend
        self.clock = clock
        self.channels = []
        self._dirty = {}          # key -> None, in order
        self._call = None
        self._heartbeats = {}     # keys whose only change is a heartbeat
        self._heartbeat_call = None
        self._last_heartbeat = None
        self._routable = {}       # group -> the routable flag last sent
        self._senders = {}        # channel -> _Sender
        self._waiting = []        # Deferreds fired after the next flush is acknowledged
        self._last = None         # (Deferreds of) the last flush, while unacknowledged

    # -- IRegistry, delegated ----------------------------------------------------

    @property
    def ttl(self):
        return self.backend.ttl

    @ttl.setter
    def ttl(self, value):
        self.backend.ttl = value

    def now(self):
        return self.backend.now()

    def group(self, name):
        return self.backend.group(name)

    def groups(self):
        return self.backend.groups()

    def subscribe(self, listener):
        self.backend.subscribe(listener)

    def unsubscribe(self, listener):
        self.backend.unsubscribe(listener)

    def subscribers(self):
        return self.backend.subscribers()

    def register(self, group, host, port, weight=None, max_conns=None, routable=None):
        g = self.backend.group(group)
        before = g.peers.get((host, port)) if g is not None else None
        if before is not None:
            before = (before, before.weight, before.max_conns)
        if routable is None:
            peer, created = self.backend.register(group, host, port, weight, max_conns)
        else:
            peer, created = self.backend.register(group, host, port, weight, max_conns,
                                                  routable=routable)
        key = (group, host, port)
        if (created or before is None or before[0] is not peer
                or (peer.weight, peer.max_conns) != before[1:]):
            self._mark(key)
        else:
            # a heartbeat: only expires_at moved, which the workers need
            # before the old one passes, not now
            self._mark_heartbeat(key)
        return peer, created

    def add_static(self, group, host, port, weight=1, max_conns=0):
        peer = self.backend.add_static(group, host, port, weight, max_conns)
        self._mark((group, host, port))
        return peer

    def deregister(self, group, host, port):
        peer = self.backend.deregister(group, host, port)
        self._mark((group, host, port))
        return peer

    def remove_static(self, group, host, port):
        peer = self.backend.remove_static(group, host, port)
        self._mark((group, host, port))
        return peer

    def expire(self):
        gone = self.backend.expire()
        for peer in gone:
            self._mark((peer.group.name, peer.host, peer.port))
        return gone

    # -- publishing ----------------------------------------------------------------

    def _mark(self, key):
        self._dirty[key] = None
        self._heartbeats.pop(key, None)
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    def heartbeat_delay(self):
        """Seconds a heartbeat may wait before it is sent:
        :data:`HEARTBEAT_DELAY`, or a quarter of the TTL if that is less."""
        return min(HEARTBEAT_DELAY, self.backend.ttl / 4.0)

    def _mark_heartbeat(self, key):
        if key in self._dirty:
            return
        self._heartbeats[key] = None
        self._last_heartbeat = key
        if self._heartbeat_call is None:
            self._heartbeat_call = self.clock.callLater(self.heartbeat_delay(),
                                                        self._flush_heartbeats)

    def _flush_heartbeats(self):
        self._heartbeat_call = None
        if self._heartbeats:
            if self._call is None:
                self._call = self.clock.callLater(0, self.flush)

    def flush(self):
        """
        Send the marked peers' state (and their groups' ``routable``) to
        every worker now; the Deferreds of :meth:`synced` waiting for it
        fire once every worker has acknowledged it (or is gone).
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._heartbeat_call is not None and self._heartbeat_call.active():
            self._heartbeat_call.cancel()
        self._heartbeat_call = None
        dirty = list(self._dirty) + list(self._heartbeats)
        self._dirty, self._heartbeats, self._last_heartbeat = {}, {}, None
        waiting, self._waiting = self._waiting, []
        if not dirty:
            _fire(waiting)
            return
        senders = self._senders
        for channel in list(senders):
            if channel not in self.channels:
                del senders[channel]
        for channel in self.channels:
            if channel not in senders:
                senders[channel] = _Sender(channel)
        calls = []
        for start in range(0, len(dirty), CHUNK):
            chunk = dirty[start:start + CHUNK]
            peers = [peer_state(self.backend, key) for key in chunk]
            groups = {}
            for name, _, _ in chunk:
                g = self.backend.group(name)
                if g is not None:
                    groups[name] = self._routable[name] = g.routable
            # encoded once for every worker
            encoded = json.dumps({"peers": peers, "groups": groups}, separators=(",", ":"))
            calls.extend(senders[channel].send(encoded) for channel in self.channels)
        done = DeferredList(calls, consumeErrors=True)
        last = self._last = [waiting]

        def acknowledged(_):
            if self._last is last:
                self._last = None
            _fire(last[0])
        done.addCallback(acknowledged)

    def synced(self):
        """
        A Deferred that fires once every change made so far has been
        acknowledged by every worker (at once when there is nothing to
        wait for).
        """
        key = self._last_heartbeat
        if key is not None:
            # the admin API's last request was a heartbeat: if it also
            # changed its group's routable flag (which the registry plugin
            # sets on the group itself), that cannot wait
            self._last_heartbeat = None
            g = self.backend.group(key[0])
            if g is not None and self._routable.get(key[0], True) != g.routable:
                self._mark(key)
        if self._dirty:
            d = Deferred()
            self._waiting.append(d)
            return d
        if self._last is not None:
            d = Deferred()
            self._last[0].append(d)
            return d
        return succeed(None)


class _Sender(object):
    """
    Sends one worker's ``registry`` messages one at a time, the next once
    the worker has acknowledged the previous: a worker applies a large batch
    (10,000 heartbeats) in slices of :data:`CHUNK`, serving its requests
    between them.
    """

    def __init__(self, channel):
        self.channel = channel
        self.queue = deque()
        self.busy = False

    def send(self, encoded):
        """Send the fields ``encoded`` (JSON text); a Deferred firing once
        they are acknowledged, or the channel closed."""
        d = Deferred()
        self.queue.append((encoded, d))
        if not self.busy:
            self._next()
        return d

    def _next(self):
        while self.queue:
            encoded, d = self.queue.popleft()
            call = self.channel.call_encoded("registry", encoded)
            if call.called:     # (a closed channel fails at once)
                call.addErrback(lambda f: None)
                d.callback(None)
                continue
            self.busy = True

            def done(result, d=d):
                self.busy = False
                d.callback(None)
                self._next()
            call.addBoth(done)
            return


def _fire(ds):
    for d in ds:
        d.callback(None)


class SharedRegistryPublisher(object):
    """
    The parent's stand-in for :class:`PublishingRegistry` when the registry
    is shared by several instances (``registry.backend`` ``redis``): each
    worker is then an instance of the fleet with its own replica of the
    shared store (:mod:`tproxy.registry_redis`), so the parent sends the
    workers nothing, and a change is acknowledged once the store has it.

    :param backend: the parent's shared registry.
    """

    replicates = False

    def __init__(self, backend):
        self.backend = backend
        self.channels = []

    def synced(self):
        """Fired at once: the workers read the shared store themselves."""
        return succeed(None)

