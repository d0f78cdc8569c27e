# -*- test-case-name: tests.test_proxy,tests.test_proxy_connections -*-
"""
How an upstream connection (:class:`tproxy.http.upstream.UpstreamProtocol`)
reads a response head: the parser's callbacks, the head's size limit, and
heads read whole (:class:`ResponseHeadReader`); the callbacks of the
parsers lent to connections (:class:`_Callbacks`).
"""

from tproxy.http.bases import UpstreamConnection
from tproxy.http.parsing import NAME
from tproxy.http.response_fields import (
    _GOOD_REASONS, RARE_HOP_FIELDS, block_fields, check_reason, clean_response_block)

#: heads read whole go through a parser without ``on_header`` (see
#: ResponseHeadReader): httptools only, whose llhttp is strict on line ends
_WHOLE_HEADS = NAME == "httptools"
_RARE_HOP_FIELDS = RARE_HOP_FIELDS.search
#: the bytes from which a head read whole is cut from the read instead of
#: reported field by field (see ResponseHeadReader): the searches of the cut
#: cost about what ~7 fields' callbacks do (~30 bytes each)
WHOLE_HEAD_MIN = 256


def _keeps_alive(version, fields):
    """Whether a response of HTTP ``version`` (``"1.1"``) with these
    ``(name, value)`` fields leaves its connection open, its length aside
    (RFC 9112 9.3)."""
    tokens = set()
    for name, value in fields:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    if b"close" in tokens:
        return False
    return version == "1.1" or b"keep-alive" in tokens


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


class ResponseHeadReader(UpstreamConnection):
    """
    The response-head half of :class:`tproxy.http.upstream.UpstreamProtocol`
    (a mixin: the state is the protocol's).

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

    With httptools, a response whose first read holds its whole head, of
    at least :data:`WHOLE_HEAD_MIN` bytes (within 4/5 of ``max_head``, not
    1xx, no Transfer-Encoding, not to ``HEAD`` or an upgrade) is parsed by a
    second parser without ``on_header`` (``_whole``, made on first use): no
    Python call per field; the head's fields are cut from the read's bytes
    at the end of the head (:func:`~tproxy.http.response_fields.clean_response_block`)
    and sent on as received (a field's spacing kept; the pairs a
    ``header_filter`` sees are the same).  On CPython a Python call per
    field costs ~2,000 instructions, the searches of the cut ~14,000 in all:
    smaller heads are reported field by field.  Each response is parsed by
    one parser from its first read to its end (``_feeding``); both are
    between messages when a response begins.
    """

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
        reason = self._reason
        if reason != b"OK" and reason not in _GOOD_REASONS:   # (see check_reason)
            check_reason(reason)
        self._head_fed = None
        self._informational = False
        head = self._head   # (start() makes the next exchange's list)
        ex = self.exchange
        head_only = self.head_only
        keep = self.parser.should_keep_alive()
        if head_only and not keep:
            # (the parser waits for a body until the close when there is no
            # length: not in a response to HEAD)
            keep = _keeps_alive(self.parser.get_http_version(), head)
        # (upstream_head says whether the body runs until the connection closes)
        self._eof_body = ex.upstream_head(code, reason, head, keep)
        if head_only and self.exchange is ex:
            # A response to HEAD has no body whatever its Content-Length says,
            # and httptools cannot be told so: the response ends here, and
            # the connection goes on with another parser (one lent at its
            # next response), not given back.  This one parses
            # the rest of the read, for no exchange: bytes there (a body
            # sent all the same, whose rest may come in a later read and be
            # taken for the next response) make ``on_body`` or ``on_status``
            # raise, and the connection is not used again
            self.parser = None
            ex.upstream_end()

    def on_message_begin(self):
        if self.exchange is None:
            # a second response after the one asked for, in the read that
            # ended it (see UpstreamProtocol; on_status says it for the
            # parser of heads read whole)
            raise ValueError("unsolicited response")

    def on_body(self, data):
        ex = self.exchange
        if ex is not None:
            ex.upstream_body(data)
        elif self.head_only:
            # a body after a response to HEAD (see on_headers_complete)
            raise ValueError("bytes after a response to HEAD")

    def on_message_complete(self):
        if self._informational:
            self._informational = False
            return
        ex = self.exchange
        if ex is not None:
            ex.upstream_end()

    def _whole_head_complete(self):
        """:meth:`on_headers_complete` of a head read whole (see the class doc)."""
        parser = self._whole
        code = parser.get_status_code()
        if code < 200:
            # (1xx went to the other parser) httptools takes "099" for a status
            raise ValueError("status code below 100")
        reason = self._reason
        if reason != b"OK" and reason not in _GOOD_REASONS:
            check_reason(reason)
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


class _Callbacks(object):
    """The callbacks of the lent parsers (see
    :class:`~tproxy.http.upstream.UpstreamProtocol`):
    those of the connection feeding one now (``conn``).  (Called through
    the class: a C call in the compiled build, no look-up of the method on
    the connection first.)"""

    __slots__ = ("conn",)

    def __init__(self):
        self.conn = None

    def on_message_begin(self):
        ResponseHeadReader.on_message_begin(self.conn)

    def on_status(self, status):
        ResponseHeadReader.on_status(self.conn, status)

    def on_header(self, name, value):
        ResponseHeadReader.on_header(self.conn, name, value)

    def on_headers_complete(self):
        ResponseHeadReader.on_headers_complete(self.conn)

    def on_body(self, data):
        ResponseHeadReader.on_body(self.conn, data)

    def on_message_complete(self):
        ResponseHeadReader.on_message_complete(self.conn)


_CALLBACKS = _Callbacks()
#: the parsers not lent now, all between messages (at most PARSERS_KEPT)
_PARSERS = []
#: the parsers kept for the next responses (more were lent at once: dropped)
PARSERS_KEPT = 256
