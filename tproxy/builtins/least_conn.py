# -*- test-case-name: tests.test_least_conn -*-
"""
The built-in ``least_conn`` plugin: choose, in the request's group
(``ctx.route``), the live peer with the fewest requests in flight relative to
its weight, the smallest ``active / weight`` (nginx's ``least_conn``).  Peers
with equal scores share by weight: each peer has a *pass* that grows by
``1 / weight`` with every request it is given, and among equal scores the
smallest pass wins (stride scheduling, the weighted round-robin nginx uses to
break ties).  So with requests one after another (every peer at 0 in
flight) peers of weights 3, 2 and 1 take 3, 2 and 1 of every 6, and equal
peers take turns.

A pass is kept from falling behind: a peer given a request starts from the
pass of the last request given out if its own is lower, so a peer that sat
out (busy, ejected, newly registered) takes its share from then on, not a
burst to catch up.

How it stays flat at 10,000 peers: each group's peers are indexed by
``(score, round)`` (:mod:`tproxy.builtins._least_conn_index`), so a pick and
a change cost O(1) whatever the number of peers.

Peers in ``tried`` are skipped.  An expired peer (TTL passed, not yet removed
by the registry's cleanup) is dropped from the index when a pick meets it:
expiry is final for a :class:`~tproxy.registry.Peer`
(``IRegistry.register`` makes a new peer, announced by ``peer_added``, for a
registration that had expired), and the late ``peer_changed`` of a dropped or
removed peer (its last request ending) is ignored.

Health
------
Only healthy peers (:mod:`tproxy.health`) are in the buckets: the plugin
follows the gateway's health state as an
:class:`tproxy.health.IHealthListener`, so an ejected peer leaves the index
(to the group's ``down`` list, in the order of their ejections) and a
re-admitted one comes back, each in O(1); a pick never meets an unhealthy
peer.  When no healthy peer is left to try,
``health.when_all_down`` decides: ``"try_all"`` takes the unhealthy peer
tried longest ago (as nginx tries its peers again when all are down), once
per request, ``"503"`` answers ``503 {"error": "no healthy upstream"}``.

A peer with ``max_conns`` leaves the buckets (for the index's ``full`` set)
when a request brings it to its limit and comes back when one ends: a full
peer is never picked; when every candidate is full the answer is
``503 {"error": "all upstreams busy"}`` (tproxy does not queue requests: a
client retries sooner than a queue would drain).

A peer warming up (``health.slow_start``) counts with ``weight * ramp``:
its score is higher and its pass grows faster, so it takes a smaller share
until ``ramp`` reaches 1 (each step re-scores it through ``peer_changed``).

The balancer only chooses (a pick changes nothing; the request's
``acquire`` does): it returns ``None`` when the group has no live peer left
to try (tproxy then answers ``503``).
"""

import heapq
import sys

from zope.interface import implementer

from tproxy import Response, direct, hookimpl
from tproxy.builtins._least_conn_index import _Index
from tproxy.builtins._least_conn_upkeep import GroupIndexes, _Recent, _advance
from tproxy.health import IHealthListener
from tproxy.registry import INFINITY, IRegistryListener

#: Whether count changes are followed only once a group is indexed (on
#: CPython: two calls fewer per request, ~900 instructions).  On PyPy the JIT
#: inlines the call and its early return, and the request path without it
#: measured 3-6 % slower (``bench/micro_request.py --cpu``): followed from the
#: start there.
_FOLLOW_LATE = sys.implementation.name == "cpython"


@implementer(IRegistryListener, IHealthListener)
class Plugin(GroupIndexes):
    """
    The least-connections balancer (``balancer`` phase).

    :param settings: none (an empty dict).
    """

    settings_schema = {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }

    #: groups of at most this many peers are scanned at each pick instead
    #: of indexed (the index pays per request what a scan of a few costs)
    small_group = 8

    def __init__(self, settings=None):
        self._registry = None
        self._key = None
        self._health = None
        # read on every pick: an instance attribute (CPython 3.11 reads a
        # class attribute through an instance by the generic lookup)
        self.small_group = self.small_group
        if _FOLLOW_LATE:
            # No count changes followed while no group is indexed: a small
            # group's pick reads the counts itself, so the registry calls
            # nothing at a request's acquire and release (a listener's
            # peer_changed None, read when it subscribes; see _follow_counts).
            self.peer_changed = None

    def _follow_counts(self):
        """A group is indexed (its buckets follow the counts): have the
        registry call :meth:`peer_changed` from now on."""
        self._registry.unsubscribe(self)
        self.peer_changed = self._key.peer_changed
        self._registry.subscribe(self)

    def peer_changed(self, peer):
        """Re-score a peer whose count or weight changed (twice per request
        once a group is indexed; nothing for a small group, whose pick looks
        at every peer).  What the registry calls is the state key's own
        method (:meth:`_StateKey.peer_changed
        <tproxy.builtins._least_conn_index._StateKey.peer_changed>`, compiled
        on CPython), set in this one's place once the plugin follows a
        registry: no frame of the plugin's per call."""
        if self._key is not None:
            self._key.peer_changed(peer)

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Start following the gateway's registry."""
        if self._registry is not gateway.registry:
            self._attach(gateway)

    @hookimpl
    @direct
    def balancer(self, ctx, tried):
        """
        Choose the healthy peer of ``ctx.route`` with the smallest
        ``active / weight`` (among equals by weighted turns), skipping
        expired peers and ``tried`` (when none is healthy: see the module
        docstring).

        :return: a :class:`tproxy.registry.Peer`, ``None``, or a ``503``
            :class:`tproxy.Response` (``health.when_all_down`` ``"503"``).
        """
        gateway = ctx.gateway
        registry = gateway.registry
        if registry is not self._registry:
            self._attach(gateway)
        name = ctx.route
        if name is None:
            return None
        if not tried:
            # The usual requests, a group of one usable peer or an indexed
            # group's first peer: choose's and _scan's first branches inlined
            # (a call costs more than their work here; the clock read only
            # for a peer that can expire)
            group = registry.group(name)
            if group is not None:
                peers = group.peers
                if len(peers) == 1:
                    recent = group.state.get(self._key)
                    if type(recent) is _Recent:
                        (peer,) = peers.values()
                        passed = recent.passes.get(peer)
                        if passed is not None and peer.healthy and (
                                peer.expires_at == INFINITY
                                or peer.expires_at > registry.now()) and not (
                                peer.max_conns and peer.active >= peer.max_conns):
                            total = peer.total
                            if passed[1] != total:
                                # (_advance inlined)
                                start = passed[0]
                                if start < recent.vt:
                                    start = recent.vt
                                else:
                                    recent.vt = start
                                passed[0] = start + (total - passed[1]) / (
                                    peer.weight * peer.ramp or 1)
                                passed[1] = total
                            return peer
                else:
                    index = group.state.get(self._key)
                    if type(index) is _Index:
                        peer = index.first()
                        if peer is not None and (peer.expires_at == INFINITY
                                                 or peer.expires_at > registry.now()):
                            return peer
        health = self._health
        try_all = health is None or health._try_all
        # (through the class: the plugin manager gives the instance an
        # ordinary dict, through which CPython 3.11 does not specialise a
        # method call; see router.Plugin.rewrite)
        peer = type(self).choose(self, name, tried, try_all)
        if peer is None and not tried:
            group = self._registry.group(name)
            if group is not None and group.has_live(self._registry.now()):
                ctx.error = "no_peer"
                if self._busy(group):
                    return Response.error(503, "all upstreams busy", group=name)
                if not try_all:
                    return Response.error(503, "no healthy upstream", group=name)
        return peer

    def _busy(self, group):
        """Whether a peer of ``group`` is at its ``max_conns`` (after a pick
        found none: the peers are not scanned on the way to a pick)."""
        index = group.state.get(self._key)
        if type(index) is _Index:
            return bool(index.full)
        return any(p.max_conns and p.active >= p.max_conns for p in group.peers.values())

    def choose(self, name, tried, unhealthy=True):
        """
        The best peer of group ``name`` not in ``tried``: a healthy one if
        any, else (``unhealthy``) the unhealthy one tried longest ago, else
        ``None``.
        An unhealthy peer is chosen only if no peer tried for the request is
        unhealthy: when all are down a request makes one attempt on them, not
        one per peer (nginx answers at once then).
        """
        if unhealthy and tried:
            for peer in tried:
                if not peer.healthy:
                    unhealthy = False
                    break
        registry = self._registry
        group = registry.group(name)
        if group is None:
            return None
        now = registry.now()
        index = group.state.get(self._key)
        if type(index) is not _Index:
            peers = group.peers
            if len(peers) <= self.small_group:
                if index is None:
                    index = group.state[self._key] = _Recent()
                # (Plugin._scan: see router.Plugin.rewrite)
                return Plugin._scan(self, index, peers, tried, now, unhealthy)
            index = self._build(group, now, index)
            if self.peer_changed is None:
                self._follow_counts()
        # the usual case: the first peer of the lowest bucket is live and
        # not tried (anything else: _pick)
        peer = index.first()
        if peer is not None and peer.expires_at > now and (not tried or peer not in tried):
            return peer
        chosen = self._pick(index, tried, now)
        if chosen is None and unhealthy and index.down:
            for peer in index.down:
                if peer.expires_at > now and (not tried or peer not in tried) and not (
                        peer.max_conns and peer.active >= peer.max_conns):
                    index.down.move_to_end(peer)   # the next one goes first next time
                    return peer
        return chosen

    def _scan(self, recent, peers, tried, now, unhealthy):
        """The pick of a small group: every peer looked at."""
        passes = recent.passes
        if len(peers) == 1 and not tried:
            # One peer, usable: the pick, without the loop (on PyPy a loop
            # of a function called per request is compiled apart and
            # entered with a frame of its own).  Else the loop says why not.
            peer = next(iter(peers.values()))
            if peer.expires_at > now and peer.healthy and not (
                    peer.max_conns and peer.active >= peer.max_conns):
                passed = passes.get(peer)
                if passed is None:
                    passes[peer] = [recent.vt, peer.total]
                elif passed[1] != peer.total:
                    _advance(recent, peer, passed)
                return peer
        best = down = None
        best_score = best_pass = down_pass = 0
        for peer in peers.values():
            if peer.expires_at <= now or (tried and peer in tried):
                continue   # (expired: see Peer.is_live)
            if peer.max_conns and peer.active >= peer.max_conns:
                continue   # full
            passed = passes.get(peer)
            if passed is None:
                passed = passes[peer] = [recent.vt, peer.total]
            elif passed[1] != peer.total:
                _advance(recent, peer, passed)   # given requests by another balancer
            if not peer.healthy:
                # the unhealthy peer tried longest ago (they take turns)
                if down is None or passed[0] < down_pass:
                    down, down_pass = peer, passed[0]
                continue
            score = peer.active / (peer.weight * peer.ramp or 1)
            if best is None or score < best_score or (
                    score == best_score and passed[0] < best_pass):
                best, best_score, best_pass = peer, score, passed[0]
        if best is None and unhealthy:
            return down
        return best

    def _pick(self, index, tried, now):
        keys = index.keys
        buckets = index.buckets
        aside = None
        chosen = None
        while keys:
            key = keys[0]
            bucket = buckets.get(key)
            if bucket is not None:
                dead = None
                for peer in bucket:
                    if not peer.is_live(now):
                        if dead is None:
                            dead = []
                        dead.append(peer)
                    elif not tried or peer not in tried:
                        chosen = peer
                        break
                if dead is not None:
                    for peer in dead:  # expired for good: drop them
                        index.drop(peer)
                        index.forget(peer)
                if chosen is not None:
                    break
                if bucket:
                    # every peer of this key was tried: look one key up
                    if aside is None:
                        aside = []
                    aside.append(heapq.heappop(keys))
                    continue
                index.retire(key)
            heapq.heappop(keys)  # a key whose bucket has emptied
            index.queued.discard(key)
        if aside is not None:
            for key in aside:
                heapq.heappush(keys, key)
        return chosen


__all__ = ["Plugin"]
