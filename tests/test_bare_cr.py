"""
What may come before a request line (RFC 9112 2.2): empty lines (CRLF, or a
bare LF) are skipped, as nginx does; a bare CR (not followed by LF) is
refused with ``400`` (nginx skips it too; llhttp does, so tproxy checks the
first bytes of a message before feeding them).  On the proxy listener with
the parser in use (httptools on CPython, the pure-Python one on PyPy or with
``TPROXY_PARSER=python``), on the admin listener, and on the pure-Python
parser directly.  A request line after empty lines, whichever reads they
came in, is checked as one without them (a bare CR before it, no version).
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.http import pyparser
from tproxy.http.parsing import bare_cr_first
from tproxy.testing import Harness, echo
from tests.helpers import parse_responses
from tests.test_pyparser import feed

PEER = "127.0.0.1:9001"
REQUEST = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"


class BareCRFirstTests(SynchronousTestCase):
    """:func:`tproxy.http.parsing.bare_cr_first`."""

    def test_bare(self):
        for data in (b"\rGET", b"\r\r\nGET", b"\n\rGET", b"\r\n\rG", b"\r\r", b"\r\r\n"):
            self.assertTrue(bare_cr_first(data), data)

    def test_emptyLines(self):
        """CRLF and LF lines, a CR last (its LF may follow), and a request
        line are not."""
        for data in (b"", b"GET", b"\r\nGET", b"\nGET", b"\r\n\n\r\nGET", b"\r", b"\r\n\r",
                     b"G\rET"):
            self.assertFalse(bare_cr_first(data), data)


class PythonParserTests(SynchronousTestCase):
    """tproxy's own parser refuses a bare CR before a request line itself,
    however the bytes are split."""

    def test_bareCR(self):
        for data in (b"\r" + REQUEST, b"\r\r\n" + REQUEST, b"\n\r" + REQUEST,
                     REQUEST + b"\r" + REQUEST):
            for cuts in ((), (1,), (2,), (len(REQUEST) + 1,)):
                events, error, _ = feed(pyparser, data, cuts=cuts)
                self.assertIsInstance(error, pyparser.HttpParserError, (data, cuts))
                self.assertIn("Bare CR", str(error))
                # the request before it was read whole
                self.assertEqual(sum(1 for e in events if e[0] == "message_complete"),
                                 1 if data.startswith(b"GET") else 0, (data, cuts))

    def test_emptyLines(self):
        for data in (b"\r\n" + REQUEST, b"\n" + REQUEST, b"\r\n\n\r\n" + REQUEST,
                     REQUEST + b"\r\n" + REQUEST, REQUEST + b"\n" + REQUEST):
            for cuts in ((), (1,), (2,), (len(REQUEST) + 1,)):
                events, error, _ = feed(pyparser, data, cuts=cuts)
                self.assertIsNone(error, (data, cuts))
                self.assertEqual(sum(1 for e in events if e[0] == "message_complete"),
                                 data.count(b"GET"), (data, cuts))

    def test_response(self):
        """Responses are read as before (a CR before a status line is
        skipped)."""
        events, error, _ = feed(pyparser, b"\rHTTP/1.1 204 No Content\r\n\r\n", response=True)
        self.assertIsNone(error)


class ListenerTests(SynchronousTestCase):
    """The proxy and admin listeners, with the parser in use."""

    def setUp(self):
        self.h = Harness(config={"upstreams": {"default": {"peers": [PEER]}}},
                         plugins=["registry", "router", "least_conn"], servers={PEER: echo})

    def send(self, *pieces):
        h = self.h
        seen = len(h.upstream_requests)
        conn = h.connect()
        for piece in pieces:
            conn.send(piece)
        statuses = [r.status for r in parse_responses(conn.received, closed=conn.closed)[0]]
        return statuses, len(h.upstream_requests) - seen, conn

    def test_bareCR(self):
        """A bare CR before a request line, at the start of a connection or
        of a later read: 400, nothing forwarded, the connection closed."""
        for data in (b"\r" + REQUEST, b"\r\r\n" + REQUEST, b"\n\r" + REQUEST):
            statuses, forwarded, conn = self.send(data)
            self.assertEqual((statuses, forwarded, conn.closed), ([400], 0, True), data)
        statuses, forwarded, conn = self.send(REQUEST, b"\r" + REQUEST)
        self.assertEqual((statuses, forwarded, conn.closed), ([200, 400], 1, True))

    def test_emptyLines(self):
        """Empty lines (CRLF, LF) before a request line are skipped."""
        for pieces in ([b"\r\n" + REQUEST], [b"\n" + REQUEST], [b"\r\n\n" + REQUEST],
                       [b"\r", b"\n" + REQUEST], [REQUEST, b"\r\n" + REQUEST],
                       [REQUEST + b"\r\n" + REQUEST]):
            statuses, forwarded, conn = self.send(*pieces)
            expected = b"".join(pieces).count(b"GET")
            self.assertEqual((statuses, forwarded), ([200] * expected, expected), pieces)

    def test_bareCRAfterEmptyLines(self):
        """A bare CR after empty lines read before it, or split from what
        follows it: 400, as without them."""
        for pieces in ([b"\r\n", b"\r" + REQUEST], [b"\n", b"\r" + REQUEST],
                       [b"\r\n\r", REQUEST], [b"\r", REQUEST], [b"\r\n", b"\r", REQUEST]):
            statuses, forwarded, conn = self.send(*pieces)
            self.assertEqual((statuses, forwarded, conn.closed), ([400], 0, True), pieces)
        statuses, forwarded, conn = self.send(REQUEST, b"\r\n", b"\r" + REQUEST)
        self.assertEqual((statuses, forwarded, conn.closed), ([200, 400], 1, True))

    def test_emptyLinesInPieces(self):
        """Empty lines in reads of their own, a CR and its LF in two."""
        for pieces in ([b"\r\n", REQUEST], [b"\r", b"\n", REQUEST], [b"\r\n\r", b"\n" + REQUEST],
                       [REQUEST, b"\r\n", b"\n", REQUEST]):
            statuses, forwarded, conn = self.send(*pieces)
            expected = b"".join(pieces).count(b"GET")
            self.assertEqual((statuses, forwarded, conn.closed),
                             ([200] * expected, expected, False), pieces)

    def test_http09AfterEmptyLines(self):
        """A request line without a version (HTTP/0.9) after empty lines
        in a read of their own, or split across reads: answered 400 at
        once, as one in the read that begins the head (the parsers would
        wait for header lines)."""
        for pieces in ([b"\r\n", b"GET /x\r\n"], [b"\n", b"GET /x\r\n"],
                       [b"\r\n", b"GET /", b"x\r\n"], [b"GET /", b"x\r\n"],
                       [b"GET /x HT", b"\r\n"], [b"\r\n", b"GET /x\r\nHost: x\r\n"]):
            statuses, forwarded, conn = self.send(*pieces)
            self.assertEqual((statuses, forwarded, conn.closed), ([400], 0, True), pieces)
        statuses, forwarded, conn = self.send(REQUEST, b"\r\n", b"GET /x\r\n")
        self.assertEqual((statuses, forwarded, conn.closed), ([200, 400], 1, True))

    def test_versionSplit(self):
        """A request line whose version is split across reads is read
        whole."""
        for cut in range(len(b"GET /a"), len(b"GET /a HTTP/1.1\r\n")):
            statuses, forwarded, conn = self.send(b"\r\n", REQUEST[:cut], REQUEST[cut:])
            self.assertEqual((statuses, forwarded, conn.closed), ([200], 1, False), cut)

    def test_admin(self):
        """The admin listener answers the same."""
        head = b"GET /upstream/status HTTP/1.1\r\nHost: localhost\r\n\r\n"
        self.assertEqual(self.h.admin_raw(b"\r" + head).status, 400)
        self.assertEqual(self.h.admin_raw(b"\r\r\n" + head).status, 400)
        self.assertEqual(self.h.admin_raw(b"\r\n" + head).status, 200)
        self.assertEqual(self.h.admin_raw(b"\n" + head).status, 200)
