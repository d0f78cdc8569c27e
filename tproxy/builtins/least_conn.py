# -*- test-case-name: tests.test_least_conn -*-
"""
The built-in ``least_conn`` plugin: choose, in the request's group
(``ctx.route``), the live peer with the fewest requests in flight relative to
its weight, the smallest ``(active + 1) / weight``.  Peers with equal scores
take turns, so equal peers share the load evenly.

How it stays flat at 10,000 peers
---------------------------------
Each group's index (in ``group.state``, under a key of this plugin instance)
holds the peers in *buckets*: ``{score: OrderedDict of peers}``, each bucket
in the order its peers last changed, and a small heap of the distinct scores.
The plugin follows the registry as an
:class:`tproxy.registry.IRegistryListener`: when a peer's count or weight
changes (``peer_changed``, fired by ``Peer.acquire``/``release``, which tproxy
calls, never this plugin), the peer moves to the *end* of its new score's
bucket, in O(1).  A pick takes the *first* peer of the lowest bucket: among
equal scores the peer that changed longest ago, which is the rotation.

So a change costs O(1) and a pick O(1), plus O(log k) when a score appears
or disappears, ``k`` being the number of distinct scores (a few: the
distinct ``(active, weight)`` pairs in use), never the number of peers.  The
score heap is rebuilt once its stale scores outnumber twice the live ones,
so it stays small however many requests pass.

Small groups (up to :attr:`Plugin.small_group` peers, 8) have no index:
each pick looks at every peer, and among equal scores takes the one whose
count changed longest ago (the order the buckets keep), which costs less per
request than moving a peer between buckets twice.  A group that grows past
that size is indexed from then on.

Peers in ``tried`` are skipped (the next bucket is looked at when a whole
bucket was tried).  An expired peer (TTL passed, not yet removed by the
registry's cleanup) is dropped from the index when a pick meets it: expiry
is final for a :class:`~tproxy.registry.Peer` (``IRegistry.register`` makes
a new peer, announced by ``peer_added``, for a registration that had
expired), and the late ``peer_changed`` of a dropped or removed peer (its
last request ending) is ignored.

Health
------
Only healthy peers (:mod:`tproxy.health`) are in the buckets: the plugin
follows the gateway's health state as an
:class:`tproxy.health.IHealthListener`, so an ejected peer leaves the index
(to the group's ``down`` list, in the order of their ejections) and a
re-admitted one comes back, each in O(1); a pick never meets an unhealthy
peer.  When no healthy peer is left to try, ``health.when_all_down`` decides:
``"try_all"`` takes the unhealthy peer tried longest ago (as nginx tries
its peers again when all are down), once per request, ``"503"`` answers
``503 {"error": "no healthy upstream"}``.

A peer with ``max_conns`` leaves the buckets (for the index's ``full``
set) when a request brings it to its limit and comes back when one ends,
in O(1): a full peer is never picked; when every candidate is full the
answer is ``503 {"error": "all upstreams busy"}`` (tproxy does not queue
requests: a client retries sooner than a queue would drain).

A peer warming up (``health.slow_start``) counts with ``weight * ramp``:
its score is higher, so it takes a smaller share until ``ramp`` reaches 1
(each step re-scores it through ``peer_changed``).

The balancer only chooses: it returns ``None`` when the group has no live
peer left to try (tproxy then answers ``503``).
"""

import heapq
import itertools
from collections import OrderedDict

from zope.interface import implementer

from tproxy import Response, hookimpl
from tproxy.health import IHealthListener
from tproxy.registry import IRegistryListener

_attachments = itertools.count()


class _Index(object):
    """
    One group's peers, by score.

    :ivar buckets: ``{score: OrderedDict(peer -> None)}``, each in the order
        its peers arrived.  A bucket that empties stays until its score comes
        to the top of the heap (or a sweep when emptied ones pile up): a peer
        going back and forth between two scores, as with every request,
        then moves between two dictionaries that exist.
    :ivar scores: a heap of scores: every key of ``buckets`` once, and maybe
        scores whose bucket has emptied since (dropped when met).
    :ivar queued: the set of the scores in ``scores``.
    :ivar score_of: ``{peer: score}`` for every peer in a bucket.
    :ivar down: ``OrderedDict(peer -> None)`` of the unhealthy peers, in the
        order they became so (not in a bucket).
    :ivar full: ``{peer: None}`` of the peers at their ``max_conns`` (not in
        a bucket until a request of theirs ends).
    """

    __slots__ = ("buckets", "scores", "queued", "score_of", "down", "full")

    def __init__(self):
        self.buckets = {}
        self.scores = []
        self.queued = set()
        self.score_of = {}
        self.down = OrderedDict()
        self.full = {}


class _Recent(object):
    """
    A small group's state: no index, the peers are scanned at each pick
    (cheaper than keeping buckets up to date for a few peers).

    :ivar changed: ``{peer: n}``, the ``n``-th count change of the group
        was the peer's last (peers never changed: absent, as ``0``); among
        equal scores the smallest ``n`` wins, as the index's bucket order.
    """

    __slots__ = ("changed", "seq")

    def __init__(self):
        self.changed = {}
        self.seq = 0


@implementer(IRegistryListener, IHealthListener)
class Plugin(object):
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

    # -- the index ------------------------------------------------------------

    def _attach(self, gateway):
        """Follow ``gateway``'s registry and health state (indexes are built
        per group on first use)."""
        registry = gateway.registry
        self._registry = registry
        # a fresh key, so that indexes built for an earlier registry are never read
        self._key = ("least_conn", next(_attachments))
        registry.subscribe(self)
        self._health = getattr(gateway, "health", None)
        if self._health is not None:
            self._health.subscribe(self)

    def _build(self, group, now):
        index = _Index()
        for peer in group.peers.values():
            if peer.is_live(now):
                if not peer.healthy:
                    index.down[peer] = None
                elif peer.max_conns and peer.active >= peer.max_conns:
                    index.full[peer] = None
                else:
                    self._place(index, peer)
        group.state[self._key] = index
        return index

    def _place(self, index, peer):
        """Move ``peer`` to the end of the bucket of its current score."""
        score = (peer.active + 1) / (peer.weight * peer.ramp or 1)
        buckets = index.buckets
        old = index.score_of.get(peer)
        if old is not None:
            del buckets[old][peer]   # an emptied bucket stays (see _pick)
        index.score_of[peer] = score
        bucket = buckets.get(score)
        if bucket is None:
            bucket = self._new_bucket(index, score)
        bucket[peer] = None

    def _new_bucket(self, index, score):
        buckets = index.buckets
        if len(buckets) > 4 * len(index.score_of) + 16:
            # many emptied buckets above the lowest scores: sweep them
            for s in [s for s, b in buckets.items() if not b]:
                del buckets[s]
        bucket = buckets[score] = OrderedDict()
        if score not in index.queued:
            index.queued.add(score)
            heapq.heappush(index.scores, score)
            if len(index.scores) > 2 * len(buckets) + 8:
                index.scores = list(buckets)
                heapq.heapify(index.scores)
                index.queued = set(index.scores)
        return bucket

    def _drop(self, index, peer):
        """Take ``peer`` out of the index (its score may stay in the heap)."""
        old = index.score_of.pop(peer, None)
        if old is not None:
            del index.buckets[old][peer]

    def _index_of(self, peer):
        if self._key is None:
            return None
        return peer.group.state.get(self._key)

    def peer_added(self, peer):
        """Index a new peer (if its group is indexed yet)."""
        index = self._index_of(peer)
        if type(index) is _Index and peer not in index.score_of:
            if peer.healthy:
                self._place(index, peer)
            else:
                index.down[peer] = None

    def peer_removed(self, peer):
        """Drop a peer from its group's index."""
        index = self._index_of(peer)
        if type(index) is _Index:
            self._drop(index, peer)
            index.down.pop(peer, None)
            index.full.pop(peer, None)
        elif index is not None:
            index.changed.pop(peer, None)

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
                    self._place(index, peer)
        elif peer in index.score_of:
            self._drop(index, peer)
            index.down[peer] = None

    def peer_changed(self, peer):
        """Re-score a peer whose count or weight changed (twice per request:
        kept to a few dictionary operations)."""
        index = peer.group.state.get(self._key)
        if type(index) is not _Index:
            if index is not None:   # a small group: note the order of changes
                index.seq = n = index.seq + 1
                index.changed[peer] = n
                if not n & 1023 and len(index.changed) > len(peer.group.peers):
                    # the last requests of removed peers noted them again
                    peers = peer.group.peers
                    index.changed = {p: m for p, m in index.changed.items()
                                     if peers.get(p.key) is p}
            return
        score_of = index.score_of
        old = score_of.get(peer)
        if old is None:
            # a full peer whose request ended (back in its bucket), or a
            # removed or expired one (forgotten)
            if index.full and peer in index.full and peer.active < peer.max_conns:
                del index.full[peer]
                if peer.healthy:
                    self._place(index, peer)
                else:
                    index.down[peer] = None
            return
        buckets = index.buckets
        if peer.max_conns and peer.active >= peer.max_conns:
            del buckets[old][peer]   # full: out of the buckets until a request ends
            del score_of[peer]
            index.full[peer] = None
            return
        score = (peer.active + 1) / (peer.weight * peer.ramp or 1)
        del buckets[old][peer]   # an emptied bucket stays (see _pick)
        score_of[peer] = score
        bucket = buckets.get(score)
        if bucket is None:
            bucket = self._new_bucket(index, score)
        bucket[peer] = None

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Start following the gateway's registry."""
        if self._registry is not gateway.registry:
            self._attach(gateway)

    @hookimpl
    def balancer(self, ctx, tried):
        """
        Choose the healthy peer of ``ctx.route`` with the smallest
        ``(active + 1) / weight``, skipping expired peers and ``tried``
        (when none is healthy: see the module docstring).

        :return: a :class:`tproxy.registry.Peer`, ``None``, or a ``503``
            :class:`tproxy.Response` (``health.when_all_down`` ``"503"``).
        """
        gateway = ctx.gateway
        if gateway.registry is not self._registry:
            self._attach(gateway)
        name = ctx.route
        if name is None:
            return None
        health = self._health
        try_all = health is None or health._try_all
        peer = self.choose(name, tried, try_all)
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
                return self._scan(index, peers, tried, now, unhealthy)
            index = self._build(group, now)
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
        changed = recent.changed
        best = None
        best_score = best_n = down_n = 0
        down = None
        for peer in peers.values():
            if peer.expires_at <= now or (tried and peer in tried):
                continue   # (expired: see Peer.is_live)
            if peer.max_conns and peer.active >= peer.max_conns:
                continue   # full
            if not peer.healthy:
                # the unhealthy peer tried longest ago (they take turns)
                if down is None or changed.get(peer, 0) < down_n:
                    down, down_n = peer, changed.get(peer, 0)
                continue
            score = (peer.active + 1) / (peer.weight * peer.ramp or 1)
            if best is None or score < best_score:
                best, best_score, best_n = peer, score, changed.get(peer, 0)
            elif score == best_score:
                n = changed.get(peer, 0)
                if n < best_n:
                    best, best_n = peer, n
        if best is None and unhealthy:
            return down
        return best

    def _pick(self, index, tried, now):
        scores = index.scores
        buckets = index.buckets
        aside = None
        chosen = None
        while scores:
            score = scores[0]
            bucket = buckets.get(score)
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
                        self._drop(index, peer)
                if chosen is not None:
                    break
                if bucket:
                    # every peer of this score was tried: look one score up
                    if aside is None:
                        aside = []
                    aside.append(heapq.heappop(scores))
                    continue
                del buckets[score]
            heapq.heappop(scores)  # a score whose bucket has emptied
            index.queued.discard(score)
        if aside is not None:
            for score in aside:
                heapq.heappush(scores, score)
        return chosen


__all__ = ["Plugin"]
