"""
Tests for :mod:`tproxy.builtins.hmac_auth`: signed requests through
:mod:`tproxy.testing` on the fake clock, and once over real sockets.
"""

import base64
import hashlib
import hmac
import os
import time
from email.utils import formatdate

from twisted.trial.unittest import SynchronousTestCase

from tproxy import Request
from tproxy.builtins.hmac_auth import signing_string
from tproxy.config import ConfigError
from tproxy.http.headers import Headers
from tproxy.testing import Harness, echo

from tests.helpers import ProxyTestCase

SECRET = "alice-secret-0123456789"
NOW = 1700000000.0          # Tue, 14 Nov 2023 22:13:20 GMT
UPSTREAMS = {"upstreams": {"default": {"peers": ["127.0.0.1:9001"]},
                           "api": {"peers": ["127.0.0.1:9001"]}}}


def harness(routes=None, **settings):
    settings.setdefault("consumers", {"alice": {"secret": SECRET}})
    entry = {"name": "hmac_auth", "settings": settings}
    if routes is not None:
        entry["routes"] = routes
    h = Harness(config=UPSTREAMS, plugins=["router", entry, "least_conn"],
                servers={"127.0.0.1:9001": echo})
    h.advance(NOW)
    return h


def signed(method, uri, body=b"", names=("@request-target", "date", "digest"),
           secret=SECRET, username="alice", algorithm="hmac-sha256", when=NOW,
           digest="digest", extra=None):
    """Headers of a request signed as a client would (independently of the plugin)."""
    headers = {"Date": formatdate(when, usegmt=True)}
    if digest == "digest":
        headers["Digest"] = "SHA-256=" + base64.b64encode(
            hashlib.sha256(body).digest()).decode()
    elif digest == "content-digest":
        headers["Content-Digest"] = "sha-256=:%s:" % base64.b64encode(
            hashlib.sha256(body).digest()).decode()
    headers.update(extra or {})
    lower = {k.lower(): v for k, v in headers.items()}
    lines = []
    for name in names:
        if name == "@request-target":
            lines.append("@request-target: %s %s" % (method.lower(), uri))
        else:
            lines.append("%s: %s" % (name, lower[name]))
    mac = hmac.new(secret.encode(), "\n".join(lines).encode(),
                   {"hmac-sha256": hashlib.sha256, "hmac-sha1": hashlib.sha1,
                    "hmac-sha512": hashlib.sha512}[algorithm]).digest()
    headers["Authorization"] = (
        'hmac username="%s", algorithm="%s", headers="%s", signature="%s"' % (
            username, algorithm, " ".join(names), base64.b64encode(mac).decode()))
    return headers


class SignatureTests(SynchronousTestCase):

    def test_valid(self):
        """A signed GET passes: the upstream gets the consumer, not the signature."""
        h = harness()
        response = h.request("GET", "/orders?id=7", headers=signed("GET", "/orders?id=7"))
        self.assertEqual(response.status, 200)
        [received] = h.upstream_requests
        self.assertEqual(received.headers.get("X-Consumer-Username"), "alice")
        self.assertNotIn("Authorization", received.headers)
        self.assertEqual(h.contexts[0].consumer, "alice")

    def test_missing(self):
        h = harness()
        response = h.request("GET", "/")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json(), {"error": "missing HMAC signature"})
        self.assertEqual(response.headers.get("WWW-Authenticate"),
                         'hmac realm="tproxy", headers="@request-target date"')
        self.assertEqual(h.upstream_requests, [])

    def assertDenied(self, h, method, uri, headers, error, body=b""):
        before = len(h.upstream_requests)
        response = h.request(method, uri, headers=headers, body=body)
        self.assertEqual((response.status, response.json()["error"]), (401, error))
        self.assertEqual(len(h.upstream_requests), before)

    def test_givenTwice(self):
        """A parameter of the Authorization header, or the header itself,
        given twice is refused, whichever copy is valid: which one was meant
        cannot be told."""
        h = harness()
        good = signed("GET", "/orders")
        auth = good["Authorization"]
        for doubled in [auth.replace('headers="', 'headers="date", headers="'),
                        auth.replace("hmac ", 'hmac username="bob", ', 1),
                        auth + ', signature="AAAA"']:
            self.assertDenied(h, "GET", "/orders", dict(good, Authorization=doubled),
                              "malformed HMAC Authorization header")
        twice = [(k, v) for k, v in good.items()] + [("Authorization", auth)]
        response = h.request("GET", "/orders", headers=twice)
        self.assertEqual((response.status, response.json()["error"]),
                         (401, "Authorization given more than once"))
        self.assertEqual(response.headers.get("WWW-Authenticate"),
                         'hmac realm="tproxy", headers="@request-target date"')
        self.assertEqual(h.upstream_requests, [])
        self.assertEqual(h.request("GET", "/orders", headers=good).status, 200)

    def test_tampered(self):
        """Another path, query or method than signed; a wrong secret; an
        unknown user: all the same answer."""
        h = harness()
        bad = "HMAC signature does not match"
        self.assertDenied(h, "GET", "/orders?id=8", signed("GET", "/orders?id=7"), bad)
        self.assertDenied(h, "GET", "/admin", signed("GET", "/orders"), bad)
        self.assertDenied(h, "DELETE", "/orders", signed("GET", "/orders"), bad)
        self.assertDenied(h, "GET", "/", signed("GET", "/", secret="x" * 20), bad)
        self.assertDenied(h, "GET", "/", signed("GET", "/", username="mallory"), bad)

    def test_clientConsumerHeaderRemoved(self):
        """A client's own X-Consumer-Username never reaches the upstream."""
        h = harness(routes=["api"])
        h.request("GET", "/api/x", headers=signed(
            "GET", "/api/x", extra={"X-Consumer-Username": "root"}))
        self.assertEqual(h.upstream_requests[0].headers.get_all("X-Consumer-Username"),
                         ["alice"])

    def test_replayWindow(self):
        """The Date must be within clock_skew of the gateway's clock."""
        h = harness(clock_skew=60)
        headers = signed("GET", "/")
        self.assertEqual(h.request("GET", "/", headers=headers).status, 200)
        h.advance(61)
        self.assertDenied(h, "GET", "/", headers,
                          "date outside the clock skew (60 s): a replay, or a wrong clock")
        self.assertEqual(h.request("GET", "/", headers=signed(
            "GET", "/", when=NOW + 61)).status, 200)
        self.assertEqual(h.request("GET", "/", headers=signed(
            "GET", "/", when=NOW + 61 + 59)).status, 200)

    def test_zonelessDate(self):
        """A date in ``-0000`` (no zone) is UTC, whatever the machine's zone."""
        self.addCleanup(self._restoreZone, os.environ.get("TZ"))
        os.environ["TZ"] = "America/New_York"
        time.tzset()
        h = harness()
        headers = signed("GET", "/", names=("@request-target", "x-date"), digest=None,
                         extra={"X-Date": "Tue, 14 Nov 2023 22:13:20 -0000"})
        self.assertEqual(h.request("GET", "/", headers=headers).status, 200)

    def _restoreZone(self, zone):
        if zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = zone
        time.tzset()

    def test_enforcedHeaders(self):
        """Unsigned date or target: refused, whatever the signature."""
        h = harness()
        self.assertDenied(h, "GET", "/", signed("GET", "/", names=("date",)),
                          "header not signed")
        self.assertDenied(h, "GET", "/", signed("GET", "/", names=("@request-target",)),
                          "header not signed")
        h = harness(enforce_headers=["@request-target", "date", "x-tenant"])
        self.assertDenied(h, "GET", "/", signed("GET", "/"), "header not signed")
        ok = signed("GET", "/", names=("@request-target", "date", "x-tenant"),
                    extra={"X-Tenant": "t1"})
        self.assertEqual(h.request("GET", "/", headers=ok).status, 200)

    def test_algorithms(self):
        h = harness()
        self.assertEqual(h.request("GET", "/", headers=signed(
            "GET", "/", algorithm="hmac-sha512")).status, 200)
        response = h.request("GET", "/", headers=signed("GET", "/", algorithm="hmac-sha1"))
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json()["error"], "HMAC algorithm not allowed")

    def test_malformed(self):
        h = harness()
        for value in ('Basic YWxpY2U6eA==', 'hmac username=alice', 'hmac signature="x"',
                      'hmac username="alice", signature="***"'):
            response = h.request("GET", "/", headers={
                "Date": formatdate(NOW, usegmt=True), "Authorization": value})
            self.assertEqual(response.status, 401, value)

    def test_signingString(self):
        """The signing string's format, pinned."""
        headers = Headers()
        headers.set("Date", "Tue, 14 Nov 2023 22:13:20 GMT")
        request = Request("POST", "/a", "b=1", headers=headers)
        self.assertEqual(
            signing_string(request, ["@request-target", "request-line", "date"]),
            "@request-target: post /a?b=1\nPOST /a?b=1 HTTP/1.1\n"
            "date: Tue, 14 Nov 2023 22:13:20 GMT")


class BodyTests(SynchronousTestCase):
    """The body against its signed digest."""

    def test_digest(self):
        h = harness()
        body = b'{"amount": 10}'
        response = h.request("POST", "/pay", body=body, headers=signed("POST", "/pay", body))
        self.assertEqual(response.status, 200)
        self.assertEqual(h.upstream_requests[0].body, body)

    def test_contentDigest(self):
        h = harness()
        body = b"x" * 1000
        names = ("@request-target", "date", "content-digest")
        response = h.request("POST", "/", body=body, headers=signed(
            "POST", "/", body, names=names, digest="content-digest"))
        self.assertEqual(response.status, 200)

    def test_tamperedBody(self):
        """Another body than the digest's: 401, nothing sent upstream."""
        h = harness()
        response = h.request("POST", "/pay", body=b'{"amount": 1000}',
                             headers=signed("POST", "/pay", b'{"amount": 10}'))
        self.assertEqual((response.status, response.json()["error"]),
                         (401, "body digest does not match"))
        self.assertEqual(h.upstream_requests, [])

    def test_bodyNeedsSignedDigest(self):
        """A body without a digest, or with an unsigned one, is refused."""
        h = harness()
        error = ("a request body needs a signed Digest or Content-Digest header "
                 "(SHA-256 or SHA-512)")
        response = h.request("POST", "/", body=b"data", headers=signed(
            "POST", "/", b"data", names=("@request-target", "date"), digest=None))
        self.assertEqual((response.status, response.json()["error"]), (401, error))
        response = h.request("POST", "/", body=b"data", headers=signed(
            "POST", "/", b"data", names=("@request-target", "date")))
        self.assertEqual((response.status, response.json()["error"]), (401, error))

    def test_tooLarge(self):
        """Past max_body_size, 413 (by Content-Length, or once read)."""
        h = harness(max_body_size=100)
        body = b"y" * 101
        response = h.request("POST", "/", body=body, headers=signed("POST", "/", body))
        self.assertEqual(response.status, 413)
        self.assertEqual(response.json(), {
            "error": "request body too large to check its digest", "limit": 100})
        self.assertEqual(h.upstream_requests, [])
        # a chunked body is counted as it is read
        conn = h.connect()
        head = signed("POST", "/", body)
        head.update({"Transfer-Encoding": "chunked", "Host": "x"})
        conn.send(b"POST / HTTP/1.1\r\n" + b"".join(
            b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in head.items())
            + b"\r\n65\r\n" + body + b"\r\n0\r\n\r\n")
        [response] = conn.responses
        self.assertEqual(response.status, 413)
        self.assertEqual(h.upstream_requests, [])

    def test_tooLargeBeforeContinue(self):
        """A declared Content-Length past max_body_size is a 413 at once:
        no 100 Continue, the body never read, the connection closed."""
        h = harness(max_body_size=100)
        body = b"y" * 101
        conn = h.connect()
        head = signed("POST", "/", body)
        head.update({"Expect": "100-continue", "Content-Length": "101", "Host": "x"})
        conn.send(b"POST / HTTP/1.1\r\n" + b"".join(
            b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in head.items()) + b"\r\n")
        self.assertNotIn(b"100 Continue", conn.received)
        [response] = conn.responses
        self.assertEqual((response.status, response.json()["limit"]), (413, 100))
        self.assertEqual(response.headers.get("Connection"), "close")
        self.assertEqual((h.contexts[0].status, h.upstream_requests), (413, []))
        # at the limit, the 100 Continue comes and the body is checked
        conn = h.connect()
        body = body[:100]
        head = signed("POST", "/", body)
        head.update({"Expect": "100-continue", "Content-Length": "100", "Host": "x"})
        conn.send(b"POST / HTTP/1.1\r\n" + b"".join(
            b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in head.items()) + b"\r\n")
        self.assertEqual(conn.received, b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.send(body)
        self.assertEqual(conn.responses[-1].status, 200)

    def test_bodyCheckOff(self):
        h = harness(validate_request_body=False)
        response = h.request("POST", "/", body=b"data", headers=signed(
            "POST", "/", b"data", names=("@request-target", "date"), digest=None))
        self.assertEqual(response.status, 200)


class SettingsTests(SynchronousTestCase):

    def test_errors(self):
        for settings, path in (
                ({"consumers": {}}, "plugins[1].settings.consumers"),
                ({"consumers": {"a": {"secret": "short"}}},
                 "plugins[1].settings.consumers.a.secret"),
                ({"algorithms": ["md5"]}, "plugins[1].settings.algorithms[0]")):
            with self.assertRaises(ConfigError) as e:
                harness(**settings)
            self.assertIn(path, str(e.exception))


class EndToEndTests(ProxyTestCase):
    """A signed POST over real sockets."""

    async def test_signedPost(self):
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, plugins=[
            "router", {"name": "hmac_auth",
                       "settings": {"consumers": {"alice": {"secret": SECRET}}}},
            "least_conn"])
        from twisted.internet import reactor
        body = b"hello " * 1000
        headers = signed("POST", "/upload", body, when=reactor.seconds())
        resp = await self.get(proxy, "/upload", method="POST", data=body,
                              headers={k: [v] for k, v in headers.items()})
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(resp.json()["body_length"], len(body))
        self.assertEqual(up.requests[0].header("x-consumer-username"), "alice")
        resp = await self.get(proxy, "/upload", method="POST", data=body + b"!",
                              headers={k: [v] for k, v in headers.items()})
        self.assertEqual(resp.status, 401)
        self.assertEqual(len(up.requests), 1)
