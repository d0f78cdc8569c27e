# -*- test-case-name: tests.test_least_conn -*-
"""
The upkeep of the ``least_conn`` plugin's group states outside the request:
:class:`GroupIndexes`, the plugin's base class, which follows the registry
and the health state (a group indexed on first use, peers added, removed,
ejected and re-admitted), and a small group's state (:class:`_Recent`,
scanned at each pick instead of indexed).  The index itself, and what it
does at each request, is :mod:`tproxy.builtins._least_conn_index`.
"""

import itertools

from tproxy.builtins._least_conn_index import _Index, _StateKey

_attachments = itertools.count()


class _Recent(object):
    """
    A small group's state: no index, the peers are scanned at each pick
    (cheaper than keeping buckets up to date for a few peers).

    :ivar passes: ``{peer: [pass, total]}``, as :attr:`_Index.passes`, for
        the peers a pick has looked at (brought up to date by the pick).
    :ivar vt: as :attr:`_Index.vt`.
    """

    __slots__ = ("passes", "vt")

    def __init__(self):
        self.passes = {}
        self.vt = 0.0


def _advance(state, peer, passed):
    """Bring ``passed`` (a peer's ``[pass, total]``) up to ``peer.total``:
    each request given to the peer since adds ``1 / weight`` to its pass,
    counted from ``state.vt`` if the pass was behind it."""
    start = passed[0]
    if start < state.vt:
        start = state.vt
    else:
        state.vt = start
    passed[0] = start + (peer.total - passed[1]) / (peer.weight * peer.ramp or 1)
    passed[1] = peer.total


class GroupIndexes(object):
    """
    The upkeep of ``least_conn``'s group states outside the pick: the base
    of :class:`tproxy.builtins.least_conn.Plugin`, which sets
    ``_registry``, ``_key`` and ``_health`` and is the registry's and the
    health state's listener.
    """

    def _attach(self, gateway):
        """Follow ``gateway``'s registry and health state (indexes are built
        per group on first use)."""
        registry = gateway.registry
        self._registry = registry
        # a fresh key, so that indexes built for an earlier registry are never read
        self._key = _StateKey(next(_attachments))
        if self.peer_changed is not None:
            # the registry calls the key's (compiled) method itself: no
            # frame of the plugin's per call (see Plugin.peer_changed)
            self.peer_changed = self._key.peer_changed
        registry.subscribe(self)
        self._health = getattr(gateway, "health", None)
        if self._health is not None:
            self._health.subscribe(self)

    def _build(self, group, now, recent=None):
        """Index ``group`` (keeping the passes of its small-group state)."""
        index = _Index(self._key)
        if recent is not None:
            index.vt = recent.vt
        known = recent.passes if recent is not None else {}
        for peer in group.peers.values():
            if peer.is_live(now):
                passed = known.get(peer)
                if passed is None:
                    index.add(peer, index.vt, peer.total)
                else:
                    if passed[1] != peer.total:
                        _advance(index, peer, passed)
                    index.add(peer, passed[0], passed[1])
                if not peer.healthy:
                    index.down[peer] = None
                elif peer.max_conns and peer.active >= peer.max_conns:
                    index.full[peer] = None
                else:
                    index.place(peer)
        group.state[self._key] = index
        return index

    def _index_of(self, peer):
        if self._key is None:
            return None
        return peer.group.state.get(self._key)

    def peer_added(self, peer):
        """Index a new peer (if its group is indexed yet)."""
        index = self._index_of(peer)
        if type(index) is _Index and peer not in index.passes:
            index.add(peer, index.vt, peer.total)
            if peer.healthy:
                index.place(peer)
            else:
                index.down[peer] = None

    def peer_removed(self, peer):
        """Drop a peer from its group's index."""
        index = self._index_of(peer)
        if type(index) is _Index:
            index.drop(peer)
            index.down.pop(peer, None)
            index.full.pop(peer, None)
            index.forget(peer)
        elif index is not None:
            index.passes.pop(peer, None)

    def peer_health_changed(self, peer):
        """An ejected peer leaves the buckets, a re-admitted one comes back."""
        index = self._index_of(peer)
        if type(index) is not _Index:
            return   # small groups look at peer.healthy at each pick
        if peer.healthy:
            if index.down.pop(peer, 0) is None:
                if peer.max_conns and peer.active >= peer.max_conns:
                    index.full[peer] = None
                else:
                    index.place(peer)
        else:
            if index.drop(peer):
                index.down[peer] = None


__all__ = ["GroupIndexes"]
