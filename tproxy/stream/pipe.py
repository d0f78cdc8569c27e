# -*- test-case-name: tests.test_stream -*-
"""
The byte pipe's flow control: each connection's reading side as the
streaming producer of the other side's transport (backpressure), whether a
transport can be half-closed, and how a TLS client's close is told from a
reset.  The pipe itself is described in :mod:`tproxy.stream`.
"""

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

#: Client bytes kept while the upstream connection is not ready; past this the
#: client is not read until it is.
PENDING_LIMIT = 65536

# why a reader is not read
_FULL = 1       # the other side's write buffer is full
_WAITING = 2    # (client) no upstream yet and PENDING_LIMIT reached


def _half_closeable(transport):
    """
    Whether ``transport`` can shut down its writing side alone: plain TCP and
    UNIX sockets can; TLS cannot (a wrapping protocol even claims the
    interfaces of the socket under it, hence the type test).
    """
    return isinstance(transport, tcp.Connection) and not transport.TLS


def _watch_tls_close(transport, session):
    """
    If ``transport`` is TLS over TCP, set ``session.tls_fin`` when the TCP
    connection under it ends with a FIN, even one without ``close_notify``
    (what many TLS clients send, redis-cli among them; nginx counts it a
    close): Twisted reports that as ``ConnectionLost``, as it does a reset,
    and only the TCP connection's own reason tells them apart.
    """
    tcp_connection = getattr(transport, "transport", None)
    if _half_closeable(transport) or not _half_closeable(tcp_connection):
        return
    lost = transport.connectionLost

    def connectionLost(reason):
        del transport.connectionLost     # (no cycle left behind)
        session.tls_fin = reason.check(ConnectionDone) is not None
        return lost(reason)
    transport.connectionLost = connectionLost


@implementer(IPushProducer)
class _Reader(object):
    """
    The reading side of one connection, as the producer of the other side's
    transport.  It is read only while no reason to pause holds and its read
    side is open (a transport whose FIN arrived must not be read again).
    """

    __slots__ = ("transport", "paused", "closed")

    def __init__(self, transport):
        self.transport = transport
        self.paused = 0
        self.closed = False

    def pause(self, why):
        if not self.paused and not self.closed:
            self.transport.pauseProducing()
        self.paused |= why

    def resume(self, why):
        if self.paused & why:
            self.paused &= ~why
            if not self.paused and not self.closed:
                self.transport.resumeProducing()

    def pauseProducing(self):
        self.pause(_FULL)

    def resumeProducing(self):
        self.resume(_FULL)

    def stopProducing(self):
        # the consumer's connection is gone: its own connectionLost tells the
        # session, which closes this side
        pass

