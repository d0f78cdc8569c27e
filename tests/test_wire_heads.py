"""
The upstream request head (:mod:`tproxy.http.upstream_head`) and the
response head of :mod:`tproxy.http.wire` are built the same on PyPy's path
(one pass filtering and joining the fields) as on CPython's.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.http import upstream_head, wire

RAW = [(b"Host", b"example.com"), (b"x-route-prefix", b"/forged"),
       (b"Accept", b"*/*"), (b"X-ROUTE-PREFIX", b"/again")]


class UpstreamRequestHeadPathsTests(SynchronousTestCase):
    """``upstream_request_head`` with ``_PYPY`` true and false."""

    def both(self, *args):
        """The head built on each path; they must be equal."""
        heads = []
        for pypy in (True, False):
            self.patch(upstream_head, "_PYPY", pypy)
            heads.append(upstream_head.upstream_request_head(*args))
        self.assertEqual(heads[0], heads[1])
        return heads[0]

    def test_oneExtraReplaces(self):
        """One extra field replaces every field of its name (any case), and
        comes after the others, before tproxy's lines."""
        head = self.both(b"GET", "/x?a=1", RAW, [("X-Route-Prefix", "/api")], None,
                         b"X-Real-IP: 1.2.3.4\r\n")
        self.assertEqual(head, b"GET /x?a=1 HTTP/1.1\r\nHost: example.com\r\n"
                               b"Accept: */*\r\nX-Route-Prefix: /api\r\n"
                               b"X-Real-IP: 1.2.3.4\r\n\r\n")

    def test_oneExtraBytesOnly(self):
        """The extra field alone (no field received)."""
        head = self.both(b"GET", "/", [], [(b"X-A", b"1")], None, b"")
        self.assertEqual(head, b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n")

    def test_oneExtraWithHostToAdd(self):
        """A Host to add when none is left goes after the extra field."""
        head = self.both(b"GET", "/", [(b"Accept", b"*/*")], [("X-A", "1")],
                         b"10.0.0.1:80", b"")
        self.assertEqual(head, b"GET / HTTP/1.1\r\nAccept: */*\r\nX-A: 1\r\n"
                               b"Host: 10.0.0.1:80\r\n\r\n")

    def test_noOrSeveralExtras(self):
        """Without extra fields, and with two."""
        self.assertEqual(self.both(b"GET", "/", RAW[:1], [], None, b""),
                         b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(
            self.both(b"GET", "/", RAW, [("X-Route-Prefix", "/api"), ("Accept", "a")],
                      None, b""),
            b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Route-Prefix: /api\r\n"
            b"Accept: a\r\n\r\n")


RESPONSE = [(b"Server", b"up"), (b"Connection", b"keep-alive, X-Drop"),
            (b"Content-Length", b"5"), (b"x-drop", b"1"), (b"Keep-Alive", b"timeout=5")]


class ResponseHeadPathsTests(SynchronousTestCase):
    """``clean_response_fields`` then ``response_head``, with ``_PYPY`` true
    (the lines joined in the cleaning pass) and false."""

    def head(self, fields, pypy):
        self.patch(wire, "_PYPY", pypy)
        kept, length, framed, lines = wire.clean_response_fields(fields)
        if not pypy:
            self.assertIsNone(lines)
        return kept, length, framed, wire.response_head(200, b"OK", kept, False, False,
                                                        False, lines)

    def test_same(self):
        """Both paths give the same fields and head: hop-by-hop fields and
        those Connection names are cut."""
        for fields in (RESPONSE, RESPONSE[:1], RESPONSE[2:3] + RESPONSE[-1:], [],
                       [(b"Date", b"x"), (b"Transfer-Encoding", b"chunked")]):
            pypy, cpython = self.head(fields, True), self.head(fields, False)
            self.assertEqual(pypy, cpython)
        self.assertEqual(self.head(RESPONSE, True),
                         ([(b"Server", b"up"), (b"Content-Length", b"5")], b"5", True,
                          b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 5\r\n\r\n"))

    def test_plainConnection(self):
        """The usual Connection values (looked up whole, not split): the field
        goes, nothing else does; a value that names a field, however spelled,
        takes that field too; Transfer-Encoding is still checked."""
        for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close"):
            for pypy in (True, False):
                self.assertEqual(
                    self.head([(b"Connection", value), (b"X-A", b"1"),
                               (b"Content-Length", b"2")], pypy),
                    ([(b"X-A", b"1"), (b"Content-Length", b"2")], b"2", True,
                     b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 2\r\n\r\n"))
        for value in (b"Keep-Alive, X-A", b"keep-alive ,x-a", b"X-A"):
            kept = wire.clean_response_fields(
                [(b"connection", value), (b"X-A", b"1"), (b"X-B", b"2")])[0]
            self.assertEqual(kept, [(b"X-B", b"2")])
        with self.assertRaises(ValueError):
            wire.clean_response_fields([(b"Connection", b"close"),
                                        (b"Transfer-Encoding", b"gzip")])

    def test_lines(self):
        """On PyPy's path the kept fields come back as joined lines, unless
        Connection named some (then they are made again from the pairs)."""
        self.patch(wire, "_PYPY", True)
        self.assertEqual(wire.clean_response_fields(RESPONSE[2:])[3],
                         b"Content-Length: 5\r\nx-drop: 1")
        self.assertIsNone(wire.clean_response_fields(RESPONSE)[3])
        self.assertIsNone(wire.clean_response_fields(RESPONSE[-1:])[3])
