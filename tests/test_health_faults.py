"""
Faults on real sockets (loopback): a backend that dies (the kernel refuses
its connections) and listens again on the same port.  Sockets are the
subject; the loops are bounded and nothing sleeps.  A black-holed peer and
one answering 503 for a while are tested on the fake clock
(``tests.test_health``: ``test_timeoutEjects``,
``test_statusEjectsUntilActiveCheckPasses``).
"""

from twisted.internet import reactor

from tests.helpers import ClockedReactor, ProxyTestCase, request, until


def _tried(proxy, server):
    return sum(1 for ctx in proxy.logged for p in ctx.tried if p.port == server.port)


class FaultTests(ProxyTestCase):

    async def test_backendKilledAndRestarted(self):
        """A backend stops: after one failed attempt no request goes to it,
        none fails; it listens again: the active checks re-admit it (after
        ``rise`` checks, each ``interval`` apart on the gateway's clock, a
        fake one here) and it takes requests again."""
        a = self.upstream()
        # (a port it can listen on again: see closed_port)
        b = self.upstream(port=self.closed_port())
        clock = ClockedReactor()
        proxy = await self.proxy(
            {"default": [a, b]}, plugins=["router", "least_conn", "health_check"],
            health={"active": {"type": "tcp", "interval": 0.05, "timeout": 1, "rise": 2}},
            proxy={"upstream_keepalive": 0}, clock=clock)
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
        peer = proxy.peer(b)
        checks = 0
        while not peer.healthy:
            self.assertLess(checks, 2, "not re-admitted after rise (2) checks")
            clock.advance(0.05)
            await until(lambda: (peer.health.last_check or (None,))[0] == clock.seconds(),
                        message="b's check")
            self.assertTrue(peer.health.last_check[1], peer.health.last_check)
            checks += 1
        served = len(b.requests)
        for _ in range(4):
            self.assertEqual((await self.exchange(proxy, request("GET", "/"))).status, 200)
        self.assertEqual(len(b.requests) - served, 2)
