# -*- test-case-name: tests.test_head_timeouts,tests.test_bare_cr,tests.test_head_limits -*-
"""
A request head that does not end in the read it began in, on a client
connection (:class:`~tproxy.http.connection.ProxyProtocol`, whose state
this reads and sets): its deadline (``header_timeout``), its limits while
the parser keeps a line that has not ended, and the checks of its request
line the parsers leave to the server (a bare CR before it, HTTP/0.9).

Most heads arrive whole, in the read they begin in: nothing here runs for
them.  The checks of the request line see it the same whether it came with
empty lines before it (RFC 9112 2.2: skipped), in the same read or in
earlier ones, and however it is split.
"""

from tproxy.http.parsing import bare_cr_first
from tproxy.http.target import METHOD_TOKEN

#: the first bytes of a request line kept while it has not ended: more than
#: the longest method a parser reads before it refuses one (GET_PARAMETER)
_LINE_START = 16


def bare_cr_ahead(conn, data):
    """
    Whether ``data``, read before a request line (the head holds only empty
    lines so far, if anything), holds a bare CR: with the CR that ended the
    empty lines of the earlier reads, if one did (its LF must come first).
    llhttp skips such a CR; the pure-Python parser refuses it itself.
    """
    return bare_cr_first(b"\r" + data if conn.line_bytes else data)


def unknown_method(conn, data):
    """
    Whether the request line whose method a parser refused in ``data`` (no
    request ended in this read) begins with a method token, one the parsers
    do not know (RFC 9110 9.1: ``501``), rather than with bytes that are not
    a method (``400``): the same answer from either parser however the
    line is split (each refuses a method at the first byte that makes it
    unknown to it, llhttp an RTSP method at the version; with the empty
    lines before it, in this read or in earlier ones).
    """
    if conn.carry:
        # the line began in an earlier read: count_head kept its start,
        # unless it began in the read that ended the request before it (a
        # 400 then, as for one refused in that read)
        start = conn.line_start if conn.head_bytes else None
        if start is None:
            return False
        data = start + data
    data = data.lstrip(b"\r\n")
    return METHOD_TOKEN.match(data) is not None and not data.startswith(b"PRI ")


def head_deadline(conn, when):
    """Run ``conn.check_timeout`` at ``when`` if its timer comes due later
    (and no response is being written: the connection's timer is then the
    keep-alive's, and ``exchange_done`` sets this deadline)."""
    t = conn.timer
    if t is not None and t.getTime() > when and conn.exchange is None:
        t.cancel()
        f = conn.factory
        conn.timer = f.clock.callLater(max(when - f.seconds(), 0.001), conn.check_timeout)


def count_head(conn, data):
    """
    All of ``data`` went into a head not complete yet.  The parsers keep a
    partial line until it ends (on_url / on_header may never come): a line
    that never ends must not grow without bound.

    ``conn.carry`` is 0 when the request line began in this read (only
    empty lines came before it, if anything: the reader does not carry
    them); ``conn.head_bytes`` counts the head's bytes from its request line
    (the empty lines', while there is none); ``conn.line_tail`` holds the
    last bytes of a request line that has not ended (enough to find
    ``" HTTP/"`` split across reads; ``b" HTTP/"`` itself once found), or
    ``None`` when its beginning was not seen (it began in the read that
    ended the request before it); ``conn.line_start`` its first bytes
    (:func:`unknown_method`), or ``None`` likewise.
    """
    f = conn.factory
    counted = conn.head_bytes
    if not counted and conn.heads:
        # a later request's head did not end in the read it began in:
        # header_timeout from its first byte, or from the end of the
        # response before it if later (check_timeout); the timer waits for
        # the keep-alive deadline: brought forward.  Empty lines before it
        # count as its beginning, as in nginx.
        start = conn.head_start
        if start is None:
            start = conn.blank_since = f.seconds()
        head_deadline(conn, max(start, conn.idle_since) + f.header_timeout)
    if conn.head_start is None:
        # only empty lines so far (the parsers skip them, and begin a
        # message at the next byte); a CR last may be a bare one
        conn.head_bytes = counted + len(data)
        if data:
            conn.line_bytes = 1 if data[-1] == 13 else 0
        if conn.head_bytes > f.max_line + f.max_header + 64:
            conn._bad_request(431, "request header fields too large")
        return
    if not conn.line_done:
        if not conn.carry:
            # the request line began in this read (after empty lines)
            data = line = data.lstrip(b"\r\n")
            counted = conn.line_bytes = 0
            conn.line_start = data[:_LINE_START]
        elif counted:
            line = conn.line_tail
            if line is not None:
                line += data
            start = conn.line_start
            if start is not None and len(start) < _LINE_START:
                conn.line_start = (start + data)[:_LINE_START]
        else:
            line = conn.line_start = None
        end = data.find(b"\n")
        if end >= 0:
            conn.line_done = True
            if line is not None and b" HTTP/" not in line[:len(line) - len(data) + end]:
                # no version: an HTTP/0.9 request line, read as one whose
                # header lines follow (a 400 once they end, see
                # on_headers_complete): answered now
                return conn._bad_request(400, "malformed request")
        elif line is not None:
            conn.line_tail = b" HTTP/" if b" HTTP/" in line else line[-5:]
        else:
            conn.line_tail = None
    conn.head_bytes = counted + len(data)
    nl = data.rfind(b"\n")
    if nl < 0:
        conn.line_bytes += len(data)
    else:
        conn.line_bytes = len(data) - nl - 1
    if not conn.line_done:
        if conn.head_bytes > f.max_line + 64:   # + method and version
            return conn._bad_request(414, "request target too long")
    elif conn.line_bytes > f.max_header_line:
        # a header line that does not end (nginx's
        # large_client_header_buffers: 400 there too)
        return conn._bad_request(400, "request header line too long")
    if conn.head_bytes > f.max_line + f.max_header + 64:
        conn._bad_request(431, "request header fields too large")
