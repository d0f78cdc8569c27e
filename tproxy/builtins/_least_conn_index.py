# -*- test-case-name: tests.test_least_conn -*-
"""
The ``least_conn`` plugin's per-group state and its upkeep outside the pick:
the index of a group's peers (:class:`_Index`), a small group's passes
(:class:`_Recent`), the key they are stored under in ``group.state``
(:class:`_StateKey`), and :class:`GroupIndexes`, the plugin's base class,
which follows the registry and the health state (a group indexed on first
use, peers added, removed, ejected and re-admitted).  The pick and the
re-scoring at each request (``peer_changed``) are the plugin's own
(:mod:`tproxy.builtins.least_conn`).

How it stays flat at 10,000 peers
---------------------------------
Each group's index (in ``group.state``, under a key of this plugin instance)
holds the peers in *buckets*: ``{(score, round): _Bucket of peers}``,
``round`` being the whole part of the peer's pass, each bucket in the order
its peers last changed, and a small heap of the distinct keys.  The plugin
follows the registry as an :class:`tproxy.registry.IRegistryListener`: when a
peer's count or weight changes (``peer_changed``, fired by
``Peer.acquire``/``release``, which tproxy calls, never this plugin), the
peer moves to the *end* of its new key's bucket, in O(1).  A pick takes the
*first* peer of the lowest bucket: the lowest score, then the earliest
round; within a round, the peer that changed longest ago.  Rounds are
stride scheduling at a granularity of one: in each round a peer of weight
``w`` takes ``w`` turns (its pass grows by ``1 / w`` a turn), interleaved
with the others', the way nginx's smooth weighted round-robin shares ties.

So a change costs O(1) and a pick O(1), plus O(log k) when a key appears or
disappears, ``k`` being the number of distinct keys (a few: the distinct
``(active, weight)`` pairs in use times the one or two rounds under way),
never the number of peers.  The key heap is rebuilt once its stale keys
outnumber twice the live ones, so it stays small however many requests pass.

Small groups (up to :attr:`Plugin.small_group` peers, 8) have no index:
each pick looks at every peer and takes the smallest ``(score, pass)``,
which costs less per request than moving a peer between buckets twice.  A group that grows
past that size is indexed from then on.  A small group's count changes
need nothing: the pick brings the passes up to date (a peer's ``total``
tells how many requests it was given since); on CPython the plugin is not
told of them at all until it indexes a group (``least_conn._FOLLOW_LATE``),
on PyPy its ``peer_changed`` returns at once.

Per request (a pick, then ``peer_changed`` at ``acquire`` and at
``release``) the index touches one peer's record (:class:`_Rec`, kept by
the peer: ``peer.balancer_record``, no lookup in a dictionary of every
peer) and its neighbours in their buckets, lists linked through the
records (:class:`_Bucket`, not an ``OrderedDict``: a young collection
meeting one visits its two ends, not every peer of a round).  The plugin's
key in ``group.state`` is hashed by identity.  Nothing made per request
outlives it: a record holds no key (a tuple kept per peer until its next
change would wait, a round later, in the collector's young generation,
which walks what it refers to), and emptied buckets are used again (see
:meth:`GroupIndexes._new_bucket`).  The running server pays more per
request at 10,000 peers than at 1 (see ``bench/README.md``): each request
touches another peer's objects and upstream connection, which no cache
holds any more.
"""

import heapq
import itertools
from collections import OrderedDict

_attachments = itertools.count()


class _Rec(object):
    """
    A peer's record in an index (``index.passes[peer]``, also
    ``peer.balancer_record``).

    :ivar peer: the :class:`tproxy.registry.Peer`.
    :ivar passed: the peer's pass.
    :ivar round: ``int(passed)``, the round of its key.
    :ivar total: ``peer.total`` when ``passed`` was last brought up to date.
    :ivar bucket: the :class:`_Bucket` it is in, or ``None``.
    :ivar index: the :class:`_Index` it is of (``None`` once the peer left
        it).
    :ivar prev: the record before it in its bucket, or ``None``.
    :ivar next: the record after it in its bucket, or ``None``.
    """

    __slots__ = ("passed", "round", "total", "bucket", "index", "peer", "prev", "next")

    def __init__(self, peer, index, passed, total):
        self.peer = peer
        self.index = index
        self.passed = passed
        self.round = int(passed)
        self.total = total
        self.bucket = self.prev = self.next = None


class _Bucket(object):
    """
    The peers of one key, in the order they arrived (the most recently
    changed last): a list linked through their records (``first``,
    ``last``, each record's ``prev`` and ``next``), so that a peer leaves
    it or joins it in O(1) without a lookup.  Iterating gives the peers.
    """

    __slots__ = ("first", "last", "size")

    def __init__(self):
        self.first = self.last = None
        self.size = 0

    def __len__(self):
        return self.size

    def __iter__(self):
        rec = self.first
        while rec is not None:
            following = rec.next   # (the peer may leave while the caller looks)
            yield rec.peer
            rec = following

    def append(self, rec):
        """``rec`` (in no bucket) joins at the end."""
        last = self.last
        rec.prev = last
        if last is None:
            self.first = rec
        else:
            last.next = rec
        self.last = rec
        rec.bucket = self
        self.size += 1

    def remove(self, rec):
        """``rec`` (in this bucket) leaves it."""
        prev = rec.prev
        following = rec.next
        if prev is None:
            self.first = following
        else:
            prev.next = following
        if following is None:
            self.last = prev
        else:
            following.prev = prev
        rec.prev = rec.next = rec.bucket = None
        self.size -= 1


class _Index(object):
    """
    One group's peers, by ``(score, round)``.

    :ivar buckets: ``{key: _Bucket}``, each in the order its peers arrived
        (the most recently changed last).  A bucket that empties stays
        until its key comes to the top of the heap (or a sweep when emptied
        ones pile up): a peer going back and forth between two keys, as
        with every request, then moves between two buckets that exist.
    :ivar keys: a heap of keys: every key of ``buckets`` once, and maybe keys
        whose bucket has emptied since (dropped when met).
    :ivar queued: the set of the keys in ``keys``.
    :ivar passes: ``{peer: _Rec}`` for every peer of the index (in a
        bucket, ``down`` or ``full``).  The peer keeps its record too
        (``peer.balancer_record``, see :meth:`record`).
    :ivar placed: how many peers are in a bucket.
    :ivar vt: the pass the last request given out started from.
    :ivar down: ``OrderedDict(peer -> None)`` of the unhealthy peers, in the
        order they became so (not in a bucket).
    :ivar full: ``{peer: None}`` of the peers at their ``max_conns`` (not in
        a bucket until a request of theirs ends).
    :ivar spare: emptied buckets taken out of ``buckets``, for the next new
        keys (see :meth:`GroupIndexes._new_bucket`).
    """

    __slots__ = ("buckets", "keys", "queued", "passes", "placed", "vt", "down", "full",
                 "spare")

    def __init__(self):
        self.buckets = {}
        self.keys = []
        self.queued = set()
        self.passes = {}
        self.placed = 0
        self.vt = 0.0
        self.down = OrderedDict()
        self.full = {}
        self.spare = []

    def add(self, peer, passed, total):
        """A record for ``peer`` (in no bucket yet), also kept by the peer."""
        rec = self.passes[peer] = peer.balancer_record = _Rec(peer, self, passed, total)
        return rec

    def record(self, peer):
        """``peer``'s record, or ``None``: the one the peer keeps if it is
        this index's (no lookup in a dictionary of every peer, whose entry no
        cache holds at 10,000 peers), else the one of :attr:`passes`."""
        rec = peer.balancer_record
        if rec is None or rec.index is not self:
            rec = self.passes.get(peer)
            if rec is not None:
                peer.balancer_record = rec   # (another index's, before)
        return rec

    def forget(self, peer):
        """Drop ``peer``'s record (out of the buckets already)."""
        rec = self.passes.pop(peer, None)
        if rec is not None:
            rec.index = None

    def retire(self, key):
        """Take the emptied bucket of ``key`` out of :attr:`buckets`, kept
        for a new key."""
        bucket = self.buckets.pop(key)
        if len(self.spare) < 4:
            self.spare.append(bucket)

    @property
    def key_of(self):
        """``{peer: key}`` of the peers in a bucket (a new dict: for tests
        and introspection, O(peers))."""
        return {peer: key for key, bucket in self.buckets.items() for peer in bucket}


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


class _StateKey(object):
    """The key of one attachment's state in ``group.state``: hashed by
    identity, so looking it up costs no hashing of a tuple or string."""

    __slots__ = ("serial",)

    def __init__(self, serial):
        self.serial = serial

    def __repr__(self):
        return "<least_conn state %d>" % (self.serial,)


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
        registry.subscribe(self)
        self._health = getattr(gateway, "health", None)
        if self._health is not None:
            self._health.subscribe(self)

    def _build(self, group, now, recent=None):
        """Index ``group`` (keeping the passes of its small-group state)."""
        index = _Index()
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
                    self._place(index, peer)
        group.state[self._key] = index
        return index

    def _place(self, index, peer):
        """Move ``peer`` to the end of the bucket of its current key."""
        rec = index.record(peer)
        key = (peer.active / (peer.weight * peer.ramp or 1), rec.round)
        old = rec.bucket
        if old is not None:
            old.remove(rec)   # an emptied bucket stays (see _pick)
        else:
            index.placed += 1
        bucket = index.buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(index, key)
        bucket.append(rec)

    def _new_bucket(self, index, key):
        """
        The bucket of a new key: an emptied one if there is one.  Equal
        peers in turn make two new keys a round (``(0, round)`` and
        ``(1 / weight, round)``): few buckets are made, however many
        rounds pass.
        """
        buckets = index.buckets
        if len(buckets) > 4 * index.placed + 16 or (not index.spare and len(buckets) <= 64):
            # emptied buckets above the lowest keys (those of the requests
            # in flight, never the lowest, empty as the rounds go by): swept
            # when they pile up, and for one to use again when there are
            # few to look at
            for k in [k for k, b in buckets.items() if not b.size]:
                index.retire(k)
        bucket = buckets[key] = index.spare.pop() if index.spare else _Bucket()
        if key not in index.queued:
            index.queued.add(key)
            heapq.heappush(index.keys, key)
            if len(index.keys) > 2 * len(buckets) + 8:
                index.keys = list(buckets)
                heapq.heapify(index.keys)
                index.queued = set(index.keys)
        return bucket

    def _drop(self, index, peer):
        """Take ``peer`` out of the buckets (its key may stay in the heap)."""
        rec = index.record(peer)
        if rec is not None and rec.bucket is not None:
            rec.bucket.remove(rec)
            index.placed -= 1

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
                    self._place(index, peer)
        else:
            rec = index.record(peer)
            if rec is not None and rec.bucket is not None:
                self._drop(index, peer)
                index.down[peer] = None


__all__ = ["GroupIndexes"]
