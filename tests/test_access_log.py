"""
Tests for :mod:`tproxy.builtins.access_log`: one JSON record per request,
through twisted.logger or to a file.
"""

import json
import os

from twisted.logger import eventAsJSON, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Request, RequestContext
from tproxy.builtins import access_log

from tests.test_router import make_gateway

FIELDS = ["time", "request_id", "client", "method", "uri", "status",
          "bytes_sent", "request_time", "upstream_addr", "upstream_time",
          "route", "error"]


class AccessLogTests(SynchronousTestCase):
    """The records of finished requests."""

    def setUp(self):
        self.gateway = make_gateway()
        self.clock = self.gateway.reactor
        self.clock.advance(1700000000.25)  # 2023-11-14T22:13:20.250Z
        self.events = []
        observer = lambda e: self.events.append(e) if "access_log" in e else None
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def proxied(self):
        """A request that went to an upstream and succeeded."""
        peer, _ = self.gateway.registry.register("api", "10.0.0.5", 9001)
        ctx = RequestContext(
            self.gateway,
            Request("GET", "/api/v1/users", "q=1", client_addr="203.0.113.9",
                    remote_addr="127.0.0.1"),
            request_id="r-1", start=self.clock.seconds())
        ctx.route = "api"
        ctx.upstream_path = "/v1/users?q=1"
        ctx.peer = peer
        ctx.tried = (peer,)
        ctx.upstream_start = ctx.start + 0.001
        ctx.upstream_end = ctx.start + 0.004
        ctx.end = ctx.start + 0.005
        ctx.status = 200
        ctx.bytes_sent = 512
        return ctx

    def test_loggedAsJSONLine(self):
        """The event's text is the record as one JSON line with every field."""
        plugin = access_log.Plugin({"path": None})
        plugin.log(self.proxied())
        self.assertEqual(len(self.events), 1)
        event = self.events[0]
        self.assertEqual(event["log_namespace"], "tproxy.builtins.access_log")
        line = formatEvent(event)
        self.assertNotIn("\n", line)
        record = json.loads(line)
        self.assertEqual(list(record), FIELDS)
        self.assertEqual(record, {
            "time": "2023-11-14T22:13:20.255Z", "request_id": "r-1",
            "client": "203.0.113.9", "method": "GET",
            "uri": "/api/v1/users?q=1", "status": 200, "bytes_sent": 512,
            "request_time": 0.005, "upstream_addr": "10.0.0.5:9001",
            "upstream_time": 0.003, "route": "api", "error": None})

    def test_jsonObserverKeepsFields(self):
        """A JSON log observer keeps the record as an object."""
        access_log.Plugin().log(self.proxied())
        event = json.loads(eventAsJSON(self.events[0]))
        self.assertEqual(event["access_log"]["uri"], "/api/v1/users?q=1")
        self.assertEqual(event["access_log"]["status"], 200)
        self.assertEqual(list(event["access_log"]), FIELDS)

    def test_withoutUpstream(self):
        """A request that never reached an upstream has null upstream fields."""
        ctx = RequestContext(self.gateway, Request("POST", "/x"), "r-2",
                             start=self.clock.seconds())
        ctx.route = "default"
        ctx.status = 503
        ctx.error = "no_peer"
        ctx.bytes_sent = 120
        self.clock.advance(0.5)
        access_log.Plugin().log(ctx)  # ctx.end unset: the clock's time
        record = json.loads(formatEvent(self.events[0]))
        self.assertEqual(
            (record["time"], record["upstream_addr"], record["upstream_time"],
             record["status"], record["error"], record["request_time"]),
            ("2023-11-14T22:13:20.750Z", None, None, 503, "no_peer", 0.0))

    def test_escaping(self):
        """Quotes and control characters in the URI stay valid JSON."""
        ctx = self.proxied()
        ctx.request.path = '/a"b\\c\x01\xe9'
        access_log.Plugin().log(ctx)
        line = formatEvent(self.events[0])
        self.assertEqual(json.loads(line)["uri"], '/a"b\\c\x01\xe9?q=1')
        line.encode("ascii")

    def test_path(self):
        """With ``path`` the lines go to that file, not to the logger."""
        path = os.path.abspath(self.mktemp())
        plugin = access_log.Plugin({"path": path})
        plugin.init_worker(self.gateway)
        plugin.log(self.proxied())
        plugin.log(self.proxied())
        with open(path) as f:  # line-buffered: already there
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual([list(json.loads(l)) for l in lines], [FIELDS, FIELDS])
        self.assertEqual(self.events, [])
        self.successResultOf(self.gateway.stop())
        self.assertIsNone(plugin._file)

    def test_pathOpenedOnFirstUse(self):
        """Without ``init_worker`` the file is opened by the first record."""
        path = os.path.abspath(self.mktemp())
        plugin = access_log.Plugin({"path": path})
        self.addCleanup(plugin.close)
        plugin.log(self.proxied())
        with open(path) as f:
            self.assertEqual(json.loads(f.read())["request_id"], "r-1")

    def test_throughPhases(self):
        """Registered in a plugin manager, it runs as the ``log`` phase."""
        self.gateway.plugins.register(access_log.Plugin(), "access_log")
        self.gateway.phases.refresh()
        self.gateway.phases.log(self.proxied())
        self.assertEqual(len(self.events), 1)
