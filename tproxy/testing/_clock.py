# -*- test-case-name: tests.test_testing -*-
"""
The harnesses' fake clock (:class:`_Clock`): Twisted's
``MemoryReactorClock``, whose list of calls is kept in order without being
sorted again at every ``callLater``.
"""

from twisted.internet.base import DelayedCall
from twisted.internet.testing import MemoryReactorClock


class _DelayedCall(DelayedCall):
    """
    A call of a :class:`_Clock`: rescheduling it (``reset``, ``delay``)
    tells the clock its list of calls needs sorting again.
    """

    clock = None

    def reset(self, secondsFromNow):
        DelayedCall.reset(self, secondsFromNow)
        self.clock._unsorted = True

    def delay(self, secondsLater):
        DelayedCall.delay(self, secondsLater)
        self.clock._unsorted = True


class _Clock(MemoryReactorClock):
    """
    The harness's :class:`MemoryReactorClock`, whose list of calls stays in
    order as Twisted's ``Clock`` keeps it (by time; calls due at the same
    time in the order they were made), without sorting it all again at
    every ``callLater`` and every step of ``advance``: a new call is put in
    its place, and the list is sorted only after a call was rescheduled.
    (A harness's flush advances the clock by 0 in every round; its calls
    are the timers of every connection.)
    """

    _unsorted = False

    def callLater(self, delay, callable, *args, **kw):
        call = _DelayedCall(self.seconds() + delay, callable, args, kw,
                            self.calls.remove, lambda c: None, self.seconds)
        call.clock = self
        calls = self.calls
        if self._unsorted:
            calls.append(call)
            self._sortCalls()
            return call
        # after every call due at or before it (bisect_right; Python 3.9's
        # bisect has no key)
        when, lo, hi = call.getTime(), 0, len(calls)
        while lo < hi:
            mid = (lo + hi) // 2
            if when < calls[mid].getTime():
                hi = mid
            else:
                lo = mid + 1
        calls.insert(lo, call)
        return call

    def _sortCalls(self):
        if self._unsorted:
            self._unsorted = False
            MemoryReactorClock._sortCalls(self)
