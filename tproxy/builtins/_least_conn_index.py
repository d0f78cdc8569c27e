# -*- test-case-name: tests.test_least_conn -*-
"""
The index of a ``least_conn`` group's peers (:class:`_Index`), what it
does at each request (the pick's usual case, :meth:`_Index.first`, and the
re-scoring of a peer whose count changed, :meth:`_Index.changed`), and the
key it is stored under in ``group.state`` (:class:`_StateKey`, whose
``peer_changed`` the registry calls).  Compiled by Cython on CPython
(:mod:`tproxy.compiled`, typed by ``_least_conn_index.pxd``); PyPy runs it
as it is.  The upkeep outside the request (a group indexed on first use,
peers added, removed, ejected and re-admitted) is
:mod:`tproxy.builtins._least_conn_upkeep`'s; the pick's other cases are the
plugin's (:mod:`tproxy.builtins.least_conn`).

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

Small groups (up to ``least_conn.Plugin.small_group`` peers, 8) have no
index: each pick looks at every peer and takes the smallest ``(score,
pass)``, which costs less per request than moving a peer between buckets
twice.  A group that grows past that size is indexed from then on.  A small
group's count changes need nothing: the pick brings the passes up to date
(a peer's ``total`` tells how many requests it was given since); on
CPython the plugin is not told of them at all until it indexes a group
(``least_conn._FOLLOW_LATE``), on PyPy its ``peer_changed`` returns at once.

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
:meth:`_Index.new_bucket`).  The running server pays more per request at
10,000 peers than at 1 (see ``bench/README.md``): each request touches
another peer's objects and upstream connection, which no cache holds any
more.
"""

import heapq
from collections import OrderedDict


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

    ``score`` and ``round`` are its key while it is in its index's
    ``buckets`` (``round`` -1 out of them: see :meth:`_Index.bucket`).
    """

    __slots__ = ("first", "last", "size", "score", "round")

    def __init__(self):
        self.first = self.last = None
        self.size = 0
        self.score = 0.0
        self.round = -1

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
        keys (see :meth:`new_bucket`).
    :ivar key: the :class:`_StateKey` it is stored under in ``group.state``.
    :ivar hot: the bucket the last change moved a peer to (see
        :meth:`bucket`), or ``None``.
    :ivar other: the one a change moved a peer to before, or ``None``.
    """

    __slots__ = ("buckets", "keys", "queued", "passes", "placed", "vt", "down", "full",
                 "spare", "key", "hot", "other")

    def __init__(self, key):
        self.key = key
        self.hot = self.other = None
        self.buckets = {}
        self.keys = []
        self.queued = set()
        self.passes = {}
        self.placed = 0
        self.vt = 0.0
        self.down = OrderedDict()
        self.full = {}
        self.spare = []

    # -- at each request -------------------------------------------------------

    def first(self):
        """The first peer of the lowest bucket (the pick, unless it is
        expired or tried), or ``None``."""
        keys = self.keys
        if keys:
            bucket = self.buckets.get(keys[0])
            if bucket is not None:
                rec = bucket.first
                if rec is not None:
                    return rec.peer
        return None

    def changed(self, peer, rec):
        """Re-score ``peer``, whose count or weight changed (see
        :meth:`_StateKey.peer_changed`; ``rec`` is ``peer.balancer_record``):
        its record moves to the end of its new key's bucket, or to
        :attr:`full`, or from there back."""
        if rec is None or rec.index is not self:
            # (record, inlined: its own record kept by the peer, else the
            # index's, the peer's when it was another index's)
            rec = self.passes.get(peer)
            if rec is None:
                return   # not looked at yet, removed, or expired (forgotten)
            peer.balancer_record = rec
        weight = peer.weight * peer.ramp
        if not weight:
            weight = 1
        total = peer.total
        if rec.total != total:
            # the requests given since, from vt at least
            start = rec.passed
            if start < self.vt:
                start = self.vt
            else:
                self.vt = start
            rec.passed = passed = start + (total - rec.total) / weight
            rec.total = total
            if passed >= rec.round + 1:   # (a pass only grows)
                rec.round = int(passed)
        old = rec.bucket
        if old is None:
            # a full peer whose request ended (back in its bucket), or a
            # down one
            if self.full and peer in self.full and peer.active < peer.max_conns:
                del self.full[peer]
                if peer.healthy:
                    self.place(peer)
                else:
                    self.down[peer] = None
            return
        old.remove(rec)   # (an emptied bucket stays, for reuse)
        active = peer.active
        if peer.max_conns and active >= peer.max_conns:
            # full: out of the buckets until a request ends
            self.placed -= 1
            self.full[peer] = None
            return
        self.bucket(active / weight, rec.round).append(rec)   # at the end

    def bucket(self, score, round):
        """
        The bucket of key ``(score, round)``, made if there is none.  Most
        changes move a peer to one of the two buckets the last two changes
        moved peers to (a request's acquire to ``(1 / weight, round)``, its
        release to ``(0, round)``, the same for every peer of a round): those
        two are kept (:attr:`hot`, :attr:`other`) and compared by their key's
        fields, no tuple made and looked up in :attr:`buckets`.  A bucket
        taken out of :attr:`buckets` has round -1, which no key has.
        """
        bucket = self.hot
        if bucket is None or bucket.round != round or bucket.score != score:
            bucket = self.other
            if bucket is None or bucket.round != round or bucket.score != score:
                key = (score, round)
                bucket = self.buckets.get(key)
                if bucket is None:
                    bucket = self.new_bucket(key)
            self.other = self.hot
            self.hot = bucket
        return bucket

    # -- records and buckets -----------------------------------------------------

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

    def place(self, peer):
        """Move ``peer`` to the end of the bucket of its current key."""
        rec = self.record(peer)
        old = rec.bucket
        if old is not None:
            old.remove(rec)   # an emptied bucket stays (see least_conn's _pick)
        else:
            self.placed += 1
        self.bucket(peer.active / (peer.weight * peer.ramp or 1), rec.round).append(rec)

    def drop(self, peer):
        """Take ``peer`` out of the buckets (its key may stay in the heap);
        whether it was in one."""
        rec = self.record(peer)
        if rec is None or rec.bucket is None:
            return False
        rec.bucket.remove(rec)
        self.placed -= 1
        return True

    def new_bucket(self, key):
        """
        The bucket of a new key: an emptied one if there is one.  Equal
        peers in turn make two new keys a round (``(0, round)`` and
        ``(1 / weight, round)``): few buckets are made, however many
        rounds pass.
        """
        buckets = self.buckets
        if len(buckets) > 4 * self.placed + 16 or (not self.spare and len(buckets) <= 64):
            # emptied buckets above the lowest keys (those of the requests
            # in flight, never the lowest, empty as the rounds go by): swept
            # when they pile up, and for one to use again when there are
            # few to look at
            for k in [k for k, b in buckets.items() if not b.size]:
                self.retire(k)
        bucket = buckets[key] = self.spare.pop() if self.spare else _Bucket()
        bucket.score, bucket.round = key
        if key not in self.queued:
            self.queued.add(key)
            heapq.heappush(self.keys, key)
            if len(self.keys) > 2 * len(buckets) + 8:
                self.keys = list(buckets)
                heapq.heapify(self.keys)
                self.queued = set(self.keys)
        return bucket

    def retire(self, key):
        """Take the emptied bucket of ``key`` out of :attr:`buckets`, kept
        for a new key."""
        bucket = self.buckets.pop(key)
        bucket.round = -1   # (out of the buckets: see bucket)
        if len(self.spare) < 4:
            self.spare.append(bucket)

    @property
    def key_of(self):
        """``{peer: key}`` of the peers in a bucket (a new dict: for tests
        and introspection, O(peers))."""
        return {peer: key for key, bucket in self.buckets.items() for peer in bucket}


class _StateKey(object):
    """The key of one attachment's state in ``group.state``: hashed by
    identity, so looking it up costs no hashing of a tuple or string.  Its
    :meth:`peer_changed` is the plugin's, for the registry to call."""

    __slots__ = ("serial",)

    def __init__(self, serial):
        self.serial = serial

    def __repr__(self):
        return "<least_conn state %d>" % (self.serial,)

    def peer_changed(self, peer):
        """Re-score a peer whose count or weight changed (twice per request
        once a group is indexed; nothing for a small group, whose pick looks
        at every peer): :meth:`_Index.changed` of the index stored under
        this key."""
        rec = peer.balancer_record
        if rec is not None and rec.index is not None and rec.index.key is self:
            # (the index of the peer's group: the one that recorded it,
            # until it forgets the peer, is group.state's under its key)
            index = rec.index
        else:
            states = peer.group.state
            state = states.get(self)
            if type(state) is not _Index:
                return
            index = state
        index.changed(peer, rec)

