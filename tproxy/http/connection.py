# -*- test-case-name: tests.test_proxy_connections -*-
"""
One client connection: requests read (:mod:`tproxy.http.reader`) and run
one at a time in arrival order, keep-alive, pipelining, flow control, the
timeouts of a connection, and when it closes (how: lingering as nginx's
``lingering_close``, and the drain when the proxy stops, in
:mod:`tproxy.http.closing`).  It knows HTTP framing and nothing about plugins.
"""

from collections import deque

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from tproxy.fastio import FastServer, install_fast_write
from tproxy.http.closing import await_next_request, bound_flush, drain, end_linger, linger
from tproxy.http.head_reads import head_deadline
from tproxy.http.parsing import HttpRequestParser
from tproxy.http.reader import RequestReader
from tproxy.http.refusals import Stopped, bad_request, internal_error
from tproxy.http.wire import forwarding_fields

log = Logger(namespace=__name__)   # (a compiled module has no frame to take it from)

#: (client address, scheme) -> the forwarding fields of its requests that
#: carry none (see ProxyProtocol.forwarded); bounded
_FORWARDED = {}
_FORWARDED_MAX = 4096

def _forwarded(addr, scheme):
    remote = addr.encode("latin-1")
    fields = forwarding_fields(remote, remote, None, scheme.encode("ascii"))
    if len(_FORWARDED) >= _FORWARDED_MAX:
        _FORWARDED.clear()
    _FORWARDED[addr, scheme] = fields
    return fields


class ProxyProtocol(RequestReader, Protocol):
    """
    One client connection: parses requests, runs them one at a time in
    arrival order, and writes their responses.

    It is the producer registered on its own transport, so the transport tells
    it when the client stops reading; it then pauses the upstream that feeds
    the response.  Reading from the client is paused for as long as any reason
    holds (see :meth:`pause`).
    """

    line_part = b""        # a chunked body's line left unfinished by the last read
    starting = False       # exchange_done is starting queued exchanges
    lost_as = "client_abort"   # ctx.error of requests cut by the connection's loss
    linger = False         # the client may still be sending: close lingering
    lingering = False      # closing lingering (see tproxy.http.closing.linger)
    upgrading = None       # the UpgradeExchange whose head is being parsed
    line_tail = None       # a request line's last bytes (see tproxy.http.head_reads)
    line_start = None      # a request line's first bytes (see tproxy.http.head_reads)

    def __init__(self):
        # Every name a connection sets while it serves requests, stored at
        # once (the class defaults' values): CPython 3.11 keeps an instance's
        # attributes inline, its reads and method calls specialised, only for
        # the names its class's instances added while there was room (30
        # names, one fewer for each instance made before a name is first
        # set). Set at the first request, these came after a server accepted
        # several connections at once: every connection had its dict made,
        # and no method call on one was specialised.  29 names: the rest
        # (linger, line_part ...) stay class defaults, set on rare paths; the
        # request's Content-Length and Expect are not kept (locals of
        # on_headers_complete), which leaves room for body_since, set by
        # every request with a body.
        self.factory = None
        self.connected = 0
        self.transport = None
        self.remote_addr = None
        self.trusted = False
        self.forwarded = b""
        self.parser = None
        self.queue = None
        self.reading = None   # the exchange whose request is being read
        self.paused = None
        self.closing = False
        self.served = 0
        self.head_size = 0
        self.head_start = None
        self.idle_since = 0.0
        self.timer = None
        self.checking = True   # this read's head pieces are counted (see RequestReader)
        self.url = b""
        self.fields = ()   # the (name, value) pairs of the head being read
        self.chunked = False
        self.exchange = None   # the exchange whose response is being written
        self.heads = 0   # requests read whole (head and body)
        self.head_bytes = 0   # bytes of an incomplete head (see head_reads.count_head)
        self.line_bytes = 0   # bytes of the incomplete head's last line so far
        self.line_done = False   # the incomplete head's request line has ended
        self.chunk_mark = None   # body bytes before the chunk begun in this read
        self.carry = 0   # bytes that may belong to the head being read
        self.last_read = False   # a request said the connection ends after it
        self.body_since = 0.0   # when the body being read last made progress

    def connectionMade(self):
        f = self.factory
        f.connections.add(self)
        t = self.transport
        t.setTcpNoDelay(True)
        t.registerProducer(self, True)
        if type(t) is FastServer:
            addr = t.hostname   # (getPeer().host, without making the address)
        else:
            install_fast_write(t, close=True)
            addr = getattr(t.getPeer(), "host", "127.0.0.1")
        self.remote_addr = addr
        # (no call when no proxy is trusted, the usual case)
        self.trusted = f.trusted.networks and addr in f.trusted
        #: the forwarding fields of a request that carries none of its own
        #: (clients come back from the same few addresses: made once each)
        forwarded = _FORWARDED.get((addr, f.scheme))
        if forwarded is None:
            forwarded = _forwarded(addr, f.scheme)
        self.forwarded = forwarded
        self.parser = HttpRequestParser(self)
        self.queue = deque()   # parsed exchanges waiting for their turn
        self.paused = set()
        self.idle_since = f.seconds()
        self.timer = f.first_timers.add(f.first_timeout, self)   # (see tproxy.http.deadlines)
        if f.draining:
            drain(self)   # accepted as the proxy stops: see tproxy.http.closing.drain

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
                    self.body_since = self.factory.seconds()

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
        elif len(seq[-1]) < 16384:
            # (a copy of small pieces is cheaper than writeSequence; large
            # ones go by the fast write's gather-write, uncopied)
            self.transport.write(b"".join(seq))
        else:
            self.transport.writeSequence(seq)

    def send_continue(self):
        """Write ``100 Continue``: the client sends its body now (the body
        timeout starts now, not while it waited for this)."""
        self.body_since = self.factory.seconds()
        self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def abort(self):
        """Cut the connection (a response cannot be completed)."""
        self.closing = True
        self.transport.unregisterProducer()
        self.transport.abortConnection()

    def can_keep_alive(self):
        """Whether the connection may serve another request after this one."""
        # (draining: the last request read is answered with Connection: close)
        return (not self.closing and not (self.factory.draining and not self.queue)
                and self.served + 1 < self.factory.keepalive_requests)

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
        self.idle_since = self.factory.seconds()
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
        elif self.factory.draining and self.exchange is None:
            # a response that went out keep-alive before the drain began
            await_next_request(self)
        elif self.head_start is not None or self.head_bytes:
            # the next head (or empty lines) began while this response was
            # written: header_timeout from now (see check_timeout)
            head_deadline(self, self.idle_since + self.factory.header_timeout)

    def close(self):
        """Close the connection once the bytes written are sent (lingering
        if the client may still be sending: see
        :func:`tproxy.http.closing.linger`)."""
        self.closing = True
        t = self.transport
        if t.connected and not self.lingering:
            t.unregisterProducer()
            if (self.linger and self.factory.lingering_timeout and not t.disconnecting
                    and isinstance(t, tcp.Connection) and not t.TLS):
                linger(self)
            else:
                t.loseConnection()
                if t.connected:
                    bound_flush(self)   # (a client that does not read)

    # -- an upgrade (tproxy.http.tunnel) -----------------------------------------

    def hold_for_upgrade(self, early):
        """
        An upgrade request's head is read: nothing more is parsed and the
        client is not read until the upstream answers.  ``early``: the
        client sent bytes after the head (for the new protocol: if the
        upgrade is refused, the connection closes lingering).
        """
        self.parser = Stopped
        self.pause("upgrade")
        if early:
            self.linger = True

    def upgrade_refused(self):
        """The upgrade was not made: HTTP goes on, with a new parser (unless
        the connection is closing)."""
        if not self.closing:
            self.parser = HttpRequestParser(self)
            self.unpause("upgrade")

    def hand_over(self):
        """The connection is a tunnel's from now on: no more HTTP, no timer."""
        self.closing = True
        t = self.timer
        if t is not None and t.active():
            t.cancel()
        self.timer = None

    def read_again(self):
        """Read whatever the reasons for not reading were (the tunnel's
        producers take over)."""
        self.paused.clear()
        self.transport.resumeProducing()

    def refuse(self, data):
        """Write ``data``, the answer to bytes that cannot be parsed (see
        :class:`~tproxy.http.refusals.BadRequestReply`), and close."""
        self.exchange = None
        self.transport.write(data)
        self.close()

    def _internal_error(self, exc):
        """See :func:`tproxy.http.refusals.internal_error`."""
        internal_error(self, exc)

    def _bad_request(self, status, message):
        """Answer a request that cannot be parsed, and close (see
        :func:`tproxy.http.refusals.bad_request`)."""
        bad_request(self, status, message)

    def _upgraded(self):
        """
        The request just read is a CONNECT (an Upgrade to a protocol not
        in ``proxy.upgrade_protocols`` is a plain request, and HTTP goes
        on: :meth:`~tproxy.http.reader.RequestReader.dataReceived`): it is
        answered as a plain request, with ``Connection: close``, and what
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

    def check_timeout(self):
        """The connection's one timer: whichever of its timeouts is due
        (lingering, keep-alive, header, body) acts; the next is scheduled."""
        f = self.factory
        now = f.seconds()
        if self.lingering:
            left = min(self.linger_end, self.idle_since + f.lingering_timeout) - now
            if left <= 0:
                self.timer = None
                return end_linger(self)
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
                    if f.log_client_errors:
                        log.debug("client {client} sent no body for {timeout}s: {status}",
                                  client=self.remote_addr, timeout=f.body_timeout,
                                  status="aborted" if ex.response_started else 408)
                    return ex.client_timed_out()
                nxt = min(nxt, left)
        elif self.head_start is not None:
            # from the head's first byte, or from the end of the response
            # before it if later (nginx reads the next head only then)
            left = max(self.head_start, self.idle_since) + f.header_timeout - now
            if left <= 0:
                self.timer = None
                return self._bad_request(408, "request header timeout")
            nxt = left
        else:
            # idle: after a response, keepalive_timeout; before the first
            # request, header_timeout (nginx's client_header_timeout, from
            # the accept): closed without an answer either way
            left = self.idle_since + (f.keepalive_timeout if self.heads
                                      else f.header_timeout) - now
            if self.head_bytes and self.heads:
                # empty lines after a response, no request line yet
                # (see tproxy.http.head_reads.count_head)
                left = min(left, max(self.blank_since, self.idle_since) + f.header_timeout - now)
            if left <= 0:
                self.timer = None
                self.close()
                return
            nxt = left
        self.timer = f.clock.callLater(max(nxt, 0.001), self.check_timeout)

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
