"""
End-to-end tests of the gateway built-ins (``request_id``, ``key_auth``,
``jwt_auth``, ``ip_restriction``, ``cors``) and of the health endpoints over
real loopback sockets: a running proxy, real upstreams, treq as the client;
and the shipped ``etc/gateway.json`` (through :mod:`tproxy.testing`, as it
names fixed ports).
"""

import os

import jwt
import treq
from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import load_config
from tproxy.testing import Harness, echo as stub_echo

from tests.helpers import ProxyTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "0123456789abcdef0123456789abcdef"
APP = "https://app.example.com"


def seen(resp):
    """The headers the echoing upstream received: ``{lower-case name: value}``."""
    return dict((n.lower(), v) for n, v in resp.json()["headers"])


class GatewayPluginsTests(ProxyTestCase):

    async def start(self, **config):
        self.api = self.upstream()
        self.partner = self.upstream()
        self.web = self.upstream()
        plugins = [
            "request_id", "router",
            {"name": "cors", "routes": ["web"], "settings": {"origins": [APP]}},
            {"name": "ip_restriction", "routes": ["partner"],
             "settings": {"allow": ["127.0.0.0/8", "::1"], "deny": ["127.0.0.66"]}},
            {"name": "key_auth", "routes": ["partner"], "settings": {"consumers": [
                {"username": "acme", "keys": ["acme-key-0001"]}]}},
            {"name": "jwt_auth", "routes": ["api"], "settings": {
                "keys": [{"algorithm": "HS256", "secret": SECRET}],
                "claims_to_headers": {"scope": "X-Scope"}}},
            "least_conn",
        ]
        return await self.proxy({"api": [self.api], "partner": [self.partner],
                                 "web": [self.web]}, plugins=plugins, **config)

    async def test_keyAuthAndRequestId(self):
        proxy = await self.start()
        resp = await self.get(proxy, "/partner/orders?apikey=acme-key-0001&page=2")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.json()["uri"], "/orders?page=2")
        headers = seen(resp)
        self.assertEqual(headers["x-consumer-username"], "acme")
        self.assertEqual(headers["x-request-id"], resp.header("X-Request-ID"))
        self.assertEqual(proxy.logged[-1].request_id, resp.header("X-Request-ID"))
        denied = await self.get(proxy, "/partner/orders", headers={"apikey": "wrong-key-01"})
        self.assertEqual(denied.status, 401)
        self.assertEqual(denied.json(), {"error": "invalid API key"})
        self.assertTrue(denied.header("X-Request-ID"))
        self.assertEqual(len(self.partner.requests), 1)

    async def test_jwt(self):
        proxy = await self.start()
        token = jwt.encode({"sub": "alice", "scope": "read", "exp": 4102444800},
                           SECRET, algorithm="HS256")
        resp = await self.get(proxy, "/api/me", headers={"Authorization": "Bearer " + token})
        self.assertEqual(resp.status, 200)
        headers = seen(resp)
        self.assertNotIn("authorization", headers)
        self.assertEqual((headers["x-consumer-username"], headers["x-scope"]),
                         ("alice", "read"))
        expired = jwt.encode({"exp": 1000}, SECRET, algorithm="HS256")
        resp = await self.get(proxy, "/api/me", headers={"Authorization": "Bearer " + expired})
        self.assertEqual(resp.status, 401)
        self.assertIn('error="invalid_token"', resp.header("WWW-Authenticate"))
        self.assertEqual(resp.json()["reason"], "token expired")

    async def test_ipRestrictionFromTrustedProxy(self):
        """The loopback client is a trusted proxy naming a denied address."""
        proxy = await self.start(trusted_proxies=["127.0.0.1"])
        resp = await self.get(proxy, "/partner/x", headers={
            "X-Forwarded-For": "127.0.0.66", "apikey": "acme-key-0001"})
        self.assertEqual((resp.status, resp.json()), (403, {"error": "forbidden"}))
        resp = await self.get(proxy, "/partner/x", headers={
            "X-Forwarded-For": "127.0.0.5", "apikey": "acme-key-0001"})
        self.assertEqual(resp.status, 200)

    async def test_cors(self):
        proxy = await self.start()
        resp = await self.get(proxy, "/web/items", method="OPTIONS", headers={
            "Origin": APP, "Access-Control-Request-Method": "POST"})
        self.assertEqual(resp.status, 204)
        self.assertEqual(resp.header("Access-Control-Allow-Origin"), APP)
        self.assertEqual(self.web.requests, [])
        resp = await self.get(proxy, "/web/items", headers={"Origin": APP})
        self.assertEqual((resp.status, resp.header("Access-Control-Allow-Origin"),
                          resp.header("Vary")), (200, APP, "Origin"))

    async def test_healthOverHTTP(self):
        proxy = await self.start(admin={"token": "s3cret"})
        base = self.admin(proxy)
        for path, status, body in [("/healthz", 200, {"status": "ok"}),
                                   ("/readyz", 200, {"status": "ready"}),
                                   ("/readyz?group=nope", 503, {
                                       "status": "not_ready", "reason": "no live peer",
                                       "groups": ["nope"]}),
                                   ("/upstream/status", 401, None)]:
            response = await treq.get(base + path, pool=self.pool)
            got = await treq.json_content(response)
            self.assertEqual(response.code, status, path)
            if body is not None:
                self.assertEqual(got, body)


class ShippedConfigTests(SynchronousTestCase):
    """``etc/gateway.json`` as shipped, through the harness."""

    def harness(self):
        config = load_config(os.path.join(ROOT, "etc", "gateway.json"))
        servers = {}
        for group in config["upstreams"].values():
            for peer in group["peers"]:
                servers["{}:{}".format(peer["host"], peer["port"])] = stub_echo
        return Harness(config=config, servers=servers)

    def test_routes(self):
        h = self.harness()
        self.assertEqual(h.request("GET", "/").status, 200)
        response = h.request("GET", "/api/orders")
        self.assertEqual(response.status, 401)
        self.assertTrue(response.headers.get("X-Request-ID"))
        response = h.request("GET", "/api/orders", headers={"apikey": "demo-key-alice"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.json()["headers"]["x-consumer-username"], "alice")
        preflight = h.request("OPTIONS", "/api/orders", headers={
            "Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
        self.assertEqual(preflight.status, 204)
        self.assertEqual(h.request("GET", "/internal/x", client="192.0.2.1").status, 403)
        self.assertEqual(h.request("GET", "/internal/x").status, 200)
        self.assertEqual(h.admin("GET", "/readyz").status, 200)
