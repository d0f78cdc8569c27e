"""
The health state of the peers (:mod:`tproxy.health`): passive checks fed by
real requests, ejection and re-admission on the fake clock, every balancer
reading it, and one log line per change.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.testing import Harness, StreamHarness, StreamServer, UNREACHABLE, echo

LIVE = "127.0.0.1:9001"
LIVE2 = "127.0.0.1:9002"


def _dead(n, base=9100):
    return ["127.0.0.1:%d" % (base + i) for i in range(n)]


def _harness(peers, servers, health=None, plugins=("router", "least_conn"), **config):
    config = dict(config, upstreams={"default": {"peers": list(peers)}})
    if health is not None:
        config["health"] = health
    return Harness(config=config, plugins=list(plugins), servers=servers)


def _attempts(h):
    """Every peer tried, in order, over the finished requests."""
    return [p.address for ctx in h.contexts for p in ctx.tried]


def _logged(h, text):
    return [m for m in h.messages() if text in m]


class PassiveTests(SynchronousTestCase):
    """Real requests eject failing peers and the balancers skip them."""

    def test_deadPeersCostOneAttemptEach(self):
        """1 live + 3 refusing peers, 40 requests one after the other: every
        one is 200 and each dead peer is tried once (nginx: max_fails=1)."""
        dead = _dead(3)
        h = _harness([LIVE] + dead, {LIVE: echo})
        statuses = [h.request("GET", "/x").status for _ in range(40)]
        self.assertEqual(statuses, [200] * 40)
        tried = _attempts(h)
        self.assertEqual(sorted(a for a in tried if a != LIVE), sorted(dead))
        for peer in h.registry.group("default").peers.values():
            self.assertEqual(peer.healthy, peer.address == LIVE)

    def test_largeGroupIndexed(self):
        """2 live + 48 dead peers (least_conn's index, not its small-group
        scan): 300 requests all 200, no dead peer tried twice."""
        dead = _dead(48)
        h = _harness([LIVE, LIVE2] + dead, {LIVE: echo, LIVE2: echo},
                     proxy={"tries": 60})
        statuses = [h.request("GET", "/x").status for _ in range(300)]
        self.assertEqual(statuses, [200] * 300)
        tried = [a for a in _attempts(h) if a not in (LIVE, LIVE2)]
        self.assertEqual(sorted(tried), sorted(dead))

    def test_ejectionGrowsAndReadmits(self):
        """After ``fail_timeout`` the peer is tried once more (probation): a
        failure ejects it for twice as long; once it answers it is back."""
        dead = "127.0.0.1:9100"
        h = _harness([LIVE, dead], {LIVE: echo})
        h.request("GET", "/x")
        h.request("GET", "/x")
        peer = h.registry.group("default").peers[("127.0.0.1", 9100)]
        self.assertFalse(peer.healthy)
        self.assertEqual(peer.health.ejected_until, 10)
        h.advance(10)
        self.assertTrue(peer.healthy)
        for _ in range(4):
            self.assertEqual(h.request("GET", "/x").status, 200)
        self.assertFalse(peer.healthy)
        self.assertEqual(peer.health.ejected_until, 10 + 20)
        self.assertEqual(_attempts(h).count(dead), 2)
        h.set_server(dead, echo)   # it comes back
        h.advance(20)
        for _ in range(4):
            self.assertEqual(h.request("GET", "/x").status, 200)
        self.assertTrue(peer.healthy)
        self.assertFalse(peer.health.probation)
        self.assertEqual(peer.health.ejections, 0)
        self.assertGreater(_attempts(h).count(dead), 3)
        self.assertEqual(len(_logged(h, "is up again")), 1)

    def test_oneLinePerChange(self):
        """An outage of many requests logs one ``down`` line per peer, and
        no line per failed attempt."""
        h = _harness([LIVE] + _dead(3), {LIVE: echo})
        for _ in range(50):
            h.request("GET", "/x")
        self.assertEqual(len(_logged(h, "is down")), 3)
        per_request = [e for e in h.events
                       if e.get("log_namespace", "").startswith("tproxy.http")]
        self.assertEqual(per_request, [])
        self.assertEqual(len(h.events), 3)

    def test_allDownTriesAll(self):
        """``when_all_down`` ``try_all`` (the default): a single dead peer
        is still tried (and its ejection is not a 503)."""
        h = _harness(["127.0.0.1:9100"], {})
        for _ in range(3):
            r = h.request("GET", "/x")
            self.assertEqual(r.status, 502)
        self.assertEqual(len(h.contexts[-1].tried), 1)

    def test_allDown503(self):
        """``when_all_down`` ``503``: no healthy peer is a 503 JSON answer."""
        h = _harness(_dead(2), {}, health={"when_all_down": "503"})
        self.assertEqual(h.request("GET", "/x").status, 502)
        r = h.request("GET", "/x")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["error"], "no healthy upstream")
        h.advance(10)  # re-admitted: tried again
        self.assertEqual(h.request("GET", "/x").status, 502)

    def test_passiveOff(self):
        """``max_fails`` 0: nothing is ejected."""
        h = _harness([LIVE, "127.0.0.1:9100"], {LIVE: echo},
                     health={"passive": {"max_fails": 0}})
        for _ in range(6):
            h.request("GET", "/x")
        self.assertGreaterEqual(_attempts(h).count("127.0.0.1:9100"), 3)

    def test_maxFails(self):
        """``max_fails`` 3: ejected at the third failure in a row; a success
        between failures starts the count again."""
        h = _harness(["127.0.0.1:9100"], {}, health={"passive": {"max_fails": 3}},
                     proxy={"upstream_keepalive": 0})
        peer = h.registry.group("default").peers[("127.0.0.1", 9100)]
        h.request("GET", "/x")
        h.request("GET", "/x")
        self.assertTrue(peer.healthy)
        h.set_server("127.0.0.1:9100", echo)
        self.assertEqual(h.request("GET", "/x").status, 200)
        h.set_server("127.0.0.1:9100", None)
        h.request("GET", "/x")
        h.request("GET", "/x")
        self.assertTrue(peer.healthy)
        h.request("GET", "/x")
        self.assertFalse(peer.healthy)

    def test_statusEjects(self):
        """A status of ``health.passive.statuses`` is a failure: a peer
        answering 503 is ejected, the other takes the load; with
        ``http_503`` in ``next_upstream`` the client never sees the 503."""
        calls = []

        def busy(request):
            calls.append(request)
            return 503, {}, b"busy"
        h = _harness([LIVE, LIVE2], {LIVE: echo, LIVE2: busy},
                     health={"passive": {"statuses": [503]}},
                     proxy={"next_upstream": ["error", "timeout", "http_503"]})
        statuses = [h.request("GET", "/x").status for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)
        self.assertEqual(len(calls), 1)
        h.advance(10)
        statuses = [h.request("GET", "/x").status for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)
        self.assertEqual(len(calls), 2)

    def test_statusPassedOnWithoutRetry(self):
        """Without ``http_503`` in ``next_upstream``, the 503 reaches the
        client (and still counts as a failure)."""
        h = _harness([LIVE2], {LIVE2: lambda r: (503, {}, b"busy")},
                     health={"passive": {"statuses": [503]}})
        self.assertEqual(h.request("GET", "/x").status, 503)
        peer = h.registry.group("default").peers[("127.0.0.1", 9002)]
        self.assertFalse(peer.healthy)

    def test_statusEjectsUntilActiveCheckPasses(self):
        """A peer answering 503 is ejected after ``max_fails`` (2) and the
        other takes the load (``http_503``: clients see no 503); once it
        answers 200 again the active checks re-admit it."""
        busy = [True]
        calls = []

        def b(request):
            calls.append(request.path)
            return (503 if busy[0] else 200), {}, b"b"
        h = _harness([LIVE, LIVE2], {LIVE: echo, LIVE2: b},
                     plugins=("router", "least_conn", "health_check"),
                     health={"passive": {"statuses": [503], "max_fails": 2},
                             "active": {"path": "/health", "interval": 1, "fall": 100}},
                     proxy={"next_upstream": ["error", "timeout", "http_503"]})
        peer = h.registry.group("default").peers[("127.0.0.1", 9002)]
        statuses = [h.request("GET", "/x").status for _ in range(20)]
        self.assertEqual(statuses, [200] * 20)
        self.assertFalse(peer.healthy)
        self.assertEqual(calls.count("/x"), 2)
        h.advance(5)
        self.assertFalse(peer.healthy)      # the checks got 503s: still out
        busy[0] = False
        h.advance(2)                        # rise (2) checks answered 200
        self.assertTrue(peer.healthy)
        bodies = [h.request("GET", "/x").body for _ in range(4)]
        self.assertEqual(bodies.count(b"b"), 2)

    def test_timeoutEjects(self):
        """A black-holed peer (connects, never answers): the read timeout
        fails the attempt (a GET goes on to the next peer) and ejects it."""
        from twisted.internet.defer import Deferred
        h = _harness([LIVE, LIVE2], {LIVE: echo, LIVE2: lambda r: Deferred()},
                     timeouts={"read": 5}, health={"passive": {"fail_timeout": 60}})
        results = []
        for _ in range(4):
            p = h.request("GET", "/x", wait=False)
            h.advance(5)
            results.append(p.result().status)
        self.assertEqual(results, [200] * 4)
        self.assertEqual(_attempts(h).count(LIVE2), 1)   # the cost: one attempt
        peer = h.registry.group("default").peers[("127.0.0.1", 9002)]
        self.assertFalse(peer.healthy)
        self.assertEqual(peer.health.last_error[1], "timeout")

    def test_unreachableEjects(self):
        """A connect timeout ejects the peer too."""
        h = _harness([LIVE, LIVE2], {LIVE: echo, LIVE2: UNREACHABLE},
                     timeouts={"connect": 1})
        for _ in range(3):
            p = h.request("GET", "/x", wait=False)
            h.advance(1)
            self.assertEqual(p.result().status, 200)
        self.assertEqual(_attempts(h).count(LIVE2), 1)

    def test_status(self):
        """``/upstream/status`` shows each peer's health."""
        h = _harness([LIVE, "127.0.0.1:9100"], {LIVE: echo},
                     plugins=("registry", "router", "least_conn"))
        h.request("GET", "/x")
        h.request("GET", "/x")
        h.advance(3)
        group = h.admin("GET", "/upstream/status").obj["groups"][0]
        self.assertEqual((group["live"], group["healthy"]), (2, 1))
        by_port = {s["port"]: s["health"] for s in group["servers"]}
        self.assertTrue(by_port[9001]["healthy"])
        self.assertIsNone(by_port[9001]["last_error"])
        down = by_port[9100]
        self.assertFalse(down["healthy"])
        self.assertEqual(down["ejections"], 1)
        self.assertEqual(down["ejected_for"], 7)
        self.assertEqual(down["last_error"]["kind"], "connect")

    def test_removedPeerForgotten(self):
        """A removed peer's re-admission timer is cancelled."""
        h = _harness([LIVE], {LIVE: echo}, plugins=("registry", "router", "least_conn"))
        h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1")
        for _ in range(3):
            h.request("GET", "/x")
        before = len(h.clock.getDelayedCalls())
        self.assertEqual(h.admin("GET", "/upstream/remove?port=9100&host=127.0.0.1").status,
                         200)
        self.assertEqual(len(h.clock.getDelayedCalls()), before - 1)


class BalancersTests(SynchronousTestCase):
    """Pinned routes, the path-prefix router and streams read the state."""

    def test_pathPrefix(self):
        """The path-prefix router prefers a healthy peer of any matching group."""
        dead = "127.0.0.1:9100"
        h = Harness(config={"upstreams": {"api": {"peers": [dead]},
                                          "default": {"peers": [LIVE]}}},
                    plugins=[{"name": "router", "settings": {"mode": "path_prefix"}}],
                    servers={LIVE: echo})
        statuses = [h.request("GET", "/api/x").status for _ in range(10)]
        self.assertEqual(statuses, [200] * 10)
        self.assertEqual(_attempts(h).count(dead), 1)

    def test_pathPrefix503(self):
        """No healthy peer in any matching group, ``when_all_down`` 503."""
        h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9100"]}},
                            "health": {"when_all_down": "503"}},
                    plugins=[{"name": "router", "settings": {"mode": "path_prefix"}}],
                    servers={})
        self.assertEqual(h.request("GET", "/api/x").status, 502)
        self.assertEqual(h.request("GET", "/api/x").status, 503)

    def _pinned(self, when_all_down):
        route = {"name": "r", "group": "default", "peer": "127.0.0.1:9100",
                 "match": {"path": {"mode": "prefix", "value": "/"}}}
        return Harness(config={"upstreams": {"default": {"peers": ["127.0.0.1:9100", LIVE]}},
                               "health": {"when_all_down": when_all_down}},
                       plugins=[{"name": "routes", "settings": {"routes": [route]}},
                                "router", "least_conn"],
                       servers={LIVE: echo})

    def test_pinnedTriesAll(self):
        """A pinned route's unhealthy peer is still its only choice (try_all)."""
        h = self._pinned("try_all")
        self.assertEqual(h.request("GET", "/x").status, 502)
        self.assertEqual(h.request("GET", "/x").status, 502)
        self.assertEqual(_attempts(h), ["127.0.0.1:9100"] * 2)

    def test_pinned503(self):
        """A pinned route's unhealthy peer, ``when_all_down`` 503."""
        h = self._pinned("503")
        self.assertEqual(h.request("GET", "/x").status, 502)
        r = h.request("GET", "/x")
        self.assertEqual((r.status, r.json()["error"]), (503, "no healthy upstream"))

    def test_stream(self):
        """A stream listener's failed connects eject the peer too."""
        server = StreamServer()
        h = StreamHarness(
            config={"upstreams": {"db": {"peers": [LIVE, "127.0.0.1:9100"]}},
                    "streams": [{"listen": "tcp:5432", "group": "db"}]},
            plugins=["least_conn"], servers={LIVE: server})
        for _ in range(5):
            c = h.connect()
            c.send(b"x")
            c.close()
        tried = [p.address for ctx in h.logged for p in ctx.tried]
        self.assertEqual(tried.count("127.0.0.1:9100"), 1)
        self.assertEqual(tried.count(LIVE), 5)


class DrainTests(SynchronousTestCase):
    """A removed peer takes no new request; the ones in flight finish."""

    def test_removedWhileInFlight(self):
        """The request in flight finishes and releases its count; the next
        goes elsewhere; the connection is not pooled."""
        from twisted.internet.defer import Deferred
        answers = []

        def slow(request):
            d = Deferred()
            answers.append(d)
            return d
        h = Harness(config={}, plugins=["registry", "router", "least_conn"],
                    servers={"127.0.0.1:9100": slow, LIVE: echo})
        h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1")
        first = h.request("GET", "/x", wait=False)
        peer = h.registry.group("default").peers[("127.0.0.1", 9100)]
        self.assertEqual(peer.active, 1)
        h.admin("GET", "/upstream/remove?port=9100&host=127.0.0.1")
        h.admin("GET", "/upstream/add?port=9001&host=127.0.0.1")
        self.assertEqual(h.request("GET", "/y").status, 200)
        answers[0].callback((200, {}, b"late"))
        h.flush()
        self.assertEqual(first.result().body, b"late")
        self.assertEqual(peer.active, 0)
        # its connection was not kept for later
        self.assertNotIn(("127.0.0.1", 9100), [p.key for p in h.factory.pool.idle])

    def test_idleClosedOnRemoval(self):
        """Removal and expiry close the peer's idle upstream connections."""
        h = Harness(config={"proxy": {"upstream_keepalive_timeout": 10000}},
                    plugins=["registry", "router", "least_conn"],
                    servers={"127.0.0.1:9100": echo})
        h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1")
        self.assertEqual(h.request("GET", "/x").status, 200)
        peer = h.registry.group("default").peers[("127.0.0.1", 9100)]
        self.assertEqual(len(h.factory.pool.idle[peer]), 1)
        h.admin("GET", "/upstream/remove?port=9100&host=127.0.0.1")
        self.assertNotIn(("127.0.0.1", 9100), [p.key for p in h.factory.pool.idle])
        h.advance(10)   # expiry too
        h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1")
        self.assertEqual(h.request("GET", "/x").status, 200)
        h.advance(h.gateway.config["registry"]["ttl"] + 10)
        self.assertNotIn(("127.0.0.1", 9100), [p.key for p in h.factory.pool.idle])


class AllDownTests(SynchronousTestCase):

    def test_smallGroupTakesTurns(self):
        """The same in a small group (scanned, not indexed)."""
        h = _harness(_dead(3), {})
        h.request("GET", "/x")
        for _ in range(3):
            h.request("GET", "/x")
        self.assertEqual(sorted(p.address for c in h.contexts[1:] for p in c.tried),
                         _dead(3))

    def test_oneAttemptWhenAllDown(self):
        """All 20 peers ejected, ``try_all``: a request makes one attempt
        (the peers take turns), not twenty."""
        h = _harness(_dead(20), {})
        self.assertEqual(h.request("GET", "/x").status, 502)
        self.assertEqual(len(h.contexts[0].tried), 20)   # each failed once
        self.assertEqual(h.request("GET", "/x").status, 502)
        self.assertEqual([p.address for p in h.contexts[1].tried], ["127.0.0.1:9100"])
        h.set_server("127.0.0.1:9101", echo)
        # the next request tries the next peer: it answers and is back at once
        self.assertEqual(h.request("GET", "/x").status, 200)
        self.assertEqual([p.address for p in h.contexts[2].tried], ["127.0.0.1:9101"])
        self.assertTrue(h.registry.group("default").peers[("127.0.0.1", 9101)].healthy)
        for _ in range(5):
            self.assertEqual(h.request("GET", "/x").status, 200)


class MaxConnsTests(SynchronousTestCase):
    """``max_conns``: a full peer is skipped; all full is a 503."""

    def _harness(self, n, max_conns):
        from twisted.internet.defer import Deferred
        self.waiting = []

        def slow(request):
            d = Deferred()
            self.waiting.append(d)
            return d
        peers = [{"host": "127.0.0.1", "port": 9100 + i, "max_conns": max_conns}
                 for i in range(n)]
        return _harness(peers, dict(("127.0.0.1:%d" % (9100 + i), slow) for i in range(n)))

    def _fill(self, n):
        return [self.h.request("GET", "/x", wait=False) for _ in range(n)]

    def _check(self, n):
        self.h = h = self._harness(n, 2)
        pending = self._fill(2 * n)
        peers = list(h.registry.group("default").peers.values())
        self.assertEqual(sorted(p.active for p in peers), [2] * n)
        r = h.request("GET", "/x")
        self.assertEqual((r.status, r.json()["error"]), (503, "all upstreams busy"))
        self.waiting[0].callback((200, {}, b"ok"))
        h.flush()
        self.assertEqual(pending[0].result().status, 200)
        more = h.request("GET", "/x", wait=False)
        self.assertEqual(sorted(p.active for p in peers), [2] * n)
        self.assertEqual(h.request("GET", "/x").status, 503)
        for d in self.waiting[1:]:
            d.callback((200, {}, b"ok"))
        h.flush()
        self.assertEqual([p.result().status for p in pending[1:] + [more]],
                         [200] * (2 * n))
        self.assertEqual(sorted(p.active for p in peers), [0] * n)

    def test_smallGroup(self):
        self._check(3)

    def test_indexedGroup(self):
        self._check(12)

    def test_registered(self):
        h = Harness(config={}, plugins=["registry", "router", "least_conn"], servers={})
        r = h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1&max_conns=2")
        self.assertEqual((r.status, r.obj["max_conns"]), (200, 2))
        r = h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1")
        self.assertEqual(r.obj["max_conns"], 2)   # a heartbeat keeps it
        r = h.admin("GET", "/upstream/add?port=9100&host=127.0.0.1&max_conns=x")
        self.assertEqual((r.status, r.obj["field"]), (400, "max_conns"))


class SlowStartTests(SynchronousTestCase):
    """``health.slow_start``: a registered or re-admitted peer warms up."""

    def _harness(self):
        from twisted.internet.defer import Deferred
        self.waiting = []

        def slow(request):
            d = Deferred()
            self.waiting.append(d)
            return d
        return Harness(config={"upstreams": {"default": {"peers": [LIVE]}},
                               "health": {"slow_start": 10}},
                       plugins=["registry", "router", "least_conn"],
                       servers={LIVE: slow, LIVE2: slow})

    def _shares(self, h, n):
        for _ in range(n):
            h.request("GET", "/x", wait=False)
        peers = h.registry.group("default").peers
        return peers[("127.0.0.1", 9001)].active, peers[("127.0.0.1", 9002)].active

    def test_registered(self):
        """A new registration takes a tenth of its share at first, all of
        it after ``slow_start`` seconds; the static peer never ramps."""
        h = self._harness()
        h.admin("GET", "/upstream/add?port=9002&host=127.0.0.1")
        peer = h.registry.group("default").peers[("127.0.0.1", 9002)]
        self.assertEqual(peer.ramp, 0.1)
        self.assertEqual(self._shares(h, 22), (20, 2))
        h.advance(5)
        self.assertEqual(peer.ramp, 0.5)
        h.advance(5)
        self.assertEqual(peer.ramp, 1.0)
        a, b = self._shares(h, 38)
        self.assertEqual((a, b), (30, 30))
        self.assertEqual(h.registry.group("default").peers[("127.0.0.1", 9001)].ramp, 1.0)
        # the warm-up is over: its timer is gone
        self.assertEqual([c for c in h.clock.getDelayedCalls()
                          if getattr(c.func, "__name__", "") == "_ramp_up"], [])

    def test_readmitted(self):
        """A peer re-admitted after an ejection warms up again."""
        h = Harness(config={"upstreams": {"default": {"peers": [LIVE, LIVE2]}},
                            "health": {"slow_start": 10}},
                    plugins=["router", "least_conn"], servers={LIVE: echo})
        h.request("GET", "/x")
        h.request("GET", "/x")
        peer = h.registry.group("default").peers[("127.0.0.1", 9002)]
        self.assertFalse(peer.healthy)
        self.assertEqual(peer.ramp, 1.0)
        h.advance(10)
        self.assertTrue(peer.healthy)
        self.assertEqual(peer.ramp, 0.1)


class ApiTests(SynchronousTestCase):
    """The public API a third-party balancer or transport uses."""

    def test_interfaces(self):
        from zope.interface.verify import verifyObject

        from tproxy.builtins.least_conn import Plugin
        from tproxy.health import IHealth, IHealthListener
        h = _harness([LIVE], {LIVE: echo})
        self.assertTrue(verifyObject(IHealth, h.gateway.health))
        self.assertTrue(verifyObject(IHealthListener, Plugin({})))

    def test_listenerAndReports(self):
        """A listener hears each change once; failed/succeeded drive them."""
        from zope.interface import implementer

        from tproxy.health import IHealthListener

        @implementer(IHealthListener)
        class Listener(object):
            def __init__(self):
                self.changes = []

            def peer_health_changed(self, peer):
                self.changes.append((peer.address, peer.healthy))
        h = _harness([LIVE, LIVE2], {LIVE: echo},
                     health={"passive": {"max_fails": 2}})
        health = h.gateway.health
        listener = Listener()
        health.subscribe(listener)
        peer = h.registry.group("default").peers[("127.0.0.1", 9002)]
        health.failed(peer, "connect", "refused")
        self.assertEqual(listener.changes, [])
        health.failed(peer, "connect", "refused")
        health.failed(peer, "connect", "refused")   # already ejected: no change
        self.assertEqual(listener.changes, [(LIVE2, False)])
        self.assertEqual(health.as_dict(peer)["fails"], 3)
        h.advance(10)
        self.assertEqual(listener.changes, [(LIVE2, False), (LIVE2, True)])
        self.assertTrue(health.as_dict(peer)["probation"])
        health.succeeded(peer)
        self.assertFalse(health.as_dict(peer)["probation"])
        self.assertEqual(len(listener.changes), 2)


class RelayTests(SynchronousTestCase):
    """How a box of workers shares the active checks: the parent's results
    reach the workers' states (``observe_checks``), and a new worker starts
    from the parent's (``restore_checks``; ``tproxy.supervisor``)."""

    def test_relayed(self):
        from tproxy.box_admin import _checks_state
        parent = _harness([LIVE, LIVE2], {LIVE: echo})
        worker = _harness([LIVE, LIVE2], {LIVE: echo})

        def peer(h, port):
            return h.registry.group("default").peers[("127.0.0.1", port)]

        def relay(p, ok, detail, rise, fall):
            worker.gateway.health.check_result(peer(worker, p.port), ok, detail, rise, fall)
        parent.gateway.health.observe_checks(relay)
        parent.gateway.health.check_result(peer(parent, 9002), False, "refused", fall=2)
        self.assertTrue(peer(worker, 9002).healthy)
        parent.gateway.health.check_result(peer(parent, 9002), False, "refused", fall=2)
        self.assertFalse(peer(parent, 9002).healthy)
        self.assertFalse(peer(worker, 9002).healthy)
        self.assertEqual(worker.gateway.health.as_dict(peer(worker, 9002))["last_check"]["detail"],
                         "refused")
        # a worker started now takes the parent's state: down, and one
        # pass (of rise=2) made
        parent.gateway.health.check_result(peer(parent, 9002), True, None, rise=2)
        state = _checks_state(parent.registry)
        self.assertEqual([row[:5] for row in state], [["default", "127.0.0.1", 9002, 1, True]])
        late = _harness([LIVE, LIVE2], {LIVE: echo})
        for group, host, port, check_ok, down, last in state:
            late.gateway.health.restore_checks(peer(late, port), check_ok, down, last)
        self.assertFalse(peer(late, 9002).healthy)
        self.assertTrue(peer(late, 9001).healthy)
        late.gateway.health.check_result(peer(late, 9002), True, None, rise=2)
        self.assertTrue(peer(late, 9002).healthy)


    def test_ejectionRestored(self):
        """A reload's worker goes on from the passive ejection of the worker
        it replaces (``restore_ejection``): ejected for the rest of the
        time, then on probation, and a failure then ejects it for twice as
        long as the last ejection, as in the worker before."""
        old = _harness([LIVE, LIVE2], {LIVE: echo})
        new = _harness([LIVE, LIVE2], {LIVE: echo})

        def peer(h):
            return h.registry.group("default").peers[("127.0.0.1", 9002)]
        old.gateway.health.failed(peer(old), "connect", "refused")
        old.advance(10)                    # probation
        old.gateway.health.failed(peer(old), "connect", "refused")   # 20 s
        old.advance(5)
        state = old.gateway.health.as_dict(peer(old))
        self.assertEqual(state["ejected_for"], 15)
        new.gateway.health.restore_ejection(peer(new), state, peer(old).health.ejections)
        self.assertFalse(peer(new).healthy)
        restored = new.gateway.health.as_dict(peer(new))
        self.assertEqual(restored, state)
        self.assertEqual([new.request("GET", "/x").status for _ in range(4)], [200] * 4)
        self.assertEqual(peer(new).total, 0)
        new.advance(15)
        self.assertTrue(peer(new).healthy)
        new.gateway.health.failed(peer(new), "connect", "refused")
        self.assertEqual(new.gateway.health.as_dict(peer(new))["ejected_for"], 40)

    def test_relayedChangesLoggedOnce(self):
        """The parent logs each change of state the active checks make (at
        warn, info); a worker that takes the results (``relayed``) says
        them at debug only: a box of N workers logs a change once, not
        N + 1 times."""
        from tests.helpers import capture_log
        parent = _harness([LIVE, LIVE2], {LIVE: echo})
        worker = _harness([LIVE, LIVE2], {LIVE: echo})
        worker.gateway.health.relayed = True
        lines = {}
        for h in (parent, worker):
            events = capture_log(self)
            p = h.registry.group("default").peers[("127.0.0.1", 9002)]
            h.gateway.health.check_result(p, False, "refused", fall=1)
            h.gateway.health.check_result(p, True, None, rise=1)
            h.gateway.health.check_result(p, False, "refused", fall=1)
            h.gateway.health.forget_checks(p)
            self.assertTrue(p.healthy)
            lines[h] = [(e["log_level"].name, e["peer"]) for e in events
                        if e.get("log_namespace") == "tproxy.health"]
        self.assertEqual(lines[parent], [("warn", LIVE2), ("info", LIVE2), ("warn", LIVE2),
                                         ("info", LIVE2)])
        self.assertEqual(lines[worker], [("debug", LIVE2)] * 4)


class PathPrefixBusyTests(SynchronousTestCase):

    def test_allBusy(self):
        """The path-prefix router answers ``all upstreams busy`` too."""
        from twisted.internet.defer import Deferred
        h = Harness(config={"upstreams": {"default": {"peers": [
            {"host": "127.0.0.1", "port": 9001, "max_conns": 1}]}}},
            plugins=[{"name": "router", "settings": {"mode": "path_prefix"}}],
            servers={LIVE: lambda r: Deferred()})
        h.request("GET", "/a", wait=False)
        r = h.request("GET", "/b")
        self.assertEqual((r.status, r.json()["error"]), (503, "all upstreams busy"))
