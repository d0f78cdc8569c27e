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
    """A repeated ``SIGTERM`` / ``SIGINT`` / ``SIGQUIT`` is one info line."""

    def setUp(self):
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        self.events = capture_log(self)

    def stopping_once(self):
        """A reactor whose own SIGTERM and SIGINT handlers are installed,
        replaced by :func:`stop_once_on_signals`."""
        reactor = _Reactor()
        signal.signal(signal.SIGTERM, reactor.sigTerm)
        signal.signal(signal.SIGINT, reactor.sigInt)
        stop_once_on_signals(reactor)
        return reactor

    def test_repeated(self):
        """The first signal stops the reactor (and is the one twistd exits
        with), the next ones are a line each; SIGINT alike."""
        reactor = self.stopping_once()
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        self.assertEqual((reactor.stops, reactor._exitSignal), (3, signal.SIGTERM))
        self.assertEqual(log_messages(self.events, "twisted.internet.base"), [
            "Received SIGTERM, shutting down.",
            "Received SIGINT again: tproxy is stopping already.",
            "Received SIGTERM again: tproxy is stopping already."])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_quit(self):
        """``SIGQUIT`` (nginx's graceful quit) stops the reactor as
        ``SIGTERM`` does (its default would end the process at once, with
        a core), and is not raised again at exit (status 0, as nginx)."""
        reactor = self.stopping_once()
        signal.getsignal(signal.SIGQUIT)(signal.SIGQUIT, None)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        self.assertEqual((reactor.stops, reactor._exitSignal), (2, None))
        self.assertEqual(log_messages(self.events, "twisted.internet.base"), [
            "Received SIGQUIT, shutting down.",
            "Received SIGTERM again: tproxy is stopping already."])

    def test_quitLeftAlone(self):
        """A ``SIGQUIT`` ignored (``nohup``, a shell's background job) or
        handled by someone else stays so; so does it where the reactor
        handles no signal."""
        mine = []

        def handler(number, frame):
            mine.append(number)
        for disposition in (signal.SIG_IGN, handler):
            reactor = _Reactor()
            signal.signal(signal.SIGTERM, reactor.sigTerm)
            signal.signal(signal.SIGQUIT, disposition)
            stop_once_on_signals(reactor)
            self.assertIs(signal.getsignal(signal.SIGQUIT), disposition)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        stop_once_on_signals(_Reactor())
        self.assertEqual(signal.getsignal(signal.SIGQUIT), signal.SIG_DFL)

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
