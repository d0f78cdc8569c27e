"""
Tests for :mod:`tproxy.admin_page`: the status page and its JSON endpoints,
through :mod:`tproxy.testing` (the browser test is
:mod:`tests.processes.test_admin_page_browser`), and the admin table's public routes
and non-JSON answers they rely on.
"""

import base64
import hashlib
import json
import re

from twisted.trial.unittest import SynchronousTestCase

from tproxy.admin import AdminRequest, AdminResponse, AdminRoutes
from tproxy.admin_page import MAX_LIMIT
from tproxy.testing import UNREACHABLE, Harness, StreamHarness, StreamServer, echo

TOKEN = "s3cret"
AUTH = {"Authorization": "Bearer " + TOKEN}


def csp_directives(value):
    """``{directive: [values]}`` of a Content-Security-Policy."""
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def sha256(text):
    return "'sha256-{}'".format(base64.b64encode(
        hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii"))


class PageTests(SynchronousTestCase):
    """``GET /``: the HTML page, its headers, served without the token."""

    def setUp(self):
        self.h = Harness(config={"admin": {"token": TOKEN}},
                         plugins=["registry", "router", "least_conn"])

    def page(self, method="GET"):
        """The admin table's answer to ``method /`` (not JSON: the harness's
        ``admin()`` would decode it)."""
        return self.successResultOf(self.h.gateway.admin.dispatch(AdminRequest(method, "/")))

    def test_servedWithoutToken(self):
        """The page holds no data: no token needed, HTML."""
        r = self.page()
        self.assertEqual(r.status, 200)
        self.assertEqual(dict(r.headers)["Content-Type"], "text/html; charset=utf-8")
        self.assertTrue(r.body.startswith(b"<!DOCTYPE html>"))
        self.assertIn(b"<title>tproxy status</title>", r.body)
        self.assertEqual(self.page("HEAD").status, 200)

    def test_onlyGet(self):
        """Only ``GET`` and ``HEAD`` are public: another method still needs
        the token, and with it is a ``405``."""
        self.assertEqual(self.h.admin("POST", "/").status, 401)
        r = self.h.admin("POST", "/", headers=AUTH)
        self.assertEqual((r.status, r.obj["allowed"]), (405, ["GET", "HEAD"]))

    def test_securityHeaders(self):
        """No framing, no sniffing, no referrer; the policy allows exactly the
        page's inline script and style, by hash."""
        r = self.page()
        headers = dict(r.headers)
        self.assertEqual(headers["X-Frame-Options"], "DENY")
        self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
        self.assertEqual(headers["Referrer-Policy"], "no-referrer")
        csp = csp_directives(headers["Content-Security-Policy"])
        self.assertEqual(csp["frame-ancestors"], ["'none'"])
        self.assertEqual(csp["default-src"], ["'self'"])
        self.assertEqual(csp["connect-src"], ["'self'"])
        html = r.body.decode("utf-8")
        scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
        styles = re.findall(r"<style>(.*?)</style>", html, re.S)
        self.assertEqual(len(scripts), 1)
        self.assertEqual(len(styles), 1)
        self.assertEqual(csp["script-src"], [sha256(scripts[0])])
        self.assertEqual(csp["style-src"], [sha256(styles[0])])
        self.assertNotIn("'unsafe-inline'", headers["Content-Security-Policy"])

    def test_selfContained(self):
        """No external asset: no URL of another origin, no ``src`` to load,
        no stylesheet link, no inline event handler or style attribute (the
        policy would block them)."""
        html = self.page().body.decode("utf-8")
        self.assertNotRegex(html, r"(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/")
        self.assertNotRegex(html, r"(?i)<(script|img|iframe)[^>]*\ssrc=")
        self.assertNotRegex(html, r"(?i)rel=\"stylesheet\"")
        self.assertNotRegex(html, r"(?i)\son[a-z]+=\"")
        self.assertNotRegex(html, r"(?i)<[a-z]+[^>]*\sstyle=")
        # and no HTML made from data: text only
        self.assertNotIn("innerHTML", html)
        self.assertNotIn("eval(", html)
        self.assertLess(len(html), 64 * 1024)

    def test_tokenNeverInUrl(self):
        """The script sends the token as a header and keeps it in the tab's
        session storage, never in a URL or in local storage."""
        html = self.page().body.decode("utf-8")
        self.assertIn('"Bearer " + state.token', html)
        self.assertIn("sessionStorage", html)
        self.assertNotIn("localStorage", html)
        self.assertNotRegex(html, r"[?&]token=")

    def test_dataNeedsToken(self):
        """Every endpoint the page reads answers ``401`` without the token."""
        for uri in ("/status/overview", "/status/groups", "/status/peers?group=x",
                    "/upstream/status"):
            self.assertEqual(self.h.admin("GET", uri).status, 401, uri)
            self.assertNotEqual(self.h.admin("GET", uri, headers=AUTH).status, 401, uri)

    def test_readOnly(self):
        """The page's endpoints are ``GET`` only."""
        for uri in ("/status/overview", "/status/groups", "/status/peers"):
            self.assertEqual(self.h.admin("POST", uri, headers=AUTH).status, 405, uri)


class OverviewTests(SynchronousTestCase):
    """``GET /status/overview``."""

    def setUp(self):
        self.h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}},
                                 "registry": {"cleanup_interval": 3600}},
                         plugins=["registry", "router", "least_conn"],
                         servers={"127.0.0.1:9001": echo})

    def overview(self):
        r = self.h.admin("GET", "/status/overview")
        self.assertEqual(r.status, 200)
        return r.obj

    def test_counts(self):
        """Requests, peers, groups, uptime, as the gateway sees them."""
        self.h.admin("GET", "/upstream/add?port=9002&host=10.0.0.2&prefix=web")
        for _ in range(3):
            self.assertEqual(self.h.request("GET", "/api/x").status, 200)
        self.h.clock.advance(30)
        self.h.clock.advance(31)   # the dynamic peer expired (ttl 60)
        o = self.overview()
        self.assertEqual((o["requests_total"], o["groups"], o["peers"], o["live"],
                          o["in_flight"], o["connections"]), (3, 2, 2, 1, 0, 0))
        self.assertEqual(o["uptime"], 61)
        self.assertEqual(o["listeners"], [
            {"name": "proxy", "listen": "memory", "connections": 0, "requests": 3}])
        self.assertEqual(o["streams"], [])

    def test_requestsPerSecond(self):
        """Since the start at first, then since the latest call at least ten
        seconds before (or the oldest call)."""
        for _ in range(10):
            self.h.request("GET", "/api/x")
        self.h.clock.advance(2)
        self.assertEqual(self.overview()["requests_per_second"], 5)
        for _ in range(30):
            self.h.request("GET", "/api/x")
        self.h.clock.advance(3)
        self.assertEqual(self.overview()["requests_per_second"], 10)
        self.h.clock.advance(20)   # no request for 20 s
        self.assertEqual(self.overview()["requests_per_second"], 0)
        for _ in range(10):
            self.h.request("GET", "/api/x")
        self.h.clock.advance(5)
        # since the call at 5 s, the latest one at least ten seconds old
        self.assertEqual(self.overview()["requests_per_second"], 0.4)

    def test_plugins(self):
        """The plugins of each phase, in order, as ``--list-plugins`` says."""
        phases = dict((p["phase"], p["plugins"]) for p in self.overview()["plugins"])
        self.assertEqual(phases["init_worker"][:3], ["registry", "router", "least_conn"])
        self.assertEqual(phases["rewrite"][:1], ["router"])
        self.assertEqual(phases["balancer"], ["least_conn"])
        self.assertEqual(phases["access"], [])

    def test_inFlight(self):
        """A request waiting for its upstream counts in ``in_flight``."""
        h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}},
                    plugins=["registry", "router", "least_conn"],
                    servers={"127.0.0.1:9001": UNREACHABLE})
        pending = h.request("GET", "/api/x", wait=False)
        o = h.admin("GET", "/status/overview").obj
        self.assertEqual((o["in_flight"], o["connections"]), (1, 1))
        groups = h.admin("GET", "/status/groups").obj["groups"]
        self.assertEqual(groups[0]["in_flight"], 1)
        h.clock.advance(120)
        self.assertEqual(pending.result().status, 504)


class StreamOverviewTests(SynchronousTestCase):
    """The overview lists stream listeners and their open sessions."""

    def test_sessions(self):
        h = StreamHarness(
            config={"upstreams": {"redis": {"peers": ["127.0.0.1:6379"]}}},
            stream={"group": "redis", "listen": "tcp:6380"},
            plugins=["least_conn"],
            servers={"127.0.0.1:6379": StreamServer(echo=True)})
        client = h.connect(client="192.0.2.7", port=5555)
        client.send(b"PING\r\n")
        h.clock.advance(2)
        h.connect(client="192.0.2.8", port=5556).close()
        d = h.gateway.admin.handle(AdminRequest("GET", "/status/overview"))
        status, o = self.successResultOf(d)
        self.assertEqual(status, 200)
        [stream] = o["streams"]
        self.assertEqual((stream["listen"], stream["group"], stream["sessions"],
                          stream["total"]), ("tcp:6380", "redis", 1, 2))
        self.assertEqual(stream["recent"], [{
            "id": 1, "client": "192.0.2.7:5555", "upstream": "127.0.0.1:6379",
            "age": 2, "bytes_received": 6, "bytes_sent": 6}])
        self.assertEqual(o["listeners"], [
            {"name": "stream", "listen": "tcp:6380", "sessions": 1}])


class GroupsTests(SynchronousTestCase):
    """``GET /status/groups``: summaries, a page at a time."""

    def setUp(self):
        # (registered through the registry itself: 240 /upstream/add requests
        # for each test were a quarter of the module's CPU; /upstream/add has
        # its own tests, tests.test_admin)
        self.h = Harness(plugins=["registry"])
        for i in range(120):
            for port in (1, 2):
                self.h.registry.register("g{:03d}".format(i), "10.0.0.1", port, 2)

    def get(self, query=""):
        return self.h.admin("GET", "/status/groups" + query)

    def test_firstPage(self):
        r = self.get()
        self.assertEqual(r.status, 200)
        o = r.obj
        self.assertEqual((o["offset"], o["limit"], o["matched"], o["total_groups"]),
                         (0, 50, 120, 120))
        self.assertEqual([g["prefix"] for g in o["groups"]],
                         ["g{:03d}".format(i) for i in range(50)])
        self.assertEqual(o["groups"][0], {"prefix": "g000", "total": 2, "live": 2,
                                          "healthy": 2, "static": 0, "in_flight": 0,
                                          "requests": 0, "weight": 4})

    def test_lastPage(self):
        o = self.get("?offset=100&limit=50").obj
        self.assertEqual([g["prefix"] for g in o["groups"]],
                         ["g{:03d}".format(i) for i in range(100, 120)])

    def test_filter(self):
        o = self.get("?q=g11").obj
        self.assertEqual(o["matched"], 10)
        self.assertEqual(o["groups"][0]["prefix"], "g110")

    def test_badArguments(self):
        """A precise ``400`` naming the argument."""
        for query, field in (("?limit=0", "limit"), ("?limit={}".format(MAX_LIMIT + 1), "limit"),
                             ("?limit=x", "limit"), ("?offset=-1", "offset"),
                             ("?offset=%D9%A3", "offset"), ("?limit=+5", "limit")):
            r = self.get(query)
            self.assertEqual((r.status, r.obj["field"]), (400, field), query)
            self.assertIn("must be an integer from", r.obj["error"])


class PeersTests(SynchronousTestCase):
    """``GET /status/peers``: one group's peers, a page at a time."""

    def setUp(self):
        self.h = Harness(config={"upstreams": {"api": {"peers": ["10.0.0.9:80"]}}},
                         plugins=["registry"])
        for port in (3, 1, 2):
            self.h.admin("GET", "/upstream/add?host=10.0.0.1&port={}&prefix=api".format(port))
            self.h.clock.advance(5)

    def get(self, query):
        return self.h.admin("GET", "/status/peers" + query)

    def test_page(self):
        """Sorted by host and port, each with its status view, liveness,
        heartbeat age and time to expiry."""
        o = self.get("?group=api&limit=2").obj
        self.assertEqual((o["group"], o["matched"], o["total"], o["offset"], o["limit"]),
                         ("api", 4, 4, 0, 2))
        self.assertEqual([p["address"] for p in o["peers"]], ["10.0.0.1:1", "10.0.0.1:2"])
        first = o["peers"][0]
        self.assertEqual((first["heartbeat_age"], first["expires_in"], first["live"],
                          first["conn_count"], first["weight"], first["total_requests"]),
                         (10, 50, True, 0, 1, 0))
        o = self.get("?group=api&offset=2&limit=2").obj
        self.assertEqual([p["address"] for p in o["peers"]], ["10.0.0.1:3", "10.0.0.9:80"])
        static = o["peers"][1]
        self.assertEqual((static["static"], static["heartbeat_age"], static["expires_in"]),
                         (True, None, None))

    def test_statusFields(self):
        """Every field of ``/upstream/status`` is there (and whatever the
        registry adds later, health included, is passed on)."""
        [status] = self.h.admin("GET", "/upstream/status?prefix=api").obj["groups"]
        peers = self.get("?group=api").obj["peers"]
        for seen, page in zip(status["servers"], peers):
            for key, value in seen.items():
                self.assertEqual(page[key], value, key)

    def test_health(self):
        """A gateway's health state (``gateway.health.as_dict(peer)``, as
        ``/upstream/status`` shows it) is each peer's ``health``."""
        class Health(object):
            def as_dict(self, peer):
                return {"healthy": peer.port != 2, "fails": peer.port}
        self.h.gateway.health = Health()
        peers = self.get("?group=api").obj["peers"]
        self.assertEqual([p["health"] for p in peers[:2]],
                         [{"healthy": True, "fails": 1}, {"healthy": False, "fails": 2}])

    def test_filter(self):
        o = self.get("?group=api&q=:2").obj
        self.assertEqual(([p["address"] for p in o["peers"]], o["matched"], o["total"]),
                         (["10.0.0.1:2"], 1, 4))

    def test_errors(self):
        r = self.get("")
        self.assertEqual((r.status, r.obj["field"]), (400, "group"))
        r = self.get("?group=nope")
        self.assertEqual((r.status, r.obj), (404, {"error": "no such group", "group": "nope"}))
        r = self.get("?group=api&offset=x")
        self.assertEqual((r.status, r.obj["field"]), (400, "offset"))


class TenThousandPeersTests(SynchronousTestCase):
    """With 10,000 peers, what the page polls stays a few kilobytes."""

    def test_sizes(self):
        h = Harness(plugins=["registry"])
        for i in range(10000):
            h.registry.register("group{}".format(i % 40), "10.{}.{}.{}".format(
                i // 65536, i // 256 % 256, i % 256), 8000)
        sizes = {}
        for uri in ("/status/overview", "/status/groups", "/status/peers?group=group7"):
            r = h.admin("GET", uri)
            self.assertEqual(r.status, 200)
            sizes[uri] = len(r.body)
        self.assertEqual(h.admin("GET", "/status/overview").obj["peers"], 10000)
        self.assertEqual(h.admin("GET", "/status/peers?group=group7").obj["total"], 250)
        for uri, size in sizes.items():
            self.assertLess(size, 32 * 1024, uri)
        # the whole registry as /upstream/status has it would be megabytes
        self.assertGreater(len(h.admin("GET", "/upstream/status").body), 1024 * 1024)


class PublicRouteTests(SynchronousTestCase):
    """``AdminRoutes.route(..., public=True)``, and handlers that answer an
    :class:`AdminResponse` of their own ``Content-Type``."""

    def handle(self, routes, method, path, headers=None):
        return self.successResultOf(routes.dispatch(AdminRequest(method, path, headers=headers)))

    def test_public(self):
        routes = AdminRoutes(token="t")
        routes.route("GET", "/", lambda r: AdminResponse(
            200, None, [("Content-Type", "text/html")], b"<p>"), public=True)
        routes.route("GET", "/data", lambda r: (200, {"secret": 1}))
        r = self.handle(routes, "GET", "/")
        self.assertEqual((r.status, r.body, r.headers),
                         (200, b"<p>", [("Content-Type", "text/html")]))
        self.assertEqual(self.handle(routes, "HEAD", "/").status, 200)
        self.assertEqual(self.handle(routes, "GET", "/data").status, 401)
        self.assertEqual(self.handle(routes, "GET", "/data", {"Authorization": "Bearer t"}).obj,
                         {"secret": 1})

    def test_replacedNotPublic(self):
        """Replacing a public route without ``public`` makes it private."""
        routes = AdminRoutes(token="t")
        routes.route("GET", "/", lambda r: (200, {}), public=True)
        self.assertEqual(self.handle(routes, "GET", "/").status, 200)
        routes.route("GET", "/", lambda r: (200, {}))
        self.assertEqual(self.handle(routes, "GET", "/").status, 401)
        self.assertEqual(AdminRoutes(token="t").public, set())

    def test_noPublicPatterns(self):
        routes = AdminRoutes(token="t")
        self.assertRaises(ValueError, routes.route, "GET", "/x/{name}",
                          lambda r: (200, {}), public=True)

    def test_jsonByDefault(self):
        routes = AdminRoutes()
        routes.route("GET", "/", lambda r: (200, {"a": 1}))
        r = self.handle(routes, "GET", "/")
        self.assertEqual((r.headers, json.loads(r.body)), ([], {"a": 1}))
