# -*- test-case-name: tests.test_fastio -*-
"""
Three shortcuts through Twisted's private parts, kept in one place.

1. :func:`install_fast_write`: Twisted buffers every ``transport.write`` until
   the next reactor turn (Twisted issue #5303), which costs an
   ``epoll_ctl`` to start writing, a turn, the write, and another
   ``epoll_ctl`` to stop.  When nothing is buffered, sending at once is what the
   buffer would do anyway, one turn later: order is kept, and anything the
   socket does not take goes to the ordinary buffer (so backpressure and
   producers work as before).
2. The same, with ``close=True``, for ``transport.loseConnection``: with
   nothing buffered, Twisted still waits for the socket to be writable
   before it closes (an ``epoll_ctl`` to stop reading, one to start
   writing, a turn, an empty ``send`` and an ``epoll_ctl`` to stop).  The
   connection is closed at once instead (``shutdown`` and ``close``: the
   kernel sends what it still holds, then its FIN), as nginx closes.
3. :class:`FastEPollReactor` (``twistd -r tproxy``): the epoll reactor without
   the ``log.callWithLogger`` wrapper around every event (Twisted issues #6789,
   #2534), which only sets up a legacy logging context.

Both reach into Twisted internals, so they are enabled only on the Twisted
versions they were tested with (:data:`TESTED_TWISTED`) and only for plain TCP
transports; anywhere else tproxy runs on stock behaviour.  Set
``TPROXY_FAST_WRITE=0`` to turn the write shortcut off.
"""

import os
import socket

import twisted
from twisted.internet import main, tcp
from twisted.python.failure import Failure

#: Twisted releases whose internals these shortcuts were checked against
#: (26.10 on CPython 3.11; 26.4 is the newest for PyPy's Python 3.9, and 25.5
#: what pip installs there beside ``twisted[tls]``: a newer one needs a
#: pyOpenSSL that needs cryptography >= 45, which has no PyPy 3.9 wheel).
TESTED_TWISTED = ("26.10.0", "26.4.0", "25.5.0")

TWISTED_VERSION = twisted.__version__

ENABLED = (TWISTED_VERSION in TESTED_TWISTED
           and os.environ.get("TPROXY_FAST_WRITE", "1") != "0"
           and hasattr(tcp.Connection, "dataBuffer"))


#: the reason of a connection closed at once by a fast ``loseConnection``
_CLOSED = Failure(main.CONNECTION_DONE)


def install_fast_write(transport, close=False):
    """
    Make ``transport.write`` / ``writeSequence`` send at once when nothing is
    buffered, and with ``close``, ``transport.loseConnection`` close at once
    when nothing is buffered (its protocol's ``connectionLost`` then runs
    before it returns).  Does nothing (and returns ``False``) for other
    transports, TLS, or untested Twisted versions.
    """
    if not ENABLED or not isinstance(transport, tcp.Connection) or transport.TLS:
        return False
    stock_write = transport.write
    stock_write_sequence = transport.writeSequence
    sock = transport.socket
    if isinstance(sock, socket.socket):   # (not tproxy.testing's in-memory one)
        # Read by every write below (and by the upstream pool): made instance
        # attributes, with the class defaults' values (Twisted sets them on the
        # instance when they change).  CPython 3.11 reads a class attribute
        # through an instance by the generic lookup (~250 instructions each, three
        # per write); stored now, in connectionMade, they are among the first
        # names of the transport's class, which it keeps inline.
        transport.dataBuffer = transport.dataBuffer
        transport.disconnecting = transport.disconnecting
        transport.TLS = transport.TLS
        if close:
            _install_fast_close(transport)

    def write(data):
        if (transport.dataBuffer or transport._tempDataBuffer or transport.TLS
                or not transport.connected or transport.disconnecting):
            return stock_write(data)
        try:
            sent = sock.send(data)
        except OSError:
            # would block, or a broken connection: the buffer and the
            # reactor's next write deal with it as they always do
            return stock_write(data)
        if sent < len(data):
            stock_write(memoryview(data)[sent:].tobytes())

    def write_sequence(seq):
        if (transport.dataBuffer or transport._tempDataBuffer or transport.TLS
                or not transport.connected or transport.disconnecting):
            return stock_write_sequence(seq)
        if sum(map(len, seq)) < 65536:
            # small pieces: one joined send() is cheaper than sendmsg()
            return write(b"".join(seq))
        try:
            # gather-write: no copy of large pieces (a chunk header, a body
            # piece and its CRLF) into one new string
            sent = sock.sendmsg(seq)
        except OSError:
            return stock_write_sequence(seq)
        for i, piece in enumerate(seq):
            if sent < len(piece):
                rest = [memoryview(piece)[sent:].tobytes()] if sent else [piece]
                return stock_write_sequence(rest + list(seq[i + 1:]))
            sent -= len(piece)

    transport.write = write
    transport.writeSequence = write_sequence
    return True


def _install_fast_close(transport):
    stock_lose = transport.loseConnection

    def lose_connection():
        if (transport.dataBuffer or transport._tempDataBuffer or not transport.connected
                or transport.disconnecting or transport.producer is not None):
            return stock_lose()
        transport.stopReading()
        transport.stopWriting()
        transport.connectionLost(_CLOSED)   # (shutdown and close the socket)

    transport.loseConnection = lose_connection
