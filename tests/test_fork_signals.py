"""
The fork server's stop signals (:func:`tproxy.worker_forks.hold_stop_signals`):
left to the parent, yet not lost for a worker it forks.
"""

import os
import signal

from twisted.trial.unittest import SynchronousTestCase

from tproxy.worker_forks import hold_stop_signals


class HoldStopSignalsTests(SynchronousTestCase):
    """A stop signal sent to the fork server (or to a child it just forked,
    which inherits its state) is held, not acted on and not discarded."""

    def setUp(self):
        numbers = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP]
        for number in numbers:
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        self.addCleanup(signal.pthread_sigmask, signal.SIG_SETMASK, mask)

        def consume():
            # (the pending signals taken before the mask is restored)
            for number in numbers:
                while number in signal.sigpending():
                    signal.sigwait([number])
        self.addCleanup(consume)

    def test_heldNotLost(self):
        """``SIGTERM`` and ``SIGHUP`` sent after :func:`hold_stop_signals`
        wait, pending (the worker unblocks them once it has its own
        handlers); ignored, they would be gone."""
        hold_stop_signals()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual(signal.sigpending() & {signal.SIGTERM, signal.SIGHUP},
                         {signal.SIGTERM, signal.SIGHUP})
        self.assertEqual(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)
