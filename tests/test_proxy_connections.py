"""
End-to-end tests of connection management and less common message shapes:
keep-alive limits and timeouts, deep pipelines, early upstream responses,
interim responses, request targets, retries carrying a body, lingering close.
"""

import socket

from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Response, hookimpl
from tproxy.testing import Harness, echo as testing_echo
from tproxy.http.response_reader import WHOLE_HEAD_MIN
from tests.helpers import (ClockedReactor, ProxyTestCase, RawClient, buffered, echo, request,
                           until)
from tests.upstreams import Scripted

HOOKS = "tests.proxy_plugins:Hooks"
UP = "127.0.0.1:9001"
#: a step of the fake clock that adds up exactly (a power of two)
TICK = 2 ** -7


def harness(upstream=None, plugins=("router", "least_conn"), **config):
    """A :mod:`tproxy.testing` harness whose group ``default`` is one peer
    answered by ``upstream`` (default: echo)."""
    config.setdefault("upstreams", {"default": {"peers": [UP]}})
    return Harness(config=config, plugins=list(plugins),
                   servers={UP: upstream if upstream is not None else testing_echo})


def later(answers):
    """A stub handler that answers each request when the test fires the
    Deferred it appends to ``answers``."""
    def handler(request):
        answers.append(Deferred())
        return answers[-1]
    return handler


def upstream_connections(h):
    """How many upstream connections the stub servers were asked on (their
    client addresses)."""
    return len({r.client for r in h.upstream_requests})


class KeepAliveLimitTests(SynchronousTestCase):
    """``keepalive_timeout`` and ``keepalive_requests`` (on the fake clock)."""

    def test_idleClientClosed(self):
        """An idle client connection is closed after ``keepalive_timeout``,
        not before."""
        h = harness(proxy={"keepalive_timeout": 0.25})
        conn = h.connect()
        conn.request("GET", "/")
        h.advance(0.25 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)

    def test_silentNewConnectionClosed(self):
        """A new connection that sends nothing is closed after
        ``header_timeout`` (nginx's ``client_header_timeout`` for the first
        request), not ``keepalive_timeout``, without an answer."""
        h = harness(proxy={"keepalive_timeout": 4, "header_timeout": 3})
        conn = h.connect()
        h.advance(3 - TICK)
        self.assertFalse(conn.closed)
        h.advance(TICK)
        self.assertTrue(conn.closed)
        self.assertEqual(conn.received, b"")

    def test_busyClientNotClosed(self):
        """A slow response is not cut by ``keepalive_timeout``."""
        answers = []
        h = harness(later(answers), proxy={"keepalive_timeout": 0.2})
        conn = h.connect()
        conn.send_request("GET", "/")
        h.advance(1)
        self.assertFalse(conn.closed)
        answers[0].callback((200, {}, b"late"))
        h.flush()
        self.assertEqual([r.status for r in conn.responses], [200])

    def test_requestsPerConnection(self):
        """After ``keepalive_requests`` requests the connection closes, the
        last response saying so."""
        h = harness(proxy={"keepalive_requests": 2})
        conn = h.connect()
        first, second = conn.request("GET", "/1"), conn.request("GET", "/2")
        self.assertEqual([r.status for r in (first, second)], [200, 200])
        self.assertEqual([r.headers.get("Connection") for r in (first, second)],
                         [None, "close"])
        self.assertTrue(conn.closed)

    def assertPooledFor(self, h, seconds):
        """``h``'s one upstream connection stays pooled ``seconds`` from
        now, and is closed then."""
        h.advance(seconds - TICK)
        self.assertEqual([len(v) for v in h.factory.pool.idle.values()], [1])
        h.advance(TICK)
        self.assertEqual(h.factory.pool.idle, {})

    def test_idleUpstreamClosed(self):
        """An idle pooled upstream connection is closed after
        ``upstream_keepalive_timeout``, not before."""
        h = harness(proxy={"upstream_keepalive_timeout": 0.25})
        h.request("GET", "/")
        self.assertPooledFor(h, 0.25)

    def test_idleUpstreamUsedAgain(self):
        """A pooled upstream connection used again is closed
        ``upstream_keepalive_timeout`` after its last response, not its
        first (its deadline moved later: the timer fires early and waits
        again)."""
        h = harness(proxy={"upstream_keepalive_timeout": 0.25})
        conn = h.connect()
        conn.request("GET", "/")
        h.advance(0.2)
        conn.request("GET", "/")
        self.assertPooledFor(h, 0.25)
        self.assertEqual(upstream_connections(h), 1)

    def test_idleUpstreamShorterThanRead(self):
        """An ``upstream_keepalive_timeout`` shorter than ``timeouts.read``:
        the connection, pooled after its response, closes at the shorter
        one, counted from that response."""
        h = harness(proxy={"upstream_keepalive_timeout": 0.25}, timeouts={"read": 10})
        h.advance(1)
        h.request("GET", "/")
        self.assertPooledFor(h, 0.25)
        self.assertEqual([c for c in h.reactor.getDelayedCalls() if c.getTime() < 59], [])

    def test_idleUpstreamsEachAtItsTime(self):
        """Idle connections to many peers, pooled at different times, close
        each ``upstream_keepalive_timeout`` after its own last response, not
        before, with one timer on the clock for all of them; none is left
        once they are closed."""
        peers = ["127.0.0.1:%d" % (9001 + i) for i in range(5)]
        h = Harness(config={"upstreams": {"default": {"peers": peers}},
                            "proxy": {"upstream_keepalive_timeout": 1}},
                    plugins=["router", "least_conn"],
                    servers={peer: testing_echo for peer in peers})
        conn = h.connect()
        for _ in peers:
            conn.request("GET", "/")
            h.advance(0.125)
        pool = h.factory.pool
        self.assertEqual(len(pool.idle), 5)
        conn.request("GET", "/")   # the first peer's again, at 0.625

        def calls():
            # (the client's and the stubs' timers are due at 60 s and later)
            return len([c for c in h.reactor.getDelayedCalls() if c.getTime() < 59])
        self.assertEqual(calls(), 1)
        h.advance(1.125 - 0.625 - TICK)
        self.assertEqual(len(pool.idle), 5)
        for closed in range(1, 5):
            h.advance(TICK)
            self.assertEqual(len(pool.idle), 5 - closed)
            self.assertEqual(calls(), 1)
            h.advance(0.125 - TICK)
        self.assertEqual(len(pool.idle), 1)   # the first peer's, until 1.625
        h.advance(TICK)
        self.assertEqual(pool.idle, {})
        self.assertEqual(calls(), 0)

    def test_idleUpstreamClosedByUs(self):
        """An idle pooled upstream connection that tproxy drops (its close
        not done yet when the next request comes) is not given to that
        request, not even to one that may not be sent twice: the request
        goes on a fresh connection, and the peer is not taken for failed."""
        up = Scripted(lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        self.assertEqual(conn.request("GET", "/").status, 200)
        [pooled] = [c for conns in h.factory.pool.idle.values() for c in conns]
        pooled.abort()
        conn.send_request("POST", "/next", body=b"abc")
        self.assertEqual([(r.status, r.body) for r in conn.responses],
                         [(200, b"ok"), (200, b"ok")])
        self.assertEqual([(r.uri, r.conn, r.body) for r in up.requests],
                         [("/", 0, b""), ("/next", 1, b"abc")])
        peer = h.registry.group("default").peers[("127.0.0.1", 9001)]
        self.assertTrue(h.gateway.health.as_dict(peer)["healthy"])
        self.assertEqual(peer.active, 0)

    def test_removedPeerIdleClosed(self):
        """A peer removed (``/upstream/remove``, or its registration's TTL
        out) has its pooled idle connections closed at once, those of a TLS
        group (pooled apart from plain ones) as the plain ones; not at the
        idle timeout (60 s).  A reload closes the idle TLS ones (made with
        the settings before it, no request would take them)."""
        h = Harness(config={"registry": {"ttl": 10}, "upstreams": {
                        "tls": {"peers": [], "tls": {"verify": False}}}},
                    plugins=["registry", "router", "least_conn"],
                    servers={"127.0.0.1:9001": testing_echo, "127.0.0.1:9002": testing_echo})
        for removal in ("admin", "ttl", "reload", "many"):
            for group, port in (("plain", 9001), ("tls", 9002)):
                r = h.admin("GET", "/upstream/add?port=%d&prefix=%s" % (port, group))
                self.assertEqual(r.status, 200, r.obj)
                self.assertEqual(h.request("GET", "/%s/x" % group).status, 200)
            self.assertEqual(sorted(len(v) for v in h.factory.pool.idle.values()), [1, 1])
            if removal == "reload":
                # the TLS one closes: no request would take it (new settings)
                h.reload(config=h.config)
                self.assertEqual(sorted(len(v) for v in h.factory.pool.idle.values()), [1])
            elif removal == "many":
                h.factory.pool._creators.clear()   # as past 4096 TLS places
            if removal != "ttl":
                for group, port in (("plain", 9001), ("tls", 9002)):
                    r = h.admin("GET", "/upstream/remove?port=%d&prefix=%s" % (port, group))
                    self.assertEqual(r.status, 200, r.obj)
            else:
                h.advance(10)
                self.assertIsNone(h.registry.group("plain"))
            self.assertEqual(h.factory.pool.idle, {}, removal)

    def test_removedPeerInFlightNotPooled(self):
        """A response from a peer removed while it was in flight ends
        with its upstream connection closed, not pooled, also when the peer
        is registered again with the same address meanwhile (a new
        registration), in a group that keeps other peers or in one that
        emptied; a response of the new registration is pooled."""
        answers = []
        h = Harness(config={"registry": {"ttl": 10}}, plugins=["registry", "router", "least_conn"],
                    servers={"127.0.0.1:9001": later(answers),
                             "127.0.0.1:9002": testing_echo})
        for other in (False, True):
            r = h.admin("GET", "/upstream/add?port=9001&prefix=g")
            self.assertEqual(r.status, 200, r.obj)
            group = h.registry.group("g")
            first = group.peers[("127.0.0.1", 9001)]
            conn = h.connect()
            conn.send_request("GET", "/g/x")
            h.flush()
            self.assertEqual(len(answers), 1)
            ports = (9001, 9002) if other else (9001,)
            paths = ("add?port=9002", "remove?port=9001", "add?port=9001")
            for path in paths if other else paths[1:]:
                r = h.admin("GET", "/upstream/%s&prefix=g" % path)
                self.assertEqual(r.status, 200, r.obj)
            self.assertEqual(h.registry.group("g") is group, other)
            self.assertIsNot(h.registry.group("g").peers[("127.0.0.1", 9001)], first)
            answers.pop().callback((200, {}, b"late"))
            h.flush()
            self.assertEqual([r.status for r in conn.responses], [200])
            self.assertEqual(h.factory.pool.idle, {}, other)
            for port in ports:
                r = h.admin("GET", "/upstream/remove?port=%d&prefix=g" % port)
                self.assertEqual(r.status, 200, r.obj)
        # the new registration's response is pooled
        r = h.admin("GET", "/upstream/add?port=9001&prefix=g")
        self.assertEqual(r.status, 200, r.obj)
        conn = h.connect()
        conn.send_request("GET", "/g/y")
        h.flush()
        answers.pop().callback((200, {}, b"ok"))
        h.flush()
        self.assertEqual([r.status for r in conn.responses], [200])
        self.assertEqual([len(v) for v in h.factory.pool.idle.values()], [1])

    def test_upstreamKeepalive(self):
        """Requests one after the other share one upstream connection..."""
        h = harness()
        conn = h.connect()
        for _ in range(3):
            conn.request("GET", "/")
        self.assertEqual(upstream_connections(h), 1)

    def test_upstreamKeepalivePerPeer(self):
        """... per peer: two groups listing one address each keep their
        own (``proxy.upstream_keepalive`` per upstream peer), each reused
        by its group's next request."""
        h = harness(upstreams={"default": {"peers": [UP]}, "api": {"peers": [UP]}})
        conn = h.connect()
        for path in ("/x", "/api/x", "/x", "/api/x"):
            self.assertEqual(conn.request("GET", path).status, 200)
        self.assertEqual(upstream_connections(h), 2)
        clients = [r.client for r in h.upstream_requests]
        self.assertEqual(clients[:2], clients[2:])
        self.assertEqual(sorted(len(conns) for conns in h.factory.pool.idle.values()),
                         [1, 1])

    def test_upstreamKeepaliveOff(self):
        """... but with ``upstream_keepalive`` 0, a connection per request."""
        h = harness(proxy={"upstream_keepalive": 0})
        conn = h.connect()
        for _ in range(3):
            conn.request("GET", "/")
        self.assertEqual(upstream_connections(h), 3)
        self.assertEqual(h.factory.pool.idle, {})


class ConcurrencyTests(SynchronousTestCase):
    """Many clients at once (on the fake clock)."""

    def test_manyClients(self):
        """60 clients, 3 requests each on keep-alive connections, to 3
        upstreams of different speeds: all answered, every count back at 0,
        ``log`` once per request."""
        addresses = ["127.0.0.1:%d" % (9001 + i) for i in range(3)]
        clock = []       # the harness's, once it exists

        def slow(delay):
            def handler(request):
                return deferLater(clock[0], delay, testing_echo, request)
            return handler
        h = Harness(config={"upstreams": {"api": {"peers": addresses}}},
                    plugins=["router", "least_conn"],
                    servers={a: slow(d) for a, d in zip(addresses, (0, 0.02, 0.05))})
        clock.append(h.clock)
        conns = [h.connect() for _ in range(60)]
        for j in range(3):
            for i, conn in enumerate(conns):
                conn.send_request("GET", "/api/%d/%d" % (i, j))
            h.advance(1)
        for i, conn in enumerate(conns):
            self.assertEqual([r.json()["uri"] for r in conn.responses],
                             ["/%d/%d" % (i, j) for j in range(3)])
        self.assertEqual(len(h.upstream_requests), 180)
        self.assertEqual({p.active for p in h.registry.group("api").peers.values()}, {0})
        self.assertEqual(len({id(ctx) for ctx in h.contexts}), 180)

    def test_poolSizeLimit(self):
        """``upstream_keepalive`` 1: of two connections used at once, one is
        kept idle, the other closed."""
        answers = []
        h = harness(later(answers), proxy={"upstream_keepalive": 1})
        conns = [h.connect() for _ in range(2)]
        for conn in conns:
            conn.send_request("GET", "/")
        self.assertEqual(upstream_connections(h), 2)
        for d in answers:
            d.callback((200, {}, b"ok"))
        h.flush()
        self.assertEqual([len(c.responses) for c in conns], [1, 1])
        self.assertEqual([len(v) for v in h.factory.pool.idle.values()], [1])


class Answer(object):
    """``access`` calls ``self.fn(ctx)`` (a test sets it)."""

    fn = None

    @hookimpl
    def access(self, ctx):
        """Calls ``fn``."""
        return self.fn(ctx)


class LocalResponseFramingTests(SynchronousTestCase):
    """What frames a response a plugin makes."""

    def test_notModifiedHasNoLength(self):
        """A plugin's ``304`` goes without a Content-Length (RFC 9110 8.6: only
        the 200's length may be there, which the plugin does not give) and
        without a body, even one the plugin set; the response behind it on
        the connection is read whole."""
        plugin = Answer()
        plugin.fn = lambda ctx: (Response(304, b"stale", {"ETag": '"v1"'})
                                 if ctx.request.path == "/cond" else None)
        h = harness(plugins=["router", plugin, "least_conn"])
        conn = h.connect()
        conn.send_request("GET", "/cond", flush=False)
        conn.send_request("GET", "/next")
        head = conn.received.split(b"\r\n\r\n", 1)[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 304 Not Modified\r\n"), head)
        self.assertNotIn(b"content-length", head.lower())
        self.assertIn(b'ETag: "v1"', head)
        self.assertNotIn(b"stale", conn.received)
        self.assertEqual([r.status for r in conn.responses], [304, 200])
        self.assertEqual(conn.responses[1].json()["uri"], "/next")


class PipelineTests(SynchronousTestCase):
    """Many requests in one write (on the fake clock)."""

    def test_deepPipeline(self):
        """1000 pipelined requests behind a slow one, answered by a plugin at
        once: none is sent before the slow one's response, then all, in
        order, each logged once."""
        answers = []
        plugin = Answer()
        plugin.fn = lambda ctx: (None if ctx.request.path == "/slow"
                                 else Response(200, ctx.request.path))
        h = harness(later(answers), plugins=["router", plugin, "least_conn"])
        n = 1000
        conn = h.connect()
        for path in ["/slow"] + ["/%d" % i for i in range(n)]:
            conn.send_request("GET", path, flush=False)
        h.flush()
        self.assertEqual(conn.responses, [])
        answers[0].callback((200, {}, b"slow"))
        h.flush()
        self.assertEqual([r.body for r in conn.responses],
                         [b"slow"] + [b"/%d" % i for i in range(n)])
        self.assertEqual(len({ctx.request_id for ctx in h.contexts}), n + 1)

    def test_nothingServedAfterClose(self):
        """A response that closes the connection (a plugin failed: 500 and
        ``Connection: close``) is the last one: the requests pipelined behind
        it in the same write are not run."""
        plugin = Answer()

        def fn(ctx):
            if ctx.request.path == "/boom":
                raise RuntimeError("boom")
        plugin.fn = fn
        h = harness(plugins=["router", plugin, "least_conn"])
        h.request("GET", "/warm")          # a pooled upstream connection
        conn = h.connect()
        for path in ("/boom", "/1", "/2"):
            conn.send_request("GET", path, flush=False)
        h.flush()
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(500, "close")])
        self.assertTrue(conn.closed)
        self.assertEqual([r.uri for r in h.upstream_requests], ["/warm"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_deepPipelineUpstream(self):
        """200 pipelined requests to an upstream: in order, one upstream
        connection."""
        h = harness()
        n = 200
        conn = h.connect()
        for i in range(n):
            conn.send_request("GET", "/%d" % i, flush=False)
        h.flush()
        self.assertEqual([r.json()["uri"] for r in conn.responses],
                         ["/%d" % i for i in range(n)])
        self.assertEqual(upstream_connections(h), 1)


class BadPipelinedRequestTests(SynchronousTestCase):
    """A malformed request behind good ones (as nginx): the good ones are
    answered, then the error with ``Connection: close``, then the close."""

    BAD = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"   # two Hosts: 400

    def assertAnswered(self, conn, statuses):
        """The responses were ``statuses`` in order, the last one an error
        closing the connection, the others keeping it alive; the connection
        is closed."""
        resps = conn.responses
        self.assertEqual([r.status for r in resps], statuses, conn.received)
        self.assertEqual([r.headers.get("Connection") for r in resps],
                         [None] * (len(statuses) - 1) + ["close"])
        self.assertIn("error", resps[-1].json())
        self.assertEqual(resps[-1].headers.get("Content-Type"), "application/json")
        self.assertTrue(conn.closed)
        return resps

    def assertLoggedOnce(self, h, n=1, refused=None):
        """``log`` ran ``n`` times, once per request (distinct contexts);
        with ``refused`` (a status) once more, last, for the malformed
        request (refused before any plugin: no route, no peer)."""
        self.assertEqual(len({id(ctx) for ctx in h.contexts}), len(h.contexts))
        self.assertEqual(len(h.contexts), n + (refused is not None))
        if refused is not None:
            ctx = h.contexts[-1]
            self.assertEqual((ctx.status, ctx.route, ctx.peer), (refused, None, None))
            self.assertGreater(ctx.bytes_sent, 0)

    def pipelined(self, conn, *requests):
        """Queue ``(method, path[, headers])`` requests or raw bytes and send
        them in one write."""
        for r in requests:
            if isinstance(r, bytes):
                conn.transport.write(r)
            else:
                conn.send_request(*r, flush=False)
        conn.send(b"")

    def test_badAfterGoodSameWrite(self):
        """Good + malformed in one write: 200, then 400, then the close."""
        h = harness()
        conn = h.connect()
        self.pipelined(conn, ("GET", "/ok"), self.BAD, ("GET", "/after"))
        resps = self.assertAnswered(conn, [200, 400])
        self.assertEqual(resps[0].json()["uri"], "/ok")
        self.assertEqual([r.uri for r in h.upstream_requests], ["/ok"])
        self.assertLoggedOnce(h, refused=400)
        self.assertEqual(h.registry.group("default").peers[("127.0.0.1", 9001)].active, 0)

    def test_badWhileGoodInFlight(self):
        """A malformed request sent while a slow one is in flight: the 400
        waits for the 200."""
        answers = []
        h = harness(later(answers))
        conn = h.connect()
        conn.send_request("GET", "/slow")
        conn.send(self.BAD)
        h.advance(5)
        self.assertEqual((conn.received, conn.closed), (b"", False))
        answers[0].callback((200, {}, b"slow"))
        h.flush()
        self.assertAnswered(conn, [200, 400])
        self.assertLoggedOnce(h, refused=400)

    def test_badBehindQueued(self):
        """Malformed behind a slow request and a queued one: 200, 200, 400."""
        answers = []
        h = harness(later(answers))
        conn = h.connect()
        self.pipelined(conn, ("GET", "/1"), ("GET", "/2"), self.BAD)
        while answers:
            answers.pop(0).callback((200, {}, b"ok"))
            h.flush()
        resps = self.assertAnswered(conn, [200, 200, 400])
        self.assertEqual([r.uri for r in h.upstream_requests], ["/1", "/2"])
        self.assertEqual([r.body for r in resps[:2]], [b"ok", b"ok"])
        self.assertLoggedOnce(h, 2, refused=400)

    def test_headersTooLargeAfterTwoGood(self):
        """Two good requests and a head past ``max_header_size`` (in lines
        of 7000 bytes each): 200, 200, 431."""
        h = harness()
        conn = h.connect()
        big = b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 7000) for i in range(6))
        self.pipelined(conn, ("GET", "/1"), ("GET", "/2"),
                       b"GET /3 HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        self.assertAnswered(conn, [200, 200, 431])
        self.assertEqual([r.uri for r in h.upstream_requests], ["/1", "/2"])
        self.assertLoggedOnce(h, 2, refused=431)
        self.assertEqual(h.contexts[-1].request.path, "/3")

    def test_badBodyOfQueuedRequest(self):
        """A queued request whose chunked body is broken ends with the 400
        when its turn comes; ``log`` runs once for each request."""
        answers = []
        h = harness(later(answers))
        conn = h.connect()
        self.pipelined(conn, ("GET", "/slow"),
                       b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nabc\r\n")
        self.assertEqual(conn.responses, [])
        answers[0].callback((200, {}, b"slow"))
        h.flush()
        self.assertAnswered(conn, [200, 400])
        self.assertEqual([r.uri for r in h.upstream_requests], ["/slow"])
        self.assertLoggedOnce(h, 2)
        self.assertEqual([(c.request.path, c.status) for c in h.contexts],
                         [("/slow", 200), ("/b", 400)])

    def test_badAfterClose(self):
        """Behind a request saying ``Connection: close`` nothing more is
        answered, a malformed request neither."""
        h = harness()
        conn = h.connect()
        self.pipelined(conn, ("GET", "/a", {"Connection": "close"}), self.BAD)
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, "close")])
        self.assertTrue(conn.closed)
        self.assertLoggedOnce(h)

    def test_clientGoneBeforeError(self):
        """The client leaves while the good request is in flight: it is
        logged once (aborted), and nothing is left behind."""
        h = harness(later([]))
        conn = h.connect()
        self.pipelined(conn, ("GET", "/slow"), self.BAD)
        conn.abort()
        self.assertEqual(h.factory.open_connections, 0)
        self.assertLoggedOnce(h)
        self.assertEqual(h.contexts[0].error, "client_abort")

    def test_upgradeBehindQueued(self):
        """An Upgrade request (not tunneled) queued behind another, and one
        behind it: each is answered in turn, the connection kept (as nginx)."""
        h = harness()
        conn = h.connect()
        self.pipelined(conn, ("GET", "/1"),
                       ("GET", "/ws", {"Connection": "Upgrade", "Upgrade": "h2c"}),
                       ("GET", "/after"))
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, None), (200, None), (200, None)])
        self.assertEqual([r.uri for r in h.upstream_requests], ["/1", "/ws", "/after"])
        self.assertFalse(conn.closed)
        self.assertLoggedOnce(h, 3)


def scripted(upstreams=None, plugins=("router", "least_conn"), **config):
    """A harness whose peers are :class:`tests.upstreams.Scripted` stubs:
    ``upstreams`` maps a group to ``{address: Scripted}``."""
    upstreams = upstreams or {"default": {UP: Scripted()}}
    config["upstreams"] = {g: {"peers": list(peers)} for g, peers in upstreams.items()}
    servers = {a: stub for peers in upstreams.values() for a, stub in peers.items()
               if stub is not None}
    h = Harness(config=config, plugins=list(plugins), servers=servers)
    for stub in servers.values():
        stub.clock = h.clock
    return h


def raw_answer(data):
    """A :class:`Scripted` answer: always ``data``."""
    return lambda request: data


class MessageShapeTests(SynchronousTestCase):
    """Interim responses, early responses, targets, HTTP/1.0 and chunked (an
    upstream scripted byte for byte: :mod:`tests.upstreams`)."""

    def test_interimResponsesDropped(self):
        """1xx responses from the upstream are not passed on."""
        h = scripted({"default": {UP: Scripted(raw_answer(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))}})
        conn = h.connect()
        resp = conn.request("GET", "/")
        self.assertEqual((resp.status, resp.body), (200, b"ok"))
        self.assertEqual(conn.received.count(b"HTTP/1.1 "), 1)

    def test_bytesAfterResponseNotTheNextOne(self):
        """An upstream sends more than its response (a second response in
        the same read, nginx's "upstream sent more data than specified"):
        the request pipelined behind gets its own answer, not those bytes,
        and the connection that sent them is not used again (a keep-alive
        connection is reused only once its read is over)."""
        self.bytes_after(b"", b"HTTP/1.1 200 OK\r\n")

    def test_bytesAfterLargeResponse(self):
        """The same after a head read whole of ``WHOLE_HEAD_MIN`` bytes or
        more (parsed without a call per field), the second response
        without a reason phrase."""
        self.bytes_after(b"X-Pad: " + b"p" * WHOLE_HEAD_MIN + b"\r\n", b"HTTP/1.1 200\r\n")

    def bytes_after(self, fields, second):
        def answer(request):
            ok = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 2\r\n\r\nok"
            if request.uri == "/extra":
                return ok + second + b"Content-Length: 4\r\n\r\nEVIL"
            return ok
        up = Scripted(answer)
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send_request("GET", "/extra", flush=False)
        conn.send_request("POST", "/next", body=b"abc", flush=False)
        h.flush()
        self.assertEqual([(r.status, r.body) for r in conn.responses],
                         [(200, b"ok"), (200, b"ok")])
        self.assertNotIn(b"EVIL", conn.received)
        # the POST was sent once, on a new connection
        self.assertEqual([(r.uri, r.conn, r.body) for r in up.requests],
                         [("/extra", 0, b""), ("/next", 1, b"abc")])
        self.assertEqual(up.open, 1)   # the first connection was closed
        # the peer's count fell once per request, and it is not a failure
        peer = h.registry.group("default").peers[("127.0.0.1", 9001)]
        self.assertEqual(peer.active, 0)
        self.assertTrue(h.gateway.health.as_dict(peer)["healthy"])
        [warn] = [e for e in h.events if e.get("log_namespace") == "tproxy.http.upstream"]
        self.assertEqual(warn["peer"], UP)

    def test_partOfAResponseAfterOne(self):
        """The bytes after a response, in its read, are only the start of
        a status line (no field, no reason: ``HTTP/1.``): the connection
        is not used again either, and the next request, sent once the
        first is answered, gets its answer on a new one."""
        def answer(request):
            ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            return ok + b"HTTP/1." if request.uri == "/extra" else ok
        up = Scripted(answer)
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        self.assertEqual(conn.request("GET", "/extra").status, 200)
        resp = conn.request("GET", "/next")
        self.assertEqual((resp.status, resp.body), (200, b"ok"))
        self.assertEqual([(r.uri, r.conn) for r in up.requests], [("/extra", 0), ("/next", 1)])
        self.assertEqual(up.open, 1)

    def test_parsersLent(self):
        """Connections to two peers, used in turn, parse their responses
        with one parser, lent to each for a response (see
        ``UpstreamProtocol``): no parser per connection."""
        from tproxy.http import upstream
        made = []
        real = upstream.HttpResponseParser
        self.patch(upstream, "HttpResponseParser", lambda cb: made.append(cb) or real(cb))
        self.patch(upstream, "_PARSERS", [])
        other = "127.0.0.1:9002"
        h = scripted({"default": {UP: Scripted(), other: Scripted()}})
        conn = h.connect()
        for _ in range(4):
            self.assertEqual(conn.request("GET", "/").status, 200)
        self.assertEqual(len(h.factory.pool.idle), 2)   # (a connection to each)
        self.assertEqual(made, [upstream._CALLBACKS])
        self.assertEqual(len(upstream._PARSERS), 1)

    def test_earlyResponse(self):
        """The upstream answers (413) before reading the body: the client
        gets the answer and the connection closes; the count is released."""
        up = Scripted(raw_answer(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 7\r\n"
                                 b"\r\ntoo big"), close=True, early=True)
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                  + b"x" * 1000)
        [resp] = conn.responses
        self.assertEqual((resp.status, resp.body), (413, b"too big"))
        self.assertEqual(resp.headers.get("Connection"), "close")
        self.assertTrue(conn.closed)
        self.assertEqual(h.registry.group("default").peers[("127.0.0.1", 9001)].active, 0)
        self.assertEqual(len(h.contexts), 1)

    def test_emptyBodyLength(self):
        """``POST`` with ``Content-Length: 0`` keeps its Content-Length
        upstream (servers answer 411 to a POST without one)."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(conn.responses[0].status, 200)
        self.assertEqual(up.requests[0].header_all("Content-Length"), ["0"])
        h.request("GET", "/")
        self.assertEqual(up.requests[1].header_all("Content-Length"), [])

    def test_trailers(self):
        """Trailers of a chunked request or response do not break anything
        (they are not forwarded)."""
        up = Scripted(raw_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"2\r\nok\r\n0\r\nX-Checksum: 1\r\n\r\n"))
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
        conn.request("GET", "/again")
        self.assertEqual([r.body for r in conn.responses], [b"ok", b"ok"])
        self.assertEqual(up.requests[0].body, b"abc")
        self.assertEqual(up.connections, 1)

    def test_absoluteForm(self):
        """``GET http://host/api/x``: routed by its path."""
        up = Scripted()
        h = scripted({"api": {UP: up}})
        conn = h.connect()
        conn.send(b"GET http://example.com/api/x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        self.assertEqual(conn.responses[0].status, 200)
        self.assertEqual(up.requests[0].uri, "/x?y=1")

    def test_absoluteFormHost(self):
        """The absolute-form's authority is the request's host, whatever the
        Host field says (RFC 9112 3.2.2)."""
        up = Scripted()
        h = scripted({"api": {UP: up}})
        conn = h.connect()
        conn.send(b"GET http://real.example:8080/api/x HTTP/1.1\r\nHost: other.example\r\n\r\n")
        self.assertEqual(conn.responses[0].status, 200)
        self.assertEqual(up.requests[0].header_all("Host"), ["real.example:8080"])

    def test_absoluteFormQueryWithoutPath(self):
        """``GET http://host?q=1``: the path is ``/``, the query kept, and
        the Host the authority alone (RFC 3986 3.2: it ends at ``?``)."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"GET http://real.example?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET http://real.example:81 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses], [200, 200])
        self.assertEqual([(r.uri, r.header("Host")) for r in up.requests],
                         [("/?q=1", "real.example"), ("/", "real.example:81")])

    def test_connectionCannotDropHost(self):
        """``Connection: host`` does not take the Host away from the upstream
        request (which must have one); other fields it names are dropped."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: host, x-a\r\nX-A: 1\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses], [200])
        self.assertEqual((up.requests[0].header_all("Host"), up.requests[0].header("X-A")),
                         (["x"], None))

    def test_expectContinueHttp10(self):
        """``Expect: 100-continue`` in an HTTP/1.0 request is ignored (RFC
        9110 10.1.1; no 1xx to an HTTP/1.0 client) and not forwarded: the
        body is read at once, the only response the final one."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        self.assertEqual(conn.received, b"")
        conn.send(b"hello")
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 "), conn.received)
        self.assertEqual([r.status for r in conn.responses], [200])
        self.assertEqual((up.requests[0].body, up.requests[0].header("Expect")),
                         (b"hello", None))

    def test_underscoreFieldsDropped(self):
        """Request fields whose names have an underscore are dropped (nginx's
        ``underscores_in_headers off``): ``Transfer_Encoding`` cannot reach a
        server that would read it as ``Transfer-Encoding``; on request they
        are forwarded."""
        headers = [("Host", "x"), ("Transfer_Encoding", "chunked"), ("X_Id", "1"),
                   ("X-Id", "2")]
        up = Scripted()
        h = scripted({"default": {UP: up}})
        self.assertEqual(h.request("POST", "/x", headers=headers, body=b"abc").status, 200)
        got = up.requests[0]
        self.assertEqual((got.header("Transfer_Encoding"), got.header("X_Id"),
                          got.header("X-Id"), got.body), (None, None, "2", b"abc"))
        up = Scripted()
        h = scripted({"default": {UP: up}}, proxy={"underscores_in_headers": True})
        h.request("POST", "/x", headers=headers, body=b"abc")
        self.assertEqual(up.requests[0].header("X_Id"), "1")

    def test_http10WithoutHost(self):
        """An HTTP/1.0 request without Host goes upstream (as HTTP/1.1) with
        the peer's address as its Host, as nginx's $proxy_host."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"GET /x HTTP/1.0\r\n\r\n")
        self.assertEqual([r.status for r in conn.responses], [200])
        self.assertTrue(conn.closed)
        self.assertEqual(up.requests[0].header_all("Host"), [UP])

    def test_dotSegments(self):
        """``/api/../other`` is ``/other`` (not group ``api``); climbing above
        the root is a 400."""
        api, default = Scripted(), Scripted()
        h = scripted({"api": {UP: api}, "default": {"127.0.0.1:9002": default}})
        h.request("GET", "/api/../other")
        h.request("GET", "/x/%2e%2e/api/y")
        self.assertEqual([r.uri for r in default.requests], ["/other"])
        self.assertEqual([r.uri for r in api.requests], ["/y"])
        self.assertEqual(h.request("GET", "/../etc/passwd").status, 400)

    def test_chunkedToHttp10(self):
        """A chunked upstream body reaches an HTTP/1.0 client de-chunked and
        delimited by the close; the upstream connection is pooled."""
        up = Scripted(raw_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"))
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"GET / HTTP/1.0\r\n\r\n")
        [resp] = conn.responses
        self.assertEqual(resp.body, b"abcde")
        self.assertIsNone(resp.headers.get("Transfer-Encoding"))
        self.assertTrue(conn.closed)
        self.assertEqual([len(v) for v in h.factory.pool.idle.values()], [1])

    def test_retryCarriesBody(self):
        """A request body sent before the first peer refused reaches the
        second peer whole."""
        up = Scripted()
        h = Harness(config={"upstreams": {"default": {"peers": [
                        {"host": "127.0.0.1", "port": 9009, "weight": 10}, UP]}}},
                    plugins=["router", "least_conn"], servers={UP: up})
        body = b"b" * 100000
        resp = h.request("POST", "/", body=body)
        self.assertEqual((resp.status, resp.json()["body_length"]), (200, len(body)))
        self.assertEqual(up.requests[0].body, body)
        self.assertEqual([p.address for p in h.contexts[0].tried], ["127.0.0.1:9009", UP])

    def test_trustedRealIp(self):
        """X-Real-IP from a trusted proxy names the client."""
        up = Scripted()
        h = scripted({"default": {UP: up}}, trusted_proxies=["127.0.0.1"])
        h.request("GET", "/", headers=[("Host", "x"), ("X-Real-IP", "198.51.100.4")])
        self.assertEqual(up.requests[0].header_all("X-Real-IP"), ["198.51.100.4"])
        self.assertEqual(h.contexts[0].request.client_addr, "198.51.100.4")


class SlowReaderTests(ProxyTestCase):
    """A client that reads slowly (real sockets: the kernel's buffers)."""

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
        await until(lambda: buffered(self.server_side_of(proxy).transport) > 0,
                    message="the response to wait in the proxy's buffer")
        client.transport.resumeProducing()
        await until(lambda: client.received > size, timeout=10)
        await until(lambda: proxy.logged)
        resp = await self.exchange(proxy, request("GET", "/next"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(up.connections), 1)

    def server_side_of(self, proxy):
        p, = proxy.factory.protocols
        return p


class ConnectionCloseTests(SynchronousTestCase):
    """What follows ``Connection: close`` or an Upgrade is never served."""

    def test_nothingAfterClose(self):
        """A request pipelined after ``Connection: close`` is not forwarded."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send_request("GET", "/a", {"Connection": "close"}, flush=False)
        conn.send_request("GET", "/b")
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, "close")])
        self.assertTrue(conn.closed)
        self.assertEqual([r.uri for r in up.requests], ["/a"])

    def http10(self, first_connection):
        """Two HTTP/1.0 requests pipelined on one connection, the first
        saying ``Connection: first_connection``: ``(harness, client
        connection, upstream)``, all answered."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send(b"GET /a HTTP/1.0\r\nConnection: " + first_connection + b"\r\n\r\n"
                  b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        h.flush()
        return h, conn, up

    def test_http10KeepAliveAndClose(self):
        """An HTTP/1.0 request saying both ``keep-alive`` and ``close`` is
        the connection's last (RFC 9112 9.3: ``close`` wins, as nginx): the
        request pipelined behind it is not forwarded."""
        h, conn, up = self.http10(b"keep-alive, close")
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, "close")])
        self.assertTrue(conn.closed)
        self.assertEqual([r.uri for r in up.requests], ["/a"])
        self.assertEqual([(c.request.path, c.status) for c in h.contexts], [("/a", 200)])

    def test_http10KeepAlive(self):
        """An HTTP/1.0 request saying ``keep-alive`` alone keeps the
        connection: the next request on it is served."""
        h, conn, up = self.http10(b"keep-alive")
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, "keep-alive"), (200, "keep-alive")])
        self.assertFalse(conn.closed)
        self.assertEqual([r.uri for r in up.requests], ["/a", "/b"])

    def deny(self):
        plugin = Answer()
        plugin.fn = lambda ctx: Response(401, "no")
        up = Scripted()
        return scripted({"default": {UP: up}}, plugins=["router", plugin, "least_conn"]), up

    def test_upgradeAnsweredByPlugin(self):
        """An Upgrade request a plugin answers gets that answer only (not a
        second, 501, response), and the connection goes on as HTTP."""
        h, up = self.deny()
        conn = h.connect()
        conn.send_request("GET", "/ws", {"Connection": "Upgrade", "Upgrade": "h2c"},
                          flush=False)
        conn.send_request("GET", "/next")
        self.assertEqual([r.status for r in conn.responses], [401, 401])
        self.assertEqual(conn.received.count(b"HTTP/1.1 "), 2)
        self.assertFalse(conn.closed)
        self.assertEqual(up.requests, [])

    def test_upgradeNotForwarded(self):
        """An Upgrade to a protocol not in ``proxy.upgrade_protocols`` goes
        upstream as a plain request (without the Upgrade fields), and the
        connection goes on as HTTP: nothing switched protocols, so the bytes
        after it are the next request (as nginx; WebSocket upgrades:
        tests.test_upgrade), in the same read or later.  A CONNECT still
        ends the connection after its answer."""
        up = Scripted()
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send_request("GET", "/ws", {"Connection": "Upgrade, HTTP2-Settings",
                                         "Upgrade": "h2c", "HTTP2-Settings": "AA"},
                          flush=False)
        conn.send_request("GET", "/next")
        conn.send_request("GET", "/ws2", {"Connection": "Upgrade", "Upgrade": "h2c"})
        conn.send_request("GET", "/last")
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, None)] * 4)
        self.assertFalse(conn.closed)
        self.assertEqual([r.uri for r in up.requests], ["/ws", "/next", "/ws2", "/last"])
        for forwarded in up.requests:
            self.assertIsNone(forwarded.header("Upgrade"))
            self.assertIsNone(forwarded.header("Connection"))
            self.assertIsNone(forwarded.header("HTTP2-Settings"))
        self.assertEqual(len(h.contexts), 4)
        conn.send(b"CONNECT /tunnel HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /hidden HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(conn.responses[-1].headers.get("Connection"), "close")
        self.assertTrue(conn.closed)
        self.assertEqual([r.uri for r in up.requests][4:], ["/tunnel"])

    def test_nothingAfterSynchronousClose(self):
        """A response made at once (a plugin's) closes the connection while
        the read it came in is being parsed: what follows in that read is
        not answered, not even with a 400."""
        h, up = self.deny()
        conn = h.connect()
        conn.send_request("GET", "/a", {"Connection": "close"}, flush=False)
        conn.send_request("GET", "/b")
        self.assertEqual([(r.status, r.body) for r in conn.responses], [(401, b"no")])
        self.assertTrue(conn.received.endswith(b"no"))
        conn = h.connect()
        conn.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"zz\r\nabc\r\n")
        self.assertEqual([(r.status, r.body) for r in conn.responses], [(401, b"no")])
        self.assertTrue(conn.received.endswith(b"no"))
        self.assertTrue(conn.closed)
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

    async def test_unreadResponseNotKeptForEver(self):
        """A client that neither reads (the response cannot be flushed) nor
        sends: the connection is cut after ``lingering_timeout`` all the
        same (on a fake clock: advanced once the response is stuck in the
        proxy's buffer)."""
        up = self.upstream()
        clock = ClockedReactor()
        proxy = await self.proxy({"default": [up]}, plugins=["router", HOOKS, "least_conn"],
                                 proxy={"lingering_timeout": 0.2}, clock=clock)
        proxy.plugin(HOOKS).fns["access"] = lambda ctx: Response(401, b"n" * self.BODY)
        client = await self.connect(proxy, keep=False)
        client.transport.pauseProducing()
        # a small receive buffer: the kernels cannot take the whole response
        client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.send(_too_big(10 ** 6))
        await until(lambda: proxy.logged)
        server = self.server_side(proxy)
        self.assertGreater(buffered(server.transport), 0)
        clock.advance(0.2 - TICK)
        self.assertEqual(proxy.factory.open_connections, 1)
        clock.advance(TICK)
        await until(lambda: proxy.factory.open_connections == 0,
                    message="the lingering_timeout to cut the connection")
        self.assertLess(client.received, self.BODY)


class LingeringTimerTests(SynchronousTestCase):
    """
    The lingering close's timers, on the fake clock (the connections in
    memory carry FINs as sockets do): after a ``413`` the proxy sends its
    FIN and reads on, until the client closes, is silent for
    ``lingering_timeout`` or ``lingering_time`` has passed.
    """

    def lingering(self, **proxy):
        """A harness, and a client that sent a head announcing a too large
        body and some of it: the proxy answered 413 and lingers."""
        proxy.setdefault("max_body_size", 10)
        h = harness(proxy=proxy)
        conn = h.connect(close_on_eof=False)
        conn.send(_too_big(10 ** 9) + b"y" * 1000)
        [resp] = conn.responses
        self.assertEqual((resp.status, resp.headers.get("Connection")), (413, "close"))
        self.assertEqual((conn.eof, conn.closed), (True, False))
        [server] = h.factory.connections
        self.assertTrue(server.lingering)
        return h, conn, server

    def test_halfClosedStillReading(self):
        """The client's further writes are read (no reset); its close ends
        the connection at once (not after ``lingering_timeout``)."""
        h, conn, server = self.lingering(lingering_timeout=3)
        for _ in range(4):
            conn.send(b"x" * 1024 * 1024)
            h.advance(1)
        self.assertEqual((conn.closed, h.factory.open_connections), (False, 1))
        conn.close()
        self.assertEqual(h.factory.open_connections, 0)
        self.assertFalse(conn.reset)

    def test_silentClientClosedAfterLingeringTimeout(self):
        """A client that stays open and silent is closed after
        ``lingering_timeout``, not before; no timer is left behind."""
        h, conn, server = self.lingering(lingering_timeout=0.25)
        h.advance(0.25 - TICK)
        self.assertEqual(h.factory.open_connections, 1)
        h.advance(TICK)
        self.assertEqual(h.factory.open_connections, 0)
        self.assertIsNone(server.timer)

    def test_lingeringTimeCaps(self):
        """A client that sends for ever (more often than
        ``lingering_timeout``) is closed after ``lingering_time``."""
        h, conn, server = self.lingering(lingering_timeout=0.25, lingering_time=1)
        for _ in range(7):
            h.advance(0.125)
            conn.send(b"z" * 512)
        h.advance(0.125 - TICK)
        self.assertEqual(h.factory.open_connections, 1)    # past lingering_timeout
        h.advance(TICK)
        self.assertEqual(h.factory.open_connections, 0)

    def test_lingeringTimeoutZeroTurnsItOff(self):
        """``lingering_timeout`` 0: the connection closes right after the
        413 (the clock has not moved), as without lingering close."""
        h = harness(proxy={"max_body_size": 10, "lingering_timeout": 0})
        conn = h.connect(close_on_eof=False)
        [server] = h.factory.connections
        conn.send(_too_big(10 ** 6))
        self.assertEqual([r.status for r in conn.responses], [413])
        self.assertTrue(conn.eof)
        self.assertEqual(h.factory.open_connections, 0)
        self.assertFalse(server.lingering)

    def test_completeRequestsCloseAtOnce(self):
        """Keep-alive requests, then one saying ``Connection: close`` read
        whole: the connection closes at once after its response (no
        lingering, however long ``lingering_timeout``)."""
        h = harness(proxy={"lingering_timeout": 5})
        conn = h.connect(close_on_eof=False)
        [server] = h.factory.connections
        conn.request("GET", "/1")
        conn.request("POST", "/2", body=b"abc")
        self.assertEqual(h.factory.open_connections, 1)
        conn.request("GET", "/3", headers={"Connection": "close"})
        self.assertTrue(conn.eof)
        self.assertEqual(h.factory.open_connections, 0)
        self.assertEqual([(r.status, r.headers.get("Connection")) for r in conn.responses],
                         [(200, None), (200, None), (200, "close")])
        self.assertFalse(server.lingering)

    def test_keepaliveLimitsCloseAtOnce(self):
        """``keepalive_requests`` reached after a complete request, and the
        idle ``keepalive_timeout``: closed at once, no lingering."""
        h = harness(proxy={"lingering_timeout": 5, "keepalive_requests": 1})
        conn = h.connect(close_on_eof=False)
        [server] = h.factory.connections
        resp = conn.request("GET", "/1")
        self.assertEqual(resp.headers.get("Connection"), "close")
        self.assertTrue(conn.eof)
        self.assertEqual(h.factory.open_connections, 0)
        self.assertFalse(server.lingering)

        h = harness(proxy={"lingering_timeout": 5, "keepalive_timeout": 0.25})
        conn = h.connect(close_on_eof=False)
        [server] = h.factory.connections
        conn.request("GET", "/1")
        h.advance(0.25)
        self.assertTrue(conn.eof)
        self.assertEqual(h.factory.open_connections, 0)
        self.assertFalse(server.lingering)
