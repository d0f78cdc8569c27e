"""
Tests for :mod:`tproxy.admin` and the admin API of
:mod:`tproxy.builtins.registry`: through the admin listener of a
:class:`tproxy.testing.Harness` (HTTP in memory, every check included), and
over a real loopback socket for what a socket shows (bodies refused before
they are read, a half-close, keep-alive).
"""

from urllib.parse import urlencode

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from tests.test_registry import make_gateway
from tproxy.admin import MAX_BODY_SIZE, AdminRequest, AdminRoutes
from tproxy.builtins.registry import parse_host, parse_prefix
from tproxy.config import validate_config
from tproxy.testing import Harness


def _static(peer):
    """(host, port, weight) of a static peer as the configuration has it."""
    p, = validate_config({"upstreams": {"g": {"peers": [peer]}}})["upstreams"]["g"]["peers"]
    return p["host"], p["port"], p["weight"]


class _Collect(Protocol):
    """Sends ``data`` on connect and collects everything until the close."""

    def __init__(self, data, half_close=False):
        self.data = data
        self.half_close = half_close
        self.received = []
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.data)
        if self.half_close:
            self.transport.loseWriteConnection()

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.received))


class _Answer(object):
    """What a test reads of an admin response besides its JSON: ``headers``
    (``getRawHeaders``)."""

    def __init__(self, response):
        self.headers = Headers()
        for name, value in response.headers:
            self.headers.addRawHeader(name, value)


class AdminServerMixin(object):
    """
    A gateway with the registry plugin in a :class:`tproxy.testing.Harness`
    (``h``); ``request()`` talks to its admin listener over in-memory HTTP.
    """

    token = None
    trusted_proxies = ()
    upstreams = None

    def setUp(self):
        self.h = Harness(config={"admin": {"token": self.token},
                                 "trusted_proxies": list(self.trusted_proxies),
                                 "upstreams": self.upstreams or {}},
                         plugins=["registry"])
        self.gateway = self.h.gateway
        self.registry = self.h.registry
        self.plugin = self.h.plugin("registry")

    def request(self, path, method="GET", headers=None, data=None, auth=True):
        """A Deferred (fired) of ``(status, response, obj)`` of one request
        from 127.0.0.1; ``obj`` is the JSON body (``None`` when empty);
        ``data``, a ``dict``, is sent as a form."""
        headers = dict(headers or {})
        if self.token and auth and "Authorization" not in headers:
            headers["Authorization"] = "Bearer " + self.token
        body = b""
        if data is not None:
            body = urlencode(data).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = self.h.admin(method, path, headers=headers, body=body)
        return succeed((response.status, _Answer(response), response.obj))

    @inlineCallbacks
    def status(self, query=""):
        code, _, obj = yield self.request("/upstream/status" + query)
        self.assertEqual(code, 200)
        return obj


class AdminSocketMixin(object):
    """
    A gateway with the registry plugin on the real reactor and its admin
    Site on a loopback port; ``raw()`` sends it bytes.
    """

    def setUp(self):
        self.gateway, self.plugin = make_gateway(reactor)
        self.registry = self.gateway.registry
        self.addCleanup(self.gateway.stop)
        self.successResultOf(self.gateway.start())
        self.port = reactor.listenTCP(0, self.gateway.admin.site(),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    @inlineCallbacks
    def raw(self, data, half_close=False):
        """Send bytes on a new connection (then close the sending side if
        ``half_close``); everything received until close."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        protocol = _Collect(data, half_close)
        yield connectProtocol(endpoint, protocol)
        received = yield protocol.done
        return received


class RegistryApiTests(AdminServerMixin, TestCase):
    """/upstream/add, /upstream/remove, /upstream/status."""

    upstreams = {"static": {"peers": [{"host": "10.0.0.9", "port": 80, "weight": 1}]}}

    @inlineCallbacks
    def test_addDefaults(self):
        """host defaults to the caller's address, prefix to ``default``,
        weight to 1."""
        code, response, obj = yield self.request("/upstream/add?port=9001")
        self.assertEqual(code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/json"])
        self.assertEqual(obj, {
            "success": True, "server": "default:127.0.0.1:9001",
            "prefix": "default", "host": "127.0.0.1", "port": 9001, "weight": 1,
            "max_conns": 0,
            "created": True, "static": False, "expires_in": 60, "routable": True})
        peer = self.registry.group("default").peers[("127.0.0.1", 9001)]
        self.assertTrue(peer.is_live(self.registry.now()))

    @inlineCallbacks
    def test_addHeartbeat(self):
        """A second add heartbeats: created is false; a weight is kept
        unless given."""
        yield self.request("/upstream/add?host=10.0.0.1&port=9001&prefix=api&weight=7")
        code, _, obj = yield self.request("/upstream/add?host=10.0.0.1&port=9001&prefix=api")
        self.assertEqual(code, 200)
        self.assertEqual((obj["created"], obj["weight"], obj["server"]),
                         (False, 7, "api:10.0.0.1:9001"))
        code, _, obj = yield self.request(
            "/upstream/add?host=10.0.0.1&port=9001&prefix=api&weight=2")
        self.assertEqual(obj["weight"], 2)
        status = yield self.status("?prefix=api")
        self.assertEqual(status["total_servers"], 1)

    @inlineCallbacks
    def test_prefixSlash(self):
        """``/api``, ``api`` and ``api/`` name the same group."""
        for prefix in ("/api", "api", "api/", "%2Fapi"):
            code, _, obj = yield self.request(
                "/upstream/add?host=10.0.0.1&port=9001&prefix=" + prefix)
            self.assertEqual((code, obj["prefix"]), (200, "api"))
        self.assertEqual(len(self.registry.group("api").peers), 1)

    @inlineCallbacks
    def test_nestedPrefix(self):
        """A prefix may have several segments."""
        code, _, obj = yield self.request(
            "/upstream/add?host=10.0.0.1&port=9001&prefix=/api/v2")
        self.assertEqual((code, obj["server"]), (200, "api/v2:10.0.0.1:9001"))

    @inlineCallbacks
    def test_hostNormalised(self):
        """Host names are lower-cased, IPv6 addresses compressed and
        unbracketed."""
        code, _, obj = yield self.request("/upstream/add?host=Backend.Example.COM&port=80")
        self.assertEqual((code, obj["host"]), (200, "backend.example.com"))
        code, _, obj = yield self.request("/upstream/add?host=%5B0:0::1%5D&port=80")
        self.assertEqual((code, obj["host"], obj["server"]),
                         (200, "::1", "default:[::1]:80"))

    @inlineCallbacks
    def test_staticPeerHeartbeat(self):
        """A registration of a static peer, however its host is spelled in
        the configuration, is that peer (not a second one)."""
        self.gateway.registry.add_static("api", *_static("Backend.Example.COM:80"))
        code, _, obj = yield self.request(
            "/upstream/add?host=backend.example.com&port=80&prefix=api")
        self.assertEqual(code, 200)
        self.assertEqual(len(self.gateway.registry.group("api").peers), 1)

    @inlineCallbacks
    def test_ownListenerRefused(self):
        """A backend at one of tproxy's own listeners (the proxy's
        ``tcp:8080``, the admin API's ``tcp:9180:interface=127.0.0.1``)
        would be tproxy itself: a loop, or the admin API served to every
        client of the proxy.  400, nothing registered."""
        for uri, listener in (("/upstream/add?port=8080", "proxy"),
                              ("/upstream/add?host=localhost&port=8080", "proxy"),
                              ("/upstream/add?host=127.0.0.1&port=9180", "admin API")):
            code, _, obj = yield self.request(uri)
            self.assertEqual((code, obj["field"]), (400, "port"), uri)
            self.assertIn("is tproxy's own {} listener".format(listener), obj["error"])
        self.assertIsNone(self.registry.group("default"))
        for uri in ("/upstream/add?host=127.0.0.2&port=9180",   # (admin: 127.0.0.1 only)
                    "/upstream/add?host=10.0.0.7&port=8080"):
            code, _, obj = yield self.request(uri)
            self.assertEqual(code, 200, (uri, obj))

    @inlineCallbacks
    def test_unknownParameterRefused(self):
        """A parameter the API does not know is a 400 that names it, and
        changes nothing: a misspelt ``prefx`` does not remove the default
        group's server."""
        code, _, obj = yield self.request("/upstream/add?port=9001&colour=blue")
        self.assertEqual((code, obj["field"], obj["value"]), (400, "colour", "blue"))
        self.assertIn("unknown parameter 'colour' (known: host, max_conns, port, prefix, "
                      "routable, weight)", obj["error"])
        self.assertIsNone(self.gateway.registry.group("default"))
        code, _, obj = yield self.request("/upstream/add?port=9001")
        self.assertEqual(code, 200)
        for uri in ("/upstream/remove?port=9001&prefx=api",
                    "/upstream/remove?port=9001&Prefix=api"):
            code, _, obj = yield self.request(uri)
            self.assertEqual(code, 400, uri)
        self.assertEqual(len(self.gateway.registry.group("default").peers), 1)
        code, _, obj = yield self.request("/upstream/remove?port=9001&weight=3")
        self.assertEqual(code, 200, "add's parameters are taken by remove")

    @inlineCallbacks
    def test_postForm(self):
        """add and remove also take POST with a form body."""
        code, _, obj = yield self.request(
            "/upstream/add", method="POST",
            data={"port": "9001", "prefix": "api", "host": "10.0.0.1"})
        self.assertEqual((code, obj["server"]), (200, "api:10.0.0.1:9001"))
        code, _, obj = yield self.request(
            "/upstream/remove?prefix=api", method="POST",
            data={"port": "9001", "host": "10.0.0.1"})
        self.assertEqual((code, obj["removed"]), (200, "api:10.0.0.1:9001"))

    def test_bodyNotRead(self):
        """A body the API does not read (``text/plain``, no Content-Type) is
        a ``415`` naming the types it reads, not ``port is required``; the
        registry is unchanged."""
        before = self.h.admin("GET", "/upstream/status").obj["groups"]
        for ctype in ("text/plain", "multipart/form-data; boundary=x", None):
            headers = {"Content-Type": ctype} if ctype else {}
            for path in ("/upstream/add", "/upstream/servers", "/upstream/remove"):
                answer = self.h.admin("POST", path, headers=headers, body=b"port=9001")
                self.assertEqual(answer.status, 415, (ctype, path, answer.obj))
                self.assertEqual(answer.obj["field"], "body")
                self.assertIn("application/json", answer.obj["error"])
                self.assertEqual(answer.obj["value"], ctype and ctype.split(";")[0])
        self.assertEqual(self.h.admin("GET", "/upstream/status").obj["groups"], before)

    def test_jsonSentAsForm(self):
        """A JSON object sent as a form (``curl -d '{"port": 9001}'``, whose
        Content-Type is ``application/x-www-form-urlencoded``) is a ``400``
        saying so, even with a percent sign that is no form's escape."""
        before = self.h.admin("GET", "/upstream/status").obj["groups"]
        for body in (b'{"port": 9001}', b'  {"port": 9001, "prefix": "a%ff"}'):
            answer = self.h.admin("POST", "/upstream/servers", body=body, headers={
                "Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(answer.status, 400, answer.obj)
            self.assertEqual(answer.obj["field"], "body")
            self.assertIn("Content-Type: application/json", answer.obj["error"])
        self.assertEqual(self.h.admin("GET", "/upstream/status").obj["groups"], before)

    @inlineCallbacks
    def test_remove(self):
        """remove answers success once, then 404."""
        yield self.request("/upstream/add?port=9001&prefix=api")
        code, _, obj = yield self.request("/upstream/remove?port=9001&prefix=api")
        self.assertEqual(code, 200)
        self.assertEqual(obj, {
            "success": True, "removed": "api:127.0.0.1:9001",
            "server": "api:127.0.0.1:9001", "prefix": "api", "host": "127.0.0.1",
            "port": 9001})
        self.assertIsNone(self.registry.group("api"))
        code, _, obj = yield self.request("/upstream/remove?port=9001&prefix=api")
        self.assertEqual(code, 404)
        self.assertEqual(obj["error"], "server not registered")

    @inlineCallbacks
    def test_removeUnknown(self):
        """Removing a server that was never registered is a 404 (not a
        success) and changes nothing."""
        yield self.request("/upstream/add?host=10.0.0.1&port=9001")
        for query in ("host=10.0.0.1&port=8081", "host=10.0.0.2&port=9001"):
            code, _, obj = yield self.request("/upstream/remove?" + query)
            self.assertEqual(code, 404, query)
            self.assertEqual(obj["error"], "server not registered")
        code, _, obj = yield self.request(
            "/upstream/remove?host=10.0.0.1&port=9001&prefix=api")
        self.assertEqual(code, 404)
        self.assertEqual(obj["registered_under"], ["default"])
        self.assertEqual(obj["error"], "server not registered under prefix 'api'; it "
                         "is registered under 'default' (pass prefix=default)")
        status = yield self.status("?prefix=default")
        self.assertEqual(status["total_servers"], 1)

    @inlineCallbacks
    def test_removeStatic(self):
        """A server of the configuration cannot be removed: 409."""
        code, _, obj = yield self.request(
            "/upstream/remove?host=10.0.0.9&port=80&prefix=static")
        self.assertEqual(code, 409)
        self.assertIn("cannot be removed", obj["error"])
        self.assertIn(("10.0.0.9", 80), self.registry.group("static").peers)

    @inlineCallbacks
    def test_addStatic(self):
        """Registering a server of the configuration is a harmless heartbeat."""
        code, _, obj = yield self.request(
            "/upstream/add?host=10.0.0.9&port=80&prefix=static")
        self.assertEqual((code, obj["created"], obj["static"], obj["expires_in"]),
                         (200, False, True, None))

    @inlineCallbacks
    def test_status(self):
        """status groups servers by prefix, sorted, with counts."""
        for query in ("host=10.0.0.2&port=2&prefix=api",
                      "host=10.0.0.1&port=9&prefix=api&weight=3",
                      "host=10.0.0.1&port=1&prefix=api",
                      "host=10.0.0.5&port=5"):
            code, _, _ = yield self.request("/upstream/add?" + query)
            self.assertEqual(code, 200)
        self.registry.group("api").peers[("10.0.0.1", 1)].acquire()
        before = self.registry.now()
        status = yield self.status()
        after = self.registry.now()
        self.assertEqual([g["prefix"] for g in status["groups"]],
                         ["api", "default", "static"])
        self.assertEqual((status["total_groups"], status["total_servers"]), (3, 5))
        self.assertTrue(before <= status["timestamp"] <= after)
        api = status["groups"][0]
        self.assertEqual((api["live"], api["total"]), (3, 3))
        self.assertEqual([(s["host"], s["port"]) for s in api["servers"]],
                         [("10.0.0.1", 1), ("10.0.0.1", 9), ("10.0.0.2", 2)])
        first = api["servers"][0]
        for key in ("host", "port", "prefix", "weight", "conn_count",
                    "last_heartbeat", "created_time", "live", "static"):
            self.assertIn(key, first)
        self.assertEqual((first["conn_count"], first["prefix"], first["live"]),
                         (1, "api", True))
        self.assertEqual(api["servers"][1]["weight"], 3)
        static = status["groups"][2]
        self.assertEqual(static["servers"][0]["static"], True)

    @inlineCallbacks
    def test_statusFilter(self):
        """``?prefix=`` keeps one group; an unknown one gives none."""
        yield self.request("/upstream/add?port=1&prefix=api")
        status = yield self.status("?prefix=/api")
        self.assertEqual([g["prefix"] for g in status["groups"]], ["api"])
        status = yield self.status("?prefix=nothing")
        self.assertEqual((status["groups"], status["total_servers"]), ([], 0))
        code, _, obj = yield self.request("/upstream/status?prefix=a:b")
        self.assertEqual((code, obj["field"]), (400, "prefix"))

    @inlineCallbacks
    def test_statusShowsExpired(self):
        """An expired registration not yet cleaned up shows as not live."""
        peer, _ = self.registry.register("api", "10.0.0.1", 1)
        peer.expires_at = self.registry.now() - 1
        status = yield self.status("?prefix=api")
        self.assertEqual(status["groups"][0]["live"], 0)
        self.assertFalse(status["groups"][0]["servers"][0]["live"])

    BAD = [
        ("", "port"), ("port=", "port"), ("port=abc", "port"), ("port=0", "port"),
        ("port=65536", "port"), ("port=99999999", "port"), ("port=%2B80", "port"),
        ("port=-1", "port"), ("port=%2080", "port"), ("port=80%20", "port"),
        ("port=8%200", "port"), ("port=1e3", "port"), ("port=0x50", "port"),
        ("port=8.0", "port"), ("port=%EF%BC%98%EF%BC%90", "port"),
        ("port=80%0A", "port"),
        ("port=80&host=bad%20host", "host"), ("port=80&host=a..b", "host"),
        ("port=80&host=-a.com", "host"), ("port=80&host=a-.com", "host"),
        ("port=80&host=.a.com", "host"), ("port=80&host=a.com.", "host"),
        ("port=80&host=host:80", "host"), ("port=80&host=256.1.1.1", "host"),
        ("port=80&host=1.2.3", "host"), ("port=80&host=" + "a" * 254, "host"),
        ("port=80&host=" + "a" * 64 + ".com", "host"),
        ("port=80&host=%5B1.2.3.4%5D", "host"), ("port=80&host=fe80::1%25eth0", "host"),
        ("port=80&host=%5B::1", "host"), ("port=80&host=1::2::3", "host"),
        ("port=80&host=a%2Fb", "host"), ("port=80&host=%C3%A4.com", "host"),
        ("port=80&host=a%00b", "host"),
        ("port=80&prefix=a:b", "prefix"), ("port=80&prefix=a%20b", "prefix"),
        ("port=80&prefix=a//b", "prefix"), ("port=80&prefix=..", "prefix"),
        ("port=80&prefix=a/../b", "prefix"), ("port=80&prefix=a/./b", "prefix"),
        ("port=80&prefix=//x", "prefix"), ("port=80&prefix=" + "x" * 201, "prefix"),
        ("port=80&prefix=a%3Fb", "prefix"), ("port=80&prefix=%C3%A4", "prefix"),
        ("port=80&prefix=a%22b", "prefix"),
        ("port=80&weight=0", "weight"), ("port=80&weight=1001", "weight"),
        ("port=80&weight=-1", "weight"), ("port=80&weight=1.5", "weight"),
        ("port=80&weight=abc", "weight"), ("port=80&weight=%2B2", "weight"),
        ("port=80&weight=%202", "weight"),
    ]

    @inlineCallbacks
    def test_badParameters(self):
        """Each bad parameter is a 400 naming the field, and the registry
        is unchanged."""
        yield self.request("/upstream/add?host=10.0.0.1&port=80&weight=5")
        before = yield self.status()
        for query, field in self.BAD:
            code, response, obj = yield self.request("/upstream/add?" + query)
            self.assertEqual((code, obj.get("field")), (400, field), query)
            self.assertIsInstance(obj["error"], str)
            self.assertEqual(response.headers.getRawHeaders("content-type"),
                             ["application/json"])
            if field != "weight":
                code, _, obj = yield self.request("/upstream/remove?" + query)
                self.assertEqual((code, obj.get("field")), (400, field), query)
        after = yield self.status()
        del before["timestamp"], after["timestamp"]
        self.assertEqual(after, before)

    @inlineCallbacks
    def test_badParameterEchoed(self):
        """The bad value is sent back as JSON, escaped (not concatenated)."""
        code, _, obj = yield self.request('/upstream/add?port=80&prefix=%22%7D%2C%22x%22%3A%22')
        self.assertEqual(code, 400)
        self.assertEqual(obj["value"], '"},"x":"')
        self.assertNotIn("x", obj)

    @inlineCallbacks
    def test_goodHosts(self):
        """Names, IPv4 and IPv6 literals are accepted."""
        for host in ("localhost", "backend-1.internal", "my_service", "10.1.2.3",
                     "2001:db8::1", "%5B2001:db8::2%5D", "a" * 63 + ".com",
                     "xn--bcher-kva.example"):
            code, _, obj = yield self.request("/upstream/add?port=80&host=" + host)
            self.assertEqual(code, 200, (host, obj))

    @inlineCallbacks
    def test_invalidUtf8(self):
        """A query that is not UTF-8 is a 400."""
        code, _, obj = yield self.request("/upstream/add?port=80&host=%FF")
        self.assertEqual(code, 400)
        self.assertIn("UTF-8", obj["error"])


class AdminRoutingTests(AdminServerMixin, TestCase):
    """The admin Site itself: 404, 405, 500, HEAD, JSON."""

    @inlineCallbacks
    def test_unknownPath(self):
        """An unknown path is a 404 JSON error."""
        code, response, obj = yield self.request("/upstream/nothing")
        self.assertEqual(code, 404)
        self.assertEqual(obj, {"error": "not found", "path": "/upstream/nothing"})
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/json"])

    @inlineCallbacks
    def test_pluginPathNotFound(self):
        """A 404 under the admin path of a built-in plugin that is not active
        (``/routes`` without ``routes``) says which plugin serves it."""
        code, _, obj = yield self.request("/routes/users")
        self.assertEqual((code, obj), (404, {
            "error": "not found", "path": "/routes/users",
            "hint": "/routes is served by the routes plugin (at that path by "
                    "default): add \"routes\" to plugins"}))
        code, _, obj = yield self.request("/metrics")
        self.assertIn("the prometheus plugin", obj["hint"])
        code, _, obj = yield self.request("/routesx")
        self.assertNotIn("hint", obj)
        # the registry plugin is active: a path of its own that does not
        # exist gets no hint (test_unknownPath)

    def test_registryPathNotFound(self):
        """Without the registry plugin, ``/upstream/status`` (``tproxyctl
        status``) says which plugin serves it."""
        h = Harness(plugins=["router", "least_conn"])
        response = h.admin("GET", "/upstream/status")
        self.assertEqual((response.status, response.obj["hint"]), (
            404, "/upstream is served by the registry plugin (at that path by default): "
                 "add \"registry\" to plugins"))

    @inlineCallbacks
    def test_methodNotAllowed(self):
        """A known path with another method is a 405 with Allow."""
        code, response, obj = yield self.request("/upstream/status", method="POST")
        self.assertEqual(code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
        self.assertEqual(obj["allowed"], ["GET", "HEAD"])
        code, response, obj = yield self.request("/upstream/add?port=1", method="DELETE")
        self.assertEqual(code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, POST"])
        self.assertEqual(self.registry.groups(), [])

    @inlineCallbacks
    def test_headChangesNothing(self):
        """HEAD of a GET route that changes state (the registry's heartbeat)
        is a 405, not a registration: no client expects HEAD to change
        anything."""
        for path in ("/upstream/add?port=1", "/upstream/remove?port=1"):
            code, response, obj = yield self.request(path, method="HEAD")
            self.assertEqual(code, 405, path)
            self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, POST"])
        self.assertEqual(self.registry.groups(), [])

    @inlineCallbacks
    def test_head(self):
        """HEAD of a GET route answers without a body."""
        code, response, obj = yield self.request("/upstream/status", method="HEAD")
        self.assertEqual(code, 200)
        self.assertIsNone(obj)

    @inlineCallbacks
    def test_handlerException(self):
        """An exception in a handler is a 500 JSON error and a logged traceback."""
        self.gateway.admin.route("GET", "/boom", lambda request: 1 // 0)
        code, _, obj = yield self.request("/boom")
        self.assertEqual(code, 500)
        self.assertEqual(obj["error"], "internal error")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        code, _, _ = yield self.request("/upstream/status")
        self.assertEqual(code, 200)

    @inlineCallbacks
    def test_handlerBadResult(self):
        """A handler answering something that is not ``(status, JSON-able)``
        is a 500."""
        self.gateway.admin.route("GET", "/set", lambda request: (200, {1, 2}))
        self.gateway.admin.route("GET", "/none", lambda request: None)
        self.gateway.admin.route("GET", "/nan", lambda request: (200, float("nan")))
        for path in ("/set", "/none", "/nan"):
            code, _, obj = yield self.request(path)
            self.assertEqual((code, obj["error"]), (500, "internal error"))
        self.assertEqual(len(self.flushLoggedErrors(TypeError, ValueError)), 3)

    @inlineCallbacks
    def test_asyncHandlers(self):
        """Handlers may return a Deferred or be coroutines."""
        async def coro(request):
            await succeed(None)
            return 201, {"args": request.args}

        self.gateway.admin.route("GET", "/coro", coro)
        self.gateway.admin.route("GET", "/deferred",
                                 lambda request: succeed((202, ["ok"])))
        code, _, obj = yield self.request("/coro?a=1&b=")
        self.assertEqual((code, obj), (201, {"args": {"a": "1", "b": ""}}))
        code, _, obj = yield self.request("/deferred")
        self.assertEqual((code, obj), (202, ["ok"]))

    @inlineCallbacks
    def test_jsonEscaping(self):
        """Whatever a handler returns is encoded as JSON."""
        tricky = {"quote": '"', "newline": "\n", "unicode": "\u00e4\u2028"}
        self.gateway.admin.route("GET", "/tricky", lambda request: (200, tricky))
        code, _, obj = yield self.request("/tricky")
        self.assertEqual((code, obj), (200, tricky))

class AdminSocketTests(AdminSocketMixin, TestCase):
    """The admin Site over a real loopback socket: bodies over the limit
    refused before they are read, a half-close, keep-alive."""

    @inlineCallbacks
    def test_bodyTooLarge(self):
        """A declared body over the limit is refused with 413 before it is
        read."""
        received = yield self.raw(
            b"POST /upstream/add HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (MAX_BODY_SIZE + 1,))
        self.assertTrue(received.startswith(b"HTTP/1.1 413 "), received)
        self.assertNotIn(b"100 Continue", received)
        self.assertIn(b'"error": "request body too large"', received)

    @inlineCallbacks
    def test_chunkedBodyTooLarge(self):
        """A chunked body is refused with 413 once it passes the limit."""
        size = MAX_BODY_SIZE + 1
        received = yield self.raw(
            b"POST /upstream/add HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (size,) + b"x" * size)
        self.assertTrue(received.startswith(b"HTTP/1.1 413 "), received[:100])
        self.assertEqual(self.registry.groups(), [])

    @inlineCallbacks
    def test_halfClose(self):
        """A client that closes its sending side after its requests gets
        every answer, then the connection closes."""
        received = yield self.raw(
            b"GET /upstream/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", half_close=True)
        self.assertEqual(received.count(b"HTTP/1.1 200 "), 1)
        self.assertEqual(received.count(b"HTTP/1.1 404 "), 1)

    @inlineCallbacks
    def test_keepAlive(self):
        """Two requests on one connection both get their answer."""
        received = yield self.raw(
            b"GET /upstream/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        self.assertEqual(received.count(b"HTTP/1.1 200 "), 1)
        self.assertEqual(received.count(b"HTTP/1.1 404 "), 1)


class TokenTests(AdminServerMixin, TestCase):
    """With ``admin.token`` set, every request needs the bearer token."""

    token = "s3cret-token"

    @inlineCallbacks
    def test_noToken(self):
        """Without Authorization: 401 with a Bearer challenge; nothing changes."""
        for path in ("/upstream/add?port=80", "/upstream/status", "/nothing"):
            code, response, obj = yield self.request(path, auth=False)
            self.assertEqual(code, 401, path)
            self.assertEqual(obj["error"], "missing or invalid bearer token")
            challenge = response.headers.getRawHeaders("www-authenticate")
            self.assertEqual(len(challenge), 1)
            self.assertTrue(challenge[0].startswith("Bearer "), challenge)
        self.assertEqual(self.registry.groups(), [])

    @inlineCallbacks
    def test_wrongToken(self):
        """A wrong token, another scheme, or a token prefix: 401."""
        for value in ("Bearer wrong", "Bearer s3cret", "Bearer s3cret-token2",
                      "Basic czNjcmV0LXRva2Vu", "s3cret-token", "Bearer"):
            code, _, _ = yield self.request("/upstream/add?port=80",
                                            headers={"Authorization": value})
            self.assertEqual(code, 401, value)
        self.assertEqual(self.registry.groups(), [])

    @inlineCallbacks
    def test_goodToken(self):
        """The right token passes (the scheme is case-insensitive)."""
        for value in ("Bearer s3cret-token", "bearer s3cret-token"):
            code, _, obj = yield self.request("/upstream/add?port=80",
                                              headers={"Authorization": value})
            self.assertEqual((code, obj["success"]), (200, True))


class UntrustedForwardedTests(AdminServerMixin, TestCase):
    """X-Real-IP / X-Forwarded-For from a peer that is not a trusted proxy."""

    trusted_proxies = ("10.0.0.0/8",)

    @inlineCallbacks
    def test_forwardedIgnored(self):
        """The caller's TCP address is used, whatever the headers say."""
        code, _, obj = yield self.request("/upstream/add?port=9001", headers={
            "X-Forwarded-For": "10.9.9.9", "X-Real-IP": "10.8.8.8"})
        self.assertEqual((code, obj["host"]), (200, "127.0.0.1"))
        code, _, obj = yield self.request("/upstream/remove?port=9001", headers={
            "X-Forwarded-For": "10.9.9.9"})
        self.assertEqual((code, obj["host"]), (200, "127.0.0.1"))


class TrustedForwardedTests(AdminServerMixin, TestCase):
    """X-Real-IP / X-Forwarded-For from a trusted proxy (loopback here)."""

    trusted_proxies = ("127.0.0.0/8", "192.168.0.0/16")

    @inlineCallbacks
    def test_forwardedFor(self):
        """The rightmost address that is not a trusted proxy is the caller."""
        for value, host in (("10.1.2.3", "10.1.2.3"),
                            ("1.1.1.1, 10.0.0.1", "10.0.0.1"),
                            ("1.1.1.1, 10.0.0.1, 192.168.1.1", "10.0.0.1"),
                            ("192.168.1.2, 127.0.0.1", "192.168.1.2"),
                            ("2001:db8::5", "2001:db8::5")):
            code, _, obj = yield self.request("/upstream/add?port=9001", headers={
                "X-Forwarded-For": value})
            self.assertEqual((code, obj["host"]), (200, host), value)

    @inlineCallbacks
    def test_realIp(self):
        """X-Real-IP is believed first."""
        code, _, obj = yield self.request("/upstream/add?port=9001", headers={
            "X-Real-IP": "10.5.5.5", "X-Forwarded-For": "10.6.6.6"})
        self.assertEqual((code, obj["host"]), (200, "10.5.5.5"))

    @inlineCallbacks
    def test_noHeaders(self):
        """Without forwarded headers the TCP peer is the caller."""
        code, _, obj = yield self.request("/upstream/add?port=9001")
        self.assertEqual((code, obj["host"]), (200, "127.0.0.1"))

    @inlineCallbacks
    def test_explicitHost(self):
        """An explicit host parameter wins."""
        code, _, obj = yield self.request("/upstream/add?port=9001&host=10.7.7.7",
                                          headers={"X-Forwarded-For": "10.1.1.1"})
        self.assertEqual((code, obj["host"]), (200, "10.7.7.7"))

    @inlineCallbacks
    def test_garbage(self):
        """A trusted proxy's header that is not an address is a 400 (in
        X-Forwarded-For: the entry the trusted proxy wrote itself; what is
        left of the caller's address is not read, as nginx's
        real_ip_recursive)."""
        for name, value in (("X-Forwarded-For", "10.0.0.1, evil.example"),
                            ("X-Real-IP", "evil.example")):
            code, _, obj = yield self.request("/upstream/add?port=9001", headers={
                name: value})
            self.assertEqual((code, obj["field"]), (400, "host"), name)
        self.assertEqual(self.registry.groups(), [])
        code, _, obj = yield self.request("/upstream/add?port=9001", headers={
            "X-Forwarded-For": "evil.example, 10.0.0.1"})
        self.assertEqual((code, obj["host"]), (200, "10.0.0.1"))


class HandleTests(SynchronousTestCase):
    """AdminRoutes.handle: auth and dispatch without HTTP."""

    def test_handle(self):
        """handle() gives (status, obj) for every outcome."""
        routes = AdminRoutes(token="t")
        routes.route("get", "/echo", lambda r: (200, {"args": r.args, "from": r.client_addr}))
        good = {"Authorization": "Bearer t"}
        self.assertEqual(
            self.successResultOf(routes.handle(AdminRequest.from_uri(
                "GET", "/echo?x=1", good, client_addr="10.0.0.1"))),
            (200, {"args": {"x": "1"}, "from": "10.0.0.1"}))
        self.assertEqual(self.successResultOf(routes.handle(
            AdminRequest("GET", "/echo")))[0], 401)
        self.assertEqual(self.successResultOf(routes.handle(
            AdminRequest("GET", "/nope", headers=good)))[0], 404)
        self.assertEqual(self.successResultOf(routes.handle(
            AdminRequest("PUT", "/echo", headers=good)))[0], 405)

    def test_noToken(self):
        """Without a token nothing is asked."""
        routes = AdminRoutes()
        routes.route("GET", "/x", lambda r: (204, None))
        self.assertEqual(self.successResultOf(routes.handle(AdminRequest("GET", "/x"))),
                         (204, None))

    def test_formBody(self):
        """Form fields join the query arguments; one given in both is
        refused, naming it."""
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        request = AdminRequest.from_uri("POST", "/x?a=1", form, b"b=3")
        request.decode()
        self.assertEqual(request.args, {"a": "1", "b": "3"})
        request = AdminRequest.from_uri("POST", "/x?a=1", form, b"a=2&b=3")
        self.assertRaisesRegex(ValueError, 'parameter "a" given twice', request.decode)


class ParserTests(SynchronousTestCase):
    """The parameter parsers of the registry plugin."""

    def test_prefix(self):
        self.assertEqual(parse_prefix(None), "default")
        self.assertEqual(parse_prefix(""), "default")
        self.assertEqual(parse_prefix("/"), "default")
        self.assertEqual(parse_prefix("/api/v2/"), "api/v2")
        self.assertEqual(parse_prefix("a.b~c-d_e"), "a.b~c-d_e")

    def test_host(self):
        self.assertEqual(parse_host("::FFFF:10.0.0.1"), "10.0.0.1")
        self.assertEqual(parse_host("2001:DB8:0::1"), "2001:db8::1")
        self.assertEqual(parse_host("LocalHost"), "localhost")
