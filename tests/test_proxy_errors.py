"""
End-to-end tests of the proxy's failures: refused, reset, silent and invalid
upstreams (502/504, retries), upstream response heads past
``proxy.max_upstream_header_size`` (502), clients going away, and malformed or
ambiguous requests (400/414/431, never forwarded).
"""

import array
import fcntl
import termios

from twisted.internet import defer
from twisted.logger import globalLogPublisher

from tests.helpers import (BodySource, ProxyTestCase, buffered, raw, request, silent,
                           sleep, until)

HOOKS = "tests.proxy_plugins:Hooks"

#: the default of ``proxy.max_upstream_header_size``
UPSTREAM_HEAD_LIMIT = 65536


def head_then_silence(conn, req):
    """Send a response head and part of the body, then nothing."""
    conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)


class UpstreamFailureTests(ProxyTestCase):
    """Refused, reset, silent and invalid upstreams."""

    async def test_retryRefused(self):
        """The chosen peer refuses: the balancer is asked again without it
        and the next peer answers; the refused one's count is back at 0."""
        refused = self.closed_port()
        up = self.upstream()
        # the weight makes least_conn choose the refused peer first
        proxy = await self.proxy({"default": [("127.0.0.1:%d" % refused, 10), up]})
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 200)
        ctx, = proxy.logged
        self.assertEqual([p.port for p in ctx.tried], [refused, up.port])
        self.assertEqual(ctx.upstream_addr, up.address)
        self.assertIsNone(ctx.error)
        self.assertEqual(proxy.active(), {refused: 0, up.port: 0})

    async def test_allRefused(self):
        """Every peer refuses: 502 JSON once the peers run out."""
        ports = [self.closed_port(), self.closed_port()]
        proxy = await self.proxy({"default": ["127.0.0.1:%d" % p for p in ports]})
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 502)
        self.assertEqual(resp.header("Content-Type"), "application/json")
        self.assertEqual(resp.json()["error"], "upstream connection failed")
        ctx, = proxy.logged
        self.assertEqual(sorted(p.port for p in ctx.tried), sorted(ports))
        self.assertEqual(ctx.error, "upstream_connect")
        self.assertEqual(proxy.active(), {p: 0 for p in ports})

    async def test_triesLimit(self):
        """``proxy.tries`` 1: a refused peer is not retried elsewhere."""
        refused = self.closed_port()
        up = self.upstream()
        proxy = await self.proxy({"default": [("127.0.0.1:%d" % refused, 10), up]},
                                 proxy={"tries": 1})
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 502)
        self.assertEqual(up.connections, [])

    async def test_readTimeout(self):
        """An upstream that never answers: 504 JSON after ``timeouts.read``,
        its connection closed and its count back at 0."""
        up = self.upstream(silent)
        proxy = await self.proxy({"default": [up]}, timeouts={"read": 0.3})
        start = proxy.gateway.reactor.seconds()
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 504)
        self.assertEqual(resp.json()["error"], "upstream timed out")
        self.assertGreaterEqual(proxy.gateway.reactor.seconds() - start, 0.29)
        await until(lambda: not up.open)
        self.assertEqual(proxy.logged[0].error, "upstream_timeout")
        self.assertEqual(proxy.active(), {up.port: 0})
        self.assertLoggedOnce(proxy)

    async def test_sendTimeout(self):
        """An upstream that stops reading the request body: 504 after
        ``timeouts.send``."""
        def stop_reading(conn, req):
            conn.transport.pauseProducing()
        up = self.upstream(on_head=stop_reading)
        proxy = await self.proxy({"default": [up]}, timeouts={"send": 0.3})
        client = await self.connect(proxy, keep=True)
        client.send(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                    % (64 * 1024 * 1024))
        source = BodySource(client.transport, 64 * 1024 * 1024)
        await client.wait_closed(timeout=10)
        source.stopProducing()
        resp, = client.responses()
        self.assertEqual(resp.status, 504)
        self.assertEqual(proxy.logged[0].error, "upstream_timeout")
        self.assertEqual(proxy.active(), {up.port: 0})

    async def test_clientBodyTimeout(self):
        """A client that stops sending its body: 408 after
        ``proxy.client_body_timeout`` (the upstream is not to blame), closed."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"client_body_timeout": 0.3})
        client = await self.connect(proxy)
        client.send(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await client.wait_closed()
        resp, = client.responses()
        self.assertEqual(resp.status, 408)
        self.assertEqual(proxy.logged[0].error, "client_timeout")
        await until(lambda: not up.open)
        self.assertEqual(up.requests, [])
        self.assertEqual(proxy.active(), {up.port: 0})

    async def test_readTimeoutMidBody(self):
        """An upstream that stops in the middle of the body: the client's
        response is cut (it cannot be completed) and the connection closed."""
        up = self.upstream(head_then_silence)
        proxy = await self.proxy({"default": [up]}, timeouts={"read": 0.3})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await client.wait_closed()
        self.assertTrue(bytes(client.data).startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(client.finals(), [])
        self.assertEqual(proxy.logged[0].error, "upstream_timeout")
        self.assertEqual(proxy.logged[0].status, 200)

    async def test_resetBeforeResponse(self):
        """The upstream resets the connection: 502."""
        up = self.upstream(raw(b"", close="abort"))
        proxy = await self.proxy({"default": [up]})
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 502)
        self.assertEqual(proxy.logged[0].error, "upstream_error")
        self.assertEqual(proxy.active(), {up.port: 0})

    async def test_closedBeforeResponse(self):
        """The upstream closes (FIN) without answering: 502."""
        up = self.upstream(raw(b"", close="lose"))
        proxy = await self.proxy({"default": [up]})
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 502)

    async def test_resetMidResponse(self):
        """A reset after part of the body: the client connection is cut."""
        def cut(conn, req):
            conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            conn.later(0.05, conn.transport.abortConnection)
        up = self.upstream(cut)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await client.wait_closed()
        self.assertTrue(bytes(client.data).startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(client.finals(), [])
        ctx, = proxy.logged
        self.assertEqual(ctx.error, "upstream_error")
        self.assertEqual(proxy.active(), {up.port: 0})

    async def assertInvalid(self, data):
        """An upstream answering ``data`` gives the client a 502; that
        upstream connection is dropped, the client's stays usable."""
        up = self.upstream(raw(data))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        resp, = await client.wait_responses(1)
        self.assertEqual(resp.status, 502, data)
        self.assertEqual(resp.json()["error"], "invalid response from upstream")
        await until(lambda: proxy.logged)
        self.assertEqual(proxy.logged[0].error, "upstream_invalid")
        await until(lambda: not up.open)
        self.assertEqual(proxy.active(), {up.port: 0})
        up.handler = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        client.send(request("GET", "/again"))
        resps = await client.wait_responses(2)
        self.assertEqual((resps[1].status, resps[1].body), (200, b"ok"))
        self.assertLoggedOnce(proxy, 2)

    async def test_codingBeforeChunked(self):
        """``Transfer-Encoding: gzip, chunked``: the body would reach the
        client still gzip-coded with nothing saying so: 502."""
        await self.assertInvalid(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                 b"5\r\nhello\r\n0\r\n\r\n")

    async def test_transferEncodingTwice(self):
        """Two Transfer-Encoding fields: 502."""
        await self.assertInvalid(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")

    async def test_invalidStatus(self):
        """``HTTP/1.1 2000 OK`` is not a response: 502."""
        await self.assertInvalid(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n")

    async def test_statusBelow100(self):
        """``HTTP/1.1 099`` is not an interim response to wait past: 502 at
        once, not a request hanging until the read timeout."""
        await self.assertInvalid(b"HTTP/1.1 099 X\r\nContent-Length: 2\r\n\r\nok")

    async def test_notHttp(self):
        """Garbage instead of a status line: 502."""
        await self.assertInvalid(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    async def test_lengthAndChunked(self):
        """Content-Length together with Transfer-Encoding: 502."""
        await self.assertInvalid(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

    async def test_conflictingLengths(self):
        """Two different Content-Length values: 502."""
        await self.assertInvalid(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                 b"Content-Length: 4\r\n\r\nabcd")

    async def test_unaskedUpgrade(self):
        """A 101 the proxy never asked for (it does not forward Upgrade): 502."""
        await self.assertInvalid(b"HTTP/1.1 101 Switching Protocols\r\n"
                                 b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")

    async def test_invalidChunk(self):
        """A bad chunk size after the head: the client connection is cut."""
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"zz\r\nabc\r\n"))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await client.wait_closed()
        self.assertEqual(client.finals(), [])
        self.assertEqual(proxy.logged[0].error, "upstream_invalid")

    async def test_errorsThenSuccess(self):
        """After an upstream error the client connection serves on when the
        error response could be sent whole."""
        def flaky(conn, req):
            if req.uri == "/bad":
                conn.transport.abortConnection()
            else:
                conn.respond(200, b"ok")
        up = self.upstream(flaky)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/bad"))
        client.send(request("GET", "/good"))
        resps = await client.wait_responses(2)
        self.assertEqual([r.status for r in resps], [502, 200])
        self.assertLoggedOnce(proxy, 2)


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


def unread(transport):
    """Bytes that arrived on ``transport``'s socket and are not read yet."""
    n = array.array("i", [0])
    fcntl.ioctl(transport.socket.fileno(), termios.FIONREAD, n)
    return n[0]


def write_in_pieces(proxy, conn, data, size=5000):
    """
    Write ``data`` to ``proxy`` on the upstream connection ``conn`` in pieces
    of ``size`` bytes, each once the proxy has read the one before: each
    piece is a read of its own, however busy the machine is.
    """
    port = conn.transport.getPeer().port
    conn.transport.setTcpNoDelay(True)     # no piece held back by Nagle

    def proxy_side():
        for t in proxy.upstream_transports():
            if t.getHost().port == port:
                return t

    def read_all():
        if not conn.transport.connected:
            return True
        if buffered(conn.transport):
            return False
        t = proxy_side()
        return t is None or not t.connected or unread(t) == 0

    async def write():
        for i in range(0, len(data), size):
            if not conn.transport.connected:
                return
            conn.transport.write(data[i:i + size])
            await until(read_all, message="the proxy to read a piece")
    defer.ensureDeferred(write())


class UpstreamHeadLimitTests(ProxyTestCase):
    """
    ``proxy.max_upstream_header_size``: an upstream response head larger than
    it is a 502 (nginx: "upstream sent too big header", proxy_buffer_size),
    however it arrives; the upstream connection is dropped, the peer's count
    released, and the client connection serves on.
    """

    def captureLog(self):
        """The log events emitted from now on, as a list."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    async def assertTooBig(self, proxy, up, client, n=1):
        """The client's ``n``th response is the 502 of a too big head; the
        upstream connection was dropped and the peer released."""
        resps = await client.wait_responses(n)
        resp = resps[n - 1]
        self.assertEqual(resp.status, 502, resp)
        self.assertEqual(resp.header("Content-Type"), "application/json")
        self.assertEqual(resp.json()["error"], "upstream sent too big header")
        self.assertEqual(resp.json()["upstream"], up.address)
        ctx = proxy.logged[n - 1]
        self.assertEqual((ctx.status, ctx.error), (502, "upstream_header_too_big"))
        await until(lambda: not up.open, message="the upstream connection to close")
        self.assertEqual([c for conns in proxy.factory.pool.idle.values() for c in conns], [])
        self.assertEqual(proxy.active(), {up.port: 0})
        return resp

    async def test_hugeHeaderBlock(self):
        """A head of 200 KB sent at once: 502 JSON, the upstream connection
        dropped (not pooled), logged once; the client connection is kept
        alive and its next request is served."""
        def handler(conn, req):
            if req.uri == "/big":
                conn.transport.write(padded_head(200000))
            else:
                conn.respond(200, b"next")
        events = self.captureLog()
        up = self.upstream(handler)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/big"))
        resp = await self.assertTooBig(proxy, up, client)
        self.assertIsNone(resp.header("Connection"))
        self.assertEqual(len([e for e in events if "too big header" in
                              (e.get("log_format") or "")]), 1)
        client.send(request("GET", "/next"))
        resps = await client.wait_responses(2)
        self.assertEqual((resps[1].status, resps[1].body), (200, b"next"))
        self.assertFalse(client.closed)
        self.assertEqual(len(up.connections), 2)
        self.assertIsNone(proxy.logged[1].error)
        self.assertLoggedOnce(proxy, 2)

    async def test_manySmallHeaders(self):
        """Thousands of tiny header lines are counted too."""
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 20000
                               + b"Content-Length: 0\r\n\r\n"))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await self.assertTooBig(proxy, up, client)

    async def test_endlessHeaderLine(self):
        """A header line that never ends, arriving in many writes: 502 once
        it passes the limit, without waiting for its end (or a timeout)."""
        sent = []

        def endless(conn, req):
            conn.transport.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")

            def more(n):
                conn.transport.write(b"v" * 4096)
                sent.append(4096)
                if n:
                    conn.later(0.002, more, n - 1)
            more(150)       # 600 KiB at most
        up = self.upstream(endless)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await self.assertTooBig(proxy, up, client)
        self.assertLess(sum(sent), 4 * UPSTREAM_HEAD_LIMIT)
        self.assertLoggedOnce(proxy)

    async def test_endlessStatusLine(self):
        """The same with a reason phrase that never ends."""
        def endless(conn, req):
            conn.transport.write(b"HTTP/1.1 200 O")

            def more(n):
                conn.transport.write(b"K" * 4096)
                if n:
                    conn.later(0.002, more, n - 1)
            more(150)
        up = self.upstream(endless)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await self.assertTooBig(proxy, up, client)

    async def test_headAtLimitInPieces(self):
        """A head of exactly the limit, arriving in many pieces, passes (and
        the connection is pooled); one byte more is a 502."""
        def handler(conn, req):
            size = UPSTREAM_HEAD_LIMIT + (req.uri == "/over")
            write_in_pieces(proxy, conn, padded_head(size, body=b"fits"))
        up = self.upstream(handler)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/at"))
        resp, = await client.wait_responses(1, timeout=10)
        self.assertEqual((resp.status, resp.body), (200, b"fits"))
        self.assertEqual(len(resp.header_all("X-F0000")), 1)
        self.assertIsNone(proxy.logged[0].error)
        await until(lambda: proxy.factory.pool.idle)
        client.send(request("GET", "/over"))
        await self.assertTooBig(proxy, up, client, 2)

    async def test_headAtLimitAtOnce(self):
        """The same, sent in one write."""
        def handler(conn, req):
            size = UPSTREAM_HEAD_LIMIT + (req.uri == "/over")
            conn.transport.write(padded_head(size, body=b"fits"))
        up = self.upstream(handler)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/at"))
        resp, = await client.wait_responses(1)
        self.assertEqual((resp.status, resp.body), (200, b"fits"))
        client.send(request("GET", "/over"))
        await self.assertTooBig(proxy, up, client, 2)

    async def test_countedPerResponse(self):
        """The count starts again for each response, also after an interim
        (1xx) one: a 103 and a final response of 40 KB heads each pass,
        sent at once and in pieces."""
        data = (padded_head(40000, b"103 Early Hints")
                + padded_head(40000, body=b"final"))
        up = self.upstream(lambda conn, req: (
            write_in_pieces(proxy, conn, data) if req.uri == "/pieces"
            else conn.transport.write(data)))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        for path in ("/once", "/pieces", "/once"):
            client.send(request("GET", path))
        resps = await client.wait_responses(3, timeout=10)
        self.assertEqual([(r.status, r.body) for r in resps], [(200, b"final")] * 3)
        self.assertEqual([ctx.error for ctx in proxy.logged], [None] * 3)
        self.assertEqual(len(up.connections), 1)

    async def test_configured(self):
        """``proxy.max_upstream_header_size`` sets the limit."""
        def handler(conn, req):
            conn.transport.write(padded_head(int(req.uri[1:]), body=b"fits"))
        up = self.upstream(handler)
        proxy = await self.proxy({"default": [up]},
                                 proxy={"max_upstream_header_size": 1024})
        client = await self.connect(proxy)
        client.send(request("GET", "/1024"))
        resp, = await client.wait_responses(1)
        self.assertEqual((resp.status, resp.body), (200, b"fits"))
        client.send(request("GET", "/1025"))
        await self.assertTooBig(proxy, up, client, 2)


class ClientAbortTests(ProxyTestCase):
    """A client that goes away releases the upstream and its count."""

    async def test_abortMidResponse(self):
        """Mid-body: the upstream connection is closed, the count back at 0,
        ``log`` once with ``client_abort``."""
        up = self.upstream(head_then_silence)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await until(lambda: len(client.data) > 1000)
        self.assertEqual(proxy.active(), {up.port: 1})
        client.transport.abortConnection()
        await until(lambda: not up.open)
        await until(lambda: proxy.logged)
        ctx, = proxy.logged
        self.assertEqual(ctx.error, "client_abort")
        self.assertEqual(ctx.status, 200)
        self.assertEqual(proxy.active(), {up.port: 0})
        self.assertEqual(proxy.factory.pool.idle, {})
        await sleep(0.05)
        self.assertLoggedOnce(proxy)

    async def test_abortWhileWaiting(self):
        """Before the response: the same, with status 499."""
        up = self.upstream(silent)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await until(lambda: up.requests)
        client.transport.loseConnection()
        await until(lambda: not up.open)
        await until(lambda: proxy.logged)
        self.assertEqual((proxy.logged[0].error, proxy.logged[0].status),
                         ("client_abort", 499))
        self.assertEqual(proxy.active(), {up.port: 0})

    async def test_abortWhileBalancing(self):
        """While a balancer's Deferred is pending: no peer is taken when it
        fires, ``log`` runs once."""
        from twisted.internet.defer import Deferred
        up = self.upstream()
        proxy = await self.proxy({"default": [up]},
                                 plugins=["router", HOOKS, "least_conn"])
        pending = Deferred()
        proxy.plugin(HOOKS).fns["balancer"] = lambda ctx, tried: pending
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await until(lambda: proxy.plugin(HOOKS).calls == ["rewrite", "access", "balancer"])
        client.transport.abortConnection()
        await until(lambda: proxy.logged)
        self.assertEqual(proxy.logged[0].error, "client_abort")
        pending.callback(proxy.peer(up))
        await sleep(0.05)
        self.assertEqual(up.connections, [])
        self.assertEqual(proxy.active(), {up.port: 0})
        self.assertLoggedOnce(proxy)

    async def test_abortDuringRequestBody(self):
        """A client that stops half-way through a body that streams (larger
        than ``client_body_buffer_size``)."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"client_body_buffer_size": 50})
        client = await self.connect(proxy)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await until(lambda: up.heads)
        client.transport.abortConnection()
        await until(lambda: not up.open)
        await until(lambda: proxy.logged)
        self.assertEqual(up.requests, [])
        self.assertEqual(proxy.logged[0].error, "client_abort")
        self.assertEqual(proxy.active(), {up.port: 0})


class MalformedRequestTests(ProxyTestCase):
    """Malformed or ambiguous requests: an error status, the connection
    closed, nothing forwarded."""

    async def assertRejected(self, data, status=400, logged=0, **config):
        """``data`` gets ``status`` and a close, and nothing goes upstream;
        ``log`` ran ``logged`` times."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, **config)
        client = await self.connect(proxy)
        client.send(data)
        await client.wait_closed()
        resps = client.responses()
        self.assertEqual([r.status for r in resps], [status], bytes(client.data))
        self.assertEqual(resps[0].header("Connection"), "close")
        self.assertIn("error", resps[0].json())
        await sleep(0.02)
        self.assertEqual(up.heads, [])
        self.assertEqual(proxy.active(), {up.port: 0})
        # a request whose head was valid ran its phases: it is logged
        self.assertEqual(len(proxy.logged), logged)
        return resps[0]

    def test_lengthAndChunked(self):
        """Content-Length with Transfer-Encoding (a smuggling vector)."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_transferCodingBeforeChunked(self):
        """``Transfer-Encoding: gzip, chunked``: 501, as nginx (re-chunked
        without it, the body would reach the upstream gzip-coded unlabelled)."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
            b"0\r\n\r\n", 501)

    def test_transferEncodingHttp10(self):
        """Transfer-Encoding in an HTTP/1.0 request: faulty framing, 400
        (RFC 9112 6.1)."""
        return self.assertRejected(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def test_http2Version(self):
        """``HTTP/2.0`` in a request line: 505."""
        return self.assertRejected(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)

    def test_unknownMethod(self):
        """A method token the parser does not know: 501 (not forwarded)."""
        return self.assertRejected(b"FROB / HTTP/1.1\r\nHost: x\r\n\r\n", 501)

    def test_twoLengths(self):
        """Two different Content-Length values."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
            b"abcdef")

    def test_badLength(self):
        """A Content-Length that is not a number."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")

    def test_invalidChunkSize(self):
        """A chunk size that is not hex (sent with the head)."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", logged=1)

    def test_hugeChunkSize(self):
        """A chunk size past 2**64."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10000000000000005\r\nabc\r\n", logged=1)

    def test_bareLF(self):
        """Lines ended by LF alone."""
        return self.assertRejected(b"GET / HTTP/1.1\nHost: x\n\n")

    def test_bareLFInHeaders(self):
        """One header line ended by LF alone."""
        return self.assertRejected(b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n")

    def test_missingHost(self):
        """HTTP/1.1 without Host."""
        return self.assertRejected(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n")

    def test_twoHosts(self):
        """Two Host fields."""
        return self.assertRejected(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")

    def test_identityEncoding(self):
        """``Transfer-Encoding: identity`` (hides a request in a body framed by
        Content-Length behind a proxy that believes it)."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n"
            b"Content-Length: 37\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_chunkedNotLast(self):
        """``Transfer-Encoding: chunked, gzip``: the framing is unknowable."""
        return self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
            b"0\r\n\r\n")

    def test_obsFold(self):
        """A folded header line (obs-fold)."""
        return self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n")

    def test_spaceBeforeColon(self):
        """``Host : x`` (whitespace between name and colon)."""
        return self.assertRejected(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n")

    def test_badTarget(self):
        """A target that is neither origin- nor absolute-form."""
        return self.assertRejected(b"GET foo HTTP/1.1\r\nHost: x\r\n\r\n")

    def test_badVersion(self):
        """An unknown HTTP version."""
        return self.assertRejected(b"GET / HTTP/7.1\r\nHost: x\r\n\r\n")

    def test_controlCharInValue(self):
        """A NUL byte in a header value."""
        return self.assertRejected(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n")

    async def test_longRequestLine(self):
        """A request target past ``max_line_size``: 414."""
        await self.assertRejected(
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)

    async def test_longRequestLineInPieces(self):
        """The same, arriving in small pieces."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"GET /")
        for _ in range(10):
            client.send(b"a" * 1000)
            await sleep(0.002)
        await client.wait_closed()
        self.assertEqual([r.status for r in client.responses()], [414])

    async def test_endlessHeaderLine(self):
        """A header line that never ends, arriving in pieces: 400 once it
        passes ``max_header_line``, without waiting for its end."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(50):
            if client.closed:
                break
            client.send(b"v" * 1000)
            await sleep(0.002)
        await client.wait_closed()
        self.assertEqual([r.status for r in client.responses()], [400])
        self.assertEqual(up.heads, [])

    async def test_largeValidHeadInPieces(self):
        """A head just under the limits, arriving in small pieces, passes."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        data = (b"GET /" + b"a" * 8000 + b" HTTP/1.1\r\nHost: x\r\n"
                + b"".join(b"X-H%02d: %s\r\n" % (i, b"v" * 1000) for i in range(31))
                + b"\r\n")
        for i in range(0, len(data), 1000):
            client.send(data[i:i + 1000])
            await sleep(0.001)
        resp, = await client.wait_responses(1)
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(up.requests[0].uri), 8001)

    async def test_largeHeaders(self):
        """Header fields past ``max_header_size``: 431."""
        await self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)) + b"\r\n", 431)

    async def test_oneHugeHeader(self):
        """A single header line past ``max_header_line``: 400 (nginx: "Request
        Header Or Cookie Too Large")."""
        resp = await self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 40000 + b"\r\n\r\n", 400)
        self.assertEqual(resp.json()["error"], "request header line too long")

    async def test_manySmallHeaders(self):
        """Thousands of tiny headers are counted too: 431."""
        await self.assertRejected(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 6000 + b"\r\n", 431)

    async def test_bodyTooLarge(self):
        """A Content-Length past ``max_body_size``: 413 (once the request is
        routed: it is logged)."""
        await self.assertRejected(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413,
            logged=1, proxy={"max_body_size": 1000})

    async def test_headerTimeout(self):
        """A head that never completes: 408 after ``header_timeout``."""
        await self.assertRejected(b"GET / HTTP/1.1\r\nHost: x\r\n", 408,
                                  proxy={"header_timeout": 0.2})

    async def test_badAfterGood(self):
        """A malformed request pipelined after a good one: the good one is
        answered, the bad one never forwarded, and the connection closed."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/ok") + b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        await client.wait_closed()
        resps = client.responses()
        self.assertEqual(resps[0].status, 200)
        self.assertEqual([r.uri for r in up.requests], ["/ok"])
        self.assertLoggedOnce(proxy)

    async def test_badChunkAfterForwarding(self):
        """A chunked body that turns bad after the head went upstream (a body
        that streams: past ``client_body_buffer_size``): 400, the upstream
        request is abandoned, the count back at 0."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"client_body_buffer_size": 2})
        client = await self.connect(proxy)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n")
        await until(lambda: up.heads)
        client.send(b"zz\r\n")
        await client.wait_closed()
        self.assertEqual([r.status for r in client.responses()], [400])
        await until(lambda: not up.open)
        self.assertEqual(up.requests, [])
        self.assertEqual(proxy.active(), {up.port: 0})
        self.assertLoggedOnce(proxy)
