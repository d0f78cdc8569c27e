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

from tproxy.http.parsing import HttpParserError, HttpParserUpgrade, HttpResponseParser
from tproxy.http.response_reader import (
    _CALLBACKS, _PARSERS, _RARE_HOP_FIELDS, _WHOLE_HEADS, PARSERS_KEPT, WHOLE_HEAD_MIN,
    ResponseHeadReader, _HeadTooBig, _WholeHead)


log = Logger(namespace=__name__)   # (a compiled module has no frame to take it from)

#: The default of ``proxy.max_upstream_header_size``: bytes of a response head.
MAX_HEADER_SIZE = 65536


class UpstreamProtocol(ResponseHeadReader, Protocol):
    """
    One connection to a peer, used by one exchange at a time.

    It is the producer registered on its own transport, so that the transport
    tells it when the peer stops reading (request-body backpressure) and it
    passes that on to its exchange.  It reads a response head as
    :class:`~tproxy.http.response_reader.ResponseHeadReader` says (the head's
    size limit, heads read whole).

    A response usually ends inside a read (``on_message_complete``), and
    the connection goes back to the pool from there, before the rest of the
    read is parsed.  A request pipelined behind may then take it at once
    (synchronously, from the same read): it is handed the connection only
    once the read is parsed whole (``due``, see :meth:`UpstreamPool.connect
    <tproxy.http.pool.UpstreamPool.connect>`), and if the read held bytes
    after the response (a second response, nginx's "upstream sent more data
    than specified"), the connection is dropped and the request gets a new
    one: bytes after a response are no request's answer.

    The response parser is lent to the connection for a response, not made
    for it: a parser of :data:`_PARSERS` at the response's first read (a
    new one when none is there), given back once a read ended its
    response, the connection back in the pool (:meth:`release`), between
    messages.  Their callbacks are those of one
    :class:`~tproxy.http.response_reader._Callbacks`, which
    passes each to the connection feeding one.  At 10,000 peers a parser
    per connection was llhttp's state, its settings and the callbacks
    bound to the connection, read from memory no cache held at each
    request; a few lent in turn stay in cache.  Bytes that begin a
    message after the response, in the read that ended it, are an
    unsolicited response (``on_message_begin``): the connection is
    dropped, its parser with it.
    """

    def __init__(self, pool, key):
        self.pool = pool
        self.key = key
        # Every name a connection sets while in use, stored at once (the
        # class defaults' values), and the defaults read per response: see
        # ProxyProtocol.__init__ (the pool opening several connections at
        # once had every one's dict made, no method call on it specialised).
        self.factory = None
        self.connected = 0
        self.transport = None
        self.parser = None
        self.max_head = MAX_HEADER_SIZE
        self.exchange = None
        self.head_only = False
        self.idle = False
        self.requests = 0
        self._head = None
        self._eof_body = False
        self._informational = False
        self._head_left = 0   # bytes the current head may still take
        # bytes of reads that ended inside the current head (None: after it;
        # -1: after a 1xx, see _count_head)
        self._head_fed = None
        self._head_spans = False   # an earlier read ended inside the current head
        self._reason = b""   # the reason phrase of the response being read
        self.deadline = 0.0
        self.timer = None   # its entry in pool.deadlines (see set_deadline)
        self._fires_at = -1.0   # when that entry is due; -1.0: none (see set_deadline)
        self._feeding = None   # the parser of the response being read
        self._checking = True   # this read's fields are counted (see the class doc)
        self.reading = False   # a read is being parsed (see the class doc)
        self.due = None   # (peer, exchange) given the connection during that read
        self.reading_paused = False   # see pause_reading
        self.upgrading = False   # a 101 goes to the exchange (tproxy.http.tunnel)
        self._whole = None   # the parser of heads read whole (see the class doc)
        self._whole_read = None   # (read, end of its head, the head lower-cased)

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        install_fast_write(self.transport)
        # (its parser is lent at each response: see the class doc)
        self.max_head = self.pool.max_header_size
        # (the factory lets go of the exchange: the connection outlives it)
        factory = self.factory
        exchange, factory.exchange = factory.exchange, None
        exchange.upstream_connected(self, False)

    # -- the one deadline: read/send timeouts while in use, idle timeout in the pool

    def set_deadline(self, seconds):
        """
        Time out ``seconds`` from now: the exchange's ``_timed_out`` while one
        uses the connection, else the pool closes it.  The deadlines of the
        pool's connections are kept in one queue (``pool.deadlines``, a
        :class:`tproxy.http.deadlines.Deadlines`, one reactor timer for
        them all); a connection has at most one entry there, ``timer``, due
        at ``_fires_at`` (-1.0: none).  A deadline moved later (nearly every
        call: the next request's, the idle timeout after a response) touches
        neither: the entry, when it comes due early, is queued again for the
        deadline then.  A deadline sooner than the entry (the idle timeout
        after a longer read timeout) replaces it.
        """
        pool = self.pool
        self.deadline = deadline = pool.seconds() + seconds
        fires = self._fires_at
        if fires > deadline:
            timer, self.timer = self.timer, None
            pool.deadlines.cancel(timer)
        elif fires >= 0.0:
            return
        self._fires_at = deadline
        self.timer = pool.deadlines.add(deadline, self)

    def _deadline(self, now):
        # (pool.deadlines: the entry came due at ``now``, and is dropped)
        deadline = self.deadline
        if deadline > now:
            self._fires_at = deadline
            self.timer = self.pool.deadlines.add(deadline, self)
            return
        self._fires_at = -1.0
        if self.exchange is not None:
            self.exchange.upstream_timed_out()
        elif self.idle:
            self.pool._expire(self)

    def _cancel_timer(self):
        timer, self.timer = self.timer, None
        self._fires_at = -1.0
        if timer is not None:
            self.pool.deadlines.cancel(timer)

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
        # the response's fields and reason let go now, while a cache holds
        # them: kept until the connection's next exchange (10,000 requests
        # later at 10,000 peers), they were freed from memory no cache held,
        # and walked by the collector's young collections meanwhile
        self._head = None
        self._reason = b""
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
            if parser is None:
                parser = self.parser = (_PARSERS.pop() if _PARSERS
                                        else HttpResponseParser(_CALLBACKS))
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
            # (a whole head in a small read is not counted: see ResponseHeadReader)
            self._checking = n * 5 > self.max_head * 4
        else:
            parser = self._feeding
            self._checking = True
        self.reading = True
        callbacks = _CALLBACKS
        feeding = callbacks.conn   # (another connection's read, if this one is nested in it)
        callbacks.conn = self
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
                cause = e.__context__
                if isinstance(cause, _HeadTooBig):
                    self._head_too_big(ex)
                elif cause is not None and not isinstance(cause, (ValueError,
                                                                  HttpParserError)):
                    # a callback raised: a defect of tproxy's, not the peer's
                    self.exchange = None
                    ex.internal_error(cause)
                else:
                    self.exchange = None
                    ex.upstream_invalid(e)
            elif self.exchange is None and ex.done:
                log.warn("upstream {peer} sent bytes after its response: the "
                         "connection is closed", peer=self._peer().address)
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
            elif self.idle or self.due is not None:
                # the response ended in this read, the connection back in
                # the pool: its parser is between messages (see the class doc)
                parser = self.parser
                if parser is not None:
                    self.parser = self._feeding = None
                    if len(_PARSERS) < PARSERS_KEPT:
                        _PARSERS.append(parser)
        finally:
            callbacks.conn = feeding
            self.reading = False
            ex.upstream_read_done()
        due = self.due
        if due is not None:
            # the read was the previous response's whole: the request
            # pipelined behind it may have the connection now
            self.due = None
            due[1].upstream_connected(self, True)

    def _peer(self):
        # (its key in the pool: the peer, or (peer, creator) for TLS)
        key = self.key
        return key[0] if type(key) is tuple else key

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
