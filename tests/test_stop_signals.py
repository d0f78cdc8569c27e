"""
:mod:`tproxy.stop_signals`, in this process (with a real process:
:mod:`tests.processes.test_stop_signals`).
"""

import signal

from twisted.internet.error import ReactorNotRunning
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import capture_log, log_messages
from tproxy.stop_signals import stop_once_on_signals


class _Reactor(object):
    """What the handlers use of a reactor: its own handlers, ``stop`` (once),
    ``callFromThread`` (at once here)."""

    _exitSignal = None

    def __init__(self):
        self.stops = 0

    def sigTerm(self, number, frame):
        raise AssertionError("the reactor's own handler ran")

    sigInt = sigTerm

    def stop(self):
        self.stops += 1
        if self.stops > 1:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")

    def callFromThread(self, f, *args):
        f(*args)


class StopOnceTests(SynchronousTestCase):
    """A repeated ``SIGTERM`` / ``SIGINT`` is one info line."""

    def setUp(self):
        for number in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.events = capture_log(self)

    def test_repeated(self):
        """The first signal stops the reactor (and is the one twistd exits
        with), the next ones are a line each; SIGINT alike."""
        reactor = _Reactor()
        signal.signal(signal.SIGTERM, reactor.sigTerm)
        signal.signal(signal.SIGINT, reactor.sigInt)
        stop_once_on_signals(reactor)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        self.assertEqual((reactor.stops, reactor._exitSignal), (3, signal.SIGTERM))
        self.assertEqual(log_messages(self.events, "twisted.internet.base"), [
            "Received SIGTERM, shutting down.",
            "Received SIGINT again: tproxy is stopping already.",
            "Received SIGTERM again: tproxy is stopping already."])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_othersLeftAlone(self):
        """A handler that is not the reactor's (a debugger's SIGINT, a
        reactor run without handlers) stays."""
        reactor = _Reactor()
        mine = []

        def handler(number, frame):
            mine.append(number)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, handler)
        stop_once_on_signals(reactor)
        self.assertEqual((signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)),
                         (signal.SIG_DFL, handler))
