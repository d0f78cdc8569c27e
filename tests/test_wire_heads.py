"""
The upstream request head (:mod:`tproxy.http.upstream_head`) and the
response head of :mod:`tproxy.http.wire` are built the same on PyPy's path
(one pass filtering and joining the fields) as on CPython's.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.http import response_fields, upstream_head, wire

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
    and false (the lines joined in the cleaning pass either way), and the
    head made from the pairs (after a ``header_filter``) the same."""

    def head(self, fields, pypy):
        self.patch(wire, "_PYPY", pypy)
        self.patch(response_fields, "_PYPY", pypy)
        kept, length, framed, lines, _ = response_fields.clean_response_fields(fields)
        head = wire.response_head(200, b"OK", kept, False, False, False, lines)
        self.assertEqual(wire.response_head(200, b"OK", kept, False, False, False), head)
        return kept, length, framed, head

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
            kept = response_fields.clean_response_fields(
                [(b"connection", value), (b"X-A", b"1"), (b"X-B", b"2")])[0]
            self.assertEqual(kept, [(b"X-B", b"2")])
        with self.assertRaises(ValueError):
            response_fields.clean_response_fields([(b"Connection", b"close"),
                                        (b"Transfer-Encoding", b"gzip")])

    def test_lines(self):
        """On both paths the kept fields come back as joined lines, unless
        Connection named some (then they are made again from the pairs)."""
        for pypy in (True, False):
            self.patch(wire, "_PYPY", pypy)
            self.patch(response_fields, "_PYPY", pypy)
            self.assertEqual(response_fields.clean_response_fields(RESPONSE[2:])[3],
                             b"Content-Length: 5\r\nx-drop: 1")
            self.assertIsNone(response_fields.clean_response_fields(RESPONSE)[3])
            self.assertIsNone(response_fields.clean_response_fields(RESPONSE[-1:])[3])


def whole(lines):
    """``clean_response_block``'s arguments for a head of these field lines."""
    data = b"HTTP/1.1 200 OK" + b"".join(b"\r\n" + line for line in lines) + b"\r\n\r\nbody"
    end = data.index(b"\r\n\r\n")
    return data, data.index(b"\r\n"), end, data[:end].decode("latin-1").lower()


class WholeHeadTests(SynchronousTestCase):
    """``clean_response_block``: a head read whole, cut by slicing, gives
    what ``clean_response_fields`` gives for its pairs (the lines as
    received), or ``None`` for the pairs' way."""

    def same(self, lines):
        """The cut head, checked against the pairs' way; returns its lines."""
        args = whole(lines)
        cut = response_fields.clean_response_block(*args)
        self.assertIsNotNone(cut, lines)
        length, kept_lines, dated = cut
        kept, pair_length, framed, _, pair_dated = response_fields.clean_response_fields(
            response_fields.block_fields(args[0][args[1]:args[2]]))
        self.assertEqual(response_fields.block_fields(kept_lines), kept)
        self.assertEqual(length, pair_length)
        self.assertEqual(dated, pair_dated)
        return kept_lines

    def test_connectionAnywhere(self):
        """Connection (keep-alive or close, any case) and Keep-Alive go,
        wherever they are, alone or together; the other lines are passed on
        as received (their spacing kept)."""
        for lines, kept in [
                ([b"Connection: keep-alive", b"X-A:  1", b"Content-Length: 4"],
                 b"X-A:  1\r\nContent-Length: 4"),
                ([b"X-A: 1", b"connection:close", b"Content-Length: 4"],
                 b"X-A: 1\r\nContent-Length: 4"),
                ([b"X-A: 1", b"Content-Length: 4", b"CONNECTION: Keep-Alive "],
                 b"X-A: 1\r\nContent-Length: 4"),
                ([b"Keep-Alive: timeout=5", b"X-A: 1", b"Connection: keep-alive"], b"X-A: 1"),
                ([b"Connection: keep-alive", b"X-A: 1", b"Keep-Alive: timeout=5"], b"X-A: 1"),
                ([b"X-A: 1", b"Keep-Alive: timeout=5", b"Connection: keep-alive", b"X-B: 2"],
                 b"X-A: 1\r\nX-B: 2"),
                ([b"Connection: close"], b""), ([b"Keep-Alive: 1"], b""), ([], b"")]:
            self.assertEqual(self.same(lines), kept)

    def test_dated(self):
        """Whether the head has a Date field, whatever its case and place,
        the same as the pairs' way."""
        for lines, dated in [([b"Date: x", b"X-A: 1"], True), ([b"X-A: 1", b"date:x"], True),
                             ([b"Connection: close", b"DATE: x"], True),
                             ([b"X-Date: 1", b"X-A: date: x"], False), ([], False)]:
            self.same(lines)
            self.assertEqual(response_fields.clean_response_block(*whole(lines))[2], dated)

    def test_contentLength(self):
        """The Content-Length value as the parser reports it (leading
        whitespace dropped), or ``None``."""
        self.assertEqual(response_fields.clean_response_block(*whole([b"Content-Length:  12"]))[0], b"12")
        self.assertEqual(response_fields.clean_response_block(*whole([b"X-A: 1"]))[0], None)
        self.assertEqual(response_fields.clean_response_block(*whole([b"content-length:3", b"X: 1"]))[0],
                         b"3")

    def test_pairsWay(self):
        """Connection naming a field, or Connection or Keep-Alive twice:
        ``None`` (the pairs' way cuts them)."""
        for lines in ([b"Connection: keep-alive, X-A", b"X-A: 1"], [b"Connection: x-a"],
                      [b"Connection: close", b"Connection: close"],
                      [b"Keep-Alive: 1", b"Keep-Alive: 2"]):
            self.assertIsNone(response_fields.clean_response_block(*whole(lines)), lines)

    def test_rareFields(self):
        """The fields the cut leaves to the field-by-field way are found in
        the lower-cased head, whatever their case, and only as names."""
        for lines in ([b"Proxy-Connection: x"], [b"X-A: 1", b"TE: trailers"],
                      [b"Trailer: X-T"], [b"UPGRADE: h2c"], [b"Proxy-Authenticate: Basic"],
                      [b"Transfer-Encoding: chunked"]):
            self.assertIsNotNone(response_fields.RARE_HOP_FIELDS.search(whole(lines)[3]), lines)
        for lines in ([b"X-Te: 1"], [b"X-A: te: trailer: upgrade:"], [b"Tea: 1"],
                      [b"Connection: keep-alive", b"Keep-Alive: 1"]):
            self.assertIsNone(response_fields.RARE_HOP_FIELDS.search(whole(lines)[3]), lines)
