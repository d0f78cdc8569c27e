"""
Tests for :mod:`tproxy.ctl` (``tproxyctl``): its formatting, and every command
against a real admin listener of a tproxy running in this process (the
command line runs in a thread: it is a blocking client).
"""

import io
import json
import os
import signal
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tproxy import ctl, ctl_text
from tproxy.admin_client import describe_error
from tproxy.tap import makeService

from tests.test_tap import ROOT, local, options, python_environ, write_json

ROUTES = {"name": "routes", "settings": {"routes": [
    {"name": "users", "group": "api",
     "match": {"path": {"mode": "prefix", "value": "/users"}, "methods": ["GET"]}}]}}


class FormatTests(SynchronousTestCase):
    """What the commands print."""

    STATUS = {
        "timestamp": 1000.0, "total_groups": 2, "total_servers": 3,
        "groups": [
            {"prefix": "api", "live": 1, "total": 2, "servers": [
                {"host": "10.0.0.5", "port": 8000, "weight": 3, "conn_count": 2,
                 "total_requests": 1234, "static": False, "live": True,
                 "last_heartbeat": 990.0, "expires_at": 1050.0,
                 "health": {"healthy": True, "down_in_workers": 1, "workers": 2}},
                {"host": "::1", "port": 8001, "weight": 1, "conn_count": 0,
                 "total_requests": 5, "static": False, "live": False,
                 "last_heartbeat": 800.0, "expires_at": 860.0,
                 "health": {"healthy": False, "down_in_workers": 2, "workers": 2}}]},
            {"prefix": "default", "live": 1, "total": 1, "servers": [
                {"host": "127.0.0.1", "port": 9001, "weight": 10, "conn_count": 0,
                 "total_requests": 7, "static": True, "live": True,
                 "last_heartbeat": 0.0, "expires_at": None,
                 "health": {"healthy": True}}]}]}

    def test_status(self):
        self.assertEqual(ctl_text.format_status(self.STATUS), (
            "GROUP    SERVER          WEIGHT  CONNS  REQUESTS  LIVE  HEARTBEAT  EXPIRES  HEALTH\n"
            "api      10.0.0.5:8000        3      2      1234  yes   10s ago    in 50s   up (1/2 down)\n"
            "api      [::1]:8001           1      0         5  no    3m20s ago  expired  down\n"
            "default  127.0.0.1:9001      10      0         7  yes   static     never    up\n"
            "2 groups, 3 servers (2 live)\n"))
        status = json.loads(json.dumps(self.STATUS))
        del status["groups"][1]["servers"][0]["health"]
        self.assertTrue(ctl_text.format_status(status).splitlines()[3].endswith(
            "never    -"), "no health state")

    def test_statusEmpty(self):
        self.assertEqual(ctl_text.format_status({"groups": [], "total_groups": 0,
                                            "total_servers": 0, "timestamp": 1}),
                         "no servers registered\n")

    def test_age(self):
        self.assertEqual([ctl_text._age(s) for s in (-1, 0, 59.6, 61, 3599, 7500)],
                         ["0s", "0s", "1m00s", "1m01s", "59m59s", "2h05m"])

    def test_routes(self):
        text = ctl_text.format_routes({"match_mode": "host_first", "total": 2, "routes": [
            {"name": "users", "group": "api", "peer": None,
             "match": {"path": {"mode": "prefix", "value": "/users"},
                       "methods": ["GET"], "headers": {}}},
            {"name": "item", "group": "shop", "peer": "10.0.0.7:8080", "match": {}}]})
        self.assertEqual(text, (
            "NAME   GROUP  PEER           MATCH\n"
            "users  api    -              path prefix /users, methods [\"GET\"]\n"
            "item   shop   10.0.0.7:8080  -\n"
            "2 routes (match_mode host_first)\n"))

    def test_match(self):
        text = ctl_text.format_match({
            "request": {"method": "GET", "host": "", "path": "/users/1", "query": "a=1"},
            "route": "users", "decided_by": "routes", "rule": "the only matching route",
            "group": "api", "upstream_path": "/users/1?a=1",
            "peer": {"address": "127.0.0.1:9001"}})
        self.assertEqual(text, (
            "request:  GET /users/1?a=1\nroute:    users\nby:       routes\n"
            "rule:     the only matching route\ngroup:    api\n"
            "upstream: /users/1?a=1\npeer:     127.0.0.1:9001\n"))

    def test_errors(self):
        self.assertEqual(describe_error(400, {"error": "port is required",
                                                  "field": "port", "value": None}),
                         "400 port is required (field port)")
        self.assertEqual(describe_error(400, {"error": "bad", "field": "weight",
                                                  "value": "0"}),
                         "400 bad (field weight; value '0')")
        self.assertEqual(describe_error(401, {"error": "missing or invalid bearer token"}),
                         "401 missing or invalid bearer token (set --token or TPROXY_TOKEN)")
        self.assertEqual(describe_error(502, None), "502 (no JSON body)")
        self.assertEqual(describe_error(404, {"error": "not found", "path": "/routes",
                                              "hint": "add it"}),
                         "404 not found (add it)")

    def test_table(self):
        self.assertEqual(ctl_text.table(("A", "NUM"), [("x", "1"), ("yy", "100")]),
                         "A   NUM\nx     1\nyy  100\n")


class UsageTests(SynchronousTestCase):
    """Mistakes found before any request."""

    def run_ctl(self, *argv, **environ):
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stderr", err)  # argparse writes there itself
        code = ctl.main(list(argv), out, err, environ)
        return code, out.getvalue(), err.getvalue()

    def test_badPort(self):
        code, out, err = self.run_ctl("add", "--port", "70000")
        self.assertEqual(code, 2)
        self.assertIn("a port is a number from 1 to 65535", err)

    def test_badRegistrationOptions(self):
        """Both ``--routable`` and ``--not-routable``, or an empty
        ``--max-conns``: bad usage, no request."""
        code, out, err = self.run_ctl("--admin", "127.0.0.1:1", "add", "--port", "9001",
                                      "--routable", "--not-routable")
        self.assertEqual(code, 2)
        self.assertIn("argument --not-routable: not allowed with argument --routable", err)
        code, out, err = self.run_ctl("--admin", "127.0.0.1:1", "heartbeat", "--port", "9001",
                                      "--max-conns", " ")
        self.assertEqual(code, 2)
        self.assertIn("argument --max-conns: a value is required", err)

    def test_noCommand(self):
        self.assertEqual(self.run_ctl()[0], 2)

    def test_badTimeout(self):
        """``--timeout`` 0, negative or not finite: bad usage (a negative
        one was a traceback from the socket module, 0 a non-blocking socket's
        "Operation now in progress")."""
        for value in ("0", "-1", "inf", "nan", "x"):
            code, out, err = self.run_ctl("--timeout", value, "status")
            self.assertEqual(code, 2, value)
            self.assertIn("argument --timeout: a number of seconds greater than 0", err)

    def test_connectionOptionsAfterCommand(self):
        """``--admin``, ``--token`` and ``--timeout`` may follow the command
        (``tproxyctl status --admin URL``); given before it, they are kept."""
        from tproxy.ctl_args import parser

        def connection(*argv):
            args = parser().parse_args(list(argv))
            return args.admin, args.token, args.timeout
        self.assertEqual(connection("status"), (None, None, 10.0))
        self.assertEqual(connection("status", "--admin", "http://b:2", "--token", "t",
                                    "--timeout", "3"), ("http://b:2", "t", 3.0))
        self.assertEqual(connection("--admin", "http://a:1", "--token", "t", "--timeout",
                                    "3", "status"), ("http://a:1", "t", 3.0))
        self.assertEqual(connection("--admin", "http://a:1", "routes", "list",
                                    "--admin", "http://b:2"), ("http://b:2", None, 10.0))
        code, out, err = self.run_ctl("status", "--admin", "ftp://x")
        self.assertEqual((code, err), (2, "tproxyctl: the admin address must look like "
                                          "http://host:port, not 'ftp://x'\n"))

    def test_badAdmin(self):
        code, out, err = self.run_ctl("status", TPROXY_ADMIN="ftp://x")
        self.assertEqual((code, err), (2, "tproxyctl: the admin address must look like "
                                          "http://host:port, not 'ftp://x'\n"))

    def test_badAdminPort(self):
        """A port urllib cannot read is the same usage error, naming the address."""
        for admin in ("http://127.0.0.1:99999", "127.0.0.1:x"):
            code, out, err = self.run_ctl("status", "--admin", admin)
            self.assertEqual((code, err), (2, (
                "tproxyctl: the admin address must look like http://host:port, "
                "not {!r}\n").format(admin if "://" in admin else "http://" + admin)))

    def test_badHeader(self):
        code, out, err = self.run_ctl("--admin", "127.0.0.1:1", "routes", "match",
                                      "--path", "/", "--header", "nocolon")
        self.assertEqual(code, 2)
        self.assertIn("--header must look like 'Name: value'", err)

    def test_check(self):
        """``check`` gives tproxy's own startup messages."""
        path = write_json(self, {"upstreams": {"api": {"peers": ["h:70000"]}},
                                 "plugins": ["registry"]})
        code, out, err = self.run_ctl("check", "-c", path)
        self.assertEqual((code, out, err), (1, "", path + ": upstreams.api.peers[0]: "
                                                          "port 70000 is out of range\n"))
        path = write_json(self, {"plugins": ["registry", "nope"]})
        code, out, err = self.run_ctl("check", "-c", path)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith(path + ": plugins[1]: unknown plugin 'nope'"), err)
        code, out, err = self.run_ctl("check", "-c", os.path.join(ROOT, "etc", "conf.json"))
        self.assertEqual((code, err), (0, ""))
        self.assertIn("OK (plugins: registry, router, least_conn, access_log)", out)

    def test_checkCertificates(self):
        """``check`` loads the certificates and keys as ``twistd tproxy
        --check`` and the start do: a key that does not match is an error."""
        from tests.test_tls import TestCA
        ca = TestCA(self)
        a, b = ca.pair("a.test"), ca.pair("b.test")
        path = write_json(self, {"tls": {"cert": a["cert"], "key": b["key"]}})
        code, out, err = self.run_ctl("check", "-c", path)
        self.assertEqual((code, out, err), (1, "", "{}: tls: the key does not match the "
                                                   "certificate {}\n".format(path, a["cert"])))

    def test_checkWarnings(self):
        """A per-route entry naming no known group: a warning on stderr (in
        ``warnings`` with ``--json``), exit status 0."""
        path = write_json(self, {
            "upstreams": {"api": {"peers": ["127.0.0.1:9001"]}},
            "plugins": ["router", "least_conn", {"name": "key_auth", "routes": ["ap"], "settings": {
                "consumers": [{"username": "a", "keys": ["0123456789"]}]}}]})
        code, out, err = self.run_ctl("check", "-c", path)
        self.assertEqual((code, err), (0, (
            "{}: plugins[2].routes[0]: warning: no group 'ap' in upstreams nor in a "
            "route (known: api): 'key_auth' runs there only if servers register "
            "under that prefix\n").format(path)))
        code, out, err = self.run_ctl("check", "--json", "-c", path)
        self.assertEqual([w["path"] for w in json.loads(out)["warnings"]],
                         ["plugins[2].routes[0]"])


class _Stop(object):
    """Records the waits; never asks to stop (``--count`` ends the loop)."""

    def __init__(self):
        self.waits = []

    def wait(self, seconds):
        self.waits.append(seconds)
        return False


class AgainstAdminTests(TestCase):
    """Every command against a tproxy listening in this process."""

    token = "s3cret"

    def setUp(self):
        config = local(admin={"listen": "tcp:0:interface=127.0.0.1", "token": self.token},
                       registry={"ttl": 30, "cleanup_interval": 10},
                       plugins=["registry", ROUTES, "router", "least_conn"])
        self.service = makeService(options(self, config), reactor=reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.admin = "http://127.0.0.1:{}".format(self.service.ports[1].getHost().port)
        self.registry = self.service.gateway.registry

    def ctl(self, *argv, **kw):
        """Run tproxyctl in a thread: ``(status, stdout, stderr)``."""
        environ = {"TPROXY_ADMIN": self.admin, "TPROXY_TOKEN": self.token}
        environ.update(kw.pop("environ", {}))
        out, err = io.StringIO(), io.StringIO()
        d = deferToThread(ctl.main, list(argv), out, err, environ, kw.pop("stop", None))
        return d.addCallback(lambda code: (code, out.getvalue(), err.getvalue()))

    @inlineCallbacks
    def test_addStatusRemove(self):
        code, out, err = yield self.ctl("add", "--port", "9001", "--prefix", "api",
                                        "--weight", "3")
        self.assertEqual((code, out, err), (
            0, "registered api:127.0.0.1:9001 (weight 3, expires in 30 s)\n", ""))
        [peer] = self.registry.group("api").peers.values()
        self.assertEqual((peer.host, peer.port, peer.weight), ("127.0.0.1", 9001, 3))
        code, out, err = yield self.ctl("status")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(lines[0].split(), list(ctl_text.STATUS_HEADER))
        self.assertEqual(lines[1].split()[:6], ["api", "127.0.0.1:9001", "3", "0", "0", "yes"])
        self.assertEqual(lines[-1], "1 group, 1 server (1 live)")
        code, out, err = yield self.ctl("status", "--json")
        self.assertEqual(json.loads(out)["total_servers"], 1)
        code, out, err = yield self.ctl("remove", "--port", "9001", "--prefix", "api")
        self.assertEqual((code, out), (0, "removed api:127.0.0.1:9001\n"))
        self.assertIsNone(self.registry.group("api"))

    @inlineCallbacks
    def test_addMaxConnsRoutable(self):
        """``--max-conns`` and ``--routable`` / ``--not-routable`` reach
        ``/upstream/add``; left out, a heartbeat keeps them."""
        code, out, err = yield self.ctl("add", "--port", "9001", "--prefix", "canary",
                                        "--max-conns", "100", "--not-routable")
        self.assertEqual((code, out, err), (
            0, "registered canary:127.0.0.1:9001 (weight 1, max_conns 100, not routable, "
               "expires in 30 s)\n", ""))
        group = self.registry.group("canary")
        [peer] = group.peers.values()
        self.assertEqual((peer.max_conns, group.routable), (100, False))
        code, out, err = yield self.ctl("add", "--port", "9001", "--prefix", "canary")
        self.assertEqual((code, peer.max_conns, group.routable), (0, 100, False))
        code, out, err = yield self.ctl("add", "--port", "9001", "--prefix", "canary",
                                        "--max-conns", "0", "--routable", "--json")
        self.assertEqual((code, peer.max_conns, group.routable), (0, 0, True))
        self.assertEqual((json.loads(out)["max_conns"], json.loads(out)["routable"]),
                         (0, True))
        stop = _Stop()
        code, out, err = yield self.ctl("heartbeat", "--port", "9001", "--prefix", "canary",
                                        "--max-conns", "7", "--not-routable", "--count", "1",
                                        stop=stop)
        self.assertEqual((code, peer.max_conns, group.routable), (0, 7, False))

    @inlineCallbacks
    def test_addBadMaxConns(self):
        """A bad ``--max-conns``: the admin API's own error, exit status 1,
        nothing registered."""
        for value in ("-1", "1000001", "lots", "1.5"):
            code, out, err = yield self.ctl("add", "--port", "9001", "--max-conns", value)
            self.assertEqual((code, out, err), (
                1, "", "tproxyctl: 400 max_conns must be an integer from 0 (no limit) to "
                       "1000000 (field max_conns; value {!r})\n".format(value)))
        code, out, err = yield self.ctl("heartbeat", "--port", "9001", "--max-conns", "x",
                                        stop=_Stop())
        self.assertEqual(code, 1)
        self.assertIn("400 max_conns must be", err)
        self.assertEqual(self.registry.groups(), [])

    @inlineCallbacks
    def test_errors(self):
        """An error answer: its status and message, exit status 1; with
        ``--json`` the body on stdout too."""
        code, out, err = yield self.ctl("remove", "--port", "9001")
        self.assertEqual((code, out, err),
                         (1, "", "tproxyctl: 404 server not registered\n"))
        code, out, err = yield self.ctl("remove", "--port", "9001", "--json")
        self.assertEqual(json.loads(out)["error"], "server not registered")
        # registered elsewhere: the option to pass, in the command line's terms
        for prefix in ("api", "~team"):
            code, out, err = yield self.ctl("add", "--port", "9001", "--prefix", prefix)
            self.assertEqual(code, 0)
        code, out, err = yield self.ctl("remove", "--port", "9001")
        self.assertEqual((code, out, err), (
            1, "", "tproxyctl: 404 server default:127.0.0.1:9001 not registered; it is "
                   "registered under 'api', '~team' (pass --prefix api or --prefix '~team')\n"))
        code, out, err = yield self.ctl("remove", "--port", "9001", "--json")
        self.assertEqual(json.loads(out)["registered_under"], ["api", "~team"])
        code, out, err = yield self.ctl("remove", "--port", "9001", "--prefix", "~team")
        self.assertEqual((code, out), (0, "removed ~team:127.0.0.1:9001\n"))
        code, out, err = yield self.ctl("add", "--port", "9001", "--host", "bad host")
        self.assertEqual(code, 1)
        self.assertEqual(err, "tproxyctl: 400 host must be a host name or an IP "
                              "address (field host; value 'bad host')\n")

    @inlineCallbacks
    def test_token(self):
        """A missing or wrong token: 401, and how to give one."""
        code, out, err = yield self.ctl("status", environ={"TPROXY_TOKEN": ""})
        self.assertEqual((code, err), (1, "tproxyctl: 401 missing or invalid bearer "
                                          "token (set --token or TPROXY_TOKEN)\n"))
        code, out, err = yield self.ctl("--token", "wrong", "status")
        self.assertEqual(code, 1)
        code, out, err = yield self.ctl("--token", self.token, "status",
                                        environ={"TPROXY_TOKEN": "wrong"})
        self.assertEqual((code, out), (0, "no servers registered\n"))

    @inlineCallbacks
    def test_unreachable(self):
        """Nothing listening: exit status 3 and a hint."""
        port = self.service.ports[0].getHost().port
        yield self.service.ports[0].stopListening()
        code, out, err = yield self.ctl("--admin", "127.0.0.1:{}".format(port), "status")
        self.assertEqual(code, 3)
        self.assertEqual(err, "tproxyctl: cannot reach the admin API at "
                              "http://127.0.0.1:{}: connection refused (is tproxy "
                              "running? see --admin / TPROXY_ADMIN)\n".format(port))

    @inlineCallbacks
    def test_routes(self):
        code, out, err = yield self.ctl("routes", "list")
        self.assertEqual(out.splitlines()[1].split()[:4], ["users", "api", "-", "path"])
        code, out, err = yield self.ctl("routes", "get", "users")
        self.assertEqual(json.loads(out)["group"], "api")
        route = write_json(self, {"group": "api",
                                  "match": {"path": {"mode": "exact", "value": "/x"}}})
        code, out, err = yield self.ctl("routes", "put", "x", route)
        self.assertEqual((code, out, err), (0, "route x added\n", ""))
        code, out, err = yield self.ctl("routes", "match", "--path", "/x", "--json")
        self.assertEqual(json.loads(out)["route"], "x")
        code, out, err = yield self.ctl("routes", "match", "--path", "/users/1",
                                        "--header", "X-Env: canary")
        self.assertIn("route:    users\n", out)
        code, out, err = yield self.ctl("routes", "delete", "x")
        self.assertEqual((code, out), (0, "route x deleted\n"))
        code, out, err = yield self.ctl("routes", "delete", "x")
        self.assertEqual((code, err), (1, "tproxyctl: 404 no such route\n"))
        bad = write_json(self, {"group": "api", "match": {"path": {"mode": "bogus"}}})
        code, out, err = yield self.ctl("routes", "put", "y", bad)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("tproxyctl: 400 "), err)

    @inlineCallbacks
    def test_health(self):
        """``health``: ``/healthz``, or ``/upstream/status`` where it is missing."""
        paths = []
        admin = self.service.gateway.admin
        original = admin.answer

        def answer(request):
            paths.append(request.path)
            return original(request)
        self.patch(admin, "answer", answer)
        code, out, err = yield self.ctl("health")
        self.assertEqual((code, err), (0, ""))
        healthz = ("GET", "/healthz") in admin.routes
        self.assertEqual(paths, ["/healthz"] if healthz else ["/healthz", "/upstream/status"])
        self.assertEqual(out, "ok (GET {} 200)\n".format(paths[-1]))
        # /healthz answers without the token (probes cannot send one)
        code, out, err = yield self.ctl("health", environ={"TPROXY_TOKEN": "wrong"})
        self.assertEqual((code, out), (0, "ok (GET /healthz 200)\n"))
        # an admin API that does not answer
        code, out, err = yield self.ctl("health", environ={
            "TPROXY_ADMIN": "http://127.0.0.1:1"})
        self.assertEqual(code, 3)

    @inlineCallbacks
    def test_heartbeat(self):
        """Heartbeats every third of the TTL by default; ``--count`` ends it;
        ``--remove-on-exit`` removes the registration."""
        stop = _Stop()
        code, out, err = yield self.ctl("heartbeat", "--port", "9001", "--count", "3",
                                        "--remove-on-exit", stop=stop)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(stop.waits, [10.0, 10.0])
        self.assertEqual(out, "registered default:127.0.0.1:9001 (weight 1, expires "
                              "in 30 s)\nremoved default:127.0.0.1:9001\nheartbeat stopped\n")
        self.assertIsNone(self.registry.group("default"))

    @inlineCallbacks
    def test_heartbeatThroughA503(self):
        """A ``503`` (a shared registry away) keeps the pace of the
        heartbeats (a third of the TTL: waiting longer could let the
        registration expire), and the registration that goes through
        again says so; the failure is said once."""
        from tproxy.admin_messages import AdminResponse
        admin = self.service.gateway.admin
        original = admin.answer
        refused = AdminResponse(503, {"error": "the shared registry is unavailable"},
                                [("Retry-After", "1")])
        answers = [None, refused, refused, None]

        def answer(request):
            refused = answers.pop(0) if answers else None
            return refused if refused is not None else original(request)
        self.patch(admin, "answer", answer)
        self.registry.ttl = 6
        stop = _Stop()
        code, out, err = yield self.ctl("heartbeat", "--port", "9001", "--count", "4",
                                        stop=stop)
        self.assertEqual(code, 0)
        self.assertEqual(stop.waits, [2.0, 2.0, 2.0])
        self.assertEqual(err, "tproxyctl: 503 the shared registry is unavailable\n")
        self.assertEqual(out, "registered default:127.0.0.1:9001 (weight 1, expires in 6 s)\n"
                              "registered again: default:127.0.0.1:9001 (weight 1, expires "
                              "in 6 s)\nheartbeat stopped\n")

    @inlineCallbacks
    def test_heartbeatEveryTooLong(self):
        """``--every`` at or past the TTL is warned about."""
        stop = _Stop()
        code, out, err = yield self.ctl("heartbeat", "--port", "9001", "--count", "2",
                                        "--every", "45", stop=stop)
        self.assertEqual(stop.waits, [45.0])
        self.assertIn("warning: --every 45 is not less than the TTL (30 s)", err)

    @inlineCallbacks
    def test_heartbeatBadRequest(self):
        """A request the API refuses (4xx) ends the heartbeat with status 1."""
        code, out, err = yield self.ctl("heartbeat", "--port", "9001", "--host", "bad host",
                                        stop=_Stop())
        self.assertEqual(code, 1)

    @inlineCallbacks
    def test_heartbeatSigterm(self):
        """A real ``tproxyctl heartbeat`` process stops cleanly on SIGTERM."""
        done = Deferred()
        registered = Deferred()

        class Watch(ProcessProtocol):
            output = b""

            def outReceived(self, data):
                self.output += data
                if b"registered" in self.output and not registered.called:
                    registered.callback(None)

            errReceived = outReceived

            def processEnded(self, reason):
                done.callback(reason.value.exitCode)

        env = python_environ(TPROXY_ADMIN=self.admin, TPROXY_TOKEN=self.token)
        watch = Watch()
        process = reactor.spawnProcess(
            watch, sys.executable, [sys.executable, "-m", "tproxy.ctl", "heartbeat",
                                    "--port", "9001", "--remove-on-exit"], env=env)
        timeout = reactor.callLater(60, process.signalProcess, "KILL")
        yield registered
        self.assertIsNotNone(self.registry.group("default"))
        process.signalProcess("TERM")
        code = yield done
        timeout.cancel()
        self.assertEqual(code, 0, watch.output)
        self.assertTrue(watch.output.endswith(b"removed default:127.0.0.1:9001\n"
                                              b"heartbeat stopped\n"), watch.output)
        self.assertIsNone(self.registry.group("default"))


if not hasattr(signal, "SIGTERM"):
    del AgainstAdminTests.test_heartbeatSigterm


class NotAdminTests(TestCase):
    """``--admin`` naming another HTTP server (the proxy's port, a backend)
    that answers every request with some JSON: each command says so and
    exits 1, instead of "removed None" and exit status 0."""

    def setUp(self):
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Backend(Resource):
            isLeaf = True

            def render(self, request):
                request.setHeader(b"Content-Type", b"application/json")
                return b'{"port": 9001, "path": "/"}'
        self.port = reactor.listenTCP(0, Site(Backend()), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.base = "http://127.0.0.1:{}".format(self.port.getHost().port)

    def ctl(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        d = deferToThread(ctl.main, list(argv) + ["--admin", self.base], out, err, {})
        return d.addCallback(lambda code: (code, out.getvalue(), err.getvalue()))

    @inlineCallbacks
    def test_everyCommand(self):
        for argv, method, path, key in [
                (["status"], "GET", "/upstream/status", "'groups'"),
                (["add", "--port", "9001"], "GET", "/upstream/add", "'server'"),
                (["heartbeat", "--port", "9001", "--count", "1"], "GET", "/upstream/add",
                 "'server'"),
                (["remove", "--port", "9001"], "GET", "/upstream/remove", "'removed'"),
                (["routes", "list"], "GET", "/routes", "'routes'"),
                (["routes", "match", "--path", "/x"], "GET", "/routes/match", "'decided_by'"),
                (["health"], "GET", "/healthz", '"status": "ok"')]:
            code, out, err = yield self.ctl(*argv)
            self.assertEqual((code, out, err), (1, "", (
                "tproxyctl: the answer of {} {} at {} is not tproxy's admin API's (no {} "
                "in it): --admin / TPROXY_ADMIN must name the admin listener "
                "(admin.listen, default http://127.0.0.1:9180), not the proxy or a "
                "backend\n").format(method, path, self.base, key)), argv)


class NotAdminErrorTests(TestCase):
    """``--admin`` naming the proxy's port (``503 {"error": "no live
    upstream"}`` when its group has no peer) or a backend (an HTML ``404``):
    an error answer that is not the admin API's is said to be so (exit
    status 1), not reported as the admin API's own error."""

    def serve(self, status, content_type, body):
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Other(Resource):
            isLeaf = True

            def render(self, request):
                request.setResponseCode(status)
                request.setHeader(b"Content-Type", content_type)
                return body
        port = reactor.listenTCP(0, Site(Other()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return "http://127.0.0.1:{}".format(port.getHost().port)

    @inlineCallbacks
    def check(self, status, content_type, body, said):
        base = self.serve(status, content_type, body)
        for argv, path in [(["status"], "/upstream/status"),
                           (["add", "--port", "9001"], "/upstream/add"),
                           (["heartbeat", "--port", "9001", "--count", "1"], "/upstream/add"),
                           (["remove", "--port", "9001"], "/upstream/remove"),
                           (["routes", "list"], "/routes"),
                           (["health"], "/healthz")]:
            out, err = io.StringIO(), io.StringIO()
            code = yield deferToThread(ctl.main, argv + ["--admin", base], out, err, {})
            self.assertEqual((code, out.getvalue(), err.getvalue()), (1, "", (
                "tproxyctl: the answer of GET {} at {} is not tproxy's admin API's (it "
                "answered {}): --admin / TPROXY_ADMIN must name the admin listener "
                "(admin.listen, default http://127.0.0.1:9180), not the proxy or a "
                "backend\n").format(path, base, said)), argv)

    def test_proxyError(self):
        return self.check(503, b"application/json",
                          b'{"error":"no live upstream","group":"default"}',
                          "503 no live upstream")

    def test_backendPage(self):
        return self.check(404, b"text/html", b"<html>Not Found</html>", "404 (no JSON body)")
