"""
Tests for :mod:`tproxy.builtins.ip_restriction`: allow and deny lists of
CIDRs (IPv4, IPv6, IPv4-mapped), the client address from the socket or a
trusted proxy only.
"""

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from tproxy.builtins.ip_restriction import NetworkSet
from tproxy.config import ConfigError
from tproxy.testing import Harness, echo

UPSTREAM = "127.0.0.1:9001"


def harness(settings, routes=None, **config):
    config.setdefault("upstreams", {"default": {"peers": [UPSTREAM]},
                                    "open": {"peers": [UPSTREAM]}})
    entry = {"name": "ip_restriction", "settings": settings}
    if routes:
        entry["routes"] = routes
    return Harness(config=config, plugins=["router", entry, "least_conn"],
                   servers={UPSTREAM: echo})


class NetworkSetTests(SynchronousTestCase):

    def test_membership(self):
        networks = NetworkSet([ipaddress.ip_network(n) for n in
                               ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32",
                                "::ffff:198.51.100.0/120"]])
        inside = ["10.255.0.1", "192.0.2.7", "2001:db8:1::5", "198.51.100.9"]
        outside = ["11.0.0.1", "192.0.2.8", "2001:db9::1", "198.51.101.1", "::1"]
        for text in inside:
            self.assertIn(ipaddress.ip_address(text), networks, text)
        for text in outside:
            self.assertNotIn(ipaddress.ip_address(text), networks, text)
        self.assertEqual(len(networks.tables[4]), 3)   # one lookup per prefix length

    def test_empty(self):
        self.assertFalse(NetworkSet([]))
        self.assertNotIn(ipaddress.ip_address("10.0.0.1"), NetworkSet([]))


class AccessTests(SynchronousTestCase):

    def assertStatus(self, h, client, status, headers=None):
        response = h.request("GET", "/x", client=client, headers=headers)
        self.assertEqual(response.status, status, client)
        if status == 403:
            self.assertEqual(response.json(), {"error": "forbidden"})
        return response

    def test_allowList(self):
        h = harness({"allow": ["192.0.2.0/24", "2001:db8::/32"]})
        self.assertStatus(h, "192.0.2.99", 200)
        self.assertStatus(h, "2001:db8::7", 200)
        self.assertStatus(h, "::ffff:192.0.2.5", 200)     # IPv4-mapped: its IPv4
        self.assertStatus(h, "198.51.100.1", 403)
        self.assertStatus(h, "2001:db9::1", 403)
        self.assertEqual(len(h.upstream_requests), 3)

    def test_denyWins(self):
        h = harness({"allow": ["10.0.0.0/8"], "deny": ["10.6.6.0/24"],
                     "message": "go away"})
        self.assertEqual(h.request("GET", "/", client="10.1.1.1").status, 200)
        response = h.request("GET", "/", client="10.6.6.6")
        self.assertEqual((response.status, response.json()), (403, {"error": "go away"}))

    def test_denyOnly(self):
        h = harness({"deny": ["203.0.113.0/24", "::1"]})
        self.assertStatus(h, "203.0.113.4", 403)
        self.assertStatus(h, "::1", 403)
        self.assertStatus(h, "127.0.0.1", 200)

    def test_forwardedOnlyFromTrustedProxy(self):
        """X-Forwarded-For counts from a trusted proxy, never from the client."""
        h = harness({"allow": ["192.0.2.0/24"]}, trusted_proxies=["10.0.0.1"])
        self.assertStatus(h, "198.51.100.1", 403, {"X-Forwarded-For": "192.0.2.1"})
        self.assertStatus(h, "198.51.100.1", 403, {"X-Real-IP": "192.0.2.1"})
        self.assertStatus(h, "10.0.0.1", 200, {"X-Forwarded-For": "192.0.2.1"})
        self.assertStatus(h, "10.0.0.1", 403, {"X-Forwarded-For": "198.51.100.1"})

    def test_clientsGarbageInForwardedFor(self):
        """A denied client behind a trusted proxy that sends an entry of its
        own that is not an address ("unknown, " before what the proxy
        appends) is still the address the proxy saw, not the proxy."""
        h = harness({"deny": ["192.0.2.7/32"]}, trusted_proxies=["10.0.0.1"])
        for xff in ("192.0.2.7", "unknown, 192.0.2.7", "1.2.3.4, evil, 192.0.2.7"):
            self.assertStatus(h, "10.0.0.1", 403, {"X-Forwarded-For": xff})
        self.assertStatus(h, "10.0.0.1", 200, {"X-Forwarded-For": "unknown, 192.0.2.8"})

    def test_realIpHeader(self):
        """With ``real_ip_header`` ``"X-Forwarded-For"``, a client's own
        X-Real-IP passed on by the trusted proxy is not believed."""
        h = harness({"allow": ["192.0.2.0/24"]}, trusted_proxies=["10.0.0.1"],
                    real_ip_header="X-Forwarded-For")
        self.assertStatus(h, "10.0.0.1", 403, {"X-Real-IP": "192.0.2.1",
                                               "X-Forwarded-For": "198.51.100.1"})
        self.assertStatus(h, "10.0.0.1", 200, {"X-Real-IP": "198.51.100.1",
                                               "X-Forwarded-For": "192.0.2.1"})

    def test_perRoute(self):
        h = harness({"allow": ["192.0.2.0/24"]}, routes=["default"])
        self.assertEqual(h.request("GET", "/open/x", client="198.51.100.1").status, 200)
        self.assertEqual(h.request("GET", "/x", client="198.51.100.1").status, 403)

    def test_decisionsCachedBounded(self):
        plugin = harness({"allow": ["192.0.2.0/24"], "cache_size": 2}) \
            .gateway.plugins.get_plugin("ip_restriction")
        for n in range(5):
            plugin.allowed("192.0.2.%d" % n)
            self.assertLessEqual(len(plugin.cache), 2)
        self.assertFalse(plugin.allowed("garbage"))
        self.assertFalse(plugin.allowed(None))

    def test_badSettings(self):
        e = self.assertRaises(ConfigError, harness, {"allow": ["10.0.0.0/8", "10.0.0/33"]})
        self.assertEqual(e.path, "plugins[1].settings.allow[1]")
        e = self.assertRaises(ConfigError, harness, {})
        self.assertEqual(e.path, "plugins[1].settings")
        e = self.assertRaises(ConfigError, harness, {"deny": "10.0.0.0/8"})
        self.assertEqual(e.path, "plugins[1].settings.deny")


class StreamTests(SynchronousTestCase):
    """On a ``streams`` listener: the connection's peer address."""

    def test_refusedClosed(self):
        from tproxy.testing import StreamHarness, StreamServer
        h = StreamHarness(
            config={"upstreams": {"redis": {"peers": ["127.0.0.1:6379"]}}},
            stream={"group": "redis"},
            plugins=[{"name": "ip_restriction", "settings": {"deny": ["192.0.2.0/24"]}},
                     "least_conn"],
            servers={"127.0.0.1:6379": StreamServer(echo=True)})
        refused = h.connect(client="192.0.2.66")
        self.assertTrue(refused.closed)
        self.assertEqual(refused.received, b"")
        allowed = h.connect(client="198.51.100.1")
        allowed.send(b"PING\r\n")
        self.assertEqual(allowed.received, b"PING\r\n")
        self.assertEqual([c.reason for c in h.logged], ["access_denied"])
