# -*- test-case-name: tests.test_fastio -*-
"""
``twistd -r tproxy``: the epoll reactor, dispatching events without wrapping
each one in ``log.callWithLogger`` (see :mod:`tproxy.fastio`).

On a Twisted release it was not tested with, :func:`install` installs the
stock epoll reactor instead.
"""

import errno

from twisted.internet import epollreactor
from twisted.internet.main import installReactor

from tproxy.fastio import TESTED_TWISTED, TWISTED_VERSION


class FastEPollReactor(epollreactor.EPollReactor):
    """
    An :class:`~twisted.internet.epollreactor.EPollReactor` whose ``doPoll``
    calls ``_doReadOrWrite`` directly (that method already turns exceptions
    into a disconnection, so the logging context only named the selectable
    in tracebacks).
    """

    def doPoll(self, timeout):
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        drdw = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is not None:
                drdw(selectable, fd, event)

    # EPollReactor binds ``doIteration = doPoll`` in its class body: rebind
    doIteration = doPoll


def install():
    """Install the fast reactor (or the stock epoll one on untested Twisted)."""
    if TWISTED_VERSION in TESTED_TWISTED:
        reactor = FastEPollReactor()
    else:
        reactor = epollreactor.EPollReactor()
    installReactor(reactor)
    return reactor
