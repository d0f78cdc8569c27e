# -*- test-case-name: tests.test_upgrade -*-
"""
The byte tunnel of an upgraded connection (:mod:`tproxy.http.tunnel`): after
the ``101``, the client's and the upstream's bytes piped both ways with the
stream pipe's backpressure and half-close (:mod:`tproxy.stream.pipe`), until
both sides closed, one side reset, or nothing moved for
``proxy.upgrade_idle_timeout`` seconds; then the exchange's ``log``.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from zope.interface import alsoProvides

from tproxy.stream.pipe import _half_closeable, _Reader

# (the namespace of the upgrade requests' lines, as before this module)
log = Logger(namespace="tproxy.http.tunnel")


class Tunnel(object):
    """
    The bytes of an upgraded connection, piped both ways: each side's
    reading is the other side's producer (backpressure, see
    :mod:`tproxy.stream.pipe`), a FIN is passed on as a FIN, and the
    exchange finishes (``log``) once both connections are closed.

    :ivar exchange: the :class:`~tproxy.http.tunnel.UpgradeExchange`.
    """

    client_eof = False
    upstream_eof = False
    client_gone = False
    upstream_gone = False
    ending = False
    client_clean = False
    timer = None

    def __init__(self, exchange, client, upstream):
        self.exchange = exchange
        self.ctx = exchange.ctx
        self.client = client
        self.upstream = upstream
        f = exchange.factory
        self.clock = f.clock
        self.idle_timeout = f.upgrade_idle_timeout

    def start(self, early, rest):
        """Take both connections over and send what each side sent early."""
        c, u = self.client, self.upstream
        ct, ut = c.transport, u.transport
        c.hand_over()         # no more HTTP on it, no timer
        u.hand_over()         # (its timer and parser are done with)
        # the protocols' own methods give way to the tunnel's
        c.dataReceived = self.client_data
        c.readConnectionLost = self.client_read_lost
        c.writeConnectionLost = _nothing
        c.connectionLost = self._client_connection_lost
        alsoProvides(c, IHalfCloseableProtocol)
        u.dataReceived = self.upstream_data
        u.readConnectionLost = self.upstream_read_lost
        u.writeConnectionLost = _nothing
        u.connectionLost = self._upstream_connection_lost
        alsoProvides(u, IHalfCloseableProtocol)
        self.client_reader = _Reader(ct)
        self.upstream_reader = _Reader(ut)
        ct.unregisterProducer()
        ut.unregisterProducer()
        ct.registerProducer(self.upstream_reader, True)
        ut.registerProducer(self.client_reader, True)
        self.last = self.clock.seconds()
        self.timer = self.clock.callLater(self.idle_timeout, self._idle_check)
        if early:
            self.client_data(early)
        if rest:
            self.upstream_data(rest)
        c.read_again()
        u.read_again()

    # -- bytes -------------------------------------------------------------------

    def client_data(self, data):
        """Bytes from the client: to the upstream."""
        if self.ending:
            return
        self.ctx.upgrade_bytes_up += len(data)
        self.last = self.clock.seconds()
        self.upstream.transport.write(data)

    def upstream_data(self, data):
        """Bytes from the upstream: to the client."""
        if self.ending:
            return
        n = len(data)
        ctx = self.ctx
        ctx.upgrade_bytes_down += n
        ctx.bytes_sent += n
        self.last = self.clock.seconds()
        self.client.transport.write(data)

    # -- closing -------------------------------------------------------------------

    def client_read_lost(self):
        """The client sent its FIN: the upstream gets one after the bytes
        before it."""
        self.client_reader.closed = True
        self.client_eof = True
        if self.ending:
            return
        ut = self.upstream.transport
        ut.unregisterProducer()
        ut.loseWriteConnection()
        self._maybe_both_eof()

    def upstream_read_lost(self):
        """The upstream sent its FIN: the client gets one (or, over TLS, the
        connection closes once the bytes before it are sent)."""
        self.upstream_reader.closed = True
        self.upstream_eof = True
        if self.ending:
            return
        ct = self.client.transport
        if not _half_closeable(ct):
            return self._end(None, abort=False)
        ct.unregisterProducer()
        ct.loseWriteConnection()
        self._maybe_both_eof()

    def _maybe_both_eof(self):
        if self.client_eof and self.upstream_eof:
            self._end(None, abort=False)

    def _client_connection_lost(self, reason):
        # (how the connection closed: the exchange is only told a name)
        self.client_clean = reason.check(ConnectionDone) is not None
        type(self.client).connectionLost(self.client, reason)

    def client_lost(self, error):
        """The client connection is closed (``error``: how the exchange
        would name its loss)."""
        self.client_gone = True
        self.client_reader.closed = True
        if not self.ending:
            # closed before both FINs were through: a reset, tproxy stopping
            # ("shutdown"), or a transport that cannot half-close (TLS)
            if error == "client_abort" and self.client_clean:
                error = None
            self._end(error, abort=True)
        self._maybe_finish()

    def _upstream_connection_lost(self, reason):
        self.upstream.parser = None
        self.upstream_lost(reason)

    def upstream_lost(self, reason):
        """The upstream connection is closed."""
        self.upstream_gone = True
        self.upstream_reader.closed = True
        if not self.ending:
            clean = reason.check(ConnectionDone) is not None
            # what the upstream sent is flushed to the client first
            self._end(None if clean else "upstream_reset", abort=False)
        self._maybe_finish()

    def _idle_check(self):
        self.timer = None
        if self.ending:
            return
        left = self.last + self.idle_timeout - self.clock.seconds()
        if left > 0:
            self.timer = self.clock.callLater(left, self._idle_check)
            return
        log.info("upgraded connection idle for {timeout}s: closed",
                 timeout=self.idle_timeout)
        # closed, not reset (nginx's proxy_read_timeout): a FIN after what
        # is buffered, the flush bounded as any end's
        self._end("idle_timeout", abort=False)

    def _end(self, error, abort):
        """Close both sides (gracefully: what is buffered is sent first);
        ``log`` runs once both are closed."""
        if not self.ending:
            self.ending = True
            if error is not None:
                self.ctx.error = error
        elif not abort:
            return
        for gone, t in ((self.client_gone, self.client.transport),
                        (self.upstream_gone, self.upstream.transport)):
            if not gone and t.connected:
                t.unregisterProducer()
                if abort:
                    t.abortConnection()
                else:
                    t.loseConnection()
        if self.timer is None and not (self.client_gone and self.upstream_gone):
            # bounds the flush of a side that does not read
            self.timer = self.clock.callLater(self.idle_timeout, self._end_flush)
        self._maybe_finish()

    def _end_flush(self):
        self.timer = None
        self._end(None, abort=True)

    def _maybe_finish(self):
        if self.client_gone and self.upstream_gone:
            t, self.timer = self.timer, None
            if t is not None and t.active():
                t.cancel()
            self.exchange.finish()


def _nothing():
    pass
