# -*- test-case-name: tests.test_proxy_errors,tests.test_head_timeouts -*-
"""
Reading requests from a client connection: the parser's callbacks, the
limits on heads (request line, header lines, all fields) and bodies, and the
request head turned into a :class:`~tproxy.context.RequestContext` and an
:class:`~tproxy.http.exchange.Exchange` (or an upgrade's).

A part of :class:`tproxy.http.connection.ProxyProtocol` (a mixin: the state
is the connection's, see there).
"""

import re

from tproxy.context import Request, RequestContext
from tproxy.http.chunk_sizes import Trailers, chunk_refusal, unfinished_line
from tproxy.http.bases import ClientConnection
from tproxy.http.exchange import Exchange
from tproxy.http.head_reads import bare_cr_ahead, count_head, head_deadline, unknown_method
from tproxy.http.headers import Headers
from tproxy.http.parsing import (HttpParserError, HttpParserInvalidMethodError, HttpParserUpgrade,
                                 HttpRequestParser)
from tproxy.http.target import request_target
from tproxy.http.tunnel import UpgradeExchange, UpgradeRequestContext, upgrade_offer
from tproxy.http.wire import BadRequest, Closing, forwarding_fields, scan_request_fields
from tproxy.trust import UntrustworthyHeader

#: the end of a request line with a well-formed version other than 1.0 and
#: 1.1 (a request the parser read before the one it failed on has one of
#: those two)
_VERSION = re.compile(rb" HTTP/(?!1\.[01]\r)[0-9]\.[0-9]\r\n")


class RequestReader(ClientConnection):
    """
    The parsing side of a :class:`~tproxy.http.connection.ProxyProtocol`.

    The limits on a head (``proxy.max_line_size`` on the target,
    ``max_header_line`` on each field, ``max_header_size`` on all) are
    checked as the parser reports each piece (``on_url``, ``on_header``),
    so that the first one passed is answered, whatever follows.  Most heads
    arrive whole in a read far smaller than the limits, where no check can
    fire: a head counts at most 5/4 of its bytes (a field line of ``n``
    bytes counts at most ``n + 1``, and has at least 4).  So while the bytes
    that may belong to the head being read (``carry``: this read's, and the
    earlier reads' since the read in which the last request ended, but for
    reads of empty lines only) stay
    within 4/5 of the smallest limit (``factory.max_unchecked``), the pieces
    are not counted (``checking`` is false, two ``len`` calls fewer per
    field); the first read past it counts what came so far, and then goes on
    piece by piece.  A head that does not end in the read it began in:
    :mod:`tproxy.http.head_reads`.
    """

    def dataReceived(self, data):
        if self.closing:
            if self.lingering:
                # read and dropped: the client is not silent
                self.idle_since = self.factory.seconds()
            else:
                self.linger = True    # bytes dropped
            return
        heads = self.heads
        if self.reading is not None:
            # a body is being read: it makes progress (client_body_timeout)
            self.body_since = self.factory.seconds()
        if ((self.head_bytes or data and data[0] <= 13) and self.reading is None
                and self.head_start is None and bare_cr_ahead(self, data)):
            # llhttp would skip it: nothing before a request line but empty lines
            self._bad_request(400, "bare CR before the request line")
            return
        carry = self.carry + len(data)
        if carry > self.factory.max_unchecked:
            if not self.checking:
                # the head's pieces so far were not counted: from now on
                self._count_fields()
        elif self.checking:
            self.checking = False
        try:
            self.parser.feed_data(data)
        except BadRequest as e:
            self._bad_request(e.status, e.message)
        except Closing:
            self.linger = True
        except HttpParserUpgrade as e:
            ex = self.upgrading
            if ex is not None:
                # a configured upgrade (tproxy.http.tunnel): the bytes after
                # the head wait for the upstream's answer
                self.upgrading = None
                ex.head_read(data[e.args[0]:] if e.args else b"")
                return
            if e.args and not self.closing and self.parser.get_method() != b"CONNECT":
                # an Upgrade tproxy does not tunnel (h2c ...): the request
                # went as a plain one, without the upgrade fields; nothing
                # switches protocols, so HTTP goes on, with a new parser (the
                # parsers stop at an upgrade), as nginx
                self.parser = HttpRequestParser(self)
                self.carry = 0
                if e.args[0] < len(data):
                    self.dataReceived(data[e.args[0]:])
                return
            if not e.args or e.args[0] < len(data):
                self.linger = True   # bytes after the request: not parsed
            self._upgraded()
        except HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, BadRequest):
                self._bad_request(cause.status, cause.message)
            elif isinstance(cause, Closing):
                self.linger = True
            elif ((isinstance(e, HttpParserInvalidMethodError) or e.args
                    and e.args[0] == "Invalid method for HTTP/x.x request")
                    and self.heads == heads and unknown_method(self, data)):
                # a method token the parser does not know, or an RTSP one
                # (llhttp's message), as an origin server would (RFC 9110
                # 9.1; no request ended in this read)
                self._bad_request(501, "method not implemented")
            elif e.args and e.args[0] == "Invalid HTTP version" and _VERSION.search(data):
                # HTTP/1.2, HTTP/3.0 ... (both parsers' message; HTTP/01.1 is
                # malformed): as nginx
                self._bad_request(505, "HTTP version not supported")
            elif e.args and e.args[0] == "Request has invalid `Transfer-Encoding`":
                # a coding tproxy cannot re-frame, not ending in chunked (the
                # pure-Python parser says so before on_headers_complete,
                # where scan_request_fields answers httptools' 501)
                self._bad_request(501, "transfer coding not implemented")
            elif cause is not None and not isinstance(cause, HttpParserError):
                # a callback raised: a defect of tproxy's, not the client's
                self._internal_error(cause)
            else:
                self._bad_request(400, "malformed request")
        else:
            if self.reading is not None:
                carry = 0   # (a body: no head begun)
                if self.chunked:
                    if self.chunk_mark is not None:
                        self._check_chunk_size(data)
                    # (a size line ended in a later read is read back from it)
                    self.line_part = unfinished_line(data, self.line_part)
            elif self.heads == heads:
                if not self.closing:
                    count_head(self, data)
                if self.head_start is None:
                    carry = 0   # empty lines only (see count_head)
            elif self.head_start is not None:
                # a request ended in this read, and the next head's bytes
                # so far are in it: header_timeout from its first byte,
                # unless a response is being written (see exchange_done)
                carry = len(data)
                head_deadline(self, max(self.head_start, self.idle_since)
                              + self.factory.header_timeout)
            else:
                carry = 0
            self.carry = carry

    def _count_fields(self):
        """Count the pieces of the head being read, uncounted so far (see
        the class doc), as ``on_url`` and ``on_header`` count them."""
        self.checking = True
        size = 0
        for name, value in self.fields:
            size += len(name) + len(value) + 4
        self.head_size = size

    def on_message_begin(self):
        if self.closing or self.last_read:
            # the connection is closing (a response said so while this read
            # was parsed), or the last request was read: requests pipelined
            # behind it are not served
            raise Closing()
        self.head_start = self.factory.seconds()
        self.url = b""
        self.fields = []
        self.head_size = 0

    def on_url(self, url):
        self.url += url
        if self.checking and len(self.url) > self.factory.max_line:
            raise BadRequest(414, "request target too long")

    def on_header(self, name, value):
        if self.checking:
            size = len(name) + len(value) + 4     # "name: value" CRLF
            if size > self.factory.max_header_line:
                # nginx: 400 "Request Header Or Cookie Too Large"
                raise BadRequest(400, "request header line too long")
            self.head_size += size
            if self.head_size > self.factory.max_header:
                raise BadRequest(431, "request header fields too large")
        self.fields.append((name, value))

    def on_headers_complete(self):
        f = self.factory
        p = self.parser
        method = p.get_method().decode("ascii")
        if method == "TRACE":
            # (as nginx: a TRACE echoes the request's fields, cookies and
            # credentials included, back to a script: cross-site tracing)
            raise BadRequest(405, "TRACE method not allowed")
        version = p.get_http_version()
        if version != "1.1" and version != "1.0":
            if version == "0.9":   # no version: as the pure-Python parser says
                raise BadRequest(400, "malformed request")
            raise BadRequest(505, "HTTP version not supported")
        url = self.url.decode("latin-1")
        if url[:1] == "/" and "/." not in url and "%" not in url:
            # (request_target's usual case inlined: origin-form, no dot
            # segment, no escape)
            path, _, query = url.partition("?")
            authority = None
        else:
            path, query, authority = request_target(url, method)
        # (the length and Expect are locals: a connection keeps its
        # attributes inline for 29 names, see ProxyProtocol.__init__)
        (forward, hosts, self.chunked, length, expect, xff, real_ip, upgrade,
         conn_tokens, watched) = scan_request_fields(self.fields, version, f.underscores,
                                                     authority)
        client = self.remote_addr
        if self.trusted:
            try:
                client = f.trusted.client_address(
                    client, real_ip and real_ip.decode("latin-1"),
                    xff and xff.decode("latin-1")) or client
            except UntrustworthyHeader:
                pass   # not an address: keep the peer's
        if xff is None and client is self.remote_addr:
            upstream = self.forwarded   # the usual case: the same for every request
        else:
            upstream = forwarding_fields(client.encode("latin-1"),
                                         self.remote_addr.encode("latin-1"), xff,
                                         f.scheme.encode("ascii"))
        if self.chunked:
            upstream += b"Transfer-Encoding: chunked\r\n"
        elif length is not None:
            # Content-Length: 0 too (as nginx; servers may answer 411 without)
            upstream += b"Content-Length: %d\r\n" % length
        keep_alive = p.should_keep_alive()
        if keep_alive and conn_tokens and version == "1.0" and b"close" in conn_tokens:
            # "keep-alive, close": close wins (RFC 9112 9.3, as nginx; the
            # parsers read an HTTP/1.0 request's keep-alive token alone,
            # and go on parsing: what follows is not read, as after a close)
            keep_alive = False
            self.last_read = True
        body = self.chunked or bool(length)
        offer = None
        if upgrade is not None:
            if conn_tokens and b"upgrade" in conn_tokens:
                offer = upgrade_offer(f.upgrade_protocols, upgrade, version, body)
            if offer is None and body and p.should_upgrade():
                # Both parsers stop at the head of an upgrade request
                # (Connection or Proxy-Connection: upgrade) and skip its
                # body: served as a plain request, the upstream would wait
                # for a body never sent (or get an empty chunked one).
                raise BadRequest(501, "upgrade request with a body")
        request = Request(method, path, query, version, Headers(forward), client,
                          self.remote_addr, f.scheme, watched)
        if length is not None:
            request._content_length = length   # (ctx.request.content_length)
        f.requests += 1
        if offer is None:
            ctx = RequestContext(f.gateway, request, f.requests, self.head_start)
            ex = ctx._exchange = Exchange(self, ctx, keep_alive, body,
                                         self.chunked, expect, upstream, not hosts)
        else:
            ctx = UpgradeRequestContext(f.gateway, request, f.requests, self.head_start,
                                        offer.decode("latin-1"))
            upstream += b"Connection: upgrade\r\nUpgrade: %s\r\n" % offer
            ex = ctx._exchange = UpgradeExchange(self, ctx, keep_alive, body,
                                                self.chunked, expect, upstream, not hosts)
            self.upgrading = ex
        if body:
            self._body_head(ex, length)
        self.reading = ex
        self.head_start = None
        if self.exchange is None:
            self.exchange = ex
            ex.run()
        else:
            self.queue.append(ex)
            self.pause("pipeline")

    def _body_head(self, ex, length):
        """A request with a body (``length``: its Content-Length, or
        ``None``: chunked): its limit, the holding of small bodies, and the
        body timeout."""
        f = self.factory
        if self.chunked:
            # read up to client_body_buffer_size before connecting upstream
            ex.limit_body(f.max_body, None, f.body_buffer > 0)
            # its trailer fields come through on_header too, dropped; a
            # Content-Length among them has no say in the framing (as
            # nginx, which ignores trailer fields): no 400 for it beside
            # Transfer-Encoding, from here to the end of the request
            self.fields = Trailers()
            self.parser.set_dangerous_leniencies(lenient_chunked_length=True)
        else:
            ex.limit_body(f.max_body, length, length <= f.body_buffer)
        now = self.body_since = f.seconds()
        t = self.timer
        if t is not None and t.active() and t.getTime() > now + f.body_timeout:
            # a new call, not t.reset(): moving a DelayedCall sooner searches
            # the reactor's whole timer heap (one timer per client and pooled
            # upstream connection, 10,000s with many peers)
            t.cancel()
            self.timer = f.clock.callLater(f.body_timeout, self.check_timeout)

    def on_body(self, data):
        self.reading.client_body(data)

    def on_chunk_header(self):
        # a chunk begins: its size is checked at the end of this read
        self.chunk_mark = self.reading.body_size

    def on_chunk_complete(self):
        self.chunk_mark = None

    def _check_chunk_size(self, data):
        """A chunk began in ``data`` and goes on past its end: its size must
        fit in 2**63 - 1 and in the body limit (:mod:`tproxy.http.chunk_sizes`)."""
        ex = self.reading
        mark, self.chunk_mark = self.chunk_mark, None
        if ex is None or self.closing:
            return
        # (the chunk's bytes so far follow its size line in data)
        refusal = chunk_refusal(data, len(data) - (ex.body_size - mark), self.line_part,
                                mark, ex.body_limit)
        if refusal is not None:
            if refusal[0] == 413:
                ex.refuse_body()
            self._bad_request(*refusal)

    def on_message_complete(self):
        self.heads += 1
        self.head_bytes = 0
        self.line_bytes = 0
        self.line_done = False
        self.chunk_mark = None
        ex, self.reading = self.reading, None
        if ex is not None and ex.body_expected:
            if self.chunked:
                # (strict again for the next request's head: _body_head)
                self.parser.set_dangerous_leniencies(lenient_chunked_length=False)
            # (without a body the exchange knew it was complete from the start)
            ex.client_body_end()
