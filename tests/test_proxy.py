"""
Tests of the proxy through :mod:`tproxy.testing` (in memory, on the fake
clock): routing, least-conn balancing and keep-alive both ways, forwarded
headers and HTTP/1.1 features (HEAD, 204/304, chunked, Expect, pipelining,
HTTP/1.0).

Errors are in :mod:`tests.test_proxy_errors`, large bodies in
:mod:`tests.test_proxy_streaming`, hooks in :mod:`tests.test_phases`.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy.http import response_reader
from tproxy.testing import Harness, echo as testing_echo
from tests.upstreams import Scripted, json_answer


UP, OTHER = "127.0.0.1:9001", "127.0.0.1:9002"


def harness(upstreams=None, servers=None, **config):
    """A :mod:`tproxy.testing` harness with the router and least_conn; by
    default one group ``default`` of one echoing peer."""
    config["upstreams"] = upstreams if upstreams is not None else {"default": {"peers": [UP]}}
    servers = servers if servers is not None else {UP: testing_echo}
    h = Harness(config=config, plugins=["router", "least_conn"], servers=servers)
    for stub in servers.values():
        if isinstance(stub, Scripted):
            stub.clock = h.clock
    return h


def upstream_connections(h):
    """How many upstream connections the stub servers were asked on."""
    return len({r.client for r in h.upstream_requests})


def raw_answer(data):
    """A :class:`Scripted` answer: always ``data``."""
    return lambda request: data


def by_uri(answers, default=json_answer):
    """A :class:`Scripted` answer chosen by the request's target."""
    return lambda request: answers.get(request.uri, default)(request)


class RoutingTests(SynchronousTestCase):
    """What the router does to the request on its way up, as the proxy sends
    it (the choice of the group is in :mod:`tests.test_builtins_harness`)."""

    def test_prefixStripped(self):
        """``/api/v1/users?q=1`` reaches group ``api`` as ``/v1/users?q=1``,
        with ``X-Route-Prefix: api`` replacing the client's own; the log
        phase sees the route and the client's target."""
        h = harness({"api": {"peers": [UP]}})
        resp = h.request("GET", "/api/v1/users?q=1", headers={"X-Route-Prefix": "admin"})
        self.assertEqual(resp.status, 200)
        [seen] = h.upstream_requests
        self.assertEqual(seen.uri, "/v1/users?q=1")
        self.assertEqual(seen.headers.get_all("X-Route-Prefix"), ["api"])
        [ctx] = h.contexts
        self.assertEqual((ctx.route, ctx.request.uri), ("api", "/api/v1/users?q=1"))

    def test_prefixAlone(self):
        """``/api?x=1`` reaches ``api`` as ``/?x=1``."""
        h = harness({"api": {"peers": [UP]}})
        self.assertEqual(h.request("GET", "/api?x=1").status, 200)
        self.assertEqual(h.upstream_requests[0].uri, "/?x=1")

    def test_hostKept(self):
        """The client's Host goes upstream unchanged, once."""
        h = harness()
        h.request("GET", "/", headers={"Host": "www.example.org:8443"})
        self.assertEqual(h.upstream_requests[0].headers.get_all("Host"),
                         ["www.example.org:8443"])


class BalancingTests(SynchronousTestCase):
    """least_conn through the proxy (requests in flight and weights are in
    :mod:`tests.test_builtins_harness`)."""

    def test_sequentialRotation(self):
        """One request at a time: equal peers take turns."""
        h = harness({"api": {"peers": [UP, OTHER]}}, {UP: testing_echo, OTHER: testing_echo})
        for _ in range(4):
            h.request("GET", "/api/x")
        self.assertEqual([r.server for r in h.upstream_requests], [UP, OTHER, UP, OTHER])


class KeepAliveTests(SynchronousTestCase):
    """Persistent connections to the client and pooled ones upstream."""

    def test_severalRequestsOneConnection(self):
        """Five requests on one client connection reuse one upstream
        connection."""
        h = harness()
        conn = h.connect()
        for i in range(5):
            resp = conn.request("GET", "/r%d" % i)
            self.assertEqual((resp.status, resp.json()["uri"]), (200, "/r%d" % i))
            self.assertIsNone(resp.headers.get("Connection"))
        self.assertFalse(conn.closed)
        self.assertEqual(upstream_connections(h), 1)
        self.assertEqual(h.factory.open_connections, 1)
        self.assertEqual(len({id(ctx) for ctx in h.contexts}), 5)

    def test_upstreamReusedAcrossClients(self):
        """Sequential requests from different client connections share the
        pooled upstream connection."""
        h = harness()
        for _ in range(3):
            resp = h.request("GET", "/", headers={"Connection": "close"})
            self.assertEqual(resp.status, 200)
        self.assertEqual(upstream_connections(h), 1)

    def test_clientConnectionClose(self):
        """``Connection: close`` from the client: answered with
        ``Connection: close`` and closed."""
        h = harness()
        conn = h.connect()
        resp = conn.request("GET", "/", headers={"Connection": "close"})
        self.assertEqual((resp.status, resp.headers.get("Connection")), (200, "close"))
        self.assertTrue(conn.closed)

    def test_upstreamConnectionClose(self):
        """An upstream answering ``Connection: close`` is not reused, and the
        client connection stays open."""
        up = Scripted(raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"
                                 b"Connection: close\r\n\r\nbye"), close=True)
        h = harness(servers={UP: up})
        conn = h.connect()
        for _ in range(2):
            resp = conn.request("GET", "/")
            self.assertEqual((resp.body, resp.headers.get("Connection")), (b"bye", None))
        self.assertEqual(up.connections, 2)
        self.assertFalse(conn.closed)

    def test_http10Client(self):
        """An HTTP/1.0 client without Host: answered, then closed; it goes
        upstream as HTTP/1.1."""
        up = Scripted()
        h = harness(servers={UP: up})
        conn = h.connect()
        conn.send(b"GET /old HTTP/1.0\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses], [200])
        self.assertTrue(conn.closed)
        self.assertEqual((up.requests[0].version, up.requests[0].uri), ("HTTP/1.1", "/old"))

    def test_http10KeepAlive(self):
        """HTTP/1.0 with ``Connection: keep-alive`` keeps the connection."""
        h = harness()
        conn = h.connect()
        for i in range(2):
            conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            self.assertEqual(conn.responses[i].headers.get("Connection"), "keep-alive")
        self.assertFalse(conn.closed)

    def test_http10CloseDelimited(self):
        """An unframed upstream body reaches an HTTP/1.0 client delimited by
        the close, and an HTTP/1.1 client chunked."""
        body = b"x" * 1000
        h = harness(servers={UP: Scripted(raw_answer(b"HTTP/1.1 200 OK\r\n\r\n" + body),
                                          close=True)})
        conn = h.connect()
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        [resp] = conn.responses
        self.assertEqual((resp.body, resp.headers.get("Transfer-Encoding")), (body, None))
        self.assertTrue(conn.closed)
        conn = h.connect()
        resp = conn.request("GET", "/")
        self.assertEqual((resp.body, resp.headers.get("Transfer-Encoding")), (body, "chunked"))
        self.assertFalse(conn.closed)
        self.assertEqual(len(h.contexts), 2)


class StaleUpstreamTests(SynchronousTestCase):
    """A pooled connection closed by the upstream."""

    def test_staleUpstreamConnection(self):
        """A pooled connection the upstream closed while idle (a FIN after a
        response that did not say ``Connection: close``): the next request
        goes on a fresh one and succeeds."""
        up = Scripted(close=True)
        h = harness(servers={UP: up})
        self.assertEqual(h.request("GET", "/1").status, 200)
        self.assertEqual(h.factory.pool.idle, {})
        resp = h.request("GET", "/2")
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.connections, 2)


class MessageTests(SynchronousTestCase):
    """HEAD, bodiless statuses, chunked bodies, Expect, pipelining (an
    upstream scripted byte for byte: :mod:`tests.upstreams`)."""

    def test_head(self):
        """HEAD: the upstream's Content-Length, no body; the connections
        stay usable."""
        up = Scripted(by_uri({"/h": raw_answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")}))
        h = harness(servers={UP: up})
        conn = h.connect()
        conn.send_request("HEAD", "/h", flush=False)
        conn.send_request("GET", "/after")
        head, after = conn.responses
        self.assertEqual((head.status, head.headers.get("Content-Length"), head.body),
                         (200, "1234", b""))
        self.assertEqual(after.json()["uri"], "/after")
        self.assertEqual(up.requests[0].method, "HEAD")
        # the upstream connection goes on after the response to HEAD
        self.assertEqual(up.connections, 1)
        self.assertEqual(len(h.contexts), 2)

    def test_reasonPhrase(self):
        """The upstream's reason phrase is passed on whole, also when it
        arrives in two reads, and a response without one does not get the
        previous one's."""
        up = Scripted(by_uri({
            "/split": lambda r: [b"HTTP/1.1 404 Not",
                                 b" Found Here\r\nContent-Length: 0\r\n\r\n"],
            "/bare": raw_answer(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")}))
        h = harness(servers={UP: up})
        conn = h.connect()
        conn.send_request("GET", "/split")
        self.assertEqual(conn.responses, [])          # half a status line so far
        h.advance(1)
        conn.request("GET", "/bare")
        lines = [line for line in conn.received.split(b"\r\n")
                 if line.startswith(b"HTTP/1.1 ")]
        self.assertEqual(lines, [b"HTTP/1.1 404 Not Found Here", b"HTTP/1.1 200 OK"])
        self.assertEqual(up.connections, 1)

    def test_headWithStrayBody(self):
        """An upstream that sends a body with its response to HEAD (in the
        same write): the body is not taken for the next response."""
        def answer(request):
            if request.method == "HEAD":
                return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
            return json_answer(request)
        h = harness(servers={UP: Scripted(answer)})
        conn = h.connect()
        head = conn.request("HEAD", "/h")
        after = conn.request("GET", "/after")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(after.json()["uri"], "/after")

    def test_chunkedAnyCase(self):
        """``Transfer-Encoding: Chunked`` (any case, spaces around) is chunked."""
        h = harness(servers={UP: Scripted(raw_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding:  Chunked \r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"))})
        resp = h.request("GET", "/")
        self.assertEqual((resp.status, resp.body), (200, b"hello"))

    def test_noBodyStatuses(self):
        """204 and 304 are passed on without a body or chunked framing."""
        up = Scripted(by_uri({
            "/204": raw_answer(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"),
            "/304": raw_answer(b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n")}))
        h = harness(servers={UP: up})
        conn = h.connect()
        for uri in ("/204", "/304"):
            conn.send_request("GET", uri, flush=False)
        conn.send_request("GET", "/x")
        resps = conn.responses
        self.assertEqual([r.status for r in resps], [204, 304, 200])
        for r in resps[:2]:
            self.assertIsNone(r.headers.get("Transfer-Encoding"))
            self.assertIsNone(r.headers.get("Content-Length"))
        self.assertEqual(resps[1].headers.get("ETag"), '"e"')
        self.assertEqual(up.connections, 1)
        self.assertEqual(conn.received.count(b"HTTP/1.1 "), 3)

    def test_chunkedBothWays(self):
        """A chunked request body goes upstream re-chunked; a chunked
        response comes back chunked."""
        up = Scripted(raw_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
        # (no body held before connecting: it streams at once)
        h = harness(servers={UP: up}, proxy={"client_body_buffer_size": 0})
        conn = h.connect()
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n")
        self.assertEqual((up.connections, up.requests), (1, []))   # the body goes on
        conn.send(b"4;ext=1\r\ndefg\r\n0\r\n\r\n")
        [resp] = conn.responses
        self.assertEqual((resp.body, resp.headers.get("Transfer-Encoding")),
                         (b"hello world", "chunked"))
        [seen] = up.requests
        self.assertEqual(seen.body, b"abcdefg")
        self.assertEqual(seen.header_all("Transfer-Encoding"), ["chunked"])
        self.assertIsNone(seen.header("Content-Length"))

    def test_contentLengthBody(self):
        """A body with Content-Length goes upstream with the same length."""
        up = Scripted()
        h = harness(servers={UP: up})
        resp = h.request("PUT", "/p", body="0123456789")
        self.assertEqual(resp.json()["body_length"], 10)
        self.assertEqual(up.requests[0].header("Content-Length"), "10")
        self.assertEqual(up.requests[0].body, b"0123456789")

    def test_hopByHopRemoved(self):
        """Hop-by-hop fields, and the ones Connection names, are not
        forwarded in either direction."""
        up = Scripted(raw_answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Resp-Hop\r\n"
            b"X-Resp-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 2\r\n\r\nok"))
        h = harness(servers={UP: up})
        resp = h.request("GET", "/", headers=[
            ("Host", "x"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "a"),
            ("Keep-Alive", "300"), ("TE", "trailers"), ("Proxy-Connection", "x"),
            ("Trailer", "X-T"), ("Proxy-Authorization", "Basic eA=="), ("X-End", "e")])
        sent = [n.lower() for n, _ in up.requests[0].headers]
        for name in (b"connection", b"x-hop", b"keep-alive", b"te", b"proxy-connection",
                     b"trailer", b"proxy-authorization"):
            self.assertNotIn(name, sent)
        self.assertIn(b"x-end", sent)
        got = [n.lower() for n, _ in resp.headers.items()]
        self.assertNotIn("x-resp-hop", got)
        self.assertNotIn("keep-alive", got)
        self.assertIn("x-kept", got)

    def test_forwardedHeadersUntrusted(self):
        """An untrusted client's X-Real-IP / X-Forwarded-For / -Proto are
        not believed."""
        up = Scripted()
        h = harness(servers={UP: up})
        h.request("GET", "/", headers=[
            ("Host", "x"), ("X-Forwarded-For", "203.0.113.7"), ("X-Real-IP", "198.51.100.1"),
            ("X-Forwarded-Proto", "https")])
        seen = up.requests[0]
        self.assertEqual(seen.header_all("X-Real-IP"), ["127.0.0.1"])
        xff = seen.header_all("X-Forwarded-For")
        self.assertEqual(len(xff), 1)
        self.assertEqual(xff[0].split(",")[-1].strip(), "127.0.0.1")
        self.assertEqual(seen.header_all("X-Forwarded-Proto"), ["http"])
        self.assertEqual(h.contexts[0].request.client_addr, "127.0.0.1")

    def test_forwardedHeadersTrusted(self):
        """From a trusted proxy, the first untrusted hop of X-Forwarded-For is
        the client, and the chain is appended to."""
        up = Scripted()
        h = harness(servers={UP: up}, trusted_proxies=["127.0.0.0/8"])
        h.request("GET", "/", headers=[("Host", "x"),
                                       ("X-Forwarded-For", "203.0.113.7, 127.0.0.5")])
        seen = up.requests[0]
        self.assertEqual(seen.header_all("X-Real-IP"), ["203.0.113.7"])
        self.assertEqual(seen.header_all("X-Forwarded-For"),
                         ["203.0.113.7, 127.0.0.5, 127.0.0.1"])
        ctx = h.contexts[0]
        self.assertEqual((ctx.request.client_addr, ctx.request.remote_addr),
                         ("203.0.113.7", "127.0.0.1"))

    def test_expectContinue(self):
        """``Expect: 100-continue``: tproxy answers 100 once a peer is chosen,
        the body follows, and Expect is not forwarded."""
        up = Scripted()
        h = harness(servers={UP: up})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        self.assertEqual(conn.received, b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.send(b"hello")
        [final] = conn.responses
        self.assertEqual((final.status, final.json()["body_length"]), (200, 5))
        self.assertIsNone(up.requests[0].header("Expect"))

    def test_expectContinueRefused(self):
        """``Expect: 100-continue`` to no live peer: 503 without 100, closed."""
        h = harness(upstreams={}, servers={})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Length: 5\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses], [503])
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 503 "))
        self.assertTrue(conn.closed)

    def test_pipelinedInOrder(self):
        """Pipelined requests are answered in order, a slow first one
        included, with a body in the middle."""
        up = Scripted(by_uri({"/slow": lambda r: [b"", json_answer(r)]}))
        h = harness(servers={UP: up})
        conn = h.connect()
        conn.send_request("GET", "/slow", flush=False)
        conn.send_request("POST", "/body", body="abc", flush=False)
        conn.send_request("GET", "/fast", flush=False)
        conn.send_request("HEAD", "/head")
        self.assertEqual(conn.responses, [])          # /slow first
        h.advance(1)
        resps = conn.responses
        self.assertEqual([r.status for r in resps], [200] * 4)
        self.assertEqual([r.json()["uri"] for r in resps[:3]], ["/slow", "/body", "/fast"])
        self.assertEqual(resps[1].json()["body_length"], 3)
        self.assertEqual(resps[3].body, b"")
        self.assertFalse(conn.closed)
        self.assertEqual(len(h.contexts), 4)


#: a response head of more than upstream.WHOLE_HEAD_MIN bytes: cut from
#: the read, not reported field by field
PADDING = [b"X-Pad-%d:  %s " % (i, b"p" * 30) for i in range(8)]


def big_head(*lines):
    """A response with ``lines`` and PADDING, body ``ok``."""
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(l + b"\r\n" for l in lines + tuple(PADDING))
    assert len(head) > response_reader.WHOLE_HEAD_MIN
    return head + b"Content-Length: 2\r\n\r\nok"


def spy_on_cut_heads(case):
    """The list of what each response head cut from the read gave
    (:func:`tproxy.http.response_reader.clean_response_block`, for the rest
    of ``case``'s test): the heads read whole, on CPython (httptools)."""
    cut = []
    real = response_reader.clean_response_block

    def spy(*args):
        cut.append(real(*args))
        return cut[-1]
    case.patch(response_reader, "clean_response_block", spy)
    return cut


class WholeHeadTests(SynchronousTestCase):
    """Response heads read whole and large enough are cut from the read
    (:class:`tproxy.http.response_reader.ResponseHeadReader`): what the client and
    the filters see is what the field-by-field way gives."""

    def setUp(self):
        self.cut = spy_on_cut_heads(self)

    def harness(self, answer):
        up = self.up = Scripted(raw_answer(answer))
        h = Harness(config={"upstreams": {"default": {"peers": [UP]}}},
                    plugins=["router", "least_conn", "tests.proxy_plugins:Filters"],
                    servers={UP: up})
        up.clock = h.clock
        return h

    def test_hopByHopCut(self):
        """Connection and Keep-Alive are cut, the other fields passed on, and
        the upstream connection kept for the next request."""
        h = self.harness(big_head(b"Connection: keep-alive", b"Keep-Alive: timeout=5"))
        for _ in range(2):
            resp = h.request("GET", "/")
            self.assertEqual((resp.status, resp.body), (200, b"ok"))
            names = [n.lower() for n, _ in resp.headers.items()]
            self.assertNotIn("keep-alive", names)
            self.assertEqual(names.count("x-pad-7"), 1)
        self.assertEqual(self.up.connections, 1)
        if response_reader._WHOLE_HEADS:
            self.assertEqual(len(self.cut), 2)
            self.assertIsNotNone(self.cut[0])

    def test_filterSeesPairs(self):
        """A header_filter gets the fields as pairs, values without their
        leading whitespace (as the parser reports them), and its changes go
        out."""
        h = self.harness(big_head(b"Connection: keep-alive", b"Server:   up"))
        seen = []

        def header_filter(ctx, response):
            seen.append(response.headers.items())
            response.headers.set("X-Filtered", "1")
        h.plugin("tests.proxy_plugins:Filters").fns["header_filter"] = header_filter
        resp = h.request("GET", "/")
        self.assertEqual(seen[0][0], ("Server", "up"))
        self.assertEqual(seen[0][1], ("X-Pad-0", "p" * 30 + " "))
        self.assertEqual([n for n, _ in seen[0]][-1], "Content-Length")
        self.assertEqual((resp.headers.get("X-Filtered"), resp.body), ("1", b"ok"))
        if response_reader._WHOLE_HEADS:
            self.assertIsNotNone(self.cut[0])

    def test_rareHopField(self):
        """A head with another hop-by-hop field goes field by field: the
        field is cut all the same."""
        h = self.harness(big_head(b"Connection: keep-alive", b"Proxy-Connection: x"))
        resp = h.request("GET", "/")
        self.assertEqual((resp.status, resp.headers.get("Proxy-Connection")), (200, None))
        self.assertEqual(resp.headers.get("X-Pad-3").strip(), "p" * 30)
        self.assertEqual(self.cut, [])

    def test_connectionNamesField(self):
        """A Connection that names a field takes it too (the pairs' way)."""
        h = self.harness(big_head(b"Connection: keep-alive, X-Drop", b"X-Drop: 1"))
        resp = h.request("GET", "/")
        self.assertEqual((resp.status, resp.headers.get("X-Drop")), (200, None))
        self.assertEqual(resp.headers.get("X-Pad-3").strip(), "p" * 30)
        if response_reader._WHOLE_HEADS:
            self.assertEqual(self.cut, [None])


class QuickStartTests(SynchronousTestCase):
    """The issue's definition of done, with the default plugins: two
    backends register through the admin API, concurrent requests spread by
    least-conn, and ``/upstream/status`` shows every count back at 0."""

    def test_registerSpreadStatus(self):
        """Register, spread 6 concurrent requests 3/3, counts back at 0."""
        waiting = []

        def later(request):
            waiting.append(Deferred())
            return waiting[-1].addCallback(lambda _: testing_echo(request))
        ports = [9001, 9002]
        h = Harness(plugins=["registry", "router", "least_conn",
                             {"name": "access_log", "settings": {"target": "logger"}}],
                    servers=dict(("127.0.0.1:%d" % p, later) for p in ports))
        for port in ports:
            r = h.admin("GET", "/upstream/add?port=%d&prefix=api" % port)
            self.assertEqual(r.status, 200, r.obj)
        pending = [h.request("GET", "/api/item/%d" % i, wait=False) for i in range(6)]
        self.assertEqual(len(waiting), 6)
        servers = [r.server for r in h.upstream_requests]
        self.assertEqual(sorted(servers), ["127.0.0.1:9001"] * 3 + ["127.0.0.1:9002"] * 3)
        for d in waiting:
            d.callback(None)
        h.flush()
        self.assertEqual([p.result().status for p in pending], [200] * 6)
        self.assertEqual(len(h.contexts), 6)
        status = h.admin("GET", "/upstream/status").obj
        self.assertEqual(status["total_servers"], 2)
        servers = [s for g in status["groups"] for s in g["servers"]]
        self.assertEqual(sorted(s["port"] for s in servers), ports)
        self.assertEqual([s["conn_count"] for s in servers], [0, 0])
        self.assertEqual({s["prefix"] for s in servers}, {"api"})
