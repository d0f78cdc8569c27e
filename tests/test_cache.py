"""
Tests for :mod:`tproxy.builtins.cache` through :mod:`tproxy.testing` on the
fake clock, and once over real sockets.
"""

import json
from email.utils import formatdate

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import ConfigError
from tproxy.testing import Harness

from tests.helpers import ProxyTestCase

UPSTREAMS = {"upstreams": {"default": {"peers": ["127.0.0.1:9001"]},
                           "api": {"peers": ["127.0.0.1:9001"]}}}


class Origin(object):
    """A stub upstream answering with ``headers`` and a body naming the
    request's number; ``deferred`` holds the answers back until released."""

    def __init__(self, headers=None, status=200, body=None, deferred=False):
        self.headers = headers if headers is not None else {"Cache-Control": "max-age=60"}
        self.status = status
        self.body = body
        self.deferred = deferred
        self.count = 0
        self.held = []

    def __call__(self, request):
        self.count += 1
        body = self.body if self.body is not None else (
            "response %d to %s" % (self.count, request.uri)).encode()
        answer = (self.status, dict(self.headers), body)
        if self.deferred:
            d = Deferred()
            self.held.append((d, answer))
            return d
        return answer

    def release(self):
        held, self.held = self.held, []
        for d, answer in held:
            d.callback(answer)


def harness(origin, routes=None, **settings):
    entry = {"name": "cache", "settings": settings}
    if routes is not None:
        entry["routes"] = routes
    h = Harness(config=UPSTREAMS, plugins=["router", entry, "least_conn"],
                servers={"127.0.0.1:9001": origin})
    h.advance(1700000000)
    return h


def xcache(response):
    return response.headers.get("X-Cache")


class CacheTests(SynchronousTestCase):

    def test_missThenHit(self):
        origin = Origin({"Cache-Control": "max-age=60", "Content-Type": "text/plain",
                         "ETag": '"v1"'})
        h = harness(origin)
        first = h.request("GET", "/a")
        self.assertEqual((first.status, xcache(first)), (200, "MISS"))
        h.advance(10)
        second = h.request("GET", "/a")
        self.assertEqual((second.status, xcache(second)), (200, "HIT"))
        self.assertEqual(second.body, first.body)
        self.assertEqual(second.headers.get("ETag"), '"v1"')
        self.assertEqual(second.headers.get("Content-Type"), "text/plain")
        self.assertEqual(second.headers.get("Age"), "10")
        self.assertEqual(second.headers.get_all("Content-Length"), [str(len(first.body))])
        self.assertEqual(origin.count, 1)
        self.assertEqual(h.contexts[1].upstream_addr, None)
        # another URI is another entry
        self.assertEqual(xcache(h.request("GET", "/b")), "MISS")

    def test_expires(self):
        """Fresh for max-age seconds of the reactor's clock."""
        origin = Origin({"Cache-Control": "max-age=60"})
        h = harness(origin)
        h.request("GET", "/a")
        h.advance(59)
        self.assertEqual(xcache(h.request("GET", "/a")), "HIT")
        h.advance(1)
        self.assertEqual(xcache(h.request("GET", "/a")), "MISS")
        self.assertEqual(origin.count, 2)

    def test_freshness(self):
        """s-maxage wins over max-age; Expires against Date; nothing: not stored
        (unless default_ttl)."""
        date = formatdate(1700000000, usegmt=True)
        cases = [
            ({"Cache-Control": "max-age=10, s-maxage=100"}, 50, "HIT"),
            ({"Date": date, "Expires": formatdate(1700000030, usegmt=True)}, 29, "HIT"),
            ({"Date": date, "Expires": formatdate(1700000030, usegmt=True)}, 31, "MISS"),
            ({"Expires": "0"}, 0, "MISS"),
            ({}, 0, "MISS"),
        ]
        for headers, later, expected in cases:
            h = harness(Origin(headers))
            h.request("GET", "/a")
            h.advance(later)
            self.assertEqual(xcache(h.request("GET", "/a")), expected, headers)
        h = harness(Origin({}), default_ttl=5)
        h.request("GET", "/a")
        self.assertEqual(xcache(h.request("GET", "/a")), "HIT")

    def test_notStored(self):
        """no-store, private, no-cache, Set-Cookie, Vary: *, other statuses."""
        for headers, status in (
                ({"Cache-Control": "no-store, max-age=60"}, 200),
                ({"Cache-Control": "private, max-age=60"}, 200),
                ({"Cache-Control": "no-cache, max-age=60"}, 200),
                ({"Cache-Control": "max-age=60", "Set-Cookie": "a=b"}, 200),
                ({"Cache-Control": "max-age=60", "Vary": "*"}, 200),
                ({"Cache-Control": "max-age=60"}, 500),
                ({"Cache-Control": "max-age=60"}, 302)):
            origin = Origin(headers, status=status)
            h = harness(origin)
            h.request("GET", "/a")
            self.assertEqual(xcache(h.request("GET", "/a")), "MISS", (headers, status))
            self.assertEqual(origin.count, 2)
        origin = Origin({"Cache-Control": "max-age=60"}, status=404)
        h = harness(origin)
        h.request("GET", "/a")
        self.assertEqual(h.request("GET", "/a").status, 404)
        self.assertEqual(origin.count, 1)

    def test_requestDirectives(self):
        """The client's no-cache refreshes the entry; no-store and
        Authorization bypass it; other methods too."""
        origin = Origin()
        h = harness(origin)
        h.request("GET", "/a")
        refreshed = h.request("GET", "/a", headers={"Cache-Control": "no-cache"})
        self.assertEqual((xcache(refreshed), origin.count), ("BYPASS", 2))
        self.assertEqual(h.request("GET", "/a").body, refreshed.body)   # the new copy
        self.assertEqual(xcache(h.request("GET", "/a", headers={"Pragma": "no-cache"})),
                         "BYPASS")
        for headers in ({"Cache-Control": "no-store"}, {"Authorization": "Bearer x"},
                        {"Range": "bytes=0-1"}):
            self.assertEqual(xcache(h.request("GET", "/a", headers=headers)), "BYPASS")
        self.assertEqual(xcache(h.request("POST", "/a", body=b"x")), "BYPASS")
        self.assertEqual(origin.count, 7)

    def test_consumers(self):
        """A request an authentication plugin listed before ``cache``
        identified (``ctx.consumer``; the plugin took its key or token away)
        bypasses the cache, as one with ``Authorization`` does: one consumer's
        response is never served to another.  With ``consumer`` in ``key``,
        each consumer has entries of its own."""
        def who(request):
            return 200, {"Cache-Control": "max-age=60"}, (
                "for " + request.headers.get("X-Consumer-Username", "?")).encode()
        key_auth = {"name": "key_auth", "settings": {"consumers": [
            {"username": "alice", "keys": ["alice-key-1"]},
            {"username": "bob", "keys": ["bob-key-12"]}]}}
        for key, first, again in ((None, "BYPASS", "BYPASS"),
                                  (["uri", "consumer"], "MISS", "HIT")):
            settings = {} if key is None else {"key": key}
            h = Harness(config=UPSTREAMS, servers={"127.0.0.1:9001": who},
                        plugins=["router", key_auth, {"name": "cache", "settings": settings},
                                 "least_conn"])
            seen = []
            for apikey in ("alice-key-1", "bob-key-12", "alice-key-1", "bob-key-12"):
                r = h.request("GET", "/me", headers={"apikey": apikey})
                seen.append((xcache(r), r.body))
            self.assertEqual(seen, [(first, b"for alice"), (first, b"for bob"),
                                    (again, b"for alice"), (again, b"for bob")], key)
        # a request without a consumer (no authentication plugin on it) is cached
        h = harness(Origin())
        h.request("GET", "/a")
        self.assertEqual(xcache(h.request("GET", "/a")), "HIT")

    def test_head(self):
        """HEAD is answered from a stored GET (no body, the GET's length)."""
        origin = Origin()
        h = harness(origin)
        self.assertEqual(xcache(h.request("HEAD", "/a")), "MISS")   # not stored
        get = h.request("GET", "/a")
        head = h.request("HEAD", "/a")
        self.assertEqual((xcache(head), head.body), ("HIT", b""))
        self.assertEqual(head.headers.get("Content-Length"), str(len(get.body)))
        self.assertEqual(origin.count, 2)

    def test_conditionalHit(self):
        """A conditional request a stored 200 satisfies is a 304 HIT
        (If-None-Match, weak comparison, or If-Modified-Since without it),
        with the validators and caching fields, no body; else the full
        stored response (RFC 9110 13.2.2, 15.4.5; nginx's proxy_cache)."""
        modified = formatdate(1699990000, usegmt=True)
        origin = Origin({"Cache-Control": "max-age=60", "ETag": 'W/"v1"',
                         "Last-Modified": modified, "Content-Type": "text/plain",
                         "Vary": "Accept-Encoding"})
        h = harness(origin)
        first = h.request("GET", "/a")
        h.advance(5)
        for method, headers in [
                ("GET", {"If-None-Match": '"v1"'}),
                ("GET", {"If-None-Match": '"v0", W/"v1"'}),
                ("HEAD", {"If-None-Match": "*"}),
                ("GET", {"If-Modified-Since": modified}),
                ("GET", {"If-Modified-Since": formatdate(1699999999, usegmt=True)})]:
            r = h.request(method, "/a", headers=headers)
            self.assertEqual((r.status, xcache(r), r.body), (304, "HIT", b""), headers)
            self.assertEqual((r.headers.get("ETag"), r.headers.get("Last-Modified"),
                              r.headers.get("Cache-Control"), r.headers.get("Vary"),
                              r.headers.get("Age"), r.headers.get("Content-Type")),
                             ('W/"v1"', modified, "max-age=60", "Accept-Encoding", "5",
                              None), headers)
        for headers in [{"If-None-Match": '"v2"'},
                        {"If-None-Match": '"v2"', "If-Modified-Since": modified},
                        {"If-Modified-Since": formatdate(1699980000, usegmt=True)},
                        {"If-Modified-Since": "yesterday"},
                        {"If-None-Match": "v1"}]:
            r = h.request("GET", "/a", headers=headers)
            self.assertEqual((r.status, xcache(r), r.body), (200, "HIT", first.body),
                             headers)
        self.assertEqual(origin.count, 1)
        # a stored 404 is never a 304
        h = harness(Origin({"Cache-Control": "max-age=60", "ETag": '"gone"'}, status=404))
        h.request("GET", "/a")
        r = h.request("GET", "/a", headers={"If-None-Match": '"gone"'})
        self.assertEqual((r.status, xcache(r)), (404, "HIT"))

    def test_conditionalMiss(self):
        """A conditional GET the cache would store goes upstream without its
        condition and range fields; the 200 is stored and the condition
        answered from it (304, or 412 for If-Match / If-Unmodified-Since),
        so a revalidating client fills the cache; a request not stored
        keeps its fields (nginx's proxy_cache)."""
        modified = formatdate(1699990000, usegmt=True)
        seen = []

        def origin(request):
            # an origin that answers conditions itself
            seen.append(dict((n.lower(), v) for n, v in request.headers.items()
                             if n.lower().startswith("if-")))
            headers = {"Cache-Control": "max-age=60", "ETag": '"v1"',
                       "Last-Modified": modified, "Content-Type": "text/plain"}
            if request.headers.get("If-None-Match") == '"v1"':
                return 304, headers, b""
            return 200, headers, b"the body"
        for headers, status in [
                ({"If-None-Match": '"v1"', "If-Range": '"v1"'}, 304),
                ({"If-Modified-Since": modified}, 304),
                ({"If-None-Match": '"v0"'}, 200),
                ({"If-Match": '"v0"', "If-None-Match": '"v1"'}, 412),
                ({"If-Unmodified-Since": formatdate(1699980000, usegmt=True)}, 412),
                ({"If-Match": '"v1"', "If-Unmodified-Since": modified}, 200)]:
            h = Harness(config=UPSTREAMS, plugins=["router", "cache", "least_conn"],
                        servers={"127.0.0.1:9001": origin})
            h.advance(1700000000)
            del seen[:]
            r = h.request("GET", "/a", headers=headers)
            self.assertEqual((r.status, xcache(r)), (status, "MISS"), headers)
            self.assertEqual(seen, [{}], headers)
            if status == 304:
                self.assertEqual((r.body, r.headers.get("ETag"), r.headers.get("Content-Type"),
                                  r.headers.get("Cache-Control")),
                                 (b"", '"v1"', None, "max-age=60"))
            elif status == 412:
                self.assertEqual(json.loads(r.body)["error"][:19], "precondition failed")
            else:
                self.assertEqual(r.body, b"the body")
            self.assertEqual(h.contexts[-1].status, status)
            # the 200 was stored: the next plain request is a HIT
            r = h.request("GET", "/a")
            self.assertEqual((r.status, xcache(r), r.body), (200, "HIT", b"the body"),
                             headers)
            self.assertEqual(len(seen), 1)
        # a stored If-Match that fails on a HIT is a 412 as well
        r = h.request("GET", "/a", headers={"If-Match": '"v0"'})
        self.assertEqual((r.status, xcache(r)), (412, "HIT"))
        # a client's reload (no-cache) refreshes the entry the same way
        h.advance(1)
        del seen[:]
        r = h.request("GET", "/a", headers={"If-None-Match": '"v1"',
                                            "Cache-Control": "no-cache"})
        self.assertEqual((r.status, xcache(r), seen), (304, "BYPASS", [{}]))
        self.assertEqual(h.request("GET", "/a").headers.get("Age"), "0")
        # a request not stored keeps its fields: HEAD, Authorization
        for method, headers in [("HEAD", {"If-None-Match": '"v1"'}),
                                ("GET", {"If-None-Match": '"v1"',
                                         "Authorization": "Basic eDp5"})]:
            del seen[:]
            h.admin("DELETE", "/cache")
            r = h.request(method, "/a", headers=headers)
            self.assertEqual(r.status, 304)
            self.assertEqual(seen, [{"if-none-match": '"v1"'}], method)

    def test_upstreamAge(self):
        """The Age a response comes with counts against its lifetime and
        goes on in the Age of a HIT (RFC 9111 4.2.3): max-age=60 with
        Age: 50 is fresh 10 more seconds; with Age: 60, not stored."""
        origin = Origin({"Cache-Control": "max-age=60", "Age": "50"})
        h = harness(origin)
        h.request("GET", "/a")
        h.advance(9)
        hit = h.request("GET", "/a")
        self.assertEqual((xcache(hit), hit.headers.get_all("Age")), ("HIT", ["59"]))
        h.advance(1)
        self.assertEqual(xcache(h.request("GET", "/a")), "MISS")
        h = harness(Origin({"Cache-Control": "max-age=60", "Age": "60"}))
        h.request("GET", "/a")
        self.assertEqual(xcache(h.request("GET", "/a")), "MISS")

    def test_vary(self):
        """The request headers Vary names choose the variant."""
        origin = Origin({"Cache-Control": "max-age=60", "Vary": "Accept-Encoding"})
        h = harness(origin)
        gz = h.request("GET", "/a", headers={"Accept-Encoding": "gzip"})
        plain = h.request("GET", "/a")
        self.assertEqual((xcache(gz), xcache(plain)), ("MISS", "MISS"))
        again = h.request("GET", "/a", headers={"Accept-Encoding": "gzip"})
        self.assertEqual((xcache(again), again.body), ("HIT", gz.body))
        again = h.request("GET", "/a")
        self.assertEqual((xcache(again), again.body), ("HIT", plain.body))
        self.assertEqual(origin.count, 2)
        # a refreshed variant replaces the stored one
        fresh = h.request("GET", "/a", headers={"Accept-Encoding": "gzip",
                                                "Cache-Control": "no-cache"})
        self.assertEqual(h.request("GET", "/a", headers={"Accept-Encoding": "gzip"}).body,
                         fresh.body)
        self.assertEqual(origin.count, 3)
        # the Vary record goes with its last variant (bounded memory)
        plugin = h.gateway.plugins.get_plugin("cache")
        self.assertEqual(list(plugin.responses.vary.values()), [[("accept-encoding",), 2]])
        self.assertEqual(h.admin("DELETE", "/cache").obj, {"purged": 2})
        self.assertEqual(plugin.responses.vary, {})

    def test_key(self):
        """The key is configurable: here the path, whatever the query."""
        origin = Origin()
        h = harness(origin, key=["path"])
        h.request("GET", "/a?x=1")
        self.assertEqual(xcache(h.request("GET", "/a?x=2")), "HIT")
        h = harness(Origin())
        h.request("GET", "/a?x=1")
        self.assertEqual(xcache(h.request("GET", "/a?x=2")), "MISS")
        h = harness(Origin())
        h.request("GET", "/a", headers={"Host": "one.test"})
        self.assertEqual(xcache(h.request("GET", "/a", headers={"Host": "two.test"})), "MISS")

    def test_singleFlight(self):
        """A burst of misses of one key sends one request upstream; the
        others are answered from it."""
        origin = Origin(deferred=True)
        h = harness(origin)
        pending = [h.request("GET", "/a", wait=False) for _ in range(5)]
        other = h.request("GET", "/b", wait=False)
        self.assertEqual(origin.count, 2)          # /a once, /b once
        h.advance(1)
        origin.release()
        got = [p.result() for p in pending]
        self.assertEqual([xcache(r) for r in got], ["MISS", "HIT", "HIT", "HIT", "HIT"])
        self.assertEqual(len({r.body for r in got}), 1)
        self.assertEqual(other.result().status, 200)
        self.assertEqual(origin.count, 2)

    def test_singleFlightUncacheable(self):
        """When the first answer may not be stored, the waiters go upstream."""
        origin = Origin({"Cache-Control": "no-store"}, deferred=True)
        h = harness(origin)
        pending = [h.request("GET", "/a", wait=False) for _ in range(3)]
        self.assertEqual(origin.count, 1)
        origin.release()
        h.flush()
        self.assertEqual(origin.count, 3)
        origin.release()
        self.assertEqual([xcache(p.result()) for p in pending], ["MISS"] * 3)

    def test_waiterGoesAway(self):
        """A client that leaves while waiting: the others are served, nothing fails."""
        origin = Origin(deferred=True)
        h = harness(origin)
        first = h.request("GET", "/a", wait=False)
        gone = h.request("GET", "/a", wait=False)
        third = h.request("GET", "/a", wait=False)
        gone.abort()
        origin.release()
        self.assertEqual([xcache(p.result()) for p in (first, third)], ["MISS", "HIT"])
        self.assertEqual(sorted(ctx.status for ctx in h.contexts), [200, 200, 499])
        self.assertEqual(h.admin("GET", "/cache").obj["waiting"], 0)

    def test_lockTimeout(self):
        """A waiter waits lock_timeout seconds at most, then goes upstream."""
        origin = Origin(deferred=True)
        h = harness(origin, lock_timeout=2)
        first = h.request("GET", "/a", wait=False)
        second = h.request("GET", "/a", wait=False)
        h.advance(1.9)
        self.assertEqual(origin.count, 1)
        h.advance(0.1)
        self.assertEqual(origin.count, 2)
        origin.release()
        self.assertEqual([xcache(p.result()) for p in (first, second)], ["MISS", "MISS"])
        self.assertEqual(xcache(h.request("GET", "/a")), "HIT")

    def test_largeBodyNotStored(self):
        """A body past max_object_size streams through uncached (Content-Length
        or counted as it streams)."""
        origin = Origin(body=b"z" * 5000)
        h = harness(origin, max_object_size=4096)
        self.assertEqual(len(h.request("GET", "/a").body), 5000)
        self.assertEqual(len(h.request("GET", "/a").body), 5000)
        self.assertEqual(origin.count, 2)
        self.assertEqual(h.gateway.plugins.get_plugin("cache").responses.size, 0)

    def test_lruInBytes(self):
        """Past max_size, the least recently used entries go."""
        h = harness(Origin(body=b"b" * 1000), max_size=2500)
        plugin = h.gateway.plugins.get_plugin("cache")
        for path in ("/1", "/2", "/1", "/3"):
            h.request("GET", path)
        self.assertEqual([k[-1] for k in plugin.responses.entries], ["/1", "/3"])
        self.assertLessEqual(plugin.responses.size, 2500)
        self.assertEqual(xcache(h.request("GET", "/1")), "HIT")
        self.assertEqual(xcache(h.request("GET", "/2")), "MISS")

    def test_purge(self):
        """The admin API: counts, purge by prefix, purge all."""
        h = harness(Origin())
        for path in ("/api/1", "/api/2", "/web/1"):
            h.request("GET", path)
        h.request("GET", "/api/1")
        stats = h.admin("GET", "/cache").obj
        self.assertEqual((stats["entries"], stats["hits"], stats["misses"]), (3, 1, 3))
        self.assertEqual(h.admin("DELETE", "/cache?prefix=/api/").obj, {"purged": 2})
        # a prefix without its "/" matches no path: a 400, nothing purged
        for bad in ("api/", ""):
            refused = h.admin("DELETE", "/cache?prefix=" + bad)
            self.assertEqual((refused.status, refused.obj), (400, {
                "error": "prefix must be a path prefix starting with '/' (/static/)",
                "field": "prefix", "value": bad}))
        # a misspelt parameter would purge everything: a 400 naming it, nothing purged
        refused = h.admin("DELETE", "/cache?prefx=/nothing/")
        self.assertEqual((refused.status, refused.obj), (400, {
            "error": "unknown parameter 'prefx' (known: prefix)", "field": "prefx",
            "value": "/nothing/"}))
        # so would a prefix in a body, read by nobody: a 400, nothing purged
        for body, ctype in [({"prefix": "/nothing/"}, "application/json"),
                            (b"prefix=/nothing/", "application/x-www-form-urlencoded")]:
            refused = h.admin("DELETE", "/cache", body=body, headers={"Content-Type": ctype})
            self.assertEqual((refused.status, refused.obj["field"]), (400, "body"), body)
            self.assertIn("?prefix=/api/", refused.obj["error"])
        self.assertEqual(xcache(h.request("GET", "/api/1")), "MISS")
        self.assertEqual(xcache(h.request("GET", "/web/1")), "HIT")
        self.assertEqual(h.admin("DELETE", "/cache").obj, {"purged": 2})
        self.assertEqual(h.admin("GET", "/cache").obj["bytes"], 0)

    def test_perRoute(self):
        origin = Origin()
        h = harness(origin, routes=["api"])
        h.request("GET", "/api/a")
        self.assertEqual(xcache(h.request("GET", "/api/a")), "HIT")
        h.request("GET", "/web/a")
        self.assertIsNone(xcache(h.request("GET", "/web/a")))
        self.assertEqual(origin.count, 3)

    def test_badSettings(self):
        with self.assertRaises(ConfigError) as e:
            harness(Origin(), key=["cookie"])
        self.assertIn("plugins[1].settings.key[0]", str(e.exception))


class EndToEndTests(ProxyTestCase):
    """Over real sockets: a hit never reaches the upstream."""

    async def test_hit(self):
        def cacheable(conn, req):
            conn.respond(200, "hello %d" % len(up.requests),
                         [("Cache-Control", "max-age=60")])
        up = self.upstream(cacheable)
        proxy = await self.proxy({"default": [up]}, plugins=["router", "cache", "least_conn"])
        first = await self.get(proxy, "/x")
        second = await self.get(proxy, "/x")
        self.assertEqual((first.header("X-Cache"), second.header("X-Cache")), ("MISS", "HIT"))
        self.assertEqual(second.body, b"hello 1")
        self.assertEqual(len(up.requests), 1)

    async def test_streamedBodyPastLimit(self):
        """A chunked body longer than max_object_size streams to the client
        whole and is not stored; a short one is."""
        from tests.helpers import BodySource

        def chunked(conn, req):
            size = 300000 if req.uri == "/big" else 1000
            conn.transport.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
            conn.source = BodySource(conn.transport, size, chunked=True)
        up = self.upstream(chunked, keep_body=False)
        proxy = await self.proxy({"default": [up]}, plugins=[
            "router", {"name": "cache", "settings": {"max_object_size": 100000}},
            "least_conn"])
        for _ in range(2):
            big = await self.get(proxy, "/big")
            self.assertEqual((big.status, len(big.body), big.header("X-Cache")),
                             (200, 300000, "MISS"))
        self.assertEqual(big.body[:512], BodySource.BLOCK[:512])
        small = [await self.get(proxy, "/small") for _ in range(2)]
        self.assertEqual([r.header("X-Cache") for r in small], ["MISS", "HIT"])
        self.assertEqual(small[1].body, BodySource.BLOCK[:1000])
        self.assertEqual(len(up.requests), 3)
        self.assertEqual(proxy.plugin("cache").stats()["entries"], 1)
