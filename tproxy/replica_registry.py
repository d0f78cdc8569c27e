# -*- test-case-name: tests.test_replica -*-
"""
A worker's registry (:class:`ReplicaRegistry`): the replica of the
parent's, applying the peers' states the parent sends
(:func:`tproxy.replica.peer_state`; the whole story of a box's registry is
:mod:`tproxy.replica`'s docstring), and the worker's own counts of its
peers' requests (:func:`counts`).
"""

from zope.interface import implementer

from tproxy.registry import INFINITY, IRegistryReplica, MemoryRegistry, Peer

__all__ = ["ReplicaRegistry", "counts"]


@implementer(IRegistryReplica)
class ReplicaRegistry(MemoryRegistry):
    """
    A worker's registry: a :class:`~tproxy.registry.MemoryRegistry` whose
    dynamic peers are those the parent sends (:meth:`apply`).  It expires
    nothing itself (:meth:`expire` returns ``[]``; a peer past its
    ``expires_at`` is not selected, as everywhere, and the parent's sweep
    removes it); ``register`` and ``deregister`` are not called in a worker
    (the admin API is the parent's).  An
    :class:`~tproxy.registry.IRegistryReplica`: the registry plugin starts
    no cleanup timer on it.
    """

    def expire(self):
        return []

    def apply(self, peers, groups=None):
        """
        Apply the parent's state of ``peers`` (see
        :func:`tproxy.replica.peer_state`) and the ``routable`` flags of
        ``groups`` (``{name: bool}``).
        """
        now = self.now()
        for state in peers:
            if len(state) == 3:
                self._drop(*state)
            else:
                self._upsert(now, *state)
        for name, routable in (groups or {}).items():
            g = self._groups.get(name)
            if g is not None:
                g.routable = routable

    def _drop(self, group, host, port):
        g = self._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if peer is not None and not peer.static:
            self._remove(peer)

    def _upsert(self, now, group, host, port, weight, max_conns, static, created,
                heartbeat, expires_at):
        g = self._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if static:
            # the worker's own, from its configuration: weight, max_conns only
            if peer is not None and peer.static:
                self._set_weight(peer, weight, max_conns)
            return
        if peer is not None and (peer.static or peer.created_time != created
                                 or not peer.is_live(now)):
            # a new registration in the place of an old one (expiry is final
            # for a Peer: balancers may have dropped it from their indexes)
            if peer.static:
                return
            self._remove(peer)
            peer = None
        if peer is None:
            g = self._group(group)
            peer = Peer(g, host, port, weight, now=created, ttl=0, notify=self._load_listeners)
            peer.max_conns = max_conns or 0
            peer.last_heartbeat = heartbeat
            peer.expires_at = INFINITY if expires_at is None else expires_at
            g._put(peer)
            for listener in self._listeners:
                listener.peer_added(peer)
            return
        peer.last_heartbeat = heartbeat
        if expires_at is not None and expires_at > peer.expires_at:
            peer.expires_at = expires_at
            g._added(peer)
        self._set_weight(peer, weight, max_conns)

    def counts(self):
        """This worker's :func:`counts`."""
        return counts(self)


def counts(registry):
    """``[[group, host, port, active, total, healthy], ...]`` of the peers
    of ``registry`` that have served anything in this worker, or that its
    health state says are down (for the parent's status)."""
    return [[g.name, p.host, p.port, p.active, p.total, p.healthy]
            for g in registry.groups() for p in g.peers.values()
            if p.active or p.total or not p.healthy]
