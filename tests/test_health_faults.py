"""
Faults, passive and active health checks together, on the fake clock: a
backend that dies and comes back, one that answers 503 for a while.  (The
black-holed backend is ``tests.test_health.PassiveTests.test_timeoutEjects``.)
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.testing import Harness, echo

A = "127.0.0.1:9001"
B = "127.0.0.1:9002"
PLUGINS = ["router", "least_conn", "health_check"]


def harness(servers, **config):
    config["upstreams"] = {"default": {"peers": [A, B]}}
    return Harness(config=config, plugins=PLUGINS, servers=servers)


def tried(h, address):
    """How many attempts went to ``address``, over the finished requests."""
    return sum(1 for ctx in h.contexts for p in ctx.tried if p.address == address)


def peer(h, address):
    [found] = [p for p in h.registry.group("default").peers.values() if p.address == address]
    return found


class FaultTests(SynchronousTestCase):

    def test_backendKilledAndRestarted(self):
        """A backend stops: after one failed attempt no request goes to it,
        none fails; it listens again: the active checks re-admit it (within
        ``interval`` x ``rise``) and it takes requests again."""
        served = []

        def b(request):
            served.append(request)
            return echo(request)
        h = harness({A: echo, B: b},
                    health={"active": {"type": "tcp", "interval": 1, "timeout": 1}},
                    proxy={"upstream_keepalive": 0})
        for _ in range(4):
            self.assertEqual(h.request("GET", "/").status, 200)
        self.assertEqual(len(served), 2)
        h.set_server(B, None)
        before = tried(h, B)
        statuses = [h.request("GET", "/").status for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)
        self.assertEqual(tried(h, B) - before, 1)
        self.assertFalse(peer(h, B).healthy)
        h.advance(3)
        self.assertFalse(peer(h, B).healthy)
        # it comes back
        h.set_server(B, b)
        h.advance(2.5)      # interval x rise, well before passive fail_timeout (10)
        self.assertTrue(peer(h, B).healthy)
        for _ in range(4):
            self.assertEqual(h.request("GET", "/").status, 200)
        self.assertEqual(len(served), 4)

    def test_503ForAWhile(self):
        """A backend answering 503 is ejected after ``max_fails`` (2) and the
        other takes the load (``http_503``: clients see no 503); once it
        answers 200 again the active checks re-admit it."""
        busy = [True]
        calls = []

        def b(request):
            if request.path == "/x":
                calls.append(request)
            return (503 if busy[0] else 200), {}, b"b"
        h = harness({A: echo, B: b},
                    health={"passive": {"statuses": [503], "max_fails": 2},
                            "active": {"path": "/health", "interval": 1, "fall": 100}},
                    proxy={"next_upstream": ["error", "timeout", "http_503"]})
        statuses = [h.request("GET", "/x").status for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)
        self.assertFalse(peer(h, B).healthy)
        self.assertEqual(len(calls), 2)
        h.advance(3)
        self.assertFalse(peer(h, B).healthy)      # still 503 to the checks
        busy[0] = False
        h.advance(2.5)      # interval x rise, before passive fail_timeout (10)
        self.assertTrue(peer(h, B).healthy)
        bodies = [h.request("GET", "/x").body for _ in range(4)]
        self.assertEqual(bodies.count(b"b"), 2)
