# -*- test-case-name: tests.processes.test_stop_signals,tests.test_stop_signals -*-
"""
``SIGTERM``, ``SIGINT`` and ``SIGQUIT`` stop a tproxy process once,
gracefully.

Twisted's handlers (installed when the reactor starts) call
``reactor.stop()`` for each signal: a second one while the process stops
(a graceful drain lasts up to ``shutdown_timeout``) calls it again, and the
reactor logs a critical ``ReactorNotRunning`` traceback.  A ``timeout``
that signals both the process and its group does that, as ``systemctl
stop`` signalling every process of the unit, or an impatient ``Ctrl-C``.
:func:`stop_once_on_signals` puts handlers in their place that stop the
reactor the first time and, after that, log one line.

``SIGQUIT`` is nginx's graceful quit (``nginx -s quit``, the ``STOPSIGNAL``
of nginx's container image); Python leaves it to the system, which ends the
process at once with a core dump, cutting the requests in flight.  It stops
tproxy as ``SIGTERM`` does, and tproxy then exits with status 0 (as nginx
does), where after ``SIGTERM`` or ``SIGINT`` twistd ends by that signal.
"""

import signal

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

#: (Twisted's own "Received SIGTERM, shutting down." is under this namespace)
log = Logger(namespace="twisted.internet.base")

#: the signals whose handlers are replaced, and the reactor's handler of each
_SIGNALS = (("SIGTERM", "sigTerm"), ("SIGINT", "sigInt"))


def stop_once_on_signals(reactor):
    """
    Replace the reactor's own ``SIGTERM`` / ``SIGINT`` handlers (where they
    are installed: a reactor run without signal handlers, or a ``SIGINT``
    a debugger holds, is left alone) by ones that stop it once; where the
    reactor handles ``SIGTERM``, handle ``SIGQUIT`` likewise, unless it is
    ignored or handled already.  Call it once the reactor runs
    (``callWhenRunning``): it installs its handlers as it starts.
    """
    def handler(number, frame):
        reactor.callFromThread(_stop, reactor, number)

    for name, method in _SIGNALS:
        number = getattr(signal, name, None)
        own = getattr(reactor, method, None)
        if number is None or own is None or signal.getsignal(number) != own:
            continue
        signal.signal(number, handler)
        if name == "SIGTERM":
            quit = getattr(signal, "SIGQUIT", None)
            if quit is not None and signal.getsignal(quit) == signal.SIG_DFL:
                signal.signal(quit, handler)


def _stop(reactor, number):
    """The reactor's thread: stop it, or say that it is stopping already."""
    name = signal.Signals(number).name
    try:
        reactor.stop()
    except ReactorNotRunning:
        log.info("Received {signal} again: tproxy is stopping already.", signal=name)
        return
    log.info("Received {signal}, shutting down.", signal=name)
    if number != getattr(signal, "SIGQUIT", None):
        # (twistd ends by raising the signal that stopped it again, as after
        # Twisted's own handler; raised again, SIGQUIT would dump a core)
        reactor._exitSignal = number
