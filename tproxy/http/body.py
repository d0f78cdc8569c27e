# -*- test-case-name: tests.test_request_bodies -*-
"""
The request going up: its body from the client to the
upstream connection (held while no connection is ready, or while a plugin
reads its first bytes; kept for a retry, within ``proxy.retry_body_buffer``).

A part of :class:`tproxy.http.exchange.Exchange`, one of the chain of classes
it is made of (``FilterChain`` <- ``ResponseSide`` <- ``RequestBody`` <-
``UpstreamFailures`` <- ``Exchange``: one base each, as a compiled class
has, see :mod:`tproxy.compiled`); the state is the exchange's, see there.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from tproxy.context import Response
from tproxy.http.response import ResponseSide
from tproxy.http.wire import BadRequest

# (the exchange's lines, under its namespace)
log = Logger(namespace="tproxy.http.exchange")


class RequestBody(ResponseSide):
    """The request side of an :class:`~tproxy.http.exchange.Exchange`."""

    def limit_body(self, limit, size, hold):
        """
        The request has a body: at most ``limit`` bytes (``None``: no limit),
        ``size`` its Content-Length (``None``: chunked, counted as it comes);
        ``hold``: read it before connecting upstream (it may fit in
        ``proxy.client_body_buffer_size``).
        """
        self.body_limit = limit
        if size is not None:
            self.body_size = size   # checked against the limit after access
        self.hold_body = hold

    def _too_large(self):
        """``access`` let the request through, but its declared length is
        over the limit in force now (``ctx.max_body_size``, after the
        plugins: as nginx's client_max_body_size, known once the location
        is)."""
        self.ctx.error = "body_too_large"
        if self.factory.log_client_errors:
            # a client's error, as a malformed request (log_level "debug")
            log.debug("request body too large: {size} bytes for a limit of {limit}",
                      size=self.body_size, limit=self.body_limit)
        self.respond(Response.error(413, "request body too large"))

    def client_timed_out(self):
        """The client sent no body bytes for ``proxy.client_body_timeout``
        seconds: ``408`` (or the response is cut)."""
        self.ctx.error = "client_timeout"
        self.respond(Response.error(408, "request body timeout"))

    def refuse_body(self):
        """The body is past the limit (the client connection answers ``413``)."""
        self.ctx.error = "body_too_large"

    def client_body(self, data):
        """
        A piece of the request body arrived from the client.  Raises
        :class:`~tproxy.http.wire.BadRequest` (``413``) when a chunked body
        goes past the limit (decoded bytes count, whatever the chunks).
        """
        if self.request_chunked:
            self.body_size += len(data)
            if self.body_limit is not None and self.body_size > self.body_limit:
                self.ctx.error = "body_too_large"
                raise BadRequest(413, "request body too large")
        if self.done:
            return
        if self.upstream is not None:
            self._send_body(data)
        else:
            self.pending.append(bytes(data))
            self.pending_size += len(data)
            waiter = self.body_waiter
            if waiter is not None and self.pending_size >= waiter[0]:
                self._wake_body_waiter()
            if self.hold_body:
                if self.pending_size <= self.factory.body_buffer:
                    return   # (bounded by the buffer: reading goes on)
                # larger than the buffer: it streams from now on
                self.hold_body = False
                if self.held_peer is not None:
                    self._connect_held()
            if self.pending_size > self.pending_limit:
                self.conn.pause("pending")

    def read_body_prefix(self, n):
        """
        The first ``n`` bytes of the request body (fewer if it is shorter), as
        a Deferred; the bytes stay queued and go upstream unchanged.  Only
        before the balancer has connected (``rewrite``, ``access``,
        ``balancer``).  A client that stops sending gets ``408`` after
        ``proxy.client_body_timeout`` seconds.
        """
        if not self.body_expected:
            return succeed(b"")
        if self.upstream is not None:
            raise RuntimeError("read_body_prefix: the body is already going upstream")
        if self.pending_size >= n or self.request_complete:
            return succeed(b"".join(self.pending)[:n])
        if self.expect_continue:
            self.expect_continue = False
            self.conn.send_continue()
        d = Deferred()
        self.body_waiter = (n, d, self.factory.clock.callLater(
            self.factory.body_timeout, self._body_timed_out))
        self.pending_limit = max(self.pending_limit, n)
        if self.pending_size <= self.pending_limit:
            self.conn.unpause("pending")
        return d

    def _wake_body_waiter(self):
        n, d, timer = self.body_waiter
        self.body_waiter = None
        if timer.active():
            timer.cancel()
        d.callback(b"".join(self.pending)[:n])

    def _body_timed_out(self):
        n, d, timer = self.body_waiter
        self.body_waiter = None
        self.ctx.error = "client_timeout"
        self.respond(Response.error(408, "request body timeout"))
        d.cancel()

    def _send_body(self, data):
        if not self.body_lost:
            # kept (bounded: proxy.retry_body_buffer) to be sent again on a retry
            size = self.body_kept_size + len(data)
            if size <= self.factory.retry.body_buffer:
                if self.body_kept is None:
                    self.body_kept = []
                self.body_kept.append(bytes(data))
                self.body_kept_size = size
            else:
                self.body_lost = True
                self.body_kept = None
        self._write_body(data)

    def _write_body(self, data):
        if self.request_chunked:
            self.upstream.send([b"%x\r\n" % len(data), data, b"\r\n"], self.factory.send_timeout)
        else:
            self.upstream.send(data, self.factory.send_timeout)

    def client_body_end(self):
        """The request body is complete."""
        self.request_complete = True
        if self.body_waiter is not None:
            self._wake_body_waiter()
        if self.held_peer is not None:
            return self._connect_held()   # head, body and end in one write
        if self.upstream is not None and not self.done:
            if self.request_chunked:
                self.upstream.send(b"0\r\n\r\n", self.factory.read_timeout)
            else:
                self.upstream.set_deadline(self.factory.read_timeout)
