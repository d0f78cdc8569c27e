"""
The limits on heads when a head comes in several reads after a first one
small enough not to be counted field by field (``RequestReader.checking``,
``UpstreamProtocol._checking``): what the first read brought is counted when
the next one comes, so the limits stay exact (``proxy.max_header_size``,
``max_header_line``, ``max_line_size`` on the client side: 431, 400, 414;
``proxy.max_upstream_header_size`` on the upstream side: 502).

Run with the pure-Python parser too: ``TPROXY_PARSER=python python -m
twisted.trial tests``.
"""

from twisted.trial.unittest import SynchronousTestCase

from tests.test_proxy_errors import harness, padded_head, request, statuses

#: a first read that leaves the head unfinished, its fields complete
START = b"GET / HTTP/1.1\r\nHost: x\r\n"


def fields(n, size=20):
    """``n`` field lines of ``size`` bytes each (CRLF included)."""
    return b"".join(b"X-%02d: %s\r\n" % (i, b"v" * (size - 8)) for i in range(n))


class ClientHeadAcrossReadsTests(SynchronousTestCase):
    """A request head whose first read is small (not counted as it is
    parsed) and whose next read passes a limit."""

    def assertStatuses(self, reads, expected, **proxy):
        h, up = harness(proxy=proxy)
        conn = h.connect()
        for data in reads:
            conn.send(data)
        self.assertEqual(statuses(conn), expected)

    def test_headerSizeCountsTheFirstRead(self):
        """``max_header_size`` 300: 10 fields of 20 bytes in the first read
        and 5 in the second (each read alone would fit) are a 431; the same
        head without the second read's fields passes."""
        first = START + fields(10)
        self.assertLess(len(first), 240)    # 4/5 of the smallest limit
        self.assertStatuses([first, fields(5) + b"\r\n"], [431], max_header_size=300)
        self.assertStatuses([first, b"\r\n"], [200], max_header_size=300)

    def test_headerLineAcrossReads(self):
        """``max_header_line`` 1000: a field begun in a small first read and
        ended in a larger one is a 400 when its line passes the limit."""
        first = START + b"X-A: " + b"v" * 100
        self.assertStatuses([first, b"v" * 1000 + b"\r\n\r\n"], [400], max_header_line=1000)
        self.assertStatuses([first, b"v" * 800 + b"\r\n\r\n"], [200], max_header_line=1000)

    def test_targetAcrossReads(self):
        """``max_line_size`` 300: a target begun in a small first read and
        ended in a larger one is a 414 past the limit."""
        tail = b" HTTP/1.1\r\nHost: x\r\n\r\n"
        self.assertStatuses([b"GET /" + b"a" * 100, b"a" * 250 + tail], [414],
                            max_line_size=300)
        self.assertStatuses([b"GET /" + b"a" * 100, b"a" * 150 + tail], [200],
                            max_line_size=300)

    def test_pipelinedHeadAcrossReads(self):
        """The head of a second request begun in the read that ended the
        first one counts its fields from there."""
        first = request("GET", "/1") + START + fields(8)
        self.assertLess(len(first), 240)
        self.assertStatuses([first, fields(7) + b"\r\n"], [200, 431], max_header_size=300)
        self.assertStatuses([first, b"\r\n"], [200, 200], max_header_size=300)


class UpstreamHeadAcrossReadsTests(SynchronousTestCase):
    """The same for a response head, ``max_upstream_header_size`` 1024."""

    def answer(self, cut, interim=b""):
        """Responses of ``/N`` with a head of N bytes, cut after ``cut``
        bytes (after ``interim``, an interim response in the first read)."""
        def answer(req):
            data = interim + padded_head(int(req.uri[1:]), body=b"fits")
            cut_at = len(interim) + cut
            return [data[:cut_at], data[cut_at:]]
        return answer

    def assertLimit(self, answer):
        h, up = harness(answer, proxy={"max_upstream_header_size": 1024})
        conn = h.connect()
        conn.send(request("GET", "/1024"))
        h.advance(1)
        conn.send(request("GET", "/1025"))
        h.advance(1)
        self.assertEqual(statuses(conn), [200, 502])
        self.assertEqual([ctx.error for ctx in h.contexts], [None, "upstream_header_too_big"])

    def test_firstReadCounted(self):
        """A first read of 500 bytes of the head (not counted as parsed, 4/5
        of the limit is 819) is counted with the rest: exactly the limit
        passes, one byte more is a 502."""
        self.assertLimit(self.answer(500))

    def test_afterInterimResponse(self):
        """The same when the head begins in the read that ended a 103."""
        self.assertLimit(self.answer(300, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"))
