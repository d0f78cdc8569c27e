# -*- test-case-name: tests.test_shutdown -*-
"""
How a client connection (:class:`tproxy.http.connection.ProxyProtocol`)
ends, apart from its requests: the lingering close (nginx's
``lingering_close``) and the drain when the proxy stops
(:meth:`tproxy.http.server.ProxyFactory.drain`).  Functions of the
connection, called rarely: none is on the path of a request that ends in
keep-alive.
"""

import fcntl
import struct
import termios
from collections import deque

from tproxy.http.exchange import Exchange
from tproxy.http.refusals import Stopped

__all__ = ["DRAIN_FIRST_REQUEST", "drain", "await_next_request", "linger", "end_linger",
           "bound_flush", "unsent"]

#: Seconds a connection idle when the proxy begins to drain (accepted and
#: silent so far, or keep-alive between two requests) may take to begin its
#: next request, which is then answered (with ``Connection: close``): a
#: client that connected, or was answered, just before the drain may have
#: that request on the way, but an idle connection does not hold the stop
#: for its whole first-request or keep-alive timeout.
DRAIN_FIRST_REQUEST = 1.0


def linger(conn):
    """
    Close as nginx's ``lingering_close``: the client may still be sending
    (a body not read, bytes after a bad request), and closing a socket
    with unread bytes sends a reset, which can destroy the response
    before the client reads it.  So the response is flushed, then the
    write side is shut down (the client sees the end of the response),
    and what the client still sends is read and dropped until it closes,
    or is silent for ``proxy.lingering_timeout`` seconds, or
    ``proxy.lingering_time`` seconds have passed; then the connection
    closes (:meth:`~tproxy.http.connection.ProxyProtocol.check_timeout`).
    """
    f = conn.factory
    t = conn.transport
    conn.lingering = True
    # requests read but not started will not be: they end now, not
    # when the connection does
    queue, conn.queue = conn.queue, deque()
    for queued in queue:
        queued.client_lost()
    now = f.seconds()
    conn.idle_since = now
    conn.linger_end = now + f.lingering_time
    # after the bytes buffered (the response): FIN (Twisted's doWrite
    # half-closes once its buffer is empty; the fast write path in
    # tproxy.fastio only sends while that buffer is empty, so the order
    # holds)
    t.loseWriteConnection()
    # read (and drop) whatever the reasons for not reading were
    conn.paused.clear()
    t.resumeProducing()
    delay = min(f.lingering_timeout, f.lingering_time)
    timer = conn.timer
    if timer is not None and timer.active():
        # (not timer.reset(delay): moving a DelayedCall sooner searches
        # the reactor's whole timer heap)
        timer.cancel()
    conn.timer = f.clock.callLater(delay, conn.check_timeout)


def end_linger(conn):
    """Lingering is over: close (a reset if the client is still sending)."""
    t = conn.transport
    if t.dataBuffer or t._tempDataBuffer:
        # the response is still not flushed (the client does not read):
        # loseConnection would wait for it for ever
        t.abortConnection()
    else:
        # (at once if the write side is shut; if the kernel still holds
        # bytes the client does not read, Twisted waits for the socket to
        # be writable: bounded as any close)
        t.loseConnection()
        if t.connected:
            bound_flush(conn)


def unsent(t):
    """
    The bytes of a client connection not yet delivered: those its transport
    holds (a TLS one: its TCP transport's, encrypted) and those in the
    kernel's send queue (Linux ``TIOCOUTQ``; where it cannot be read, only
    the transport's count).
    """
    buffered = getattr(t, "dataBuffer", None)
    if buffered is None:
        t = getattr(t, "transport", None)      # (twisted.protocols.tls)
        buffered = getattr(t, "dataBuffer", None)
        if buffered is None:
            return 0
    held = len(buffered) - getattr(t, "offset", 0) + getattr(t, "_tempDataLen", 0)
    try:
        queued = struct.unpack("i", fcntl.ioctl(t.socket.fileno(), termios.TIOCOUTQ,
                                                b"\0\0\0\0"))[0]
    except (AttributeError, OSError, ValueError):
        queued = 0
    return held + queued


def bound_flush(conn):
    """
    The connection closes (``loseConnection``): Twisted closes it once its
    buffer is sent *and* the socket is writable again, so a client that
    reads none of its last response would hold it for ever.  As nginx's
    ``send_timeout``, the client has ``proxy.client_send_timeout`` seconds
    to take some of it (each time it does, as many more), else the
    connection is reset.  (Closed before, the connection cancels the timer.)
    """
    timer = conn.timer
    if timer is not None and timer.active():
        timer.cancel()
    conn.timer = conn.factory.clock.callLater(
        conn.factory.client_send_timeout, _flush_due, conn, unsent(conn.transport))


def _flush_due(conn, before):
    conn.timer = None
    t = conn.transport
    left = unsent(t)
    if left and left < before:
        conn.timer = conn.factory.clock.callLater(
            conn.factory.client_send_timeout, _flush_due, conn, left)
    else:
        t.abortConnection()


def drain(conn):
    """
    The proxy is stopping (:meth:`tproxy.http.server.ProxyFactory.drain`): the last request
    read is answered with ``Connection: close`` and the connection closes
    after it; nothing read after the requests being served is answered.

    - Idle, after a response (keep-alive) or accepted and silent so
      far: its next (or first) request may be on the way, sent before
      the client could see a close; it is answered, with ``Connection:
      close``, if it begins within :data:`DRAIN_FIRST_REQUEST` seconds,
      else the connection closes then.  (nginx's graceful quit closes
      idle keep-alive connections at once, and a busy client's next
      request meets a closed connection.)
    - Receiving a request head: the request is answered (the header
      timeout bounds the wait).
    - Serving requests: those read so far are answered, the last
      response with ``Connection: close``; if that response's head went
      out before the drain (keep-alive), the connection is idle after
      it, as above (:meth:`~tproxy.http.connection.ProxyProtocol.exchange_done`).
    """
    if conn.closing:
        return   # closing already (flushing or lingering)
    if conn.exchange is None:
        if conn.head_start is not None or conn.head_bytes:
            return   # a request is arriving: answered, then closed
        await_next_request(conn)
        return
    last = conn.queue[-1] if conn.queue else conn.exchange
    if isinstance(last, Exchange):
        if last.response_started:
            return   # said keep-alive already: idle after it
        # its response says Connection: close, and exchange_done closes
        # the connection after it
        last.close_after()
    if conn.reading is None:
        # every request read is whole: nothing more is parsed (bytes
        # that come now are dropped, and the close lingers)
        conn.parser = Stopped
        conn.head_start = None


def await_next_request(conn):
    """Draining and idle: the next request may begin within
    :data:`DRAIN_FIRST_REQUEST` seconds (see :func:`drain`)."""
    t = conn.timer
    if t is not None and t.active():
        t.cancel()
    conn.timer = conn.factory.clock.callLater(DRAIN_FIRST_REQUEST, _drain_wait_over, conn)


def _drain_wait_over(conn):
    """:data:`DRAIN_FIRST_REQUEST` has passed since :func:`drain`: a
    connection still silent closes; one whose request began goes on
    under its usual timeouts."""
    conn.timer = None
    if conn.exchange is None and conn.head_start is None and not conn.head_bytes:
        conn.close()
    else:
        conn.check_timeout()
