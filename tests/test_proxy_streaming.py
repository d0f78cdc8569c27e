"""
End-to-end tests of large bodies: 32 MiB each way passes through while the
proxy holds only a bounded amount, and a side that stops reading pauses the
other side.  (32 MiB: more than the RSS bound below and five times what the
kernel's loopback buffers held when a side stalled, ~6 MiB; the benchmarks
move 1 GiB each way, bench/README.md.)

The proxy's memory is measured as what it buffers itself: the bytes waiting
in its transports' write buffers (to the client and to the upstream) plus a
request body held while no upstream connection is ready.  The kernel's socket
buffers are not the proxy's memory (and on loopback they hold several MiB).
"""

import hashlib
import os
import platform

from twisted.internet import task

from tests.helpers import (BodySource, ProxyTestCase, RawClient, buffered,
                           download, is_reading, request, turns, until)

MiB = 1024 * 1024
BIG = 32 * MiB
#: the most the proxy may buffer at any moment
BOUND = 2 * MiB
#: the most this process's RSS may grow during a 32 MiB transfer (the
#: test's own client and upstream hash bodies, they do not keep them).
#: PyPy's collector lets the heap grow before it collects (about 50 MiB
#: here): the bound there is the issue's 100 MB; BOUND above is the same.
RSS_BOUND = (100 if platform.python_implementation() == "PyPy" else 24) * MiB


def rss():
    """The resident set size of this process in bytes (0 without /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


class StreamClient(RawClient):
    """A client that hashes the response body instead of keeping it."""

    def __init__(self):
        RawClient.__init__(self, keep=False)
        self.head = None
        self._buf = b""
        self.body = 0
        self.sha256 = hashlib.sha256()

    def dataReceived(self, data):
        self.received += len(data)
        if self.head is None:
            self._buf += data
            i = self._buf.find(b"\r\n\r\n")
            if i < 0:
                return
            self.head, data = self._buf[:i + 4], self._buf[i + 4:]
            self._buf = b""
        self.body += len(data)
        self.sha256.update(data)


class StreamingTests(ProxyTestCase):
    """32 MiB through the proxy, in both directions, with bounded buffers."""

    def watch(self, proxy):
        """
        Sample what ``proxy`` buffers every few ms.

        :return: ``[largest amount buffered, largest RSS growth]`` so far (the
            RSS of this whole process, where /proc is available, else 0).
        """
        peak = [0, 0]
        rss0 = rss()

        def sample():
            total = 0
            for p in proxy.factory.protocols:
                if p.transport.connected:
                    total += buffered(p.transport)
                ex = getattr(p, "exchange", None)
                if ex is not None:
                    total += ex.pending_size
            for t in proxy.upstream_transports():
                total += buffered(t)
            peak[0] = max(peak[0], total)
            peak[1] = max(peak[1], rss() - rss0)

        loop = task.LoopingCall(sample)
        loop.start(0.002)
        self.addCleanup(lambda: loop.running and loop.stop())
        return peak

    async def stalled(self, source):
        """
        Wait until ``source`` (a :class:`BodySource`) is stalled: bytes wait
        in its transport's buffer (the kernel takes no more) and it was not
        asked for more during 20 reactor iterations.  What it sent by then.
        """
        for _ in range(1000):
            await until(lambda: buffered(source.transport) > 0, timeout=30,
                        message="the source's writes to back up")
            pulls = source.pulls
            await turns()
            if source.pulls == pulls and buffered(source.transport) > 0:
                return source.sent
        self.fail("the source never stalled")

    async def test_download(self):
        """A 32 MiB response streams through with bounded buffering."""
        up = self.upstream(download(BIG))
        proxy = await self.proxy({"default": [up]})
        peak = self.watch(proxy)
        client = await self.connect(proxy, client=StreamClient())
        client.send(request("GET", "/big"))
        await until(lambda: client.body >= BIG, timeout=30, message="the whole body")
        self.assertIn(b"Content-Length: %d\r\n" % BIG, client.head)
        self.assertEqual(client.body, BIG)
        self.assertEqual(client.sha256.hexdigest(), BodySource.digest(BIG))
        self.assertLess(peak[0], BOUND)
        self.assertLess(peak[1], RSS_BOUND)
        await until(lambda: proxy.logged)
        self.assertEqual(proxy.logged[0].bytes_sent, BIG + len(client.head))

    async def test_downloadChunked(self):
        """A chunked 16 MiB response arrives chunked and whole."""
        size = 16 * MiB
        up = self.upstream(download(size, chunked=True))
        proxy = await self.proxy({"default": [up]})
        peak = self.watch(proxy)
        client = await self.connect(proxy)
        client.send(request("GET", "/big"))
        resp, = await client.wait_responses(1, timeout=30)
        self.assertEqual(resp.header("Transfer-Encoding"), "chunked")
        self.assertEqual(hashlib.sha256(resp.body).hexdigest(), BodySource.digest(size))
        self.assertLess(peak[0], BOUND)

    async def test_upload(self):
        """A 32 MiB request body streams through with bounded buffering."""
        up = self.upstream(keep_body=False)
        proxy = await self.proxy({"default": [up]})
        peak = self.watch(proxy)
        client = await self.connect(proxy)
        client.send(b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BIG)
        BodySource(client.transport, BIG)
        resp, = await client.wait_responses(1, timeout=30)
        seen = resp.json()
        self.assertEqual(seen["body_length"], BIG)
        self.assertEqual(seen["body_sha256"], BodySource.digest(BIG))
        self.assertLess(peak[0], BOUND)
        self.assertLess(peak[1], RSS_BOUND)

    async def test_uploadChunked(self):
        """A chunked 16 MiB request body arrives whole, re-chunked."""
        size = 16 * MiB
        up = self.upstream(keep_body=False)
        proxy = await self.proxy({"default": [up]})
        peak = self.watch(proxy)
        client = await self.connect(proxy)
        client.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        BodySource(client.transport, size, chunked=True)
        resp, = await client.wait_responses(1, timeout=30)
        self.assertEqual(resp.json()["body_length"], size)
        self.assertEqual(resp.json()["body_sha256"], BodySource.digest(size))
        self.assertEqual(up.requests[0].header("Transfer-Encoding"), "chunked")
        self.assertLess(peak[0], BOUND)

    async def test_slowReaderPausesUpstream(self):
        """A client that stops reading: the proxy stops reading from the
        upstream, whose writes back up; reading again completes the body."""
        up = self.upstream(download(BIG))
        proxy = await self.proxy({"default": [up]})
        peak = self.watch(proxy)
        client = await self.connect(proxy, client=StreamClient())
        client.transport.pauseProducing()
        client.send(request("GET", "/big"))
        await until(lambda: up.connections and hasattr(up.connections[0], "source"))
        source = up.connections[0].source
        sent = await self.stalled(source)
        self.assertLess(sent, BIG - 8 * MiB)
        upstream, = proxy.upstream_transports()
        self.assertFalse(is_reading(upstream))
        self.assertLess(peak[0], BOUND)
        self.assertLess(peak[1], RSS_BOUND)
        self.assertEqual(proxy.active(), {up.port: 1})

        client.transport.resumeProducing()
        await until(lambda: client.body >= BIG, timeout=30, message="the whole body")
        self.assertEqual(client.sha256.hexdigest(), BodySource.digest(BIG))
        await until(lambda: proxy.logged)
        self.assertEqual(proxy.active(), {up.port: 0})
        # the pooled connection reads again (it would not notice a close otherwise)
        pooled, = proxy.upstream_transports()
        self.assertTrue(is_reading(pooled))

    async def test_slowUpstreamPausesClient(self):
        """An upstream that stops reading the request body: the proxy stops
        reading from the client; the upload completes once it reads again."""
        def stop_reading(conn, req):
            conn.transport.pauseProducing()
        up = self.upstream(keep_body=False, on_head=stop_reading)
        proxy = await self.proxy({"default": [up]})
        peak = self.watch(proxy)
        client = await self.connect(proxy)
        client.send(b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BIG)
        source = BodySource(client.transport, BIG)
        sent = await self.stalled(source)
        self.assertLess(sent, BIG - 8 * MiB)
        server_side, = proxy.factory.protocols
        self.assertFalse(is_reading(server_side.transport))
        self.assertLess(peak[0], BOUND)
        self.assertLess(peak[1], RSS_BOUND)

        up.connections[0].transport.resumeProducing()
        resp, = await client.wait_responses(1, timeout=30)
        self.assertEqual(resp.json()["body_length"], BIG)
        self.assertEqual(resp.json()["body_sha256"], BodySource.digest(BIG))
        self.assertTrue(is_reading(server_side.transport))

    async def test_abortWhilePaused(self):
        """A client that stops reading a 32 MiB response and then goes away:
        the paused upstream connection is closed, its count released."""
        up = self.upstream(download(BIG))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy, client=StreamClient())
        client.transport.pauseProducing()
        client.send(request("GET", "/big"))
        await until(lambda: up.connections and hasattr(up.connections[0], "source"))
        await self.stalled(up.connections[0].source)
        client.transport.abortConnection()
        await until(lambda: not up.open)
        await until(lambda: proxy.logged)
        self.assertEqual(proxy.logged[0].error, "client_abort")
        self.assertEqual(proxy.active(), {up.port: 0})
        self.assertEqual(proxy.factory.pool.idle, {})

    async def test_responseWhileUpstreamUnwritable(self):
        """The response completes while the upstream socket is still full of
        request body (an upstream that answers, then drains the body, as Go's
        net/http does): the client connection reads its next request."""
        proxy = None

        def answer(conn, req):
            if req.uri == "/first":
                # the proxy's upstream transport reports it is full, as it
                # would while the upstream has not read the body yet
                upstream, = proxy.upstream_transports()
                upstream.protocol.pauseProducing()
            conn.respond(200, b"ok")
        up = self.upstream(answer)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("POST", "/first", body="x" * 1000))
        await client.wait_responses(1)
        client.send(request("GET", "/second"))
        resps = await client.wait_responses(2)
        self.assertEqual([r.status for r in resps], [200, 200])
