"""
``proxy.header_timeout`` on a kept-alive connection (nginx's
``client_header_timeout``), on the fake clock of :mod:`tproxy.testing`,
bytes sent raw: a request head, or the empty lines before one, that does
not end has ``header_timeout`` from its first byte, or from the end of the
response before it when it began while that response was being written
(nginx does not read the next head before); ``keepalive_timeout`` does not
extend it.  An unfinished head is answered ``408``, empty lines alone
closed without an answer.  Complete heads pipelined behind a slow response
are served, however long it takes.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.testing import Harness, echo

from tests.test_proxy_connections import later

UP = "127.0.0.1:9001"
#: a step of the fake clock that adds up exactly (a power of two)
TICK = 2 ** -7


def request(path):
    """A whole request (``bytes``)."""
    return b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path


def harness(upstream=echo):
    """A harness with ``keepalive_timeout`` 4 and ``header_timeout`` 1, its
    group ``default`` answered by ``upstream``."""
    return Harness(config={"upstreams": {"default": {"peers": [UP]}},
                           "proxy": {"keepalive_timeout": 4, "header_timeout": 1}},
                   plugins=["router", "least_conn"], servers={UP: upstream})


def statuses(conn):
    return [r.status for r in conn.responses]


class AfterResponseTests(SynchronousTestCase):
    """A head that begins once the response before it is complete."""

    def test_slowHead(self):
        """A head begun on a kept-alive connection has ``header_timeout``
        from its first byte, not what is left of ``keepalive_timeout``: a
        slowloris on a later request is answered ``408`` as on the first."""
        for first in (b"", request(b"/1")):
            h = harness()
            conn = h.connect()
            conn.send(request(b"/"))
            h.advance(2)
            # (with ``first``: the head begins in the read that ends the
            # request before it)
            conn.send(first + b"GET /2 HTTP/1.1\r\n")
            h.advance(0.5)
            conn.send(b"Host: x\r\n")
            h.advance(0.5 - TICK)
            self.assertFalse(conn.closed)
            h.advance(TICK)
            self.assertTrue(conn.closed, first)
            self.assertEqual(statuses(conn), [200, 200, 408] if first else [200, 408])

    def test_emptyLines(self):
        """Empty lines on a kept-alive connection begin a head (RFC 9112
        2.2): with no request line ``header_timeout`` after the first, the
        connection is closed without an answer, as nginx does; they do not
        keep it open until ``keepalive_timeout``."""
        h = harness()
        conn = h.connect()
        conn.send(request(b"/"))
        h.advance(2)
        conn.send(b"\r\n")
        h.advance(0.5)
        conn.send(b"\r\n")
        h.advance(0.5 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [200])


class DuringResponseTests(SynchronousTestCase):
    """A head that begins while the response before it is being written:
    ``header_timeout`` from the end of that response."""

    def setUp(self):
        self.answers = []
        self.h = harness(later(self.answers))
        self.conn = self.h.connect()

    def answer(self, n=0):
        """The upstream answers the ``n``-th request it got."""
        self.answers[n].callback((200, {}, b"done"))
        self.h.flush()

    def assertClosedAt(self, seconds, expected):
        """Nothing more happens until ``seconds`` after now, then the
        connection is closed, the responses ``expected``."""
        self.h.advance(seconds - TICK)
        self.assertFalse(self.conn.closed)
        self.h.advance(TICK)
        self.assertTrue(self.conn.closed)
        self.assertEqual(statuses(self.conn), expected)

    def test_slowHead(self):
        """A head trickling in a byte at a time, begun during a response
        longer than ``header_timeout``: ``408`` ``header_timeout`` after the
        response (not ``keepalive_timeout``)."""
        conn = self.conn
        conn.send(request(b"/slow"))
        self.h.advance(0.25)
        conn.send(b"GET /2 HTTP/1.1\r\n")
        self.h.advance(2)
        self.assertEqual((statuses(conn), conn.closed), ([], False))
        self.answer()
        self.assertEqual(statuses(conn), [200])
        for byte in (b"H", b"o", b"s"):
            self.h.advance(0.25)
            conn.send(byte)
        self.assertClosedAt(0.25, [200, 408])

    def test_headInTheRequestsRead(self):
        """A head begun in the read of the request before it, nothing more
        sent: ``408`` ``header_timeout`` after that request's response."""
        self.conn.send(request(b"/slow") + b"GET /2 HTTP/1.1\r\n")
        self.h.advance(2)
        self.answer()
        self.assertClosedAt(1, [200, 408])

    def test_emptyLines(self):
        """Empty lines during a response, nothing more: closed without an
        answer ``header_timeout`` after the response."""
        self.conn.send(request(b"/slow"))
        self.h.advance(0.25)
        self.conn.send(b"\r\n")
        self.h.advance(2)
        self.answer()
        self.assertClosedAt(1, [200])

    def test_behindQueued(self):
        """A head begun behind a complete pipelined request: the deadline
        runs from the end of the response before it (the queued one's)."""
        self.conn.send(request(b"/slow") + request(b"/2") + b"GET /3 HTTP/1.1\r\n")
        self.h.advance(1.5)
        self.answer(0)
        self.h.advance(1.5)
        self.answer(1)
        self.assertClosedAt(1, [200, 200, 408])

    def test_headEndsInTime(self):
        """A head begun during a response that ends within
        ``header_timeout`` after it is served, even though more than
        ``header_timeout`` passed since its first byte (as nginx, which
        reads it only then)."""
        conn = self.conn
        conn.send(request(b"/slow"))
        self.h.advance(0.25)
        conn.send(b"GET /2 HTTP/1.1\r\n")
        self.h.advance(2)
        self.answer()
        self.h.advance(1 - TICK)
        conn.send(b"Host: x\r\n\r\n")
        self.answer(1)
        self.assertEqual((statuses(conn), conn.closed), ([200, 200], False))

    def test_pipelinedHeads(self):
        """Complete heads pipelined behind a response longer than
        ``header_timeout`` are all served, and the connection kept alive."""
        self.conn.send(request(b"/slow") + request(b"/2") + request(b"/3"))
        for n in range(3):
            self.h.advance(2)
            self.answer(n)
        self.assertEqual((statuses(self.conn), self.conn.closed), ([200] * 3, False))
        self.assertClosedAt(4, [200] * 3)   # (then keepalive_timeout)
