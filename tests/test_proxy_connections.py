"""
End-to-end tests of connection management and less common message shapes:
keep-alive limits and timeouts, deep pipelines, early upstream responses,
interim responses, request targets, retries carrying a body, lingering close.
"""

import socket

from twisted.internet import reactor, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from tproxy import Response
from tests.helpers import (ProxyTestCase, RawClient, buffered, delayed, echo, raw,
                           request, sleep, until)

HOOKS = "tests.proxy_plugins:Hooks"


class KeepAliveLimitTests(ProxyTestCase):
    """``keepalive_timeout`` and ``keepalive_requests``."""

    async def test_idleClientClosed(self):
        """An idle client connection is closed after ``keepalive_timeout``."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"keepalive_timeout": 0.2})
        client = await self.connect(proxy)
        client.send(request("GET", "/"))
        await client.wait_responses(1)
        start = proxy.gateway.reactor.seconds()
        await client.wait_closed()
        self.assertGreaterEqual(proxy.gateway.reactor.seconds() - start, 0.15)

    async def test_busyClientNotClosed(self):
        """A slow response is not cut by ``keepalive_timeout``."""
        up = self.upstream(delayed(0.4))
        proxy = await self.proxy({"default": [up]}, proxy={"keepalive_timeout": 0.2})
        resp = await self.exchange(proxy, request("GET", "/"))
        self.assertEqual(resp.status, 200)

    async def test_requestsPerConnection(self):
        """After ``keepalive_requests`` requests the connection closes, the
        last response saying so."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"keepalive_requests": 2})
        client = await self.connect(proxy)
        client.send(request("GET", "/1"))
        await client.wait_responses(1)
        client.send(request("GET", "/2"))
        await client.wait_closed()
        resps = client.finals()
        self.assertEqual([r.status for r in resps], [200, 200])
        self.assertEqual([r.header("Connection") for r in resps], [None, "close"])

    async def test_idleUpstreamClosed(self):
        """An idle pooled upstream connection is closed after
        ``upstream_keepalive_timeout``."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]},
                                 proxy={"upstream_keepalive_timeout": 0.1})
        await self.exchange(proxy, request("GET", "/"))
        await until(lambda: not up.open)
        self.assertEqual(proxy.factory.pool.idle, {})

    async def test_upstreamKeepaliveOff(self):
        """``upstream_keepalive`` 0: a connection per request."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"upstream_keepalive": 0})
        client = await self.connect(proxy)
        for i in range(3):
            client.send(request("GET", "/"))
            await client.wait_responses(i + 1)
        self.assertEqual(len(up.connections), 3)


class ConcurrencyTests(ProxyTestCase):
    """Many clients at once."""

    async def test_manyClients(self):
        """60 clients, 3 requests each on keep-alive connections, to 3
        upstreams of varied speed: all answered, every count back at 0."""
        ups = [self.upstream(delayed(d)) for d in (0.0, 0.02, 0.05)]
        proxy = await self.proxy({"api": ups})

        async def one(i):
            client = await self.connect(proxy)
            for j in range(3):
                client.send(request("GET", "/api/%d/%d" % (i, j)))
                resps = await client.wait_responses(j + 1, timeout=20)
                self.assertEqual(resps[j].json()["uri"], "/%d/%d" % (i, j))
        from twisted.internet.defer import Deferred, gatherResults
        await gatherResults([Deferred.fromCoroutine(one(i)) for i in range(60)])
        await until(lambda: len(proxy.logged) == 180)
        self.assertEqual(sum(len(u.requests) for u in ups), 180)
        self.assertEqual(set(proxy.active().values()), {0})
        self.assertLoggedOnce(proxy, 180)

    async def test_poolSizeLimit(self):
        """``upstream_keepalive`` 1: of two connections used at once, one is
        kept idle, the other closed."""
        up = self.upstream(delayed(0.1))
        proxy = await self.proxy({"default": [up]}, proxy={"upstream_keepalive": 1})
        clients = []
        for _ in range(2):
            c = await self.connect(proxy)
            c.send(request("GET", "/"))
            clients.append(c)
        for c in clients:
            await c.wait_responses(1)
        await until(lambda: len(up.open) == 1)
        self.assertEqual([len(v) for v in proxy.factory.pool.idle.values()], [1])


class PipelineTests(ProxyTestCase):
    """Many requests in one write."""

    async def test_deepPipeline(self):
        """1000 pipelined requests behind a slow one, answered by a plugin at
        once: all answered, in order."""
        up = self.upstream(delayed(0.1))
        proxy = await self.proxy({"default": [up]}, plugins=["router", HOOKS, "least_conn"])

        def access(ctx):
            if ctx.request.path != "/slow":
                return Response(200, ctx.request.path)
        proxy.plugin(HOOKS).fns["access"] = access
        n = 1000
        client = await self.connect(proxy)
        client.send(request("GET", "/slow")
                    + b"".join(request("GET", "/%d" % i) for i in range(n)))
        resps = await client.wait_responses(n + 1, timeout=20)
        self.assertEqual([r.body for r in resps[1:]], [b"/%d" % i for i in range(n)])
        self.assertLoggedOnce(proxy, n + 1)

    async def test_nothingServedAfterClose(self):
        """A response that closes the connection (a plugin failed: 500 and
        ``Connection: close``) is the last one: the requests pipelined behind
        it in the same write are not run."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, plugins=["router", HOOKS, "least_conn"])

        def access(ctx):
            if ctx.request.path == "/boom":
                raise RuntimeError("boom")
        proxy.plugin(HOOKS).fns["access"] = access
        await self.exchange(proxy, request("GET", "/warm"))   # a pooled upstream connection
        client = await self.connect(proxy)
        client.send(request("GET", "/boom") + request("GET", "/1") + request("GET", "/2"))
        await client.wait_closed()
        resps = client.finals()
        self.assertEqual([(r.status, r.header("Connection")) for r in resps],
                         [(500, "close")])
        await sleep(0.05)
        self.assertEqual([r.uri for r in up.requests], ["/warm"])
        self.flushLoggedErrors(RuntimeError)

    async def test_deepPipelineUpstream(self):
        """200 pipelined requests to an upstream: in order, one upstream
        connection."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        n = 200
        client = await self.connect(proxy)
        client.send(b"".join(request("GET", "/%d" % i) for i in range(n)))
        resps = await client.wait_responses(n, timeout=20)
        self.assertEqual([r.json()["uri"] for r in resps], ["/%d" % i for i in range(n)])
        self.assertEqual(len(up.connections), 1)


class BadPipelinedRequestTests(ProxyTestCase):
    """A malformed request behind good ones (as nginx): the good ones are
    answered, then the error with ``Connection: close``, then the close."""

    BAD = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"   # two Hosts: 400

    def assertAnswered(self, client, statuses):
        """The responses were ``statuses`` in order, the last one an error
        closing the connection, the others keeping it alive."""
        resps = client.finals()
        self.assertEqual([r.status for r in resps], statuses, bytes(client.data))
        self.assertEqual([r.header("Connection") for r in resps],
                         [None] * (len(statuses) - 1) + ["close"])
        self.assertIn("error", resps[-1].json())
        self.assertEqual(resps[-1].header("Content-Type"), "application/json")
        return resps

    async def test_badAfterGoodSameWrite(self):
        """Good + malformed in one write: 200, then 400, then the close."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/ok") + self.BAD + request("GET", "/after"))
        await client.wait_closed()
        resps = self.assertAnswered(client, [200, 400])
        self.assertEqual(resps[0].json()["uri"], "/ok")
        await sleep(0.02)
        self.assertEqual([r.uri for r in up.requests], ["/ok"])
        self.assertLoggedOnce(proxy)
        self.assertEqual(proxy.active(), {up.port: 0})

    async def test_badWhileGoodInFlight(self):
        """A malformed request sent while a slow one is in flight: the 400
        waits for the 200."""
        up = self.upstream(delayed(0.2))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/slow"))
        await until(lambda: up.heads)
        client.send(self.BAD)
        await sleep(0.05)
        self.assertEqual(client.data, b"")
        self.assertFalse(client.closed)
        await client.wait_closed()
        self.assertAnswered(client, [200, 400])
        self.assertLoggedOnce(proxy)

    async def test_badBehindQueued(self):
        """Malformed behind a slow request and a queued one: 200, 200, 400."""
        up = self.upstream(delayed(0.1))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/1") + request("GET", "/2") + self.BAD)
        await client.wait_closed()
        resps = self.assertAnswered(client, [200, 200, 400])
        self.assertEqual([r.json()["uri"] for r in resps[:2]], ["/1", "/2"])
        self.assertLoggedOnce(proxy, 2)

    async def test_headersTooLargeAfterTwoGood(self):
        """Two good requests and a head with a line past
        ``max_header_line``: 200, 200, 400 (as nginx)."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/1") + request("GET", "/2")
                    + b"GET /3 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 40000
                    + b"\r\n\r\n")
        await client.wait_closed()
        self.assertAnswered(client, [200, 200, 400])
        self.assertEqual([r.uri for r in up.requests], ["/1", "/2"])
        self.assertLoggedOnce(proxy, 2)

    async def test_badBodyOfQueuedRequest(self):
        """A queued request whose chunked body is broken ends with the 400
        when its turn comes; ``log`` runs once for each request."""
        up = self.upstream(delayed(0.1))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/slow")
                    + b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + b"zz\r\nabc\r\n")
        await client.wait_closed()
        self.assertAnswered(client, [200, 400])
        self.assertEqual([r.uri for r in up.requests], ["/slow"])
        self.assertLoggedOnce(proxy, 2)
        self.assertEqual([(c.request.path, c.status) for c in proxy.logged],
                         [("/slow", 200), ("/b", 400)])

    async def test_badAfterClose(self):
        """Behind a request saying ``Connection: close`` nothing more is
        answered, a malformed request neither."""
        up = self.upstream(delayed(0.05))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/a", [("Host", "x"), ("Connection", "close")])
                    + self.BAD)
        await client.wait_closed()
        self.assertEqual([(r.status, r.header("Connection")) for r in client.finals()],
                         [(200, "close")])
        self.assertLoggedOnce(proxy)

    async def test_clientGoneBeforeError(self):
        """The client leaves while the good request is in flight: it is
        logged once (aborted), and nothing is left behind."""
        up = self.upstream(delayed(0.3))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/slow") + self.BAD)
        await until(lambda: up.heads)
        client.transport.abortConnection()
        await until(lambda: proxy.logged)
        await until(lambda: proxy.factory.open_connections == 0)
        self.assertLoggedOnce(proxy)
        self.assertEqual(proxy.logged[0].error, "client_abort")

    async def test_upgradeBehindQueued(self):
        """An Upgrade request queued behind another: both are answered, the
        second with ``Connection: close``; what follows is not HTTP."""
        up = self.upstream(delayed(0.05))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/1")
                    + request("GET", "/ws", [("Host", "x"), ("Connection", "Upgrade"),
                                             ("Upgrade", "h2c")])
                    + request("GET", "/hidden"))
        await client.wait_closed()
        self.assertEqual([(r.status, r.header("Connection")) for r in client.finals()],
                         [(200, None), (200, "close")])
        self.assertEqual([r.uri for r in up.requests], ["/1", "/ws"])
        self.assertLoggedOnce(proxy, 2)


class MessageShapeTests(ProxyTestCase):
    """Interim responses, early responses, targets, HTTP/1.0 and chunked."""

    async def test_interimResponsesDropped(self):
        """1xx responses from the upstream are not passed on."""
        up = self.upstream(raw(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/"))
        resp, = await client.wait_responses(1)
        self.assertEqual(resp.body, b"ok")
        self.assertEqual([r.status for r in client.responses()], [200])

    async def test_earlyResponse(self):
        """The upstream answers (413) before reading the body: the client
        gets the answer and the connection closes; the count is released."""
        def refuse(conn, req):
            conn.respond(413, b"too big", reason=b"Payload Too Large")
            conn.transport.loseConnection()
        up = self.upstream(on_head=refuse, handler=lambda conn, req: None)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                    + b"x" * 1000)
        await until(lambda: client.finals())
        resp, = client.finals()
        self.assertEqual((resp.status, resp.body), (413, b"too big"))
        self.assertEqual(resp.header("Connection"), "close")
        await client.wait_closed()
        self.assertEqual(proxy.active(), {up.port: 0})
        self.assertLoggedOnce(proxy)

    async def test_emptyBodyLength(self):
        """``POST`` with ``Content-Length: 0`` keeps its Content-Length
        upstream (servers answer 411 to a POST without one)."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        resp = await self.exchange(proxy, request("POST", "/", body=""))
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.requests[0].header_all("Content-Length"), ["0"])
        resp = await self.exchange(proxy, request("GET", "/"))
        self.assertEqual(up.requests[1].header_all("Content-Length"), [])

    async def test_trailers(self):
        """Trailers of a chunked request or response do not break anything
        (they are not forwarded)."""
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"2\r\nok\r\n0\r\nX-Checksum: 1\r\n\r\n"))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
        client.send(request("GET", "/again"))
        resps = await client.wait_responses(2)
        self.assertEqual([r.body for r in resps], [b"ok", b"ok"])
        self.assertEqual(bytes(up.requests[0].body), b"abc")
        self.assertEqual(len(up.connections), 1)

    async def test_absoluteForm(self):
        """``GET http://host/api/x``: routed by its path."""
        up = self.upstream()
        proxy = await self.proxy({"api": [up]})
        resp = await self.exchange(proxy, b"GET http://example.com/api/x?y=1 HTTP/1.1\r\n"
                                          b"Host: example.com\r\n\r\n")
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.requests[0].uri, "/x?y=1")

    async def test_absoluteFormHost(self):
        """The absolute-form's authority is the request's host, whatever the
        Host field says (RFC 9112 3.2.2)."""
        up = self.upstream()
        proxy = await self.proxy({"api": [up]})
        resp = await self.exchange(proxy, b"GET http://real.example:8080/api/x HTTP/1.1\r\n"
                                          b"Host: other.example\r\n\r\n")
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.requests[0].header_all("Host"), ["real.example:8080"])

    async def test_underscoreFieldsDropped(self):
        """Request fields whose names have an underscore are dropped (nginx's
        ``underscores_in_headers off``): ``Transfer_Encoding`` cannot reach a
        server that would read it as ``Transfer-Encoding``; on request they
        are forwarded."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        head = request("POST", "/x", [("Host", "x"),
                                      ("Transfer_Encoding", "chunked"), ("X_Id", "1"),
                                      ("X-Id", "2")], body=b"abc")
        resp = await self.exchange(proxy, head)
        self.assertEqual(resp.status, 200)
        got = up.requests[0]
        self.assertEqual((got.header("Transfer_Encoding"), got.header("X_Id"),
                          got.header("X-Id"), bytes(got.body)), (None, None, "2", b"abc"))
        proxy = await self.proxy({"default": [up]}, proxy={"underscores_in_headers": True})
        await self.exchange(proxy, head)
        self.assertEqual(up.requests[1].header("X_Id"), "1")

    async def test_http10WithoutHost(self):
        """An HTTP/1.0 request without Host goes upstream (as HTTP/1.1) with
        the peer's address as its Host, as nginx's $proxy_host."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"GET /x HTTP/1.0\r\n\r\n")
        await client.wait_closed()
        self.assertEqual([r.status for r in client.responses()], [200])
        self.assertEqual(up.requests[0].header_all("Host"), ["127.0.0.1:%d" % up.port])

    async def test_dotSegments(self):
        """``/api/../other`` is ``/other`` (not group ``api``); climbing above
        the root is a 400."""
        api, default = self.upstream(), self.upstream()
        proxy = await self.proxy({"api": [api], "default": [default]})
        await self.exchange(proxy, request("GET", "/api/../other"))
        await self.exchange(proxy, request("GET", "/x/%2e%2e/api/y"))
        self.assertEqual([r.uri for r in default.requests], ["/other"])
        self.assertEqual([r.uri for r in api.requests], ["/y"])
        resp = await self.exchange(proxy, request("GET", "/../etc/passwd"))
        self.assertEqual(resp.status, 400)

    async def test_chunkedToHttp10(self):
        """A chunked upstream body reaches an HTTP/1.0 client de-chunked and
        delimited by the close."""
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        await client.wait_closed()
        resp, = client.finals()
        self.assertEqual(resp.body, b"abcde")
        self.assertIsNone(resp.header("Transfer-Encoding"))
        self.assertEqual(len(up.open), 1)   # the upstream connection is pooled

    async def test_retryCarriesBody(self):
        """A request body sent before the first peer refused reaches the
        second peer whole."""
        refused = self.closed_port()
        up = self.upstream()
        proxy = await self.proxy({"default": [("127.0.0.1:%d" % refused, 10), up]})
        body = "b" * 100000
        resp = await self.exchange(proxy, request("POST", "/", body=body))
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.json()["body_length"], len(body))
        self.assertEqual(bytes(up.requests[0].body), body.encode())

    async def test_trustedRealIp(self):
        """X-Real-IP from a trusted proxy names the client."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, trusted_proxies=["127.0.0.1"])
        await self.exchange(proxy, request("GET", "/", [
            ("Host", "x"), ("X-Real-IP", "198.51.100.4")]))
        self.assertEqual(up.requests[0].header_all("X-Real-IP"), ["198.51.100.4"])
        self.assertEqual(proxy.logged[0].request.client_addr, "198.51.100.4")

    async def test_upstreamReusedAfterSlowReader(self):
        """A pooled connection that carried a response the client read slowly
        serves the next request (it was not left paused)."""
        size = 8 * 1024 * 1024

        def handler(conn, req):
            if req.uri == "/big":
                conn.respond(200, b"z" * size)
            else:
                echo(conn, req)
        up = self.upstream(handler)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy, keep=False)
        client.transport.pauseProducing()
        client.send(request("GET", "/big"))
        await sleep(0.2)
        client.transport.resumeProducing()
        await until(lambda: client.received > size, timeout=10)
        await until(lambda: proxy.logged)
        resp = await self.exchange(proxy, request("GET", "/next"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(up.connections), 1)


class ConnectionCloseTests(ProxyTestCase):
    """What follows ``Connection: close`` or an Upgrade is never served."""

    async def test_nothingAfterClose(self):
        """A request pipelined after ``Connection: close`` is not forwarded."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/a", [("Host", "x"), ("Connection", "close")])
                    + request("GET", "/b"))
        await client.wait_closed()
        self.assertEqual([r.status for r in client.responses()], [200])
        self.assertEqual(client.responses()[0].header("Connection"), "close")
        self.assertEqual([r.uri for r in up.requests], ["/a"])

    async def test_upgradeAnsweredByPlugin(self):
        """An Upgrade request a plugin answers gets that answer only (not a
        second, 501, response), and the connection closes."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, plugins=["router", HOOKS, "least_conn"])
        proxy.plugin(HOOKS).fns["access"] = lambda ctx: Response(401, "no")
        client = await self.connect(proxy)
        client.send(request("GET", "/ws", [("Host", "x"), ("Connection", "Upgrade"),
                                            ("Upgrade", "h2c")]))
        await client.wait_closed()
        self.assertEqual([r.status for r in client.responses()], [401])
        self.assertEqual(up.requests, [])

    async def test_upgradeNotForwarded(self):
        """An Upgrade to a protocol not in ``proxy.upgrade_protocols`` goes
        upstream as a plain request (without the Upgrade fields), and the
        connection closes after its response: bytes after it are never taken
        for HTTP (WebSocket upgrades: tests.test_upgrade)."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/ws", [("Host", "x"), ("Connection", "Upgrade"),
                                            ("Upgrade", "h2c")])
                    + request("GET", "/hidden"))
        await client.wait_closed()
        resp, = client.responses()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Connection"), "close")
        self.assertEqual([r.uri for r in up.requests], ["/ws"])
        self.assertIsNone(up.requests[0].header("Upgrade"))
        self.assertIsNone(up.requests[0].header("Connection"))
        self.assertLoggedOnce(proxy)

    async def test_nothingAfterSynchronousClose(self):
        """A response made at once (a plugin's) closes the connection while
        the read it came in is being parsed: what follows in that read is
        not answered, not even with a 400."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, plugins=["router", HOOKS, "least_conn"])
        proxy.plugin(HOOKS).fns["access"] = lambda ctx: Response(401, "no")
        client = await self.connect(proxy)
        client.send(request("GET", "/a", [("Host", "x"), ("Connection", "close")])
                    + request("GET", "/b"))
        await client.wait_closed()
        self.assertEqual([(r.status, r.body) for r in client.responses()], [(401, b"no")])
        self.assertTrue(bytes(client.data).endswith(b"no"))
        client = await self.connect(proxy)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"zz\r\nabc\r\n")
        await client.wait_closed()
        self.assertEqual([(r.status, r.body) for r in client.responses()], [(401, b"no")])
        self.assertTrue(bytes(client.data).endswith(b"no"))
        self.assertEqual(up.requests, [])


@implementer(IHalfCloseableProtocol)
class HalfCloseClient(RawClient):
    """
    A raw client that stays open when the proxy shuts down its side
    (``eof``): it may go on writing, and closes when the test says so.
    """

    eof = False

    def readConnectionLost(self):
        self.eof = True

    def writeConnectionLost(self):
        pass


#: a group for requests refused before a peer is chosen (413 comes after
#: routing, as nginx's client_max_body_size once the location is known)
NOWHERE = {"default": ["127.0.0.1:9"]}


#: a head announcing a body far over the ``max_body_size`` of these tests
def _too_big(length, path="/"):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (path.encode("ascii"), length))


class LingeringCloseTests(ProxyTestCase):
    """
    nginx's lingering close: when the connection closes while the client may
    still be sending, the response is flushed, the write side shut down, and
    what the client sends is read and dropped until it closes, is silent for
    ``lingering_timeout`` or ``lingering_time`` has passed.
    """

    BODY = 8 * 1024 * 1024   # far more than the socket buffers hold
    CHUNK = 256 * 1024

    async def flood(self, client, total):
        """Write ``total`` bytes in chunks, the next one when the previous
        ones left the transport's buffer (a client that writes its whole body
        before reading); how many were written before the connection
        failed."""
        t = client.transport
        sent = 0
        chunk = b"x" * self.CHUNK
        while sent < total and not client.closed:
            client.send(chunk[:total - sent])
            sent += min(self.CHUNK, total - sent)
            await until(lambda: client.closed or buffered(t) < self.CHUNK,
                        timeout=10, message="the body to be sent")
        await until(lambda: client.closed or buffered(t) == 0, timeout=10,
                    message="the body to be sent")
        return sent if not client.closed else -1

    def server_side(self, proxy):
        """The proxy's protocol of its one client connection."""
        p, = proxy.factory.protocols
        return p

    def assertRefused(self, resp, status):
        self.assertEqual(resp.status, status)
        self.assertEqual(resp.header("Connection"), "close")
        self.assertEqual(resp.header("Content-Type"), "application/json")
        self.assertIn("error", resp.json())

    async def test_tooLargeBodyWrittenBeforeReading(self):
        """A client writes a head announcing a body over ``max_body_size``
        and the whole body (megabytes) before it reads anything: it then
        reads the complete 413 and the end of the stream, not a reset."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"max_body_size": 1000})
        client = await self.connect(proxy)
        client.transport.pauseProducing()       # not reading
        client.send(_too_big(self.BODY))
        written = await self.flood(client, self.BODY)
        self.assertEqual(written, self.BODY, "the proxy reset the connection")
        client.transport.resumeProducing()
        await client.wait_closed()
        resp, = client.finals()
        self.assertRefused(resp, 413)
        self.assertEqual(resp.json()["error"], "request body too large")
        self.assertEqual(up.requests, [])
        await until(lambda: proxy.factory.open_connections == 0)

    async def test_pluginAnswerBeforeBody(self):
        """A plugin answers (401) before the request body was read; the
        client writes the megabytes of its body before reading: it reads the
        401 whole, and ``log`` ran once."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, plugins=["router", HOOKS, "least_conn"])
        proxy.plugin(HOOKS).fns["access"] = lambda ctx: Response(401, "no")
        client = await self.connect(proxy)
        client.transport.pauseProducing()
        client.send(_too_big(self.BODY))
        written = await self.flood(client, self.BODY)
        self.assertEqual(written, self.BODY, "the proxy reset the connection")
        client.transport.resumeProducing()
        await client.wait_closed()
        resp, = client.finals()
        self.assertEqual((resp.status, resp.body, resp.header("Connection")),
                         (401, b"no", "close"))
        self.assertEqual(up.requests, [])
        self.assertLoggedOnce(proxy)

    async def test_badRequestWithBytesAfter(self):
        """A malformed request followed by megabytes the client writes before
        reading: the 400 arrives whole."""
        proxy = await self.proxy({})
        client = await self.connect(proxy)
        client.transport.pauseProducing()
        client.send(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        written = await self.flood(client, self.BODY)
        self.assertEqual(written, self.BODY, "the proxy reset the connection")
        client.transport.resumeProducing()
        await client.wait_closed()
        resp, = client.finals()
        self.assertRefused(resp, 400)

    async def test_halfClosedStillReading(self):
        """After the 413 the proxy shuts down its side (the client sees the
        end of the stream after the response) but goes on reading: the
        client's further writes succeed; its close ends the connection at
        once (not after ``lingering_timeout``)."""
        proxy = await self.proxy(NOWHERE, proxy={"max_body_size": 10,
                                            "lingering_timeout": 3})
        client = await self.connect(proxy, client=HalfCloseClient())
        client.send(_too_big(10 ** 9) + b"y" * 1000)
        await until(lambda: client.eof or client.closed)
        self.assertTrue(client.eof, "no half-close: %r" % (getattr(client, "reason", None),))
        self.assertFalse(client.closed)
        resp, = client.finals()
        self.assertRefused(resp, 413)
        server = self.server_side(proxy)
        self.assertTrue(getattr(server, "lingering", False))
        for _ in range(4):
            written = await self.flood(client, 1024 * 1024)
            self.assertEqual(written, 1024 * 1024)
            await sleep(0.02)
        self.assertFalse(client.closed)
        self.assertEqual(proxy.factory.open_connections, 1)
        start = reactor.seconds()
        client.transport.loseConnection()
        await until(lambda: proxy.factory.open_connections == 0)
        self.assertLess(reactor.seconds() - start, 1.5)
        self.assertFalse(server.transport.connected)

    async def test_silentClientClosedAfterLingeringTimeout(self):
        """A client that stays open and silent after the 413 is closed after
        ``lingering_timeout``."""
        proxy = await self.proxy(NOWHERE, proxy={"max_body_size": 10,
                                            "lingering_timeout": 0.2})
        client = await self.connect(proxy, client=HalfCloseClient())
        client.send(_too_big(10 ** 6) + b"y" * 100)
        await until(lambda: client.eof or client.closed)
        self.assertTrue(client.eof)
        start = reactor.seconds()
        await sleep(0.1)
        self.assertEqual(proxy.factory.open_connections, 1)
        await until(lambda: proxy.factory.open_connections == 0)
        elapsed = reactor.seconds() - start
        self.assertGreaterEqual(elapsed, 0.15)
        self.assertLess(elapsed, 2)
        self.assertIsNone(self.server_side(proxy).timer)   # no timer left behind

    async def test_lingeringTimeCaps(self):
        """A client that sends for ever (more often than
        ``lingering_timeout``) is closed after ``lingering_time``."""
        proxy = await self.proxy(NOWHERE, proxy={"max_body_size": 10,
                                            "lingering_timeout": 0.2,
                                            "lingering_time": 0.5})
        client = await self.connect(proxy, client=HalfCloseClient())
        client.send(_too_big(10 ** 9))
        await until(lambda: client.eof or client.closed)
        self.assertTrue(client.eof)
        start = reactor.seconds()

        def drip():
            if not client.closed:
                client.send(b"z" * 512)
        loop = task.LoopingCall(drip)
        loop.start(0.03)
        try:
            await until(lambda: proxy.factory.open_connections == 0)
        finally:
            loop.stop()
        elapsed = reactor.seconds() - start
        self.assertGreaterEqual(elapsed, 0.45)   # kept past lingering_timeout
        self.assertLess(elapsed, 2)

    async def test_unreadResponseNotKeptForEver(self):
        """A client that neither reads (the response cannot be flushed) nor
        sends: the connection is cut after ``lingering_timeout`` all the
        same."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, plugins=["router", HOOKS, "least_conn"],
                                 proxy={"lingering_timeout": 0.2})
        proxy.plugin(HOOKS).fns["access"] = lambda ctx: Response(401, b"n" * self.BODY)
        client = await self.connect(proxy, keep=False)
        client.transport.pauseProducing()
        # a small receive buffer: the kernels cannot take the whole response
        client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.send(_too_big(10 ** 6))
        await until(lambda: proxy.logged)
        server = self.server_side(proxy)
        self.assertGreater(buffered(server.transport), 0)
        start = reactor.seconds()
        await until(lambda: proxy.factory.open_connections == 0)
        self.assertLess(reactor.seconds() - start, 2)
        self.assertLess(client.received, self.BODY)

    async def test_lingeringTimeoutZeroTurnsItOff(self):
        """``lingering_timeout`` 0: the connection closes right after the
        413, as without lingering close."""
        proxy = await self.proxy(NOWHERE, proxy={"max_body_size": 10,
                                            "lingering_timeout": 0})
        client = await self.connect(proxy, client=HalfCloseClient())
        client.send(_too_big(10 ** 6))
        await until(lambda: client.finals())
        await until(lambda: proxy.factory.open_connections == 0, timeout=1)
        self.assertFalse(getattr(self.server_side(proxy), "lingering", False))

    async def test_completeRequestsCloseAtOnce(self):
        """Keep-alive requests, then one saying ``Connection: close`` read
        whole: the connection closes at once after its response (no
        lingering, however long ``lingering_timeout``)."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, proxy={"lingering_timeout": 5})
        client = await self.connect(proxy, client=HalfCloseClient())
        client.send(request("GET", "/1"))
        await client.wait_responses(1)
        client.send(request("POST", "/2", body="abc"))
        await client.wait_responses(2)
        self.assertEqual(proxy.factory.open_connections, 1)
        client.send(request("GET", "/3", [("Host", "x"), ("Connection", "close")]))
        await until(lambda: client.eof or client.closed)
        await until(lambda: proxy.factory.open_connections == 0, timeout=1)
        resps = client.finals()
        self.assertEqual([(r.status, r.header("Connection")) for r in resps],
                         [(200, None), (200, None), (200, "close")])
        self.assertFalse(getattr(self.server_side(proxy), "lingering", False))

    async def test_keepaliveLimitsCloseAtOnce(self):
        """``keepalive_requests`` reached after a complete request, and the
        idle ``keepalive_timeout``: closed at once, no lingering."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]},
                                 proxy={"lingering_timeout": 5, "keepalive_requests": 1})
        client = await self.connect(proxy, client=HalfCloseClient())
        client.send(request("GET", "/1"))
        await until(lambda: client.eof or client.closed)
        await until(lambda: proxy.factory.open_connections == 0, timeout=1)
        self.assertEqual(client.finals()[0].header("Connection"), "close")

        proxy = await self.proxy({"default": [up]},
                                 proxy={"lingering_timeout": 5, "keepalive_timeout": 0.1})
        client = await self.connect(proxy, client=HalfCloseClient())
        client.send(request("GET", "/1"))
        await client.wait_responses(1)
        await until(lambda: client.eof or client.closed)
        await until(lambda: proxy.factory.open_connections == 0, timeout=1)
        for p in proxy.factory.protocols:
            self.assertFalse(getattr(p, "lingering", False))
