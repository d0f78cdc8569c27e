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

The handshake is here (:func:`upgrade_offer`, :class:`UpgradeRequestContext`,
:class:`UpgradeExchange`); the bytes after the ``101`` are
:mod:`tproxy.http.tunnel_pipe`'s (:class:`~tproxy.http.tunnel_pipe.Tunnel`,
importable from here too).
"""

from tproxy.context import RequestContext, _UpstreamResponseHead
from tproxy.http.exchange import Exchange
from tproxy.http.headers import HOP_BY_HOP
from tproxy.http.tunnel_pipe import Tunnel


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

    def upstream_head(self, status, reason, fields, upstream_keepalive, cleaned=None):
        """A final response: ordinary, but its connection is not pooled."""
        eof_body = Exchange.upstream_head(self, status, reason, fields, False, cleaned)
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
        ctx.upstream_end = self.factory.seconds()
        head = _UpstreamResponseHead(101, reason, kept, None)
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
        raw = head._changed_fields()
        if raw is None:   # (the fields as received)
            raw = head._fields
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
