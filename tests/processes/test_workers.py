"""
Tests of ``"workers": N`` with real processes (the process model is the
subject): a real ``twistd -n tproxy`` with 2 workers, a real loopback
upstream (a thread of this process), plain blocking HTTP clients.

Which worker serves a connection is the kernel's choice (they accept on
one shared socket); to send a request to one worker, the tests stop the
other one (``SIGSTOP``: it accepts nothing) and continue it afterwards.
"""

import http.client
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.test_tap import TwistdProcess, local, write_json

#: the longest any wait of these tests may take (a generous bound, for a
#: loaded machine; not a measurement)
BOUND = 30.0

#: how often the upstreams' threads look whether they are to stop
#: (``serve_forever``'s ``poll_interval``: a test's cleanup waits that long
#: for each, 0.5 s by default)
POLL = 0.02


class _Upstream(BaseHTTPRequestHandler):
    """``/slow`` waits for the server's ``release`` event; anything else
    answers at once.  Every answer names the upstream's port."""

    protocol_version = "HTTP/1.1"
    # (the head and the body are two writes: with Nagle's algorithm the
    # body waited for the head's ACK, which the reader delays by ~40 ms
    # once the connection is past its first segments, as tproxy's pooled
    # upstream connections are: ~40 ms a request)
    disable_nagle_algorithm = True

    def do_GET(self):
        if self.path.startswith("/slow"):
            self.server.arrived.set()
            self.server.release.wait(BOUND)
        body = ("upstream %d %s" % (self.server.server_port, self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client gone before its answer (a worker killed, a reload's
        closed keep-alive connection) is what some tests do: not printed."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            ThreadingHTTPServer.handle_error(self, request, client_address)


def upstream(case):
    """A real HTTP server on a free loopback port, in a thread."""
    server = _Server(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    server.arrived = threading.Event()
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True)
    thread.start()

    def stop():
        server.release.set()
        server.shutdown()
        server.server_close()
    case.addCleanup(stop)
    return server


def get(port, path, timeout=BOUND):
    """``(status, body)`` of ``GET path`` on a new connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_json(port, path):
    status, body = get(port, path)
    return status, json.loads(body)


def wait_until(predicate, what):
    """Spin until ``predicate()`` (bounded by :data:`BOUND` seconds)."""
    deadline = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("gave up waiting for " + what)
        os.sched_yield()


def state(pid):
    """The kernel's state letter of process ``pid`` (``T``: stopped), or
    ``None`` when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def parent_of(pid):
    """The pid of process ``pid``'s parent (from ``/proc``)."""
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def sockets_of(pid):
    """The descriptors of process ``pid`` that are sockets (from ``/proc``)."""
    found = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                found.append(int(fd))
        except OSError:
            pass
    return sorted(found)


def fork_server_started(proc, generation, since=None, each=None):
    """The pid of ``generation``'s fork server, from the line saying it started."""
    line = proc.read_until("worker fork server of generation %d started" % generation, since,
                           each)
    return int(re.search(r"\(pid (\d+)\)", line).group(1))


class Box(object):
    """A running ``twistd tproxy`` with workers, its ports and its workers."""

    def __init__(self, case, workers=2, **changes):
        self.case = case
        cwd = os.path.abspath(case.mktemp())
        os.makedirs(cwd)
        changes.setdefault("plugins", ["registry", "router", "least_conn"])
        self.config = local(workers=workers, **changes)
        self.path = write_json(case, self.config)
        self.proc = TwistdProcess(case, self.path, cwd)
        #: {listener's name: port} of the listeners the workers accept on
        self.listeners = {}
        line = self.proc.read_until(" listening on ")
        while "admin API listening" not in line:
            found = re.search(r"\] (.+) listening on .*:(\d+) \(accepted by the workers\)",
                              line)
            if found:
                self.listeners[found.group(1)] = int(found.group(2))
            line = self.proc.read_until(" listening on ")
        self.admin = int(re.search(r":(\d+)\s*$", line).group(1))
        self.proxy = self.listeners["proxy"]
        #: the port of the first ``streams`` listener, if any
        self.stream = next((port for name, port in self.listeners.items()
                            if name.endswith("(streams[0])")), None)
        #: the pid of the first generation's fork server
        self.forks = fork_server_started(self.proc, 1, since=0)
        self.proc.read_until("worker(s) ready")

    def status(self):
        status, obj = get_json(self.admin, "/upstream/status")
        self.case.assertEqual(status, 200, obj)
        return obj

    def pids(self):
        return [w["pid"] for w in self.status()["workers"]]

    def only(self, pid):
        """Stop every worker but ``pid`` (continued in the cleanup or by
        :meth:`resume`)."""
        stopped = [p for p in self.pids() if p != pid]
        for p in stopped:
            os.kill(p, signal.SIGSTOP)
            self.case.addCleanup(_continue, p)
        for p in stopped:
            wait_until(lambda: state(p) in ("T", "t", None), "worker %d to stop" % p)
        return stopped

    def resume(self, pids):
        for p in pids:
            _continue(p)


def _continue(pid):
    try:
        os.kill(pid, signal.SIGCONT)
    except OSError:
        pass


def put_route(case, box, name, group, path):
    """``PUT /routes/{name}`` through the parent's admin API (created: 201)."""
    conn = http.client.HTTPConnection("127.0.0.1", box.admin, timeout=BOUND)
    try:
        conn.request("PUT", "/routes/" + name, body=json.dumps(
            {"group": group, "match": {"path": path}}),
            headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        case.assertEqual(response.status, 201, response.read())
    finally:
        conn.close()


def server_of(status, port):
    """The one server of ``/upstream/status`` on ``port``."""
    for group in status["groups"]:
        for server in group["servers"]:
            if server["port"] == port:
                return server
    raise AssertionError("no server on port %d in %r" % (port, status))


class WorkerCountTests(TestCase):
    """``workers``: a number, or ``"auto"`` for the CPUs."""

    def test_count(self):
        from tproxy.worker_counts import worker_count
        self.assertEqual(worker_count({"workers": 3}), 3)
        self.assertEqual(worker_count({"workers": 2.0}), 2)
        self.assertEqual(worker_count({"workers": "auto"}), os.cpu_count() or 1)
        self.assertEqual(worker_count({}), 1)


class RestartDelayTests(TestCase):
    """How long a dead worker's replacement waits: not at all, unless the
    dead one was a replacement that died young; then 0.5 s, doubling up
    to 30 s."""

    def test_delays(self):
        from tproxy.worker_counts import restart_delay
        self.assertEqual([restart_delay(young) for young in range(9)],
                         [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0])


class ForwardedTests(TestCase):
    """Which admin changes the parent makes in every worker too: a plugin's
    state in memory, not what every process reads already (``shared``)."""

    def test_forwarded(self):
        from tproxy.box_admin import _forwarded
        from tproxy.testing import Harness
        h = Harness(plugins=["registry", "routes", "router", "least_conn",
                             {"name": "cache", "settings": {}}])
        admin = h.gateway.admin
        self.assertTrue(_forwarded(admin, ("PUT", "/routes/{name}")))
        self.assertTrue(_forwarded(admin, ("DELETE", "/routes/{name}")))
        self.assertFalse(_forwarded(admin, ("GET", "/routes")))
        self.assertFalse(_forwarded(admin, ("POST", "/upstream/add")))   # the registry's
        self.assertFalse(_forwarded(admin, ("DELETE", "/upstream/servers")))
        self.assertFalse(_forwarded(admin, ("GET", "/healthz")))          # tproxy's own
        admin.registering = "mine"
        admin.route("PUT", "/mine", lambda request: (200, {}), shared=True)
        admin.route("PUT", "/local", lambda request: (200, {}))
        self.assertFalse(_forwarded(admin, ("PUT", "/mine")))
        self.assertTrue(_forwarded(admin, ("PUT", "/local")))


FAILS = {"name": "tests.plugins_for_tests:FailsInWorkers", "settings": {}}


class WorkersTests(TestCase):
    """
    ``"workers": 2``: a parent and two workers on shared listeners, through
    one box's life (a box costs three Python processes, and each reload a
    fork server more: the behaviours that can share one do, in order; each
    check's message names its behaviour): active health checks made by the
    parent, an admin change and a stream listener in every worker, a
    registration in every worker and the counts summed, a killed worker
    replaced, a reload refused, a reload under load, the fork server killed
    (the workers spawned) and the next reload's, the stop; the workers forked
    by their generation's fork server (:mod:`tproxy.worker_forks`) but after
    their fork server was killed.  (The parent killed:
    :meth:`SharedRegistryTests.parentKilled`.)
    """

    def setUp(self):
        self.up = upstream(self)     # registered through the admin API
        self.web = upstream(self)    # the static group of the route and the stream
        self.checked = checked_server(self)   # a group with active health checks
        self.box = Box(self, plugins=["request_id", "registry", "routes", "router",
                                         "least_conn", "prometheus", "health_check"],
                       upstreams={"web": {"peers": ["127.0.0.1:%d" % self.web.server_port],
                                          "routable": False},
                                  "checked": {"peers": [
                                      "127.0.0.1:%d" % self.checked.server_port],
                                      "routable": False, "health_check": {
                                          "path": "/healthz", "interval": 0.1,
                                          "rise": 1, "fall": 1}}},
                       streams=[{"listen": "tcp:0:interface=127.0.0.1", "group": "web"}])

    def test_lifecycle(self):
        self.assertEqual(len(set(self.box.pids())), 2, "two workers")
        box = self.box
        self.assertEqual(parent_of(box.forks), box.proc.proc.pid, "the fork server's parent")
        self.assertEqual([parent_of(pid) for pid in box.pids()], [box.forks] * 2,
                         "the workers are the fork server's children")
        with open("/proc/%d/cmdline" % box.forks, "rb") as f:
            self.assertEqual(f.read().split(b"\0")[2:5], [
                b"tproxy.worker_forks", b"--builtins",
                b"health_check,least_conn,prometheus,registry,request_id,router,routes"],
                "the fork server preloads the built-in plugins of its configuration")
        self.assertEqual(sockets_of(box.forks), [3],
                         "the fork server keeps no worker's socket (a listener it held "
                         "would stay open after the parent closed it)")
        channel = os.readlink("/proc/%d/fd/3" % box.forks)
        for pid in box.pids():
            self.assertNotIn(channel, [os.readlink("/proc/%d/fd/%d" % (pid, fd))
                                       for fd in sockets_of(pid)],
                             "a worker keeps nothing of the fork server's")
        for name in ("activeChecksInTheParent", "adminChangeInEveryWorker",
                     "everyWorkerRoutesARegistration", "passiveEjectionForTheBox",
                     "killedWorker", "reloadRefused", "reload", "forkServerKilled",
                     "reloadAfterForkServerKilled", "stop"):
            try:
                getattr(self, name)()
            except Exception as e:
                raise self.failureException("{} failed:\n{}".format(
                    name, "".join(traceback.format_exception(type(e), e, e.__traceback__))))

    def activeChecksInTheParent(self):
        """``health_check``: the parent probes, once for the box, and every
        worker's health state takes the results."""
        box, port = self.box, self.checked.server_port
        peer = "upstream 127.0.0.1:%d of checked" % port

        def every_worker():
            return [v["healthy"] for v in server_of(box.status(), port)["workers"]]
        # the parent logs the change, then relays it to the workers ahead of
        # any later question on their control channels: once the line is
        # out, every worker has it.  (The first check may be older than the
        # box's "ready".)
        box.proc.read_until(peer + " is down", since=0)
        self.assertEqual(every_worker(), [False, False], "every worker holds the peer down")
        self.checked.health = 200
        box.proc.read_until(peer + " is up")
        self.assertEqual(every_worker(), [True, True], "every worker takes it back")
        # (a probe that gave up, on a loaded machine, is gone before its
        # socket is looked up: None)
        self.assertEqual(set(self.checked.probers) - {None}, {box.proc.proc.pid},
                         "the probes' senders")
        # (the later probes' senders are not looked up: each look reads the
        # file descriptors of every process)
        self.checked.probers = None

    def web_item(self, path="/item"):
        return (200, b"upstream %d %s" % (self.web.server_port, path.encode()))

    def adminChangeInEveryWorker(self):
        """A plugin's admin change (``PUT /routes/{name}``) made through the
        parent is made in every worker; a ``streams`` listener is every
        worker's too."""
        box = self.box
        self.assertEqual(get(box.proxy, "/item")[0], 503, "no route yet")
        put_route(self, box, "item", "web", "/item")
        for pid in box.pids():
            stopped = box.only(pid)
            self.assertEqual(get(box.proxy, "/item"), self.web_item(),
                             "the route in worker %d" % pid)
            self.assertEqual(get(box.stream, "/through-a-stream"),
                             self.web_item("/through-a-stream"),
                             "the stream in worker %d" % pid)
            box.resume(stopped)

    def register(self):
        status, obj = get_json(self.box.admin, "/upstream/add?port=%d" % self.up.server_port)
        self.assertEqual(status, 200, obj)

    def everyWorkerRoutesARegistration(self):
        """Once the parent's admin API has answered a registration, every
        worker routes to it; ``/upstream/status`` sums the workers' counts
        and shows each one's."""
        box = self.box
        pids = box.pids()
        overview = get_json(box.admin, "/status/overview")[1]
        before = overview["requests_total"]
        rows_before = dict((w["pid"], w["requests_total"]) for w in overview["workers"])
        self.register()
        for i, pid in enumerate(pids):
            stopped = box.only(pid)
            for _ in range(i + 1):
                status, body = get(box.proxy, "/x")
                self.assertEqual((status, body), (200, b"upstream %d /x" % self.up.server_port))
            box.resume(stopped)
        server = server_of(box.status(), self.up.server_port)
        self.assertEqual(server["total_requests"], 3)
        self.assertEqual(server["conn_count"], 0)
        self.assertEqual(sorted((w["pid"], w["total_requests"]) for w in server["workers"]),
                         sorted(zip(pids, [1, 2])))
        # the status page's endpoints count the workers' requests too
        status, page = get_json(box.admin, "/status/peers?group=default")
        self.assertEqual([(p["port"], p["total_requests"]) for p in page["peers"]],
                         [(self.up.server_port, 3)])
        status, overview = get_json(box.admin, "/status/overview")
        self.assertEqual((overview["requests_total"] - before, overview["in_flight"]), (3, 0))
        # ... each worker's (the parent gathers their overviews), and /metrics
        # each worker's series, labelled with its index
        rows = dict((w["pid"], w["requests_total"] - rows_before.get(w["pid"], 0))
                    for w in overview["workers"])
        self.assertEqual(sorted(rows.items()), sorted(zip(pids, [1, 2])))
        self.assertGreater(overview["requests_per_second"], 0)
        status, text = get(box.admin, "/metrics")
        self.assertEqual(status, 200, text)
        requests = {}
        for family in text_string_to_metric_families(text.decode("utf-8")):
            for s in family.samples:
                if (s.name == "tproxy_http_requests_total" and s.labels["group"] == "default"
                        and s.labels["status_class"] == "2xx"):
                    requests[s.labels["worker"]] = s.value
        self.assertEqual(sorted(requests.values()), [1, 2])

    def passiveEjectionForTheBox(self):
        """A refused peer ejected by one worker is down in 1 of 2 workers;
        ejected by both, ``/upstream/status`` and the status page say it is
        down for the box (the parent's own view, which sends no request,
        still holds it healthy); its ``ejections`` are the workers'."""
        box = self.box
        from tests.helpers import ProxyTestCase
        port = ProxyTestCase.closed_port(self)
        status, obj = get_json(box.admin, "/upstream/add?port=%d&prefix=dead" % port)
        self.assertEqual(status, 200, obj)
        seen = []
        for pid in box.pids():
            stopped = box.only(pid)
            self.assertEqual(get(box.proxy, "/dead/x")[0], 502, "refused in worker %d" % pid)
            box.resume(stopped)
            group = next(g for g in box.status()["groups"] if g["prefix"] == "dead")
            health = group["servers"][0]["health"]
            seen.append((health["healthy"], health["down_in_workers"], health["workers"],
                         group["healthy"], group["down_in_some_workers"],
                         health["ejections"]))
        self.assertEqual(seen, [(True, 1, 2, 1, 1, 1), (False, 2, 2, 0, 0, 2)])
        server = next(g for g in box.status()["groups"] if g["prefix"] == "dead")["servers"][0]
        self.assertEqual([w["health"]["last_error"]["kind"] for w in server["workers"]],
                         ["connect", "connect"], "each worker's own health object")
        self.assertEqual(server["health"]["last_error"]["kind"], "connect")
        page = get_json(box.admin, "/status/groups?q=dead")[1]["groups"][0]
        self.assertEqual((page["healthy"], page["down_in_some_workers"]), (0, 0))
        page = get_json(box.admin, "/status/peers?group=dead")[1]["peers"][0]
        self.assertEqual(page["health"]["healthy"], False)
        status, obj = get_json(box.admin, "/upstream/remove?port=%d&prefix=dead" % port)
        self.assertEqual(status, 200, obj)

    def killedWorker(self):
        """``kill -9`` of a worker: the other serves on; the dead one's
        request in flight no longer counts; a replacement starts and serves,
        with the registration and the admin change made before it started."""
        box = self.box
        victim, survivor = box.pids()
        stopped = box.only(victim)
        result = []
        client = threading.Thread(target=lambda: result.append(_try(box.proxy, "/slow")))
        client.start()
        self.addCleanup(client.join)
        self.assertTrue(self.up.arrived.wait(BOUND))
        box.resume(stopped)
        server = server_of(box.status(), self.up.server_port)
        self.assertEqual(server["conn_count"], 1)
        self.assertEqual({w["pid"]: w["conn_count"] for w in server["workers"]},
                         {victim: 1, survivor: 0})
        os.kill(victim, signal.SIGKILL)
        # the survivor serves while the victim is replaced
        self.assertEqual(get(box.proxy, "/after")[0], 200)
        line = box.proc.read_until("(pid {}) died (signal 9)".format(victim))
        self.assertTrue(line.rstrip().endswith("starting another"), "at once: " + line)
        line = box.proc.read_until(") ready")
        replacement = int(re.search(r"pid (\d+)", line).group(1))
        self.assertNotIn(replacement, (victim, survivor))
        self.assertEqual(parent_of(replacement), box.forks, "the replacement is forked")
        self.assertEqual(sorted(box.pids()), sorted([survivor, replacement]))
        server = server_of(box.status(), self.up.server_port)
        self.assertEqual(server["conn_count"], 0)
        stopped = box.only(replacement)
        self.assertEqual(get(box.proxy, "/new")[0], 200, "the registration in the replacement")
        self.assertEqual(get(box.proxy, "/item"), self.web_item(),
                         "the route in the replacement")
        box.resume(stopped)
        self.up.release.set()
        client.join(BOUND)
        self.assertNotEqual(result, [200])   # its worker died with it

    def reloadRefused(self):
        """A worker that cannot start at a reload: the reload is refused and
        the old workers serve on."""
        box = self.box
        old = box.pids()
        with open(box.path, "w") as f:
            json.dump(dict(box.config, plugins=box.config["plugins"] + [FAILS]), f)
        box.proc.send_signal(signal.SIGHUP)
        start = len(box.proc.output)
        refused = fork_server_started(box.proc, 2)
        line = box.proc.read_until("reload refused")
        self.assertIn("ended before it was ready", line)
        self.assertEqual(box.pids(), old)
        # the refused generation's fork server ends (the current one serves on)
        box.proc.read_until("worker fork server of generation 2 (pid %d) ended" % refused,
                            since=start)
        self.assertIsNone(state(refused))
        self.assertNotIn(state(box.forks), (None, "Z"), "the current fork server runs on")
        for pid in old:
            stopped = box.only(pid)
            self.assertEqual(get(box.proxy, "/x")[0], 200)
            box.resume(stopped)

    def reload(self):
        """``SIGHUP`` starts new workers on the new file, then the old ones
        drain: requests sent all along are all answered; registrations
        survive."""
        box = self.box
        old = box.pids()
        failures = []
        answered = []
        # the load thread sends a request, one after the other, whenever it
        # may: 5 before the reload; while it reloads, one whenever the box
        # logs a line and the thread has no request left to send (so at each
        # of its steps); 5 once the new workers serve (unpaced, it took the
        # cores the reload needs); it tells of each answer: the test waits
        # for them without spinning
        allowed = [5]
        sent = [0]
        done = []
        progress = threading.Condition()

        def load():
            while True:
                with progress:
                    progress.wait_for(lambda: done or sent[0] < allowed[0], BOUND)
                    if done or sent[0] == allowed[0]:
                        return
                    sent[0] += 1
                status = _try(box.proxy, "/during")
                with progress:
                    (answered if status == 200 else failures).append(status)
                    progress.notify_all()

        def allow(more):
            with progress:
                allowed[0] += more
                progress.notify_all()

        def each(line):
            with progress:
                allowed[0] = max(allowed[0], sent[0] + 1)
                progress.notify_all()

        def stop():
            with progress:
                done.append(True)
                progress.notify_all()

        def wait_for(predicate, what):
            with progress:
                if not progress.wait_for(predicate, BOUND):
                    raise AssertionError("gave up waiting for " + what)
        client = threading.Thread(target=load)
        client.start()
        self.addCleanup(client.join)
        self.addCleanup(stop)
        wait_for(lambda: len(answered) >= 5 or failures, "requests before the reload")
        with open(box.path, "w") as f:
            json.dump(dict(box.config, proxy={"keepalive_requests": 100}), f)
        box.proc.send_signal(signal.SIGHUP)
        start = len(box.proc.output)
        forks = fork_server_started(box.proc, 3, each=each)   # (2: the refused reload's)
        box.proc.read_until("reloaded: 2 new worker(s) serve", each=each)
        allow(5)
        wait_for(lambda: len(answered) + len(failures) >= allowed[0], "requests after it")
        # the old workers drain and end, then their fork server
        ends = [box.proc.read_until("(pid %d) ended (exit status 0)" % pid, since=start,
                                    each=each) for pid in old]
        line = box.proc.read_until("worker fork server of generation 1 (pid %d) ended "
                                   "(exit status 0)" % box.forks, since=start, each=each)
        self.assertGreater(box.proc.output.index(line),
                           max(box.proc.output.index(end) for end in ends))
        self.assertIsNone(state(box.forks))
        stop()
        client.join(BOUND)
        self.assertEqual(failures, [])
        new = box.pids()
        self.assertEqual(len(new), 2)
        self.assertFalse(set(new) & set(old))
        self.assertEqual([parent_of(pid) for pid in new], [forks] * 2,
                         "the new generation's fork server forked the new workers")
        box.forks = forks
        for pid in new:
            stopped = box.only(pid)
            self.assertEqual(get(box.proxy, "/after")[0], 200)
            box.resume(stopped)

    def serving(self):
        """Every worker of the box answers a request to the registered
        upstream: ``{pid: the answer's X-Request-ID}``."""
        box = self.box
        ids = {}
        for pid in box.pids():
            stopped = box.only(pid)
            conn = http.client.HTTPConnection("127.0.0.1", box.proxy, timeout=BOUND)
            try:
                conn.request("GET", "/x")
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
            self.assertEqual(response.status, 200, "worker %d serves" % pid)
            ids[pid] = response.getheader("X-Request-ID")
            box.resume(stopped)
        return ids

    def forkServerKilled(self):
        """``kill -9`` of the fork server (of generation 3): one line says
        so; its workers serve on and their end is still noticed (their
        control channel); a replacement is spawned (a new Python, the
        parent's child).  (First: each forked worker makes request ids of
        its own.)"""
        box = self.box
        ids = self.serving()
        self.assertEqual(len(set(i[:8] for i in ids.values())), 2,
                         "each forked worker makes request ids of its own: %r" % (ids,))
        victim, other = box.pids()
        start = len(box.proc.output)
        os.kill(box.forks, signal.SIGKILL)
        # (in either order: the socket's end, the process's)
        box.proc.read_until("the worker fork server of generation 3 (pid %d) is gone: its "
                            "workers are spawned from now on" % box.forks, since=start)
        box.proc.read_until("worker fork server of generation 3 (pid %d) ended (signal 9)"
                            % box.forks, since=start)
        self.serving()
        os.kill(victim, signal.SIGKILL)
        box.proc.read_until("(pid %d) died (status unknown: its fork server ended first)"
                            % victim)
        line = box.proc.read_until(") ready")
        replacement = int(re.search(r"pid (\d+)", line).group(1))
        self.assertEqual(sorted(box.pids()), sorted([other, replacement]))
        self.assertEqual(parent_of(replacement), box.proc.proc.pid,
                         "the replacement of a worker whose fork server is gone is "
                         "spawned by the parent")
        self.serving()

    def reloadAfterForkServerKilled(self):
        """The next reload starts a fork server again, which forks the new
        workers; the previous ones end (the orphan's end told by its
        control channel)."""
        box = self.box
        old = box.pids()
        box.proc.send_signal(signal.SIGHUP)
        start = len(box.proc.output)
        box.forks = fork_server_started(box.proc, 4)
        box.proc.read_until("reloaded: 2 new worker(s) serve")
        for pid in old:
            box.proc.read_until("(pid %d) ended (" % pid, since=start)
        self.assertIn("(status unknown: its fork server ended first)",
                      "".join(box.proc.output[start:]), "the orphan's end")
        new = box.pids()
        self.assertEqual([parent_of(pid) for pid in new], [box.forks] * 2,
                         "the new fork server forked the new workers")
        self.serving()

    def stop(self):
        """``SIGTERM``: the workers drain and exit, then their fork server,
        then the parent."""
        box = self.box
        pids = box.pids()
        box.proc.send_signal(signal.SIGTERM)
        box.proc.read_until("every worker stopped")
        box.proc.read_until("worker fork server of generation 4 (pid %d) ended (exit status 0)"
                            % box.forks)
        # (twistd ends by re-raising the signal that stopped it)
        self.assertIn(box.proc.proc.wait(BOUND), (0, -signal.SIGTERM), "".join(box.proc.output))
        for pid in pids + [box.forks]:
            self.assertIsNone(state(pid))


class StartFailureTests(TestCase):
    """A worker that cannot start at start: tproxy stops (exit status 1);
    (at a reload: :meth:`WorkersTests.reloadRefused`)."""

    def test_atStart(self):
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        conf = write_json(self, local(workers=2, plugins=["registry", FAILS]))
        proc = TwistdProcess(self, conf, cwd)
        proc.read_until("this worker will not start")
        proc.read_until("ended before it was ready")
        proc.proc.wait(BOUND)
        self.assertEqual(proc.proc.returncode, 1, "".join(proc.output))


class _Checked(BaseHTTPRequestHandler):
    """Answers ``GET /healthz`` with the server's ``health`` status and
    records, for each probe, the pid of the process that sent it (while its
    ``probers`` is a list)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        probers = self.server.probers
        if probers is not None:
            probers.append(socket_owner(self.client_address[1], self.server.server_port))
        self.send_response(self.server.health)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def socket_owner(client_port, server_port):
    """The pid of the process holding the loopback TCP connection from
    ``client_port`` to ``server_port`` (from ``/proc``), or ``None``."""
    wanted = ":%04X" % client_port, ":%04X" % server_port
    inode = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(wanted[0]) and fields[2].endswith(wanted[1]):
                    inode = fields[9]
    if inode is None:
        return None
    target = "socket:[%s]" % inode
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == target:
                    return int(pid)
            except OSError:
                continue
    return None


def checked_server(case):
    """A real HTTP server answering the health checks (:class:`_Checked`),
    failing them (503) until its ``health`` is set to 200."""
    server = _Server(("127.0.0.1", 0), _Checked)
    server.daemon_threads = True
    server.health = 503
    server.probers = []
    threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True).start()
    case.addCleanup(server.server_close)
    case.addCleanup(server.shutdown)
    return server


class ReloadHealthTests(TestCase):
    """A reload with workers keeps the passive ejections, as one process."""

    def test_ejectedStaysEjected(self):
        """A peer each worker ejected is still ejected in the reload's new
        workers, for the rest of its time, without a request tried on it
        (a peer that accepts and never answers would cost each new worker a
        request's ``timeouts.read``); a replacement for a worker that died
        starts afresh."""
        from tests.helpers import ProxyTestCase
        up = upstream(self)
        dead = ProxyTestCase.closed_port(self)
        box = Box(self, health={"passive": {"fail_timeout": 300}})
        for port in (up.server_port, dead):
            self.assertEqual(get_json(box.admin, "/upstream/add?port=%d&prefix=api" % port)[0],
                             200)

        def dead_server():
            return server_of(box.status(), dead)
        for pid in box.pids():
            stopped = box.only(pid)
            # (equal peers take turns: the dead one is tried, refused, and
            # the request goes on to the other)
            for _ in range(4):
                self.assertEqual(get(box.proxy, "/api/x")[0], 200)
            box.resume(stopped)
        health = dead_server()["health"]
        self.assertEqual((health["healthy"], health["down_in_workers"]), (False, 2))
        box.proc.send_signal(signal.SIGHUP)
        box.proc.read_until("worker fork server of generation 1 (pid %d) ended" % box.forks)
        server = dead_server()
        self.assertEqual(server["total_requests"], 0)
        self.assertEqual((server["health"]["healthy"], server["health"]["down_in_workers"]),
                         (False, 2), server)
        for row in server["workers"]:
            self.assertEqual(row["health"]["ejections"], 1, row)
            self.assertGreater(row["health"]["ejected_for"], 200, row)
            self.assertEqual(row["health"]["last_error"]["kind"], "connect", row)
        for _ in range(20):
            self.assertEqual(get(box.proxy, "/api/x")[0], 200)
        self.assertEqual(dead_server()["total_requests"], 0)


class SharedRegistryTests(TestCase):
    """``"workers": 2`` with ``registry.backend`` ``redis``: the parent and
    every worker are instances of the fleet, each reading the shared store
    (nothing is replicated over the control channel); so is another
    ``twistd tproxy`` (one process) on the same Redis."""

    def closed_port(self):
        from tests.helpers import ProxyTestCase
        return ProxyTestCase.closed_port(self)

    def single(self, config):
        """Start a ``twistd tproxy`` without workers: a function that returns
        its ``(proxy port, admin port)`` once it listens."""
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        proc = TwistdProcess(self, write_json(self, config), cwd)
        return lambda: self.ports(proc)

    def ports(self, proc):
        """``(proxy port, admin port)`` of ``proc`` once it listens."""
        ports = []
        for name in ("proxy listening on", "admin API listening on"):
            ports.append(int(re.search(r":(\d+)\s*$", proc.read_until(name)).group(1)))
        self.assertIn("registry: shared through Redis", "".join(proc.output))
        return ports

    async def test_registrationAndRouteInEveryProcess(self):
        from tests.redis_server import redis_command, run_redis
        redis = await run_redis(self)
        up = upstream(self)
        changes = dict(plugins=["registry", "routes", "router", "least_conn"],
                       registry={"backend": "redis",
                                 "url": "redis://127.0.0.1:%d/0" % redis.port})
        # (both start at once: a second core, when there is one, starts the other)
        other = self.single(local(**changes))
        box = Box(self, **changes)
        other_proxy, other_admin = other()
        status, obj = get_json(box.admin, "/upstream/add?port=%d&prefix=api&routable=false"
                               % up.server_port)
        self.assertEqual(status, 200, obj)
        put_route(self, box, "item", "api", "/item")
        pids = box.pids()
        for pid in pids:
            stopped = box.only(pid)
            # the worker has it from Redis (pushed: within milliseconds)
            wait_until(lambda: get(box.proxy, "/item")[0] == 200,
                       "worker %d to route /item" % pid)
            self.assertEqual(get(box.proxy, "/item")[1], b"upstream %d /item" % up.server_port)
            box.resume(stopped)
        server = server_of(box.status(), up.server_port)
        self.assertEqual(sorted(w["pid"] for w in server["workers"]), sorted(pids))
        self.assertGreaterEqual(server["total_requests"], 2)
        # the other process: what the box's admin API made, and the other way
        wait_until(lambda: get(other_proxy, "/item")[0] == 200, "the other to route /item")
        conn = http.client.HTTPConnection("127.0.0.1", other_admin, timeout=BOUND)
        conn.request("PUT", "/routes/r", body=json.dumps(
            {"group": "api", "match": {"path": {"mode": "exact", "value": "/r"}},
             "rewrite": "/from-route"}), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        self.assertEqual(response.status, 201, response.read())
        conn.close()
        wait_until(lambda: get(box.proxy, "/r")[0] == 200, "the box to route /r")
        self.assertEqual(get(box.proxy, "/r")[1], b"upstream %d /from-route" % up.server_port)
        status, obj = get_json(other_admin, "/upstream/status")
        self.assertEqual(obj["total_servers"], 1)
        # the registration and the routes are Redis's, not the parent's alone
        keys = await redis_command(redis.port, "KEYS", "tproxy:*")
        self.assertTrue(keys)
        self.assertEqual(sorted(await redis_command(redis.port, "HKEYS", "tproxy:routes")),
                         ["item", "r"])
        self.parentKilled(box)

    async def test_workersStartedWhileRedisIsAway(self):
        """Redis away, a reload's workers and a replacement cannot read it:
        they serve the registrations and routes the parent holds (not an
        empty registry until Redis answers), and Redis has them again,
        put back, when it answers (empty)."""
        from tests.redis_server import redis_command, run_redis
        redis = await run_redis(self)
        up = upstream(self)
        box = Box(self, plugins=["registry", "routes", "router", "least_conn"],
                  registry={"backend": "redis",
                            "url": "redis://127.0.0.1:%d/0" % redis.port})
        status, obj = get_json(box.admin, "/upstream/add?port=%d&prefix=api" % up.server_port)
        self.assertEqual(status, 200, obj)
        put_route(self, box, "item", "api", "/item")
        api = (200, b"upstream %d /x" % up.server_port)
        item = (200, b"upstream %d /item" % up.server_port)

        def serves(pid, what):
            stopped = box.only(pid)
            wait_until(lambda: get(box.proxy, "/item")[0] == 200,
                       "worker %d to route /item" % pid)
            self.assertEqual((get(box.proxy, "/api/x"), get(box.proxy, "/item")),
                             (api, item), "worker %d (%s)" % (pid, what))
            box.resume(stopped)
        for pid in box.pids():
            serves(pid, "before")
        await redis.stop()
        box.proc.read_until("[tproxy.registry_redis#warn] registry: Redis at")
        box.proc.send_signal(signal.SIGHUP)
        box.proc.read_until("worker fork server of generation 1 (pid %d) ended" % box.forks)
        new = box.pids()
        for pid in new:
            serves(pid, "started by the reload while Redis is away")
        os.kill(new[0], signal.SIGKILL)
        line = box.proc.read_until(") ready")
        replacement = int(re.search(r"pid (\d+)", line).group(1))
        serves(replacement, "a replacement while Redis is away")
        start = len(box.proc.output)
        await run_redis(self, redis.port)
        for pid in (new[1], replacement):
            box.proc.read_until("[worker %d tproxy.registry_redis#info] registry: Redis at "
                                "127.0.0.1:%d/0 answers again: 1 registrations, 1 routes"
                                % (pid, redis.port), since=start)
        self.assertEqual(await redis_command(redis.port, "HKEYS", "tproxy:peers"),
                         ["api 127.0.0.1 %d" % up.server_port])
        self.assertEqual(await redis_command(redis.port, "HKEYS", "tproxy:routes"), ["item"])
        self.parentKilled(box)

    def parentKilled(self, box):
        """(The box's end, any registry's:) ``kill -9`` of the parent: the
        workers' control channels close, they stop, and the fork server
        ends after them (the output's pipe, which they all hold, closes)."""
        pids = box.pids()
        box.proc.proc.kill()
        # (a fork server or worker that would not end: killed, and the test fails)
        fired = []

        def kill():
            fired.append(True)
            for pid in pids + [box.forks]:
                _kill(pid)
        watchdog = threading.Timer(BOUND, kill)
        watchdog.start()
        self.addCleanup(watchdog.cancel)
        start = len(box.proc.output)
        for line in iter(box.proc.proc.stdout.readline, b""):
            box.proc.output.append(line.decode("utf-8", "replace"))
        output = "".join(box.proc.output[start:])
        for pid in pids:
            self.assertRegex(output, r"\[worker %d tproxy.worker#info\] worker \d: the control "
                             "channel closed; stopping" % pid,
                             "the parent killed: worker %d stops" % pid)
        # (its descriptors are closed a moment before it is a zombie)
        wait_until(lambda: state(box.forks) in (None, "Z"), "the fork server to end")
        self.assertEqual(fired, [], "the parent killed: they had to be killed")


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _try(port, path):
    """The status of ``GET path``, or the exception's name."""
    try:
        return get(port, path)[0]
    except Exception as e:
        return type(e).__name__


#: this module's longest tests, in the order trial is to start them (see
#: :mod:`tests.processes`: the others follow)
LONGEST_FIRST = ("WorkersTests", "SharedRegistryTests", "StartFailureTests")


def testSuite():
    """This module's tests, the longest first."""
    from tests.processes import longest_first
    return longest_first(__name__, LONGEST_FIRST)
