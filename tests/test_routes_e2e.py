"""
End-to-end tests of :mod:`tproxy.builtins.routes` and of the router's
``path_prefix`` mode over real loopback sockets: requests through a running
proxy to real upstreams, the ``/routes`` admin API over HTTP, and the shipped
configurations ``etc/routes.json`` and ``etc/path-prefix.json`` (through
:mod:`tproxy.testing`, as they name fixed ports).
"""

import json
import os
import re

import treq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import load_config
from tproxy.testing import Harness, echo as stub_echo

from tests.helpers import ProxyTestCase, echo, until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ETC = os.path.join(ROOT, "etc")




def routes_plugin(*specs, **settings):
    settings["routes"] = list(specs)
    return {"name": "routes", "settings": settings}


def seen(resp):
    """What the echoing upstream received: ``(uri, {lower-case header: value})``."""
    body = resp.json()
    return body["uri"], dict((n.lower(), v) for n, v in body["headers"])


def held():
    """An upstream handler that answers only when the test says so."""
    waiting = []

    def handler(conn, req):
        waiting.append((conn, req))
    handler.waiting = waiting

    def release():
        while waiting:
            echo(*waiting.pop(0))
    handler.release = release
    return handler


class RoutingTests(ProxyTestCase):
    """Requests through a proxy whose ``routes`` take some and the router the rest."""

    async def start(self):
        self.api = self.upstream()
        self.web = self.upstream()
        self.canary = self.upstream()
        self.fallback = self.upstream()
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
        return await self.proxy(
            {"api": [self.api], "web": [self.web], "canary": [self.canary],
             "default": [self.fallback]},
            plugins=[routes_plugin(*specs), "router", "least_conn"])

    async def assertRouted(self, proxy, path, server, uri, route, headers=None, method="GET"):
        resp = await self.get(proxy, path, method=method, headers=headers or {})
        self.assertEqual(resp.status, 200, resp.body)
        got_uri, got_headers = seen(resp)
        self.assertEqual((got_uri, proxy.logged[-1].peer.port), (uri, server.port),
                         (path, headers))
        self.assertEqual(proxy.logged[-1].vars.get("route"), route)
        return got_headers

    async def test_everyMatchKind(self):
        proxy = await self.start()
        await self.assertRouted(proxy, "/api/users/7?x=1", self.api, "/7?x=1", "users")
        await self.assertRouted(proxy, "/api/users/7", self.api, "/api/users/7", "api",
                                method="DELETE")
        await self.assertRouted(proxy, "/api/orders", self.api, "/api/orders", "api")
        await self.assertRouted(proxy, "/api/orders", self.canary, "/api/orders", "canary",
                                headers={"X-Env": "canary"})
        await self.assertRouted(proxy, "/api/orders", self.canary, "/api/orders", "beta",
                                headers={"Cookie": "a=b; beta=1"})
        await self.assertRouted(proxy, "/api/orders?v=2", self.canary, "/api/orders?v=2", "v2")
        await self.assertRouted(proxy, "/login", self.web, "/auth/login", "login")
        await self.assertRouted(proxy, "/login/x", self.fallback, "/login/x", None)
        h = await self.assertRouted(proxy, "/svc/a/b", self.api, "/a/b", "svc")
        self.assertEqual(h["x-via"], "svc")
        h = await self.assertRouted(proxy, "/x", self.web, "/x", "shop",
                                    headers={"Host": "www.shop.test"})
        self.assertEqual((h["x-shop"], h["x-route-prefix"]), ("yes", "web"))
        # longest prefix first: the header does not win over /api/users
        await self.assertRouted(proxy, "/api/users/1", self.api, "/1", "users",
                                headers={"X-Env": "canary"})
        await self.assertRouted(proxy, "/item/42", self.web, "/items/42", "item")
        # unmatched: the router, unchanged path
        h = await self.assertRouted(proxy, "/other/path", self.fallback, "/other/path", None)
        self.assertEqual(h["x-route-prefix"], "default")

    async def test_clientRoutePrefixNeverBelieved(self):
        proxy = await self.start()
        h = await self.assertRouted(proxy, "/api/x", self.api, "/api/x", "api",
                                    headers={"X-Route-Prefix": "canary"})
        self.assertEqual(h["x-route-prefix"], "api")

    async def test_unmatched404(self):
        up = self.upstream()
        proxy = await self.proxy({"api": [up]}, plugins=[
            routes_plugin({"name": "api", "group": "api", "match": {"path": "/api"}},
                          unmatched="404"), "least_conn"])
        resp = await self.get(proxy, "/nope")
        self.assertEqual(resp.status, 404)
        self.assertEqual(resp.json(), {"error": "no route matched", "path": "/nope"})
        self.assertEqual(len(up.requests), 0)


class BodyContainsTests(ProxyTestCase):
    """``body_contains`` reads the start of the body before balancing; the
    body still reaches the upstream whole and unchanged."""

    async def start(self, limit=None):
        self.pay = self.upstream()
        self.other = self.upstream()
        settings = {}
        if limit is not None:
            settings["body_limit"] = limit
        return await self.proxy(
            {"pay": [self.pay], "default": [self.other]},
            plugins=[routes_plugin(
                {"name": "pay", "group": "pay",
                 "match": {"path": "/rpc", "body_contains": '"method":"pay"'}},
                **settings), "router", "least_conn"])

    async def test_bodyContains(self):
        proxy = await self.start()
        body = b'{"id":1,"method":"pay","amount":3}' + b"x" * 200000
        resp = await self.get(proxy, "/rpc", method="POST", data=body)
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(proxy.logged[-1].peer.port, self.pay.port)
        self.assertEqual(self.pay.requests[-1].body, body)
        resp = await self.get(proxy, "/rpc", method="POST", data=b'{"method":"refund"}')
        self.assertEqual(proxy.logged[-1].peer.port, self.other.port)
        self.assertEqual(self.other.requests[-1].body, b'{"method":"refund"}')

    async def test_clientStopsSending(self):
        """A body that stops before the bytes a route needs: 408, upstream untouched."""
        proxy = await self.start()
        proxy.factory.body_timeout = 0.2
        client = await self.connect(proxy)
        client.send(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"me")
        resps = await client.wait_responses(1)
        self.assertEqual(resps[0].status, 408)
        await client.wait_closed()
        self.assertEqual((self.pay.requests, self.other.requests), ([], []))
        self.assertEqual(proxy.logged[-1].error, "client_timeout")

    async def test_chunkedAndExpectContinue(self):
        """A chunked body split over several writes, sent after 100 Continue."""
        proxy = await self.start()
        client = await self.connect(proxy)
        client.send(b"POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    b"Expect: 100-continue\r\n\r\n")
        await until(lambda: b"100 Continue" in client.data, message="100 Continue")
        client.send(b"5\r\n{\"met\r\n")
        client.send(b"d\r\nhod\":\"pay\"}  \r\n0\r\n\r\n")
        resps = await client.wait_responses(1)
        self.assertEqual(resps[-1].status, 200)
        self.assertEqual(self.pay.requests[-1].body, b'{"method":"pay"}  ')


class PinnedPeerTests(ProxyTestCase):
    """``peer`` pins a route to one member of its group."""

    async def test_pinned(self):
        one, two = self.upstream(), self.upstream()
        proxy = await self.proxy({"api": [one, two]}, plugins=[routes_plugin(
            {"name": "pinned", "group": "api", "peer": two.address,
             "match": {"path": "/pinned"}},
            {"name": "spread", "group": "api"}), "least_conn"])
        for _ in range(4):
            resp = await self.get(proxy, "/pinned/x")
            self.assertEqual(resp.status, 200)
        self.assertEqual((len(one.requests), len(two.requests)), (0, 4))
        for _ in range(4):
            await self.get(proxy, "/other")
        self.assertEqual((len(one.requests), len(two.requests)), (2, 6))

    async def test_pinnedPeerDown(self):
        """A pinned peer refusing connections: 502, never another peer."""
        up = self.upstream()
        closed = "127.0.0.1:%d" % self.closed_port()
        proxy = await self.proxy({"api": [up, closed]}, plugins=[routes_plugin(
            {"name": "pinned", "group": "api", "peer": closed}), "least_conn"])
        resp = await self.get(proxy, "/x")
        self.assertEqual(resp.status, 502)
        self.assertEqual(resp.json(), {"error": "pinned upstream failed",
                                       "upstream": closed, "route": "pinned"})
        self.assertEqual(len(up.requests), 0)
        self.assertEqual([p.address for p in proxy.logged[-1].tried], [closed])

    async def test_pinnedPeerNotInGroup(self):
        up = self.upstream()
        proxy = await self.proxy({"api": [up]}, plugins=[routes_plugin(
            {"name": "pinned", "group": "api", "peer": "127.0.0.1:1"}), "least_conn"])
        resp = await self.get(proxy, "/x")
        self.assertEqual(resp.status, 503)
        self.assertEqual(resp.json()["peer"], "127.0.0.1:1")
        self.assertEqual(len(up.requests), 0)


class AdminTests(ProxyTestCase):
    """``/routes`` over the admin listener."""

    async def start(self, specs=(), extra=()):
        self.api = self.upstream()
        self.web = self.upstream()
        self.fallback = self.upstream()
        proxy = await self.proxy(
            {"api": [self.api], "web": [self.web], "default": [self.fallback]},
            plugins=[routes_plugin(*specs)] + list(extra) + ["router", "least_conn"])
        listener = reactor.listenTCP(0, proxy.gateway.admin.site(), interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        self.admin_url = "http://127.0.0.1:%d" % listener.getHost().port
        return proxy

    async def call(self, method, path, body=None):
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        resp = await treq.request(method, self.admin_url + path, data=data, pool=self.pool)
        text = await treq.content(resp)
        return resp.code, json.loads(text.decode("utf-8"))

    async def test_crud(self):
        proxy = await self.start([{"name": "api", "group": "api", "match": {"path": "/api"}}])
        code, body = await self.call("GET", "/routes")
        self.assertEqual(code, 200)
        self.assertEqual(body["total"], 1)
        self.assertEqual(body["routes"][0]["name"], "api")
        self.assertEqual(body["routes"][0]["priority"], 0)  # defaults filled in

        # add: takes effect for the next request
        self.assertEqual(seen(await self.get(proxy, "/site/x"))[0], "/site/x")
        self.assertEqual(proxy.logged[-1].peer.port, self.fallback.port)
        route = {"group": "web", "match": {"path": "/site"}, "strip_prefix": True}
        code, body = await self.call("PUT", "/routes/web", route)
        self.assertEqual((code, body["created"], body["route"]["name"]), (201, True, "web"))
        self.assertEqual(seen(await self.get(proxy, "/site/x"))[0], "/x")
        self.assertEqual(proxy.logged[-1].peer.port, self.web.port)

        code, body = await self.call("GET", "/routes/web")
        self.assertEqual((code, body["group"], body["strip_prefix"]), (200, "web", True))

        # replace: same place in the list
        route["group"] = "api"
        code, body = await self.call("PUT", "/routes/web", dict(route, name="web"))
        self.assertEqual((code, body["created"]), (200, False))
        await self.get(proxy, "/site/x")
        self.assertEqual(proxy.logged[-1].peer.port, self.api.port)
        code, body = await self.call("GET", "/routes")
        self.assertEqual([r["name"] for r in body["routes"]], ["api", "web"])

        # delete
        code, body = await self.call("DELETE", "/routes/web")
        self.assertEqual((code, body), (200, {"deleted": "web"}))
        await self.get(proxy, "/site/x")
        self.assertEqual(proxy.logged[-1].peer.port, self.fallback.port)
        code, body = await self.call("DELETE", "/routes/web")
        self.assertEqual((code, body), (404, {"error": "no such route", "name": "web"}))
        code, body = await self.call("GET", "/routes/nope")
        self.assertEqual(code, 404)
        code, body = await self.call("POST", "/routes/api", {})
        self.assertEqual((code, body["allowed"]), (405, ["DELETE", "GET", "HEAD", "PUT"]))

    async def test_badInputChangesNothing(self):
        await self.start([{"name": "api", "group": "api", "match": {"path": "/api"}}])
        _, before = await self.call("GET", "/routes")
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
            code, answer = await self.call("PUT", "/routes/api", body)
            self.assertEqual((code, answer["field"]), (400, field), (body, answer))
            self.assertTrue(answer["error"])
        code, answer = await self.call("PUT", "/routes/match", {"group": "api"})
        self.assertEqual((code, answer["field"]), (400, "name"))
        code, answer = await self.call("PUT", "/routes/new", {"group": "api", "match": {
            "path": {"mode": "exact", "value": "/x"}}, "strip_prefix": True,
            "rewrite": "/y"})
        self.assertEqual(code, 400)
        self.assertEqual([e["field"] for e in answer["errors"]], ["strip_prefix", "rewrite"])
        _, after = await self.call("GET", "/routes")
        self.assertEqual(after, before)

    async def test_inFlightKeepsItsRoute(self):
        """A request started before a change finishes on its route."""
        slow = held()
        one, two = self.upstream(slow), self.upstream()
        proxy = await self.proxy({"api": [one, two]}, plugins=[routes_plugin(
            {"name": "r", "group": "api", "peer": one.address}), "least_conn"])
        listener = reactor.listenTCP(0, proxy.gateway.admin.site(), interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        self.admin_url = "http://127.0.0.1:%d" % listener.getHost().port
        first = ensureDeferred(self.get(proxy, "/first"))
        await until(lambda: slow.waiting, message="the first request upstream")
        code, _ = await self.call("PUT", "/routes/r", {"group": "api", "peer": two.address})
        self.assertEqual(code, 200)
        second = await self.get(proxy, "/second")
        self.assertEqual(seen(second)[0], "/second")
        self.assertEqual([r.uri for r in two.requests], ["/second"])
        slow.release()
        resp = await first
        self.assertEqual(seen(resp)[0], "/first")
        self.assertEqual([r.uri for r in one.requests], ["/first"])

    async def test_match(self):
        proxy = await self.start([
            {"name": "api", "group": "api", "match": {"path": "/api"}},
            {"name": "users", "group": "api", "strip_prefix": True,
             "match": {"path": "/api/users"}},
            {"name": "canary", "group": "web", "priority": 1,
             "match": {"path": "/api/users", "headers": {"X-Env": "canary"}}},
            {"name": "pinned", "group": "api", "peer": "127.0.0.1:1",
             "match": {"path": {"mode": "exact", "value": "/pin"}}},
            {"name": "hosted", "group": "web", "match": {"host": "*.example.com"}}])
        code, body = await self.call(
            "GET", "/routes/match?method=GET&host=x.org&path=/api/users/7%3Fq%3D1")
        self.assertEqual(code, 200)
        self.assertEqual((body["route"], body["decided_by"], body["group"],
                          body["upstream_path"]), ("users", "routes", "api", "/7?q=1"))
        self.assertEqual(body["rule"], "longer prefix beats shorter prefix")
        self.assertEqual(body["also_matched"], ["api"])
        self.assertEqual(body["precedence"]["path_tier"], "prefix")
        self.assertEqual(body["peer"]["address"], self.api.address)
        self.assertEqual(body["peer"]["conn_count"], 0)
        self.assertEqual(proxy.peer(self.api).total, 0)  # nothing acquired

        code, body = await self.call(
            "GET", "/routes/match?path=/api/users/7&header.X-Env=canary")
        self.assertEqual((body["route"], body["rule"], body["also_matched"]),
                         ("canary", "higher priority (1 > 0)", ["users", "api"]))
        self.assertEqual(body["peer"]["address"], self.web.address)

        code, body = await self.call("GET", "/routes/match?path=/x&host=a.example.com")
        self.assertEqual((body["route"], body["rule"]), ("hosted", "the only matching route"))

        code, body = await self.call("GET", "/routes/match?path=/pin")
        self.assertEqual((body["route"], body["pinned"], body["peer"]),
                         ("pinned", "127.0.0.1:1", None))
        self.assertEqual(body["response"]["status"], 503)

        code, body = await self.call("GET", "/routes/match?path=/other")
        self.assertEqual((body["route"], body["decided_by"], body["group"],
                          body["upstream_path"]), (None, "router", "default", "/other"))
        self.assertEqual(body["peer"]["address"], self.fallback.address)

        code, body = await self.call("GET", "/routes/match?host=x")
        self.assertEqual((code, body["field"]), (400, "path"))


class PathPrefixModeTests(ProxyTestCase):
    """The router's ``path_prefix`` mode with servers registering at run time."""

    async def test_referenceExamples(self):
        api, static, anything = self.upstream(), self.upstream(), self.upstream()
        proxy = await self.proxy(plugins=[
            "registry", {"name": "router", "settings": {"mode": "path_prefix"}},
            "least_conn"])
        listener = reactor.listenTCP(0, proxy.gateway.admin.site(), interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        base = "http://127.0.0.1:%d" % listener.getHost().port

        async def add(server, prefix=None):
            url = base + "/upstream/add?host=127.0.0.1&port=%d" % server.port
            if prefix is not None:
                url += "&prefix=" + prefix
            resp = await treq.get(url, pool=self.pool)
            return json.loads((await treq.content(resp)).decode("utf-8"))

        self.assertTrue((await add(api, "/api"))["created"])
        self.assertFalse((await add(api, "api"))["created"])  # the same group
        await add(static, "/static")
        await add(anything)

        async def served(path):
            resp = await self.get(proxy, path)
            self.assertEqual(resp.status, 200)
            self.assertEqual(seen(resp)[0], path)  # unchanged
            return proxy.logged[-1].peer.port

        # only the prefix-less server serves paths no prefix matches
        self.assertEqual(await served("/other/path"), anything.port)
        self.assertEqual(await served("/apix"), anything.port)
        # /static/...: the /static server and the prefix-less one take turns
        ports = [await served("/static/css/style.css") for _ in range(4)]
        self.assertEqual(sorted(ports), sorted([static.port, anything.port] * 2))
        ports = [await served("/api/users") for _ in range(4)]
        self.assertEqual(sorted(ports), sorted([api.port, anything.port] * 2))
        self.assertNotIn(static.port, [await served("/api") for _ in range(3)])
        # the /static server leaves: its paths go to the prefix-less one
        await treq.get(base + "/upstream/remove?host=127.0.0.1&port=%d&prefix=static"
                       % static.port, pool=self.pool)
        self.assertEqual([await served("/static/x") for _ in range(2)], [anything.port] * 2)


class ShippedConfigTests(SynchronousTestCase):
    """``etc/routes.json`` and ``etc/path-prefix.json`` load and route as
    ``docs/routing.md`` says."""

    def harness(self, name, servers):
        config = load_config(os.path.join(ETC, name))
        return Harness(config=config, servers=dict((a, stub_echo) for a in servers))

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
