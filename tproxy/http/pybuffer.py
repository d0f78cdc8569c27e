# -*- test-case-name: tests.test_pyparser -*-
"""
What :mod:`tproxy.http.pyparser` keeps between two ``feed_data`` calls: an
incomplete head, trailer section, chunk-size line or line end, checked for
what can be rejected early (an impossible start, a bare CR or LF, a
request line, complete before its head, reported at once, as llhttp does,
and a header line its bytes so far make invalid), and bounded.
"""

from tproxy.http.pygrammar import (
    MAX_CHUNK_LINE, MAX_TRAILERS, _CHUNK_SIZE, _FIELDS, _FIELD_START, _HEAD, _MAX_METHOD, _TRAILERS,
    _fail)
from tproxy.http.pyhead import _HeadParser


class _Buffering(_HeadParser):
    """The buffering part of ``_HttpParser`` (a mixin: the parser's slots)."""

    __slots__ = ()

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
        if state == _HEAD or state == _TRAILERS or state == _FIELDS:
            scan = self._scan
            if buf.find(b"\r\n\r\n", scan - 3 if scan > 3 else 0) >= 0:
                return True
            if state == _TRAILERS and n > MAX_TRAILERS:
                _fail("Trailer section too long")
            self._scan = n
            self._check_line_ends(buf)
            if state == _HEAD:
                if scan <= _MAX_METHOD:
                    self._check_start(buf)
                if self._is_request:
                    self._early_line(buf, scan)
                    if self._state == _FIELDS:
                        self._early_fields(buf, 0)
            elif state == _FIELDS:
                self._early_fields(buf, scan)
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

    def _early_fields(self, buf, scan):
        """
        The header lines of a request head not complete yet (``buf``, from
        its request line's CRLF; its line ends checked): fail on a line
        whose bytes so far cannot begin a valid one (llhttp reads byte by
        byte), from the line that had not ended at ``scan``.
        """
        start = buf.rfind(b"\n", 0, scan) + 1
        end = len(buf)
        if buf[end - 1] == 13:
            end -= 1        # its LF may come next
        for line in bytes(buf[start:end]).split(b"\r\n"):
            if _FIELD_START.fullmatch(line) is None:
                self._field_error(line, start == 2)
            start += len(line) + 2
