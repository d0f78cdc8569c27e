"""
Inputs the two request parsers (httptools, and tproxy's own with
``TPROXY_PARSER=python`` and on PyPy) once answered differently: through
:mod:`tproxy.testing` with the parser in use (the suite runs with each), the
same bytes get the same status however they are split across reads.

- A method token neither parser serves (RTSP's ``TEARDOWN``, ``PLAY`` ...,
  which llhttp reads and then refuses in an HTTP request; ``FOO``): ``501``
  (RFC 9110 9.1), also after empty lines; a method that is not a token of
  capitals, digits, ``_`` and ``-`` (``get``, ``G=T``): ``400``.
- A header line that its first bytes already make invalid, in a head that
  has not ended: ``400`` at once (llhttp reads byte by byte).
- The admin listener refuses a bare CR before a request line after empty
  lines sent in an earlier read, as the proxy listener does.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.http import pyparser
from tproxy.testing import Harness, echo
from tests.helpers import parse_responses
from tests.test_pyparser import feed

PEER = "127.0.0.1:9001"
REST = b" / HTTP/1.1\r\nHost: x\r\n\r\n"
GOOD = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
#: llhttp's RTSP-only methods, and token methods no parser knows
UNKNOWN = (b"DESCRIBE", b"ANNOUNCE", b"SETUP", b"PLAY", b"PAUSE", b"TEARDOWN",
           b"GET_PARAMETER", b"SET_PARAMETER", b"REDIRECT", b"RECORD", b"FLUSH",
           b"FOO", b"FOO_BAR", b"G-T", b"GET2", b"GETX", b"POSTS", b"M-SEARCHX")


class _Listener(SynchronousTestCase):

    def setUp(self):
        self.h = Harness(config={"upstreams": {"default": {"peers": [PEER]}}},
                         plugins=["registry", "router", "least_conn"], servers={PEER: echo})

    def send(self, *pieces):
        """Send ``pieces`` in as many reads: (the statuses, how many requests
        went upstream, whether the connection closed)."""
        h = self.h
        seen = len(h.upstream_requests)
        conn = h.connect()
        for piece in pieces:
            if not conn.closed:
                conn.send(piece)
        statuses = [r.status for r in parse_responses(conn.received, closed=conn.closed)[0]]
        return statuses, len(h.upstream_requests) - seen, conn.closed


class UnknownMethodTests(_Listener):

    def test_oneRead(self):
        """An unknown method: 501, not forwarded, the connection closed."""
        for method in UNKNOWN:
            self.assertEqual(self.send(method + REST), ([501], 0, True), method)

    def test_afterEmptyLines(self):
        """After empty lines, in the same read or in earlier ones."""
        for method in (b"TEARDOWN", b"FOO"):
            for pieces in ([b"\r\n" + method + REST], [b"\n\r\n" + method + REST],
                           [b"\r\n", method + REST], [b"\r", b"\n" + method + REST]):
                self.assertEqual(self.send(*pieces), ([501], 0, True), pieces)

    def test_split(self):
        """Split anywhere in the request line (the parsers refuse the
        method at different bytes: llhttp reads an RTSP method to its
        version)."""
        for method in (b"TEARDOWN", b"PLAY", b"SETUP", b"FOO", b"GETX", b"GET_PARAMETER"):
            data = method + REST
            for cut in range(1, len(method) + len(b" / HTTP/1.1\r\n")):
                self.assertEqual(self.send(data[:cut], data[cut:]), ([501], 0, True),
                                 (method, cut))

    def test_afterRequest(self):
        """After a request answered in an earlier read."""
        for method in (b"TEARDOWN", b"FOO"):
            for pieces in ([GOOD, method + REST], [GOOD, b"\r\n" + method + REST],
                           [GOOD + b"\r\n", method[:2], method[2:] + REST]):
                self.assertEqual(self.send(*pieces), ([200, 501], 1, True), pieces)

    def test_behindRequestInRead(self):
        """Begun in the read that ended a request: 400 (the bytes before
        the method are not told from it), on either parser, wherever the
        rest is split."""
        for method in (b"TEARDOWN", b"FOO", b"GETX"):
            data = GOOD + method + REST
            for cut in range(len(GOOD) + 1, len(GOOD) + len(method) + 4):
                for pieces in ([data[:cut], data[cut:]],
                               [data[:cut], data[cut:cut + 3], data[cut + 3:]]):
                    self.assertEqual(self.send(*pieces), ([200, 400], 1, True), pieces)

    def test_notAToken(self):
        """A method that is not a token of capitals, digits, ``_`` and
        ``-``: 400 (as nginx), in one read or split."""
        for data in (b"get" + REST, b"Get" + REST, b"G=T" + REST, b"GE\x00T" + REST,
                     b"TEARDOWN\x00" + REST):
            self.assertEqual(self.send(data), ([400], 0, True), data)
            self.assertEqual(self.send(data[:2], data[2:]), ([400], 0, True), data)

    def test_known(self):
        """Known methods go upstream, split or not."""
        for method in (b"GET", b"PROPFIND", b"QUERY", b"M-SEARCH", b"SOURCE"):
            data = method + REST
            self.assertEqual(self.send(data), ([200], 1, False), method)
            self.assertEqual(self.send(data[:2], data[2:]), ([200], 1, False), method)


class EarlyFieldErrorTests(_Listener):
    """An invalid header line in a head not complete yet: 400 at once."""

    LINES = (b"Bad Name: y", b"X\x00Y: b", b"X: a\x00b", b"X: a\x01b", b"X: a\x7fb", b" X: y",
             b"X : y", b":y", b"X(y): z", b"X\tY: z")

    def test_atOnce(self):
        for line in self.LINES:
            for head in (b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n"):
                self.assertEqual(self.send(head + line), ([400], 0, True), (head, line))
                self.assertEqual(self.send(head + line + b"\r\n"), ([400], 0, True),
                                 (head, line))
                # split: the line's first bytes came in an earlier read
                self.assertEqual(self.send(head + line[:1], line[1:]), ([400], 0, True),
                                 (head, line))
            self.assertEqual(self.send(b"GET / HTTP/1.1\r\nHost: x\r\n", line),
                             ([400], 0, True), line)

    def test_obsFold(self):
        """A line beginning with whitespace after a header line."""
        for ws in (b" ", b"\t"):
            self.assertEqual(self.send(b"GET / HTTP/1.1\r\nHost: x\r\nX: y\r\n" + ws + b"z"),
                             ([400], 0, True), ws)

    def test_validWaits(self):
        """Valid lines not ended yet wait, then the request goes."""
        head = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a b\xff\t!\r\nX-B"
        for cut in range(len(b"GET / HTTP/1.1\r"), len(head) + 1):
            statuses, forwarded, closed = self.send(head[:cut], head[cut:])
            self.assertEqual((statuses, forwarded, closed), ([], 0, False), cut)
        self.assertEqual(self.send(head, b": b\r\n\r\n"), ([200], 1, False))


class PythonParserTests(SynchronousTestCase):
    """tproxy's own parser, whichever parser the server uses: an invalid
    header line fails the incomplete head it is in, with llhttp's
    message; valid lines in pieces do not."""

    def test_earlyFieldErrors(self):
        for line, message in ((b"Bad Name: y", "Invalid header token"),
                              (b"X: a\x00b", "Invalid header value char"),
                              (b" X", "Unexpected space after start line")):
            data = b"GET / HTTP/1.1\r\n" + line
            for cuts in ((), (4,), (len(data) - 1,)):
                events, error, _ = feed(pyparser, data, cuts=cuts)
                self.assertIsInstance(error, pyparser.HttpParserError, (line, cuts))
                self.assertEqual(str(error), message)
        events, error, _ = feed(pyparser, b"GET / HTTP/1.1\r\nHost: x\r\nX: y\r\n z")
        self.assertEqual(str(error), "Unexpected whitespace after header value (obs-fold)")

    def test_validPieces(self):
        data = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a b\xff\t!\r\nX-B: \r\n\r\n"
        for cut in range(1, len(data)):
            events, error, _ = feed(pyparser, data, cuts=(cut,))
            self.assertIsNone(error, cut)
            self.assertEqual(sum(1 for e in events if e[0] == "message_complete"), 1, cut)


class AdminBareCRTests(_Listener):
    """The admin listener: a bare CR after empty lines of an earlier read."""

    HEAD = b"GET /upstream/status HTTP/1.1\r\nHost: localhost\r\n\r\n"

    def admin(self, *pieces):
        """Send ``pieces`` to the admin listener in as many reads: the status."""
        from tproxy.testing.client import _Client
        from tproxy.testing.http import _ADMIN_ADDRESS, PendingRequest, _address
        h = self.h
        client = _Client(pieces[0], "GET")
        addr = _address("127.0.0.1", next(h._ports))
        h._connect(client, addr, h.admin_factory.buildProtocol(addr), _address(*_ADMIN_ADDRESS))
        pending = PendingRequest(h, client, "GET", "(admin)")
        h.flush()
        for piece in pieces[1:]:
            client.transport.write(piece)
            h.flush()
        return pending.result().status

    def test_bareCRAfterEmptyLines(self):
        for pieces in ([b"\r\n", b"\r" + self.HEAD], [b"\n", b"\r" + self.HEAD],
                       [b"\r\n\r", self.HEAD], [b"\r", self.HEAD],
                       [b"\r\n", b"\r", self.HEAD]):
            self.assertEqual(self.admin(*pieces), 400, pieces)

    def test_emptyLines(self):
        for pieces in ([b"\r\n", self.HEAD], [b"\r", b"\n" + self.HEAD],
                       [b"\r\n\r", b"\n" + self.HEAD], [b"\n", b"\r\n", self.HEAD]):
            self.assertEqual(self.admin(*pieces), 200, pieces)
