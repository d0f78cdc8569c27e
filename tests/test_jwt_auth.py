"""
Tests for :mod:`tproxy.builtins.jwt_auth`: tokens signed with configured
keys (HS256, RS256, ES256; settings or a JWKS file), their times checked on
the gateway's (fake) clock, the token's ``alg`` never trusted.
"""

import base64
import hashlib
import hmac
import json
import os

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import RSAAlgorithm
from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import ConfigError
from tproxy.testing import Harness, echo

from tests.helpers import rsa_key, temp_path

UPSTREAM = "127.0.0.1:9001"
SECRET = "0123456789abcdef0123456789abcdef"
_KEYS = {}


def ec_key():
    if "ec" not in _KEYS:
        _KEYS["ec"] = ec.generate_private_key(ec.SECP256R1())
    return _KEYS["ec"]


def public_pem(private):
    return private.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forged(header, claims, secret):
    """A token HMAC-signed by hand (PyJWT refuses to make the forgeries)."""
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    if secret is None:
        return signing + "."
    mac = hmac.new(secret, signing.encode("ascii"), hashlib.sha256).digest()
    return signing + "." + b64(mac)


def bearer(token):
    return {"Authorization": "Bearer " + token}


def harness(settings=None, routes=None, now=None):
    """A gateway with ``jwt_auth`` (``settings``) whose fake clock reads
    ``now`` (default: :data:`NOW`)."""
    settings = dict(settings or {})
    settings.setdefault("keys", [{"algorithm": "HS256", "secret": SECRET}])
    entry = {"name": "jwt_auth", "settings": settings}
    if routes:
        entry["routes"] = routes
    h = Harness(config={"upstreams": {"default": {"peers": [UPSTREAM]}}},
                plugins=["router", entry, "least_conn"], servers={UPSTREAM: echo})
    h.advance(NOW if now is None else now)   # the tests' "now" on the fake clock
    return h


NOW = 1000000


class ValidTokenTests(SynchronousTestCase):

    def test_hs256(self):
        h = harness({"claims_to_headers": {"sub": "X-User", "roles": "X-Roles"}})
        token = jwt.encode({"sub": "alice", "exp": NOW + 60, "roles": ["a", "b"]},
                           SECRET, algorithm="HS256")
        response = h.request("GET", "/x", headers=bearer(token))
        self.assertEqual(response.status, 200)
        [up] = h.upstream_requests
        self.assertNotIn("Authorization", up.headers)
        self.assertEqual(up.headers.get("X-Consumer-Username"), "alice")
        self.assertEqual(up.headers.get("X-User"), "alice")
        self.assertEqual(up.headers.get("X-Roles"), '["a","b"]')
        ctx = h.contexts[0]
        self.assertEqual(ctx.consumer, "alice")
        self.assertEqual(ctx.vars["jwt_claims"]["roles"], ["a", "b"])

    def test_headerValuesSafe(self):
        """Claims that are no header value (non-ASCII, CR LF) go percent-encoded."""
        h = harness({"claims_to_headers": {"note": "X-Note"}})
        token = jwt.encode({"sub": "zo\u00eb", "note": "a\r\nX-Admin: 1", "exp": NOW + 60},
                           SECRET, algorithm="HS256")
        self.assertEqual(h.request("GET", "/", headers=bearer(token)).status, 200)
        [up] = h.upstream_requests
        self.assertEqual(up.headers.get("X-Consumer-Username"), "zo%C3%AB")
        self.assertEqual(up.headers.get("X-Note"), "a%0D%0AX-Admin: 1")
        self.assertNotIn("X-Admin", up.headers)
        self.assertEqual(h.contexts[0].consumer, "zo\u00eb")

    def test_rs256AndEs256ByKid(self):
        h = harness({"keys": [
            {"kid": "r1", "algorithm": "RS256", "public_key": public_pem(rsa_key())},
            {"kid": "e1", "algorithm": "ES256", "public_key": public_pem(ec_key()),
             "consumer": "mobile"}]})
        rs = jwt.encode({"sub": "bob", "exp": NOW + 60}, rsa_key(), algorithm="RS256",
                        headers={"kid": "r1"})
        es = jwt.encode({"sub": "carol", "exp": NOW + 60}, ec_key(), algorithm="ES256",
                        headers={"kid": "e1"})
        self.assertEqual(h.request("GET", "/", headers=bearer(rs)).status, 200)
        self.assertEqual(h.request("GET", "/", headers=bearer(es)).status, 200)
        self.assertEqual([u.headers.get("X-Consumer-Username") for u in h.upstream_requests],
                         ["bob", "mobile"])      # the key's consumer wins over sub
        # signed by the EC key but naming the RSA key's kid
        wrong = jwt.encode({"exp": NOW + 60}, ec_key(), algorithm="ES256",
                           headers={"kid": "r1"})
        self.assertEqual(h.request("GET", "/", headers=bearer(wrong)).status, 401)

    def test_jwksFile(self):
        jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key().public_key()))
        jwk.update(kid="k-2026", alg="RS256", use="sig")
        path = temp_path(self)
        with open(path, "w") as f:
            json.dump({"keys": [jwk]}, f)
        h = harness({"keys": [], "jwks_file": path})
        token = jwt.encode({"sub": "dave", "exp": NOW + 60}, rsa_key(), algorithm="RS256",
                           headers={"kid": "k-2026"})
        self.assertEqual(h.request("GET", "/", headers=bearer(token)).status, 200)
        self.assertEqual(h.upstream_requests[0].headers.get("X-Consumer-Username"), "dave")

    def test_jwksRefresh(self):
        """With jwks_refresh the file is read again: rotated keys need no
        restart; a broken file keeps the keys in use and is reported once."""
        path = temp_path(self)

        def write(kid, text=None):
            jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key().public_key()))
            jwk.update(kid=kid, alg="RS256")
            with open(path, "w") as f:
                f.write(text if text is not None else json.dumps({"keys": [jwk]}))

        def token(kid):
            return bearer(jwt.encode({"exp": NOW + 3600}, rsa_key(), algorithm="RS256",
                                     headers={"kid": kid}))
        write("old")
        # the clock stays at 0 (advancing it to NOW would run the reload
        # NOW / 60 times); the tokens expire at NOW + 3600
        h = harness({"keys": [], "jwks_file": path, "jwks_refresh": 60}, now=0)
        self.assertEqual(h.request("GET", "/", headers=token("old")).status, 200)
        write("new")
        self.assertEqual(h.request("GET", "/", headers=token("new")).status, 401)
        h.advance(60)
        self.assertEqual(h.request("GET", "/", headers=token("new")).status, 200)
        # the old kid is gone, even for a token verified (and cached) before
        self.assertEqual(h.request("GET", "/", headers=token("old")).status, 401)
        plugin = h.gateway.plugins.get_plugin("jwt_auth")
        self.assertEqual(len(plugin.cache), 1)
        h.advance(60)                  # the file did not change: the cache stays
        self.assertEqual(len(plugin.cache), 1)
        write("x", text="{not json")
        h.advance(60)
        write("x", text='{"keys": []}')
        h.advance(60)
        self.assertEqual(h.request("GET", "/", headers=token("new")).status, 200)
        warnings = [m for m in h.messages() if "cannot reload" in m]
        self.assertEqual(len(warnings), 1, warnings)
        write("newer")
        h.advance(60)
        self.assertEqual(h.request("GET", "/", headers=token("newer")).status, 200)
        self.assertEqual(len([m for m in h.messages() if "reloaded" in m]), 1)
        h.stop()
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_queryParam(self):
        h = harness({"query_param": "jwt"})
        token = jwt.encode({"sub": "eve", "exp": NOW + 60}, SECRET, algorithm="HS256")
        self.assertEqual(h.request("GET", "/x?jwt=" + token + "&a=1").status, 200)
        self.assertEqual(h.upstream_requests[0].uri, "/x?a=1")

    def test_audienceAndIssuer(self):
        h = harness({"audience": "orders", "issuer": ["https://idp.example"]})
        good = {"exp": NOW + 60, "aud": "orders", "iss": "https://idp.example"}
        self.assertEqual(h.request("GET", "/", headers=bearer(
            jwt.encode(good, SECRET, algorithm="HS256"))).status, 200)
        for change, reason in [({"aud": "billing"}, "invalid audience"),
                               ({"iss": "https://evil"}, "invalid issuer")]:
            claims = dict(good, **change)
            response = h.request("GET", "/", headers=bearer(
                jwt.encode(claims, SECRET, algorithm="HS256")))
            self.assertEqual((response.status, response.json()["reason"]), (401, reason))

    def test_perRoute(self):
        h = harness(routes=["api"])
        self.assertEqual(h.request("GET", "/x").status, 200)


class InvalidTokenTests(SynchronousTestCase):

    def assertRefused(self, h, headers, reason):
        before = len(h.upstream_requests)
        response = h.request("GET", "/", headers=headers)
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json(), {"error": "invalid token", "reason": reason})
        self.assertEqual(response.headers.get("WWW-Authenticate"),
                         'Bearer realm="tproxy", error="invalid_token", '
                         'error_description="%s"' % reason)
        self.assertEqual(len(h.upstream_requests), before)

    def test_missing(self):
        h = harness()
        response = h.request("GET", "/")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.headers.get("WWW-Authenticate"), 'Bearer realm="tproxy"')
        self.assertEqual(response.json(), {"error": "missing bearer token"})

    def test_expiryOnGatewayClock(self):
        """exp is checked against the gateway's clock, with the leeway (30 s)."""
        h = harness()
        token = jwt.encode({"exp": NOW + 60}, SECRET, algorithm="HS256")
        self.assertEqual(h.request("GET", "/", headers=bearer(token)).status, 200)
        h.advance(89)                             # exp + 29 s: within the leeway
        self.assertEqual(h.request("GET", "/", headers=bearer(token)).status, 200)
        h.advance(1)
        self.assertRefused(h, bearer(token), "token expired")

    def test_notBefore(self):
        h = harness({"leeway": 0})
        token = jwt.encode({"exp": NOW + 600, "nbf": NOW + 10}, SECRET, algorithm="HS256")
        self.assertRefused(h, bearer(token), "token not valid yet")
        h.advance(10)
        self.assertEqual(h.request("GET", "/", headers=bearer(token)).status, 200)

    def test_requiredClaims(self):
        h = harness()
        self.assertRefused(h, bearer(jwt.encode({"sub": "x"}, SECRET, algorithm="HS256")),
                           "missing claim exp")
        self.assertRefused(h, bearer(forged({"alg": "HS256", "typ": "JWT"},
                                            {"exp": "tomorrow"}, SECRET.encode())),
                           "exp is not a number")

    def test_badSignatureAndGarbage(self):
        h = harness()
        other = jwt.encode({"exp": NOW + 60}, "another-secret-another-secret-xx",
                           algorithm="HS256")
        self.assertRefused(h, bearer(other), "invalid signature")
        self.assertRefused(h, bearer("not.a.token"), "malformed token")
        self.assertRefused(h, {"Authorization": "Bearer "}, "malformed authorization header")

    def test_otherScheme(self):
        """``Authorization`` of another scheme (``Basic ...``) carries no
        bearer token: the request lacks one, and the challenge has no error
        code (RFC 6750 3.1), as without the header; a token in the query
        argument is read then, and the header does not go upstream."""
        h = harness({"query_param": "jwt"})
        for scheme in ("Basic dXNlcjpwdw==", "Digest username=x", "Basic"):
            response = h.request("GET", "/", headers={"Authorization": scheme})
            self.assertEqual((response.status, response.json()),
                             (401, {"error": "missing bearer token"}), scheme)
            self.assertEqual(response.headers.get("WWW-Authenticate"), 'Bearer realm="tproxy"')
        self.assertEqual(h.upstream_requests, [])
        token = jwt.encode({"sub": "eve", "exp": NOW + 60}, SECRET, algorithm="HS256")
        response = h.request("GET", "/x?jwt=" + token,
                             headers={"Authorization": "Basic dXNlcjpwdw=="})
        self.assertEqual(response.status, 200)
        [up] = h.upstream_requests
        self.assertEqual((up.uri, up.headers.get("Authorization")), ("/x", None))

    def test_moreThanOneToken(self):
        """Two tokens (the header and the query argument, the header twice,
        the argument twice), valid or not, the same or not: RFC 6750 2 says
        a client uses one method, once; 400 ``invalid_request`` (3.1),
        nothing upstream, no token in the access log's query."""
        h = harness({"query_param": "jwt"})
        good = jwt.encode({"sub": "eve", "exp": NOW + 60}, SECRET, algorithm="HS256")
        for uri, headers in (("/x?jwt=" + good, bearer(good)),
                             ("/x?jwt=" + good, bearer("not.a.token")),
                             ("/x?jwt=" + good, {"Authorization": "Bearer "}),
                             ("/x", [("Authorization", "Bearer " + good)] * 2),
                             ("/x", [("Authorization", "Bearer " + good),
                                     ("Authorization", "Bearer x.y.z")]),
                             ("/x?jwt=" + good + "&a=1&jwt=" + good, None)):
            response = h.request("GET", uri, headers=headers)
            self.assertEqual((response.status, response.json()),
                             (400, {"error": "invalid request",
                                    "reason": "more than one token"}), (uri, headers))
            self.assertEqual(response.headers.get("WWW-Authenticate"),
                             'Bearer realm="tproxy", error="invalid_request", '
                             'error_description="more than one token"')
            self.assertNotIn("jwt=", h.contexts[-1].request.query)
        self.assertEqual(h.upstream_requests, [])
        # one token, with a header of another scheme beside it: served
        response = h.request("GET", "/x", headers=[
            ("Authorization", "Basic dXNlcjpwdw=="), ("Authorization", "Bearer " + good)])
        self.assertEqual(response.status, 200)

    def test_algNoneRefused(self):
        h = harness()
        self.assertRefused(h, bearer(forged({"alg": "none"}, {"exp": NOW + 60}, None)),
                           "algorithm not allowed for this key")

    def test_algConfusionRefused(self):
        """HS256 "signed" with the RSA public key as secret: the key is RS256 only."""
        pem = public_pem(rsa_key())
        h = harness({"keys": [{"algorithm": "RS256", "public_key": pem}]})
        token = forged({"alg": "HS256", "typ": "JWT"}, {"exp": NOW + 60}, pem.encode())
        self.assertRefused(h, bearer(token), "algorithm not allowed for this key")

    def test_unknownKid(self):
        h = harness({"keys": [{"kid": "a", "algorithm": "HS256", "secret": SECRET}]})
        token = jwt.encode({"exp": NOW + 60}, SECRET, algorithm="HS256",
                           headers={"kid": "b"})
        self.assertRefused(h, bearer(token), "unknown key id")
        token = jwt.encode({"exp": NOW + 60}, SECRET, algorithm="HS256")
        self.assertRefused(h, bearer(token), "token has no key id")

    def test_forgedIdentityHeadersRemoved(self):
        h = harness({"claims_to_headers": {"tenant": "X-Tenant"}})
        token = jwt.encode({"exp": NOW + 60}, SECRET, algorithm="HS256")
        h.request("GET", "/", headers=dict(bearer(token), **{
            "X-Tenant": "other", "X-Consumer-Username": "admin"}))
        [up] = h.upstream_requests
        self.assertNotIn("X-Tenant", up.headers)
        self.assertNotIn("X-Consumer-Username", up.headers)


class SettingsTests(SynchronousTestCase):

    def assertPath(self, settings, path):
        e = self.assertRaises(ConfigError, harness, settings)
        self.assertEqual(e.path, "plugins[1].settings" + path, str(e))
        return e

    def test_errors(self):
        self.assertPath({"keys": [{"algorithm": "HS256", "secret": "short"}]},
                        ".keys[0].secret")
        self.assertPath({"keys": [{"algorithm": "RS256"}]}, ".keys[0]")
        self.assertPath({"keys": [{"algorithm": "none", "secret": SECRET}]},
                        ".keys[0].algorithm")
        self.assertPath({"keys": [{"algorithm": "RS256", "public_key": "nope"}]},
                        ".keys[0]")
        private = rsa_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode("ascii")
        self.assertPath({"keys": [{"algorithm": "RS256", "public_key": private}]},
                        ".keys[0]")
        self.assertPath({"keys": []}, "")
        self.assertPath({"keys": [], "jwks_file": os.path.join(temp_path(self), "x")},
                        ".jwks_file")
        self.assertPath({"leeway": -1}, ".leeway")
        # not JSON at a character past ASCII (PyPy's decoder gives no usable
        # message for it)
        path = temp_path(self)
        with open(path, "wb") as f:
            f.write('{"keys": \u00e9}'.encode("utf-8"))
        e = self.assertPath({"keys": [], "jwks_file": path}, ".jwks_file")
        self.assertIn("cannot read {}: unexpected '\u00e9': line 1 column 10".format(path),
                      str(e))

    def test_jwksKeyErrors(self):
        """A JWK whose ``kid`` is not a string (a number would match no
        token, a list stopped the start on a TypeError), whose ``alg`` is
        not an allowed name, or that lacks a member is a configuration error
        saying which key and why."""
        k = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
        path = temp_path(self)
        for jwk, problem in (
                ({"kty": "oct", "k": k, "alg": "HS256", "kid": 5},
                 "keys[0]: kid must be a non-empty string, not 5"),
                ({"kty": "oct", "k": k, "alg": "HS256", "kid": [1]},
                 "keys[0]: kid must be a non-empty string, not [1]"),
                ({"kty": "oct", "k": k, "alg": "HS256", "kid": ""},
                 'keys[0]: kid must be a non-empty string, not ""'),
                ({"kty": "oct", "k": k, "alg": "none"},
                 'keys[0]: algorithm "none" is not allowed'),
                ({"kty": "oct", "k": k, "alg": ["HS256"]},
                 'keys[0]: algorithm ["HS256"] is not allowed'),
                ({"kty": "oct", "alg": "HS256"}, "keys[0]: member 'k' is missing")):
            with open(path, "w") as f:
                json.dump({"keys": [jwk]}, f)
            e = self.assertPath({"keys": [], "jwks_file": path}, ".jwks_file")
            self.assertEqual(e.problem, "{}: {} (plugin 'jwt_auth')".format(path, problem))
