# -*- test-case-name: tests.test_proxy -*-
"""
One request's journey: phases, balancer and retries, the upstream exchange,
the response streamed back, and ``log`` exactly once.

An :class:`Exchange` sits between the client connection
(:class:`tproxy.http.server.ProxyProtocol`) and an upstream connection
(:class:`tproxy.http.upstream.UpstreamProtocol`); both report to it by plain
method calls.  Bodies stream chunk by chunk in both directions: when one side
cannot take more, the other side's reading is paused.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectingCancelledError, TimeoutError as TxTimeoutError
from twisted.logger import Logger

from tproxy.context import Response, ResponseHead, _UpstreamResponseHead
from tproxy.http.headers import Headers
from tproxy.http.wire import (BadRequest, clean_response_fields, content_length, local_response_head,
                              response_head, upstream_request_head)
from tproxy.phases import is_deferred

log = Logger()

#: request bytes buffered while no upstream connection is ready
PENDING_BODY_LIMIT = 65536

class Exchange(object):
    """
    The state of one request from its head to ``log``.

    :ivar ctx: the :class:`tproxy.context.RequestContext`.
    :ivar response_started: the response head went to the client.
    :ivar done: ``log`` ran; nothing more happens.
    """

    def __init__(self, conn, ctx, keep_alive, body_expected, chunked,
                 expect_continue, upstream_head, host_missing=False):
        self.conn = conn
        self.ctx = ctx
        self.factory = conn.factory
        #: the phases of the gateway the request started with (a reload
        #: changes the factory's, not those of a request in flight)
        self.phases = ctx.gateway.phases
        self.keep_alive = keep_alive           # the client wants to keep the connection
        self.body_expected = body_expected     # a request body follows the head
        self.request_chunked = chunked
        self.expect_continue = expect_continue
        self.upstream_head_fields = upstream_head  # request header pairs to forward
        self.request_complete = not body_expected
        self.pending = []                       # request body chunks not yet sent
        self.head_method = ctx.request.method == "HEAD"
        if host_missing:
            self.host_missing = True   # (HTTP/1.0) the upstream gets the peer's

    # Per-request state that starts the same for every request: class-level
    # defaults, shadowed by an instance attribute when set (fewer stores on
    # the hot path).
    pending_size = 0
    pending_limit = PENDING_BODY_LIMIT
    upstream = None            # the UpstreamProtocol in use
    reused = False
    peer_held = None           # the peer whose count this exchange holds
    response_started = False
    response_chunked = False
    response_close = False
    upstream_keepalive = False
    done = False
    last_failure = None        # (error, status, message) of the last failed peer
    filter_chain = None        # the Deferred of an async header/body filter
    body_waiter = None         # (n, Deferred, timer) of read_body_prefix
    held_chunk = None          # the last response chunk read (see upstream_body)
    body_limit = None          # bytes the body may have (ctx.max_body_size)
    body_size = 0              # its Content-Length, or the chunked bytes read so far
    hold_body = False          # read the body before connecting (it may fit)
    held_peer = None           # the peer to connect to once the body is read
    host_missing = False       # the request has no Host (see _request_head)
    body_kept = None           # the body chunks sent upstream, kept for a retry
    body_kept_size = 0
    body_lost = False          # body bytes went upstream and were not kept
    answered = False           # the current attempt's response head came
    upstream_full = False      # the upstream does not take the body now
    out = None                 # response bytes held while an upstream read is
                               # parsed (see upstream_reading)
    fresh_connection = False   # never a pooled connection (tproxy.http.tunnel)

    # -- told by the client connection ----------------------------------------

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

    def close_after(self):
        """The client connection closes after this response (said in its
        head if not sent yet)."""
        self.response_close = True

    def client_full(self):
        """The client does not take more bytes now: the upstream is not read."""
        if self.upstream is not None:
            self.upstream.pause_reading()

    def client_drained(self):
        """The client takes bytes again: the upstream is read (unless a
        filter is busy)."""
        if self.upstream is not None and self.filter_chain is None:
            self.upstream.resume_reading()

    def client_timed_out(self):
        """The client sent no body bytes for ``proxy.client_body_timeout``
        seconds: ``408`` (or the response is cut)."""
        self.ctx.error = "client_timeout"
        self.respond(Response.error(408, "request body timeout"))

    def refuse_body(self):
        """The body is past the limit (the client connection answers ``413``)."""
        self.ctx.error = "body_too_large"

    # -- phases ---------------------------------------------------------------

    def run(self):
        """Start the phases (the exchange is now the connection's active one)."""
        try:
            r = self.phases.rewrite_access(self.ctx)
        except Exception:
            return self.plugin_error()
        if r is None:
            if self.body_limit is not None and self.body_size > self.body_limit:
                return self._too_large()
            self.balance()
        elif is_deferred(r):
            r.addCallbacks(self._after_access, self.plugin_error)
        else:
            self.respond(r)

    def _after_access(self, r):
        if self.done:
            return
        if r is None:
            if self.body_limit is not None and self.body_size > self.body_limit:
                return self._too_large()
            self.balance()
        else:
            self.respond(r)

    def _too_large(self):
        """``access`` let the request through, but its declared length is
        over the limit in force now (``ctx.max_body_size``, after the
        plugins: as nginx's client_max_body_size, known once the location
        is)."""
        self.ctx.error = "body_too_large"
        log.info("request body too large: {size} bytes for a limit of {limit}",
                 size=self.body_size, limit=self.body_limit)
        self.respond(Response.error(413, "request body too large"))

    def balance(self):
        """Ask the balancer for a peer (again, after a failed one)."""
        try:
            r = self.phases.balancer(self.ctx, self.ctx.tried)
        except Exception:
            return self.plugin_error()
        if is_deferred(r):
            r.addCallbacks(self._balanced, self.plugin_error)
        else:
            self._balanced(r)

    def _balanced(self, peer):
        if self.done:
            return
        ctx = self.ctx
        if peer is None:
            if self.last_failure is not None:
                return self.fail_upstream(*self.last_failure)
            ctx.error = "no_peer"
            return self.respond(Response.error(
                503, "no live upstream", group=ctx.route))
        if isinstance(peer, Response):
            return self.respond(peer)
        ctx.peer = peer
        ctx.tried = ctx.tried + (peer,)
        peer.acquire()
        self.peer_held = peer
        if self.expect_continue and not self.request_complete:
            self.expect_continue = False
            self.conn.send_continue()
        if self.hold_body and not self.request_complete:
            # a body that may fit in proxy.client_body_buffer_size is read
            # first (see client_body): a malformed one never goes upstream
            self.held_peer = peer
            return
        if ctx.upstream_start is None:
            ctx.upstream_start = self.factory.clock.seconds()
        self.factory.pool.connect(peer, self, self.fresh_connection)

    def _connect_held(self):
        """The held body is whole, or larger than the buffer: connect."""
        peer, self.held_peer = self.held_peer, None
        self.hold_body = False
        if not self.done:
            if self.ctx.upstream_start is None:
                self.ctx.upstream_start = self.factory.clock.seconds()
            self.factory.pool.connect(peer, self, self.fresh_connection)

    def _release_peer(self):
        peer, self.peer_held = self.peer_held, None
        if peer is not None:
            peer.release()

    # -- upstream connection ------------------------------------------------

    def upstream_connected(self, conn, reused):
        """The pool has a connection for us: send the request."""
        if self.done:
            conn.release()
            return
        self.upstream = conn
        self.reused = reused
        f = self.factory
        if self.pending and self.request_complete:
            # the whole body is here (held, see _balanced): head and body in
            # one write, a chunked body framed by its length (as nginx)
            body = b"".join(self.pending)
            if self.request_chunked:
                self.request_chunked = False
                self.upstream_head_fields = self.upstream_head_fields.replace(
                    b"Transfer-Encoding: chunked\r\n", b"Content-Length: %d\r\n" % len(body))
            self.pending = []
            self.pending_size = 0
            if len(body) <= self.factory.retry.body_buffer:
                # kept to be sent again on a retry (see _send_body)
                self.body_kept = [body]
                self.body_kept_size = len(body)
            else:
                self.body_lost = True
            conn.start(self, self.head_method, self._request_head() + body, f.read_timeout)
            self.conn.unpause("pending")
            return
        conn.start(self, self.head_method, self._request_head(),
                   f.read_timeout if self.request_complete else f.send_timeout)
        sent = False
        if self.body_kept:
            # a retry: the body sent to the failed attempt goes again
            for chunk in self.body_kept:
                self._write_body(chunk)
            sent = True
        if self.pending:
            for chunk in self.pending:
                self._send_body(chunk)
            self.pending = []
            self.pending_size = 0
            self.conn.unpause("pending")
            sent = True
        if self.request_complete:
            if self.request_chunked:
                conn.send(b"0\r\n\r\n", f.read_timeout)
            elif sent:
                conn.set_deadline(f.read_timeout)

    def upstream_connect_failed(self, reason):
        """A new connection to the chosen peer failed: try the next peer."""
        if self.done:
            return
        timeout = reason.check(TxTimeoutError, ConnectingCancelledError) is not None
        why = reason.getErrorMessage()
        self.factory.health.failed(self.ctx.peer, "timeout" if timeout else "connect", why)
        self._retry("upstream_timeout" if timeout else "upstream_connect",
                    504 if timeout else 502,
                    "upstream connect timed out" if timeout else "upstream connection failed",
                    "timeout" if timeout else "error", False)

    def _retry(self, error, status, message, condition, sent):
        """
        The attempt failed: the next peer if ``proxy.next_upstream`` allows
        (:mod:`tproxy.http.retry`), else the end of the request.
        ``condition`` is the failure's ``next_upstream`` condition (``None``:
        already checked), ``sent`` whether the request went upstream.
        """
        # no line per attempt: the health state logs the peer's changes of
        # state and keeps its last error (an outage of a busy peer is not a
        # line per request; ctx.error tells the access log)
        self._close_upstream()
        self.last_failure = (error, status, message)
        if self._may_retry(condition, sent):
            self.answered = False
            self.balance()
        else:
            self.fail_upstream(error, status, message)

    def _untried_left(self):
        """Whether the request's group has a peer not tried yet (a response
        is dropped for a retry only then: the last one goes to the client)."""
        ctx = self.ctx
        group = ctx.gateway.registry.group(ctx.route) if ctx.route else None
        return group is not None and len(group.peers) > len(ctx.tried)

    def _may_retry(self, condition, sent):
        if self.response_started or self.done:
            return False
        policy = self.factory.retry
        if condition is not None and condition not in policy.conditions:
            return False
        if sent and (self.body_lost or not policy.may_resend(self.ctx.request.method)):
            return False
        ctx = self.ctx
        if len(ctx.tried) >= policy.tries:
            return False
        if policy.timeout and ctx.upstream_start is not None and \
                self.factory.clock.seconds() - ctx.upstream_start >= policy.timeout:
            return False
        return True

    def fail_upstream(self, error, status, message):
        """End the request with an upstream error (502/504), or cut it short."""
        ctx = self.ctx
        ctx.error = error
        if ctx.upstream_end is None and ctx.upstream_start is not None:
            ctx.upstream_end = self.factory.clock.seconds()
        self._close_upstream()
        if self.response_started:
            self.response_close = True
            self._abort_client()
            self.finish()
        else:
            self.respond(Response.error(status, message, upstream=ctx.upstream_addr))

    def _close_upstream(self):
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abort()
        self._release_peer()

    def upstream_lost(self, reason, was_reused, eof_body):
        """
        The upstream connection closed: the end of a body delimited by the
        close (``eof_body``), or before the response was complete.
        """
        if self.done:
            return
        if eof_body and self.response_started:
            return self.upstream_end()
        self.upstream = None
        if not self.response_started and not self.answered:
            if (was_reused and self.reused and not self.body_lost
                    and self.factory.retry.may_resend(self.ctx.request.method)):
                # a kept-alive connection the peer had closed while idle: once
                # more on a fresh one (not a try, not the peer's failure)
                self.reused = False
                self.factory.pool.connect(self.ctx.peer, self, fresh=True)
                return
            self.factory.health.failed(self.ctx.peer, "error",
                                       "connection lost before the response")
            return self._retry("upstream_error", 502, "upstream closed the connection",
                               "error", True)
        self.fail_upstream("upstream_error", 502, "upstream closed the connection")

    def upstream_invalid(self, exc):
        """The upstream sent something that is not HTTP."""
        if self.done:
            return
        log.info("invalid response from {peer}: {exc}", peer=self.ctx.upstream_addr, exc=exc)
        self.upstream = None
        self.factory.health.failed(self.ctx.peer, "invalid", str(exc))
        if self.answered:
            return self.fail_upstream("upstream_invalid", 502, "invalid response from upstream")
        self._retry("upstream_invalid", 502, "invalid response from upstream",
                    "invalid_header", True)

    def upstream_writable(self, writable):
        """The upstream socket's send buffer filled (``False``) or drained:
        the client's body is not read meanwhile."""
        self.upstream_full = not writable
        if writable:
            self.conn.unpause("upstream")
        else:
            self.conn.pause("upstream")

    def upstream_head_too_big(self, limit):
        """The response head passed ``limit`` bytes: 502."""
        if not self.done:
            log.info("upstream {peer} sent too big header (more than {limit} bytes)",
                     peer=self.ctx.upstream_addr, limit=limit)
            self.fail_upstream("upstream_header_too_big", 502, "upstream sent too big header")

    def upstream_timed_out(self):
        """The upstream connection's deadline passed (see ``set_deadline``)."""
        if self.done:
            return
        if not self.request_complete and not self.upstream_full:
            # the upstream takes the body, the client stopped sending it:
            # not the upstream's fault (nginx: client_body_timeout, 408)
            self.ctx.error = "client_timeout"
            return self.respond(Response.error(408, "request body timeout"))
        self.factory.health.failed(self.ctx.peer, "timeout", "upstream timed out")
        if self.answered:
            return self.fail_upstream("upstream_timeout", 504, "upstream timed out")
        self._retry("upstream_timeout", 504, "upstream timed out", "timeout", True)

    # -- the request going up ---------------------------------------------------

    def _request_head(self):
        ctx = self.ctx
        return upstream_request_head(
            ctx.request.method.encode("ascii"), ctx.upstream_path, ctx.request.headers.raw, ctx.upstream_headers,
            ctx.peer.address.encode("latin-1") if self.host_missing else None,
            self.upstream_head_fields)

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

    def client_lost(self, error="client_abort"):
        """The client went away before the response was complete (or tproxy
        cut the connection: ``error`` ``"shutdown"``)."""
        if self.done:
            return
        self.ctx.error = error
        if self.ctx.status == 0:
            self.ctx.status = 499 if error == "client_abort" else 503
        self._close_upstream()
        self.finish()

    # -- the response coming down -----------------------------------------------

    def upstream_head(self, status, reason, fields, upstream_keepalive):
        """
        The upstream's response head (1xx excluded).

        :return: whether the body is delimited by the connection's close (no
            Content-Length, no Transfer-Encoding, and a body is allowed).
        """
        ctx = self.ctx
        if status >= 429:
            peer = ctx.peer
            health = self.factory.health
            if status in health.statuses:
                health.failed(peer, "status", status)
            elif peer.health is not None:
                health.succeeded(peer)
            if (status in self.factory.retry.statuses and self._may_retry(None, True)
                    and self._untried_left()):
                self._retry("upstream_status", 502, "upstream answered %d" % status,
                            None, True)
                return False
        elif ctx.peer.health is not None:
            self.factory.health.succeeded(ctx.peer)
        self.answered = True
        try:
            kept, length, framed = clean_response_fields(fields)
        except ValueError as e:
            return self._bad_upstream_head(str(e))
        eof_body = not framed and status not in (204, 304) and not self.head_method
        self.upstream_keepalive = upstream_keepalive and not eof_body
        head = _UpstreamResponseHead(status, Headers(kept), reason)
        ctx.status = status
        if ctx.plugins.has_header_filter:
            self._filter_head(head, self._send_upstream_head)
        else:
            self._send_upstream_head(head, length)
        return eof_body

    def _bad_upstream_head(self, what):
        """A response head tproxy cannot pass on: 502, the connection dropped."""
        log.info("invalid response from {peer}: {what}", peer=self.ctx.upstream_addr,
                 what=what)
        self.factory.health.failed(self.ctx.peer, "invalid", what)
        self.answered = False
        self._retry("upstream_invalid", 502, "invalid response from upstream",
                    "invalid_header", True)
        return False

    def _send_upstream_head(self, head, length=False):
        """Frame and send an upstream response head; ``length`` is its
        Content-Length if known (``False``: look, a filter may have changed it)."""
        if self.done:
            return
        if length is False:
            length = content_length(head.headers.raw)
        body_allowed = head.status not in (204, 304) and not self.head_method
        if not self.request_complete:
            # an early response (413 ...): the connection closes after it,
            # as for responses made here; say so
            self.response_close = True
        if length is None and body_allowed:
            if self.ctx.request.version == "1.1":
                self.response_chunked = True
            else:
                self.response_close = True
        self._write_head(head, None)

    def _filter_head(self, head, then):
        try:
            r = self.phases.header_filter(self.ctx, head)
        except Exception:
            return self.plugin_error()
        if r is not None and is_deferred(r):
            if self.upstream is not None:
                self.upstream.pause_reading()
            self.filter_chain = r
            r.addCallback(lambda _: then(head))
            r.addCallback(self._resume_upstream)
            r.addErrback(self.plugin_error)
        else:
            then(head)

    def _resume_upstream(self, _=None):
        self.filter_chain = None
        if self.upstream is not None and not self.done:
            self.upstream.resume_reading()

    def _write_head(self, head, body):
        """Write the status line and headers to the client (framing added here)."""
        self.response_started = True
        ctx = self.ctx
        status = head.status
        ctx.status = status
        keep = self.keep_alive and not self.response_close and self.conn.can_keep_alive()
        if not keep:
            self.response_close = True
        http10 = ctx.request.version == "1.0"
        if body is None:
            data = response_head(status, head.reason, head.headers.raw,
                                 self.response_chunked, self.response_close, http10)
        else:
            data = local_response_head(status, head.reason, head.headers.raw, body,
                                       self.response_close, http10)
            if body and not self.head_method and status != 204:
                data += body
        ctx.bytes_sent += len(data)
        out = self.out
        if out is not None:
            out.append(data)
        else:
            self.conn.write(data)

    def upstream_body(self, data):
        """A piece of the response body from the upstream."""
        if self.done:
            return
        if self.ctx.plugins.has_body_filter:
            # held until the end of the upstream read being parsed: when the
            # response ends in the same read, body_filter gets the last
            # chunk with eof=True, so a body read at once is one call per
            # plugin
            held, self.held_chunk = self.held_chunk, data
            if held is not None:
                self._filter_body(held, False)
            return
        if self.filter_chain is not None:
            # the head is still in header_filter: the body waits for it
            self.filter_chain.addCallback(lambda _: self._send_response_body(data))
            return
        # (_send_response_body inlined: once per upstream read)
        if data:
            self.ctx.bytes_sent += len(data)
            out = self.out
            if self.response_chunked:
                if out is not None:
                    out.extend((b"%x\r\n" % len(data), data, b"\r\n"))
                else:
                    self.conn.write_all([b"%x\r\n" % len(data), data, b"\r\n"])
            elif out is not None:
                out.append(data)
            else:
                self.conn.write(data)

    def upstream_reading(self):
        """An upstream read is about to be parsed: the response bytes it
        makes (head, body, end) are held, to leave in one write
        (:meth:`upstream_read_done`, or :meth:`finish`)."""
        self.out = []

    def upstream_read_done(self):
        """The upstream read is parsed: the chunk held for ``body_filter``
        goes through it (the response goes on), and what the read made goes
        to the client."""
        held = self.held_chunk
        if held is not None:
            self.held_chunk = None
            if not self.done:
                self._filter_body(held, False)
        out = self.out
        if out is not None:
            self.out = None
            if out:
                self.conn.write_all(out)

    def _send(self, data):
        """Bytes to the client (held while an upstream read is parsed)."""
        out = self.out
        if out is not None:
            out.append(data)
        else:
            self.conn.write(data)

    def _abort_client(self):
        """Cut the client connection: the response cannot be completed."""
        self.out = None
        self.conn.abort()

    def _send_response_body(self, data):
        if not data or self.done:
            return
        self.ctx.bytes_sent += len(data)
        if self.response_chunked:
            data = [b"%x\r\n" % len(data), data, b"\r\n"]
            if self.out is not None:
                self.out.extend(data)
            else:
                self.conn.write_all(data)
        else:
            self._send(data)

    def _filter_body(self, data, eof):
        if self.done:
            # (a failed filter leaves filter_chain set: queuing behind it
            # again would loop for ever)
            return
        if self.filter_chain is not None:
            # an earlier chunk is still being filtered: keep the order
            self.filter_chain.addCallback(lambda _: self._filter_body(data, eof))
            return
        if type(data) is not bytes:
            data = bytes(data)
        try:
            r = self.phases.body_filter(self.ctx, data, eof)
        except Exception:
            return self.plugin_error()
        if is_deferred(r):
            if self.upstream is not None:
                self.upstream.pause_reading()
            self.filter_chain = r
            r.addCallback(self._send_filtered, eof)
            r.addCallback(self._resume_upstream)
            r.addErrback(self.plugin_error)
        else:
            self._send_response_body(r)
            if eof:
                self._end_response()

    def _send_filtered(self, data, eof):
        self._send_response_body(data)
        if eof:
            self._end_response()

    def upstream_end(self):
        """The upstream response is complete."""
        if self.done:
            return
        self.ctx.upstream_end = self.factory.clock.seconds()
        up, self.upstream = self.upstream, None
        if up is not None:
            peer = self.ctx.peer
            if (self.upstream_keepalive and self.request_complete
                    and self.factory.pool.max_idle
                    and peer.group.peers.get(peer.key) is peer):
                # (a peer removed meanwhile keeps no idle connection)
                up.release()
            else:
                up.abort()
        peer, self.peer_held = self.peer_held, None   # (_release_peer inlined)
        if peer is not None:
            peer.release()
        if self.ctx.plugins.has_body_filter:
            held, self.held_chunk = self.held_chunk, None
            return self._filter_body(b"" if held is None else held, True)
        if self.filter_chain is not None:
            # the head is still in header_filter
            self.filter_chain.addCallback(lambda _: self._end_response())
            return
        self._end_response()

    def _end_response(self):
        if self.done:
            return
        if self.response_chunked:
            self.ctx.bytes_sent += 5
            self._send(b"0\r\n\r\n")
        self.finish()

    # -- responses made here ------------------------------------------------------

    def respond(self, response):
        """Send a response made by tproxy or a plugin; no upstream (any more)."""
        if self.done:
            return
        if self.response_started:
            self._abort_client()
            return self.finish()
        self._close_upstream()
        head = ResponseHead(response.status, response.headers)
        self.ctx.status = response.status
        body = response.body
        if not self.request_complete:
            self.response_close = True   # the unread body would be taken for a request
        if self.ctx.plugins.has_header_filter:
            return self._filter_head(head, lambda h: self._send_local(h, body))
        self._send_local(head, body)

    def _send_local(self, head, body):
        if self.done:
            return
        if self.ctx.plugins.has_body_filter:
            try:
                r = self.phases.body_filter(self.ctx, body, True)
            except Exception:
                return self.plugin_error()
            if is_deferred(r):
                return r.addCallbacks(lambda b: self._send_local_now(head, b),
                                      self.plugin_error)
            body = r
        self._send_local_now(head, body)

    def _send_local_now(self, head, body):
        if self.done:
            return
        self.response_chunked = False
        self._write_head(head, body)
        self.finish()

    def plugin_error(self, failure=None):
        """A hook raised: 500 JSON if nothing was sent yet, else cut the response."""
        if self.done:
            return
        # failure=None: called from an except block, log.failure finds it
        log.failure("plugin error in {method} {uri}", failure,
                    method=self.ctx.request.method, uri=self.ctx.request.uri)
        self.ctx.error = "plugin_error"
        self.response_close = True
        self._close_upstream()
        if self.response_started:
            self._abort_client()
            return self.finish()
        # no filters: they may be what failed
        error = Response.error(500, "internal error in a plugin")
        self._send_local_now(ResponseHead(500, error.headers), error.body)

    # -- the end ------------------------------------------------------------------

    def finish(self):
        """Release everything and run ``log``: exactly once."""
        if self.done:
            return
        self.done = True
        if self.body_waiter is not None:
            n, d, timer = self.body_waiter
            self.body_waiter = None
            if timer.active():
                timer.cancel()
            d.cancel()
        if self.upstream is not None or self.peer_held is not None:
            self._close_upstream()
        conn = self.conn
        out = self.out
        if out is not None:
            # the response ended in an upstream read: it leaves now, before
            # the connection goes on
            self.out = None
            if out:
                conn.write_all(out)
        if self.upstream_full:
            # the upstream connection is gone or pooled: it will not report
            # being writable to this exchange again, so it holds no pause
            self.upstream_full = False
            conn.unpause("upstream")
        ctx = self.ctx
        ctx.end = self.factory.clock.seconds()
        if ctx.plugins.log:   # (nothing to call without a log plugin)
            self.phases.log(ctx)
        # no reference cycle left: reference counting frees the request's
        # objects now, not the cyclic collector later
        ctx._exchange = None
        self.conn.exchange_done(self)
