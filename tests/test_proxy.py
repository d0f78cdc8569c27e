"""
End-to-end tests of the proxy over loopback sockets: routing, least-conn
balancing, keep-alive both ways, forwarded headers and HTTP/1.1 features
(HEAD, 204/304, chunked, Expect, pipelining, HTTP/1.0).

Errors are in :mod:`tests.test_proxy_errors`, large bodies in
:mod:`tests.test_proxy_streaming`, hooks in :mod:`tests.test_phases`.
"""

import json

import treq

from tests.helpers import ProxyTestCase, delayed, echo, raw, request, until


def by_path(routes, default=echo):
    """A handler choosing another handler by the request's path."""
    def handler(conn, req):
        routes.get(req.uri.split("?")[0], default)(conn, req)
    return handler


class RoutingTests(ProxyTestCase):
    """Prefix routing, stripping, ``X-Route-Prefix``, fallback and 503."""

    async def test_prefixStripped(self):
        """``/api/v1/users?q=1`` reaches group ``api`` as ``/v1/users?q=1``,
        with ``X-Route-Prefix: api`` replacing the client's own."""
        up = self.upstream()
        proxy = await self.proxy({"api": [up]})
        resp = await self.get(proxy, "/api/v1/users?q=1",
                              headers={"X-Route-Prefix": "admin"})
        self.assertEqual(resp.status, 200)
        seen = up.requests[0]
        self.assertEqual(seen.uri, "/v1/users?q=1")
        self.assertEqual(seen.header_all("X-Route-Prefix"), ["api"])
        self.assertEqual(proxy.logged[0].route, "api")
        self.assertEqual(proxy.logged[0].request.uri, "/api/v1/users?q=1")
        self.assertLoggedOnce(proxy)

    async def test_prefixAlone(self):
        """``/api`` reaches ``api`` as ``/``."""
        up = self.upstream()
        proxy = await self.proxy({"api": [up]})
        resp = await self.exchange(proxy, request("GET", "/api?x=1"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.requests[0].uri, "/?x=1")

    async def test_longestPrefix(self):
        """Groups ``api`` and ``api/v2``: the longest matching one wins."""
        api, v2 = self.upstream(), self.upstream()
        proxy = await self.proxy({"api": [api], "api/v2": [v2]})
        await self.get(proxy, "/api/v2/x")
        await self.get(proxy, "/api/x")
        self.assertEqual([r.uri for r in v2.requests], ["/x"])
        self.assertEqual([r.uri for r in api.requests], ["/x"])
        self.assertEqual(v2.requests[0].header("X-Route-Prefix"), "api/v2")

    async def test_fallbackToDefault(self):
        """No prefix matches: ``default`` gets the path unchanged."""
        api, default = self.upstream(), self.upstream()
        proxy = await self.proxy({"api": [api], "default": [default]})
        for path in ("/other/path?x=1", "/apix"):
            resp = await self.get(proxy, path, headers={"X-Route-Prefix": "api"})
            self.assertEqual(resp.status, 200)
        self.assertEqual([r.uri for r in default.requests], ["/other/path?x=1", "/apix"])
        self.assertEqual([r.header_all("X-Route-Prefix") for r in default.requests],
                         [["default"], ["default"]])
        self.assertEqual(api.requests, [])

    async def test_noLivePeer(self):
        """No group matches and no ``default``: 503 JSON, nothing contacted."""
        api = self.upstream()
        proxy = await self.proxy({"api": [api]})
        resp = await self.get(proxy, "/elsewhere")
        self.assertEqual(resp.status, 503)
        self.assertEqual(resp.header("Content-Type"), "application/json")
        self.assertEqual(resp.json(), {"error": "no live upstream", "group": "default"})
        self.assertEqual(api.connections, [])
        self.assertEqual(proxy.logged[0].error, "no_peer")
        self.assertEqual(proxy.logged[0].status, 503)
        self.assertLoggedOnce(proxy)

    async def test_hostKept(self):
        """The client's Host goes upstream unchanged, once."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        await self.exchange(proxy, request("GET", "/", [("Host", "www.example.org:8443")]))
        self.assertEqual(up.requests[0].header_all("Host"), ["www.example.org:8443"])


class BalancingTests(ProxyTestCase):
    """least_conn through the proxy, with slow upstreams held concurrently."""

    async def concurrent(self, proxy, upstreams, n):
        """Send ``n`` requests on ``n`` connections; wait until all the
        upstreams hold them; return the clients."""
        clients = []
        for i in range(n):
            c = await self.connect(proxy)
            c.send(request("GET", "/api/%d" % i))
            clients.append(c)
        await until(lambda: sum(len(u.requests) for u in upstreams) == n)
        return clients

    async def test_spreadsEvenly(self):
        """9 concurrent slow requests on 3 equal peers: 3 each; every count
        back at 0 afterwards."""
        ups = [self.upstream(delayed(0.3)) for _ in range(3)]
        proxy = await self.proxy({"api": ups})
        clients = await self.concurrent(proxy, ups, 9)
        self.assertEqual(sorted(proxy.active().values()), [3, 3, 3])
        self.assertEqual([len(u.requests) for u in ups], [3, 3, 3])
        for c in clients:
            resps = await c.wait_responses(1)
            self.assertEqual(resps[0].status, 200)
        await until(lambda: len(proxy.logged) == 9)
        self.assertEqual(proxy.active(), {u.port: 0 for u in ups})
        self.assertLoggedOnce(proxy, 9)

    async def test_weights(self):
        """Weights 1 and 3: 8 concurrent requests split 2 and 6."""
        light, heavy = self.upstream(delayed(0.3)), self.upstream(delayed(0.3))
        proxy = await self.proxy({"api": [(light, 1), (heavy, 3)]})
        clients = await self.concurrent(proxy, [light, heavy], 8)
        self.assertEqual((len(light.requests), len(heavy.requests)), (2, 6))
        self.assertEqual(proxy.active(), {light.port: 2, heavy.port: 6})
        for c in clients:
            await c.wait_responses(1)
        await until(lambda: len(proxy.logged) == 8)
        self.assertEqual(proxy.active(), {light.port: 0, heavy.port: 0})

    async def test_sequentialRotation(self):
        """One request at a time: equal peers take turns."""
        ups = [self.upstream() for _ in range(2)]
        proxy = await self.proxy({"api": ups})
        for i in range(4):
            await self.get(proxy, "/api/x")
        self.assertEqual([len(u.requests) for u in ups], [2, 2])


class KeepAliveTests(ProxyTestCase):
    """Persistent connections to the client and pooled ones upstream."""

    async def test_severalRequestsOneConnection(self):
        """Five requests on one client connection reuse one upstream
        connection."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        for i in range(5):
            client.send(request("GET", "/r%d" % i))
            resps = await client.wait_responses(i + 1)
            self.assertEqual(resps[i].status, 200)
            self.assertEqual(resps[i].json()["uri"], "/r%d" % i)
            self.assertIsNone(resps[i].header("Connection"))
        self.assertFalse(client.closed)
        self.assertEqual(len(up.connections), 1)
        self.assertEqual([r.conn.index for r in up.requests], [0] * 5)
        self.assertEqual(len(proxy.factory.protocols), 1)
        self.assertLoggedOnce(proxy, 5)

    async def test_upstreamReusedAcrossClients(self):
        """Sequential requests from different client connections share the
        pooled upstream connection."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        for i in range(3):
            resp = await self.exchange(proxy, request("GET", "/", [
                ("Host", "x"), ("Connection", "close")]))
            self.assertEqual(resp.status, 200)
        self.assertEqual(len(up.connections), 1)

    async def test_clientConnectionClose(self):
        """``Connection: close`` from the client: answered with
        ``Connection: close`` and closed."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/", [("Host", "x"), ("Connection", "close")]))
        await client.wait_closed()
        resp, = client.finals()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Connection"), "close")

    async def test_upstreamConnectionClose(self):
        """An upstream answering ``Connection: close`` is not reused, and the
        client connection stays open."""
        def closing(conn, req):
            conn.respond(200, b"bye", [("Connection", "close")])
            conn.transport.loseConnection()
        up = self.upstream(closing)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        for i in range(2):
            client.send(request("GET", "/"))
            resps = await client.wait_responses(i + 1)
            self.assertEqual(resps[i].body, b"bye")
            self.assertIsNone(resps[i].header("Connection"))
        self.assertEqual(len(up.connections), 2)
        self.assertFalse(client.closed)

    async def test_staleUpstreamConnection(self):
        """A pooled connection the upstream closed while idle: the next
        request goes on a fresh one and succeeds."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        await self.exchange(proxy, request("GET", "/1"))
        up.connections[0].transport.loseConnection()
        await up.connections[0].lost
        resp = await self.exchange(proxy, request("GET", "/2"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(up.connections), 2)

    async def test_http10Client(self):
        """An HTTP/1.0 client without Host: answered, then closed; it goes
        upstream as HTTP/1.1."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"GET /old HTTP/1.0\r\n\r\n")
        await client.wait_closed()
        resp, = client.finals()
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.requests[0].version, "1.1")
        self.assertEqual(up.requests[0].uri, "/old")

    async def test_http10KeepAlive(self):
        """HTTP/1.0 with ``Connection: keep-alive`` keeps the connection."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        for i in range(2):
            client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resps = await client.wait_responses(i + 1)
            self.assertEqual(resps[i].header("Connection"), "keep-alive")
        self.assertFalse(client.closed)

    async def test_http10CloseDelimited(self):
        """An unframed upstream body reaches an HTTP/1.0 client delimited by
        the close, and an HTTP/1.1 client chunked."""
        body = b"x" * 1000
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\n\r\n" + body, close="lose"))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"GET / HTTP/1.0\r\n\r\n")
        await client.wait_closed()
        resp, = client.finals()
        self.assertEqual((resp.body, resp.header("Transfer-Encoding")), (body, None))
        client = await self.connect(proxy)
        client.send(request("GET", "/"))
        resp, = await client.wait_responses(1)
        self.assertEqual((resp.body, resp.header("Transfer-Encoding")), (body, "chunked"))
        self.assertFalse(client.closed)
        self.assertLoggedOnce(proxy, 2)


class MessageTests(ProxyTestCase):
    """HEAD, bodiless statuses, chunked bodies, Expect, pipelining."""

    async def test_head(self):
        """HEAD: the upstream's Content-Length, no body; the connections
        stay usable."""
        def head(conn, req):
            conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        up = self.upstream(by_path({"/h": head}))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("HEAD", "/h"))
        client.send(request("GET", "/after"))
        resps = await client.wait_responses(2, methods=["HEAD", "GET"])
        self.assertEqual(resps[0].status, 200)
        self.assertEqual(resps[0].header("Content-Length"), "1234")
        self.assertEqual(resps[0].body, b"")
        self.assertEqual(resps[1].json()["uri"], "/after")
        self.assertEqual(up.requests[0].method, "HEAD")
        # the upstream connection goes on after the response to HEAD
        self.assertEqual(len(up.connections), 1)
        self.assertLoggedOnce(proxy, 2)

    async def test_reasonPhrase(self):
        """The upstream's reason phrase is passed on whole, also when it
        arrives in two reads, and a response without one does not get the
        previous one's."""
        def split(conn, req):
            conn.transport.write(b"HTTP/1.1 404 Not")
            conn.later(0.05, conn.transport.write,
                       b" Found Here\r\nContent-Length: 0\r\n\r\n")

        def bare(conn, req):
            conn.transport.write(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
        up = self.upstream(by_path({"/split": split, "/bare": bare}))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/split"))
        await client.wait_responses(1)
        client.send(request("GET", "/bare"))
        await client.wait_responses(2)
        lines = [line for line in bytes(client.data).split(b"\r\n")
                 if line.startswith(b"HTTP/1.1 ")]
        self.assertEqual(lines, [b"HTTP/1.1 404 Not Found Here", b"HTTP/1.1 200 OK"])
        self.assertEqual(len(up.connections), 1)

    async def test_headWithStrayBody(self):
        """An upstream that sends a body with its response to HEAD (in the
        same write): the body is not taken for the next response."""
        def head(conn, req):
            if req.method == "HEAD":
                conn.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            else:
                echo(conn, req)
        up = self.upstream(head)
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("HEAD", "/h"))
        await client.wait_responses(1, methods=["HEAD"])
        client.send(request("GET", "/after"))
        resps = await client.wait_responses(2, methods=["HEAD", "GET"])
        self.assertEqual((resps[0].status, resps[0].body), (200, b""))
        self.assertEqual(resps[1].json()["uri"], "/after")

    async def test_chunkedAnyCase(self):
        """``Transfer-Encoding: Chunked`` (any case, spaces around) is chunked."""
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n"
                               b"5\r\nhello\r\n0\r\n\r\n"))
        proxy = await self.proxy({"default": [up]})
        resp = await self.exchange(proxy, request("GET", "/"))
        self.assertEqual((resp.status, resp.body), (200, b"hello"))

    async def test_noBodyStatuses(self):
        """204 and 304 are passed on without a body or chunked framing."""
        def no_content(conn, req):
            conn.transport.write(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")

        def not_modified(conn, req):
            conn.transport.write(b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n")
        up = self.upstream(by_path({"/204": no_content, "/304": not_modified}))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/204") + request("GET", "/304") + request("GET", "/x"))
        resps = await client.wait_responses(3)
        self.assertEqual([r.status for r in resps], [204, 304, 200])
        for r in resps[:2]:
            self.assertIsNone(r.header("Transfer-Encoding"))
            self.assertIsNone(r.header("Content-Length"))
        self.assertEqual(resps[1].header("ETag"), '"e"')
        self.assertEqual(len(up.connections), 1)
        raw_bytes = bytes(client.data)
        self.assertEqual(raw_bytes.count(b"HTTP/1.1 "), 3)

    async def test_chunkedBothWays(self):
        """A chunked request body goes upstream re-chunked; a chunked
        response comes back chunked."""
        def chunked(conn, req):
            conn.transport.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        up = self.upstream(chunked)
        # (no body held before connecting: it streams at once)
        proxy = await self.proxy({"default": [up]}, proxy={"client_body_buffer_size": 0})
        client = await self.connect(proxy)
        client.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n")
        await until(lambda: up.heads)
        client.send(b"4;ext=1\r\ndefg\r\n0\r\n\r\n")
        resp, = await client.wait_responses(1)
        self.assertEqual(resp.body, b"hello world")
        self.assertEqual(resp.header("Transfer-Encoding"), "chunked")
        seen = up.requests[0]
        self.assertEqual(bytes(seen.body), b"abcdefg")
        self.assertEqual(seen.header_all("Transfer-Encoding"), ["chunked"])
        self.assertIsNone(seen.header("Content-Length"))

    async def test_contentLengthBody(self):
        """A body with Content-Length goes upstream with the same length."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        resp = await self.exchange(proxy, request("PUT", "/p", body="0123456789"))
        self.assertEqual(resp.json()["body_length"], 10)
        self.assertEqual(up.requests[0].header("Content-Length"), "10")
        self.assertEqual(bytes(up.requests[0].body), b"0123456789")

    async def test_hopByHopRemoved(self):
        """Hop-by-hop fields, and the ones Connection names, are not
        forwarded in either direction."""
        def answer(conn, req):
            conn.respond(200, b"ok", [("Connection", "X-Resp-Hop"), ("X-Resp-Hop", "1"),
                                      ("Keep-Alive", "timeout=5"), ("X-Kept", "2")])
        up = self.upstream(answer)
        proxy = await self.proxy({"default": [up]})
        resp = await self.exchange(proxy, request("GET", "/", [
            ("Host", "x"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "a"),
            ("Keep-Alive", "300"), ("TE", "trailers"), ("Proxy-Connection", "x"),
            ("Trailer", "X-T"), ("Proxy-Authorization", "Basic eA=="), ("X-End", "e")]))
        sent = [n.lower() for n, _ in up.requests[0].headers]
        for name in ("connection", "x-hop", "keep-alive", "te", "proxy-connection",
                     "trailer", "proxy-authorization"):
            self.assertNotIn(name, sent)
        self.assertIn("x-end", sent)
        got = [n.lower() for n, _ in resp.headers]
        self.assertNotIn("x-resp-hop", got)
        self.assertNotIn("keep-alive", got)
        self.assertIn("x-kept", got)

    async def test_forwardedHeadersUntrusted(self):
        """An untrusted client's X-Real-IP / X-Forwarded-For / -Proto are
        not believed."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        await self.exchange(proxy, request("GET", "/", [
            ("Host", "x"), ("X-Forwarded-For", "203.0.113.7"), ("X-Real-IP", "198.51.100.1"),
            ("X-Forwarded-Proto", "https")]))
        seen = up.requests[0]
        self.assertEqual(seen.header_all("X-Real-IP"), ["127.0.0.1"])
        xff = seen.header_all("X-Forwarded-For")
        self.assertEqual(len(xff), 1)
        self.assertEqual(xff[0].split(",")[-1].strip(), "127.0.0.1")
        self.assertEqual(seen.header_all("X-Forwarded-Proto"), ["http"])
        self.assertEqual(proxy.logged[0].request.client_addr, "127.0.0.1")

    async def test_forwardedHeadersTrusted(self):
        """From a trusted proxy, the first untrusted hop of X-Forwarded-For is
        the client, and the chain is appended to."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, trusted_proxies=["127.0.0.0/8"])
        await self.exchange(proxy, request("GET", "/", [
            ("Host", "x"), ("X-Forwarded-For", "203.0.113.7, 127.0.0.5")]))
        seen = up.requests[0]
        self.assertEqual(seen.header_all("X-Real-IP"), ["203.0.113.7"])
        self.assertEqual(seen.header_all("X-Forwarded-For"),
                         ["203.0.113.7, 127.0.0.5, 127.0.0.1"])
        self.assertEqual(proxy.logged[0].request.client_addr, "203.0.113.7")
        self.assertEqual(proxy.logged[0].request.remote_addr, "127.0.0.1")

    async def test_expectContinue(self):
        """``Expect: 100-continue``: tproxy answers 100 once a peer is chosen,
        the body follows, and Expect is not forwarded."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 5\r\n\r\n")
        await until(lambda: b"\r\n\r\n" in client.data)
        self.assertTrue(bytes(client.data).startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))
        client.send(b"hello")
        await client.wait_responses(1)
        interim, final = client.responses()
        self.assertEqual((interim.status, final.status), (100, 200))
        self.assertEqual(final.json()["body_length"], 5)
        self.assertIsNone(up.requests[0].header("Expect"))

    async def test_expectContinueRefused(self):
        """``Expect: 100-continue`` to no live peer: 503 without 100, closed."""
        proxy = await self.proxy({})
        client = await self.connect(proxy)
        client.send(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Length: 5\r\n\r\n")
        await client.wait_closed()
        resps = client.responses()
        self.assertEqual([r.status for r in resps], [503])

    async def test_pipelinedInOrder(self):
        """Pipelined requests are answered in order, a slow first one
        included, with a body in the middle."""
        up = self.upstream(by_path({"/slow": delayed(0.2)}))
        proxy = await self.proxy({"default": [up]})
        client = await self.connect(proxy)
        client.send(request("GET", "/slow") + request("POST", "/body", body="abc")
                    + request("GET", "/fast") + request("HEAD", "/head"))
        resps = await client.wait_responses(4, methods=["GET", "POST", "GET", "HEAD"])
        self.assertEqual([r.status for r in resps], [200] * 4)
        self.assertEqual([json.loads(r.body)["uri"] for r in resps[:3]],
                         ["/slow", "/body", "/fast"])
        self.assertEqual(json.loads(resps[1].body)["body_length"], 3)
        self.assertEqual(resps[3].body, b"")
        self.assertFalse(client.closed)
        self.assertLoggedOnce(proxy, 4)


class QuickStartTests(ProxyTestCase):
    """The issue's definition of done, with the default plugins: two
    backends register through the admin API, concurrent requests spread by
    least-conn, and ``/upstream/status`` shows every count back at 0."""

    async def test_registerSpreadStatus(self):
        """Register, spread 6 concurrent requests 3/3, counts back at 0."""
        ups = [self.upstream(delayed(0.2)) for _ in range(2)]
        proxy = await self.proxy(plugins=["registry", "router", "least_conn",
                                            {"name": "access_log", "settings": {"target": "logger"}}])
        admin = self.admin(proxy)
        for up in ups:
            r = await treq.get("%s/upstream/add?port=%d&prefix=api" % (admin, up.port),
                               pool=self.pool)
            self.assertEqual(r.code, 200, await treq.content(r))
            await treq.content(r)
        clients = []
        for i in range(6):
            c = await self.connect(proxy)
            c.send(request("GET", "/api/item/%d" % i))
            clients.append(c)
        await until(lambda: sum(len(u.requests) for u in ups) == 6)
        self.assertEqual([len(u.requests) for u in ups], [3, 3])
        for c in clients:
            resp, = await c.wait_responses(1)
            self.assertEqual(resp.status, 200)
        await until(lambda: len(proxy.logged) == 6)
        r = await treq.get(admin + "/upstream/status", pool=self.pool)
        status = json.loads(await treq.content(r))
        self.assertEqual(status["total_servers"], 2)
        servers = [s for g in status["groups"] for s in g["servers"]]
        self.assertEqual(sorted(s["port"] for s in servers), sorted(u.port for u in ups))
        self.assertEqual([s["conn_count"] for s in servers], [0, 0])
        self.assertEqual({s["prefix"] for s in servers}, {"api"})
