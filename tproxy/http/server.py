# -*- test-case-name: tests.test_proxy -*-
"""
The client-facing HTTP/1.1 server: parsing with limits, keep-alive,
pipelined requests answered in order, and flow control.  It knows HTTP framing
and nothing about plugins: each request becomes an
:class:`~tproxy.http.exchange.Exchange`.
"""

import re
from collections import deque

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from tproxy.fastio import install_fast_write

from tproxy.context import Request, RequestContext, Response
from tproxy.http.exchange import Exchange
from tproxy.http.headers import Headers
from tproxy.http.parsing import (HttpParserError, HttpParserInvalidMethodError,
                                 HttpParserUpgrade, HttpRequestParser, bare_cr_first)
from tproxy.http.tunnel import UpgradeExchange, UpgradeRequestContext, upgrade_offer
from tproxy.http.refusals import BadRequestReply, Stopped
from tproxy.http.wire import (METHOD_TOKEN, BadRequest, Closing, error_response,
                              forwarding_fields, request_target, scan_request_fields)
from tproxy.http.retry import RetryPolicy
from tproxy.http.upstream import UpstreamPool, upstream_tls
from tproxy.trust import TrustedProxies, UntrustworthyHeader

log = Logger()

#: the size at the start of a chunk-size line
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")


@implementer(IProtocolNegotiationFactory)
class ProxyFactory(Factory):
    """
    Makes a :class:`ProxyProtocol` per client connection, and holds what they
    share: the gateway, its phases, the upstream pool and the limits.

    :param gateway: the :class:`tproxy.gateway.Gateway`.

    :ivar connections: the open :class:`ProxyProtocol` objects.
    :ivar draining: :meth:`drain` was called (the proxy is stopping).

    Behind TLS (an ``ssl:`` endpoint, or ``tls`` of the configuration) it
    negotiates ALPN ``http/1.1``: Twisted's ALPN callback fails the handshake
    of a client offering ALPN when the factory names no protocol.
    """

    noisy = False
    draining = False

    #: what :attr:`tproxy.gateway.Gateway.listeners` says this is
    kind = "http"

    def __init__(self, gateway, scheme="http"):
        self.clock = gateway.reactor
        self.scheme = scheme
        self.pool = UpstreamPool(gateway.reactor)
        gateway.registry.subscribe(self.pool)   # removed peers' idle connections close
        self.use(gateway)
        #: requests read so far (their contexts' request ids are made from it)
        self.requests = 0
        self.connections = set()
        # the gateway lists its listeners (metrics read them when scraped)
        listeners = getattr(gateway, "listeners", None)
        if listeners is not None:
            listeners.append(self)
        self._drained = []     # Deferreds of drain(), fired once none is open

    def use(self, gateway):
        """
        Serve the requests read from now on with ``gateway`` (a reload: see
        :mod:`tproxy.reload`) and its configuration's limits and timeouts.
        A request holds the gateway it started with (``ctx.gateway``), so
        one in flight finishes with the phases it began with; a keep-alive
        connection's next request gets the new one.
        """
        self.gateway = gateway
        self.phases = gateway.phases
        cfg = gateway.config
        proxy, timeouts = cfg["proxy"], cfg["timeouts"]
        self.tries = proxy["tries"]
        self.keepalive_timeout = proxy["keepalive_timeout"]
        self.keepalive_requests = proxy["keepalive_requests"]
        self.header_timeout = proxy["header_timeout"]
        self.max_line = proxy["max_line_size"]
        self.max_header = proxy["max_header_size"]
        self.max_body = proxy["max_body_size"]
        self.max_header_line = proxy["max_header_line"]
        self.body_buffer = proxy["client_body_buffer_size"]
        self.body_timeout = proxy["client_body_timeout"]
        self.underscores = proxy["underscores_in_headers"]
        self.lingering_time = proxy["lingering_time"]
        self.lingering_timeout = proxy["lingering_timeout"]
        self.send_timeout = timeouts["send"]
        self.read_timeout = timeouts["read"]
        self.upgrade_protocols = frozenset(p.lower() for p in proxy["upgrade_protocols"])
        self.upgrade_idle_timeout = proxy["upgrade_idle_timeout"]
        self.trusted = TrustedProxies(cfg.get("trusted_proxies", ()))
        pool = self.pool     # one pool for the listener's life: its settings change
        pool.connect_timeout = timeouts["connect"]
        pool.read_timeout = timeouts["read"]
        pool.max_idle = proxy["upstream_keepalive"]
        pool.idle_timeout = proxy["upstream_keepalive_timeout"]
        pool.max_header_size = proxy["max_upstream_header_size"]
        self.health = gateway.health
        self.retry = RetryPolicy(proxy)
        pool.set_tls(upstream_tls(cfg))

    def acceptableProtocols(self):
        """The ALPN protocols spoken (``IProtocolNegotiationFactory``)."""
        return [b"http/1.1"]

    @property
    def open_connections(self):
        """The number of client connections open now."""
        return len(self.connections)

    def buildProtocol(self, addr):
        p = ProxyProtocol()
        p.factory = self
        return p

    # -- graceful shutdown ---------------------------------------------------------

    def drain(self):
        """
        Stop serving, gracefully (the listener no longer accepts): every
        connection not serving a request closes now; one serving a request
        answers it and the requests already read behind it, the last
        response saying ``Connection: close``, and then closes (see
        :meth:`ProxyProtocol.drain`).

        :return: a Deferred that fires once no connection is open.
        """
        self.draining = True
        for p in list(self.connections):
            p.drain()
        d = Deferred()
        if self.connections:
            self._drained.append(d)
        else:
            d.callback(None)
        return d

    def abort(self):
        """
        Cut every connection still open (a request in flight ends as the
        client's abort would).

        :return: how many were cut.
        """
        connections = list(self.connections)
        for p in connections:
            p.lost_as = "shutdown"
            p.abort()
        return len(connections)

    def _connection_lost(self, p):
        self.connections.discard(p)
        if self._drained and not self.connections:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)


class ProxyProtocol(Protocol):
    """
    One client connection: parses requests, runs them one at a time in
    arrival order, and writes their responses.

    It is the producer registered on its own transport, so the transport tells
    it when the client stops reading; it then pauses the upstream that feeds
    the response.  Reading from the client is paused for as long as any reason
    holds (see :meth:`pause`).
    """

    exchange = None        # the exchange whose response is being written
    reading = None         # the exchange whose request is being read
    heads = 0              # requests read whole (head and body)
    head_bytes = 0         # bytes of an incomplete head (see _count_head)
    line_done = False      # the incomplete head's request line has ended
    line_bytes = 0         # bytes of the incomplete head's last line so far
    chunk_mark = None      # body bytes before the chunk begun in this read
    after_lf = False       # the last read of a chunked body ended a line
    body_since = 0.0       # when the body being read last made progress
    starting = False       # exchange_done is starting queued exchanges
    closing = False
    lost_as = "client_abort"   # ctx.error of requests cut by the connection's loss
    linger = False         # the client may still be sending: close lingering
    lingering = False      # closing lingering (see _linger)
    timer = None
    upgrading = None       # the UpgradeExchange whose head is being parsed

    def connectionMade(self):
        f = self.factory
        f.connections.add(self)
        t = self.transport
        t.setTcpNoDelay(True)
        t.registerProducer(self, True)
        install_fast_write(t)
        peer = t.getPeer()
        self.remote_addr = getattr(peer, "host", "127.0.0.1")
        self.trusted = self.remote_addr in f.trusted
        remote = self.remote_addr.encode("latin-1")
        #: the forwarding fields of a request that carries none of its own
        self.forwarded = forwarding_fields(remote, remote, None, f.scheme.encode("ascii"))
        self.parser = HttpRequestParser(self)
        self.queue = deque()   # parsed exchanges waiting for their turn
        self.reading = None    # the exchange whose request is being read
        self.paused = set()
        self.served = 0
        self.head_size = 0
        self.head_start = None
        self.idle_since = f.clock.seconds()
        self.timer = f.clock.callLater(min(f.keepalive_timeout, f.header_timeout),
                                       self._check_timeout)
        if f.draining:
            self.close()   # accepted as the proxy stops: not served

    # -- flow control ------------------------------------------------------------

    def pause(self, reason):
        """Stop reading from the client while ``reason`` holds."""
        if not self.paused:
            self.transport.pauseProducing()
        self.paused.add(reason)

    def unpause(self, reason):
        """``reason`` no longer holds; read again if nothing else holds."""
        if reason in self.paused:
            self.paused.discard(reason)
            if not self.paused and not self.closing:
                self.transport.resumeProducing()
                if self.reading is not None:
                    # the client's body was not awaited while paused
                    self.body_since = self.factory.clock.seconds()

    def pauseProducing(self):
        if self.exchange is not None:
            self.exchange.client_full()

    def resumeProducing(self):
        if self.exchange is not None:
            self.exchange.client_drained()

    def stopProducing(self):
        pass

    def write(self, data):
        """Write response bytes to the client."""
        self.transport.write(data)

    def write_all(self, seq):
        """Write a list of pieces of response bytes to the client (in one
        system call when the transport's buffer is empty)."""
        if len(seq) == 1:
            self.transport.write(seq[0])
        else:
            self.transport.writeSequence(seq)

    def send_continue(self):
        """Write ``100 Continue``: the client sends its body now (the body
        timeout starts now, not while it waited for this)."""
        self.body_since = self.factory.clock.seconds()
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def abort(self):
        """Cut the connection (a response cannot be completed)."""
        self.closing = True
        self.transport.unregisterProducer()
        self.transport.abortConnection()

    def can_keep_alive(self):
        """Whether the connection may serve another request after this one."""
        return (not self.closing and self.served + 1 < self.factory.keepalive_requests)

    # -- parsing ------------------------------------------------------------------

    def dataReceived(self, data):
        if self.closing:
            if self.lingering:
                # read and dropped: the client is not silent
                self.idle_since = self.factory.clock.seconds()
            else:
                self.linger = True    # bytes dropped
            return
        heads = self.heads
        if self.reading is not None:
            # a body is being read: it makes progress (client_body_timeout)
            self.body_since = self.factory.clock.seconds()
        if (data and data[0] <= 13 and self.reading is None and not self.head_bytes
                and bare_cr_first(data)):
            # llhttp would skip it: nothing before a request line but empty lines
            self._bad_request(400, "bare CR before the request line")
            return
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
            if not e.args or e.args[0] < len(data):
                self.linger = True   # bytes after the request: not parsed
            self._upgraded()
        except HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, BadRequest):
                self._bad_request(cause.status, cause.message)
            elif isinstance(cause, Closing):
                self.linger = True
            elif (isinstance(e, HttpParserInvalidMethodError) and METHOD_TOKEN.match(data)
                    and not data.startswith(b"PRI ")):
                # a method token the parser does not know (as an origin
                # server would, RFC 9110 9.1)
                self._bad_request(501, "method not implemented")
            else:
                self._bad_request(400, "malformed request")
        else:
            if self.reading is not None:
                if self.chunked:
                    if self.chunk_mark is not None:
                        self._check_chunk_size(data)
                    self.after_lf = data[-1:] == b"\n"
            elif self.heads == heads and not self.closing:
                self._count_head(data)

    def _count_head(self, data):
        """
        All of ``data`` went into a head not complete yet.  The parsers keep
        a partial line until it ends (on_url / on_header may never come): a
        line that never ends must not grow without bound.
        """
        f = self.factory
        self.head_bytes += len(data)
        nl = data.rfind(b"\n")
        if nl < 0:
            self.line_bytes += len(data)
        else:
            self.line_bytes = len(data) - nl - 1
        if not self.line_done:
            if nl >= 0:
                self.line_done = True
            elif self.head_bytes > f.max_line + 64:   # + method and version
                return self._bad_request(414, "request target too long")
        if self.line_done and self.line_bytes > f.max_header_line:
            # a header line that does not end (nginx's
            # large_client_header_buffers: 400 there too)
            return self._bad_request(400, "request header line too long")
        if self.head_bytes > f.max_line + f.max_header + 64:
            self._bad_request(431, "request header fields too large")

    def on_message_begin(self):
        if self.closing:
            # the connection is closing (a response said so while this read
            # was parsed): requests pipelined behind it are not served
            raise Closing()
        self.head_start = self.factory.clock.seconds()
        self.url = b""
        self.fields = []
        self.head_size = 0
        self.hosts = 0
        self.chunked = False
        self.length = None
        self.expect = False

    def on_url(self, url):
        self.url += url
        if len(self.url) > self.factory.max_line:
            raise BadRequest(414, "request target too long")

    def on_header(self, name, value):
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
        version = p.get_http_version()
        if version != "1.1" and version != "1.0":
            if version == "0.9":   # no version: as the pure-Python parser says
                raise BadRequest(400, "malformed request")
            raise BadRequest(505, "HTTP version not supported")
        path, query, authority = request_target(self.url.decode("latin-1"), method)
        (forward, hosts, self.chunked, self.length, self.expect, xff, real_ip, upgrade,
         conn_tokens) = scan_request_fields(self.fields, version, f.underscores, authority)
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
        elif self.length is not None:
            # Content-Length: 0 too (as nginx; servers may answer 411 without)
            upstream += b"Content-Length: %d\r\n" % self.length
        body = self.chunked or bool(self.length)
        offer = None
        if upgrade is not None and conn_tokens and b"upgrade" in conn_tokens:
            offer = upgrade_offer(f.upgrade_protocols, upgrade, version, body)
        request = Request(method, path, query, version, Headers(forward), client,
                          self.remote_addr, f.scheme)
        f.requests += 1
        if offer is None:
            ctx = RequestContext(f.gateway, request, f.requests, self.head_start)
            ex = ctx._exchange = Exchange(self, ctx, p.should_keep_alive(), body,
                                         self.chunked, self.expect, upstream, not hosts)
        else:
            ctx = UpgradeRequestContext(f.gateway, request, f.requests, self.head_start,
                                        offer.decode("latin-1"))
            upstream += b"Connection: upgrade\r\nUpgrade: %s\r\n" % offer
            ex = ctx._exchange = UpgradeExchange(self, ctx, p.should_keep_alive(), body,
                                                self.chunked, self.expect, upstream, not hosts)
            self.upgrading = ex
        if body:
            self._body_head(ex)
        self.reading = ex
        self.head_start = None
        if self.exchange is None:
            self.exchange = ex
            ex.run()
        else:
            self.queue.append(ex)
            self.pause("pipeline")

    def _body_head(self, ex):
        """A request with a body: its limit, the holding of small bodies, and
        the body timeout."""
        f = self.factory
        if self.chunked:
            # read up to client_body_buffer_size before connecting upstream
            ex.limit_body(f.max_body, None, f.body_buffer > 0)
        else:
            ex.limit_body(f.max_body, self.length, self.length <= f.body_buffer)
        now = self.body_since = f.clock.seconds()
        t = self.timer
        if t is not None and t.active() and t.getTime() > now + f.body_timeout:
            t.reset(f.body_timeout)

    def on_body(self, data):
        self.reading.client_body(data)

    def on_chunk_header(self):
        if self.reading.body_limit is not None:
            # a chunk begins: its size is checked at the end of this read
            self.chunk_mark = self.reading.body_size

    def on_chunk_complete(self):
        self.chunk_mark = None

    def _check_chunk_size(self, data):
        """
        A chunk began in ``data`` and goes on past its end: its size, read
        back from its size line (neither parser reports it), must fit in the
        limit, so that a client announcing a 4 GiB chunk gets its ``413``
        now, not after sending the limit's worth (nginx does the same).
        """
        ex = self.reading
        mark, self.chunk_mark = self.chunk_mark, None
        if ex is None or self.closing:
            return
        # the chunk's bytes so far follow its size line in data
        end = len(data) - (ex.body_size - mark)
        if end < 3 or data[end - 2:end] != b"\r\n":
            return   # not in this read: the bytes are counted as they come
        start = data.rfind(b"\n", 0, end - 2) + 1
        if start == 0 and not self.after_lf:
            return   # the line began in an earlier read
        m = _CHUNK_SIZE.match(data, start, end)
        if m is None:
            return
        if mark + int(m.group(), 16) > ex.body_limit:
            ex.refuse_body()
            self._bad_request(413, "request body too large")

    def on_message_complete(self):
        self.heads += 1
        self.head_bytes = 0
        self.line_bytes = 0
        self.line_done = False
        self.chunk_mark = None
        ex, self.reading = self.reading, None
        if ex is not None and ex.body_expected:
            # (without a body the exchange knew it was complete from the start)
            ex.client_body_end()

    # -- after each request -----------------------------------------------------------

    def exchange_done(self, ex):
        """``ex`` finished (its ``log`` ran): close, or start the next request."""
        if ex is not self.exchange:
            return
        self.served += 1
        self.exchange = None
        if self.closing or ex.response_close or not ex.request_complete:
            if not ex.request_complete or self.queue or self.head_start is not None:
                # the client may still be sending: the body not read, or
                # requests behind this one that will not be answered
                self.linger = True
            self.close()
            return
        self.idle_since = self.factory.clock.seconds()
        if self.queue and not self.starting:
            # A loop, not recursion: a queued request answered synchronously
            # (a plugin's Response) calls back here before run() returns, and
            # a deep pipeline would exhaust the stack.
            self.starting = True
            try:
                while self.queue and self.exchange is None and not self.closing:
                    nxt = self.exchange = self.queue.popleft()
                    if not self.queue:
                        self.unpause("pipeline")
                    nxt.run()
            finally:
                self.starting = False

    def close(self):
        """Close the connection once the bytes written are sent (lingering
        if the client may still be sending: see :meth:`_linger`)."""
        self.closing = True
        t = self.transport
        if t.connected and not self.lingering:
            t.unregisterProducer()
            if (self.linger and self.factory.lingering_timeout and not t.disconnecting
                    and isinstance(t, tcp.Connection) and not t.TLS):
                self._linger()
            else:
                t.loseConnection()

    def _linger(self):
        """
        Close as nginx's ``lingering_close``: the client may still be sending
        (a body not read, bytes after a bad request), and closing a socket
        with unread bytes sends a reset, which can destroy the response
        before the client reads it.  So the response is flushed, then the
        write side is shut down (the client sees the end of the response),
        and what the client still sends is read and dropped until it closes,
        or is silent for ``proxy.lingering_timeout`` seconds, or
        ``proxy.lingering_time`` seconds have passed; then the connection
        closes (:meth:`_check_timeout`).
        """
        f = self.factory
        t = self.transport
        self.lingering = True
        # requests read but not started will not be: they end now, not
        # when the connection does
        queue, self.queue = self.queue, deque()
        for queued in queue:
            queued.client_lost()
        now = f.clock.seconds()
        self.idle_since = now
        self.linger_end = now + f.lingering_time
        # after the bytes buffered (the response): FIN (Twisted's doWrite
        # half-closes once its buffer is empty; the fast write path in
        # tproxy.fastio only sends while that buffer is empty, so the order
        # holds)
        t.loseWriteConnection()
        # read (and drop) whatever the reasons for not reading were
        self.paused.clear()
        t.resumeProducing()
        delay = min(f.lingering_timeout, f.lingering_time)
        timer = self.timer
        if timer is not None and timer.active():
            timer.reset(delay)
        else:
            self.timer = f.clock.callLater(delay, self._check_timeout)

    def _end_linger(self):
        """Lingering is over: close (a reset if the client is still sending)."""
        t = self.transport
        if t.dataBuffer or t._tempDataBuffer:
            # the response is still not flushed (the client does not read):
            # loseConnection would wait for it for ever
            t.abortConnection()
        else:
            t.loseConnection()   # (the write side is shut already: at once)

    def refuse(self, data):
        """Write ``data``, the answer to bytes that cannot be parsed (see
        :class:`~tproxy.http.refusals.BadRequestReply`), and close."""
        self.exchange = None
        self.transport.write(data)
        self.close()

    def _bad_request(self, status, message):
        """Answer a request that cannot be parsed, and close."""
        # the client may be sending more (the rest of a body or of a head):
        # the close lingers
        self.linger = True
        if self.closing:
            # bytes after the last response (it closed the connection, and
            # was answered within the same read): they are not answered
            return
        # (not a field called "message": the legacy log bridge takes it over)
        log.info("bad request from {client}: {why}", client=self.remote_addr, why=message)
        if self.exchange is None:
            self.transport.write(error_response(status, message))
            self.close()
        elif self.reading is self.exchange:
            # the body of the request in flight is broken: it ends here
            self.closing = True
            for queued in self.queue:
                queued.client_lost()
            self.queue.clear()
            self.exchange.close_after()
            self.exchange.respond(Response.error(status, message))
        elif not self.closing:
            # Requests read before this one are answered first, in order;
            # then the error, then the connection closes (as nginx).  Nothing
            # after the bad bytes is parsed: later reads are dropped.
            self.parser = Stopped
            self.head_start = None
            ex, self.reading = self.reading, None
            if ex is not None:
                # the body of a queued request is broken (it is the last
                # one read): it ends with the error when its turn comes
                self.queue.pop()
            self.queue.append(BadRequestReply(self, status, message, ex))

    def _upgraded(self):
        """
        The request just read asked for an Upgrade to a protocol not in
        ``proxy.upgrade_protocols`` (those are tunneled: see
        :mod:`tproxy.http.tunnel`), or is a CONNECT: it is answered as a
        plain request, with ``Connection: close``, and what
        follows it is not HTTP: nothing more is parsed.
        """
        if self.queue:
            # it waits behind others, which are answered first
            self.parser = Stopped
            self.queue[-1].close_after()
        elif self.exchange is not None:
            self.closing = True
        else:
            # it was answered already (by a plugin): only the close is left
            self.close()

    def drain(self):
        """
        The proxy is stopping (:meth:`ProxyFactory.drain`).  Not serving a
        request: close now (a head being received is not answered).
        Serving one: the requests read so far are answered, the last
        response with ``Connection: close`` if its head is not sent yet, and
        then the connection closes; nothing read after now is answered.
        """
        if self.closing:
            return   # closing already (flushing or lingering)
        if self.exchange is None:
            if self.head_start is not None or self.head_bytes:
                self.linger = True   # the client is sending a head
            self.close()
            return
        last = self.queue[-1] if self.queue else self.exchange
        if isinstance(last, Exchange):
            # its response says Connection: close (unless its head went out
            # already), and exchange_done closes the connection after it
            last.close_after()
        if self.reading is None:
            # every request read is whole: nothing more is parsed (bytes
            # that come now are dropped, and the close lingers)
            self.parser = Stopped
            self.head_start = None

    def _check_timeout(self):
        f = self.factory
        now = f.clock.seconds()
        if self.lingering:
            left = min(self.linger_end, self.idle_since + f.lingering_timeout) - now
            if left <= 0:
                self.timer = None
                return self._end_linger()
            nxt = left
        elif self.exchange is not None:
            nxt = f.keepalive_timeout
            if (self.reading is self.exchange and not self.paused
                    and not self.exchange.expect_continue):
                # its body is being read, and tproxy is reading (a client
                # waiting for 100 Continue is waiting for tproxy)
                left = self.body_since + f.body_timeout - now
                if left <= 0:
                    self.timer = None
                    ex = self.exchange
                    log.info("client {client} sent no body for {timeout}s: {status}",
                             client=self.remote_addr, timeout=f.body_timeout,
                             status="aborted" if ex.response_started else 408)
                    return ex.client_timed_out()
                nxt = min(nxt, left)
        elif self.head_start is not None:
            left = self.head_start + f.header_timeout - now
            if left <= 0:
                self.timer = None
                return self._bad_request(408, "request header timeout")
            nxt = left
        else:
            left = self.idle_since + f.keepalive_timeout - now
            if left <= 0:
                self.timer = None
                self.close()
                return
            nxt = left
        self.timer = f.clock.callLater(max(nxt, 0.001), self._check_timeout)

    def connectionLost(self, reason):
        self.closing = True
        self.parser = None     # it holds our bound methods: no cycle to collect
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        ex = self.exchange
        self.exchange = None
        if ex is not None:
            ex.client_lost(self.lost_as)
        for queued in self.queue:
            queued.client_lost(self.lost_as)
        self.queue.clear()
        # last: a drain waiting for this connection sees its requests logged
        self.factory._connection_lost(self)
