"""
The ``health_check`` built-in: active checks on the fake clock, reported to
the health state (:mod:`tproxy.health`).
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.testing import Harness, UNREACHABLE, echo

A = "127.0.0.1:9001"
B = "127.0.0.1:9002"
PLUGINS = ["registry", "router", "least_conn", "health_check"]


def _peer(h, address, group="default"):
    host, port = address.rsplit(":", 1)
    return h.registry.group(group).peers[(host, int(port))]


class HttpCheckTests(SynchronousTestCase):

    def setUp(self):
        self.healthy = True

        def b(request):
            if request.path == "/healthz":
                return (200 if self.healthy else 500), {}, b""
            return 200, {}, b"B"
        self.h = Harness(
            config={"upstreams": {"default": {
                "peers": [A, B],
                "health_check": {"path": "/healthz", "interval": 5, "timeout": 1}}}},
            plugins=PLUGINS, servers={A: echo, B: b})

    def test_fallAndRise(self):
        """``fall`` (3) failing checks in a row: unhealthy, requests go to A;
        ``rise`` (2) passing ones: healthy again."""
        h = self.h
        peer = _peer(h, B)
        h.advance(5)
        self.assertTrue(peer.healthy)
        self.assertEqual(peer.health.last_check[1:], (True, "status 200"))
        self.healthy = False
        h.advance(10)
        self.assertTrue(peer.healthy)   # two failures
        h.advance(5)
        self.assertFalse(peer.healthy)  # three
        before = len([r for r in h.upstream_requests if r.path == "/x"])
        for _ in range(6):
            self.assertEqual(h.request("GET", "/x").body[:1], b"{")   # echo: A
        self.assertEqual(len([r for r in h.upstream_requests if r.path == "/x"]),
                         before + 6)
        self.assertEqual(len([m for m in h.messages() if "is down" in m]), 1)
        self.healthy = True
        h.advance(5)
        self.assertFalse(peer.healthy)
        h.advance(5)
        self.assertTrue(peer.healthy)
        self.assertEqual(len([m for m in h.messages() if "is up" in m]), 1)

    def test_requestsSent(self):
        """The check is ``GET /healthz`` with the peer as Host, and the
        status page shows its result."""
        h = self.h
        h.advance(5)
        checks = [r for r in h.upstream_requests if r.path == "/healthz"]
        self.assertEqual(len(checks), 2)
        self.assertEqual(sorted(r.headers.get("host") for r in checks), [A, B])
        self.assertEqual(sorted(r.server for r in checks), [A, B])
        status = h.admin("GET", "/upstream/status").obj
        last = status["groups"][0]["servers"][1]["health"]["last_check"]
        self.assertEqual((last["ok"], last["detail"]), (True, "status 200"))

    def test_stop(self):
        """Stopping the gateway stops the checks."""
        h = self.h
        h.stop()
        self.assertEqual(h.clock.getDelayedCalls(), [])


class TcpCheckTests(SynchronousTestCase):

    def _harness(self, servers, peers=(A, B), **check):
        spec = dict({"type": "tcp", "interval": 2, "timeout": 1}, **check)
        return Harness(config={"upstreams": {"default": {"peers": list(peers),
                                                         "health_check": spec}}},
                       plugins=PLUGINS, servers=servers)

    def test_refusedThenBack(self):
        """A refusing peer is down after three checks; back after two."""
        h = self._harness({A: echo})
        peer = _peer(h, B)
        h.advance(6)
        self.assertFalse(peer.healthy)
        self.assertFalse(peer.health.probation)
        h.set_server(B, echo)
        h.advance(4)
        self.assertTrue(peer.healthy)

    def test_unreachableTimesOut(self):
        """A peer whose connects hang: each check fails after ``timeout``."""
        h = self._harness({A: echo, B: UNREACHABLE})
        h.advance(10)
        peer = _peer(h, B)
        self.assertFalse(peer.healthy)
        self.assertIn("timed out", peer.health.last_check[2])

    def test_concurrency(self):
        """At most ``concurrency`` checks of a configuration run at once."""
        peers = ["127.0.0.1:%d" % (9100 + i) for i in range(10)]
        h = self._harness(dict((p, UNREACHABLE) for p in peers), peers=peers,
                          concurrency=3, interval=0.5, timeout=5)
        h.advance(0.5)
        self.assertEqual(len(h.clock.tcpClients) + sum(
            1 for c in h.clock.getDelayedCalls()
            if getattr(c.func, "__name__", "") == "clientConnectionFailed"), 3)

    def test_spread(self):
        """Peers registered together are first checked at different times
        within the interval."""
        h = Harness(config={"health": {"active": {"type": "tcp", "interval": 10}}},
                    plugins=PLUGINS, servers={})
        for port in range(9100, 9150):
            h.admin("GET", "/upstream/add?port=%d&host=127.0.0.1" % port)
        first = sorted(set(round(c.getTime(), 3) for c in h.clock.getDelayedCalls()
                           if getattr(c.func, "__name__", "") == "_run"))
        self.assertEqual(len(first), 1)   # one timer, armed for the earliest
        plugin = h.gateway.plugins.get_plugin("health_check")
        times = sorted(t for t, _, _ in plugin._due)
        self.assertEqual(len(times), 50)
        self.assertGreater(len(set(round(t, 2) for t in times)), 40)
        self.assertTrue(all(0 <= t < 10 for t in times))

    def test_removedNotChecked(self):
        """A removed peer is no longer checked."""
        h = Harness(config={"health": {"active": {"type": "tcp", "interval": 1}}},
                    plugins=PLUGINS, servers={})
        h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1")
        h.advance(1)
        peer = h.registry.group("default").peers[("127.0.0.1", 9100)]
        self.assertIsNotNone(peer.health.last_check)
        h.admin("GET", "/upstream/remove?port=9100&host=127.0.0.1")
        checked = peer.health.last_check
        h.advance(5)
        self.assertIs(peer.health.last_check, checked)


class ReloadTests(SynchronousTestCase):
    """
    A reload that ends a peer's active checks ends their verdict too: no
    check would ever bring the peer back (nginx forgets health on a reload).
    """

    CHECK = {"type": "tcp", "interval": 2, "timeout": 1}

    def _down(self, check=None):
        h = Harness(config={"upstreams": {"default": {
            "peers": [A, B], "health_check": check or self.CHECK}}},
            plugins=PLUGINS, servers={A: echo})
        h.advance(6)
        self.assertFalse(_peer(h, B).healthy)
        return h

    def test_pluginRemoved(self):
        """Without the ``health_check`` plugin any more, a peer the checks
        held down is healthy again (and says why, once)."""
        h = self._down()
        h.reload(config={"upstreams": {"default": {"peers": [A, B]}}},
                 plugins=["registry", "router", "least_conn"])
        h.advance(10)
        peer = _peer(h, B)
        self.assertTrue(peer.healthy)
        self.assertFalse(peer.health.active_down)
        self.assertEqual(len([m for m in h.messages() if "no longer checked" in m]), 1)
        status = h.admin("GET", "/upstream/status").obj
        self.assertEqual(status["groups"][0]["healthy"], 2)

    def test_groupCheckRemoved(self):
        """The plugin kept, the group's ``health_check`` removed: the same."""
        h = self._down()
        h.reload(config={"upstreams": {"default": {"peers": [A, B]}}}, plugins=PLUGINS)
        h.advance(10)
        self.assertTrue(_peer(h, B).healthy)

    def test_checksKept(self):
        """The checks kept (or changed) across a reload: their verdict
        stands, the peer stays down without a passing check."""
        h = self._down()
        h.reload(config={"upstreams": {"default": {
            "peers": [A, B], "health_check": dict(self.CHECK, interval=3)}}},
            plugins=PLUGINS)
        for _ in range(10):
            h.advance(1)
            self.assertFalse(_peer(h, B).healthy)
        self.assertEqual([m for m in h.messages() if "no longer checked" in m], [])

    def test_passiveEjectionStands(self):
        """A peer also ejected by passive checks stays out until its
        ejection ends."""
        h = Harness(config={"upstreams": {"default": {
            "peers": [A, B], "health_check": dict(self.CHECK, interval=1)}},
            "health": {"passive": {"fail_timeout": 30}}},
            plugins=PLUGINS, servers={A: echo})
        h.advance(3)
        peer = _peer(h, B)
        self.assertTrue(peer.health.active_down)
        h.gateway.health.failed(peer, "connect", "refused")
        self.assertGreater(peer.health.ejected_until, h.clock.seconds())
        h.reload(config={"upstreams": {"default": {"peers": [A, B]}},
                         "health": {"passive": {"fail_timeout": 30}}},
                 plugins=["registry", "router", "least_conn"])
        h.advance(10)
        self.assertFalse(peer.healthy)
        self.assertFalse(peer.health.active_down)
        h.advance(30)
        self.assertTrue(peer.healthy)

    def test_stopSaysNothing(self):
        """tproxy stopping is no end of the checks worth a line per peer."""
        h = self._down()
        h.stop()
        self.assertEqual([m for m in h.messages() if "no longer checked" in m], [])


class WorkerRelayTests(SynchronousTestCase):
    """
    With ``"workers"`` the parent relays its checks' results to the workers
    (:meth:`tproxy.worker.Worker.control_health`), and the end of a peer's
    checks (``ok`` ``None``) too: the worker forgets their verdict.
    """

    def test_checksEnded(self):
        from tproxy.worker import Worker
        h = Harness(config={"upstreams": {"default": {"peers": [A, B]}}},
                    plugins=["registry", "router", "least_conn"], servers={A: echo, B: echo})
        worker = Worker(h.clock)
        worker.service = h   # (what the worker reads of its service: .gateway)
        peer = _peer(h, B)
        worker.control_health({"checks": [["default", "127.0.0.1", 9002, False,
                                           "status 500", 2, 1]]})
        self.assertFalse(peer.healthy)
        worker.control_health({"checks": [["default", "127.0.0.1", 9002, None, None, 0, 0]]})
        self.assertTrue(peer.healthy)
        self.assertFalse(peer.health.active_down)

    def test_parentRelaysTheEnd(self):
        """The parent's health state tells its check observers (the relay to
        the workers) when a reload ends a peer's checks."""
        h = Harness(config={"upstreams": {"default": {
            "peers": [A, B], "health_check": ReloadTests.CHECK}}},
            plugins=PLUGINS, servers={A: echo})
        seen = []
        h.gateway.health.observe_checks(lambda peer, ok, *rest: seen.append((peer.port, ok)))
        h.advance(6)
        self.assertIn((9002, False), seen)
        del seen[:]
        h.reload(config={"upstreams": {"default": {"peers": [A, B]}}},
                 plugins=["registry", "router", "least_conn"])
        h.advance(10)
        self.assertEqual(sorted(seen), [(9001, None), (9002, None)])


class SupersededTests(SynchronousTestCase):
    """
    A reload's previous configuration lives on while a request of it is in
    flight (a long download, a stream session: hours): its checks do not.
    Within an interval of the switch they stop, and their verdicts end
    unless the new configuration checks the peer.
    """

    C = "127.0.0.1:9003"

    def _harness(self):
        from twisted.internet.defer import Deferred
        self.held = []

        def slow(request):
            d = Deferred()
            self.held.append(d)
            return d
        config = {"upstreams": {
            "default": {"peers": [A, B], "health_check": dict(ReloadTests.CHECK, interval=1)},
            "slow": {"peers": [self.C]}}}
        h = Harness(config=config, plugins=PLUGINS, servers={A: echo, self.C: slow})
        h.advance(3)
        self.assertFalse(_peer(h, B).healthy)
        self.pending = h.request("GET", "/slow/x", wait=False)
        return h, config

    def test_checksRemoved(self):
        h, config = self._harness()
        config["upstreams"]["default"] = {"peers": [A, B]}
        self.assertEqual(h.reload(config=config, plugins=PLUGINS), 1)
        h.advance(1.5)
        self.assertTrue(_peer(h, B).healthy, "no check holds it down any more")
        probes = len(h.clock.tcpClients)
        h.advance(10)
        self.assertEqual(len(h.clock.tcpClients), probes, "the old checks stopped")
        self.assertEqual(len(self.held), 1)   # (the old configuration's request goes on)

    def test_checksChanged(self):
        """The new checks alone decide: the old ones' results stop."""
        h, config = self._harness()
        config["upstreams"]["default"]["health_check"] = dict(ReloadTests.CHECK, interval=5)
        h.reload(config=config, plugins=PLUGINS)
        h.set_server(B, echo)
        before = len(h.clock.tcpClients)
        h.advance(1.5)
        self.assertFalse(_peer(h, B).healthy)   # the new checks need rise (2) passes
        h.advance(4)
        self.assertLessEqual(len(h.clock.tcpClients) - before, 2)   # (one per peer)
        self.assertFalse(_peer(h, B).healthy)
        h.advance(5)
        self.assertTrue(_peer(h, B).healthy)
