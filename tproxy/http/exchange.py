# -*- test-case-name: tests.test_proxy -*-
"""
One request's journey: phases, balancer and retries, the upstream exchange,
the response streamed back, and ``log`` exactly once.

An :class:`Exchange` sits between the client connection
(:class:`tproxy.http.connection.ProxyProtocol`) and an upstream connection
(:class:`tproxy.http.upstream.UpstreamProtocol`); both report to it by plain
method calls.  Bodies stream chunk by chunk in both directions: when one side
cannot take more, the other side's reading is paused.
"""

from twisted.internet.defer import Deferred

from tproxy.compiled import class_defaults
from tproxy.context import Response
from tproxy.http.exchange_failures import UpstreamFailures
from tproxy.http.upstream_head import upstream_request_head
from tproxy.phase_resume import PLAIN_TYPES, _chosen, _not_a_response, is_deferred
from tproxy.phase_walks import unchecked_source
from tproxy.registry import Peer


#: request bytes buffered while no upstream connection is ready
PENDING_BODY_LIMIT = 65536


class Exchange(UpstreamFailures):
    """
    The state of one request from its head to ``log``: the phases, the
    peer attempts, and the end (here); the request going up
    (:class:`~tproxy.http.body.RequestBody`); the response coming down
    (:class:`~tproxy.http.response.ResponseSide`); a failed attempt, the
    retry or the 502 / 504
    (:class:`~tproxy.http.exchange_failures.UpstreamFailures`).

    :ivar ctx: the :class:`tproxy.context.RequestContext`.
    :ivar response_started: the response head went to the client.
    :ivar done: ``log`` ran; nothing more happens.
    """

    def __init__(self, conn, ctx, keep_alive, body_expected, chunked,
                 expect_continue, upstream_head, host_missing=False):
        self.conn = conn
        self.ctx = ctx
        self.factory = self.conn.factory   # (a C field of the compiled connection)
        #: the phases of the gateway the request started with (a reload
        #: changes the factory's, not those of a request in flight; the
        #: factory's are its gateway's, ctx.gateway)
        self.phases = self.factory.phases
        #: ctx.request (read here once: the compiled exchange reads it from
        #: its own field, not by name)
        request = self.request = ctx.request
        #: ctx.plugins once the balancer is asked (see balance)
        self.plugins = None
        self.keep_alive = keep_alive           # the client wants to keep the connection
        self.body_expected = body_expected     # a request body follows the head
        self.request_chunked = chunked
        self.expect_continue = expect_continue
        self.upstream_head_fields = upstream_head  # request header pairs to forward
        self.request_complete = not body_expected
        if body_expected:
            self.pending = []                   # request body chunks not yet sent
            self.pending_limit = PENDING_BODY_LIMIT
            self.body_size = 0
        self.head_method = request.method == "HEAD"
        self.host_missing = host_missing   # (HTTP/1.0) the upstream gets the peer's
        # Every name an exchange sets on its way, and the defaults read on
        # every request, stored here, at once (CPython 3.11 does not
        # specialise reading a class attribute through an instance: each
        # such read takes the generic lookup, ~10 times the cost of a store
        # here).  All at once, not as the request goes: CPython 3.11 keeps an
        # instance's values inline (its reads and method calls specialised)
        # only for the names its class's instances added while there was
        # room: 30, one fewer for each instance made before a name is first
        # set.  Names first set later in a request, once several requests
        # were in flight, had every exchange's dict made (+4,400
        # instructions per request in the server, head11).  27 names here:
        # the others (a body's, a retry's ...) stay class defaults (below).
        self.done = False
        self.peer_held = None
        self.upstream = None
        self.reused = False
        self.out = None
        self.answered = False
        self.upstream_keepalive = False
        self.upstream_full = False
        self.response_started = False
        self.response_chunked = False
        self.response_close = False
        self.filter_chain = None
        self.held_chunk = None
        self.head_held = None   # the response head's bytes when held in self.out

    fresh_connection = False   # never a pooled connection (tproxy.http.tunnel)

    # -- told by the client connection ----------------------------------------

    def close_after(self):
        """The client connection closes after this response (said in its
        head if not sent yet)."""
        self.response_close = True

    def client_full(self):
        """The client does not take more bytes now: the upstream is not read,
        and its deadline is the client's (``proxy.client_send_timeout``,
        nginx's ``send_timeout``): the upstream's silence is tproxy's own."""
        up = self.upstream
        if up is not None:
            up.pause_reading()
            self.client_blocked = True
            up.set_deadline(self.factory.client_send_timeout)

    def client_drained(self):
        """The client takes bytes again: the upstream is read (unless a
        filter is busy), and its deadline is its own again."""
        up = self.upstream
        if up is not None:
            if self.client_blocked:
                self.client_blocked = False
                f = self.factory
                up.set_deadline(f.read_timeout if self.request_complete else f.send_timeout)
            if self.filter_chain is None:
                up.resume_reading()

    # -- phases ---------------------------------------------------------------

    def run(self):
        """Start the phases (the exchange is now the connection's active one)."""
        try:
            # (the walk read first: a function held by an instance is not
            # called through CPython 3.11's specialised method call)
            walk = self.phases.rewrite_access
            r = walk(self.ctx)
            if r is not None and not isinstance(r, Response) and not is_deferred(r):
                # (a tproxy.direct one's: unchecked)
                raise _not_a_response(unchecked_source(walk, self.ctx), r)
        except Exception:
            return self.plugin_error()
        if r is None:
            if (self.body_expected and self.body_limit is not None
                    and self.body_size > self.body_limit):
                return self._too_large()
            self.balance()
        elif is_deferred(r):
            self._await_phase(r, ("rewrite", "access"), self._after_access)
        else:
            self.respond(r)

    def _after_access(self, r):
        if r is None:
            if self.body_limit is not None and self.body_size > self.body_limit:
                return self._too_large()
            self.balance()
        else:
            self.respond(r)

    def balance(self):
        """Ask the balancer for a peer (again, after a failed one)."""
        try:
            ctx = self.ctx
            # (the route's phases are known now: the response side reads
            # them from here)
            plugins = self.plugins = ctx.plugins
            walk = plugins.run_balancer   # (see run)
            r = walk(ctx, ctx.tried)
            if r is not None and not isinstance(r, Peer) and not is_deferred(r):
                r = _chosen(walk, r)   # (a tproxy.direct one's: see run)
        except Exception:
            return self.plugin_error()
        if type(r) is not Deferred and (type(r) in PLAIN_TYPES or not is_deferred(r)):
            # (is_deferred inlined for the usual Peer)
            self._balanced(r)
        else:
            self._await_phase(r, ("balancer",), self._balanced)

    def _balanced(self, peer):
        if self.done:
            return
        ctx = self.ctx
        if peer is None:
            if self.last_failure is not None:
                return self.fail_upstream(*self.last_failure)
            ctx.error = "no_peer"
            if ctx.route is None:   # (no plugin gave the request a group)
                return self.respond(Response.error(503, "no live upstream"))
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
        if not self.request_complete and self.hold_body:
            # a body that may fit in proxy.client_body_buffer_size is read
            # first (see client_body): a malformed one never goes upstream
            self.held_peer = peer
            return
        if ctx.upstream_start is None:
            ctx.upstream_start = self.factory.seconds()
        # (fresh_connection, a class attribute, read only for a subclass's:
        # the compiled Exchange's own would be looked up by name)
        self.factory.pool.connect(peer, self,
                                  type(self) is not Exchange and self.fresh_connection)

    def _connect_held(self):
        """The held body is whole, or larger than the buffer: connect."""
        peer, self.held_peer = self.held_peer, None
        self.hold_body = False
        if not self.done:
            if self.ctx.upstream_start is None:
                self.ctx.upstream_start = self.factory.seconds()
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
        up = self.upstream   # (typed in the compiled build: C calls)
        self.reused = reused
        f = self.factory
        ctx = self.ctx
        body = None
        if self.body_expected and self.pending and self.request_complete:
            # the whole body is here (held, see _balanced): head and body in
            # one write, a chunked body framed by its length (as nginx)
            body = b"".join(self.pending)
            if self.request_chunked:
                self.request_chunked = False
                self.upstream_head_fields = self.upstream_head_fields.replace(
                    b"Transfer-Encoding: chunked\r\n", b"Content-Length: %d\r\n" % len(body))
            self.pending = []
            self.pending_size = 0
            if len(body) <= f.retry.body_buffer:
                # kept to be sent again on a retry (see _send_body)
                self.body_kept = [body]
                self.body_kept_size = len(body)
            else:
                self.body_lost = True
        request = self.request
        head = upstream_request_head(
            request.method.encode("ascii"), ctx.upstream_path, request.headers.raw,
            ctx.upstream_headers,
            # (HTTP/1.0 without Host goes up as HTTP/1.1: the peer's, as nginx's $proxy_host)
            ctx.peer.address.encode("latin-1") if self.host_missing else None,
            self.upstream_head_fields)
        if not self.body_expected:
            # (no body: nothing below applies)
            up.start(self, self.head_method, head, f.read_timeout)
            return
        if body is not None:
            up.start(self, self.head_method, head + body, f.read_timeout)
            self.conn.unpause("pending")
            return
        up.start(self, self.head_method, head,
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
                up.send(b"0\r\n\r\n", f.read_timeout)
            elif sent:
                up.set_deadline(f.read_timeout)

    def _close_upstream(self):
        up, self.upstream = self.upstream, None
        if up is not None:
            up.abort()
        self._release_peer()

    def upstream_writable(self, writable):
        """The upstream socket's send buffer filled (``False``) or drained:
        the client's body is not read meanwhile."""
        self.upstream_full = not writable
        if writable:
            self.conn.unpause("upstream")
        else:
            self.conn.pause("upstream")

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

    # -- the end ------------------------------------------------------------------

    def finish(self):
        """Release everything and run ``log``: exactly once."""
        if self.done:
            return
        self.done = True
        if self.filter_chain is not None:
            # a phase or a filter awaited: its plugin's work is cancelled
            # (its errback ends in plugin_error, which finds the exchange
            # done)
            self.filter_chain.cancel()
        if self.body_expected and self.body_waiter is not None:
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
        ctx.end = self.factory.seconds()
        plugins = self.plugins
        if plugins is None:   # (answered before the balancer)
            plugins = ctx.plugins
        if plugins.log:   # (nothing to call without a log plugin)
            plugins.run_log(ctx)
        # no reference cycle left: reference counting frees the request's
        # objects now, not the cyclic collector later
        ctx._exchange = None
        self.conn.exchange_done(self)


# Per-request state that starts the same for every request: class-level
# defaults of the pure-Python class, shadowed by an instance attribute when
# set (fewer stores on the hot path).  The compiled class's fields (declared
# in filters.pxd) start at None, False or 0 alike (body_size: a body's
# exchange sets it in __init__).
class_defaults(
    Exchange,
    pending_size=0,
    upstream=None,            # the UpstreamProtocol in use
    reused=False,
    peer_held=None,           # the peer whose count this exchange holds
    response_started=False,
    response_chunked=False,
    response_close=False,
    upstream_keepalive=False,
    last_failure=None,        # (error, status, message) of the last failed peer
    filter_chain=None,        # the Deferred of an awaited phase or filter
    body_waiter=None,         # (n, Deferred, timer) of read_body_prefix
    held_chunk=None,          # the last response chunk read (see upstream_body)
    body_limit=None,          # bytes the body may have (ctx.max_body_size)
    body_size=0,              # its Content-Length, or the chunked bytes read so far
    hold_body=False,          # read the body before connecting (it may fit)
    held_peer=None,           # the peer to connect to once the body is read
    host_missing=False,       # the request has no Host (see upstream_connected)
    body_kept=None,           # the body chunks sent upstream, kept for a retry
    body_kept_size=0,
    body_lost=False,          # body bytes went upstream and were not kept
    answered=False,           # the current attempt's response head came
    upstream_full=False,      # the upstream does not take the body now
    client_blocked=False,     # the client does not take the response now
    out=None,                 # response bytes held while an upstream read is
                              # parsed (see upstream_reading)
)
