# -*- test-case-name: tests.test_deadlines -*-
"""
The first timer of every new client connection
(:meth:`tproxy.http.connection.ProxyProtocol.check_timeout`, due
``first_timeout`` seconds after the accept), kept as one timer for them all.

A ``DelayedCall`` per connection costs its making, its insertion in the
reactor's heap (comparisons in Python), its cancellation when the
connection ends (nearly always before it is due), and the reactor's
compaction of the cancelled calls it keeps.  Deadlines of the same length
made in turn come due in turn: :class:`FirstTimers` keeps them in a queue
and waits for the earliest with one ``DelayedCall``.
"""

from collections import deque

from twisted.logger import Logger

__all__ = ["FirstTimers"]

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
