"""
Tests for :mod:`tproxy.builtins.request_id`: ``X-Request-ID`` made per
request (or believed from a trusted proxy), sent upstream, returned to the
client and written by the access log.
"""

import re

from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import ConfigError
from tproxy.testing import Harness, echo

UPSTREAM = "127.0.0.1:9001"


def harness(settings=None, upstream=echo, **config):
    config.setdefault("upstreams", {"default": {"peers": [UPSTREAM]}})
    entry = {"name": "request_id", "settings": settings or {}}
    return Harness(config=config, plugins=[entry, "router", "least_conn", "access_log"],
                   servers={UPSTREAM: upstream})


def access_records(h):
    """The access log's records (dicts), in order."""
    return [e["access_log"] for e in h.events if "access_log" in e]


class GeneratedTests(SynchronousTestCase):

    def test_sameIdEverywhere(self):
        """One id per request: upstream, response, context and access log agree."""
        h = harness()
        first = h.request("GET", "/a")
        second = h.request("GET", "/b")
        ids = [first.headers.get("X-Request-ID"), second.headers.get("X-Request-ID")]
        self.assertNotEqual(ids[0], ids[1])
        for rid in ids:
            self.assertTrue(re.match(r"^[0-9a-f]{16}$", rid), rid)
        self.assertEqual([r.headers.get("X-Request-ID") for r in h.upstream_requests], ids)
        self.assertEqual([c.request_id for c in h.contexts], ids)
        self.assertEqual([r["request_id"] for r in access_records(h)], ids)

    def test_clientIdReplaced(self):
        """A client that is not a trusted proxy cannot choose the id."""
        h = harness(trusted_proxies=["10.0.0.0/8"])
        response = h.request("GET", "/", headers={"X-Request-ID": "forged"},
                             client="192.0.2.7")
        rid = response.headers.get("X-Request-ID")
        self.assertNotEqual(rid, "forged")
        self.assertEqual(h.upstream_requests[0].headers.get_all("X-Request-ID"), [rid])

    def test_trustedProxyIdKept(self):
        h = harness(trusted_proxies=["10.0.0.0/8", "::1"])
        response = h.request("GET", "/", headers={"X-Request-ID": "lb-42"},
                             client="10.1.2.3")
        self.assertEqual(response.headers.get("X-Request-ID"), "lb-42")
        self.assertEqual(h.upstream_requests[0].headers.get("X-Request-ID"), "lb-42")
        self.assertEqual(access_records(h)[0]["request_id"], "lb-42")

    def test_malformedTrustedIdReplaced(self):
        """Even a trusted proxy's id must be 1-200 visible characters."""
        h = harness(trusted_proxies=["10.0.0.0/8"])
        for bad in ["has space", "x" * 201, "caf\xe9"]:
            response = h.request("GET", "/", headers={"X-Request-ID": bad},
                                 client="10.1.2.3")
            self.assertNotEqual(response.headers.get("X-Request-ID"), bad)
            self.assertEqual(response.headers.get("X-Request-ID"), h.contexts[-1].request_id)

    def test_acceptAnyAndNone(self):
        h = harness({"accept": "any"})
        self.assertEqual(h.request("GET", "/", headers={"X-Request-ID": "c-1"})
                         .headers.get("X-Request-ID"), "c-1")
        h = harness({"accept": "none"}, trusted_proxies=["127.0.0.1"])
        self.assertNotEqual(h.request("GET", "/", headers={"X-Request-ID": "c-1"})
                            .headers.get("X-Request-ID"), "c-1")

    def test_idGivenTwiceReplaced(self):
        """Two incoming ids: which one the request is cannot be told, and the
        second went upstream unchecked beside the first; one new id goes."""
        h = harness({"accept": "any"})
        response = h.request("GET", "/", headers=[("X-Request-ID", "c-1"),
                                                  ("X-Request-ID", "evil id")])
        rid = h.contexts[0].request_id
        self.assertNotIn(rid, ("c-1", "evil id"))
        self.assertEqual(response.headers.get_all("X-Request-ID"), [rid])
        self.assertEqual(h.upstream_requests[0].headers.get_all("X-Request-ID"), [rid])

    def test_uuid4(self):
        h = harness({"generator": "uuid4", "header": "X-Trace"})
        response = h.request("GET", "/")
        rid = response.headers.get("X-Trace")
        self.assertTrue(re.match(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-", rid), rid)
        self.assertEqual(h.upstream_requests[0].headers.get("X-Trace"), rid)
        self.assertEqual(h.contexts[0].request_id, rid)
        self.assertNotIn("X-Request-ID", response.headers)

    def test_upstreamIdReplaced(self):
        """The client gets the gateway's id, once, whatever the upstream sent."""
        def upstream(request):
            return 200, [("x-request-id", "from-app"), ("X-Other", "1")], b"ok"
        h = harness(upstream=upstream)
        response = h.request("GET", "/")
        self.assertEqual(response.headers.get_all("X-Request-ID"), [h.contexts[0].request_id])
        self.assertEqual(response.headers.get("X-Other"), "1")

    def test_noResponseHeader(self):
        h = harness({"response_header": False})
        response = h.request("GET", "/")
        self.assertNotIn("X-Request-ID", response.headers)
        self.assertEqual(h.upstream_requests[0].headers.get("X-Request-ID"),
                         h.contexts[0].request_id)

    def test_onGatewayAnswers(self):
        """A response tproxy made (no live peer: 503) carries the id too."""
        h = harness(upstreams={})
        response = h.request("GET", "/")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.headers.get("X-Request-ID"), h.contexts[0].request_id)

    def test_badSettings(self):
        e = self.assertRaises(ConfigError, harness, {"accept": "maybe"})
        self.assertEqual(e.path, "plugins[0].settings.accept")
        e = self.assertRaises(ConfigError, harness, {"header": "X Bad"})
        self.assertEqual(e.path, "plugins[0].settings.header")
