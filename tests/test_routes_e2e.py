"""
End-to-end tests of :mod:`tproxy.builtins.routes` and of the router's
``path_prefix`` mode through :mod:`tproxy.testing`: requests through the whole
proxy to stub upstreams, the ``/routes`` admin API over (in-memory) HTTP, and
the shipped configurations ``etc/routes.json`` and ``etc/path-prefix.json``.
"""

import json
import os
import re

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import ConfigError, load_config
from tproxy.testing import Harness, echo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETC = os.path.join(ROOT, "etc")

API, WEB, CANARY, FALLBACK = ("127.0.0.1:%d" % p for p in range(9101, 9105))
#: nothing answers there: connections are refused
CLOSED = "127.0.0.1:9199"


def routes_plugin(*specs, **settings):
    settings["routes"] = list(specs)
    return {"name": "routes", "settings": settings}


def harness(groups, plugins, servers=None):
    """A harness whose ``groups`` (``{name: [address]}``) are echoed by
    default (``servers`` overrides some addresses)."""
    stubs = dict((a, echo) for members in groups.values() for a in members)
    stubs.update(servers or {})
    stubs.pop(CLOSED, None)
    return Harness(config={"upstreams": dict((g, {"peers": list(m)})
                                             for g, m in groups.items())},
                   plugins=plugins, servers=stubs)


def seen(resp):
    """What the echoing upstream received: ``(uri, {lower-case header: value})``."""
    body = resp.json()
    return body["uri"], body["headers"]


def received(h, address):
    """The requests the stub at ``address`` received."""
    return [r for r in h.upstream_requests if r.server == address]


class RoutingTests(SynchronousTestCase):
    """Requests through a proxy whose ``routes`` take some and the router the rest."""

    def start(self):
        specs = [
            {"name": "canary", "group": "canary",
             "match": {"path": "/api", "headers": {"X-Env": "canary"}}},
            {"name": "beta", "group": "canary",
             "match": {"path": "/api", "cookies": {"beta": "1"}}},
            {"name": "v2", "group": "canary", "match": {"path": "/api", "args": {"v": "2"}}},
            {"name": "users", "group": "api", "strip_prefix": True,
             "match": {"path": "/api/users", "methods": ["GET"]}},
            {"name": "api", "group": "api", "match": {"path": "/api"}},
            {"name": "login", "group": "web", "rewrite": "/auth/login",
             "match": {"path": {"mode": "exact", "value": "/login"}}},
            {"name": "svc", "group": "api", "fake_prefix": "/svc",
             "upstream_headers": {"X-Via": "svc"}},
            {"name": "shop", "group": "web", "match": {"host": "*.shop.test"},
             "upstream_headers": {"X-Shop": "yes"}},
        ]
        specs.append({"name": "item", "group": "web", "rewrite": r"/items/\1",
                      "match": {"path": {"mode": "regex", "value": r"^/item/([0-9]+)$"}}})
        return harness({"api": [API], "web": [WEB], "canary": [CANARY],
                        "default": [FALLBACK]},
                       [routes_plugin(*specs), "router", "least_conn"])

    def assertRouted(self, h, path, server, uri, route, headers=None, method="GET"):
        resp = h.request(method, path, headers=headers or {})
        self.assertEqual(resp.status, 200, resp.body)
        got_uri, got_headers = seen(resp)
        self.assertEqual((got_uri, h.contexts[-1].peer.address), (uri, server),
                         (path, headers))
        self.assertEqual(h.contexts[-1].vars.get("route"), route)
        return got_headers

    def test_everyMatchKind(self):
        h = self.start()
        self.assertRouted(h, "/api/users/7?x=1", API, "/7?x=1", "users")
        self.assertRouted(h, "/api/users/7", API, "/api/users/7", "api", method="DELETE")
        self.assertRouted(h, "/api/orders", API, "/api/orders", "api")
        self.assertRouted(h, "/api/orders", CANARY, "/api/orders", "canary",
                          headers={"X-Env": "canary"})
        self.assertRouted(h, "/api/orders", CANARY, "/api/orders", "beta",
                          headers={"Cookie": "a=b; beta=1"})
        self.assertRouted(h, "/api/orders?v=2", CANARY, "/api/orders?v=2", "v2")
        self.assertRouted(h, "/login", WEB, "/auth/login", "login")
        self.assertRouted(h, "/login/x", FALLBACK, "/login/x", None)
        got = self.assertRouted(h, "/svc/a/b", API, "/a/b", "svc")
        self.assertEqual(got["x-via"], "svc")
        got = self.assertRouted(h, "/x", WEB, "/x", "shop", headers={"Host": "www.shop.test"})
        self.assertEqual((got["x-shop"], got["x-route-prefix"]), ("yes", "web"))
        # longest prefix first: the header does not win over /api/users
        self.assertRouted(h, "/api/users/1", API, "/1", "users", headers={"X-Env": "canary"})
        self.assertRouted(h, "/item/42", WEB, "/items/42", "item")
        # unmatched: the router, unchanged path
        got = self.assertRouted(h, "/other/path", FALLBACK, "/other/path", None)
        self.assertEqual(got["x-route-prefix"], "default")

    def test_otherSpellingsOfAPath(self):
        """``/%61pi`` and ``//api`` are ``/api`` to the routes (as to nginx's
        ``location``), so they cannot pass by its route; the path goes
        upstream as it came unless the route transforms it."""
        h = self.start()
        self.assertRouted(h, "/%61pi/orders", API, "/%61pi/orders", "api")
        self.assertRouted(h, "//api//orders", API, "//api//orders", "api")
        self.assertRouted(h, "/api/%75sers//7", API, "/7", "users")
        self.assertRouted(h, "/x/%2e%2e/api/users/7", API, "/7", "users")
        self.assertRouted(h, "/api%2Fusers", FALLBACK, "/api%2Fusers", None)

    def test_clientRoutePrefixNeverBelieved(self):
        h = self.start()
        got = self.assertRouted(h, "/api/x", API, "/api/x", "api",
                                headers={"X-Route-Prefix": "canary"})
        self.assertEqual(got["x-route-prefix"], "api")

    def test_unmatched404(self):
        h = harness({"api": [API]}, [
            routes_plugin({"name": "api", "group": "api", "match": {"path": "/api"}},
                          unmatched="404"), "least_conn"])
        resp = h.request("GET", "/nope")
        self.assertEqual(resp.status, 404)
        self.assertEqual(resp.json(), {"error": "no route matched", "path": "/nope"})
        self.assertEqual(h.upstream_requests, [])


class BodyContainsTests(SynchronousTestCase):
    """``body_contains`` reads the start of the body before balancing; the
    body still reaches the upstream whole and unchanged."""

    PAY, OTHER = API, FALLBACK

    def start(self, **proxy):
        return Harness(
            config={"upstreams": {"pay": {"peers": [self.PAY]},
                                  "default": {"peers": [self.OTHER]}},
                    "proxy": proxy},
            plugins=[routes_plugin(
                {"name": "pay", "group": "pay",
                 "match": {"path": "/rpc", "body_contains": '"method":"pay"'}}),
                "router", "least_conn"],
            servers={self.PAY: echo, self.OTHER: echo})

    def test_bodyContains(self):
        h = self.start()
        body = b'{"id":1,"method":"pay","amount":3}' + b"x" * 200000
        resp = h.request("POST", "/rpc", body=body)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(h.contexts[-1].peer.address, self.PAY)
        self.assertEqual(received(h, self.PAY)[-1].body, body)
        h.request("POST", "/rpc", body=b'{"method":"refund"}')
        self.assertEqual(h.contexts[-1].peer.address, self.OTHER)
        self.assertEqual(received(h, self.OTHER)[-1].body, b'{"method":"refund"}')

    def test_clientStopsSending(self):
        """A body that stops before the bytes a route needs: 408 after
        ``client_body_timeout``, upstream untouched."""
        h = self.start(client_body_timeout=5)
        conn = h.connect()
        conn.send(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"me")
        h.advance(5 - 2 ** -7)
        self.assertEqual((conn.responses, conn.closed), ([], False))
        h.advance(2 ** -7)
        self.assertEqual([r.status for r in conn.responses], [408])
        self.assertTrue(conn.closed)
        self.assertEqual(h.upstream_requests, [])
        self.assertEqual(h.contexts[-1].error, "client_timeout")

    def test_chunkedAndExpectContinue(self):
        """A chunked body split over several writes, sent after 100 Continue."""
        h = self.start()
        conn = h.connect()
        conn.send(b"POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        self.assertIn(b"100 Continue", conn.received)
        conn.send(b"5\r\n{\"met\r\n")
        conn.send(b"d\r\nhod\":\"pay\"}  \r\n0\r\n\r\n")
        self.assertEqual(conn.responses[-1].status, 200)
        self.assertEqual(received(h, self.PAY)[-1].body, b'{"method":"pay"}  ')


class PinnedPeerTests(SynchronousTestCase):
    """``peer`` pins a route to one member of its group (and without it, a
    group that cannot serve)."""

    def test_pinned(self):
        one, two = API, WEB
        h = harness({"api": [one, two]}, [routes_plugin(
            {"name": "pinned", "group": "api", "peer": two, "match": {"path": "/pinned"}},
            {"name": "spread", "group": "api"}), "least_conn"])
        for _ in range(4):
            self.assertEqual(h.request("GET", "/pinned/x").status, 200)
        self.assertEqual((len(received(h, one)), len(received(h, two))), (0, 4))
        for _ in range(4):
            h.request("GET", "/other")
        self.assertEqual((len(received(h, one)), len(received(h, two))), (2, 6))

    def test_pinnedPeerDown(self):
        """A pinned peer refusing connections: 502, never another peer."""
        h = harness({"api": [API, CLOSED]}, [routes_plugin(
            {"name": "pinned", "group": "api", "peer": CLOSED}), "least_conn"])
        resp = h.request("GET", "/x")
        self.assertEqual(resp.status, 502)
        self.assertEqual(resp.json(), {"error": "pinned upstream failed",
                                       "upstream": CLOSED, "route": "pinned"})
        self.assertEqual(h.upstream_requests, [])
        self.assertEqual([p.address for p in h.contexts[-1].tried], [CLOSED])

    def test_pinnedPeerNotInGroup(self):
        h = harness({"api": [API]}, [routes_plugin(
            {"name": "pinned", "group": "api", "peer": "127.0.0.1:1"}), "least_conn"])
        resp = h.request("GET", "/x")
        self.assertEqual(resp.status, 503)
        self.assertEqual(resp.json()["peer"], "127.0.0.1:1")
        self.assertEqual(h.upstream_requests, [])


    def test_balancedGroupWithoutLivePeer(self):
        """A balanced route to a group with no member (not in ``upstreams``
        nor in the registry): 503 naming the group; to a group whose only
        peer refuses the connection: 502 naming the peer."""
        h = harness({"api": [CLOSED]}, [routes_plugin(
            {"name": "ghost", "group": "ghost", "match": {"path": "/ghost"}},
            {"name": "refused", "group": "api"}), "least_conn"])
        resp = h.request("GET", "/ghost/x")
        self.assertEqual((resp.status, resp.json()),
                         (503, {"error": "no live upstream", "group": "ghost"}))
        resp = h.request("GET", "/x")
        self.assertEqual((resp.status, resp.json()),
                         (502, {"error": "upstream connection failed", "upstream": CLOSED}))
        self.assertEqual(h.upstream_requests, [])


class AdminTests(SynchronousTestCase):
    """``/routes`` over the admin listener."""

    def start(self, specs=(), extra=()):
        return harness({"api": [API], "web": [WEB], "default": [FALLBACK]},
                       [routes_plugin(*specs)] + list(extra) + ["router", "least_conn"])

    def call(self, h, method, path, body=None):
        r = h.admin(method, path, body=body if body is not None else b"")
        return r.status, r.obj

    def test_crud(self):
        h = self.start([{"name": "api", "group": "api", "match": {"path": "/api"}}])
        code, body = self.call(h, "GET", "/routes")
        self.assertEqual(code, 200)
        self.assertEqual(body["total"], 1)
        self.assertEqual(body["routes"][0]["name"], "api")
        self.assertEqual(body["routes"][0]["priority"], 0)  # defaults filled in

        # add: takes effect for the next request
        self.assertEqual(seen(h.request("GET", "/site/x"))[0], "/site/x")
        self.assertEqual(h.contexts[-1].peer.address, FALLBACK)
        route = {"group": "web", "match": {"path": "/site"}, "strip_prefix": True}
        code, body = self.call(h, "PUT", "/routes/web", route)
        self.assertEqual((code, body["created"], body["route"]["name"]), (201, True, "web"))
        self.assertEqual(seen(h.request("GET", "/site/x"))[0], "/x")
        self.assertEqual(h.contexts[-1].peer.address, WEB)

        code, body = self.call(h, "GET", "/routes/web")
        self.assertEqual((code, body["group"], body["strip_prefix"]), (200, "web", True))

        # replace: same place in the list
        route["group"] = "api"
        code, body = self.call(h, "PUT", "/routes/web", dict(route, name="web"))
        self.assertEqual((code, body["created"]), (200, False))
        h.request("GET", "/site/x")
        self.assertEqual(h.contexts[-1].peer.address, API)
        code, body = self.call(h, "GET", "/routes")
        self.assertEqual([r["name"] for r in body["routes"]], ["api", "web"])

        # delete
        code, body = self.call(h, "DELETE", "/routes/web")
        self.assertEqual((code, body), (200, {"deleted": "web"}))
        h.request("GET", "/site/x")
        self.assertEqual(h.contexts[-1].peer.address, FALLBACK)
        code, body = self.call(h, "DELETE", "/routes/web")
        self.assertEqual((code, body), (404, {"error": "no such route", "name": "web"}))
        code, body = self.call(h, "GET", "/routes/nope")
        self.assertEqual(code, 404)
        code, body = self.call(h, "POST", "/routes/api", {})
        self.assertEqual((code, body["allowed"]), (405, ["DELETE", "GET", "HEAD", "PUT"]))

    def test_badInputChangesNothing(self):
        h = self.start([{"name": "api", "group": "api", "match": {"path": "/api"}}])
        _, before = self.call(h, "GET", "/routes")
        bad = [
            (b"{not json", ""),
            ({"group": "api", "match": {"path": "api"}}, "match.path"),
            ({"group": "api", "match": {"path": "/x"}, "colour": 1}, "colour"),
            ({"match": {"path": "/x"}}, ""),
            ({"name": "other", "group": "api"}, "name"),
            ({"group": "api", "match": {"path": {"mode": "exact", "value": "/x"}},
              "strip_prefix": True}, "strip_prefix"),
            ({"group": "api", "peer": "nohost"}, "peer"),
            ([1, 2], ""),
            ({"group": "api", "match": {"path": {"mode": "regex", "value": "(a"}}},
             "match.path.value"),
        ]
        for body, field in bad:
            code, answer = self.call(h, "PUT", "/routes/api", body)
            self.assertEqual((code, answer["field"]), (400, field), (body, answer))
            self.assertTrue(answer["error"])
        code, answer = self.call(h, "PUT", "/routes/match", {"group": "api"})
        self.assertEqual((code, answer["field"]), (400, "name"))
        code, answer = self.call(h, "PUT", "/routes/new", {"group": "api", "match": {
            "path": {"mode": "exact", "value": "/x"}}, "strip_prefix": True,
            "rewrite": "/y"})
        self.assertEqual(code, 400)
        self.assertEqual([e["field"] for e in answer["errors"]], ["strip_prefix", "rewrite"])
        _, after = self.call(h, "GET", "/routes")
        self.assertEqual(after, before)

    def test_changesTakeNoParameters(self):
        """A query parameter on ``POST /routes``, ``PUT`` or ``DELETE
        /routes/NAME`` (``?group=zz``), or a ``DELETE`` body, is a ``400``
        naming it, as on ``/upstream/*``: never dropped without a word, and
        nothing changes."""
        h = self.start([{"name": "api", "group": "api", "match": {"path": "/api"}}])
        _, before = self.call(h, "GET", "/routes")
        route = {"group": "api", "match": {"path": "/x"}}
        for method, path, body, field, value in [
                ("PUT", "/routes/x?group=zz", route, "group", "zz"),
                ("PUT", "/routes/api?priority=3&group=zz", route, "group", "zz"),
                ("POST", "/routes?name=x", dict(route, name="x"), "name", "x"),
                ("DELETE", "/routes/api?group=api", None, "group", "api"),
                ("DELETE", "/routes/api", {"name": "other"}, "body", None)]:
            code, answer = self.call(h, method, path, body)
            self.assertEqual((code, answer["field"], answer["value"]), (400, field, value),
                             (method, path, answer))
            self.assertIn(repr(field) if field != "body" else "takes no body",
                          answer["error"])
        _, after = self.call(h, "GET", "/routes")
        self.assertEqual(after, before)

    def test_notJsonPastAscii(self):
        """A body that is not JSON at a character past ASCII: a 400 naming
        it, by PUT and by POST (PyPy's decoder gives no usable message for
        it: it was a 500 there)."""
        h = self.start()
        for method, path in (("PUT", "/routes/a"), ("POST", "/routes")):
            code, answer = self.call(h, method, path, "\u0800".encode("utf-8"))
            self.assertEqual((code, answer), (400, {
                "error": "the body is not JSON: unexpected '\u0800': line 1 column 1 "
                         "(char 0)", "field": ""}))

    def test_inFlightKeepsItsRoute(self):
        """A request started before a change finishes on its route."""
        waiting = []

        def slow(request):
            waiting.append(Deferred())
            return waiting[-1].addCallback(lambda _: echo(request))
        one, two = API, WEB
        h = harness({"api": [one, two]}, [routes_plugin(
            {"name": "r", "group": "api", "peer": one}), "least_conn"], servers={one: slow})
        first = h.request("GET", "/first", wait=False)
        self.assertEqual(len(waiting), 1)
        code, _ = self.call(h, "PUT", "/routes/r", {"group": "api", "peer": two})
        self.assertEqual(code, 200)
        second = h.request("GET", "/second")
        self.assertEqual(seen(second)[0], "/second")
        self.assertEqual([r.uri for r in received(h, two)], ["/second"])
        self.assertFalse(first.done)
        waiting[0].callback(None)
        h.flush()
        self.assertEqual(seen(first.result())[0], "/first")
        self.assertEqual([r.uri for r in received(h, one)], ["/first"])

    def test_match(self):
        h = self.start([
            {"name": "api", "group": "api", "match": {"path": "/api"}},
            {"name": "users", "group": "api", "strip_prefix": True,
             "match": {"path": "/api/users"}},
            {"name": "canary", "group": "web", "priority": 1,
             "match": {"path": "/api/users", "headers": {"X-Env": "canary"}}},
            {"name": "pinned", "group": "api", "peer": "127.0.0.1:1",
             "match": {"path": {"mode": "exact", "value": "/pin"}}},
            {"name": "hosted", "group": "web", "match": {"host": "*.example.com"}}])
        code, body = self.call(
            h, "GET", "/routes/match?method=GET&host=x.org&path=/api/users/7%3Fq%3D1")
        self.assertEqual(code, 200)
        self.assertEqual((body["route"], body["decided_by"], body["group"],
                          body["upstream_path"]), ("users", "routes", "api", "/7?q=1"))
        self.assertEqual(body["rule"], "longer prefix beats shorter prefix")
        self.assertEqual(body["also_matched"], ["api"])
        self.assertEqual(body["precedence"]["path_tier"], "prefix")
        self.assertEqual(body["peer"]["address"], API)
        self.assertEqual(body["peer"]["conn_count"], 0)
        [api_peer] = h.registry.group("api").peers.values()
        self.assertEqual(api_peer.total, 0)  # nothing acquired

        # the path as a request's: dot segments resolved, other spellings matched
        code, body = self.call(h, "GET", "/routes/match?path=/x/..//%2561pi/users/7")
        self.assertEqual((code, body["route"], body["upstream_path"], body["request"]["path"]),
                         (200, "users", "/7", "//%61pi/users/7"))
        code, body = self.call(h, "GET", "/routes/match?path=/..")
        self.assertEqual((code, body), (400, {"error": "path climbs above the root",
                                              "field": "path", "value": "/.."}))

        code, body = self.call(h, "GET", "/routes/match?path=/api/users/7&header.X-Env=canary")
        self.assertEqual((body["route"], body["rule"], body["also_matched"]),
                         ("canary", "higher priority (1 > 0)", ["users", "api"]))
        self.assertEqual(body["peer"]["address"], WEB)

        code, body = self.call(h, "GET", "/routes/match?path=/x&host=a.example.com")
        self.assertEqual((body["route"], body["rule"]), ("hosted", "the only matching route"))

        code, body = self.call(h, "GET", "/routes/match?path=/pin")
        self.assertEqual((body["route"], body["pinned"], body["peer"]),
                         ("pinned", "127.0.0.1:1", None))
        self.assertEqual(body["response"]["status"], 503)

        code, body = self.call(h, "GET", "/routes/match?path=/other")
        self.assertEqual((body["route"], body["decided_by"], body["group"],
                          body["upstream_path"]), (None, "router", "default", "/other"))
        self.assertEqual(body["peer"]["address"], FALLBACK)

        code, body = self.call(h, "GET", "/routes/match?host=x")
        self.assertEqual((code, body["field"]), (400, "path"))

    def test_matchBadParameters(self):
        """A misspelt parameter (``heder.X-Env``), a header name or a method
        that is not an HTTP token is a ``400`` naming it, as on
        ``/upstream/*``: never an answer for another request than the one
        described."""
        h = self.start([{"name": "canary", "group": "web",
                         "match": {"path": "/api", "headers": {"X-Env": "canary"}}}])
        for query, field, error in [
                ("heder.X-Env=canary", "heder.X-Env",
                 "unknown parameter 'heder.X-Env' (known: body, header.NAME, host, method, "
                 "path, query)"),
                ("header.X%20Env=canary", "header.X Env", "bad header name 'X Env'"),
                ("header.=canary", "header.", "bad header name ''"),
                ("method=G%20T", "method", "bad method 'G T'")]:
            code, body = self.call(h, "GET", "/routes/match?path=/api&" + query)
            self.assertEqual((code, body["field"], body["error"]), (400, field, error), query)
        code, body = self.call(h, "GET", "/routes/match?path=/api&header.x-env=canary&method=get")
        self.assertEqual((code, body["route"], body["request"]["method"]), (200, "canary", "GET"))


class HostAndMethodTests(SynchronousTestCase):
    """What a client sends as the host and the method, as routes take them."""

    start = AdminTests.start

    def test_ipv6Host(self):
        """A route for ``[::1]`` takes ``Host: [::1]:8080`` (the port
        ignored, as for a name), also written through the admin API, and
        ``GET /routes/match`` says so."""
        h = self.start([{"name": "local6", "group": "web",
                                 "match": {"host": "[::1]"}}])
        for host in ("[::1]:8080", "[::1]", "[0::1]:80"):
            resp = h.request("GET", "/x", headers={"Host": host})
            self.assertEqual((resp.status, h.contexts[-1].vars.get("route")),
                             (200, "local6"), host)
            self.assertEqual(received(h, WEB)[-1].headers.get("Host"), host)
        h.request("GET", "/x", headers={"Host": "[::2]:8080"})
        self.assertEqual(h.contexts[-1].peer.address, FALLBACK)
        r = h.admin("PUT", "/routes/doc6", body={"group": "api",
                                                 "match": {"host": "[2001:DB8::1]"}})
        self.assertEqual(r.status, 201, r.obj)
        self.assertEqual(r.obj["route"]["match"]["host"], "[2001:DB8::1]")
        h.request("GET", "/x", headers={"Host": "[2001:db8::1]:443"})
        self.assertEqual(h.contexts[-1].peer.address, API)
        r = h.admin("GET", "/routes/match?path=/x&host=%5B2001:db8:0::1%5D:8443")
        self.assertEqual((r.status, r.obj["route"]), (200, "doc6"))
        r = h.admin("PUT", "/routes/bare6", body={"group": "api", "match": {"host": "::1"}})
        self.assertEqual((r.status, r.obj["field"]), (400, "match.host"))
        self.assertIn("in brackets, as clients send it: [::1]", r.obj["error"])

    def test_lowerCaseMethodRefused(self):
        """``"methods": ["get"]``: refused with the JSON path, at start and
        through the admin API (a client's ``get`` is not ``GET``)."""
        h = self.start()
        r = h.admin("PUT", "/routes/m", body={"group": "api",
                                              "match": {"methods": ["HEAD", "get"]}})
        self.assertEqual((r.status, r.obj["field"]), (400, "match.methods[1]"), r.obj)
        self.assertIn("methods are case-sensitive: GET", r.obj["error"])
        self.assertEqual(h.admin("GET", "/routes/m").status, 404)
        e = self.assertRaises(ConfigError, self.start, [
            {"name": "m", "group": "api", "match": {"methods": ["get"]}}])
        self.assertEqual(e.path, "plugins[0].settings.routes[0].match.methods[0]")


class PathPrefixModeTests(SynchronousTestCase):
    """The router's ``path_prefix`` mode with servers registering at run time."""

    def test_referenceExamples(self):
        api, static, anything = API, WEB, FALLBACK
        h = Harness(plugins=["registry", {"name": "router", "settings": {"mode": "path_prefix"}},
                             "least_conn"],
                    servers={api: echo, static: echo, anything: echo})

        def add(server, prefix=None):
            host, port = server.split(":")
            url = "/upstream/add?host=%s&port=%s" % (host, port)
            if prefix is not None:
                url += "&prefix=" + prefix
            return h.admin("GET", url).obj

        self.assertTrue(add(api, "/api")["created"])
        self.assertFalse(add(api, "api")["created"])  # the same group
        add(static, "/static")
        add(anything)

        def served(path):
            resp = h.request("GET", path)
            self.assertEqual(resp.status, 200)
            self.assertEqual(seen(resp)[0], path)  # unchanged
            return h.contexts[-1].peer.address

        # only the prefix-less server serves paths no prefix matches
        self.assertEqual(served("/other/path"), anything)
        self.assertEqual(served("/apix"), anything)
        # /static/...: the /static server and the prefix-less one take turns
        ports = [served("/static/css/style.css") for _ in range(4)]
        self.assertEqual(sorted(ports), sorted([static, anything] * 2))
        ports = [served("/api/users") for _ in range(4)]
        self.assertEqual(sorted(ports), sorted([api, anything] * 2))
        self.assertNotIn(static, [served("/api") for _ in range(3)])
        # the /static server leaves: its paths go to the prefix-less one
        host, port = static.split(":")
        h.admin("GET", "/upstream/remove?host=%s&port=%s&prefix=static" % (host, port))
        self.assertEqual([served("/static/x") for _ in range(2)], [anything] * 2)


class ShippedConfigTests(SynchronousTestCase):
    """``etc/routes.json`` and ``etc/path-prefix.json`` load and route as
    ``docs/routing.md`` says."""

    def harness(self, name, servers):
        config = load_config(os.path.join(ETC, name))
        return Harness(config=config, servers=dict((a, echo) for a in servers))

    def test_routesJson(self):
        h = self.harness("routes.json", ["127.0.0.1:%d" % p for p in range(9001, 9006)])

        def go(path, headers=None):
            seen = h.request("GET", path, headers=headers).json()
            return seen["server"], seen["uri"], h.contexts[-1].vars.get("route")

        self.assertEqual(go("/api/users/7"), ("127.0.0.1:9001", "/7", "users"))
        self.assertEqual(go("/api/orders")[1:], ("/api/orders", "api"))
        self.assertEqual(go("/api/orders", {"X-Env": "canary"}),
                         ("127.0.0.1:9004", "/api/orders", "api-canary"))
        self.assertEqual(go("/api/orders", {"Cookie": "beta=1"})[2], "api-beta")
        self.assertEqual(go("/api/orders?version=2")[2], "api-v2-arg")
        self.assertEqual(go("/login"), ("127.0.0.1:9003", "/auth/login", "login"))
        self.assertEqual(go("/item/42"), ("127.0.0.1:9003", "/items/42", "item"))
        self.assertEqual(go("/a/B.PNG"), ("127.0.0.1:9003", "/a/B.PNG", "images"))
        self.assertEqual(go("/svc/x")[1:], ("/x", "svc"))
        self.assertEqual(go("/x", {"Host": "www.shop.example"}),
                         ("127.0.0.1:9003", "/x", "shop"))
        for _ in range(3):
            self.assertEqual(go("/admin/x"), ("127.0.0.1:9002", "/admin/x", "admin-pinned"))
        self.assertEqual(go("/elsewhere"), ("127.0.0.1:9005", "/elsewhere", None))
        r = h.admin("GET", "/routes/match?path=/api/users/1&method=GET")
        self.assertEqual((r.status, r.obj["route"], r.obj["upstream_path"]),
                         (200, "users", "/1"))

    def test_pathPrefixJson(self):
        h = self.harness("path-prefix.json", ["192.168.1.10:8080", "192.168.1.11:8080",
                                              "192.168.1.12:8080"])
        for host, prefix in (("192.168.1.10", "&prefix=/api"),
                             ("192.168.1.11", "&prefix=/static"), ("192.168.1.12", "")):
            r = h.admin("GET", "/upstream/add?host=%s&port=8080%s" % (host, prefix))
            self.assertEqual(r.status, 200)
        self.assertEqual(h.request("GET", "/other/path").json()["server"], "192.168.1.12:8080")
        servers = set(h.request("GET", "/static/css/style.css").json()["server"]
                      for _ in range(4))
        self.assertEqual(servers, {"192.168.1.11:8080", "192.168.1.12:8080"})
        servers = set(h.request("GET", "/api/users").json()["server"] for _ in range(4))
        self.assertEqual(servers, {"192.168.1.10:8080", "192.168.1.12:8080"})
        self.assertEqual(h.request("GET", "/api/users").json()["uri"], "/api/users")

    def test_docsShowThePathPrefixFile(self):
        """``docs/routing.md`` shows ``etc/path-prefix.json`` as it is."""
        with open(os.path.join(ROOT, "docs", "routing.md"), encoding="utf-8") as f:
            blocks = re.findall(r"^```json\n(.*?)^```", f.read(), re.S | re.M)
        with open(os.path.join(ETC, "path-prefix.json"), encoding="utf-8") as f:
            shipped = json.load(f)
        parsed = []
        for block in blocks:
            try:
                parsed.append(json.loads(block))
            except ValueError:
                pass  # an abridged answer ("...")
        self.assertIn(shipped, parsed)
