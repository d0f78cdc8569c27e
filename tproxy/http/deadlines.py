# -*- test-case-name: tests.test_deadlines -*-
"""
Timers of many connections kept as one reactor timer for them all.

:class:`FirstTimers`: the first timer of every new client connection
(:meth:`tproxy.http.connection.ProxyProtocol.check_timeout`, due
``first_timeout`` seconds after the accept).  :class:`Deadlines`: the
deadlines of a pool's upstream connections
(:meth:`tproxy.http.upstream.UpstreamProtocol.set_deadline`).

A ``DelayedCall`` per connection costs its making, its insertion in the
reactor's heap (comparisons in Python), its cancellation when the
connection ends (nearly always before it is due), and the reactor's
compaction of the cancelled calls it keeps.  Deadlines of the same length
made in turn come due in turn: :class:`FirstTimers` keeps them in a queue
and waits for the earliest with one ``DelayedCall``.  The upstream
connections' deadlines have several lengths (read, send, idle timeouts)
and move: :class:`Deadlines` keeps them in a heap of its own.
"""

from collections import deque
from heapq import heapify, heappop, heappush
from itertools import count

from twisted.logger import Logger

__all__ = ["FirstTimers", "Deadlines"]

log = Logger()


class FirstTimer(object):
    """One connection's deadline in a :class:`FirstTimers` queue; the part of
    a ``DelayedCall`` a connection uses (``active``, ``cancel``,
    ``getTime``)."""

    __slots__ = ("time", "conn", "timers")

    def __init__(self, time, conn, timers):
        self.time = time
        self.conn = conn
        self.timers = timers

    def active(self):
        return self.conn is not None

    def cancel(self):
        if self.conn is not None:
            self.conn = None
            self.timers._cancelled()

    def getTime(self):
        return self.time


class FirstTimers(object):
    """
    The deadlines of connections made in turn with the same delay: each
    connection's ``check_timeout()`` is called when its deadline comes,
    unless its timer was cancelled.  One ``DelayedCall`` waits for the
    earliest, and none is left once no deadline is pending.

    :param clock: the reactor (``callLater``, ``seconds``).
    """

    def __init__(self, clock):
        self.clock = clock
        self.queue = deque()
        self.live = 0          # timers in the queue not cancelled
        self.call = None       # the DelayedCall for the earliest
        self.target = 0.0      # the deadline ``call`` was scheduled for

    def add(self, delay, conn):
        """
        A timer calling ``conn.check_timeout()`` in ``delay`` seconds: a
        :class:`FirstTimer`, or a ``DelayedCall`` when it would come due
        before the last one queued (the delay was shortened, by a reload).
        """
        q = self.queue
        when = self.clock.seconds() + delay
        if q and when < q[-1].time:
            return self.clock.callLater(delay, conn.check_timeout)
        timer = FirstTimer(when, conn, self)
        q.append(timer)
        self.live += 1
        if self.call is None:
            self.target = when
            self.call = self.clock.callLater(delay, self._due)
        return timer

    def _cancelled(self):
        self.live -= 1
        if not self.live:
            # none pending: no call left behind (nor a queue of dead timers)
            self.queue.clear()
            if self.call is not None:
                self.call.cancel()
                self.call = None
        elif len(self.queue) > 64 and self.live < len(self.queue) // 2:
            self.queue = deque(t for t in self.queue if t.conn is not None)

    def _due(self):
        self.call = None
        # (due: what the call was made for, even if the clock's sum of the
        # delay is a rounding short of it)
        now = max(self.clock.seconds(), self.target)
        # (self.queue read each time: a check_timeout may cancel timers,
        # and _cancelled replace the queue)
        while self.queue and self.queue[0].time <= now:
            timer = self.queue.popleft()
            conn = timer.conn
            if conn is not None:
                timer.conn = None
                self.live -= 1
                try:
                    conn.check_timeout()
                except Exception:
                    # (as the reactor does with a DelayedCall's: logged, and
                    # the other connections' timers go on)
                    log.failure("a connection's timeout check failed")
        q = self.queue
        while q and q[0].conn is None:
            q.popleft()
        if q and (self.call is None or self.target > q[0].time):
            if self.call is not None:
                self.call.cancel()
            self.target = q[0].time
            self.call = self.clock.callLater(max(self.target - self.clock.seconds(), 0),
                                             self._due)


class Deadlines(object):
    """
    The deadlines of many objects (a pool's upstream connections, each with
    at most one pending), in one heap of ``(time, serial, obj)`` tuples and
    one ``DelayedCall`` for the earliest; none is left on the clock once no
    deadline is pending.

    In the reactor's own heap, a ``DelayedCall`` per connection made every
    operation on that heap walk cold timers (an upstream connection per
    peer: 10,000 timers at 10,000 peers), each comparison a call of
    ``DelayedCall.__lt__`` in Python: a timer that came due, or a
    cancelled one dropped when its time came (Twisted's connect timeouts,
    one per new upstream connection), cost ~14 of them.  Here they compare
    as tuples, in C, and the reactor's heap keeps a few timers.

    An entry is pending while its object's ``timer`` is that entry:
    :meth:`add` returns it (the caller stores it in ``obj.timer``), and an
    object that drops it (sets ``timer`` to something else) says so with
    :meth:`cancel`.  When it comes due, ``timer`` is set to ``None`` and
    ``obj._deadline(now)`` called, ``now`` being the time it was due for.

    :param clock: the reactor (``callLater``, ``seconds``).
    """

    def __init__(self, clock):
        self.clock = clock
        self.heap = []
        self.live = 0          # entries pending (the others are dropped when met)
        self.call = None       # the DelayedCall for the earliest
        self.target = 0.0      # the time ``call`` was scheduled for
        self._serial = count()  # (ties come due in the order added; no obj compared)

    def add(self, when, obj):
        """An entry calling ``obj._deadline(now)`` at clock time ``when``
        (store it in ``obj.timer``)."""
        entry = (when, next(self._serial), obj)
        heappush(self.heap, entry)
        self.live += 1
        if self.call is None or when < self.target:
            self._schedule(when)
        return entry

    def cancel(self, entry):
        """``entry`` (pending until now) is not wanted any more: its object
        has set ``timer`` to something else."""
        self.live -= 1
        if not self.live:
            del self.heap[:]
            if self.call is not None:
                self.call.cancel()
                self.call = None
        elif len(self.heap) > 64 and self.live < len(self.heap) // 2:
            self.heap = [e for e in self.heap if e[2].timer is e]
            heapify(self.heap)

    def _schedule(self, when):
        if self.call is not None:
            self.call.cancel()
        self.target = when
        self.call = self.clock.callLater(max(when - self.clock.seconds(), 0), self._due)

    def _due(self):
        self.call = None
        # (due: what the call was made for, even if the clock's sum of the
        # delay is a rounding short of it)
        now = max(self.clock.seconds(), self.target)
        # (self.heap read each time: an object's _deadline may cancel
        # entries, and cancel replace the heap)
        while self.heap and self.heap[0][0] <= now:
            entry = heappop(self.heap)
            obj = entry[2]
            if obj.timer is entry:
                obj.timer = None
                self.live -= 1
                try:
                    obj._deadline(now)
                except Exception:
                    # (as the reactor does with a DelayedCall's: logged, and
                    # the other objects' deadlines go on)
                    log.failure("a connection's deadline failed")
        heap = self.heap
        if not self.live:
            del heap[:]
        elif self.call is None or self.target > heap[0][0]:
            while heap[0][2].timer is not heap[0]:
                heappop(heap)   # (dropped: not worth a wake-up)
            self._schedule(heap[0][0])
