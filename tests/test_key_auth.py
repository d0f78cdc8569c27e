"""
Tests for :mod:`tproxy.builtins.key_auth`: API keys of consumers, from a
header or the query; the key never forwarded; the consumer named upstream.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy import hookimpl
from tproxy.config import ConfigError
from tproxy.testing import Harness, echo

API = "127.0.0.1:9001"
WEB = "127.0.0.1:9002"
CONSUMERS = [{"username": "alice", "keys": ["alice-key-1", "alice-key-2"]},
             {"username": "bob", "keys": ["bob-key-0001"]}]


#: the answer to a key given more than once
TWICE = {"error": "API key given more than once (which one was meant cannot be told)"}


class SeeConsumer(object):
    """Records ``ctx.consumer`` in ``access`` (a plugin after key_auth)."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def access(self, ctx):
        self.seen.append(ctx.consumer)


def harness(settings=None, routes=None, after=None):
    settings = dict(settings or {})
    settings.setdefault("consumers", CONSUMERS)
    entry = {"name": "key_auth", "settings": settings}
    if routes:
        entry["routes"] = routes
    plugins = ["router", entry] + ([after] if after else []) + ["least_conn", "access_log"]
    return Harness(config={"upstreams": {"api": {"peers": [API]}, "web": {"peers": [WEB]}}},
                   plugins=plugins, servers={API: echo, WEB: echo})


class KeyTests(SynchronousTestCase):

    def test_headerKey(self):
        seen = SeeConsumer()
        h = harness(after=seen)
        response = h.request("GET", "/api/orders", headers={"apikey": "alice-key-2"})
        self.assertEqual(response.status, 200)
        [up] = h.upstream_requests
        self.assertNotIn("apikey", up.headers)
        self.assertEqual(up.headers.get("X-Consumer-Username"), "alice")
        self.assertEqual(seen.seen, ["alice"])
        self.assertEqual(h.contexts[0].consumer, "alice")

    def test_queryKeyStripped(self):
        """The key is removed from the query sent upstream and from the logged uri."""
        h = harness()
        response = h.request("GET", "/api/orders?a=1&apikey=bob-key-0001&b=%20x")
        self.assertEqual(response.status, 200)
        [up] = h.upstream_requests
        self.assertEqual(up.uri, "/orders?a=1&b=%20x")
        self.assertEqual(up.headers.get("X-Consumer-Username"), "bob")
        logged = [e["access_log"] for e in h.events if "access_log" in e]
        self.assertEqual(logged[0]["uri"], "/api/orders?a=1&b=%20x")
        self.assertNotIn("bob-key", str(logged))

    def test_onlyArgumentStripped(self):
        h = harness()
        h.request("GET", "/api/x?apikey=bob-key-0001")
        self.assertEqual(h.upstream_requests[0].uri, "/x")

    def test_missingKey(self):
        h = harness()
        response = h.request("GET", "/api/orders")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.headers.get("WWW-Authenticate"), 'Key realm="tproxy"')
        self.assertEqual(response.json(), {"error": "no API key found in request"})
        self.assertEqual(h.upstream_requests, [])

    def test_wrongKey(self):
        h = harness()
        for headers in [{"apikey": "alice-key-3"}, {"apikey": ""}]:
            response = h.request("GET", "/api/orders", headers=headers)
            self.assertEqual(response.status, 401, headers)
            self.assertEqual(response.json(), {"error": "invalid API key"})
        response = h.request("GET", "/api/orders", headers=[
            ("apikey", "alice-key-1"), ("apikey", "bob-key-0001")])
        self.assertEqual((response.status, response.json()), (401, TWICE))
        self.assertEqual(response.headers.get("WWW-Authenticate"), 'Key realm="tproxy"')
        self.assertEqual(h.upstream_requests, [])

    def test_queryKeyTwice(self):
        """The query argument given twice is a 401 whatever the keys, as the
        header given twice is (which key was meant cannot be told); neither
        key would go upstream."""
        h = harness()
        for uri in ("/api/x?apikey=alice-key-1&apikey=nope-nope",
                    "/api/x?apikey=alice-key-1&apikey=alice-key-1",
                    "/api/x?apikey=nope-nope&a=1&apikey=bob-key-0001"):
            response = h.request("GET", uri)
            self.assertEqual((response.status, response.json()),
                             (401, TWICE), uri)
            self.assertEqual(response.headers.get("WWW-Authenticate"), 'Key realm="tproxy"')
        self.assertEqual(h.upstream_requests, [])
        # a key header wins over the query, whose arguments are all stripped
        h.request("GET", "/api/x?apikey=a&b=1&apikey=c", headers={"apikey": "bob-key-0001"})
        [up] = h.upstream_requests
        self.assertEqual((up.uri, up.headers.get("X-Consumer-Username")), ("/x?b=1", "bob"))

    def test_severalKeyNames(self):
        """With several ``key_names``, the first listed the request carries
        is read, in the query as in the headers."""
        h = harness({"key_names": ["X-API-Key", "key"]})
        for kind, args in (("headers", {"headers": [("key", "bob-key-0001"),
                                                    ("X-API-Key", "alice-key-1")]}),
                           ("query", {"uri": "/api/x?key=bob-key-0001&X-API-Key=alice-key-1"})):
            response = h.request("GET", args.get("uri", "/api/x"), headers=args.get("headers"))
            self.assertEqual(response.status, 200, kind)
            self.assertEqual(h.upstream_requests[-1].headers.get("X-Consumer-Username"),
                             "alice", kind)
            self.assertEqual(h.upstream_requests[-1].uri, "/x", kind)

    def test_forgedConsumerHeaderRemoved(self):
        """The client cannot name itself: its X-Consumer-Username never passes."""
        h = harness()
        h.request("GET", "/api/x", headers={"apikey": "bob-key-0001",
                                            "X-Consumer-Username": "alice"})
        self.assertEqual(h.upstream_requests[0].headers.get_all("X-Consumer-Username"),
                         ["bob"])

    def test_settings(self):
        h = harness({"key_names": ["X-API-Key", "key"], "key_in_query": False,
                     "consumer_header": "X-Who", "realm": "shop"})
        self.assertEqual(h.request("GET", "/api/x", headers={"x-api-key": "alice-key-1"})
                         .status, 200)
        self.assertEqual(h.upstream_requests[0].headers.get("X-Who"), "alice")
        self.assertNotIn("X-API-Key", h.upstream_requests[0].headers)
        response = h.request("GET", "/api/x?key=alice-key-1")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.headers.get("WWW-Authenticate"), 'Key realm="shop"')

    def test_perRoute(self):
        """Enabled for ``api`` only: ``web`` passes without a key."""
        h = harness(routes=["api"])
        self.assertEqual(h.request("GET", "/api/x").status, 401)
        self.assertEqual(h.request("GET", "/web/x").status, 200)

    def test_badSettings(self):
        e = self.assertRaises(ConfigError, harness, {"consumers": []})
        self.assertEqual(e.path, "plugins[1].settings.consumers")
        e = self.assertRaises(ConfigError, harness, {"consumers": [
            {"username": "a", "keys": ["shared-key-1"]},
            {"username": "b", "keys": ["shared-key-1"]}]})
        self.assertEqual(e.path, "plugins[1].settings.consumers[1].keys[0]")
        e = self.assertRaises(ConfigError, harness, {"consumers": [
            {"username": "a", "keys": ["short"]}]})
        self.assertEqual(e.path, "plugins[1].settings.consumers[0].keys[0]")
