# -*- test-case-name: tests.test_registry_redis -*-
"""
The writes of :class:`tproxy.registry_redis.RedisRegistry` (the IRegistry
methods that change the fleet's registry) and its calls of the Lua scripts
(:meth:`RedisWrites._call`: ``EVALSHA``, ``EVAL`` when Redis does not have
the script, ``timeout``, Redis away told from Redis refusing).
:class:`RedisWrites`, its base class, registers and heartbeats in batches
(the registrations of one reactor turn, :data:`BATCH` at most to a script),
removes, and sweeps the expired registrations (:data:`SWEEP_LIMIT` at a time); a static peer of this
instance is handled at once, as the in-memory registry does, and shadows a
registration of the same server in Redis.  Each write is one Lua script
(:mod:`tproxy.registry_redis_scripts`) whose reply is applied to the replica
before the Deferred fires.
"""

import json

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeoutError, fail
from twisted.logger import Logger

from tproxy.registry import Group, MemoryRegistry, Peer, RegistryUnavailable
from tproxy.registry_redis_replica import _record, member as _member
from tproxy.registry_redis_scripts import SCRIPTS

__all__ = ["BATCH", "RedisWrites", "SWEEP_LIMIT"]

#: the registry's namespace, tproxy.registry_redis
log = Logger(namespace="tproxy.registry_redis")

#: registrations one sweep removes at most (the next sweep takes the rest)
SWEEP_LIMIT = 1000

#: registrations one script writes at most (a burst of heartbeats in one
#: reactor turn is split: a script holds Redis while it runs)
BATCH = 200


class RedisWrites(object):
    """
    The writes of :class:`tproxy.registry_redis.RedisRegistry`, placed
    before :class:`~tproxy.registry.MemoryRegistry` among its bases (a
    static peer's writes are the in-memory registry's); they use its
    ``_call`` (a script, failing with
    :class:`~tproxy.registry.RegistryUnavailable`), ``apply``, ``up``,
    ``updater``, ``_hold`` and ``_down``.
    """

    # -- the scripts ------------------------------------------------------------------

    def _call(self, name, args, what):
        """Run the script ``name``; a Deferred of its reply (fails with
        :class:`RegistryUnavailable`)."""
        import txredisapi
        script = SCRIPTS[name]
        args = [self._channel_arg] + [str(a) for a in args]
        d = self.client.evalsha(script.sha, self.keys, args)

        def noscript(failure):
            failure.trap(txredisapi.ScriptDoesNotExist)
            return self.client.eval(script.text, self.keys, args)
        d.addErrback(noscript)
        d.addTimeout(self.timeout, self.reactor)
        d.addCallbacks(self._took, self._failed, errbackArgs=(what,))
        return d

    def _took(self, reply):
        if self._refusing:
            self._refusing = False
            log.info("registry: Redis at {address} takes changes again",
                     address=self.address)
        return reply

    def _failed(self, failure, what):
        """A command failed: Redis is down (connection, timeout) or refused
        (an error reply); raise :class:`RegistryUnavailable`."""
        import txredisapi
        if failure.check(DeferredTimeoutError):
            reason = "no answer within {} s".format(self.timeout)
            self._down(reason)
        elif failure.check(txredisapi.ResponseError):
            # connected, but it will not take it (READONLY: a replica after a
            # failover; OOM): logged once until a write succeeds again
            reason = failure.getErrorMessage()
            if not self._refusing:
                self._refusing = True
                log.warn("registry: Redis at {address} refused {what}: {reason}; "
                         "changes are refused (503) until it takes them",
                         address=self.address, what=what, reason=reason)
        else:
            reason = failure.getErrorMessage() or failure.type.__name__
            self._down(reason)
        raise RegistryUnavailable("the shared registry (Redis at {}) is unavailable: "
                                  "{}".format(self.address, reason))

    # -- IRegistry ----------------------------------------------------------------------

    def add_static(self, group, host, port, weight=1, max_conns=0):
        g = self._groups.get(group)
        old = g.peers.get((host, port)) if g is not None else None
        if old is not None and not old.static:
            self.updater.shadow[(group, host, port)] = _record(old)
        return MemoryRegistry.add_static(self, group, host, port, weight, max_conns)

    def remove_static(self, group, host, port):
        peer = MemoryRegistry.remove_static(self, group, host, port)
        rec = self.updater.shadow.pop((group, host, port), None)
        if peer is not None and rec is not None:
            self.updater.add_record(rec)
        return peer

    def register(self, group, host, port, weight=None, max_conns=None, routable=None):
        """
        Register or heartbeat ``host:port`` in Redis; a Deferred of ``(peer,
        created)`` once Redis has it (the replica has it too by then).  A
        static peer of this instance is handled here, at once, as the
        in-memory registry does.  Fails with
        :class:`~tproxy.registry.RegistryUnavailable` while Redis is away.
        """
        g = self._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if peer is not None and peer.static:
            return MemoryRegistry.register(self, group, host, port, weight, max_conns,
                                           routable)
        if not self.up:
            return fail(RegistryUnavailable(
                "the shared registry (Redis at {}) is unavailable".format(self.address)))
        if not self._registering:
            self._registering_at = self.now()
            self.reactor.callLater(0, self._register_batch)
        d = Deferred()
        self._registering.append((d, [
            group, host, port, "" if weight is None else weight,
            "" if max_conns is None else max_conns,
            "" if routable is None else ("1" if routable else "0")]))
        return d

    def _register_batch(self):
        """Write the registrations and heartbeats of the reactor turn that
        ended: one script per :data:`BATCH` of them, one published message
        (a burst of heartbeats costs Redis, and every instance decoding the
        messages, one round trip instead of one each)."""
        pending, self._registering = self._registering, []
        for start in range(0, len(pending), BATCH):
            batch = pending[start:start + BATCH]
            args = [repr(self._registering_at), repr(self.ttl)]
            for _, entry in batch:
                args.extend(entry)
            d = self._call("register", args, "a registration")
            d.addCallbacks(self._registered, self._not_registered,
                           callbackArgs=(batch,), errbackArgs=(batch,))

    def _registered(self, reply, batch):
        message, created = reply
        self.apply(message)
        written = None
        for (d, (group, host, port, _, _, _)), new in zip(batch, created):
            g = self._groups.get(group)
            peer = g.peers.get((host, port)) if g is not None else None
            if peer is None:
                # changed again by another instance meanwhile: answer with
                # what this write did
                if written is None:
                    written = dict((c[1], c[2]) for c in json.loads(message)["c"]
                                   if c[0] == "p")
                rec = written[_member(group, host, port)]
                peer = Peer(Group(group), host, port, rec["w"], now=rec["c"], ttl=self.ttl)
                peer.max_conns = rec["m"]
                peer.expires_at = rec["x"]
            d.callback((peer, bool(int(new))))

    def _not_registered(self, failure, batch):
        for d, _ in batch:
            d.errback(failure)

    def deregister(self, group, host, port):
        """
        Remove a dynamic registration from Redis: a Deferred of the removed
        :class:`Peer`, or ``None`` if there was none or it had expired
        (expired ones are cleaned up).  A static peer is not removed
        (``None`` at once).
        """
        g = self._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if peer is not None and peer.static:
            return None
        if not self.up:
            return fail(RegistryUnavailable(
                "the shared registry (Redis at {}) is unavailable".format(self.address)))
        d = self._call("deregister", [group, host, port, repr(self.now())],
                       "a removal")

        def removed(reply):
            message, outcome = reply
            gone = self.apply(message)
            if int(outcome) != 2:
                return None
            return gone[0] if gone else Peer(Group(group), host, port)
        return d.addCallback(removed)

    def expire(self):
        """
        Sweep the expired registrations out of Redis (every instance does:
        the sweep is idempotent); a Deferred of the peers this sweep
        removed.  While Redis is away, nothing expires (``[]``).
        """
        if not self.up:
            self._hold()
            return []
        return self._sweep([])

    def _sweep(self, removed):
        d = self._call("sweep", [repr(self.now()), self.sweep_limit], "the expiry sweep")

        def swept(message):
            gone = self.apply(message)
            removed.extend(gone)
            if len(gone) >= self.sweep_limit:
                return self._sweep(removed)     # more are due: go on
            return removed
        d.addCallback(swept)
        d.addErrback(lambda f: f.trap(RegistryUnavailable) and removed)
        return d

