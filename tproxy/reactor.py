# -*- test-case-name: tests.test_fastio -*-
"""
``twistd -r tproxy``: the epoll reactor, dispatching events without wrapping
each one in ``log.callWithLogger`` (see :mod:`tproxy.fastio`).

On a Twisted release it was not tested with, :func:`install` installs the
stock epoll reactor instead.
"""

import errno
import platform
import sys
from errno import EWOULDBLOCK

from twisted.internet import epollreactor, tcp
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST, installReactor
from twisted.python import log

from tproxy.fastio import TESTED_TWISTED, TWISTED_VERSION


class FastEPollReactor(epollreactor.EPollReactor):
    """
    An :class:`~twisted.internet.epollreactor.EPollReactor` whose ``doPoll``
    calls ``_doReadOrWrite`` directly (that method already turns exceptions
    into a disconnection, so the logging context only named the selectable
    in tracebacks).

    A plain read event on a TCP connection (the event of every request)
    goes one step shorter: the socket's ``recv`` and the protocol's
    ``dataReceived`` are called here, as ``Connection.doRead`` and
    ``_dataReceived`` would, with the same outcomes on errors, end of file
    and exceptions (the inlined branch of :meth:`doPoll`).  Anything else
    takes the stock path.
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
        recv_into = _RECV_INTO
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == _EPOLLIN and type(selectable) in _TCP_TYPES:
                # tcp.Connection.doRead and _dataReceived, inlined
                try:
                    if recv_into and selectable.bufferSize <= _READ_SIZE:
                        # (PyPy: see _RECV_INTO)
                        data = _READ_VIEW[:selectable.socket.recv_into(
                            _READ_BUFFER, selectable.bufferSize)].tobytes()
                    else:
                        data = selectable.socket.recv(selectable.bufferSize)
                except OSError as se:
                    if se.args[0] != EWOULDBLOCK:
                        self._disconnectSelectable(selectable, CONNECTION_LOST, True)
                    continue
                if not data:
                    self._disconnectSelectable(selectable, CONNECTION_DONE, True)
                    continue
                try:
                    selectable.protocol.dataReceived(data)
                except BaseException:
                    why = sys.exc_info()[1]
                    log.err()
                    self._disconnectSelectable(selectable, why, True)
            else:
                drdw(selectable, fd, event)

    # EPollReactor binds ``doIteration = doPoll`` in its class body: rebind
    doIteration = doPoll


_EPOLLIN = epollreactor.EPOLLIN
#: Read into one buffer and copy what came, instead of ``recv(bufferSize)``.
#: On PyPy each ``recv(65536)`` allocates a 64 KiB buffer outside the nursery
#: that counts as 64 KiB of allocation: two reads per proxied request made
#: ~130 KiB, a minor collection every ~100 requests with a 16 MB nursery
#: (~4.5x as many as the request's own objects make).  On CPython
#: ``recv`` is as cheap and stays.
_RECV_INTO = platform.python_implementation() == "PyPy"
_READ_SIZE = 65536       # Twisted's bufferSize; a larger one takes recv()
_READ_BUFFER = bytearray(_READ_SIZE)
_READ_VIEW = memoryview(_READ_BUFFER)
#: the transports whose ``doRead`` is ``tcp.Connection.doRead`` (checked
#: by tests/test_fastio.py on the tested Twisted versions)
_TCP_TYPES = frozenset([tcp.Server, tcp.Client])


def install():
    """Install the fast reactor (or the stock epoll one on untested Twisted)."""
    if TWISTED_VERSION in TESTED_TWISTED:
        reactor = FastEPollReactor()
    else:
        reactor = epollreactor.EPollReactor()
    installReactor(reactor)
    return reactor
