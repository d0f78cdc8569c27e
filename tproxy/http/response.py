# -*- test-case-name: tests.test_proxy_streaming -*-
"""
The response coming down: the upstream's head cleaned and framed, passed
through the ``header_filter`` and ``body_filter`` phases
(:mod:`tproxy.http.filters`), the body streamed to the client, and the
responses tproxy or a plugin makes (errors, ``access`` denials).

The bytes one upstream read makes (head, body, end) are held and leave in one
write (:meth:`ResponseSide.upstream_reading`).

A part of :class:`tproxy.http.exchange.Exchange` (a base class of it, see
:mod:`tproxy.http.body`: the state is the exchange's, see there).
"""

from twisted.logger import Logger
from twisted.python.failure import Failure

from tproxy.context import Response, ResponseHead, _UpstreamResponseHead
from tproxy.http.dates import date_line, has_date
from tproxy.http.filters import FilterChain
from tproxy.http.response_fields import block_fields, clean_response_fields
from tproxy.http.wire import content_length, local_response_head, response_head
from tproxy.phase_resume import is_deferred

log = Logger(namespace=__name__)   # (a compiled module has no frame to take it from)


class ResponseSide(FilterChain):
    """The response side of an :class:`~tproxy.http.exchange.Exchange`
    (its filters: :class:`~tproxy.http.filters.FilterChain`)."""

    def upstream_head(self, status, reason, fields, upstream_keepalive, cleaned=None):
        """
        The upstream's response head (1xx excluded): its ``(name, value)``
        ``fields``, or ``cleaned``, what
        :func:`~tproxy.http.response_fields.clean_response_block` made of a head read
        whole (``fields`` is then ``None``).

        :return: whether the body is delimited by the connection's close (no
            Content-Length, no Transfer-Encoding, and a body is allowed).
        """
        ctx = self.ctx
        peer = self.peer_held   # (ctx.peer, not read by name)
        if status >= 429:
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
        elif peer.health is not None:
            self.factory.health.succeeded(peer)
        self.answered = True
        if cleaned is None:
            try:
                kept, length, framed, lines, dated = clean_response_fields(fields)
            except ValueError as e:
                return self._bad_upstream_head(str(e))
        else:
            # (no Transfer-Encoding there) the lines as received; pairs only
            # for a header_filter
            length, lines, dated = cleaned
            framed = length is not None
            if lines:
                kept = None
            else:
                kept = []
                lines = None
        if status == 204 and length is not None:
            # no Content-Length in a 204 (RFC 9110 8.6): a client that
            # believed it would take bytes of the next response
            if kept is None:
                kept = block_fields(lines)
            kept = [p for p in kept if p[0].lower() != b"content-length"]
            length = lines = None
        body_allowed = status != 204 and status != 304 and not self.head_method
        eof_body = not framed and body_allowed
        self.upstream_keepalive = upstream_keepalive and not eof_body
        ctx.status = status
        plugins = self.plugins   # (ctx.plugins, kept when the balancer was asked)
        if plugins.has_header_filter:
            # (_filter_head inlined.)  The head's Headers are made only for
            # a filter that reads them (context._UpstreamResponseHead): left as
            # received, the fields go out as they came, and the
            # Content-Length found above holds
            head = _UpstreamResponseHead(status, reason, kept, lines)
            try:
                r = plugins.run_header_filter(ctx, head)
            except Exception:
                self.plugin_error()
                return eof_body
            if r is not None:
                self._await_head(r, head, self._send_upstream_head)
                return eof_body
            if self.done:
                return eof_body
            # (_send_upstream_head inlined: below, with the head's parts;
            # head._changed_fields() inlined)
            status, reason, headers = head.status, head.reason, head._headers
            if headers is not None and headers.raw != head._fields:
                # (a filter changed the fields, or gave the head new ones)
                kept = headers.raw
                lines = None
                length = content_length(kept)
                dated = has_date(kept)
            body_allowed = status != 204 and status != 304 and not self.head_method
        # (_send_upstream_head inlined, without a head object when no filter)
        if not self.request_complete:
            self.response_close = True
        if length is None and body_allowed:
            if self.request.version == "1.1":
                self.response_chunked = True
            else:
                self.response_close = True
        self._send_head(status, reason, kept, None, lines, dated)
        return eof_body

    def _bad_upstream_head(self, what):
        """A response head tproxy cannot pass on: 502, the connection dropped."""
        log.error("invalid response from {peer}: {what}", peer=self.ctx.upstream_addr,
                  what=what)
        self.factory.health.failed(self.ctx.peer, "invalid", what)
        self.answered = False
        self._retry("upstream_invalid", 502, "invalid response from upstream",
                    "invalid_header", True)
        return False

    def _send_upstream_head(self, head):
        """Frame and send an upstream response head (an
        :class:`~tproxy.context._UpstreamResponseHead`) once an awaited
        ``header_filter`` answered: as :meth:`upstream_head` does at once."""
        if self.done:
            return
        raw = head._changed_fields()
        lines = None
        if raw is None:   # (the fields as received)
            raw, lines = head._fields, head._lines
            if raw is None:
                raw = block_fields(lines)
        body_allowed = head.status not in (204, 304) and not self.head_method
        if not self.request_complete:
            # an early response (413 ...): the connection closes after it,
            # as for responses made here; say so
            self.response_close = True
        if content_length(raw) is None and body_allowed:
            if self.request.version == "1.1":
                self.response_chunked = True
            else:
                self.response_close = True
        self._send_head(head.status, head.reason, raw, None, lines, has_date(raw))

    def _write_head(self, head, body):
        """Write the status line and headers to the client (framing added
        here), and ``body`` (``None``: it follows)."""
        raw = head.headers.raw
        self._send_head(head.status, head.reason, raw, body, None, has_date(raw))

    def _send_head(self, status, reason, raw, body, lines=None, dated=False):
        """:meth:`_write_head` of a head given as its parts (``lines``: see
        :func:`~tproxy.http.wire.response_head`); ``dated``: ``raw`` has a
        Date field, else the clock's now is added (RFC 9110 6.6.1)."""
        self.response_started = True
        ctx = self.ctx
        ctx.status = status
        keep = self.keep_alive and not self.response_close and self.conn.can_keep_alive()
        if not keep:
            self.response_close = True
        http10 = self.request.version == "1.0"
        date = b"" if dated else date_line(self.factory.seconds())
        if body is None:
            data = response_head(status, reason, raw, self.response_chunked,
                                 self.response_close, http10, lines, date)
        else:
            data = local_response_head(status, reason, raw, body,
                                       self.response_close, http10, date)
            if body and not self.head_method and status != 204 and status != 304:
                data += body
        ctx.bytes_sent += len(data)
        out = self.out
        if out is not None:
            out.append(data)
            self.head_held = data   # (see UpstreamFailures.fail_upstream)
        else:
            self.conn.write(data)

    def upstream_body(self, data):
        """A piece of the response body from the upstream."""
        if self.done:
            return
        if self.plugins.has_body_filter:
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
            self.filter_chain.addCallback(_then, self._send_response_body, data)
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

    def _unsend_head(self):
        """Whether the response head was taken back: it is still held with
        the rest of this upstream read (a bad chunk, or a ``body_filter``
        that raised, in the head's read), so nothing has left and the
        client can get the error response instead of a connection closed
        without a byte."""
        out = self.out
        if not out or out[0] is not self.head_held:
            return False
        self.out = None
        self.response_started = self.response_chunked = False
        self.ctx.bytes_sent = 0
        return True

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

    def upstream_end(self):
        """The upstream response is complete."""
        if self.done:
            return
        ctx = self.ctx
        ctx.upstream_end = self.factory.seconds()
        up = self.upstream
        self.upstream = None
        peer = self.peer_held   # (ctx.peer, not read by name; released below)
        self.peer_held = None
        if up is not None:
            if (self.upstream_keepalive and self.request_complete
                    and self.factory.pool.max_idle
                    and peer.member):
                # (a peer removed meanwhile keeps no idle connection: a flag
                # the registry sets, no look-up in the group's peers)
                up.release()
            else:
                up.abort()
        if peer is not None:   # (_release_peer inlined)
            peer.release()
        if self.plugins.has_body_filter:
            held, self.held_chunk = self.held_chunk, None
            return self._filter_body(b"" if held is None else held, True)
        if self.filter_chain is not None:
            # the head is still in header_filter
            self.filter_chain.addCallback(_then, self._end_response)
            return
        # (_end_response inlined)
        if self.response_chunked:
            ctx.bytes_sent += 5
            self._send(b"0\r\n\r\n")
        self.finish()

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
                r = self.ctx.plugins.run_body_filter(self.ctx, body, True)
            except Exception:
                return self.plugin_error()
            if is_deferred(r):
                self._await_filter(r, "body_filter")
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
        self._failed_inside(failure, "plugin error", "plugin_error", "internal error in a plugin")

    def internal_error(self, exc):
        """
        A defect of tproxy's own while the upstream's response was read (a
        parser callback raised ``exc``): as :meth:`plugin_error`, with
        ``ctx.error`` ``"internal_error"``; the peer is not blamed.
        """
        self._failed_inside(Failure(exc, type(exc), exc.__traceback__), "internal error",
                            "internal_error", "internal error")

    def _failed_inside(self, failure, what, error, message):
        if self.done:
            return
        # failure=None: called from an except block, log.failure finds it
        log.failure(what + " in {method} {uri}", failure,
                    method=self.ctx.request.method, uri=self.ctx.request.uri)
        self.ctx.error = error
        self.response_close = True
        self._close_upstream()
        if self.response_started and not self._unsend_head():
            self._abort_client()
            return self.finish()
        # no filters: they may be what failed
        error = Response.error(500, message)
        self._send_local_now(ResponseHead(500, error.headers), error.body)


def _then(_, fn, *args):
    """A callback calling ``fn(*args)`` once the phase before it ran (not a
    lambda: the compiled methods that add it take no closure)."""
    return fn(*args)
