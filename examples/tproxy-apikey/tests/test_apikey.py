"""
Tests for :mod:`tproxy_apikey`, through :mod:`tproxy.testing`: requests go
through a real gateway in memory, with the router and the balancer in front
of a stub upstream that echoes what it received.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy import ConfigError
from tproxy.testing import Harness, check_settings, echo

import tproxy_apikey

UPSTREAM = "127.0.0.1:9001"
CONSUMERS = {"alice": ["key-alice"], "bob": ["key-bob-new", "key-bob-old"]}


def harness(plugin=tproxy_apikey, **settings):
    """A gateway with the plugin between the router and the balancer."""
    settings.setdefault("consumers", CONSUMERS)
    return Harness(
        config={"upstreams": {"default": {"peers": [UPSTREAM]}}},
        plugins=["router", {"name": plugin, "settings": settings}, "least_conn"],
        servers={UPSTREAM: echo},
    )


class AccessTests(SynchronousTestCase):
    """Who gets in, and what the upstream and the client see."""

    def test_validKey(self):
        """
        A known key reaches the upstream, which is told the consumer's name
        and not the key; the client is told the name too.
        """
        h = harness()
        response = h.request("GET", "/orders", headers={"X-API-Key": "key-alice"})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers.get("X-Consumer"), "alice")
        [received] = h.upstream_requests
        self.assertEqual(received.headers.get("X-Consumer"), "alice")
        self.assertNotIn("X-API-Key", received.headers)
        self.assertEqual(h.contexts[0].consumer, "alice")

    def test_everyKeyOfAConsumer(self):
        """A consumer may have several keys (to rotate them)."""
        h = harness()
        for key in CONSUMERS["bob"]:
            response = h.request("GET", "/", headers={"X-API-Key": key})
            self.assertEqual(response.headers.get("X-Consumer"), "bob")

    def test_missingKey(self):
        """No key: ``401`` JSON with a challenge, and no upstream request."""
        h = harness()
        response = h.request("GET", "/orders")
        self.assertEqual(response.status, 401)
        self.assertEqual(response.json(), {"error": "missing API key"})
        self.assertEqual(response.headers.get("WWW-Authenticate"),
                         'ApiKey header="X-API-Key"')
        self.assertIsNone(response.headers.get("X-Consumer"))
        self.assertEqual(h.upstream_requests, [])
        self.assertEqual(h.contexts[0].status, 401)

    def test_wrongKey(self):
        """An unknown key is refused; so is a key sent twice."""
        h = harness()
        response = h.request("GET", "/", headers={"X-API-Key": "key-alicf"})
        self.assertEqual((response.status, response.json()),
                         (401, {"error": "invalid API key"}))
        response = h.request("GET", "/", headers=[("X-API-Key", "key-alice"),
                                                  ("X-API-Key", "key-bob-new")])
        self.assertEqual(response.status, 401)
        self.assertEqual(h.upstream_requests, [])

    def test_spoofedConsumer(self):
        """A client's own ``X-Consumer`` never reaches the upstream."""
        h = harness()
        h.request("GET", "/", headers={"X-API-Key": "key-bob-new", "X-Consumer": "alice"})
        self.assertEqual(h.upstream_requests[0].headers.get_all("X-Consumer"), ["bob"])
        h.request("GET", "/", headers={"X-Consumer": "alice"})
        self.assertNotIn("X-Consumer", h.contexts[-1].request.headers)


class SettingsTests(SynchronousTestCase):
    """The settings, their defaults and their validation."""

    def test_headerNames(self):
        """Every header name can be chosen."""
        h = harness(header="Authorization-Key", consumer_header="X-User",
                    response_header="X-Caller")
        self.assertEqual(h.request("GET", "/", headers={"X-API-Key": "key-alice"}).status,
                         401)
        response = h.request("GET", "/", headers={"Authorization-Key": "key-alice"})
        self.assertEqual(response.headers.get("X-Caller"), "alice")
        self.assertEqual(h.upstream_requests[0].headers.get("X-User"), "alice")

    def test_keepKeyNoResponseHeader(self):
        """``hide_key: false`` forwards the key; ``response_header: null`` adds none."""
        h = harness(hide_key=False, response_header=None)
        response = h.request("GET", "/", headers={"X-API-Key": "key-alice"})
        self.assertNotIn("X-Consumer", response.headers)
        self.assertEqual(h.upstream_requests[0].headers.get("X-API-Key"), "key-alice")

    def test_consumersRequired(self):
        """Without consumers, tproxy does not start, and says where."""
        e = self.assertRaises(ConfigError, Harness, plugins=[tproxy_apikey])
        self.assertEqual(e.errors, [("plugins[0].settings", "missing key 'consumers' "
                                     "(plugin 'tproxy_apikey')")])

    def test_defaults(self):
        """The defaults of the settings (``check_settings``: no gateway needed)."""
        self.assertEqual(check_settings(tproxy_apikey, {"consumers": CONSUMERS}),
                         {"consumers": CONSUMERS, "header": "X-API-Key",
                          "consumer_header": "X-Consumer",
                          "response_header": "X-Consumer", "hide_key": True})

    def test_badHeaderName(self):
        """A header name must be an HTTP token."""
        e = self.assertRaises(ConfigError, harness, header="X API Key")
        self.assertEqual(e.path, "plugins[1].settings.header")
        e = self.assertRaises(ConfigError, check_settings, tproxy_apikey,
                              {"consumers": CONSUMERS, "consumer_header": "X:"})
        self.assertEqual(e.path, "settings.consumer_header")

    def test_sharedKey(self):
        """A key of two consumers is refused."""
        e = self.assertRaises(ConfigError, harness, consumers={"a": ["k"], "b": ["k"]})
        self.assertIn("also a key of", e.problem)


class InstalledTests(SynchronousTestCase):
    """The installed distribution is found by its entry-point name."""

    def test_entryPoint(self):
        """``"apikey"`` in a configuration's plugins list loads this plugin."""
        try:
            settings = check_settings("apikey", {"consumers": CONSUMERS})
        except ConfigError as e:
            self.fail("the entry point 'apikey' is not installed (pip install "
                      "this directory first): {}".format(e))
        self.assertEqual(settings["header"], "X-API-Key")

    def test_byNameInHarness(self):
        """The harness resolves the name like ``twistd tproxy`` does."""
        h = harness(plugin="apikey")
        self.assertEqual(h.names("access"), ["apikey"])
        self.assertIsInstance(h.plugin("apikey"), tproxy_apikey.Plugin)
        self.assertEqual(h.request("GET", "/").status, 401)
