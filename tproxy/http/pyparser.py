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
header fields) is parsed once it is complete; until then it is kept in a
``bytearray`` (amortised O(n) however it is split) and only checked for what
can be rejected early: an impossible method or protocol (a TLS handshake, an
SSH banner...), a bare CR or LF.  Bodies are never buffered: each
``feed_data`` call passes the body bytes it holds to ``on_body``, without a
copy when the whole piece is body.

Differences from httptools:

* ``on_url`` and ``on_status`` are called once per message with the whole
  value; httptools calls them once per ``feed_data`` call the value spans
  (sometimes with ``b""``), so callers must concatenate, as with
  ``on_body``.  ``on_body`` is never called with ``b""`` (httptools does so
  when fed ``b""`` in a body).  ``on_header`` is the same (httptools also
  joins split fields).
* When the input is invalid, the callbacks before the error may differ
  (httptools reports the start of a head before it is complete), and the
  error may come with a later ``feed_data`` call (when the head completes)
  or have another message.  Both reject the same messages, except:
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
* ``set_dangerous_leniencies`` is accepted and ignored.

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


from tproxy.http.pygrammar import (  # noqa: F401 (the exceptions are this module's API)
    HttpParserError, HttpParserInvalidStatusError,
    HttpParserCallbackError, HttpParserInvalidMethodError, HttpParserInvalidURLError,
    HttpParserUpgrade, MAX_CHUNK_LINE, MAX_TRAILERS, _ABSOLUTE_FORM, _AUTHORITY_FORM,
    _BODY, _CHUNK_CRLF, _CHUNK_DATA, _CHUNK_LINE, _CHUNK_SIZE, _CLOSED, _CL_VALUE,
    _CONNECTION, _CONTENT_LENGTH, _EOF_BODY, _Error, _FIELD_CHARS, _F_CHUNKED, _F_CL,
    _F_CLOSE, _F_CONN_UPGRADE, _F_KEEP_ALIVE, _F_TE, _F_UPGRADE, _HEAD, _MAX_METHOD,
    _MAX_NAMES, _MAX_SIZE, _METHODS, _NAMES, _REQUEST_LINE, _SPECIAL, _START, _STATUS_LINE,
    _TOKEN_CHARS, _TRAILERS, _TRANSFER_ENCODING, _UPGRADED, _VCHARS, _VERSIONS,
    _check_cr_lf, _fail, _is_chunked_element, _Diagnosis)


class _HttpParser(_Diagnosis):

    __slots__ = (
        "_is_request", "_state", "_buf", "_scan", "_checked",
        "_remaining", "_flags", "_major", "_minor", "_method", "_status",
        "_upgrade", "_error",
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
        self._on_message_begin = getattr(protocol, "on_message_begin", None)
        self._on_url = None
        self._on_status = None
        self._on_header = getattr(protocol, "on_header", None)
        self._on_headers_complete = getattr(protocol, "on_headers_complete", None)
        self._on_body = getattr(protocol, "on_body", None)
        self._on_message_complete = getattr(protocol, "on_message_complete", None)
        self._on_chunk_header = getattr(protocol, "on_chunk_header", None)
        self._on_chunk_complete = getattr(protocol, "on_chunk_complete", None)

    # -- public API ----------------------------------------------------------

    def set_dangerous_leniencies(
            self, lenient_headers=None, lenient_chunked_length=None,
            lenient_keep_alive=None, lenient_transfer_encoding=None,
            lenient_version=None, lenient_data_after_close=None,
            lenient_optional_lf_after_cr=None,
            lenient_optional_cr_before_lf=None,
            lenient_optional_crlf_after_chunk=None,
            lenient_spaces_after_chunk_size=None):
        """Accepted for compatibility; this parser is never lenient."""

    def get_http_version(self):
        return "%d.%d" % (self._major, self._minor)

    def should_keep_alive(self):
        flags = self._flags
        if self._major > 0 and self._minor > 0:
            if flags & _F_CLOSE:
                return False
        elif not flags & _F_KEEP_ALIVE:
            return False
        return not self._needs_eof()

    def should_upgrade(self):
        return self._upgrade

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

    def _needs_eof(self):
        if self._is_request:
            return False
        status = self._status
        if status // 100 == 1 or status == 204 or status == 304:
            return False
        flags = self._flags
        if flags & _F_TE and not flags & _F_CHUNKED:
            return True
        return not flags & (_F_CHUNKED | _F_CL)

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

            elif state == _START:
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

            elif state == _HEAD:
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    self._stash(data, pos, _HEAD)
                    return -1
                state = self._head(data, pos, end)
                pos = end + 4
                if state == _UPGRADED:
                    self._state = state
                    return pos - shift

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

            elif state == _EOF_BODY:
                if self._on_body is not None:
                    self._on_body(data[pos:] if pos else data)
                break

            elif state == _CLOSED:
                if data[pos:].translate(None, b"\r\n"):
                    _fail("Data after `Connection: close`")
                break

            else:  # pragma: no cover
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

    # -- buffering -------------------------------------------------------------

    def _stash(self, data, pos, state):
        """Keep ``data[pos:]``, an incomplete head or line, for the next feed."""
        self._state = state
        self._buf = buf = bytearray(data[pos:] if pos else data)
        self._scan = 0
        self._checked = 0
        self._buffer_complete(buf)

    def _buffer_complete(self, buf):
        """
        Whether the buffered head/line is now complete; if not, check it
        for early errors.
        """
        state = self._state
        n = len(buf)
        if state == _HEAD or state == _TRAILERS:
            if buf.find(b"\r\n\r\n", self._scan - 3 if self._scan > 3 else 0) >= 0:
                return True
            if state == _TRAILERS and n > MAX_TRAILERS:
                _fail("Trailer section too long")
            check_start = state == _HEAD and self._scan <= _MAX_METHOD
            self._scan = n
            self._check_line_ends(buf)
            if check_start:
                self._check_start(buf)
            return False
        if state == _CHUNK_SIZE:
            if buf.find(b"\n", self._scan) >= 0:
                return True
            if n > MAX_CHUNK_LINE:
                _fail("Chunk size line too long")
            self._scan = n
            return False
        # _CHUNK_CRLF, or _START with a CR (both wait for the byte after it)
        if n >= 2:
            return True
        if buf[0] != 13:
            self._chunk_crlf_error(bytes(buf))
        return False

    def _head(self, data, pos, end):
        """Parse the head ``data[pos:end]``; return the next state."""
        eol = data.find(b"\r\n", pos, end + 2)
        if self._is_request:
            self._request_line(data[pos:eol])
        else:
            self._status_line(data[pos:eol])
        if eol < end:
            self._fields(data[eol + 2:end + 2], False)
        return self._headers_complete()

    def _request_line(self, line):
        m = _REQUEST_LINE.fullmatch(line)
        if m is None:
            method, target, version = self._request_line_parts(line)
        else:
            method, target = m.group(1, 2)
            version = None
            self._major = line[-3] - 48
            self._minor = line[-1] - 48
        if method not in _METHODS:
            _fail("Invalid method encountered", HttpParserInvalidMethodError)
        self._method = method
        first = target[0]
        if method == b"CONNECT":
            m = _AUTHORITY_FORM.fullmatch(target)
            host = m is not None and m.group(1)
        elif first == 47 or first == 42:    # "/" or "*"
            # llhttp's path, query and fragment grammar accepts any VCHAR
            # (0x21-0x7E) there: _REQUEST_LINE (or _request_line_parts)
            # checked that already.
            m = True
            host = None
        else:
            m = _ABSOLUTE_FORM.fullmatch(target)
            host = m is not None and m.group(1)
        if m is None or host and b"@@" in host:
            _fail("Invalid characters in url", HttpParserInvalidURLError)
        if self._on_url is not None:
            self._on_url(target)
        if version is not None:
            self._version(version)
        if self._major * 10 + self._minor not in _VERSIONS:
            _fail("Invalid HTTP version")

    def _request_line_parts(self, line):
        """Split a request line that is not of the simplest form (or invalid)."""
        _check_cr_lf(line)
        method, space, rest = line.partition(b" ")
        if method not in _METHODS:
            _fail("Invalid method encountered", HttpParserInvalidMethodError)
        if not space:
            _fail("Expected space after method", HttpParserInvalidMethodError)
        rest = rest.lstrip(b" ")
        space = rest.find(b" ")
        if space < 0:
            if not rest or rest.translate(None, _VCHARS):
                _fail("Invalid characters in url", HttpParserInvalidURLError)
            _fail("Missing HTTP version (HTTP/0.9 is not supported)")
        target = rest[:space]
        if target.translate(None, _VCHARS):
            _fail("Invalid characters in url", HttpParserInvalidURLError)
        return method, target, rest[space:].lstrip(b" ")

    def _version(self, version):
        """Set the version from ``b"HTTP/x.y"``, or fail."""
        if version[:5] != b"HTTP/":
            _fail("Expected HTTP/")
        if (len(version) < 8 or not 48 <= version[5] <= 57 or version[6] != 46
                or not 48 <= version[7] <= 57):
            _fail("Invalid HTTP version")
        if len(version) > 8:
            _fail("Expected CRLF after version")
        self._major = version[5] - 48
        self._minor = version[7] - 48

    def _status_line(self, line):
        m = _STATUS_LINE.fullmatch(line)
        if m is None:
            self._status_line_error(line)
        self._major = line[5] - 48
        self._minor = line[7] - 48
        if self._major * 10 + self._minor not in _VERSIONS:
            _fail("Invalid HTTP version")
        self._status = int(m.group(3))
        if m.group(4) is not None and self._on_status is not None:
            self._on_status(m.group(5))

    def _fields(self, block, trailers):
        """
        Process header (or trailer) fields: ``block`` is their lines, each
        ending with CRLF.
        """
        lines = block.splitlines()
        # Only field characters and one CRLF per line (what is left after
        # deleting the field characters), so no CTL, no bare CR or LF.
        if block.translate(None, _FIELD_CHARS) != b"\r\n" * len(lines):
            return self._fields_slow(block.split(b"\r\n"), trailers)
        on_header = self._on_header
        flags = self._flags
        names = _NAMES
        for i in range(len(lines)):
            name, colon, value = lines[i].partition(b":")
            kind = names.get(name)
            if kind is None or not colon:
                if not colon or not name or name.translate(None, _TOKEN_CHARS):
                    return self._fields_slow(lines[i:] + [b""], trailers, i)
                kind = _SPECIAL.get(name.lower(), 0)
                if len(names) < _MAX_NAMES:
                    names[name] = kind
            value = value.lstrip(b" \t")
            if kind:
                flags = self._flags = self._special(kind, value, flags)
            if on_header is not None:
                on_header(name, value)

    def _special(self, kind, value, flags):
        """Apply a framing-related header field; return the new flags."""
        if kind == _CONTENT_LENGTH:
            if flags & _F_TE:
                _fail("Content-Length can't be present with Transfer-Encoding")
            if flags & _F_CL:
                _fail("Duplicate Content-Length")
            if not value.isdigit():
                if not value:
                    _fail("Empty Content-Length")
                m = _CL_VALUE.fullmatch(value)
                if m is None:
                    _fail("Invalid character in Content-Length")
                value = m.group(1)
            if len(value) > 18:
                value = value.lstrip(b"0") or b"0"
                if len(value) > 19:
                    _fail("Content-Length overflow")
            length = int(value)
            if length > _MAX_SIZE:
                _fail("Content-Length overflow")
            self._remaining = length
            return flags | _F_CL
        if kind == _TRANSFER_ENCODING:
            if flags & _F_CL:
                _fail("Transfer-Encoding can't be present with Content-Length")
            if not value:
                _fail("Empty Transfer-Encoding")
            if flags & _F_CHUNKED and self._is_request:
                _fail("Invalid `Transfer-Encoding` header value")
            flags = (flags | _F_TE) & ~_F_CHUNKED
            value = value.lower()
            if value == b"chunked":
                return flags | _F_CHUNKED
            elements = value.split(b",")
            if _is_chunked_element(elements[-1]):
                flags |= _F_CHUNKED
            if self._is_request:
                for element in elements[:-1]:
                    if _is_chunked_element(element):
                        _fail("Invalid `Transfer-Encoding` header value")
            return flags
        if kind == _CONNECTION:
            value = value.lower()
            if value == b"keep-alive":
                return flags | _F_KEEP_ALIVE
            if value == b"close":
                return flags | _F_CLOSE
            for element in value.split(b","):
                element = element.strip(b" \t")
                if element == b"close":
                    flags |= _F_CLOSE
                elif element == b"keep-alive":
                    flags |= _F_KEEP_ALIVE
                elif element == b"upgrade":
                    flags |= _F_CONN_UPGRADE
            return flags
        # Upgrade
        if value:
            flags |= _F_UPGRADE
        return flags

    def _headers_complete(self):
        """After the head: call on_headers_complete, return the next state."""
        flags = self._flags
        is_request = self._is_request
        if flags & _F_UPGRADE and flags & _F_CONN_UPGRADE:
            self._upgrade = is_request or self._status == 101
        else:
            self._upgrade = is_request and self._method == b"CONNECT"
        if is_request and flags & _F_TE and not flags & _F_CHUNKED and not self._upgrade:
            _fail("Request has invalid `Transfer-Encoding`")
        if self._on_headers_complete is not None:
            self._on_headers_complete()
        status = self._status
        if self._upgrade or (not is_request and status == 101):
            if self._on_message_complete is not None:
                self._on_message_complete()
            if not self._upgrade:
                _fail("Pause on CONNECT/Upgrade")
            return _UPGRADED
        if not is_request and (
                100 <= status <= 103 or status == 204 or status == 304):
            return self._message_complete()
        if flags & _F_CHUNKED:
            return _CHUNK_SIZE
        if flags & _F_TE:
            return _EOF_BODY   # a response: the request case failed above
        if flags & _F_CL:
            if self._remaining:
                return _BODY
            return self._message_complete()
        if self._needs_eof():
            return _EOF_BODY
        return self._message_complete()

    # -- chunk errors ----------------------------------------------------------

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
