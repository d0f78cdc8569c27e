# -*- test-case-name: tests.test_upgrade -*-
"""
``Upgrade`` requests (WebSocket and the protocols listed in
``proxy.upgrade_protocols``): the handshake as an HTTP request, then a byte
tunnel.

The life of an upgrade request::

    head read       Connection: upgrade and Upgrade naming a configured
                    protocol, no body, HTTP/1.1: an UpgradeExchange (and an
                    UpgradeRequestContext); the client is no longer read
                    (bytes it sent after the head are kept)
    rewrite, access, balancer   as for any request (auth, routing and
                    least-conn apply; a plugin's Response answers it)
    connect         always a new upstream connection, never a pooled one,
                    and it is never returned to the pool; the request goes
                    up with ``Connection: upgrade`` and its ``Upgrade``
    101             header_filter sees it; the head goes to the client with
                    ``Connection: upgrade`` and the upstream's ``Upgrade``;
                    then bytes are piped both ways (the stream pipe's
                    backpressure and half-close, :mod:`tproxy.stream.pipe`)
                    until both sides closed, one side reset, or nothing
                    moved for ``proxy.upgrade_idle_timeout`` seconds
    log             once, when both connections are closed; the peer's
                    count is held until then
    not 101         an ordinary response; the client connection goes on
                    as HTTP (closing after it if the client had sent bytes
                    behind the head: they were meant for the new protocol)

What nginx does with the usual configuration (``proxy_set_header Upgrade
$http_upgrade`` and ``Connection "upgrade"``) is to tunnel any protocol the
upstream agrees to; without those lines it drops both fields.  tproxy tunnels
the protocols listed (``["websocket"]`` by default) and, for any other
(``h2c`` ...), drops the fields and passes the request as a plain one, then
closes the connection, as nginx without the two lines.
"""

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from zope.interface import alsoProvides

from tproxy.context import RequestContext, ResponseHead
from tproxy.http.exchange import Exchange
from tproxy.http.headers import HOP_BY_HOP, Headers
from tproxy.stream.pipe import _half_closeable, _Reader

log = Logger()


class UpgradeRequestContext(RequestContext):
    """
    The context of a request that asked for a configured upgrade: a
    :class:`~tproxy.context.RequestContext` with three more fields.

    :ivar upgrade: the ``Upgrade`` value sent upstream (``str``,
        ``"websocket"``).
    :ivar upgrade_bytes_up: bytes the client sent through the tunnel (after
        the handshake; ``0`` if there was no ``101``).
    :ivar upgrade_bytes_down: bytes the upstream sent through the tunnel
        (also counted in ``bytes_sent``, with the ``101`` head).
    """

    __slots__ = ("upgrade", "upgrade_bytes_up", "upgrade_bytes_down")

    def __init__(self, gateway, request, request_id="", start=0.0, upgrade=""):
        RequestContext.__init__(self, gateway, request, request_id, start)
        self.upgrade = upgrade
        self.upgrade_bytes_up = 0
        self.upgrade_bytes_down = 0


def upgrade_offer(protocols, value, version, has_body):
    """
    The ``Upgrade`` value to send upstream for a request's ``value``
    (``bytes``), or ``None`` when the request is not tunneled: no protocol
    offered is in ``protocols`` (names, lower case), it has a body, or it
    is not HTTP/1.1.
    """
    if version != "1.1" or has_body or not protocols:
        return None
    kept = []
    for token in value.split(b","):
        token = token.strip(b" \t")
        if token and token.split(b"/", 1)[0].lower().decode("latin-1") in protocols:
            kept.append(token)
    return b", ".join(kept) if kept else None


class UpgradeExchange(Exchange):
    """
    An :class:`~tproxy.http.exchange.Exchange` for an upgrade request: it
    starts once the client parser reported the upgrade (:meth:`head_read`),
    uses a new upstream connection, and turns into a :class:`Tunnel` on a
    ``101``.
    """

    fresh_connection = True
    head_done = False      # the client parser reported the upgrade
    run_wanted = False     # run() was called before that
    early = b""            # client bytes read after the handshake head
    tunnel = None
    switch_head = None     # the filtered 101 head, sent
    switch_rest = None     # upstream bytes after the 101 head

    # -- the client side ------------------------------------------------------------

    def run(self):
        """Start the phases once the client parser has reported the upgrade
        (so the bytes after the head are known before any answer)."""
        if not self.head_done:
            self.run_wanted = True
            return
        Exchange.run(self)

    def head_read(self, rest):
        """The client parser reported the upgrade; ``rest`` follows the head."""
        self.head_done = True
        self.conn.hold_for_upgrade(bool(rest))
        if rest:
            self.early = bytes(rest)
            # not HTTP if the upstream refuses: the connection closes then
            self.response_close = True
        if self.run_wanted and not self.done:
            Exchange.run(self)

    def finish(self):
        """As :meth:`Exchange.finish`; a refused upgrade lets the client
        connection go on as HTTP (with a new parser)."""
        if self.done:
            return
        if self.tunnel is None and self.head_done:
            self.conn.upgrade_refused()
        Exchange.finish(self)

    def client_lost(self, error="client_abort"):
        """The client connection closed (or was cut)."""
        if self.tunnel is not None:
            return self.tunnel.client_lost(error)
        Exchange.client_lost(self, error)

    # -- the upstream side --------------------------------------------------------

    def upstream_connected(self, conn, reused):
        """A new connection: a ``101`` on it goes to :meth:`upstream_switching`."""
        conn.expect_upgrade()
        Exchange.upstream_connected(self, conn, reused)

    def upstream_head(self, status, reason, fields, upstream_keepalive):
        """A final response: ordinary, but its connection is not pooled."""
        eof_body = Exchange.upstream_head(self, status, reason, fields, False)
        self.upstream_keepalive = False
        return eof_body

    def upstream_lost(self, reason, was_reused, eof_body):
        """The upstream connection closed."""
        if self.tunnel is not None:
            return self.tunnel.upstream_lost(reason)
        Exchange.upstream_lost(self, reason, False, eof_body)

    def upstream_switching(self, reason, fields):
        """
        The upstream answered ``101``: ``header_filter`` sees it, then it goes
        to the client.  The tunnel starts once the head is sent and the bytes
        behind it are known (:meth:`upstream_switched`).
        """
        ctx = self.ctx
        kept = []
        upgrade = None
        connection = False
        for pair in fields:
            n = pair[0].lower()
            if n == b"upgrade":
                upgrade = pair[1]
            elif n == b"connection":
                connection = connection or b"upgrade" in [
                    t.strip(b" \t").lower() for t in pair[1].split(b",")]
            elif n not in HOP_BY_HOP:
                kept.append(pair)
        if not upgrade or not connection:
            # (as the pure-Python parser; llhttp would take any 101)
            raise ValueError("101 without Upgrade and Connection: upgrade")
        self.switch_upgrade = upgrade
        ctx.status = 101
        ctx.upstream_end = self.factory.clock.seconds()
        head = ResponseHead(101, Headers(kept), reason)
        if ctx.plugins.has_header_filter:
            self._filter_head(head, self._send_switch)
        else:
            self._send_switch(head)

    def _send_switch(self, head):
        if self.done:
            return
        if head.status != 101:
            # a header_filter turned it into something else: no tunnel
            head.reason = b""    # (not "Switching Protocols")
            self.response_close = True
            self._close_upstream()
            self._write_head(head, b"")
            return self.finish()
        self.response_started = True
        raw = head.headers.raw
        lines = [b"HTTP/1.1 101 %s\r\n" % (head.reason or b"Switching Protocols")]
        lines.extend([b"%s: %s\r\n" % p for p in raw])
        lines.append(b"Connection: upgrade\r\nUpgrade: %s\r\n\r\n" % self.switch_upgrade)
        data = b"".join(lines)
        self.ctx.bytes_sent += len(data)
        self._send(data)
        self.switch_head = head
        if self.switch_rest is not None:
            self._start_tunnel()

    def upstream_switched(self, rest):
        """The upstream parser reported the upgrade; ``rest`` follows the
        ``101`` head."""
        self.switch_rest = bytes(rest)
        if self.switch_head is not None and not self.done:
            self._start_tunnel()

    def _start_tunnel(self):
        up, self.upstream = self.upstream, None
        self.filter_chain = None
        self.tunnel = Tunnel(self, self.conn, up)
        self.tunnel.start(self.early, self.switch_rest)
        self.early = self.switch_rest = None


class Tunnel(object):
    """
    The bytes of an upgraded connection, piped both ways: each side's
    reading is the other side's producer (backpressure, see
    :mod:`tproxy.stream.pipe`), a FIN is passed on as a FIN, and the
    exchange finishes (``log``) once both connections are closed.

    :ivar exchange: the :class:`UpgradeExchange`.
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
        self._end("idle_timeout", abort=True)

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
