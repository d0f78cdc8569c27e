# -*- test-case-name: tests.test_registry_redis -*-
"""
A registry shared by a fleet of tproxy instances through Redis
(``"registry": {"backend": "redis", "url": ..., "key_prefix": ...}``).

Each instance serves requests from a local replica (a
:class:`~tproxy.registry.MemoryRegistry` it keeps up to date): a request
never waits for Redis.  Writes (``/upstream/add`` heartbeats,
``/upstream/remove``, ``/routes`` changes, the expiry sweep) run as one Lua
script each, atomically (the registrations and heartbeats of one reactor
turn as one script: a burst of them is one round trip and one published
message); the script bumps a version counter, stamps what it
wrote with it and publishes the change on a channel.  Every instance
subscribes to the channel and applies each change whose version is newer
than what it holds for that key, so an instance's own writes (applied as
soon as Redis answers), the published changes and the full snapshots (at
start, after a reconnection, every ``resync_interval`` seconds) can arrive
in any order and still converge.

The code, by job: this module (the connections, up and down, snapshots and
restores), :mod:`tproxy.registry_redis_writes` (the scripts' calls, the
writes and the sweep), :mod:`tproxy.registry_redis_subscriber` (the
connection the published changes come on), :mod:`tproxy.registry_redis_replica`
(what Redis says applied to the replica), :mod:`tproxy.registry_redis_scripts` (the Lua scripts),
:mod:`tproxy.shared_routes` (the ``/routes`` routes), and
:mod:`tproxy.redis_connections` (Redis away known from the connections; the
URL parsed).

Expiry: a sorted set of expiry times (the writer's clock), swept by every
instance every ``cleanup_interval`` seconds with one script that removes
what has expired and publishes it: idempotent (two sweeps at once remove a
registration once), and with the same semantics as the in-memory registry
(a registration is never selected after ``expires_at``, the replica checks
it per request as ``Peer.is_live``; an expired one registered again is a
new registration).  Plain Redis key expiry was not chosen: its expiry
events need ``notify-keyspace-events`` (often not configurable on a
managed Redis), come when Redis gets round to it, and leave the per-group
state (``routable``, the count that says when a group is gone) behind.

Redis unreachable: the instance keeps serving from its replica, logs it
once, answers writes with :class:`~tproxy.registry.RegistryUnavailable`
(``503``), and stops expiring the registrations it holds (backends cannot
heartbeat meanwhile, as Eureka's self-preservation).  When Redis answers
again it gives every registration it held one more TTL in Redis (puts them
back if Redis lost its data: a restart without persistence, a failover to a
replica that had not caught up), takes a full snapshot and logs once.

Static peers (``upstreams``) are per-instance configuration, never written
to Redis; a registration of the same server in Redis is hidden behind the
static peer on that instance.

Keys, under ``key_prefix`` (``tproxy:``): ``peers`` (hash ``"group host
port"`` -> JSON), ``expiry`` (sorted set), ``groups`` (hash: dynamic count,
``routable``), ``routes`` (hash name -> JSON), ``version``, ``route_seq``,
``epoch``; the channel ``<key_prefix>events:<db>`` (pub/sub ignores the
database number).
"""

import binascii
import json
import os

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from tproxy.redis_connections import (ReportingEndpoint, endpoint, host_port, parse_url,
                                      watched_pool)
from tproxy.registry import IRegistry, MemoryRegistry, RegistryUnavailable
from tproxy.registry_redis_replica import ReplicaUpdater
from tproxy.registry_redis_subscriber import subscriber_factory
from tproxy.registry_redis_writes import BATCH, SWEEP_LIMIT, RedisWrites, _record
from tproxy.shared_routes import SharedRoutes

__all__ = ["BATCH", "RedisRegistry", "SWEEP_LIMIT", "SharedRoutes", "parse_url"]

log = Logger()


def _new_epoch():
    return binascii.hexlify(os.urandom(8)).decode("ascii")


@implementer(IRegistry)
class RedisRegistry(RedisWrites, MemoryRegistry):
    """
    The registry of a fleet, in Redis, with a local replica that serves (see
    the module docstring).  ``register``, ``deregister`` and ``expire``
    return Deferreds (a static peer's heartbeat is answered at once);
    ``group``, ``groups`` and the peers are the replica's, read without
    waiting.

    :param clock: the ``IReactorTime`` of timestamps (registration times,
        expiry): a ``Clock`` in tests.
    :param settings: the configuration's ``registry`` object.
    :param reactor: the reactor that connects to Redis and times its
        answers (default: ``clock``).
    :ivar up: whether Redis answers (writes are refused while not).
    :ivar connected: whether the command pool holds a connection (losing the
        last one is Redis away, at once).
    :ivar shared_routes: the :class:`SharedRoutes` the ``routes`` plugin keeps its
        ``/routes`` changes in.
    """

    #: writes go to a shared store and answer with Deferreds
    shared = True

    def __init__(self, clock, settings, reactor=None):
        MemoryRegistry.__init__(self, clock, ttl=settings.get("ttl", 60))
        self.reactor = reactor if reactor is not None else clock
        self.host, self.port, self.db, self.password = parse_url(
            settings.get("url", "redis://127.0.0.1:6379/0"))
        self.address = "{}/{}".format(host_port(self.host, self.port), self.db)
        prefix = settings.get("key_prefix", "tproxy:")
        self.keys = [prefix + k for k in ("peers", "expiry", "groups", "routes",
                                          "version", "route_seq", "epoch")]
        self.channel = "{}events:{}".format(prefix, self.db)
        #: this instance's mark on the changes it publishes
        self.writer = _new_epoch()
        self._channel_arg = "{} {}".format(self.channel, self.writer)
        self.timeout = settings.get("timeout", 2)
        self.retry_interval = settings.get("retry_interval", 1)
        self.resync_interval = settings.get("resync_interval", 30)
        self.hold_for = self.ttl + settings.get("cleanup_interval", 10)
        self.up = False
        self.connected = False
        self.shared_routes = SharedRoutes(self)
        #: what applies Redis's snapshots and changes to the replica
        self.updater = ReplicaUpdater(self)
        self._held = False          # registrations held while Redis was away
        self._logged_down = False
        self._refusing = False
        #: registrations one sweep script removes at most (then another runs)
        self.sweep_limit = SWEEP_LIMIT
        self._subscribed = False
        self._registering = []     # (Deferred, script arguments) of this reactor turn
        self._syncing = None
        self._started = False
        self._stopping = False
        self._first_sync = self._first_timer = None
        self.client = self._factory = self._subscriber = None
        self._loop = None

    # -- connections ----------------------------------------------------------------

    def start(self):
        """
        Connect (a command pool and a subscriber) and take the first snapshot.

        :return: a Deferred that fires when the replica is in sync, or, if
            Redis does not answer, as soon as a connection is refused, or
            after ``timeout`` + 1 seconds
            (the instance then serves what it has, and catches up when Redis
            answers).
        """
        if self._started:
            return succeed(None)
        self._started = True
        factory = watched_pool(self._pool_changed, host_port(self.host, self.port),
                               self.db or None, 2, self.password, convert_numbers=False)
        factory.initialDelay = min(factory.initialDelay, self.retry_interval)
        factory.maxDelay = self.retry_interval
        factory.startConnecting(self._endpoint(self._connect_failed))
        self._factory = factory
        self.client = factory.handler

        subscriber = subscriber_factory(self)
        subscriber.initialDelay = min(subscriber.initialDelay, self.retry_interval)
        subscriber.maxDelay = self.retry_interval
        # (what the command pool's attempts say is enough)
        subscriber.startConnecting(self._endpoint(lambda failure: None))
        self._subscriber = subscriber

        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.retry_interval, now=False).addErrback(
            lambda f: log.failure("registry: the Redis timer stopped", f))
        self._last_sync = self.reactor.seconds()
        self._first_sync = Deferred()
        self._first_timer = self.reactor.callLater(self.timeout + 1, self._not_yet)
        return self._first_sync

    def _not_yet(self, reason=None):
        """The first snapshot did not come in time (or the first connection
        failed): serve without it."""
        self._first_timer = None
        if not self.up:
            self._down(reason or "no answer within {} s".format(self.timeout + 1))
        self._synced()

    def _synced(self):
        if self._first_timer is not None and self._first_timer.active():
            self._first_timer.cancel()
        self._first_timer = None
        d, self._first_sync = self._first_sync, None
        if d is not None:
            d.callback(None)

    def _endpoint(self, failed):
        return ReportingEndpoint(endpoint(self.reactor, self.host, self.port, self.timeout),
                                 failed, "the registry's Redis at " + self.address)

    def _connect_failed(self, failure):
        """A connection attempt of the command pool failed (refused, timed
        out, unresolvable): while it holds no connection, Redis is away (at
        start: serve now, not after the timeout)."""
        if self.connected:
            return
        reason = "cannot connect: {}".format(failure.getErrorMessage())
        if self._first_timer is not None and not self.up:
            self._first_timer.cancel()
            self._not_yet(reason)
        else:
            self._down(reason)

    def _pool_changed(self, size):
        """The command pool gained or lost a connection; ``size``: how many
        it holds.  Losing the last one is Redis away, at once (a write would
        otherwise wait in txredisapi's queue for the whole ``timeout``); the
        first one back is followed by a snapshot (up again when it comes)."""
        was, self.connected = self.connected, size > 0
        if was and not self.connected:
            self._down("connection lost")
        elif self.connected and not was and self._subscribed and not self._stopping:
            self._sync()

    def stop(self):
        """Close the connections; a Deferred."""
        self._stopping = True
        if self._first_timer is not None and self._first_timer.active():
            self._first_timer.cancel()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        ds = [f.disconnect() for f in (self._factory, self._subscriber) if f is not None]
        self._factory = self._subscriber = None
        return DeferredList(ds, consumeErrors=True)

    def _tick(self):
        """Every ``retry_interval``: catch up when Redis is back (or a change
        was missed); a full resync every ``resync_interval``.  Never raises."""
        try:
            due = self.reactor.seconds() - self._last_sync >= self.resync_interval
            if self._subscribed and self.connected and (not self.up or due):
                self._sync()
            if not self.up:
                self._hold()
        except Exception:
            log.failure("registry: the Redis timer failed")

    # -- up and down ----------------------------------------------------------------

    def _down(self, reason):
        if self._stopping:
            return
        was_up, self.up = self.up, False
        if was_up or not self._logged_down:
            self._logged_down = True
            log.warn("registry: Redis at {address} is unreachable ({reason}); serving "
                     "the last known registrations and routes, holding them, and "
                     "refusing changes (503) until it answers",
                     address=self.address, reason=reason)
        if was_up:
            self._held = True   # what it holds goes back to Redis when it answers
            self._hold()

    def held_state(self):
        """What this instance serves while Redis is away, for a worker that
        starts meanwhile (a reload, a replacement): :meth:`ReplicaUpdater.export
        <tproxy.registry_redis_replica.ReplicaUpdater.export>`; ``None``
        while Redis answers (the worker reads Redis itself)."""
        return None if self.up else self.updater.export()

    def seed(self, state):
        """Before :meth:`start`: begin from ``state`` (another instance's
        :meth:`held_state`), held as if this instance had served it, so that
        a worker started while Redis is away serves the registrations and
        routes its parent holds, and puts them back with the others when
        Redis answers."""
        if state:
            self.updater.snapshot(*state)
            self._held = True

    def _hold(self):
        """Keep the dynamic registrations that are live from expiring while
        Redis is away (their backends cannot heartbeat)."""
        if self._syncing is not None:
            return      # Redis answers again: what it says next counts
        now = self.now()
        until = now + self.hold_for
        for group in self._groups.values():
            raised = False
            for peer in group.peers.values():
                if not peer.static and now < peer.expires_at < until:
                    peer.expires_at = until
                    raised = True
                    self._held = True
            if raised:
                group._added(peer)
            elif any(not p.static for p in group.peers.values()):
                self._held = True

    def _subscriber_ready(self):
        self._subscribed = True
        if self.connected:      # (else the first command connection syncs)
            self._sync()

    def _subscriber_lost(self, reason):
        self._subscribed = False
        if not self._stopping:
            self._down(reason.getErrorMessage() if hasattr(reason, "getErrorMessage")
                       else str(reason))

    def _sync(self):
        """Restore what was held (after an outage), then take a snapshot."""
        if self._syncing is not None:
            return self._syncing
        self._last_sync = self.reactor.seconds()
        restore = self._held and self.updater.epoch is not None

        def snapshot(_=None):
            return self._call("snapshot", [_new_epoch()], "a snapshot")

        if restore:
            now = self.now()
            records = [json.dumps(_record(p)) for g in self._groups.values()
                       for p in g.peers.values() if not p.static and p.is_live(now)]
            records.extend(json.dumps({"route": name, "s": json.dumps(spec, sort_keys=True),
                                       "q": seq})
                           for name, (seq, spec) in self.shared_routes.records.items())
            d = self._call("restore", [self.updater.epoch, _new_epoch(), repr(now),
                                       repr(self.ttl)] + records, "a restore")
            d.addCallback(self._restored, len(records))
            d.addCallback(snapshot)
        else:
            d = snapshot()
        d.addCallback(self._snapshot)
        d.addErrback(lambda f: f.trap(RegistryUnavailable))
        d.addErrback(lambda f: log.failure("registry: synchronising with Redis failed", f))

        def done(_):
            self._syncing = None
        d.addBoth(done)
        self._syncing = d
        return d

    def _restored(self, reply, held):
        message, epoch, lost = reply
        self._held = False
        self.updater.epoch_is(epoch)
        self.apply(message)
        if int(lost):
            log.warn("registry: Redis at {address} had lost its data; put back the "
                     "{held} registrations and routes this instance held",
                     address=self.address, held=held)

    def _snapshot(self, reply):
        version, epoch, peers, groups, routes = reply
        self._held = False
        self.updater.snapshot(int(version), epoch, peers, groups, routes)
        if not self.up:
            if self._logged_down:
                log.info("registry: Redis at {address} answers again: {peers} "
                         "registrations, {routes} routes", address=self.address,
                         peers=len(peers) // 2, routes=len(routes) // 2)
            else:
                log.info("registry: shared through Redis at {address}: {peers} "
                         "registrations, {routes} routes", address=self.address,
                         peers=len(peers) // 2, routes=len(routes) // 2)
            self.up = True
            self._logged_down = False
        self._synced()

    # -- applying changes -------------------------------------------------------------

    def published(self, message):
        """A message of the channel: ``"<writer> <change>"``; this
        instance's own were applied from the script's reply already."""
        writer, _, change = message.partition(" ")
        if writer != self.writer:
            self.apply(change)

    def apply(self, message):
        """
        Apply a published change (the JSON text a script publishes) to the
        replica; return the peers it removed.
        """
        return self.updater.apply(message)
