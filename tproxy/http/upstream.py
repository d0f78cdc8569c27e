# -*- test-case-name: tests.test_proxy -*-
"""
A connection to an upstream peer: it writes one request at a time and
parses the response for the :class:`tproxy.http.exchange.Exchange` using it,
reporting through plain method calls (no Deferred per request).  The
keep-alive pool of connections per peer address is in
:mod:`tproxy.http.pool`.
"""

from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from tproxy.fastio import install_fast_write

from tproxy.http.parsing import NAME, HttpParserError, HttpParserUpgrade, HttpResponseParser
from tproxy.http.wire import RARE_HOP_FIELDS, block_fields, clean_response_block

#: heads read whole go through a parser without ``on_header`` (see
#: UpstreamProtocol): httptools only, whose llhttp is strict on line ends
_WHOLE_HEADS = NAME == "httptools"
_RARE_HOP_FIELDS = RARE_HOP_FIELDS.search
#: the bytes from which a head read whole is cut from the read instead of
#: reported field by field (see UpstreamProtocol): the searches of the cut
#: cost about what ~7 fields' callbacks do (~30 bytes each)
WHOLE_HEAD_MIN = 256


log = Logger()

#: The default of ``proxy.max_upstream_header_size``: bytes of a response head.
MAX_HEADER_SIZE = 65536


class _HeadTooBig(Exception):
    """Raised by a parser callback: the response head passed the limit."""


class _WholeHead(object):
    """The callbacks of the parser of heads read whole: the protocol's, but
    no ``on_header`` (httptools calls only the callbacks it finds when the
    parser is made) and its own end of head."""

    __slots__ = ("on_status", "on_headers_complete", "on_body", "on_message_complete")

    def __init__(self, conn):
        self.on_status = conn.on_status
        self.on_headers_complete = conn._whole_head_complete
        self.on_body = conn.on_body
        self.on_message_complete = conn.on_message_complete


class UpstreamProtocol(Protocol):
    """
    One connection to a peer, used by one exchange at a time.

    It is the producer registered on its own transport, so that the transport
    tells it when the peer stops reading (request-body backpressure) and it
    passes that on to its exchange.

    A response head (status line, header fields, the empty line) may take
    ``max_head`` bytes (``proxy.max_upstream_header_size``); a larger one
    fails the exchange with ``502`` (nginx: "upstream sent too big header").
    Two counts enforce it, both started again for each response, 1xx ones
    included: ``_head_left``, what the head may still take, goes down in
    ``on_status`` / ``on_header`` (trailer fields, dropped, take from what
    is left too, in the reads after the head's);
    ``_head_fed`` adds up the reads that end inside the head, whose bytes the
    parser keeps until the head (or its last line) ends.

    The first count costs two ``len`` calls and a store per field, and most
    heads arrive whole in a read far smaller than the limit, where it cannot
    fire: a head counts at most 5/4 of its bytes (a field line of ``n`` bytes
    counts at most ``n + 1``, and has at least 4).  So a read that begins
    with the head (no earlier read ended inside it) and is at most 4/5 of
    ``max_head`` is not counted field by field (``_checking`` is false); if
    it ends inside the head all the same, the count is made once, exactly,
    from the fields so far (:meth:`_count_head`), and the head's next reads
    are counted field by field.

    A response usually ends inside a read (``on_message_complete``), and
    the connection goes back to the pool from there, before the rest of the
    read is parsed.  A request pipelined behind may then take it at once
    (synchronously, from the same read): it is handed the connection only
    once the read is parsed whole (``due``, see :meth:`UpstreamPool.connect
    <tproxy.http.pool.UpstreamPool.connect>`), and if the read held bytes
    after the response (a second response, nginx's "upstream sent more data
    than specified"), the connection is dropped and the request gets a new
    one: bytes after a response are no request's answer.

    With httptools, a response whose first read holds its whole head, of
    at least :data:`WHOLE_HEAD_MIN` bytes (within 4/5 of ``max_head``, not
    1xx, no Transfer-Encoding, not to ``HEAD`` or an upgrade) is parsed by a
    second parser without ``on_header`` (``_whole``, made on first use): no
    Python call per field; the head's fields are cut from the read's bytes
    at the end of the head (:func:`~tproxy.http.wire.clean_response_block`)
    and sent on as received (a field's spacing kept; the pairs a
    ``header_filter`` sees are the same).  On CPython a Python call per
    field costs ~2,000 instructions, the searches of the cut ~14,000 in all:
    smaller heads are reported field by field.  Each response is parsed by
    one parser from its first read to its end (``_feeding``); both are
    between messages when a response begins.
    """

    exchange = None
    head_only = False
    parser = None
    requests = 0
    timer = None           # one DelayedCall per connection (see set_deadline)
    deadline = 0.0
    _fires_at = 0.0        # when the timer fires (see set_deadline)
    idle = False
    reading_paused = False   # see pause_reading
    upgrading = False      # a 101 goes to the exchange (tproxy.http.tunnel)
    max_head = MAX_HEADER_SIZE
    _reason = b""          # the reason phrase of the response being read
    _head_left = 0         # bytes the current head may still take
    _head_fed = None       # bytes of reads that ended inside the current head
                           # (None: after it; -1: after a 1xx, see _count_head)
    _head_spans = False    # an earlier read ended inside the current head
    _checking = True       # this read's fields are counted (see the class doc)
    reading = False        # a read is being parsed (see the class doc)
    due = None             # (peer, exchange) given the connection during that read
    _whole = None          # the parser of heads read whole (see the class doc)
    _whole_read = None     # (read, end of its head, the head lower-cased)
    _feeding = None        # the parser of the response being read

    def __init__(self, pool, key):
        self.pool = pool
        self.key = key

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        install_fast_write(self.transport)
        # one parser for the connection's life (a new one after a response to
        # HEAD): a connection is reused only after a complete response
        self.parser = HttpResponseParser(self)
        self.max_head = self.pool.max_header_size
        self.factory.exchange.upstream_connected(self, False)

    # -- the one timer: read/send timeouts while in use, idle timeout in the pool

    def set_deadline(self, seconds):
        """
        Time out ``seconds`` from now: the exchange's ``_timed_out`` while one
        uses the connection, else the pool closes it.  A connection keeps one
        DelayedCall and mostly moves its deadline later, which costs no
        reactor work; the timer re-arms itself when it fires early.  A
        deadline sooner than the timer (the idle timeout after a longer read
        timeout) replaces the timer: ``DelayedCall.reset`` to an earlier time
        searches the reactor's whole heap of timers (one per upstream
        connection: O(n) with n peers), a cancel and a new call cost O(log n).
        """
        clock = self.pool.reactor
        now = clock.seconds()
        self.deadline = deadline = now + seconds
        timer = self.timer
        if timer is None:
            self.timer = clock.callLater(seconds, self._tick)
            self._fires_at = deadline
        elif self._fires_at > deadline:    # (the timer's getTime(), without a call)
            timer.cancel()
            self.timer = clock.callLater(seconds, self._tick)
            self._fires_at = deadline

    def _tick(self):
        clock = self.pool.reactor
        left = self.deadline - clock.seconds()
        if left > 0:
            self.timer = clock.callLater(left, self._tick)
            self._fires_at = self.deadline
            return
        self.timer = None
        if self.exchange is not None:
            self.exchange.upstream_timed_out()
        elif self.idle:
            self.pool._expire(self)

    def _cancel_timer(self):
        timer, self.timer = self.timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- used by the exchange ------------------------------------------------

    def start(self, exchange, head_only, data, timeout):
        """
        Begin an exchange: send ``data`` (the request head, and its body if
        known), and parse responses for ``exchange`` from now on, with a
        deadline ``timeout`` seconds from now.  ``head_only``: a response to
        ``HEAD``, which has no body whatever its fields say.
        """
        self.exchange = exchange
        self.head_only = head_only
        self.idle = False
        self.requests += 1
        self._head = []
        self._eof_body = False
        self._informational = False
        self._head_left = self.max_head
        self._head_fed = 0
        self._head_spans = False
        self._reason = b""
        self.transport.write(data)
        self.set_deadline(timeout)

    def send(self, data, timeout):
        """Send more of the request (``bytes``, or a list of them); the
        deadline is now ``timeout`` seconds from now."""
        if type(data) is list:
            self.transport.writeSequence(data)
        else:
            self.transport.write(data)
        self.set_deadline(timeout)

    def expect_upgrade(self):
        """A ``101`` answers the request (:mod:`tproxy.http.tunnel`): it goes
        to the exchange's ``upstream_switching``."""
        self.upgrading = True

    def pause_reading(self):
        """Stop reading the response (the client or a filter cannot take more)."""
        self.reading_paused = True
        self.transport.pauseProducing()

    def resume_reading(self):
        """Read the response again."""
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resumeProducing()

    def hand_over(self):
        """The connection is a tunnel's from now on (:mod:`tproxy.http.tunnel`):
        no exchange, no timer."""
        self._cancel_timer()
        self.exchange = None

    def read_again(self):
        """Read, whoever paused it (the tunnel's producers take over)."""
        self.reading_paused = False
        self.transport.resumeProducing()

    def release(self):
        """The exchange is over and the connection is clean: back to the pool."""
        self.exchange = None
        # the exchange may have paused reading (client backpressure, a
        # filter); an idle connection must read, to notice a close
        if self.reading_paused:
            self.resume_reading()
        self.pool._idle(self)

    def abort(self):
        """Drop the connection (the exchange is over but the stream is not clean)."""
        self.exchange = None
        self.transport.unregisterProducer()
        self.transport.abortConnection()

    # -- the transport's producer interface: the peer's receive window -------

    def pauseProducing(self):
        if self.exchange is not None:
            self.exchange.upstream_writable(False)

    def resumeProducing(self):
        if self.exchange is not None:
            self.exchange.upstream_writable(True)

    def stopProducing(self):
        pass

    # -- reading ---------------------------------------------------------------

    def dataReceived(self, data):
        ex = self.exchange
        if ex is None:
            # bytes from an idle connection: it is not reusable
            self.pool._forget(self)
            self.transport.abortConnection()
            return
        # what this read makes for the client (head, body, end) leaves in
        # one write
        ex.upstream_reading()
        if self._head_fed == 0 and not self._head_spans:
            # the first read of a response: which parser (see the class doc)
            parser = self.parser
            n = len(data)
            if (_WHOLE_HEADS and n >= WHOLE_HEAD_MIN and not self.head_only
                    and not self.upgrading):
                end = data.find(b"\r\n\r\n")
                if (end >= WHOLE_HEAD_MIN and end * 5 <= self.max_head * 4
                        and data[9:10] != b"1"):
                    low = data[:end].decode("latin-1").lower()
                    if _RARE_HOP_FIELDS(low) is None:
                        parser = self._whole
                        if parser is None:
                            parser = self._whole = HttpResponseParser(_WholeHead(self))
                        self._whole_read = (data, end, low)
            self._feeding = parser
            # (see the class doc: a whole head in a small read is not counted)
            self._checking = n * 5 > self.max_head * 4
        else:
            parser = self._feeding
            self._checking = True
        self.reading = True
        try:
            parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as e:
            if (self.upgrading and self.exchange is ex and not ex.done
                    and isinstance(e, HttpParserUpgrade)):
                # the 101 asked for (tproxy.http.tunnel): what follows its
                # head is the new protocol's, after the head sent so far
                ex.upstream_read_done()
                ex.upstream_switched(data[e.args[0]:] if e.args else b"")
                return
            # (an upgrade was never asked for: Upgrade is not forwarded)
            if self.exchange is ex:
                if isinstance(e.__context__, _HeadTooBig):
                    self._head_too_big(ex)
                else:
                    self.exchange = None
                    ex.upstream_invalid(e)
            elif self.exchange is None and ex.done:
                log.warn("upstream {peer} sent bytes after its response: the "
                         "connection is closed", peer="{}:{}".format(*self.key[:2]))
            self.transport.abortConnection()
            due, self.due = self.due, None
            if due is not None:
                # a request was given the connection in this read: a new one
                self.pool.connect(due[0], due[1], fresh=True)
        else:
            if self.exchange is ex:
                # (_head_fed is not None: the read ended inside a head)
                if self._head_fed is None or self._count_head(ex, len(data)):
                    # the response goes on: the read timeout starts again
                    # (a complete one has put the connection in the pool)
                    self.set_deadline(self.pool.read_timeout)
        finally:
            self.reading = False
            ex.upstream_read_done()
        due = self.due
        if due is not None:
            # the read was the previous response's whole: the request
            # pipelined behind it may have the connection now
            self.due = None
            due[1].upstream_connected(self, True)

    def _count_head(self, ex, n):
        """
        A read of ``n`` bytes ended inside a response head.  The parsers keep
        the head (httptools: its last, incomplete line) until it ends, and
        ``on_header`` may not come for a while, or ever: the reads count.
        Return whether the response goes on.
        """
        if not self._checking:
            # the fields so far were not counted (they fit: see the class
            # doc): count them now, and the head's next reads field by field
            self._head_left = self.max_head - self._head_count()
        self._head_spans = True
        fed = self._head_fed
        if fed < 0:
            # the read that ended an interim (1xx) response: how much of it
            # is this head is unknown, it is not counted (one read at most)
            self._head_fed = 0
            return True
        fed += n
        if fed > self.max_head:
            self._head_too_big(ex)
            return False
        self._head_fed = fed
        return True

    def _head_count(self):
        """What the head read so far counts (as ``on_status`` and
        ``on_header`` count it)."""
        if not (self._reason or self._head):
            return 0     # (on_status not called yet)
        n = len(self._reason) + 17
        for name, value in self._head:
            n += len(name) + len(value) + 4
        return n

    def _head_too_big(self, ex):
        """The response head passed ``max_head``: 502, the connection dropped."""
        # the exchange aborts this connection and releases the peer
        ex.upstream_head_too_big(self.max_head)
        if self.exchange is ex:
            self.abort()

    def on_status(self, status):
        if self.exchange is None:
            # a second response after the one asked for (in the same read):
            # not HTTP we can use (checked here, not in an on_message_begin
            # callback: one call fewer per response)
            raise ValueError("unsolicited response")
        # (httptools calls it once per read the status line spans)
        self._reason += status
        if self._checking:
            # "HTTP/1.1 200 " and CRLF, and the CRLF that ends the head
            left = self._head_left - len(status) - 17
            if left < 0:
                raise _HeadTooBig()
            self._head_left = left

    def on_header(self, name, value):
        if self._checking:
            # ": " and CRLF (the head as received, but for extra spaces)
            left = self._head_left - len(name) - len(value) - 4
            if left < 0:
                raise _HeadTooBig()
            self._head_left = left
        self._head.append((name, value))

    def on_headers_complete(self):
        code = self.parser.get_status_code()
        if code < 100:
            # (httptools takes "099" for a status; the pure-Python parser
            # does not) not an interim response to wait past: invalid
            raise ValueError("status code below 100")
        if code == 101 and self.upgrading:
            # the upgrade asked for (tproxy.http.tunnel): no message follows
            self._informational = True
            head, self._head = self._head, []
            self.exchange.upstream_switching(self._reason, head)
            return
        if code < 200:
            # 1xx interim responses are not forwarded (Expect is answered by
            # tproxy itself; Upgrade is not forwarded); the next head is
            # counted afresh
            self._head = []
            self._informational = True
            self._head_left = self.max_head
            self._head_fed = -1
            self._reason = b""
            return
        self._head_fed = None
        self._informational = False
        head = self._head   # (start() makes the next exchange's list)
        ex = self.exchange
        head_only = self.head_only
        # (upstream_head says whether the body runs until the connection closes)
        self._eof_body = ex.upstream_head(code, self._reason, head,
                                          self.parser.should_keep_alive())
        if head_only and self.exchange is ex:
            # A response to HEAD has no body whatever its Content-Length says,
            # and httptools cannot be told so: the response ends here, and
            # the connection goes on with a fresh parser (this one would take
            # the next response for that body; what it still parses of this
            # read goes nowhere: no exchange)
            self.parser = HttpResponseParser(self)
            ex.upstream_end()

    def _whole_head_complete(self):
        """:meth:`on_headers_complete` of a head read whole (see the class doc)."""
        parser = self._whole
        code = parser.get_status_code()
        if code < 200:
            # (1xx went to the other parser) httptools takes "099" for a status
            raise ValueError("status code below 100")
        data, end, low = self._whole_read
        self._whole_read = None
        self._head_fed = None
        self._informational = False
        start = data.find(b"\r\n")    # the status line's end
        cleaned = clean_response_block(data, start, end, low)
        if cleaned is None:
            # another hop-by-hop field: its pairs, the usual way
            self._eof_body = self.exchange.upstream_head(
                code, self._reason, block_fields(data[start:end]), parser.should_keep_alive())
        else:
            self._eof_body = self.exchange.upstream_head(
                code, self._reason, None, parser.should_keep_alive(), cleaned)

    def on_body(self, data):
        ex = self.exchange
        if ex is not None:
            ex.upstream_body(data)

    def on_message_complete(self):
        if self._informational:
            self._informational = False
            return
        ex = self.exchange
        if ex is not None:
            ex.upstream_end()

    def connectionLost(self, reason):
        # they hold our bound methods: no cycle to collect
        self.parser = self._whole = self._feeding = None
        self._cancel_timer()
        self.pool._forget(self)
        ex, self.exchange = self.exchange, None
        if ex is not None:
            ex.upstream_lost(reason, self.requests > 1, self._eof_body)
        due, self.due = self.due, None
        if due is not None:
            # (given during a read that did not end: see dataReceived)
            self.pool.connect(due[0], due[1], fresh=True)
