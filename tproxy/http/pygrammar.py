# -*- test-case-name: tests.test_pyparser -*-
"""
The grammar of :mod:`tproxy.http.pyparser`: its exceptions (httptools'
own), limits, flags and states, the precompiled expressions and tables that
check a head at C speed, and the slow paths that find what exactly is wrong
with an input the fast path refused (:class:`_Diagnosis`).
"""

import re

class HttpParserError(Exception):
    pass


class HttpParserCallbackError(HttpParserError):
    pass


class HttpParserInvalidStatusError(HttpParserError):
    pass


class HttpParserInvalidMethodError(HttpParserError):
    pass


class HttpParserInvalidURLError(HttpParserError):
    pass


class HttpParserUpgrade(Exception):
    pass


# Limits on what this parser buffers after the head (see the module doc).
MAX_CHUNK_LINE = 16 * 1024
MAX_TRAILERS = 64 * 1024

# Content-Length and chunk sizes are limited to a signed 64-bit integer
# (2 ** 63 - 1, made from a string: on PyPy the constant expression, and
# even the literal, is a big integer, and every comparison with it per
# request converted the other side to one first).
_MAX_SIZE = int("9223372036854775807")


class _Error(Exception):
    """A parse error, converted to ``cls(msg)`` by ``feed_data``."""

    def __init__(self, cls, msg):
        Exception.__init__(self, msg)
        self.cls = cls
        self.msg = msg


def _fail(msg, cls=HttpParserError):
    raise _Error(cls, msg)


# -- flags, as in llhttp ---------------------------------------------------

_F_KEEP_ALIVE = 1
_F_CLOSE = 2
_F_CONN_UPGRADE = 4
_F_CHUNKED = 8
_F_UPGRADE = 16
_F_CL = 32
_F_TE = 512

# -- states -----------------------------------------------------------------

_START = 0        # before a message: CRLF and LF are skipped (a bare CR: 400)
_HEAD = 1         # in a head whose start line was not parsed yet
_BODY = 2         # Content-Length body, self._remaining bytes to go
_CHUNK_SIZE = 3   # expecting a chunk-size line
_CHUNK_DATA = 4   # in chunk data, self._remaining bytes to go
_CHUNK_CRLF = 5   # expecting the CRLF after chunk data
_TRAILERS = 6     # at the CRLF ending the last-chunk line, then trailers
_EOF_BODY = 7     # body delimited by the connection close
_CLOSED = 8       # after a message that does not keep the connection
_UPGRADED = 9     # HttpParserUpgrade was raised
_FIELDS = 10      # in a request's head whose line was parsed before the head
                  # was complete: at the line's CRLF, then the header fields

# -- grammar ------------------------------------------------------------------

# llhttp's HTTP methods (METHODS_HTTP1; not the RTSP-only ones, not PRI).
_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE PATCH LINK UNLINK "
    b"COPY LOCK MKCOL MOVE PROPFIND PROPPATCH SEARCH UNLOCK BIND REBIND "
    b"UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY SUBSCRIBE "
    b"UNSUBSCRIBE MKCALENDAR PURGE QUERY SOURCE".split())
# What llhttp reads as a method before it refuses it in an HTTP request (its
# RTSP methods, at the version; PRI, after the head): neither parser refuses
# a request line beginning with one before its method has ended (the server
# tells an unknown method from a malformed line by the bytes read until then).
_LLHTTP_METHODS = _METHODS.union(
    b"DESCRIBE ANNOUNCE SETUP PLAY PAUSE TEARDOWN GET_PARAMETER SET_PARAMETER "
    b"REDIRECT RECORD FLUSH PRI".split())
_METHOD_PREFIXES = frozenset(m[:i] for m in _LLHTTP_METHODS for i in range(len(m) + 1))
_MAX_METHOD = max(len(m) for m in _LLHTTP_METHODS)

# Versions llhttp accepts (as major * 10 + minor).
_VERSIONS = (9, 10, 11, 20)

_REQUEST_LINE = re.compile(rb"([A-Z_-]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(
    rb"HTTP/([0-9])\.([0-9]) ([1-9][0-9][0-9])(?:( )([\t\x20-\x7e\x80-\xff]*))?")

# The request target, as llhttp's URL parser accepts it.  Its path, query
# and fragment grammar accepts any sequence of VCHAR (0x21-0x7E) after the
# leading "/" (or "*"), or after the host of the absolute and authority
# forms; the host is made of these characters (and "@", never doubled):
_SRV = rb"([A-Za-z0-9_.!~*'()%;:&=+$,\[\]@-]*)"
_ABSOLUTE_FORM = re.compile(rb"[A-Za-z]+://" + _SRV + rb"(?:[/?][\x21-\x7e]*)?")
_AUTHORITY_FORM = re.compile(_SRV + rb"(?:[/?][\x21-\x7e]*)?")

_VCHARS = bytes(range(0x21, 0x7f))
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_TOKEN_CHARS = (b"!#$%&'*+.^_`|~-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                b"abcdefghijklmnopqrstuvwxyz")
# What a header line may contain: HTAB, SP, VCHAR, obs-text.
_FIELD_CHARS = b"\t" + bytes(range(0x20, 0x7f)) + bytes(range(0x80, 0x100))
# A header line (used to pinpoint errors): the value's leading SP/HTAB are
# dropped, trailing ones kept (as llhttp does).  The value cannot start with
# whitespace, which keeps the expression free of super-linear backtracking.
_FIELD_LINE = re.compile(
    rb"(" + _TOKEN + rb"+):[ \t]*((?:[\x21-\x7e\x80-\xff][\t\x20-\x7e\x80-\xff]*)?)")
_TOKEN_RE = re.compile(_TOKEN + rb"+")
# The first bytes of a header line that may still become a valid one.
_FIELD_START = re.compile(rb"(?:" + _TOKEN + rb"+(?::[\t\x20-\x7e\x80-\xff]*)?)?")

_CL_VALUE = re.compile(rb"([0-9]+)[ \t]*")

# A chunk-size line up to its CR: hex digits, then extensions as llhttp
# accepts them (an empty name is allowed before "=" or ";").
_QDTEXT = rb"[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]"
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)"
    rb"(?:;(?:" + _TOKEN + rb"+|(?=[=;]))"
    rb"(?:=" + _TOKEN + rb"*(?:\"(?:" + _QDTEXT + rb"|\\[\t\x20-\x7e\x80-\xff])*\")?)?)*"
    rb"\r")

# Header names needing attention (lower case).
_CONTENT_LENGTH = 1
_TRANSFER_ENCODING = 2
_CONNECTION = 3
_UPGRADE_HDR = 4
_SPECIAL = {
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"proxy-connection": _CONNECTION,
    b"upgrade": _UPGRADE_HDR,
}

# Header names already validated, each mapped to its kind above (0 for the
# others): most requests repeat the same few names.  Shared by all parsers;
# bounded so that random names cannot make it grow.
_NAMES = {}
_MAX_NAMES = 1024


def _check_cr_lf(line):
    """Fail on a CR or LF inside a line."""
    if b"\n" in line:
        _fail("Missing expected CR before LF")
    if b"\r" in line:
        _fail("Missing expected LF after CR")


def _is_chunked_element(element):
    """Whether a Transfer-Encoding list element is "chunked", as llhttp sees it."""
    element = element.lstrip(b" \t")
    return element[:7] == b"chunked" and not element[7:].strip(b" ")


class _Diagnosis(object):
    """The error paths of ``_HttpParser`` (a mixin: the parser's slots)."""

    __slots__ = ()

    def _check_line_ends(self, buf):
        """Fail early on a CR not followed by LF or an LF not after a CR."""
        start = self._checked
        end = len(buf)
        if buf[end - 1] == 13:
            end -= 1        # its LF may come next
        if end > start:
            crlf = buf.count(b"\r\n", start, end)
            if buf.count(b"\n", start, end) != crlf:
                _fail("Missing expected CR before LF")
            if buf.count(b"\r", start, end) != crlf:
                _fail("Missing expected LF after CR")
            self._checked = end

    def _check_start(self, buf):
        """Fail early on what cannot start a request or a status line."""
        head = bytes(buf[:_MAX_METHOD + 1])
        if self._is_request:
            space = head.find(b" ")
            if space < 0:
                if head not in _METHOD_PREFIXES:
                    _fail("Invalid method encountered", HttpParserInvalidMethodError)
            elif head[:space] not in _METHODS:
                _fail("Invalid method encountered", HttpParserInvalidMethodError)
        elif not b"HTTP/".startswith(head[:5]):
            _fail("Expected HTTP/")

    # -- the head ------------------------------------------------------------

    def _status_line_error(self, line):
        _check_cr_lf(line)
        self._version(line[:8])
        if line[8:9] != b" ":
            _fail("Expected space after version")
        code = line[9:12]
        if len(code) != 3 or not code.isdigit():
            _fail("Invalid status code", HttpParserInvalidStatusError)
        if code[:1] == b"0":
            _fail("Invalid status code (below 100)", HttpParserInvalidStatusError)
        if line[12:13] != b" ":
            _fail("Invalid response status", HttpParserInvalidStatusError)
        _fail("Invalid character in the reason phrase", HttpParserInvalidStatusError)

    def _fields_slow(self, lines, trailers, done=0):
        """Process the fields before the first invalid line, then fail."""
        fields = []
        for line in lines[:-1]:
            m = _FIELD_LINE.fullmatch(line)
            if m is None:
                break
            fields.append(m.groups())
        on_header = self._on_header
        flags = self._flags
        for name, value in fields:
            kind = _SPECIAL.get(name.lower())
            if kind is not None:
                flags = self._flags = self._special(kind, value, flags)
            if on_header is not None:
                on_header(name, value)
        line = lines[len(fields)] if len(fields) < len(lines) - 1 else b"\r"
        self._field_error(line, not trailers and done + len(fields) == 0)

    def _field_error(self, line, first):
        if line[:1] in (b" ", b"\t"):
            if first:
                _fail("Unexpected space after start line")
            _fail("Unexpected whitespace after header value (obs-fold)")
        if b"\n" in line:
            _fail("Missing expected CR after header value")
        if b"\r" in line:
            _fail("Missing expected LF after header value")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN_RE.fullmatch(name):
            _fail("Invalid header token")
        _fail("Invalid header value char")

    def _chunk_line_error(self, line):
        i = 0
        n = len(line)
        while i < n and line[i] in b"0123456789abcdefABCDEF":
            i += 1
        if i == 0:
            _fail("Invalid character in chunk size")
        if line[-1:] != b"\r":
            _fail("Missing expected CR after chunk size")
        if line[i:i + 1] != b";":
            _fail("Invalid character in chunk size")
        _fail("Invalid character in chunk extensions")

    def _chunk_crlf_error(self, got):
        if got[:1] == b"\n":
            _fail("Missing expected CR after chunk data")
        _fail("Expected LF after chunk data")
