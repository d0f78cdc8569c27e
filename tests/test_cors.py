"""
Tests for :mod:`tproxy.builtins.cors`: preflights answered by the gateway,
CORS headers on actual responses, ``Vary: Origin``.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import ConfigError
from tproxy.testing import Harness, echo

UPSTREAM = "127.0.0.1:9001"
APP = "https://app.example.com"


def harness(settings=None, auth=False, upstream=echo):
    plugins = ["router", {"name": "cors", "settings": settings or {}}]
    if auth:   # an auth plugin after cors: preflights must not reach it
        plugins.append({"name": "key_auth", "settings": {"consumers": [
            {"username": "a", "keys": ["key-of-a-1"]}]}})
    plugins.append("least_conn")
    return Harness(config={"upstreams": {"default": {"peers": [UPSTREAM]}}},
                   plugins=plugins, servers={UPSTREAM: upstream})


def preflight(h, origin=APP, method="PUT", headers=None):
    fields = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        fields["Access-Control-Request-Headers"] = headers
    return h.request("OPTIONS", "/items", headers=fields)


class PreflightTests(SynchronousTestCase):

    def test_answeredByGateway(self):
        h = harness({"origins": [APP], "credentials": True, "max_age": 300,
                     "headers": ["Content-Type", "X-API-Key"]}, auth=True)
        response = preflight(h, headers="content-type, x-api-key")
        self.assertEqual((response.status, response.reason), (204, "No Content"))
        self.assertEqual(response.body, b"")
        got = response.headers
        self.assertNotIn("Content-Length", got)      # RFC 9110: never in a 204
        self.assertEqual(got.get("Access-Control-Allow-Origin"), APP)
        self.assertEqual(got.get("Access-Control-Allow-Credentials"), "true")
        self.assertEqual(got.get("Access-Control-Allow-Methods"),
                         "GET, HEAD, PUT, PATCH, POST, DELETE")
        self.assertEqual(got.get("Access-Control-Allow-Headers"), "Content-Type, X-API-Key")
        self.assertEqual(got.get("Access-Control-Max-Age"), "300")
        self.assertEqual(got.get("Vary"), "Origin")
        self.assertEqual(h.upstream_requests, [])   # neither upstream nor key_auth

    def test_anyOriginEchoesRequestedHeaders(self):
        h = harness()
        response = preflight(h, origin="https://x.test", headers="X-One, X-Two")
        self.assertEqual(response.headers.get("Access-Control-Allow-Origin"), "*")
        self.assertEqual(response.headers.get("Access-Control-Allow-Headers"), "X-One, X-Two")
        self.assertEqual(response.headers.get("Vary"), "Access-Control-Request-Headers")

    def test_refused(self):
        h = harness({"origins": [APP], "methods": ["GET"], "headers": ["X-Ok"]})
        for kw, error in [({"origin": "https://evil.test"}, "CORS origin not allowed"),
                          ({"method": "DELETE"}, "CORS method not allowed"),
                          ({"method": "GET", "headers": "X-Ok, X-No"},
                           "CORS header not allowed")]:
            response = preflight(h, **kw)
            self.assertEqual(response.status, 403, kw)
            self.assertEqual(response.json()["error"], error)
            self.assertNotIn("Access-Control-Allow-Origin", response.headers)
        self.assertEqual(h.upstream_requests, [])

    def test_plainOptionsGoesUpstream(self):
        h = harness()
        self.assertEqual(h.request("OPTIONS", "/items").status, 200)
        self.assertEqual(len(h.upstream_requests), 1)


class ResponseTests(SynchronousTestCase):

    def test_allowedOrigin(self):
        h = harness({"origins": [APP], "expose_headers": ["X-Total"]})
        response = h.request("GET", "/items", headers={"Origin": APP})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.get("Access-Control-Allow-Origin"), APP)
        self.assertEqual(response.headers.get("Access-Control-Expose-Headers"), "X-Total")
        self.assertNotIn("Access-Control-Allow-Credentials", response.headers)
        self.assertEqual(response.headers.get("Vary"), "Origin")

    def test_otherOriginAndNoOrigin(self):
        """No CORS headers, but Vary: Origin all the same (caches)."""
        h = harness({"origins": [APP]})
        for headers in [{"Origin": "https://evil.test"}, None]:
            response = h.request("GET", "/items", headers=headers)
            self.assertEqual(response.status, 200)
            self.assertNotIn("Access-Control-Allow-Origin", response.headers)
            self.assertEqual(response.headers.get("Vary"), "Origin")

    def test_subdomainPattern(self):
        """'https://*.example.com': its subdomains, not itself nor look-alikes."""
        h = harness({"origins": ["https://*.example.com", "http://localhost:3000"]})
        for origin, allowed in [("https://app.example.com", True),
                                ("https://A.B.Example.com", True),
                                ("https://example.com", False),
                                ("https://evilexample.com", False),
                                ("https://x.example.com.evil.test", False),
                                ("http://app.example.com", False),
                                ("https://app.example.com:8443", False),
                                ("https://a_b.example.com", False),
                                ("http://localhost:3000", True)]:
            response = h.request("GET", "/items", headers={"Origin": origin})
            self.assertEqual(response.headers.get("Access-Control-Allow-Origin"),
                             origin if allowed else None, origin)

    def test_wildcard(self):
        h = harness()
        response = h.request("GET", "/items", headers={"Origin": "https://any.test"})
        self.assertEqual(response.headers.get("Access-Control-Allow-Origin"), "*")
        self.assertNotIn("Vary", response.headers)

    def test_upstreamCorsReplacedVaryKept(self):
        def upstream(request):
            return 200, [("Access-Control-Allow-Origin", "*"), ("Vary", "Accept")], b"{}"
        h = harness({"origins": [APP], "credentials": True}, upstream=upstream)
        response = h.request("GET", "/items", headers={"Origin": APP})
        self.assertEqual(response.headers.get_all("Access-Control-Allow-Origin"), [APP])
        self.assertEqual(response.headers.get("Access-Control-Allow-Credentials"), "true")
        self.assertEqual(response.headers.get("Vary"), "Accept, Origin")

    def test_onDenials(self):
        """A 401 of a later auth plugin still carries CORS headers (the browser
        shows the app the error, not a CORS failure)."""
        h = harness({"origins": [APP]}, auth=True)
        response = h.request("GET", "/items", headers={"Origin": APP})
        self.assertEqual(response.status, 401)
        self.assertEqual(response.headers.get("Access-Control-Allow-Origin"), APP)

    def test_badSettings(self):
        for settings, path in [({"origins": ["app.example.com"]}, ".origins[0]"),
                               ({"origins": ["https://a.test/"]}, ".origins[0]"),
                               ({"origins": ["https://*.*.a.test"]}, ".origins[0]"),
                               ({"origins": ["https://a*.test"]}, ".origins[0]"),
                               ({"origins": []}, ".origins"),
                               ({"max_age": -1}, ".max_age"),
                               ({"methods": ["GET POST"]}, ".methods[0]")]:
            e = self.assertRaises(ConfigError, harness, settings)
            self.assertEqual(e.path, "plugins[1].settings" + path, settings)


class VaryTests(SynchronousTestCase):

    def test_merge(self):
        from tproxy.builtins.cors import _vary_with_origin
        self.assertEqual(_vary_with_origin([]), b"Origin")
        self.assertEqual(_vary_with_origin([b"Accept", b"Cookie"]), b"Accept, Cookie, Origin")
        self.assertEqual(_vary_with_origin([b"accept, origin"]), b"accept, origin")
        self.assertEqual(_vary_with_origin([b"*"]), b"*")
