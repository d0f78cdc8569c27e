"""
Request bodies and heads at the client side, through :mod:`tproxy.testing`
on the fake clock: ``proxy.max_body_size`` whatever the framing (and
``ctx.max_body_size``), bodies held before connecting upstream
(``proxy.client_body_buffer_size``), ``proxy.client_body_timeout``, empty
Hosts, ``proxy.max_header_line`` and empty lines before a request line.

Run with the pure-Python parser too: ``TPROXY_PARSER=python python -m
twisted.trial tests`` (the PyPy run of ``.ci/run`` uses it).
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from tproxy import hookimpl
from tproxy.testing import Harness, echo
from tests.helpers import parse_responses

PEER = "127.0.0.1:9001"
CHUNKED = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


class Recording(Factory):
    """A stub upstream that records the bytes it receives, per connection,
    and answers nothing unless ``answer`` (bytes, sent on the first read)."""

    def __init__(self, answer=None):
        self.connections = []
        self.answer = answer

    def buildProtocol(self, addr):
        p = _Recorded()
        p.factory = self
        self.connections.append(p)
        return p

    @property
    def data(self):
        return b"".join(b"".join(c.data) for c in self.connections)


class _Recorded(Protocol):
    lost = False

    def connectionMade(self):
        self.data = []

    def dataReceived(self, data):
        if not self.data and self.factory.answer is not None:
            self.transport.write(self.factory.answer)
        self.data.append(data)

    def connectionLost(self, reason):
        self.lost = True


class MaxBody(object):
    """Sets ``ctx.max_body_size`` in ``rewrite``."""

    def __init__(self, limit):
        self.limit = limit

    @hookimpl
    def rewrite(self, ctx):
        ctx.max_body_size = self.limit


def harness(proxy=None, server=echo, plugins=(), log_level="info", timeouts=None):
    return Harness(config={"upstreams": {"default": {"peers": [PEER]}},
                           "proxy": dict(proxy or {}), "log_level": log_level,
                           "timeouts": dict(timeouts or {})},
                   plugins=["router", "least_conn"] + list(plugins),
                   servers={PEER: server})


def statuses(conn):
    return [r.status for r in parse_responses(conn.received, closed=conn.closed)[0]]


class BodyLimitTests(SynchronousTestCase):
    """``proxy.max_body_size`` counts decoded body bytes, whatever the framing."""

    def assertTooLarge(self, h, conn):
        self.assertEqual(statuses(conn), [413])
        self.assertTrue(conn.closed)
        self.assertEqual(h.upstream_requests, [])
        self.assertEqual(h.contexts[-1].error, "body_too_large")
        self.assertEqual(h.contexts[-1].status, 413)

    def test_chunkedOverLimit(self):
        """A chunked body of small chunks over the limit: 413, nothing
        forwarded (the whole body was within the buffer)."""
        h = harness({"max_body_size": 1000})
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"x" * 600) + chunk(b"y" * 401) + b"0\r\n\r\n")
        self.assertTooLarge(h, conn)

    def test_chunkedAtLimit(self):
        """Exactly the limit passes."""
        h = harness({"max_body_size": 1000})
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"x" * 600) + chunk(b"y" * 400) + b"0\r\n\r\n")
        self.assertEqual(statuses(conn), [200])
        self.assertEqual(len(h.upstream_requests[0].body), 1000)

    def test_hugeChunkAtOnce(self):
        """A chunk announcing more than the limit is a 413 at once, before its
        bytes come (the client sent 3 of them)."""
        h = harness({"max_body_size": 1000})
        conn = h.connect()
        conn.send(CHUNKED + b"100000000\r\nabc")
        self.assertTooLarge(h, conn)

    def test_hugeChunkInItsOwnRead(self):
        """The same when the chunk's size line comes in a read of its own."""
        h = harness({"max_body_size": 1000})
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"x" * 10))
        self.assertEqual(statuses(conn), [])
        conn.send(b"3e9\r\n")
        self.assertTooLarge(h, conn)

    def test_chunkOverLimitWithExtension(self):
        """A chunk-size line with an extension is read as its size."""
        h = harness({"max_body_size": 1000})
        conn = h.connect()
        conn.send(CHUNKED + b"3e9;name=1\r\nabc")
        self.assertTooLarge(h, conn)

    def test_hugeChunkSizeLineSplit(self):
        """The same when the size line comes a byte at a time (its CR and LF
        in reads of their own): 413 once it ends."""
        for line in (b"3e9", b"3e9;name=1", b"00003e9"):
            h = harness({"max_body_size": 1000})
            conn = h.connect()
            conn.send(CHUNKED + chunk(b"x" * 10))
            for byte in line + b"\r":
                conn.send(bytes([byte]))
            self.assertEqual(statuses(conn), [], line)
            conn.send(b"\nabc")
            self.assertTooLarge(h, conn)

    def test_chunkSizeOverflow(self):
        """A chunk size past 2**63 - 1 (llhttp reads up to 2**64 - 1) is a
        400 at once, with or without a limit, as nginx's overflow; in one
        read or split."""
        for proxy in ({}, {"max_body_size": 1000}):
            for size in (b"ffffffffffffffff", b"8000000000000000", b"0008000000000000000"):
                for parts in ([size + b"\r\nabc"], [size[:5], size[5:] + b"\r", b"\nabc"]):
                    h = harness(proxy)
                    conn = h.connect()
                    conn.send(CHUNKED + parts[0])
                    for part in parts[1:]:
                        conn.send(part)
                    self.assertEqual(statuses(conn), [400], (proxy, parts))
                    self.assertTrue(conn.closed)
                    self.assertEqual(h.upstream_requests, [])

    def test_largestChunkSizeWithoutLimit(self):
        """2**63 - 1 fits: without a limit, its bytes are awaited (and
        streamed upstream)."""
        up = Recording()
        h = harness({"client_body_buffer_size": 10}, server=up)
        conn = h.connect()
        conn.send(CHUNKED + b"7fffffffffffffff\r\n" + b"x" * 20)
        self.assertEqual(statuses(conn), [])
        self.assertFalse(conn.closed)
        self.assertIn(b"x" * 20, up.data)

    def test_crossingWhileStreaming(self):
        """A body larger than the buffer streams; crossing the limit then
        aborts the upstream request and answers 413."""
        up = Recording()
        h = harness({"max_body_size": 100, "client_body_buffer_size": 10}, server=up)
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"x" * 60))
        self.assertIn(b"x" * 60, up.data)     # the body streams
        conn.send(chunk(b"y" * 41))
        self.assertEqual(statuses(conn), [413])
        self.assertTrue(up.connections[0].lost)
        self.assertNotIn(b"y", up.data)
        self.assertEqual(h.contexts[-1].error, "body_too_large")

    def test_crossingAfterResponseStarted(self):
        """When the upstream already answered the head, the client
        connection is cut (and the upstream's)."""
        up = Recording(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        # (the line of a client's error is logged with "log_level": "debug")
        h = harness({"max_body_size": 100, "client_body_buffer_size": 10}, server=up,
                    log_level="debug")
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"x" * 60))
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK"))
        conn.send(chunk(b"y" * 41))
        self.assertTrue(conn.closed)
        self.assertTrue(up.connections[0].lost)
        self.assertEqual(h.contexts[-1].error, "body_too_large")
        self.assertTrue(any("request body too large" in m for m in h.messages()), h.messages())

    def test_contentLengthOverLimit(self):
        """A declared length over the limit: 413, nothing forwarded."""
        h = harness({"max_body_size": 10})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n")
        self.assertTooLarge(h, conn)

    def test_contextLowersLimit(self):
        """``ctx.max_body_size`` set by a plugin (a per-route limit) applies
        to chunked bodies."""
        h = harness(plugins=[MaxBody(10)])
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"x" * 11) + b"0\r\n\r\n")
        self.assertTooLarge(h, conn)

    def test_contextRaisesLimit(self):
        """... and may raise the configured one for a declared length."""
        h = harness({"max_body_size": 10}, plugins=[MaxBody(1000)])
        resp = h.request("POST", "/", body=b"z" * 500)
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(h.upstream_requests[0].body), 500)

    def test_contextNoLimit(self):
        """``None`` lifts it."""
        h = harness({"max_body_size": 10}, plugins=[MaxBody(None)])
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"x" * 50) + b"0\r\n\r\n")
        self.assertEqual(statuses(conn), [200])

    def test_contextRejectsBadValue(self):
        """Anything but a non-negative int or None is a plugin error (500)."""
        h = harness(plugins=[MaxBody("big")])
        self.assertEqual(h.request("GET", "/").status, 500)
        self.flushLoggedErrors(ValueError)


class HeldBodyTests(SynchronousTestCase):
    """Bodies within ``proxy.client_body_buffer_size`` are read whole before
    tproxy connects upstream; larger ones stream."""

    BAD = [
        (b"3\r\nabc\r\nzz\r\n", "bad chunk size"),
        (b"3\r\nabcXY", "bad chunk terminator"),
        (b"3\r\nabc\r\n0\r\nX\r\n\r\n", "bad trailer"),
    ]

    def test_malformedNeverForwarded(self):
        """Malformed chunked bodies, whole or split at every byte: 400, and
        no upstream connection at all."""
        for body, what in self.BAD:
            data = CHUNKED + body
            for cut in range(len(CHUNKED) - 1, len(data)):
                up = Recording()
                h = harness(server=up)
                conn = h.connect()
                conn.send(data[:cut])
                conn.send(data[cut:])
                self.assertEqual(statuses(conn), [400], (what, cut))
                self.assertEqual(up.connections, [], (what, cut))

    def test_smallBodyGoesUpWhole(self):
        """A small chunked body arriving in pieces goes upstream once whole,
        framed by its length (as nginx), with its head."""
        up = Recording()
        h = harness(server=up)
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"abc"))
        self.assertEqual(up.connections, [])
        conn.send(chunk(b"def") + b"0\r\n\r\n")
        self.assertTrue(up.data.startswith(b"POST /up HTTP/1.1\r\n"))
        self.assertTrue(up.data.endswith(b"\r\nContent-Length: 6\r\n\r\nabcdef"), up.data)
        self.assertNotIn(b"Transfer-Encoding", up.data)

    def test_emptyChunkedBody(self):
        """A chunked body with no data goes up as such."""
        up = Recording()
        h = harness(server=up)
        conn = h.connect()
        conn.send(CHUNKED + b"0\r\n\r\n")
        self.assertTrue(up.data.endswith(b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))

    def test_contentLengthTrailer(self):
        """A Content-Length trailer field has no say in the framing and is
        not forwarded (as nginx, which ignores trailer fields): the request
        is served, in one read or byte by byte, and the next one on the
        connection too; a Content-Length beside Transfer-Encoding in the
        next request's head is still a 400."""
        data = (CHUNKED + chunk(b"abc") + b"0\r\nContent-Length: 37\r\nX-T: 1\r\n\r\n"
                + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        for pieces in ([data], [data[i:i + 1] for i in range(len(data))]):
            up = Recording()
            h = harness(server=up)
            conn = h.connect()
            for piece in pieces:
                conn.send(piece)
            self.assertEqual(statuses(conn), [])    # (the upstream has not answered)
            self.assertTrue(up.data.startswith(b"POST /up HTTP/1.1\r\n"), up.data)
            self.assertTrue(up.data.endswith(b"\r\nContent-Length: 3\r\n\r\nabc"), up.data)
            self.assertNotIn(b"37", up.data)
            self.assertNotIn(b"X-T", up.data)
        h = harness()
        conn = h.connect()
        conn.send(data)
        conn.send(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 3\r\n\r\n0\r\n\r\n")
        self.assertEqual(statuses(conn), [200, 200, 400])
        self.assertEqual([r.uri for r in h.upstream_requests], ["/up", "/next"])

    def test_contentLengthHeld(self):
        """A declared length within the buffer is held too; a client that
        leaves half-way costs the upstream nothing."""
        up = Recording()
        h = harness(server=up)
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        self.assertEqual(up.connections, [])
        conn.close()
        self.assertEqual(up.connections, [])
        self.assertEqual(h.contexts[-1].error, "client_abort")

    def test_largeBodyStreams(self):
        """A declared length over the buffer connects at once."""
        up = Recording()
        h = harness({"client_body_buffer_size": 100}, server=up)
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\nabc")
        self.assertTrue(up.data.endswith(b"\r\n\r\nabc"))

    def test_chunkedPastBufferStreams(self):
        """A chunked body streams once past the buffer."""
        up = Recording()
        h = harness({"client_body_buffer_size": 100}, server=up)
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"a" * 100))
        self.assertEqual(up.connections, [])
        conn.send(chunk(b"b"))
        self.assertIn(b"a" * 100, up.data)
        self.assertIn(b"1\r\nb\r\n", up.data)

    def test_bufferLargerThanPending(self):
        """A buffer larger than what tproxy queues while connecting (64 KiB)
        still holds the whole body."""
        up = Recording()
        h = harness({"client_body_buffer_size": 200000}, server=up)
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 150000\r\n\r\n")
        for _ in range(14):
            conn.send(b"x" * 10000)
        self.assertEqual(up.connections, [])
        conn.send(b"x" * 10000)
        self.assertTrue(up.data.endswith(b"x" * 150000))

    def test_expectContinue(self):
        """``Expect: 100-continue``: the interim response comes before the
        body is held."""
        up = Recording()
        h = harness(server=up)
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        self.assertEqual(conn.received, b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(up.connections, [])
        conn.send(b"hello")
        self.assertTrue(up.data.endswith(b"\r\n\r\nhello"))

    def test_bufferZeroStreams(self):
        """``client_body_buffer_size`` 0: every body streams at once."""
        up = Recording()
        h = harness({"client_body_buffer_size": 0}, server=up)
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab")
        self.assertTrue(up.data.endswith(b"\r\n\r\nab"))

    def test_noBodyNoWait(self):
        """Requests without a body go up as before."""
        h = harness()
        self.assertEqual(h.request("GET", "/").status, 200)


class BodyTimeoutTests(SynchronousTestCase):
    """``proxy.client_body_timeout``: seconds between two reads of a body."""

    def test_heldBody(self):
        """A held body that stops: 408 after the timeout, nothing upstream."""
        up = Recording()
        h = harness({"client_body_timeout": 5}, server=up)
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        h.advance(4.9)
        self.assertEqual(statuses(conn), [])
        h.advance(0.2)
        self.assertEqual(statuses(conn), [408])
        self.assertTrue(conn.closed)
        self.assertEqual(up.connections, [])
        self.assertEqual(h.contexts[-1].error, "client_timeout")
        self.assertEqual([p.active for g in h.registry.groups() for p in g.peers.values()], [0])

    def test_streamingBody(self):
        """A streaming body that stops: 408, and the upstream request is
        aborted."""
        up = Recording()
        h = harness({"client_body_timeout": 5, "client_body_buffer_size": 0}, server=up)
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"abc"))
        self.assertEqual(len(up.connections), 1)
        h.advance(5.1)
        self.assertEqual(statuses(conn), [408])
        self.assertTrue(up.connections[0].lost)
        self.assertEqual(h.contexts[-1].error, "client_timeout")

    def test_pauseShorterThanBodyTimeout(self):
        """A client that pauses within ``client_body_timeout`` while its body
        streams upstream is not timed out, even when the pause is longer
        than ``timeouts.send`` (which measures an upstream that does not take
        bytes, not a client that sends none: nginx's proxy_send_timeout)."""
        up = Recording()
        h = harness({"client_body_timeout": 10, "client_body_buffer_size": 0}, server=up,
                    timeouts={"send": 3})
        conn = h.connect()
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
        self.assertEqual(len(up.connections), 1)
        h.advance(9)
        self.assertEqual(statuses(conn), [])
        self.assertFalse(up.connections[0].lost)
        conn.send(b"def")
        self.assertTrue(b"".join(up.connections[0].data).endswith(b"\r\n\r\nabcdef"))
        self.assertEqual(h.contexts, [])
        # the body is complete: the upstream's silence is timeouts.read's now
        h.advance(90)
        self.assertEqual(statuses(conn), [504])
        self.assertEqual(h.contexts[-1].error, "upstream_timeout")

    def test_bodyTimeoutNotSendTimeout(self):
        """A streaming body that stops: ``408`` after ``client_body_timeout``
        seconds, not after the shorter ``timeouts.send``."""
        up = Recording()
        h = harness({"client_body_timeout": 10, "client_body_buffer_size": 0}, server=up,
                    timeouts={"send": 3})
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"abc"))
        h.advance(10 - 2 ** -7)
        self.assertEqual(statuses(conn), [])
        h.advance(2 ** -7)
        self.assertEqual(statuses(conn), [408])
        self.assertTrue(up.connections[0].lost)
        self.assertEqual(h.contexts[-1].error, "client_timeout")

    def test_progressResetsTimeout(self):
        """Every read starts the timeout anew (not a whole-body deadline)."""
        h = harness({"client_body_timeout": 5})
        conn = h.connect()
        conn.send(CHUNKED)
        for i in range(5):
            h.advance(4)
            conn.send(chunk(b"x"))
        conn.send(b"0\r\n\r\n")
        self.assertEqual(statuses(conn), [200])

    def test_afterResponseStarted(self):
        """The upstream answered early: the client connection is cut."""
        up = Recording(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        h = harness({"client_body_timeout": 5, "client_body_buffer_size": 0}, server=up)
        conn = h.connect()
        conn.send(CHUNKED + chunk(b"abc"))
        h.advance(5.1)
        self.assertTrue(conn.closed)
        self.assertTrue(up.connections[0].lost)
        self.assertEqual(h.contexts[-1].error, "client_timeout")

    def test_waitingForContinue(self):
        """A client waiting for ``100 Continue`` (a slow ``access`` plugin) is
        not timed out; the timeout starts when the interim response goes."""
        from twisted.internet.defer import Deferred

        class Slow(object):
            @hookimpl
            def access(self, ctx):
                self.d = Deferred()
                return self.d
        slow = Slow()
        h = harness({"client_body_timeout": 5}, plugins=[slow])
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        h.advance(20)
        self.assertEqual(conn.received, b"")
        slow.d.callback(None)
        h.flush()
        self.assertEqual(conn.received, b"HTTP/1.1 100 Continue\r\n\r\n")
        h.advance(4)
        conn.send(b"hello")
        self.assertEqual(statuses(conn), [100, 200])

    def test_headerTimeoutUnchanged(self):
        """The head still has ``proxy.header_timeout``."""
        h = harness({"client_body_timeout": 5, "header_timeout": 20})
        conn = h.connect()
        conn.send(b"GET / HTTP/1.1\r\n")
        h.advance(10)
        self.assertEqual(statuses(conn), [])
        h.advance(11)
        self.assertEqual(statuses(conn), [408])


class HeadTests(SynchronousTestCase):
    """Hosts, header line lengths and empty lines before a request."""

    def assertRefused(self, data, status=400, proxy=None):
        h = harness(proxy)
        conn = h.connect()
        conn.send(data)
        self.assertEqual(statuses(conn), [status], data[:80])
        self.assertTrue(conn.closed)
        self.assertEqual(h.upstream_requests, [])

    def test_emptyHost(self):
        """An empty or whitespace-only Host is a 400 (as nginx), also beside
        an absolute-form target."""
        for host in (b"", b" ", b"\t", b" \t "):
            self.assertRefused(b"GET / HTTP/1.1\r\nHost:" + host + b"\r\n\r\n")
            self.assertRefused(b"GET http://a/ HTTP/1.1\r\nHost:" + host + b"\r\n\r\n")

    def test_headerLineLimit(self):
        """``max_header_line`` bytes of ``name: value`` CRLF pass; one more is
        400 (nginx: "Request Header Or Cookie Too Large")."""
        limit = 8192
        for size, status in ((limit, 200), (limit + 1, 400)):
            h = harness()
            conn = h.connect()
            conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * (size - 5) + b"\r\n\r\n")
            self.assertEqual(statuses(conn), [status], size)

    def test_headerLineLimitConfigured(self):
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 100 + b"\r\n\r\n",
                           proxy={"max_header_line": 64})

    def test_endlessHeaderLine(self):
        """A header line that does not end: 400 once past the limit."""
        h = harness()
        conn = h.connect()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX: ")
        for _ in range(9):
            conn.send(b"v" * 1000)
        self.assertEqual(statuses(conn), [400])

    def test_emptyLinesBeforeRequest(self):
        """CRLF and LF before a request line are skipped, as nginx does
        (RFC 9112 2.2 allows empty lines there), also between pipelined
        requests; nothing of them goes upstream.  (A bare CR is a 400:
        tests.test_bare_cr.)"""
        for lead in (b"\r\n", b"\r\n\r\n", b"\n"):
            h = harness()
            conn = h.connect()
            req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            conn.send(lead + req + lead + req)
            self.assertEqual(statuses(conn), [200, 200], lead)
            self.assertEqual([r.uri for r in h.upstream_requests], ["/", "/"])


class RouteLimitTests(SynchronousTestCase):
    """The ``routes`` built-in's per-route ``max_body_size``."""

    def setUp(self):
        routes = [{"name": "upload", "group": "default", "match": {"path": "/upload"},
                   "max_body_size": 1000},
                  {"name": "free", "group": "default", "match": {"path": "/free"},
                   "max_body_size": None},
                  {"name": "other", "group": "default", "match": {"path": "/"}}]
        self.h = Harness(config={"upstreams": {"default": {"peers": [PEER]}},
                                 "proxy": {"max_body_size": 10}},
                         plugins=[{"name": "routes", "settings": {"routes": routes}},
                                  "least_conn"],
                         servers={PEER: echo})

    def send(self, path, size, chunked=False):
        conn = self.h.connect()
        head = b"POST %s HTTP/1.1\r\nHost: x\r\n" % path
        if chunked:
            conn.send(head + b"Transfer-Encoding: chunked\r\n\r\n"
                      + chunk(b"x" * size) + b"0\r\n\r\n")
        else:
            conn.send(head + b"Content-Length: %d\r\n\r\n" % size + b"x" * size)
        return statuses(conn)

    def test_routeLimit(self):
        for chunked in (False, True):
            self.assertEqual(self.send(b"/upload", 1000, chunked), [200])
            self.assertEqual(self.send(b"/upload", 1001, chunked), [413])
            self.assertEqual(self.send(b"/free", 5000, chunked), [200])
            self.assertEqual(self.send(b"/other", 11, chunked), [413])
            self.assertEqual(self.send(b"/other", 10, chunked), [200])

    def test_badLimit(self):
        """A negative limit is a configuration error naming its path."""
        from tproxy.config import ConfigError
        with self.assertRaises(ConfigError) as e:
            Harness(plugins=[{"name": "routes", "settings": {"routes": [
                {"name": "a", "group": "default", "max_body_size": -1}]}}])
        self.assertIn("max_body_size", str(e.exception))
