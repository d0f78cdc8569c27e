# -*- test-case-name: tests.test_pyparser -*-
"""
A strict pure-Python HTTP/1.x parser, a drop-in replacement for httptools.

``HttpRequestParser`` and ``HttpResponseParser`` have the API of httptools
0.9.0 (which wraps llhttp 9, the parser of Node.js), the same callbacks in
the same order, and llhttp's framing and strictness in its default
(non-lenient) mode; the exceptions mirror httptools' own.  The server uses
httptools when it can and this module on PyPy, whose JIT makes it the faster
of the two there (httptools only runs on PyPy through cpyext), or wherever
httptools is missing.  Python 3.9+ and the stdlib only.

How: the data is searched with ``bytes.find`` and validated with
``bytes.translate``, a few precompiled regular expressions and a cache of
known header names, never byte by byte in Python.  A head (start line and
header fields) that arrives whole is parsed in one go; an incomplete one is
kept in a ``bytearray`` (amortised O(n) however it is split) and only
checked for what can be rejected early: an impossible method or protocol (a
TLS handshake, an SSH banner...), a bare CR or LF, a header line whose bytes
so far cannot begin a valid one; but a request line is parsed as soon as
it is complete (``on_url``, the method and version known, or its error),
as llhttp does, and the fields once the head is.
Bodies are never buffered: each ``feed_data`` call passes the body bytes it
holds to ``on_body``, without a copy when the whole piece is body.

Differences from httptools:

* ``on_url`` and ``on_status`` are called once per message with the whole
  value; httptools calls them once per ``feed_data`` call the value spans
  (sometimes with ``b""``), so callers must concatenate, as with
  ``on_body``.  ``on_body`` is never called with ``b""`` (httptools does so
  when fed ``b""`` in a body).  ``on_header`` is the same (httptools also
  joins split fields).
* ``on_url`` comes once the request line is complete (httptools: once
  the target is, before the version), ``on_status`` and ``on_header`` once
  the head is (httptools: as they are read).
* When the input is invalid, the callbacks before the error may differ
  (httptools reports the start of a head before it is complete), and the
  error may come with a later ``feed_data`` call (when the line or the head
  completes) or have another message.  Both reject the same messages, except:
* Stricter than llhttp, where its leniency is useless or unsafe in a proxy:
  - a request line without a version (HTTP/0.9; llhttp then still parses
    header fields and a body, and reads ``POST /xHTTP/1.1`` as such a line),
    the ``RTSP/`` and ``ICE/`` protocols and their methods, and ``PRI``
    (llhttp rejects it too, after ``on_url``);
  - a status code below 100, and a control character other than HTAB in
    the reason phrase (llhttp accepts ``000`` and NUL bytes there);
  - a Content-Length or chunk size above 2**63 - 1 (llhttp: 2**64 - 1);
  - a request whose Transfer-Encoding does not end in ``chunked`` fails
    *before* ``on_headers_complete`` (with llhttp: just after it);
  - a chunk-size line (with its extensions) longer than ``MAX_CHUNK_LINE``
    and a trailer section longer than ``MAX_TRAILERS``, so that they cannot
    grow without bound (llhttp streams them).  The head has no limit here:
    the server counts the bytes it feeds before ``on_headers_complete``.
* ``set_dangerous_leniencies`` honours ``lenient_chunked_length`` (which
  the server sets for a chunked request's trailer section only); the
  other leniencies are accepted and ignored.

Shared with httptools, for the caller to handle:

* There is no end-of-input call.  A response delimited by the connection
  close (neither Content-Length nor chunked) never gets
  ``on_message_complete``; ``should_keep_alive()`` is False for it in
  ``on_headers_complete``, and the caller ends the message when the
  connection closes.
* A response parser cannot be told that a response answers HEAD (or is a
  2xx to CONNECT): it waits for the body the headers announce.  The caller
  must end such a message itself at ``on_headers_complete`` and not feed
  this parser again (a new parser for the next response, or close).
* ``should_keep_alive()`` is meaningful from ``on_headers_complete`` to
  ``on_message_complete``: afterwards the message's flags are reset.
  HTTP/1.0 keeps alive only with ``Connection: keep-alive`` (``close`` is
  then ignored); data after a message that does not keep the connection
  alive is an error.
* An upgrade (``Connection: upgrade`` with ``Upgrade``, CONNECT, or a 101
  response) raises ``HttpParserUpgrade(offset)`` after
  ``on_message_complete``, *offset* being where the other protocol starts in
  the data just fed; a body the headers announce is not read.  Feeding more
  data then parses HTTP again.  A 101 without the upgrade headers fails.
* An exception raised by a callback leaves ``feed_data`` as
  ``HttpParserCallbackError``, whose ``__context__`` is the original
  (``__cause__`` is None).  After any error the parser is dead:
  ``feed_data`` raises the same error again.
"""

__all__ = (
    "HttpRequestParser", "HttpResponseParser",
    "HttpParserError", "HttpParserCallbackError",
    "HttpParserInvalidStatusError", "HttpParserInvalidMethodError",
    "HttpParserInvalidURLError", "HttpParserUpgrade",
    "MAX_CHUNK_LINE", "MAX_TRAILERS",
)


from tproxy.http.pybuffer import _Buffering
# (the exceptions and limits are this module's API too)
from tproxy.http.pygrammar import (  # noqa: F401
    HttpParserError, HttpParserInvalidStatusError, HttpParserCallbackError,
    HttpParserInvalidMethodError, HttpParserInvalidURLError, HttpParserUpgrade,
    MAX_CHUNK_LINE, MAX_TRAILERS, _BODY, _CHUNK_CRLF, _CHUNK_DATA, _CHUNK_LINE,
    _CHUNK_SIZE, _CLOSED, _EOF_BODY, _Error, _FIELDS, _HEAD, _MAX_SIZE, _START,
    _TRAILERS, _UPGRADED, _fail)


class _HttpParser(_Buffering):

    __slots__ = (
        "_is_request", "_state", "_buf", "_scan", "_checked",
        "_remaining", "_flags", "_major", "_minor", "_method", "_status",
        "_upgrade", "_error", "_lenient_length",
        "_on_message_begin", "_on_url", "_on_status", "_on_header",
        "_on_headers_complete", "_on_body", "_on_message_complete",
        "_on_chunk_header", "_on_chunk_complete",
    )

    def _init(self, protocol, is_request):
        self._is_request = is_request
        self._state = _START
        self._buf = None        # bytearray holding an incomplete head/line
        self._scan = 0          # how far _buf was searched for its end
        self._checked = 0       # how far _buf was checked for bare CR/LF
        self._remaining = 0
        self._flags = 0
        self._major = 0
        self._minor = 0
        self._method = b"DELETE"  # what httptools reports before a method
        self._status = 0
        self._upgrade = False
        self._error = None
        self._lenient_length = False
        self._on_message_begin = getattr(protocol, "on_message_begin", None)
        self._on_url = None
        self._on_status = None
        self._on_header = getattr(protocol, "on_header", None)
        self._on_headers_complete = getattr(protocol, "on_headers_complete", None)
        self._on_body = getattr(protocol, "on_body", None)
        self._on_message_complete = getattr(protocol, "on_message_complete", None)
        self._on_chunk_header = getattr(protocol, "on_chunk_header", None)
        self._on_chunk_complete = getattr(protocol, "on_chunk_complete", None)

    # -- public API (get_http_version, should_keep_alive, should_upgrade:
    # -- tproxy.http.pyhead) ---------------------------------------------------

    def set_dangerous_leniencies(
            self, lenient_headers=None, lenient_chunked_length=None,
            lenient_keep_alive=None, lenient_transfer_encoding=None,
            lenient_version=None, lenient_data_after_close=None,
            lenient_optional_lf_after_cr=None,
            lenient_optional_cr_before_lf=None,
            lenient_optional_crlf_after_chunk=None,
            lenient_spaces_after_chunk_size=None):
        """
        ``lenient_chunked_length`` as llhttp's: a Content-Length beside a
        Transfer-Encoding is not an error (the reader sets it while a
        chunked request's body and trailer section are read, where a
        Content-Length trailer field has no say in the framing); the
        others are accepted and ignored: this parser is not lenient.
        """
        if lenient_chunked_length is not None:
            self._lenient_length = bool(lenient_chunked_length)

    def feed_data(self, data):
        err = self._error
        if err is not None:
            raise err.__class__(*err.args)
        try:
            offset = self._feed(data)
        except _Error as e:
            err = e.cls(e.msg)
        except BaseException as e:
            err = HttpParserCallbackError("callback error: %r" % (e,))
            err.__context__ = e
        else:
            if offset >= 0:
                raise HttpParserUpgrade(offset)
            return
        self._error = err
        self._buf = None
        raise err

    # -- internals -----------------------------------------------------------

    def _feed(self, data):
        """
        Parse ``data``; return -1, or the offset in ``data`` where an
        upgraded protocol starts.
        """
        if data.__class__ is not bytes:
            data = bytes(data)
        shift = 0
        buf = self._buf
        if buf is not None:
            buf += data
            if not self._buffer_complete(buf):
                return -1
            shift = len(buf) - len(data)
            data = bytes(buf)
            self._buf = None
        n = len(data)
        pos = 0
        state = self._state

        if state == _UPGRADED:
            state = self._after_message()

        while pos < n:
            if state == _START:
                c = data[pos]
                if c == 10:
                    pos += 1
                    continue
                if c == 13:
                    # empty lines (CRLF, or a bare LF) before a message are
                    # skipped (RFC 9112 2.2); a bare CR is invalid there
                    if pos + 1 == n:
                        self._stash(data, pos, _START)   # its LF may come next
                        return -1
                    if data[pos + 1] != 10 and self._is_request:
                        _fail("Bare CR before the request line")
                    pos += 1
                    continue
                state = _HEAD
                self._state = _HEAD
                if self._on_message_begin is not None:
                    self._on_message_begin()

            if state == _HEAD:
                # (in the same pass as the start: the usual message, its
                # head and its body, is one pass of this loop)
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    self._stash(data, pos, _HEAD)
                    return -1
                state = self._head(data, pos, end)
                pos = end + 4
                if state == _UPGRADED:
                    self._state = state
                    return pos - shift
                if pos == n:
                    break

            if state == _BODY or state == _CHUNK_DATA:
                remaining = self._remaining
                end = pos + remaining
                if end > n:
                    self._remaining = end - n
                    if self._on_body is not None:
                        self._on_body(data[pos:] if pos else data)
                    break
                if self._on_body is not None:
                    self._on_body(data[pos:end] if pos or end != n else data)
                pos = end
                self._remaining = 0
                if state == _CHUNK_DATA:
                    state = _CHUNK_CRLF
                else:
                    state = self._message_complete()

            elif state == _CHUNK_SIZE:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    if n - pos > MAX_CHUNK_LINE:
                        _fail("Chunk size line too long")
                    self._stash(data, pos, _CHUNK_SIZE)
                    return -1
                if nl - pos > MAX_CHUNK_LINE:
                    _fail("Chunk size line too long")
                m = _CHUNK_LINE.fullmatch(data, pos, nl)
                if m is None:
                    self._chunk_line_error(data[pos:nl])
                digits = m.group(1)
                if len(digits) > 16:
                    digits = digits.lstrip(b"0") or b"0"
                    if len(digits) > 16:
                        _fail("Chunk size overflow")
                size = int(digits, 16)
                if size > _MAX_SIZE:
                    _fail("Chunk size overflow")
                if self._on_chunk_header is not None:
                    self._on_chunk_header()
                if size:
                    self._remaining = size
                    state = _CHUNK_DATA
                    pos = nl + 1
                else:
                    # Keep the CRLF: the trailer section ends at CRLFCRLF.
                    state = _TRAILERS
                    pos = nl - 1

            elif state == _CHUNK_CRLF:
                if n - pos < 2:
                    if data[pos] != 13:
                        self._chunk_crlf_error(data[pos:])
                    self._stash(data, pos, _CHUNK_CRLF)
                    return -1
                if not data.startswith(b"\r\n", pos):
                    self._chunk_crlf_error(data[pos:pos + 2])
                pos += 2
                state = _CHUNK_SIZE
                if self._on_chunk_complete is not None:
                    self._on_chunk_complete()

            elif state == _TRAILERS:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    if n - pos > MAX_TRAILERS:
                        _fail("Trailer section too long")
                    self._stash(data, pos, _TRAILERS)
                    return -1
                if end - pos > MAX_TRAILERS:
                    _fail("Trailer section too long")
                if end > pos:
                    self._fields(data[pos + 2:end + 2], True)
                pos = end + 4
                if self._on_chunk_complete is not None:
                    self._on_chunk_complete()
                state = self._message_complete()

            elif state == _FIELDS:
                # the rest of a head whose request line was parsed before
                # the head was complete (_early_line): the line's CRLF, then
                # the fields, ended as a trailer section
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:     # pragma: no cover - only fed a complete head
                    self._stash(data, pos, _FIELDS)
                    return -1
                if end > pos:
                    self._fields(data[pos + 2:end + 2], False)
                pos = end + 4
                state = self._headers_complete()
                if state == _UPGRADED:
                    self._state = state
                    return pos - shift

            elif state == _EOF_BODY:
                if self._on_body is not None:
                    self._on_body(data[pos:] if pos else data)
                break

            elif state == _CLOSED:
                if data[pos:].translate(None, b"\r\n"):
                    _fail("Data after `Connection: close`")
                break

            elif state != _START:  # pragma: no cover
                _fail("Internal error: state %r" % (state,))

        self._state = state
        return -1

    def _message_complete(self):
        if self._on_message_complete is not None:
            self._on_message_complete()
        return self._after_message()

    def _after_message(self):
        keep_alive = self.should_keep_alive()
        self._flags = 0
        self._remaining = 0
        return _START if keep_alive else _CLOSED


class HttpRequestParser(_HttpParser):
    """Parses requests, on the server side."""

    __slots__ = ()

    def __init__(self, protocol):
        self._init(protocol, True)
        self._on_url = getattr(protocol, "on_url", None)

    def get_method(self):
        return self._method


class HttpResponseParser(_HttpParser):
    """Parses responses, on the client side."""

    __slots__ = ()

    def __init__(self, protocol):
        self._init(protocol, False)
        self._on_status = getattr(protocol, "on_status", None)

    def get_status_code(self):
        return self._status
