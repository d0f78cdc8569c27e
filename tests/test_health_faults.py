"""
Faults on real sockets (loopback): a backend that dies and comes back, one
that is black-holed, one that answers 503 for a while.  Sockets are the
subject; the loops are bounded and nothing sleeps.
"""

from twisted.internet import reactor

from tests.helpers import ProxyTestCase, request, until


def _tried(proxy, server):
    return sum(1 for ctx in proxy.logged for p in ctx.tried if p.port == server.port)


class FaultTests(ProxyTestCase):

    async def test_backendKilledAndRestarted(self):
        """A backend stops: after one failed attempt no request goes to it,
        none fails; it listens again: the active checks re-admit it (within
        ``interval`` x ``rise``) and it takes requests again."""
        a = self.upstream()
        b = self.upstream()
        proxy = await self.proxy(
            {"default": [a, b]}, plugins=["router", "least_conn", "health_check"],
            health={"active": {"type": "tcp", "interval": 0.05, "timeout": 1}},
            proxy={"upstream_keepalive": 0})
        for _ in range(4):
            self.assertEqual((await self.exchange(proxy, request("GET", "/"))).status, 200)
        port = b.port
        await b.close()
        before = _tried(proxy, b)
        statuses = [(await self.exchange(proxy, request("GET", "/"))).status
                    for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)
        self.assertEqual(_tried(proxy, b) - before, 1)
        self.assertFalse(proxy.peer(b).healthy)
        # it comes back on the same port
        b.listener = reactor.listenTCP(port, b, interface="127.0.0.1")
        await until(lambda: proxy.peer(b).healthy, 5.0, message="b re-admitted")
        served = len(b.requests)
        for _ in range(4):
            self.assertEqual((await self.exchange(proxy, request("GET", "/"))).status, 200)
        self.assertEqual(len(b.requests) - served, 2)

    async def test_blackHole(self):
        """A backend that accepts and never answers: the read timeout bounds
        the cost (the GET goes on to the other peer), then it is ejected."""
        a = self.upstream()
        hole = self.upstream(lambda conn, req: None)
        proxy = await self.proxy({"default": [hole, a]}, timeouts={"read": 0.3})
        statuses = [(await self.exchange(proxy, request("GET", "/"))).status
                    for _ in range(10)]
        self.assertEqual(statuses, [200] * 10)
        self.assertEqual(_tried(proxy, hole), 1)
        self.assertEqual(proxy.peer(hole).health.last_error[1], "timeout")

    async def test_503ForAWhile(self):
        """A backend answering 503 is ejected after ``max_fails`` (2) and the
        other takes the load (``http_503``: clients see no 503); once it
        answers 200 again the active checks re-admit it."""
        busy = [True]

        def handler(conn, req):
            conn.respond(503 if busy[0] else 200, b"b")
        a = self.upstream()
        b = self.upstream(handler)
        proxy = await self.proxy(
            {"default": [a, b]}, plugins=["router", "least_conn", "health_check"],
            health={"passive": {"statuses": [503], "max_fails": 2},
                    "active": {"path": "/health", "interval": 0.05, "fall": 100}},
            proxy={"next_upstream": ["error", "timeout", "http_503"]})
        statuses = [(await self.exchange(proxy, request("GET", "/x"))).status
                    for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)
        self.assertFalse(proxy.peer(b).healthy)
        self.assertEqual(len([r for r in b.requests if r.url == b"/x"]), 2)
        busy[0] = False
        await until(lambda: proxy.peer(b).healthy, 5.0, message="b re-admitted")
        bodies = [(await self.exchange(proxy, request("GET", "/x"))).body
                  for _ in range(4)]
        self.assertEqual(bodies.count(b"b"), 2)
