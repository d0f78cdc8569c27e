"""
:class:`tproxy.http.deadlines.FirstTimers` and
:class:`~tproxy.http.deadlines.Deadlines`: each connection's timer comes due
at its own deadline, as a ``DelayedCall`` of its own would, and nothing is
left on the clock once none is pending.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tproxy.http.deadlines import Deadlines, FirstTimers


class Conn(object):
    """What a timer calls: ``check_timeout`` records the time."""

    def __init__(self, clock, seen, then=None):
        self.clock = clock
        self.seen = seen
        self.then = then

    def check_timeout(self):
        self.seen.append((self, self.clock.seconds()))
        if self.then is not None:
            self.then()


class FirstTimersTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.timers = FirstTimers(self.clock)
        self.seen = []

    def conn(self, then=None):
        return Conn(self.clock, self.seen, then)

    def test_eachAtItsDeadline(self):
        """Timers made in turn come due in turn, each at its own deadline,
        not before; one DelayedCall at a time waits for them."""
        a, b, c = self.conn(), self.conn(), self.conn()
        ta = self.timers.add(60, a)
        self.clock.advance(0.1)
        tb = self.timers.add(60, b)
        self.clock.advance(0.2)
        self.timers.add(60, c)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual((ta.getTime(), tb.getTime()), (60, 60.1))
        self.clock.advance(59.7 - 1e-6)
        self.assertEqual(self.seen, [])
        self.clock.advance(1e-6)
        self.assertEqual(self.seen, [(a, 60)])
        self.assertFalse(ta.active())
        self.assertTrue(tb.active())
        self.clock.advance(0.1)
        self.clock.advance(0.2)
        self.assertEqual([conn for conn, _ in self.seen], [a, b, c])
        self.assertAlmostEqual(self.seen[1][1], 60.1)
        self.assertAlmostEqual(self.seen[2][1], 60.3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled(self):
        """A cancelled timer is not called; once every timer is cancelled
        no call is left on the clock."""
        a, b = self.conn(), self.conn()
        ta = self.timers.add(60, a)
        tb = self.timers.add(60, b)
        ta.cancel()
        self.assertFalse(ta.active())
        self.assertTrue(tb.active())
        self.clock.advance(60)
        self.assertEqual(self.seen, [(b, 60)])
        tc = self.timers.add(60, self.conn())
        tc.cancel()
        tc.cancel()   # (twice: nothing more)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.timers.queue), 0)

    def test_firstCancelled(self):
        """The earliest cancelled, the next still comes due at its time."""
        a, b = self.conn(), self.conn()
        ta = self.timers.add(60, a)
        self.clock.advance(5)
        self.timers.add(60, b)
        ta.cancel()
        self.clock.advance(60)
        self.assertEqual(self.seen, [(b, 65)])

    def test_shorterDelay(self):
        """A shorter delay after a longer one (a reload) still comes due at
        its own time, before the longer one's."""
        a, b = self.conn(), self.conn()
        self.timers.add(60, a)
        tb = self.timers.add(10, b)
        self.assertTrue(tb.active())
        self.clock.advance(10)
        self.assertEqual(self.seen, [(b, 10)])
        self.clock.advance(50)
        self.assertEqual(self.seen, [(b, 10), (a, 60)])

    def test_dueCancelsAnother(self):
        """A timer's check that cancels another's timer (a connection that
        closes others) leaves that one uncalled, and the rest on time."""
        later = []
        a = self.conn(then=lambda: later[0].cancel())
        b, c = self.conn(), self.conn()
        self.timers.add(60, a)
        later.append(self.timers.add(60, b))
        self.clock.advance(1)
        self.timers.add(60, c)
        self.clock.advance(59)
        self.assertEqual(self.seen, [(a, 60)])
        self.clock.advance(1)
        self.assertEqual(self.seen, [(a, 60), (c, 61)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_deadTimersDropped(self):
        """Cancelled timers do not pile up in the queue while others are
        pending (connections that end long before their deadline)."""
        keep = self.timers.add(60, self.conn())
        for _ in range(1000):
            self.timers.add(60, self.conn()).cancel()
        self.assertLess(len(self.timers.queue), 200)
        self.assertTrue(keep.active())
        self.clock.advance(60)
        self.assertEqual(len(self.seen), 1)

    def test_checkFails(self):
        """A check that raises is logged; the other timers come due as
        before."""
        def fail():
            raise RuntimeError("boom")
        a, b = self.conn(then=fail), self.conn()
        self.timers.add(60, a)
        self.clock.advance(1)
        self.timers.add(60, b)
        self.clock.advance(59)
        [failure] = self.flushLoggedErrors(RuntimeError)
        self.clock.advance(1)
        self.assertEqual(self.seen, [(a, 60), (b, 61)])


class Owner(object):
    """What :class:`Deadlines` calls: ``_deadline(now)`` records the time it
    was due for (``now``), which the clock has reached; ``timer`` is its
    entry."""

    def __init__(self, clock, seen, then=None):
        self.clock = clock
        self.seen = seen
        self.then = then
        self.timer = None

    def _deadline(self, now):
        assert now <= self.clock.seconds() + 1e-9
        self.seen.append((self, now))
        if self.then is not None:
            self.then(now)


class DeadlinesTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.deadlines = Deadlines(self.clock)
        self.seen = []

    def owner(self, then=None):
        return Owner(self.clock, self.seen, then)

    def add(self, when, owner):
        owner.timer = self.deadlines.add(when, owner)
        return owner.timer

    def drop(self, owner):
        timer, owner.timer = owner.timer, None
        self.deadlines.cancel(timer)

    def test_eachAtItsDeadline(self):
        """Deadlines of any lengths, added in any order, come due each at
        its own time, not before, in the order of their times (ties in the
        order added); one DelayedCall at a time waits for them."""
        a, b, c, d = (self.owner() for _ in range(4))
        self.add(60, a)
        self.add(5, b)
        self.clock.advance(1)
        self.add(30.5, c)
        self.add(30.5, d)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(4 - 1e-6)
        self.assertEqual(self.seen, [])
        self.clock.advance(1e-6)
        self.assertEqual(self.seen, [(b, 5)])
        self.assertIsNone(b.timer)
        self.clock.advance(25.5)
        self.assertEqual(self.seen, [(b, 5), (c, 30.5), (d, 30.5)])
        self.clock.advance(29.5 - 1e-6)
        self.assertEqual(len(self.seen), 3)
        self.clock.advance(1e-6)
        self.assertEqual(self.seen[3], (a, 60))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sooner(self):
        """A deadline added before the earliest pending one is waited for
        instead (the call moves sooner)."""
        a, b = self.owner(), self.owner()
        self.add(60, a)
        self.add(10, b)
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime(), 10)
        self.clock.advance(10)
        self.clock.advance(50)
        self.assertEqual(self.seen, [(b, 10), (a, 60)])

    def test_cancelled(self):
        """A dropped entry is not called; once none is pending no call is
        left on the clock and the heap is empty."""
        a, b = self.owner(), self.owner()
        self.add(10, a)
        self.add(20, b)
        self.drop(a)
        self.clock.advance(20)
        self.assertEqual(self.seen, [(b, 20)])
        self.add(30, a)
        self.drop(a)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.deadlines.heap, [])

    def test_earliestDroppedNoWakeUp(self):
        """An earliest entry dropped before it is due costs no wake-up of
        its own once another came due: the next call is for the next
        pending one."""
        a, b, c = self.owner(), self.owner(), self.owner()
        self.add(10, a)
        self.add(20, b)
        self.add(30, c)
        self.drop(b)
        self.clock.advance(10)
        self.assertEqual([call.getTime() for call in self.clock.getDelayedCalls()], [30])
        self.clock.advance(20)
        self.assertEqual(self.seen, [(a, 10), (c, 30)])

    def test_addedAgainWhenDue(self):
        """An object whose entry came due may add another (a deadline moved
        later meanwhile): it comes due at its time; ``now`` is the time the
        entry was due for, even when the clock's sum of the delay falls a
        rounding short of it (no wake-up again and again for nothing)."""
        nows = []

        def again(now):
            nows.append(now)
            if len(nows) == 1:
                self.add(now + 0.1 + 0.2, a)
        a = self.owner(then=again)
        self.clock.advance(0.1)
        self.add(0.1 + 0.2, a)
        self.clock.advance(0.2)
        self.clock.advance(0.3)
        self.assertEqual(nows, [0.1 + 0.2, 0.1 + 0.2 + 0.1 + 0.2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_dueDropsAnother(self):
        """An object's ``_deadline`` that drops another's entry (a
        connection that closes others) leaves that one uncalled."""
        a = self.owner(then=lambda now: self.drop(b))
        b, c = self.owner(), self.owner()
        self.add(10, a)
        self.add(10, b)
        self.add(11, c)
        self.clock.advance(10)
        self.clock.advance(1)
        self.assertEqual(self.seen, [(a, 10), (c, 11)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_droppedEntriesDoNotPileUp(self):
        """Dropped entries do not pile up in the heap while others are
        pending (connections closed long before their deadline)."""
        keep = self.owner()
        self.add(60, keep)
        for i in range(1000):
            o = self.owner()
            self.add(1 + i % 50, o)
            self.drop(o)
        self.assertLess(len(self.deadlines.heap), 200)
        self.clock.advance(60)
        self.assertEqual(self.seen, [(keep, 60)])

    def test_deadlineFails(self):
        """A ``_deadline`` that raises is logged; the others come due as
        before."""
        def fail(now):
            raise RuntimeError("boom")
        a, b = self.owner(then=fail), self.owner()
        self.add(10, a)
        self.add(11, b)
        self.clock.advance(10)
        [failure] = self.flushLoggedErrors(RuntimeError)
        self.clock.advance(1)
        self.assertEqual(self.seen, [(a, 10), (b, 11)])
