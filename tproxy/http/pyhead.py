# -*- test-case-name: tests.test_pyparser -*-
"""
The head of a message for :mod:`tproxy.http.pyparser`: the start line
(request line or status line), the header fields checked at C speed (the
expressions and tables of :mod:`tproxy.http.pygrammar`), the fields the
framing depends on, the end of the head (``on_headers_complete``), and what
the head says of the message (the version, keep-alive, upgrade: httptools'
``get_http_version``, ``should_keep_alive``, ``should_upgrade``).
"""

from tproxy.http.pygrammar import (
    HttpParserInvalidMethodError, HttpParserInvalidURLError, _ABSOLUTE_FORM,
    _AUTHORITY_FORM, _BODY, _CHUNK_SIZE, _CL_VALUE, _CONNECTION, _CONTENT_LENGTH,
    _EOF_BODY, _FIELDS, _FIELD_CHARS, _F_CHUNKED, _F_CL, _F_CLOSE, _F_CONN_UPGRADE,
    _F_KEEP_ALIVE,
    _F_TE, _F_UPGRADE, _MAX_NAMES, _MAX_SIZE, _METHODS, _NAMES, _REQUEST_LINE, _SPECIAL,
    _STATUS_LINE, _TOKEN_CHARS, _TRANSFER_ENCODING, _UPGRADED, _VCHARS, _VERSIONS,
    _check_cr_lf, _fail, _is_chunked_element, _Diagnosis)

#: the usual start lines are checked without the expressions (see
#: _request_line); tests compare with the expressions alone (False)
_FAST_LINES = True
#: translate tables that change no byte of a request target (VCHAR), or of a
#: reason phrase (HTAB, SP, VCHAR, obs-text), and change every other byte
#: (to one that is allowed: "!", or SP): ``t.translate(T) == t`` checks them
_VCHARS_ONLY = bytes(c if 0x21 <= c <= 0x7e else 0x21 for c in range(256))
_REASON_ONLY = bytes(c if c == 9 or 0x20 <= c <= 0x7e or c >= 0x80 else 0x20
                     for c in range(256))

#: get_http_version's answers, by major * 10 + minor
_VERSION_TEXT = {10 * major + minor: "%d.%d" % (major, minor)
                 for major in range(10) for minor in range(10)}


class _HeadParser(_Diagnosis):
    """The head-parsing part of ``_HttpParser`` (a mixin: the parser's slots)."""

    __slots__ = ()

    # -- what the head says (httptools' API) ------------------------------------

    def get_http_version(self):
        """The message's version, ``"1.1"``."""
        # (a table, not "%d.%d" %: on PyPy formatting is a call per piece)
        text = _VERSION_TEXT.get(self._major * 10 + self._minor)
        if text is None:
            text = "%d.%d" % (self._major, self._minor)
        return text

    def should_keep_alive(self):
        """Whether the connection serves another message after this one
        (meaningful from ``on_headers_complete`` to ``on_message_complete``)."""
        flags = self._flags
        if self._major > 0 and self._minor > 0:
            if flags & _F_CLOSE:
                return False
        elif not flags & _F_KEEP_ALIVE:
            return False
        return not self._needs_eof()

    def should_upgrade(self):
        """Whether the message upgrades the connection to another protocol."""
        return self._upgrade

    def _needs_eof(self):
        """Whether the message's body ends with the connection."""
        if self._is_request:
            return False
        status = self._status
        if status // 100 == 1 or status == 204 or status == 304:
            return False
        flags = self._flags
        if flags & _F_TE and not flags & _F_CHUNKED:
            return True
        return not flags & (_F_CHUNKED | _F_CL)

    # -- parsing ----------------------------------------------------------------

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

    def _early_line(self, buf, scan):
        """
        The request head in ``buf`` is not complete (searched up to
        ``scan`` before): once its request line is, parse it now (as llhttp
        does: ``on_url``, the method and version known, or the error) and
        keep the rest, from the line's CRLF, for the fields (``_FIELDS``).
        """
        eol = buf.find(b"\r\n", scan - 1 if scan else 0)
        if eol < 0:
            return
        self._request_line(bytes(buf[:eol]))
        del buf[:eol]
        self._scan -= eol
        self._checked -= eol
        self._state = _FIELDS

    def _request_line(self, line):
        # The usual line ("GET /x HTTP/1.1") without the expression (on PyPy
        # a match allocates ~2 KiB and enters four compiled loops): a known
        # method, one space, a target of VCHARs, " HTTP/" and a digit, "." and
        # a digit; anything else goes to the expression, as before.
        if (_FAST_LINES and line[-9:-3] == b" HTTP/" and line[-2] == 46
                and 48 <= line[-3] <= 57 and 48 <= line[-1] <= 57):
            method, _, target = line[:-9].partition(b" ")
            if not (method in _METHODS and target
                    and target.translate(_VCHARS_ONLY) == target):
                method = None
        else:
            method = None
        if method is not None:
            version = None
            self._major = line[-3] - 48
            self._minor = line[-1] - 48
        else:
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
        # The usual line ("HTTP/1.1 200 OK") without the expression (see
        # _request_line): "HTTP/", digit "." digit, a space, three digits
        # not starting with 0, then nothing, or a space and a reason of
        # HTAB, SP, VCHAR and obs-text.
        n = len(line)
        if (_FAST_LINES and n >= 12 and line[:5] == b"HTTP/" and line[6] == 46
                and line[8] == 32 and 48 <= line[5] <= 57 and 48 <= line[7] <= 57 and line[9] != 48
                and line[9:12].isdigit()):
            if n == 12:
                reason = None
            elif line[12] == 32:
                reason = line[13:]
                if reason.translate(_REASON_ONLY) != reason:
                    reason = False
            else:
                reason = False
        else:
            reason = False
        if reason is False:
            m = _STATUS_LINE.fullmatch(line)
            if m is None:
                self._status_line_error(line)
            reason = m.group(5) if m.group(4) is not None else None
        self._major = line[5] - 48
        self._minor = line[7] - 48
        if self._major * 10 + self._minor not in _VERSIONS:
            _fail("Invalid HTTP version")
        self._status = int(line[9:12])
        if reason is not None and self._on_status is not None:
            self._on_status(reason)

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
            # (find and slices, not partition and lstrip: on PyPy one copy
            # of the value and one call into the runtime fewer per field)
            line = lines[i]
            colon = line.find(b":")
            if colon <= 0:      # no colon, or no name
                return self._fields_slow(lines[i:] + [b""], trailers, i)
            name = line[:colon]
            kind = names.get(name)
            if kind is None:
                if name.translate(None, _TOKEN_CHARS):
                    return self._fields_slow(lines[i:] + [b""], trailers, i)
                kind = _SPECIAL.get(name.lower(), 0)
                if len(names) < _MAX_NAMES:
                    names[name] = kind
            start = colon + 1
            end = len(line)
            if start < end and line[start] == 32:
                start += 1
            if start < end and (line[start] == 32 or line[start] == 9):
                value = line[start:].lstrip(b" \t")
            else:
                value = line[start:]
            if kind:
                flags = self._flags = self._special(kind, value, flags)
            if on_header is not None:
                on_header(name, value)

    def _special(self, kind, value, flags):
        """Apply a framing-related header field; return the new flags."""
        if kind == _CONTENT_LENGTH:
            if flags & _F_TE and not self._lenient_length:
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
            if flags & _F_CL and not self._lenient_length:
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
