"""
The proxy's failures, on the fake clock of :mod:`tproxy.testing`: refused,
reset, silent and invalid upstreams (502/504, retries), upstream response
heads past ``proxy.max_upstream_header_size`` (502), clients going away, and
malformed or ambiguous requests (400/414/431, never forwarded).  The
upstreams are :class:`tests.upstreams.Scripted`, which sends what the test
chose byte for byte; bytes a test sends in pieces arrive in as many reads.

Only the send timeout (an upstream whose socket buffer fills) needs real
sockets: :class:`SendTimeoutTests`.
"""

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from tproxy import hookimpl
from tproxy.http.refusals import REFUSED_ERRORS
from tproxy.testing import Harness
from tests.helpers import (BodySource, ClockedReactor, ProxyTestCase, buffered, is_reading,
                           until)
from tests.upstreams import ABORT, CLOSE, Scripted, pieces

HOOKS = "tests.proxy_plugins:Hooks"
UP = "127.0.0.1:9001"
#: a peer nothing answers at: connections are refused
REFUSED = "127.0.0.1:9002"
#: a step of the fake clock that adds up exactly (a power of two)
TICK = 2 ** -7

#: the default of ``proxy.max_upstream_header_size``
UPSTREAM_HEAD_LIMIT = 65536


def request(method, uri):
    """A request (``bytes``) as a client sends it."""
    return ("%s %s HTTP/1.1\r\nHost: x\r\n\r\n" % (method, uri)).encode("ascii")


def ok(body=b"ok"):
    """A 200 response with ``body``."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def harness(answer=None, peers=(UP,), plugins=("router", "least_conn"), **config):
    """
    A harness whose group ``default`` is ``peers`` (an address, or
    ``(address, weight)``), and :data:`UP` a :class:`Scripted` upstream
    answering ``answer`` (default: ``200 ok``); returns ``(h, up)``.
    """
    up = Scripted(answer if answer is not None else (lambda req: ok()))
    listed = []
    for peer in peers:
        address, weight = peer if isinstance(peer, tuple) else (peer, 1)
        host, port = address.rsplit(":", 1)
        listed.append({"host": host, "port": int(port), "weight": weight})
    config["upstreams"] = {"default": {"peers": listed}}
    h = Harness(config=config, plugins=list(plugins), servers={UP: up})
    up.clock = h.clock
    return h, up


def active(h):
    """``{address: active}`` of every peer."""
    return {p.address: p.active for g in h.registry.groups() for p in g.peers.values()}


def idle(h):
    """The pooled (idle) upstream connections."""
    return [c for conns in h.factory.pool.idle.values() for c in conns]


def statuses(conn):
    return [r.status for r in conn.responses]


def head_then_silence(req):
    """A response head and part of the body, then nothing."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000


class Case(SynchronousTestCase):

    def assertLoggedOnce(self, h, n=1):
        """``log`` ran ``n`` times, once per request (distinct contexts)."""
        ids = [ctx.request_id for ctx in h.contexts]
        self.assertEqual(len(ids), n, ids)
        self.assertEqual(len(set(ids)), n, ids)


class UpstreamFailureTests(Case):
    """Refused, reset, silent and invalid upstreams."""

    def test_retryRefused(self):
        """The chosen peer refuses: the balancer is asked again without it
        and the next peer answers; the refused one's count is back at 0."""
        # the weight makes least_conn choose the refused peer first
        h, up = harness(peers=[(REFUSED, 10), UP])
        self.assertEqual(h.request("GET", "/x").status, 200)
        ctx, = h.contexts
        self.assertEqual([p.address for p in ctx.tried], [REFUSED, UP])
        self.assertEqual(ctx.upstream_addr, UP)
        self.assertIsNone(ctx.error)
        self.assertEqual(active(h), {REFUSED: 0, UP: 0})

    def test_allRefused(self):
        """Every peer refuses: 502 JSON once the peers run out."""
        other = "127.0.0.1:9003"
        h, up = harness(peers=[REFUSED, other])
        resp = h.request("GET", "/x")
        self.assertEqual(resp.status, 502)
        self.assertEqual(resp.headers.get("Content-Type"), "application/json")
        self.assertEqual(resp.json()["error"], "upstream connection failed")
        ctx, = h.contexts
        self.assertEqual(sorted(p.address for p in ctx.tried), [REFUSED, other])
        self.assertEqual(ctx.error, "upstream_connect")
        self.assertEqual(active(h), {REFUSED: 0, other: 0})

    def test_triesLimit(self):
        """``proxy.tries`` 1: a refused peer is not retried elsewhere."""
        h, up = harness(peers=[(REFUSED, 10), UP], proxy={"tries": 1})
        self.assertEqual(h.request("GET", "/x").status, 502)
        self.assertEqual(up.connections, 0)

    def test_readTimeout(self):
        """An upstream that never answers: 504 JSON after ``timeouts.read``
        (not before), its connection closed and its count back at 0."""
        h, up = harness(lambda req: None, timeouts={"read": 0.25})
        pending = h.request("GET", "/x", wait=False)
        h.advance(0.25 - TICK)
        self.assertFalse(pending.done)
        self.assertEqual(up.open, 1)
        h.advance(TICK)
        resp = pending.result()
        self.assertEqual(resp.status, 504)
        self.assertEqual(resp.json()["error"], "upstream timed out")
        self.assertEqual(up.open, 0)
        self.assertEqual(h.contexts[0].error, "upstream_timeout")
        self.assertEqual(active(h), {UP: 0})
        self.assertLoggedOnce(h)

    def test_readTimeoutMidBody(self):
        """An upstream that stops in the middle of the body: the client's
        response is cut (it cannot be completed) and the connection closed."""
        h, up = harness(head_then_silence, timeouts={"read": 0.25})
        conn = h.connect()
        conn.send(request("GET", "/x"))
        h.advance(0.25 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(conn.responses, [])
        self.assertEqual(h.contexts[0].error, "upstream_timeout")
        self.assertEqual(h.contexts[0].status, 200)

    def test_readTimeoutMidBodyNotAFailure(self):
        """A body that stops after its head is no failure of the peer (it
        answered; nginx counts failures only before the response head): one
        stalled download does not eject a peer, and the next request goes
        to it."""
        h, up = harness(lambda req: head_then_silence(req) if req.uri == "/stall" else ok(),
                        timeouts={"read": 0.25})
        conn = h.connect()
        conn.send(request("GET", "/stall"))
        h.advance(0.25)
        self.assertEqual(h.contexts[0].error, "upstream_timeout")
        peer = h.registry.group("default").peers[("127.0.0.1", 9001)]
        health = h.gateway.health.as_dict(peer)
        self.assertEqual((health["healthy"], health["fails"], health["total_fails"]),
                         (True, 0, 0))
        self.assertEqual(h.request("GET", "/next").status, 200)

    def test_resetBeforeResponse(self):
        """The upstream resets the connection: 502."""
        h, up = harness(lambda req: [ABORT])
        self.assertEqual(h.request("GET", "/x").status, 502)
        self.assertEqual(h.contexts[0].error, "upstream_error")
        self.assertEqual(active(h), {UP: 0})

    def test_closedBeforeResponse(self):
        """The upstream closes (FIN) without answering: 502."""
        h, up = harness(lambda req: [CLOSE])
        self.assertEqual(h.request("GET", "/x").status, 502)
        self.assertEqual(h.contexts[0].error, "upstream_error")

    def test_resetMidResponse(self):
        """A reset after part of the body: the client connection is cut."""
        h, up = harness(lambda req: [
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", ABORT])
        conn = h.connect()
        conn.send(request("GET", "/x"))
        h.advance(1)
        self.assertTrue(conn.closed)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(conn.responses, [])
        ctx, = h.contexts
        self.assertEqual(ctx.error, "upstream_error")
        self.assertEqual(active(h), {UP: 0})

    def assertInvalid(self, data):
        """An upstream answering ``data`` gives the client a 502; that
        upstream connection is dropped, the client's stays usable."""
        h, up = harness(lambda req: data if req.uri == "/x" else ok())
        conn = h.connect()
        conn.send(request("GET", "/x"))
        resp, = conn.responses
        self.assertEqual(resp.status, 502, data)
        self.assertEqual(resp.json()["error"], "invalid response from upstream")
        self.assertEqual(h.contexts[0].error, "upstream_invalid")
        self.assertEqual(up.open, 0)
        self.assertEqual(active(h), {UP: 0})
        resp = conn.request("GET", "/again")
        self.assertEqual((resp.status, resp.body), (200, b"ok"))
        self.assertLoggedOnce(h, 2)

    def test_codingBeforeChunked(self):
        """``Transfer-Encoding: gzip, chunked``: the body would reach the
        client still gzip-coded with nothing saying so: 502."""
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                           b"5\r\nhello\r\n0\r\n\r\n")

    def test_transferEncodingTwice(self):
        """Two Transfer-Encoding fields: 502."""
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    def test_invalidStatus(self):
        """``HTTP/1.1 2000 OK`` is not a response: 502."""
        self.assertInvalid(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n")

    def test_statusBelow100(self):
        """``HTTP/1.1 099`` is not an interim response to wait past: 502 at
        once, not a request hanging until the read timeout."""
        self.assertInvalid(b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok")

    def test_notHttp(self):
        """Garbage instead of a status line: 502."""
        self.assertInvalid(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    def test_lengthAndChunked(self):
        """Content-Length together with Transfer-Encoding: 502."""
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

    def test_conflictingLengths(self):
        """Two different Content-Length values: 502."""
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                           b"Content-Length: 4\r\n\r\nabcd")

    def test_unaskedUpgrade(self):
        """A 101 the proxy never asked for (it does not forward Upgrade): 502."""
        self.assertInvalid(b"HTTP/1.1 101 Switching Protocols\r\n"
                           b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")

    def test_invalidChunk(self):
        """A bad chunk size read with the head, which has not left yet: the
        client gets the 502 (not a connection closed without a byte), and
        the log says so."""
        self.assertInvalid(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\nabc\r\n")
        h, up = harness(lambda req: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"3\r\nabc\r\nzz\r\n")
        conn = h.connect()
        conn.send(request("GET", "/x"))
        resp, = conn.responses
        ctx, = h.contexts
        self.assertEqual((resp.status, ctx.status, ctx.bytes_sent, ctx.error),
                         (502, 502, len(conn.received), "upstream_invalid"))

    def test_invalidChunkLater(self):
        """A bad chunk size after the head went to the client: the client
        connection is cut."""
        h, up = harness(lambda req: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"3\r\nabc\r\n", b"zz\r\nabc\r\n"])
        conn = h.connect()
        conn.send(request("GET", "/x"))
        h.advance(1)
        self.assertTrue(conn.closed)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(conn.responses, [])
        ctx, = h.contexts
        self.assertEqual((ctx.status, ctx.error), (200, "upstream_invalid"))

    def test_errorsThenSuccess(self):
        """After an upstream error the client connection serves on when the
        error response could be sent whole."""
        h, up = harness(lambda req: [ABORT] if req.uri == "/bad" else ok())
        conn = h.connect()
        conn.send(request("GET", "/bad") + request("GET", "/good"))
        self.assertEqual(statuses(conn), [502, 200])
        self.assertFalse(conn.closed)
        self.assertLoggedOnce(h, 2)


def padded_head(size, status=b"200 OK", body=b"ok"):
    """
    A response whose head (status line, header fields and the empty line
    ending them) is exactly ``size`` bytes, filled with ``X-Fnnnn`` fields of
    up to 1000 bytes; then ``body`` (framed by Content-Length unless the
    status is 1xx).
    """
    start = b"HTTP/1.1 " + status + b"\r\n"
    if not status.startswith(b"1"):
        start += b"Content-Length: %d\r\n" % len(body)
    left = size - len(start) - 2
    assert left == 0 or left >= 12, size
    lines = []
    while left:
        n = min(left, 1000)
        if 0 < left - n < 12:
            n = left - 12      # room for a last line
        lines.append(b"X-F%04d: %s\r\n" % (len(lines), b"v" * (n - 11)))
        left -= n
    head = start + b"".join(lines) + b"\r\n"
    assert len(head) == size, (len(head), size)
    return head + (b"" if status.startswith(b"1") else body)


class UpstreamHeadLimitTests(Case):
    """
    ``proxy.max_upstream_header_size``: an upstream response head larger than
    it is a 502 (nginx: "upstream sent too big header", proxy_buffer_size),
    however it arrives; the upstream connection is dropped, the peer's count
    released, and the client connection serves on.
    """

    def assertTooBig(self, h, up, conn, n=1):
        """The client's ``n``th response is the 502 of a too big head; the
        upstream connection was dropped and the peer released."""
        h.advance(1)        # time for answers sent in pieces
        self.assertEqual(len(conn.responses), n, conn.received[-300:])
        resp = conn.responses[n - 1]
        self.assertEqual(resp.status, 502, resp)
        self.assertEqual(resp.headers.get("Content-Type"), "application/json")
        self.assertEqual(resp.json()["error"], "upstream sent too big header")
        self.assertEqual(resp.json()["upstream"], UP)
        ctx = h.contexts[n - 1]
        self.assertEqual((ctx.status, ctx.error), (502, "upstream_header_too_big"))
        self.assertEqual(up.open, 0)
        self.assertEqual(idle(h), [])
        self.assertEqual(active(h), {UP: 0})
        return resp

    def test_hugeHeaderBlock(self):
        """A head of 200 KB sent at once: 502 JSON, the upstream connection
        dropped (not pooled), logged once; the client connection is kept
        alive and its next request is served."""
        h, up = harness(lambda req: padded_head(200000) if req.uri == "/big" else ok(b"next"))
        conn = h.connect()
        conn.send(request("GET", "/big"))
        resp = self.assertTooBig(h, up, conn)
        self.assertIsNone(resp.headers.get("Connection"))
        self.assertEqual(len([e for e in h.events if "too big header" in
                              (e.get("log_format") or "")]), 1)
        resp = conn.request("GET", "/next")
        self.assertEqual((resp.status, resp.body), (200, b"next"))
        self.assertFalse(conn.closed)
        self.assertEqual(up.connections, 2)
        self.assertIsNone(h.contexts[1].error)
        self.assertLoggedOnce(h, 2)

    def test_manySmallHeaders(self):
        """Thousands of tiny header lines are counted too."""
        h, up = harness(lambda req: b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 20000
                        + b"Content-Length: 0\r\n\r\n")
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertTooBig(h, up, conn)

    def test_endlessHeaderLine(self):
        """A header line that never ends, arriving in many reads: 502 once
        it passes the limit, without waiting for its end (or a timeout)."""
        h, up = harness(lambda req: [b"HTTP/1.1 200 OK\r\nX-Endless: "]
                        + [b"v" * 4096] * 150)       # 600 KiB at most
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertTooBig(h, up, conn)
        self.assertLess(up.sent, 4 * UPSTREAM_HEAD_LIMIT)
        self.assertLoggedOnce(h)

    def test_endlessStatusLine(self):
        """The same with a reason phrase that never ends."""
        h, up = harness(lambda req: [b"HTTP/1.1 200 O"] + [b"K" * 4096] * 150)
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertTooBig(h, up, conn)
        self.assertLess(up.sent, 4 * UPSTREAM_HEAD_LIMIT)

    def test_headAtLimitInPieces(self):
        """A head of exactly the limit, arriving in many pieces, passes (and
        the connection is pooled); one byte more is a 502."""
        h, up = harness(lambda req: pieces(padded_head(
            UPSTREAM_HEAD_LIMIT + (req.uri == "/over"), body=b"fits"), 5000))
        conn = h.connect()
        conn.send(request("GET", "/at"))
        h.advance(1)
        resp, = conn.responses
        self.assertEqual((resp.status, resp.body), (200, b"fits"))
        self.assertEqual(len(resp.headers.get_all("X-F0000")), 1)
        self.assertIsNone(h.contexts[0].error)
        self.assertEqual(len(idle(h)), 1)
        conn.send(request("GET", "/over"))
        self.assertTooBig(h, up, conn, 2)

    def test_headAtLimitAtOnce(self):
        """The same, sent in one write."""
        h, up = harness(lambda req: padded_head(
            UPSTREAM_HEAD_LIMIT + (req.uri == "/over"), body=b"fits"))
        conn = h.connect()
        resp = conn.request("GET", "/at")
        self.assertEqual((resp.status, resp.body), (200, b"fits"))
        conn.send(request("GET", "/over"))
        self.assertTooBig(h, up, conn, 2)

    def test_countedPerResponse(self):
        """The count starts again for each response, also after an interim
        (1xx) one: a 103 and a final response of 40 KB heads each pass,
        sent at once and in pieces."""
        data = (padded_head(40000, b"103 Early Hints")
                + padded_head(40000, body=b"final"))
        h, up = harness(lambda req: pieces(data, 5000) if req.uri == "/pieces" else data)
        conn = h.connect()
        for path in ("/once", "/pieces", "/once"):
            conn.send(request("GET", path))
        h.advance(1)
        self.assertEqual([(r.status, r.body) for r in conn.responses], [(200, b"final")] * 3)
        self.assertEqual([ctx.error for ctx in h.contexts], [None] * 3)
        self.assertEqual(up.connections, 1)

    def test_configured(self):
        """``proxy.max_upstream_header_size`` sets the limit."""
        h, up = harness(lambda req: padded_head(int(req.uri[1:]), body=b"fits"),
                        proxy={"max_upstream_header_size": 1024})
        conn = h.connect()
        resp = conn.request("GET", "/1024")
        self.assertEqual((resp.status, resp.body), (200, b"fits"))
        conn.send(request("GET", "/1025"))
        self.assertTooBig(h, up, conn, 2)


class ClientAbortTests(Case):
    """A client that goes away releases the upstream and its count."""

    def test_abortMidResponse(self):
        """Mid-body: the upstream connection is closed, the count back at 0,
        ``log`` once with ``client_abort``."""
        h, up = harness(head_then_silence)
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertGreater(len(conn.received), 1000)
        self.assertEqual(active(h), {UP: 1})
        conn.abort()
        self.assertEqual(up.open, 0)
        ctx, = h.contexts
        self.assertEqual(ctx.error, "client_abort")
        self.assertEqual(ctx.status, 200)
        self.assertEqual(active(h), {UP: 0})
        self.assertEqual(h.factory.pool.idle, {})
        h.advance(120)      # every timeout of the request, had one stayed
        self.assertLoggedOnce(h)

    def test_abortWhileWaiting(self):
        """Before the response: the same, with status 499."""
        h, up = harness(lambda req: None)
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertEqual(len(up.requests), 1)
        conn.close()
        self.assertEqual(up.open, 0)
        self.assertEqual((h.contexts[0].error, h.contexts[0].status), ("client_abort", 499))
        self.assertEqual(active(h), {UP: 0})
        self.assertLoggedOnce(h)

    def test_abortWhileBalancing(self):
        """While a balancer's Deferred is pending: no peer is taken when it
        fires, ``log`` runs once."""
        h, up = harness(plugins=["router", HOOKS, "least_conn"])
        pending = Deferred()
        hooks = h.plugin(HOOKS)
        hooks.fns["balancer"] = lambda ctx, tried: pending
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertEqual(hooks.calls, ["rewrite", "access", "balancer"])
        conn.abort()
        self.assertEqual(h.contexts[0].error, "client_abort")
        [peer] = [p for g in h.registry.groups() for p in g.peers.values()]
        pending.callback(peer)
        h.advance(120)
        self.assertEqual(up.connections, 0)
        self.assertEqual(active(h), {UP: 0})
        self.assertLoggedOnce(h)

    def test_abortDuringRequestBody(self):
        """A client that stops half-way through a body that streams (larger
        than ``client_body_buffer_size``)."""
        h, up = harness(proxy={"client_body_buffer_size": 50})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        self.assertIn(b"\r\n\r\nabc", up.received)       # the head went up
        conn.abort()
        self.assertEqual(up.open, 0)
        self.assertEqual(up.requests, [])
        self.assertEqual(h.contexts[0].error, "client_abort")
        self.assertEqual(active(h), {UP: 0})
        self.assertLoggedOnce(h)


class MalformedRequestTests(Case):
    """Malformed or ambiguous requests: an error status, the connection
    closed, nothing forwarded."""

    def assertRejected(self, data, status=400, logged=0, **config):
        """``data`` gets ``status`` and a close, and nothing goes upstream;
        ``log`` ran ``logged`` times for a request whose head was valid
        (its phases ran), else once for the refused head (no route, no
        peer, ``ctx.error`` the status's code)."""
        h, up = harness(**config)
        conn = h.connect()
        conn.send(data)
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [status], conn.received)
        resp = conn.responses[0]
        self.assertEqual(resp.headers.get("Connection"), "close")
        self.assertIn("error", resp.json())
        h.advance(1)
        self.assertEqual(up.received, b"")
        self.assertEqual(active(h), {UP: 0})
        # a request whose head was valid ran its phases: it is logged
        if logged:
            self.assertEqual(len(h.contexts), logged)
        else:
            # refused before any plugin: logged as refused
            ctx, = h.contexts
            self.assertEqual((ctx.status, ctx.error, ctx.route, ctx.peer, ctx.upstream_start),
                             (status, REFUSED_ERRORS.get(status, "bad_request"),
                              None, None, None))
            self.assertEqual(ctx.bytes_sent, len(conn.received))
        return resp

    def test_lengthAndChunked(self):
        """Content-Length with Transfer-Encoding (a smuggling vector)."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_transferCodingBeforeChunked(self):
        """``Transfer-Encoding: gzip, chunked``: 501, as nginx (re-chunked
        without it, the body would reach the upstream gzip-coded unlabelled)."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"0\r\n\r\n", 501)

    def test_transferEncodingHttp10(self):
        """Transfer-Encoding in an HTTP/1.0 request: faulty framing, 400
        (RFC 9112 6.1)."""
        self.assertRejected(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def test_http2Version(self):
        """``HTTP/2.0`` in a request line: 505."""
        self.assertRejected(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)

    def test_malformedVersionAfterRequest(self):
        """A malformed version (``HTTP/1\\t.1``, ``HTTP/.1``) in a request
        pipelined behind a valid one: 400 on either parser (RFC 9112 2.3:
        not a version at all), a version tproxy does not serve there: 505."""
        for version, status in ((b"HTTP/1\t.1", 400), (b"HTTP/.1", 400), (b"HTTP/1.}1", 400),
                                (b"HTTP/2.0", 505)):
            h, up = harness()
            conn = h.connect()
            conn.send(request("GET", "/a") + b"GET /b " + version + b"\r\nHost: x\r\n\r\n")
            self.assertEqual(statuses(conn), [200, status], version)
            self.assertTrue(conn.closed)

    def test_unknownMethod(self):
        """A method token the parser does not know: 501 (not forwarded)."""
        self.assertRejected(b"FROB / HTTP/1.1\r\nHost: x\r\n\r\n", 501)

    def test_trace(self):
        """``TRACE``: 405, not forwarded, as nginx (the upstream's echo of
        the request would hand its cookies and credentials to a script)."""
        resp = self.assertRejected(request("TRACE", "/"), 405)
        self.assertEqual(resp.json(), {"error": "TRACE method not allowed"})

    def test_encodedNul(self):
        """``%00`` in the path: 400, as nginx (a server behind may end the
        path at the NUL, and serve another path than the one routed); on
        the slower path (a dot segment) too."""
        for target in ("/a%00b", "/a/./b%00", "/x/%2e%2e/a%00"):
            resp = self.assertRejected(request("GET", target))
            self.assertEqual(resp.json(), {"error": "encoded NUL in the path"})

    def test_encodedNulInQuery(self):
        """``%00`` in the query is forwarded as it is (nginx reads only the
        path decoded)."""
        h, up = harness()
        conn = h.connect()
        conn.send(request("GET", "/a?b=%00"))
        self.assertEqual(statuses(conn), [200])
        self.assertIn(b"GET /a?b=%00 HTTP/1.1\r\n", up.received)

    def test_invalidPercentEncoding(self):
        """A ``%`` in the path not followed by two hex digits (RFC 3986
        2.1): 400, as nginx.  The request-target is invalid (RFC 9112 3.2),
        and a server behind may decode it as tproxy did not route it
        (``%u0061`` is ``a`` to IIS); on the slower paths (an escape, a dot
        segment, the absolute form) too."""
        for target in ("/ok%", "/%zz", "/a%2", "/%u0061dmin/x", "/a%%41", "/%41%",
                       "/a/%2e%", "/a/./b%g0", "http://x/a%", "http://x/%41%zz?q=1"):
            resp = self.assertRejected(request("GET", target))
            self.assertEqual(resp.json(), {"error": "invalid percent-encoding in the path"},
                             target)

    def test_percentEncodingForwarded(self):
        """Valid escapes in the path, and anything in the query (nginx reads
        only the path decoded), go upstream as they came."""
        h, up = harness()
        for target in ("/a%20b%C3%a9", "/a%2fb", "/a?b=%zz&c=%", "/%41?%u0061"):
            conn = h.connect()
            conn.send(request("GET", target))
            self.assertEqual(statuses(conn), [200], target)
            self.assertIn(("GET %s HTTP/1.1\r\n" % target).encode(), up.received)

    def test_twoLengths(self):
        """Two different Content-Length values."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
            b"abcdef")

    def test_badLength(self):
        """A Content-Length that is not a number."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")

    def test_invalidChunkSize(self):
        """A chunk size that is not hex (sent with the head)."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
            logged=1)

    def test_hugeChunkSize(self):
        """A chunk size past 2**64."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10000000000000005\r\nabc\r\n", logged=1)

    def test_bareLF(self):
        """Lines ended by LF alone."""
        self.assertRejected(b"GET / HTTP/1.1\nHost: x\n\n")

    def test_bareLFInHeaders(self):
        """One header line ended by LF alone."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n")

    def test_missingHost(self):
        """HTTP/1.1 without Host."""
        self.assertRejected(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n")

    def test_twoHosts(self):
        """Two Host fields."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")

    def test_identityEncoding(self):
        """``Transfer-Encoding: identity`` (hides a request in a body framed by
        Content-Length behind a proxy that believes it)."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
            b"Content-Length: 37\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_chunkedNotLast(self):
        """``Transfer-Encoding: chunked, gzip``: the framing is unknowable."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
            b"0\r\n\r\n")

    def test_obsFold(self):
        """A folded header line (obs-fold)."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")

    def test_spaceBeforeColon(self):
        """``Host : x`` (whitespace between name and colon)."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")

    def test_badTarget(self):
        """A target that is neither origin- nor absolute-form."""
        self.assertRejected(b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_badVersion(self):
        """An unknown HTTP version: 505, as nginx (also a minor version
        above 1.1, which neither parser reads)."""
        self.assertRejected(b"GET / HTTP/7.1\r\nHost: x\r\n\r\n", 505)
        self.assertRejected(b"GET / HTTP/3.0\r\nHost: x\r\n\r\n", 505)
        self.assertRejected(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505)
        self.assertRejected(b"GET / HTTP/01.1\r\nHost: x\r\n\r\n", 400)

    def test_http09(self):
        """A request line without a version (HTTP/0.9) is answered at once,
        whether its head ends in the same read or not (the parsers would
        wait for header lines until ``header_timeout``)."""
        self.assertRejected(b"GET /\r\n")
        self.assertRejected(b"\r\nGET /x\r\nHost: x\r\n")
        self.assertRejected(b"GET /\r\n\r\n")

    def test_http09AfterRequest(self):
        """An HTTP/0.9 request line after a served request on a kept-alive
        connection, in a read of its own, is answered at once too."""
        h, up = harness()
        conn = h.connect()
        conn.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.send(b"GET /b\r\n")
        self.assertEqual(statuses(conn), [200, 400])
        self.assertTrue(conn.closed)

    def test_unknownCoding(self):
        """A transfer coding alone, not chunked: 501 on both parsers, as
        nginx (tproxy's own parser refuses it before the head is complete)."""
        for coding in (b"identity", b"gzip", b"xchunked"):
            self.assertRejected(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding
                                + b"\r\n\r\n0\r\n\r\n", 501)

    def test_controlCharInValue(self):
        """A NUL byte in a header value."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n")

    def test_longRequestLine(self):
        """A request target past ``max_line_size``: 414."""
        self.assertRejected(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)

    def test_longRequestLineInPieces(self):
        """The same, arriving in small pieces (a read each): 414 once the
        line passes the limit, without waiting for its end."""
        h, up = harness()
        conn = h.connect()
        conn.send(b"GET /")
        sent = 0
        while not conn.closed and sent < 20000:
            conn.send(b"a" * 1000)
            sent += 1000
        self.assertTrue(conn.closed)
        self.assertLess(sent, 10000)
        self.assertEqual(statuses(conn), [414])
        self.assertEqual(up.received, b"")

    def test_endlessHeaderLine(self):
        """A header line that never ends, arriving in pieces: 400 once it
        passes ``max_header_line``, without waiting for its end."""
        h, up = harness()
        conn = h.connect()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        while not conn.closed and sent < 50000:
            conn.send(b"v" * 1000)
            sent += 1000
        self.assertTrue(conn.closed)
        self.assertLess(sent, 50000)
        self.assertEqual(statuses(conn), [400])
        self.assertEqual(up.received, b"")

    def test_largeValidHeadInPieces(self):
        """A head just under the limits, arriving in small pieces, passes."""
        h, up = harness()
        conn = h.connect()
        data = (b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n"
                + b"".join(b"X-H%02d: %s\r\n" % (i, b"v" * 1000) for i in range(31))
                + b"\r\n")
        for piece in pieces(data, 1000):
            conn.send(piece)
        self.assertEqual(statuses(conn), [200])
        self.assertEqual(len(up.requests[0].uri), 8001)

    def test_largeHeaders(self):
        """Header fields past ``max_header_size``: 431."""
        self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)) + b"\r\n", 431)

    def test_oneHugeHeader(self):
        """A single header line past ``max_header_line``: 400 (nginx: "Request
        Header Or Cookie Too Large")."""
        resp = self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 40000 + b"\r\n\r\n", 400)
        self.assertEqual(resp.json()["error"], "request header line too long")

    def test_manySmallHeaders(self):
        """Thousands of tiny headers are counted too: 431."""
        self.assertRejected(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 6000 + b"\r\n", 431)

    def test_bodyTooLarge(self):
        """A Content-Length past ``max_body_size``: 413 (once the request is
        routed: it is logged)."""
        self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413,
            logged=1, proxy={"max_body_size": 1000})

    def test_headerTimeout(self):
        """A head that never completes: 408 after ``header_timeout``, not
        before."""
        h, up = harness(proxy={"header_timeout": 0.25})
        conn = h.connect()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        h.advance(0.25 - TICK)
        self.assertEqual((statuses(conn), conn.closed), ([], False))
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [408])
        self.assertEqual(conn.responses[0].headers.get("Connection"), "close")
        self.assertEqual(up.received, b"")
        # logged as refused; its request line is known (both parsers report
        # it once it ends)
        ctx, = h.contexts
        self.assertEqual((ctx.status, ctx.error, ctx.request_time(), ctx.route, ctx.peer),
                         (408, "header_timeout", 0.25, None, None))
        self.assertEqual((ctx.request.method, ctx.request.path, ctx.request.version),
                         ("GET", "/", "1.1"))

    def test_invalidHost(self):
        """A Host that is not one authority (whitespace, a path, userinfo,
        a backslash, ``..``, no host before the port, a host that is only
        the dot of a fully qualified name): 400, as nginx 1.22 (RFC 9112
        3.2); it would reach the upstream as it is."""
        for host in (b"a b", b"x/y", b"u@x", b"x\\y", b"..", b"a..b", b":80", b"x, y",
                     b"x:8o", b"x\x80", b".", b".:80", b". ", b"..:80"):
            resp = self.assertRejected(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertEqual(resp.json()["error"], "invalid Host", host)

    def test_validHosts(self):
        """Host values that are valid authorities go upstream as they are."""
        hosts = [b"x", b"X.Example", b"x.", b"x:8080", b"x:", b"a_b-c~d", b"[::1]:80",
                 b"10.0.0.1", b"xn--p1ai", b"x \t", b"x.:80", b".x"]
        h, up = harness()
        conn = h.connect()
        for host in hosts:
            conn.send(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        self.assertEqual(statuses(conn), [200] * len(hosts))
        self.assertEqual([r.header("Host") for r in up.requests],
                         [v.strip().decode() for v in hosts])

    def test_absoluteFormBadAuthority(self):
        """An absolute-form target whose authority is empty or has userinfo:
        400, as nginx (it would replace the Host field)."""
        for target in (b"http:///x", b"http://u@other/x", b"http://u:p@other/x",
                       b"http://a b/x", b"http://?q=1", b"http://./x", b"http://.:80/x",
                       b"http://a..b/x"):
            self.assertRejected(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_hugeLength(self):
        """A Content-Length past 2**63 - 1 (httptools reads up to 2**64 - 1;
        forwarded, it would overflow a signed 64-bit length upstream): 400,
        as nginx and tproxy's own parser."""
        self.assertRejected(b"POST / HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 9223372036854775808\r\n\r\nabc")
        h, up = harness()
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 9223372036854775807\r\n\r\nabc")
        self.assertEqual((conn.responses, conn.closed), ([], False))

    def test_endlessTrailers(self):
        """Trailers of a chunked request sent in small reads, without end:
        a 400 once past 64 KiB, on both parsers (httptools has no limit of
        its own: they were kept in memory for as long as they came)."""
        h, up = harness()
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\n")
        line = b"X-T: " + b"t" * 90 + b"\r\n"
        for _ in range(17):     # 17 reads of 3,960 bytes: past 64 KiB
            self.assertFalse(conn.closed)
            conn.send(line * 40)
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [400])
        self.assertEqual(up.requests, [])

    def test_upgradeWithBody(self):
        """An upgrade request with a body that is not tunneled (the
        parsers skip the body of an upgrade request): 501, nothing
        forwarded (the upstream waited for a body never sent, or got an
        empty chunked one)."""
        upgrade = (b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
                   b"Proxy-Connection: upgrade\r\nUpgrade: websocket\r\n",
                   b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n")
        framing = (b"Content-Length: 5\r\n\r\nhello",
                   b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        for fields in upgrade:
            for body in framing:
                self.assertRejected(b"POST / HTTP/1.1\r\nHost: x\r\n" + fields + body, 501)

    def test_garbageAfterGood(self):
        """Bytes that cannot start a request after a good one in the same
        read: 400 (not the 501 of an unknown method)."""
        h, up = harness()
        conn = h.connect()
        conn.send(request("GET", "/ok") + b"\x00")
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [200, 400])

    def test_refusedLogFails(self):
        """A ``log`` implementation failing on a refused request is logged;
        the refusal is written and the connection closes all the same, and
        the other ``log`` implementations run."""
        from tests.test_phases import Boom
        h, up = harness(plugins=("router", "least_conn", "tests.proxy_plugins:BadLog"))
        conn = h.connect()
        conn.send(b"GARBAGE\r\n\r\n")
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [400])
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertEqual([(c.status, c.error) for c in h.contexts], [(400, "bad_request")])
        self.assertEqual(h.factory.open_connections, 0)

    def test_refusedBuiltinLogs(self):
        """Every built-in with a ``log`` hook takes a refused request's
        context (no route, no peer, maybe no request line or fields)
        without failing."""
        import importlib

        from tproxy.plugins import BUILTINS
        names = sorted(n for n, module in BUILTINS.items()
                       if hasattr(importlib.import_module(module).Plugin, "log"))
        self.assertEqual(names, ["access_log", "cache", "prometheus"])
        settings = {"access_log": {"target": "logger",
                                   "request_headers": ["*"], "response_headers": ["*"]},
                    "prometheus": {"process_metrics": False}}
        h, up = harness(plugins=["router", "least_conn"] + [
            {"name": n, "settings": settings.get(n, {})} for n in names],
            proxy={"header_timeout": 1})
        for data in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                     b"GET /" + b"a" * 9000, b"GET / HTTP/1.1\r\nHost: x\r\n"):
            h.connect().send(data)
        h.advance(1)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([c.status for c in h.contexts], [400, 400, 414, 408])
        logged = [e["access_log"] for e in h.events if "access_log" in e]
        self.assertEqual([(r["status"], r["request_headers"]) for r in logged],
                         [(400, {}), (400, {"host": "a b"}), (414, {}), (408, {})])

    def test_refusedLogAwaited(self):
        """A ``log`` implementation returning a Deferred on a refused request
        (the phase walk awaits it; the connection does not wait)."""
        pending = []

        class Later(object):
            def __init__(self, settings):
                pass

            @hookimpl
            def log(self, ctx):
                d = Deferred()
                pending.append((ctx, d))
                return d

        h = Harness(config={"upstreams": {"default": {"peers": [UP]}}},
                    plugins=["router", "least_conn", Later({})])
        conn = h.connect()
        conn.send(b"GARBAGE\r\n\r\n")
        self.assertTrue(conn.closed)
        [(ctx, d)] = pending
        self.assertEqual((ctx.status, ctx.error), (400, "bad_request"))
        d.callback(None)

    def test_badAfterGood(self):
        """A malformed request pipelined after a good one: the good one is
        answered, the bad one never forwarded, and the connection closed."""
        h, up = harness()
        conn = h.connect()
        conn.send(request("GET", "/ok") + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        self.assertTrue(conn.closed)
        self.assertEqual(conn.responses[0].status, 200)
        self.assertEqual([r.uri for r in up.requests], ["/ok"])
        # the good one, then the refused one (distinct request ids)
        self.assertLoggedOnce(h, 2)
        self.assertEqual([(c.status, c.error) for c in h.contexts],
                         [(200, None), (400, "bad_request")])

    def test_badChunkAfterForwarding(self):
        """A chunked body that turns bad after the head went upstream (a body
        that streams: past ``client_body_buffer_size``): 400, the upstream
        request is abandoned, the count back at 0."""
        h, up = harness(proxy={"client_body_buffer_size": 2})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n")
        self.assertIn(b"\r\n\r\n3\r\nabc\r\n", up.received)    # the head went up
        conn.send(b"zz\r\n")
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [400])
        self.assertEqual(up.open, 0)
        self.assertEqual(up.requests, [])
        self.assertEqual(active(h), {UP: 0})
        self.assertLoggedOnce(h)


class _Download(Protocol):
    """An upstream that answers with the head of a 400 KiB body and its
    first half; the test sends the rest (:attr:`Downloads.connections`)."""

    def dataReceived(self, data):
        if b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (2 * HALF)
                                 + b"a" * HALF)

    def connectionMade(self):
        self.factory.connections.append(self)


class _Downloads(Factory):
    protocol = _Download

    def __init__(self):
        self.connections = []


#: half of :class:`_Download`'s body: far more than a transport holds
#: before it reports being full (64 KiB)
HALF = 200 * 1024


class SlowReaderTests(Case):
    """
    A client that stops reading its response: tproxy stops reading the
    upstream (backpressure), and the wait is the client's, not the
    upstream's (nginx: ``send_timeout`` applies, ``proxy_read_timeout`` does
    not, while the client holds the upstream back).
    """

    def download(self, **config):
        up = _Downloads()
        config.setdefault("timeouts", {"read": 3})
        config["upstreams"] = {"default": {"peers": [UP]}}
        h = Harness(config=config, plugins=["router", "least_conn"], servers={UP: up})
        conn = h.connect()
        conn.stop_reading()
        conn.send(request("GET", "/big"))
        self.assertEqual(len(up.connections), 1)
        return h, up.connections[0], conn

    def test_pauseLongerThanReadTimeout(self):
        """A client that stops reading for longer than ``timeouts.read`` gets
        the whole response once it reads again: the upstream was not
        timed out while tproxy itself did not read it."""
        h, upstream, conn = self.download()
        h.advance(10)
        self.assertFalse(conn.closed)
        self.assertEqual(h.contexts, [])
        conn.read_again()
        upstream.transport.write(b"b" * HALF)
        h.flush()
        resp, = conn.responses
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, b"a" * HALF + b"b" * HALF)
        self.assertEqual(h.contexts[0].error, None)
        self.assertFalse(conn.closed)
        self.assertEqual(active(h), {UP: 0})

    def test_readTimeoutAfterClientReadsAgain(self):
        """Once the client reads again, the upstream's silence counts again:
        ``timeouts.read`` later, the response is cut as an upstream timeout."""
        h, upstream, conn = self.download()
        h.advance(10)
        conn.read_again()
        h.advance(3 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertEqual(h.contexts[0].error, "upstream_timeout")

    def test_clientSendTimeout(self):
        """A client that does not read for ``proxy.client_send_timeout``
        seconds: its connection is cut, the upstream connection closed (not
        pooled: the response was not read whole), ``ctx.error`` is
        ``"client_send_timeout"`` and the peer is not blamed."""
        h, upstream, conn = self.download(proxy={"client_send_timeout": 20})
        h.advance(20 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertFalse(upstream.transport.connected)
        self.assertEqual(idle(h), [])
        ctx, = h.contexts
        self.assertEqual((ctx.status, ctx.error), (200, "client_send_timeout"))
        self.assertEqual(active(h), {UP: 0})
        peer = h.registry.group("default").peers[("127.0.0.1", 9001)]
        self.assertEqual(h.gateway.health.as_dict(peer)["total_fails"], 0)

    def test_clientSendTimeoutDefault(self):
        """``proxy.client_send_timeout`` is 60 s by default (nginx's
        ``send_timeout``)."""
        h, upstream, conn = self.download()
        h.advance(60 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertEqual(h.contexts[0].error, "client_send_timeout")


class UnreadLastResponseTests(Case):
    """
    A response complete upstream but not yet read by the client when its
    connection closes (``Connection: close``, or the keep-alive timeout):
    the close waits for the bytes to be sent, at most
    ``proxy.client_send_timeout`` seconds without progress, then resets
    the connection (a client that never reads does not hold a connection
    for ever; nginx: ``send_timeout``).
    """

    def unread(self, headers=(), **proxy):
        """A client that does not read asks for 300 KiB (held by the proxy's
        transport: the upstream answered them whole)."""
        proxy.setdefault("client_send_timeout", 20)
        proxy.setdefault("keepalive_timeout", 5)
        big = b"x" * (300 * 1024)
        h = Harness(config={"upstreams": {"default": {"peers": [UP]}}, "proxy": proxy},
                    plugins=["router", "least_conn"],
                    servers={UP: lambda req: (200, {}, big)})
        conn = h.connect()
        conn.stop_reading()
        conn.send(b"GET /big HTTP/1.1\r\nHost: x\r\n%s\r\n" % b"".join(headers))
        self.assertEqual(h.contexts[0].error, None)   # answered whole upstream
        return h, conn, big

    def test_connectionCloseReset(self):
        """``Connection: close``: a client that reads nothing for
        ``client_send_timeout`` seconds is reset."""
        h, conn, big = self.unread([b"Connection: close\r\n"])
        h.advance(20 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertTrue(conn.reset)

    def test_keepAliveTimeoutReset(self):
        """Idle in keep-alive with the response unread: closed after
        ``keepalive_timeout``, reset ``client_send_timeout`` seconds later."""
        h, conn, big = self.unread()
        h.advance(5 + 20 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertTrue(conn.reset)

    def test_readerGetsEverything(self):
        """A client that reads within the time gets the whole response and
        a clean close."""
        h, conn, big = self.unread([b"Connection: close\r\n"])
        h.advance(19)
        conn.read_again()
        self.assertTrue(conn.closed)
        self.assertFalse(conn.reset)
        self.assertEqual(conn.responses[0].body, big)


class SendTimeoutTests(ProxyTestCase):
    """``timeouts.send`` needs what only sockets have: an upstream's receive
    buffer that fills when it stops reading, so the proxy's writes stop."""

    async def test_sendTimeout(self):
        """An upstream that stops reading the request body: 504 after
        ``timeouts.send`` (on a fake clock, advanced once the writes stuck:
        the kernel's buffers full, the client no longer read)."""
        def stop_reading(conn, req):
            conn.transport.pauseProducing()
        up = self.upstream(on_head=stop_reading)
        clock = ClockedReactor()
        proxy = await self.proxy({"default": [up]}, timeouts={"send": 0.3}, clock=clock)
        client = await self.connect(proxy, keep=True)
        client.send(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % (64 * 1024 * 1024))
        source = BodySource(client.transport, 64 * 1024 * 1024)

        def stuck():
            server, = proxy.factory.protocols
            upstream = proxy.upstream_transports()
            return (up.heads and upstream and buffered(upstream[0]) > 0
                    and not is_reading(server.transport))
        await until(stuck, 10, message="the proxy's writes to stop")
        clock.advance(0.3 - TICK)
        self.assertEqual(proxy.logged, [])
        clock.advance(TICK)
        await client.wait_closed(timeout=10)
        source.stopProducing()
        resp, = client.responses()
        self.assertEqual(resp.status, 504)
        self.assertEqual(proxy.logged[0].error, "upstream_timeout")
        self.assertEqual(proxy.active(), {up.port: 0})


class _Defect(Exception):
    """A fault of tproxy's own, injected for :class:`InternalErrorTests`."""


def _raise_defect(*args, **kwargs):
    raise _Defect()


class InternalErrorTests(Case):
    """A defect of tproxy's own raised while a head is parsed (here injected
    into the code the parsers' callbacks call) is a ``500`` with the error
    logged: not a ``400`` blaming the client, nor a ``502`` blaming (and
    ejecting) the peer."""

    # (functions of the modules the callbacks are in, patched: a compiled
    # class takes no attribute, see tproxy.compiled)

    def test_readingRequest(self):
        from tproxy.http import reader
        self.patch(reader, "scan_request_fields", _raise_defect)
        h, up = harness()
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertTrue(conn.closed)
        self.assertEqual(statuses(conn), [500])
        self.assertIn(b"internal error", conn.responses[0].body)
        self.assertEqual(len(self.flushLoggedErrors(_Defect)), 1)
        self.assertEqual([(c.status, c.error) for c in h.contexts], [(500, "internal_error")])
        self.assertEqual(h.factory.open_connections, 0)

    def test_readingResponse(self):
        from tproxy.http import response
        self.patch(response, "clean_response_fields", _raise_defect)
        h, up = harness()
        conn = h.connect()
        conn.send(request("GET", "/x"))
        self.assertEqual(statuses(conn), [500])
        self.assertEqual(len(self.flushLoggedErrors(_Defect)), 1)
        [ctx] = h.contexts
        self.assertEqual((ctx.status, ctx.error), (500, "internal_error"))
        [peer] = h.registry.group("default").peers.values()
        self.assertTrue(peer.healthy, "the peer is not blamed")
        self.assertIsNone(peer.health)
        self.assertTrue(conn.closed, "as after a plugin's error")
        self.assertEqual(h.factory.open_connections, 0)
