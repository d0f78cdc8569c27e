"""
The built-in plugins (``router``, ``least_conn``, ``registry``,
``access_log``) exercised through :mod:`tproxy.testing`: whole requests in
memory, as a plugin author would test them.  Their unit tests call the plugins
directly; these prove that the harness can say the same things end to end.
"""

import json
import os
from collections import Counter

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy import watch_field
from tproxy.testing import Harness, echo

from tests.helpers import temp_path


def held():
    """A stub handler that answers only when the test fires its Deferreds."""
    answers = []

    def handler(request):
        answers.append(Deferred())
        return answers[-1]
    handler.answers = answers
    return handler


def release(handler):
    """Answer every request ``handler`` holds."""
    while handler.answers:
        handler.answers.pop(0).callback((200, {}, b"done"))


def served_by(h):
    """How many requests each stub server received."""
    return Counter(r.server for r in h.upstream_requests)


class RouterTests(SynchronousTestCase):
    """``router``: longest prefix, stripping, fallback, 503."""

    def setUp(self):
        self.h = Harness(
            config={"upstreams": {
                "api": {"peers": ["127.0.0.1:9001"]},
                "api/v2": {"peers": ["127.0.0.1:9002"]},
                "default": {"peers": ["127.0.0.1:9003"]}}},
            plugins=["router", "least_conn"],
            servers={"127.0.0.1:9001": echo, "127.0.0.1:9002": echo,
                     "127.0.0.1:9003": echo})

    def assertRouted(self, uri, server, upstream_uri, route):
        seen = self.h.request("GET", uri).json()
        self.assertEqual((seen["server"], seen["uri"]), (server, upstream_uri))
        self.assertEqual(seen["headers"]["x-route-prefix"], route)
        self.assertEqual(self.h.contexts[-1].route, route)

    def test_longestPrefix(self):
        """The longest group at a segment boundary wins; its prefix is stripped."""
        self.assertRouted("/api/v2/x", "127.0.0.1:9002", "/x", "api/v2")
        self.assertRouted("/api/v1/users?q=1", "127.0.0.1:9001", "/v1/users?q=1", "api")
        self.assertRouted("/api", "127.0.0.1:9001", "/", "api")

    def test_fallback(self):
        """No prefix matches: ``default``, with the path unchanged."""
        self.assertRouted("/apix", "127.0.0.1:9003", "/apix", "default")
        self.assertRouted("/other/path?a=b", "127.0.0.1:9003", "/other/path?a=b", "default")

    def test_clientRoutePrefixIgnored(self):
        """A client's ``X-Route-Prefix`` neither routes nor reaches the upstream."""
        self.h.request("GET", "/api/x", headers={"X-Route-Prefix": "api/v2"})
        [received] = self.h.upstream_requests
        self.assertEqual(received.server, "127.0.0.1:9001")
        self.assertEqual(received.headers.get_all("x-route-prefix"), ["api"])

    def test_defaultGroupSetting(self):
        """``default_group`` names the fallback group."""
        h = Harness(config={"upstreams": {"web": {"peers": ["127.0.0.1:9004"]}}},
                    plugins=[{"name": "router", "settings": {"default_group": "web"}},
                             "least_conn"],
                    servers={"127.0.0.1:9004": echo})
        self.assertEqual(h.request("GET", "/anything").json()["server"], "127.0.0.1:9004")

    def test_noLiveGroup(self):
        """No group for the path and no fallback: ``503`` naming the group."""
        h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}},
                    plugins=["router", "least_conn"], servers={"127.0.0.1:9001": echo})
        response = h.request("GET", "/other")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.json(), {"error": "no live upstream", "group": "default"})
        self.assertEqual((h.contexts[0].route, h.contexts[0].error), ("default", "no_peer"))
        self.assertEqual(h.upstream_requests, [])

    def test_noRouter(self):
        """Without a router (no plugin gives the request a group): ``503``
        without a ``group`` field, as docs/plugins.md lists it (not
        ``"group": null``)."""
        h = Harness(config={"upstreams": {"default": {"peers": ["127.0.0.1:9001"]}}},
                    plugins=["least_conn"], servers={"127.0.0.1:9001": echo})
        response = h.request("GET", "/x")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.json(), {"error": "no live upstream"})
        self.assertEqual((h.contexts[0].route, h.contexts[0].error), (None, "no_peer"))


class LeastConnTests(SynchronousTestCase):
    """``least_conn``: requests in flight, weights, retries."""

    def harness(self, peers, servers):
        return Harness(config={"upstreams": {"api": {"peers": peers}}},
                       plugins=["router", "least_conn"], servers=servers)

    def test_spreadsRequestsInFlight(self):
        """Requests held by their upstreams spread evenly over equal peers."""
        handler = held()
        addresses = ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
        h = self.harness(addresses, dict.fromkeys(addresses, handler))
        pending = [h.request("GET", "/api/x", wait=False) for _ in range(6)]
        self.assertEqual(served_by(h), Counter(dict.fromkeys(addresses, 2)))
        self.assertEqual([p.active for p in h.registry.group("api").peers.values()],
                         [2, 2, 2])
        release(handler)
        self.assertEqual([p.result().status for p in pending], [200] * 6)
        self.assertEqual([p.active for p in h.registry.group("api").peers.values()],
                         [0, 0, 0])

    def test_weights(self):
        """A peer of weight 2 takes twice the requests in flight."""
        handler = held()
        h = self.harness(
            [{"host": "127.0.0.1", "port": 9001, "weight": 2}, "127.0.0.1:9002"],
            {"127.0.0.1:9001": handler, "127.0.0.1:9002": handler})
        for _ in range(6):
            h.request("GET", "/api/x", wait=False)
        self.assertEqual(served_by(h), Counter({"127.0.0.1:9001": 4, "127.0.0.1:9002": 2}))
        release(handler)

    def test_busyPeerAvoided(self):
        """While one peer is busy, requests keep going to the other."""
        slow = held()
        h = self.harness(["127.0.0.1:9001", "127.0.0.1:9002"],
                         {"127.0.0.1:9001": slow, "127.0.0.1:9002": echo})
        # until the slow peer holds one (ties take turns: the first or second
        # request).  Bounded: a request that never reaches a peer (a plugin
        # raising: 500) must fail the test, not loop for ever.
        for _ in range(4):
            busy = h.request("GET", "/api/x", wait=False)
            if slow.answers:
                break
        else:
            self.fail("no request reached the slow peer: {}".format(busy.result().status))
        for _ in range(5):
            self.assertEqual(h.request("GET", "/api/y").json()["server"], "127.0.0.1:9002")
        release(slow)
        self.assertEqual(busy.result().body, b"done")

    def test_retryElsewhere(self):
        """A refused peer is tried once per request; the next try goes elsewhere."""
        h = self.harness(["127.0.0.1:9001", "127.0.0.1:9002"], {"127.0.0.1:9002": echo})
        for _ in range(4):
            self.assertEqual(h.request("GET", "/api/x").status, 200)
        for ctx in h.contexts:
            addresses = [p.address for p in ctx.tried]
            self.assertEqual(addresses[-1], "127.0.0.1:9002")
            self.assertEqual(len(addresses), len(set(addresses)))

    def test_triesExhausted(self):
        """``proxy.tries`` peers refusing: ``502`` after that many tries."""
        addresses = ["127.0.0.1:900%d" % i for i in range(1, 6)]
        h = Harness(config={"upstreams": {"api": {"peers": addresses}},
                            "proxy": {"tries": 2}},
                    plugins=["router", "least_conn"])
        self.assertEqual(h.request("GET", "/api/x").status, 502)
        self.assertEqual(len(h.contexts[0].tried), 2)


class RegistryTests(SynchronousTestCase):
    """``registry``: servers register through the admin API, and expire."""

    def setUp(self):
        self.h = Harness(
            config={"registry": {"ttl": 30, "cleanup_interval": 10}},
            plugins=["registry", "router", "least_conn"],
            servers={"127.0.0.1:9001": echo, "127.0.0.5:9002": echo})

    def add(self, **args):
        query = "&".join("{}={}".format(k, v) for k, v in sorted(args.items()))
        return self.h.admin("GET", "/upstream/add?" + query)

    def test_registerThenServe(self):
        """A registered server gets the traffic of its prefix."""
        answer = self.add(prefix="api", host="127.0.0.1", port=9001)
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.obj["created"])
        seen = self.h.request("GET", "/api/users").json()
        self.assertEqual((seen["server"], seen["uri"]), ("127.0.0.1:9001", "/users"))

    def test_hostIsCaller(self):
        """Without ``host``, the caller's address is registered."""
        answer = self.h.admin("POST", "/upstream/add", body=b"port=9002&prefix=api",
                              headers={"Content-Type": "application/x-www-form-urlencoded"},
                              client="127.0.0.5")
        self.assertEqual(answer.obj["server"], "api:127.0.0.5:9002")
        self.assertEqual(self.h.request("GET", "/api/x").json()["server"], "127.0.0.5:9002")

    def test_expiry(self):
        """
        A registration without heartbeats stops being chosen after the TTL
        and is removed by the next cleanup.
        """
        self.h.advance(5)
        self.add(prefix="api", host="127.0.0.1", port=9001)   # expires at 35
        self.h.advance(29)
        self.assertEqual(self.h.request("GET", "/api/x").status, 200)
        self.h.advance(1)
        response = self.h.request("GET", "/api/x")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.json()["group"], "api")
        self.assertEqual(self.h.admin("GET", "/upstream/status").obj["total_servers"], 1)
        self.h.advance(5)                                     # cleanup at 40
        self.assertEqual(self.h.admin("GET", "/upstream/status").obj["total_servers"], 0)
        self.assertTrue(any("expired" in m for m in self.h.messages()))

    def test_expiryLine(self):
        """The expiry line gives the heartbeat's age in tenths of a second
        (a real clock's float written whole was 7.2745890617370605)."""
        self.h.advance(5.123456)
        self.add(prefix="api", host="127.0.0.1", port=9001)
        self.h.advance(40 - 5.123456)                          # cleanup at 40
        self.assertIn("registration of api:127.0.0.1:9001 expired (last heartbeat "
                      "34.9 s ago)", self.h.messages())

    def test_heartbeats(self):
        """Heartbeats within the TTL keep a server for as long as they come."""
        for _ in range(10):
            answer = self.add(prefix="api", host="127.0.0.1", port=9001)
            self.h.advance(20)
        self.assertFalse(answer.obj["created"])
        self.assertEqual(self.h.request("GET", "/api/x").status, 200)

    def test_remove(self):
        """A removed server gets no more traffic; a configured one stays."""
        self.add(prefix="api", host="127.0.0.1", port=9001)
        answer = self.h.admin("GET", "/upstream/remove?prefix=api&host=127.0.0.1&port=9001")
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.h.request("GET", "/api/x").status, 503)

    def test_staticCannotBeRemoved(self):
        """A server of the configuration's ``upstreams`` is ``409`` to remove."""
        h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}},
                    plugins=["registry", "router", "least_conn"],
                    servers={"127.0.0.1:9001": echo})
        answer = h.admin("GET", "/upstream/remove?prefix=api&host=127.0.0.1&port=9001")
        self.assertEqual(answer.status, 409)
        h.advance(3600)
        self.assertEqual(h.request("GET", "/api/x").status, 200)

    def test_badParameter(self):
        """A bad parameter is a ``400`` naming it, and changes nothing."""
        answer = self.add(prefix="api", host="127.0.0.1", port=70000)
        self.assertEqual((answer.status, answer.obj["field"]), (400, "port"))
        self.assertEqual(self.h.registry.groups(), [])


class AccessLogTests(SynchronousTestCase):
    """``access_log``: one JSON record per request, however it ended."""

    def harness(self, handler=echo, settings=None):
        return Harness(
            config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}},
            plugins=["router", "least_conn",
                     {"name": "access_log",
                      "settings": settings or {"target": "logger"}}],
            servers={"127.0.0.1:9001": handler})

    def records(self, h):
        return [e["access_log"] for e in h.events if "access_log" in e]

    def test_success(self):
        """A proxied request: status, route, upstream, the client's URI."""
        h = self.harness()
        h.request("GET", "/api/x?q=1", client="10.0.0.9")
        [record] = self.records(h)
        self.assertEqual(
            {k: record[k] for k in ("client", "method", "uri", "status", "route",
                                    "upstream_addr", "error")},
            {"client": "10.0.0.9", "method": "GET", "uri": "/api/x?q=1", "status": 200,
             "route": "api", "upstream_addr": "127.0.0.1:9001", "error": None})
        self.assertEqual(record["request_id"], h.contexts[0].request_id)

    def test_timings(self):
        """Times come from the gateway's clock."""
        handler = held()
        h = self.harness(handler)
        pending = h.request("GET", "/api/x", wait=False)
        h.advance(1.5)
        release(handler)
        pending.result()
        [record] = self.records(h)
        self.assertEqual((record["request_time"], record["upstream_time"]), (1.5, 1.5))
        self.assertEqual(record["time"], "1970-01-01T00:00:01.500Z")

    def test_noUpstream(self):
        """A request that never reached an upstream has null upstream fields."""
        h = self.harness()
        h.request("GET", "/elsewhere")
        [record] = self.records(h)
        self.assertEqual((record["status"], record["error"], record["upstream_addr"],
                          record["upstream_time"]), (503, "no_peer", None, None))

    def test_clientAbort(self):
        """A client that goes away is logged as such."""
        handler = held()
        h = self.harness(handler)
        h.request("GET", "/api/x", wait=False).abort()
        [record] = self.records(h)
        self.assertEqual((record["status"], record["error"]), (499, "client_abort"))

    def test_file(self):
        """With ``path``, lines go to the file, which ``stop`` closes."""
        path = temp_path(self)
        h = self.harness(settings={"path": path})
        h.request("GET", "/api/a")
        h.request("GET", "/api/b")
        h.stop()
        with open(path) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual([r["uri"] for r in lines], ["/api/a", "/api/b"])
        self.assertEqual(self.records(h), [])
        self.assertTrue(os.path.exists(path))


class WatchedFieldTests(SynchronousTestCase):
    """``tproxy.watch_field``: the reader notes a rare field's presence in
    ``ctx.request.watched`` (the router's ``X-Route-Prefix`` is one)."""

    def setUp(self):
        self.h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}},
                         plugins=["router", "least_conn"],
                         servers={"127.0.0.1:9001": echo})

    def test_noted(self):
        """A watched field, in any case, is noted by its lower-case name;
        the others are not."""
        watch_field("X-Test-Watched")
        self.h.request("GET", "/api/x", headers={"x-TEST-watched": "1", "Accept": "*/*"})
        self.h.request("GET", "/api/x", headers={"Accept": "*/*"})
        self.assertEqual([ctx.request.watched for ctx in self.h.contexts],
                         [(b"x-test-watched",), ()])
        # (forwarded as it came)
        self.assertEqual(self.h.upstream_requests[0].headers.get_all("x-test-watched"), ["1"])

    def test_routePrefixWatched(self):
        """The router watches ``X-Route-Prefix``: a client's is noted, then
        dropped."""
        self.h.request("GET", "/api/x", headers={"x-route-prefix": "other"})
        self.assertEqual(self.h.contexts[-1].request.watched, (b"x-route-prefix",))
        self.assertEqual(self.h.upstream_requests[-1].headers.get_all("x-route-prefix"),
                         ["api"])

    def test_handledFieldsRefused(self):
        """A field tproxy frames or sets itself cannot be watched."""
        for name in ("Host", b"connection", "Content-Length", "X-Forwarded-For",
                     "Expect", "x_under", ""):
            self.assertRaises(ValueError, watch_field, name)


class RequestTests(SynchronousTestCase):
    """What the reader puts in ``ctx.request``."""

    def test_contentLength(self):
        """``ctx.request.content_length``: the declared length (an int, 0
        too), ``None`` for a chunked body or none; read only; the headers
        have no Content-Length."""
        h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}},
                    plugins=["router", "least_conn"], servers={"127.0.0.1:9001": echo})
        h.request("POST", "/api/x", body=b"hello")
        h.request("POST", "/api/x", headers={"Content-Length": "0"})
        h.request("GET", "/api/x")
        conn = h.connect()
        conn.send(b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n0\r\n\r\n")
        self.assertEqual(conn.responses[0].status, 200)
        requests = [ctx.request for ctx in h.contexts]
        self.assertEqual([r.content_length for r in requests], [5, 0, None, None])
        self.assertEqual([r.headers.get("content-length") for r in requests], [None] * 4)
        self.assertRaises(AttributeError, setattr, requests[0], "content_length", 1)
