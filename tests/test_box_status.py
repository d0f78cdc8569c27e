"""
The box's health of a server with workers (:mod:`tproxy.box_status`): the
workers' views combined, on plain inputs (the processes themselves:
``tests.processes.test_workers``).
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tproxy.box_status import STATUS_PAGE, add_counts, box_health
from tproxy.registry import MemoryRegistry
from tproxy.testing import Harness, echo
from tproxy.worker import Worker


class _Handle(object):
    """A worker's handle, as much of it as the status reads."""

    def __init__(self, index):
        self.index = index
        self.pid = 4242 + index

    def as_dict(self):
        return {"worker": self.index, "pid": self.pid}


W0, W1 = _Handle(0), _Handle(1)


class BoxHealthTests(TestCase):
    """A server is down for the box when every worker holds it down."""

    def test_combinations(self):
        up, down = (0, 3, True), (0, 1, False)
        self.assertEqual(box_health([W0, W1], {W0: down, W1: down}), (False, 2))
        self.assertEqual(box_health([W0, W1], {W0: down, W1: up}), (True, 1))
        self.assertEqual(box_health([W0, W1], {W0: down}), (True, 1),
                         "a worker that does not report the server holds it healthy")
        self.assertEqual(box_health([W0, W1], {}), (True, 0))
        self.assertEqual(box_health([W0], {W0: down, W1: down}), (False, 1),
                         "only the workers that answered count")
        self.assertEqual(box_health([], {W0: down}), (None, 0),
                         "no worker answered: the parent's view stands")


def _status(*servers):
    """The parent's ``/upstream/status`` answer: its own view says every
    server is healthy (it sends no request)."""
    return 200, {"groups": [{"prefix": "api", "live": len(servers), "healthy": len(servers),
                             "total": len(servers), "routable": True, "servers": [
                                 {"host": "127.0.0.1", "port": port, "live": live,
                                  "conn_count": 0, "total_requests": 0,
                                  "health": {"healthy": True, "ejections": 0}}
                                 for port, live in servers]}],
                 "total_groups": 1, "total_servers": len(servers)}


class UpstreamStatusTests(TestCase):
    """``/upstream/status`` with workers tells the workers' health."""

    def test_downEverywhere(self):
        per = {("api", "127.0.0.1", 9001): {W0: (0, 1, False), W1: (0, 2, False)},
               ("api", "127.0.0.1", 9002): {W0: (1, 5, False), W1: (0, 7, True)},
               ("api", "127.0.0.1", 9003): {W0: (0, 4, True)}}
        status, obj = add_counts(_status((9001, True), (9002, True), (9003, True)),
                                 [W0, W1], per)
        self.assertEqual(status, 200)
        group = obj["groups"][0]
        healths = {s["port"]: s["health"] for s in group["servers"]}
        self.assertEqual(healths[9001], {"healthy": False, "ejections": 0,
                                         "down_in_workers": 2, "workers": 2})
        self.assertEqual(healths[9002], {"healthy": True, "ejections": 0,
                                         "down_in_workers": 1, "workers": 2})
        self.assertEqual(healths[9003], {"healthy": True, "ejections": 0,
                                         "down_in_workers": 0, "workers": 2})
        self.assertEqual((group["healthy"], group["down_in_some_workers"]), (2, 1))
        self.assertEqual([r["healthy"] for r in group["servers"][0]["workers"]],
                         [False, False], "each worker's own view beside")
        self.assertEqual(group["servers"][1]["conn_count"], 1)

    def test_workersHealth(self):
        """A worker that holds a server down sends its health object: its
        row shows it, and the newest ``last_error`` is the server's."""
        old = {"time": 5.0, "kind": "timeout", "detail": "timed out"}
        new = {"time": 9.0, "kind": "connect", "detail": "refused"}
        per = {("api", "127.0.0.1", 9001): {
            W0: (0, 1, False, {"healthy": False, "ejected_for": 8.0, "last_error": old}),
            W1: (0, 1, False, {"healthy": False, "ejected_for": 9.5, "last_error": new})}}
        answer = _status((9001, True))
        answer[1]["groups"][0]["servers"][0]["health"]["last_error"] = {
            "time": 7.0, "kind": "status", "detail": "the parent's"}
        server = add_counts(answer, [W0, W1], per)[1]["groups"][0]["servers"][0]
        self.assertEqual(server["health"]["last_error"], new)
        self.assertEqual([r["health"]["ejected_for"] for r in server["workers"]], [8.0, 9.5])
        per[("api", "127.0.0.1", 9001)] = {W0: (0, 1, False, {"last_error": old})}
        server = add_counts(_status((9001, True)), [W0, W1], per)[1]["groups"][0]["servers"][0]
        self.assertEqual(server["health"]["last_error"], old, "the parent had none")
        self.assertNotIn("health", server["workers"][1], "a worker that holds it up")

    def test_workersFigures(self):
        """The server's ``ejections`` and ``total_fails`` add up the
        parent's and the workers'; ``fails`` and ``ejected_for`` are the
        largest (the parent's active checks count too)."""
        per = {("api", "127.0.0.1", 9001): {
            W0: (0, 4, False, {"healthy": False, "ejections": 2, "total_fails": 3,
                               "fails": 1, "ejected_for": 8.0}),
            W1: (0, 9, True, {"healthy": True, "ejections": 1, "total_fails": 4,
                              "fails": 0, "ejected_for": 0})}}
        answer = _status((9001, True))
        answer[1]["groups"][0]["servers"][0]["health"].update(
            {"ejections": 1, "total_fails": 0, "fails": 0, "ejected_for": 0})
        server = add_counts(answer, [W0, W1], per)[1]["groups"][0]["servers"][0]
        self.assertEqual(server["health"], {
            "healthy": True, "down_in_workers": 1, "workers": 2,
            "ejections": 4, "total_fails": 7, "fails": 1, "ejected_for": 8.0})
        self.assertEqual([r["health"]["ejections"] for r in server["workers"]], [2, 1])

    def test_notLive(self):
        """An expired server counts in neither of the group's figures."""
        per = {("api", "127.0.0.1", 9001): {W0: (0, 1, False)}}
        obj = add_counts(_status((9001, False), (9002, True)), [W0, W1], per)[1]
        self.assertEqual((obj["groups"][0]["healthy"],
                          obj["groups"][0]["down_in_some_workers"]), (1, 0))

    def test_noWorkerAnswered(self):
        """The parent's view stands, and the answer has no worker figures."""
        status, obj = _status((9001, True))
        obj["groups"][0]["servers"][0]["health"]["healthy"] = False
        obj["groups"][0]["healthy"] = 0
        obj = add_counts((status, obj), [], {})[1]
        self.assertEqual(obj["groups"][0]["servers"][0]["health"],
                         {"healthy": False, "ejections": 0})
        self.assertEqual(obj["groups"][0]["healthy"], 0)
        self.assertNotIn("down_in_some_workers", obj["groups"][0])
        self.assertEqual(obj["workers"], [])


class StatusPageTests(TestCase):
    """The status page's group and peer pages tell the same."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.registry = MemoryRegistry(self.clock)
        for port in (9001, 9002, 9003):
            self.registry.add_static("api", "127.0.0.1", port)
        self.gateway = type("Gateway", (), {"registry": self.registry})()
        self.per = {("api", "127.0.0.1", 9001): {W0: (0, 1, False), W1: (0, 2, False)},
                    ("api", "127.0.0.1", 9002): {W1: (0, 7, False)}}

    def test_groups(self):
        answer = (200, {"groups": [{"prefix": "api", "total": 3, "live": 3, "healthy": 3,
                                    "in_flight": 0, "requests": 0}],
                        "timestamp": self.clock.seconds()})
        obj = STATUS_PAGE[("GET", "/status/groups")](
            answer, [W0, W1], self.per, gateway=self.gateway)[1]
        self.assertEqual(obj["groups"][0], {
            "prefix": "api", "total": 3, "live": 3, "healthy": 2,
            "down_in_some_workers": 1, "in_flight": 0, "requests": 10})

    def test_peers(self):
        answer = (200, {"group": "api", "peers": [
            {"host": "127.0.0.1", "port": port, "health": {"healthy": True}}
            for port in (9001, 9002, 9003)]})
        obj = STATUS_PAGE[("GET", "/status/peers")](
            answer, [W0, W1], self.per, gateway=self.gateway)[1]
        self.assertEqual([p["health"] for p in obj["peers"]], [
            {"healthy": False, "down_in_workers": 2, "workers": 2},
            {"healthy": True, "down_in_workers": 1, "workers": 2},
            {"healthy": True, "down_in_workers": 0, "workers": 2}])
        self.assertEqual([p["total_requests"] for p in obj["peers"]], [3, 7, 0])


class WorkerCountsTests(SynchronousTestCase):
    """What a worker answers the parent's ``counts``: each peer it served,
    with its health object where it holds the peer down or has seen it fail."""

    LIVE, DEAD = "127.0.0.1:9001", "127.0.0.1:9100"

    def test_healthSent(self):
        h = Harness(config={"upstreams": {"default": {"peers": [self.LIVE, self.DEAD]}}},
                    plugins=["router", "least_conn"], servers={self.LIVE: echo})
        worker = Worker(h.clock)
        worker.registry = h.registry
        worker.service = type("Service", (), {"gateway": h.gateway})()

        def rows():
            return {row[2]: row for row in worker.control_counts({"health": True})}

        for _ in range(2):
            self.assertEqual(h.request("GET", "/x").status, 200)
        ejected = rows()
        self.assertEqual(len(ejected[9001]), 6, "nothing to say of a peer that never failed")
        self.assertEqual(ejected[9100][5:7], [False, ejected[9100][6]])
        self.assertEqual(ejected[9100][6]["ejections"], 1)
        h.set_server(self.DEAD, echo)   # it comes back
        h.advance(10)
        for _ in range(4):
            self.assertEqual(h.request("GET", "/x").status, 200)
        back = rows()[9100]
        self.assertTrue(back[5])
        self.assertEqual((back[6]["healthy"], back[6]["ejections"], back[6]["total_fails"]),
                         (True, 1, 1), "up again, its failures still told")
        self.assertEqual({len(row) for row in worker.control_counts({})}, {6},
                         "a parent that does not ask for health gets six fields")
