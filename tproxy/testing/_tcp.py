# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
In-memory TCP connections for :mod:`tproxy.testing`'s harnesses: a transport
that half-closes and resets as TCP does (:class:`_TCPTransport`), the pump
that moves its bytes, FINs, closes and resets (:class:`_TCPPump`), and what a
test does to its end of one (:class:`_ConnectionEnd`: half-close, close,
abort, and the ends it is told of).  The stream harness
(:mod:`tproxy.testing.stream`) and the HTTP harness's client connections
(:mod:`tproxy.testing.http`, :mod:`tproxy.testing.client`) are built on them.
"""

from twisted.internet import tcp
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from twisted.test import iosim

from tproxy.testing._network import _Transport


class _NoSocket(object):
    """
    The ``socket`` of a :class:`_TCPTransport`: it never takes a byte, so
    :func:`tproxy.fastio.install_fast_write` always falls back to the
    transport's own ``write`` (the in-memory buffer).
    """

    def send(self, data):
        raise BlockingIOError()

    def sendmsg(self, buffers):
        raise BlockingIOError()


class _TCPTransport(_Transport, tcp.Connection):
    """
    An iosim transport that behaves as a plain TCP connection towards the
    stream proxy: ``loseWriteConnection`` sends a FIN (a half-close),
    ``loseConnection`` sends the buffered bytes and a FIN then is gone,
    ``abortConnection`` is a reset (the peer sees ``ConnectionLost``).  It
    is a :class:`twisted.internet.tcp.Connection` by type only (never
    initialised as one) because :mod:`tproxy.stream` tells plain TCP, which
    can be half-closed, from TLS, which cannot, by type.  :class:`_TCPPump`
    moves its bytes and FINs.
    """

    socket = _NoSocket()
    _tempDataBuffer = ()
    write_closing = False   # no byte may be written any more: a FIN follows them
    fin_sent = False        # the FIN reached the other side
    closing = False         # once the FIN is sent, the connection is gone
    aborting = False        # reset: drop what is buffered, both sides lost
    pump = None             # the _TCPPump of the connection (told of each change)
    held = False            # the other end does not read: bytes written here stay here
    producer_paused = False  # the producer was told the buffer is full (see write)
    #: bytes held past which a streaming producer is paused, as a Twisted
    #: transport's ``bufferSize`` (64 KiB)
    buffer_size = 65536

    @property
    def dataBuffer(self):
        """The bytes written and not yet delivered (as a Twisted
        transport's buffer: what a peer that does not read leaves here)."""
        return b"".join(self.stream)

    def _changed(self):
        """Something is to move: the pump looks at the connection again."""
        if self.pump is not None:
            self.pump.quiet = False

    def write(self, data):
        if not (self.write_closing or self.disconnecting or self.disconnected):
            self.stream.append(data)
            self._changed()
            if self.held:
                self._check_full()

    def _check_full(self):
        """While the other end does not read: past :attr:`buffer_size`
        bytes held, the streaming producer is paused (as a transport whose
        socket takes no more does)."""
        producer = self.producer
        if (producer is not None and self.streamingProducer and not self.producer_paused
                and sum(len(b) for b in self.stream) > self.buffer_size):
            self.producer_paused = True
            producer.pauseProducing()

    def hold(self, held):
        """The other end stops reading (``True``): what is written here stays
        here; or reads again (``False``): it is delivered, and a producer
        paused meanwhile resumed."""
        self.held = held
        if held:
            self._check_full()
        self._changed()

    def loseWriteConnection(self):
        self.write_closing = True
        self._changed()

    def loseConnection(self):
        self.write_closing = self.closing = True
        self.disconnecting = True
        self._changed()

    def abortConnection(self):
        self.stream = []
        self.aborting = self.disconnecting = True
        self._changed()

    def registerProducer(self, producer, streaming):
        _Transport.registerProducer(self, producer, streaming)
        self._changed()

    def startTLS(self, contextFactory, beNormal=True):
        _Transport.startTLS(self, contextFactory, beNormal)
        self._changed()

    def _lost(self, reason):
        """Tell the protocol the connection is gone (once)."""
        if not self.disconnected:
            self.disconnected = self.disconnecting = True
            self.stream = []
            self.protocol.connectionLost(Failure(reason))

    def _eof(self):
        """The other side's FIN arrived."""
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            half.readConnectionLost()
        else:
            # as Twisted does: a protocol that cannot be half-closed is closed
            self.write_closing = self.closing = True
            self._lost(ConnectionDone("connection closed by the other side"))


class _TCPPump(iosim.IOPump):
    """
    Moves bytes, then FINs, then closes and resets between two
    :class:`_TCPTransport` s.  Bytes sent to a side that is gone reset the
    sender, as TCP does.

    ``quiet``: the last :meth:`pump` found nothing to do and nothing was
    asked of either transport since (a write, a FIN, a close, a reset, a
    producer), so pumping it again would do nothing: a harness's flush
    passes it by (a test holds dozens of idle keep-alive connections, each
    looked at in every round otherwise).  Never quiet while a side has a
    pull producer (resumed at every pump) or is negotiating TLS.
    """

    quiet = False

    def __init__(self, *args, **kwargs):
        iosim.IOPump.__init__(self, *args, **kwargs)
        self.clientIO.pump = self.serverIO.pump = self

    def may_rest(self):
        """Whether, having just moved nothing, the pump can be passed by
        until a transport is asked for something."""
        for io in (self.clientIO, self.serverIO):
            if (io.producer is not None and not io.streamingProducer) or io.tls is not None:
                return False
        return True

    def pump(self, debug=False, advanceClock=True):
        if advanceClock:
            self.clock.advance(0)
        a, b = self.clientIO, self.serverIO
        a._checkProducer()
        b._checkProducer()
        moved = False
        for src, dst in ((a, b), (b, a)):
            if src.held and not dst.disconnected:
                continue    # the other end does not read (see hold)
            data = src.getOutBuffer()
            if data:
                moved = True
                if dst.disconnected:
                    src._lost(ConnectionLost("connection reset by peer"))
                else:
                    dst.bufferReceived(data)
            if src.producer_paused and not src.disconnected:
                src.producer_paused = False
                if src.producer is not None:
                    src.producer.resumeProducing()
                moved = True
        if moved:
            return True
        for src, dst in ((a, b), (b, a)):
            if src.held and src.stream and not src.aborting:
                continue    # the FIN goes after the bytes held (see hold)
            if src.aborting and not src.disconnected:
                src._lost(ConnectionAborted())
                dst._lost(ConnectionLost("connection reset by peer"))
                return True
            if src.write_closing and not src.fin_sent:
                src.fin_sent = True
                if not dst.disconnected:
                    dst._eof()
                half = IHalfCloseableProtocol(src.protocol, None)
                if half is not None and not src.closing:
                    half.writeConnectionLost()
                return True
            if src.closing and src.fin_sent and not src.disconnected:
                src._lost(ConnectionDone())
                return True
        return False


class _ConnectionEnd(object):
    """
    What a test does to its end of an in-memory TCP connection; ``_act``
    runs it and moves the bytes that follow.
    """

    def half_close(self):
        """Send a FIN (``shutdown(SHUT_WR)``): no more bytes from this end."""
        self._act(self.transport.loseWriteConnection)

    def close(self):
        """Close: what was sent is delivered, then a FIN; this end is gone."""
        self._act(self.transport.loseConnection)

    def abort(self):
        """Reset the connection: unsent bytes are dropped (a client going away)."""
        self._act(self.transport.abortConnection)

    def stop_reading(self):
        """
        Stop reading, as a client that does not read its response: what the
        other end writes stays with it, and past 64 KiB its transport tells
        its producer it is full (``pauseProducing``, as when a socket's
        buffers fill), until :meth:`read_again`.
        """
        self._act(lambda: self._other_io().hold(True))

    def read_again(self):
        """Read again after :meth:`stop_reading`: what was held arrives."""
        self._act(lambda: self._other_io().hold(False))

    def _other_io(self):
        pump = self.transport.pump
        return pump.serverIO if pump.clientIO is self.transport else pump.clientIO

    # -- the protocol's end of it (IHalfCloseableProtocol) ----------------------

    def _ended(self):
        """The other end sent its last byte (a FIN, or the connection went)."""

    def readConnectionLost(self):
        self.eof = True
        self._ended()
        if self.close_on_eof:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.closed = True
        self.reset = reason.check(ConnectionDone) is None
        self._ended()
