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
from twisted.python.runtime import seconds as _time

from tproxy.fastio import TESTED_TWISTED, TWISTED_VERSION, FastClient, FastServer

#: On PyPy, ``seconds()`` answers the time the poll returned while its
#: events are dispatched (as nginx's cached time, updated once per turn of
#: its event loop): a request reads the clock ~9 times (deadlines, the
#: registry's TTLs, the context's timestamps), each ~30 ns there (a call to
#: ``clock_gettime``), the cached one ~1 ns.  Outside a dispatch (timed calls,
#: start-up, other threads) it reads the clock.  On CPython ``time.time`` is
#: a C call cheaper than any method that could cache it: stock ``seconds``.
_CACHED_CLOCK = platform.python_implementation() == "PyPy"


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

    On PyPy, while the events of one poll are dispatched, :meth:`seconds` is
    the time at which the poll returned (:data:`_CACHED_CLOCK`): a clock
    behind by at most one dispatch, as nginx's.
    """

    #: the time the current poll returned, while its events are dispatched
    _now = None

    def __init__(self):
        epollreactor.EPollReactor.__init__(self)
        self._caching = _CACHED_CLOCK
        if _CACHED_CLOCK:
            self.seconds = self._cached_seconds

    def _cached_seconds(self):
        now = self._now
        return _time() if now is None else now

    def doPoll(self, timeout):
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        if not self._caching:
            self._dispatch(events)
            return
        self._now = _time()
        try:
            self._dispatch(events)
        finally:
            self._now = None

    def _dispatch(self, events):
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

    def forget(self, selectable):
        """
        Stop watching ``selectable``, whose descriptor the caller closes
        right away (:class:`tproxy.fastio.FastServer`'s close): as
        ``removeReader`` and ``removeWriter``, without their ``epoll_ctl``
        calls, since closing its last descriptor takes a socket out of
        every epoll set.
        """
        fd = selectable.fileno()
        if self._selectables.pop(fd, None) is not None:
            self._reads.discard(fd)
            self._writes.discard(fd)


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
#: by tests/test_fastio.py on the tested Twisted versions): the HTTP
#: listener's connections (FastServer) and the upstream ones (FastClient)
#: among them
_TCP_TYPES = frozenset([tcp.Server, tcp.Client, FastServer, FastClient])


def install():
    """Install the fast reactor (or the stock epoll one on untested Twisted)."""
    if TWISTED_VERSION in TESTED_TWISTED:
        reactor = FastEPollReactor()
    else:
        reactor = epollreactor.EPollReactor()
    installReactor(reactor)
    return reactor
