"""
:class:`tproxy.http.deadlines.FirstTimers`: each connection's first timer
comes due at its own deadline, as a ``DelayedCall`` of its own would, and
nothing is left on the clock once none is pending.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tproxy.http.deadlines import FirstTimers


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
