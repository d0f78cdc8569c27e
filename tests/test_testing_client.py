"""
Tests for the parts of :mod:`tproxy.testing` that reach past single
requests: client connections that stay open (keep-alive, pipelining, raw
bytes), the plugin objects of a harness, the phase listing and
:func:`~tproxy.testing.check_settings`.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.builtins import least_conn
from tproxy.config import ConfigError
from tproxy.testing import (ClientConnection, Harness, RequestPending,
                            ResponseIncomplete, check_settings, echo)

from tests import plugin_with_class
from tests.test_testing import Tag

UP = "127.0.0.1:9001"


def harness(plugins=("router", "least_conn"), servers=None):
    return Harness(config={"upstreams": {"default": {"peers": [UP]}}},
                   plugins=list(plugins),
                   servers={UP: echo} if servers is None else servers)


class ConnectionTests(SynchronousTestCase):
    """``Harness.connect``: one client connection, several requests."""

    def test_keepAlive(self):
        """Requests one after the other on one connection, which stays open."""
        h = harness()
        conn = h.connect()
        self.assertIsInstance(conn, ClientConnection)
        first = conn.request("GET", "/one")
        second = conn.request("POST", "/two", body=b"hello")
        self.assertEqual((first.status, first.json()["uri"]), (200, "/one"))
        self.assertEqual((second.status, second.json()["body"]), (200, "hello"))
        self.assertEqual(conn.responses, [first, second])
        self.assertFalse(conn.closed)
        self.assertEqual([c.request.uri for c in h.contexts], ["/one", "/two"])
        conn.close()
        self.assertTrue(conn.closed)

    def test_head(self):
        """The response to HEAD has no body: the next response is parsed right."""
        h = harness()
        conn = h.connect()
        head = conn.request("HEAD", "/a")
        get = conn.request("GET", "/b")
        self.assertEqual((head.status, head.body), (200, b""))
        self.assertEqual(get.json()["uri"], "/b")

    def test_pipelined(self):
        """Requests sent at once, before any response: answered in order."""
        h = harness()
        conn = h.connect()
        conn.send_request("GET", "/1", flush=False)
        conn.send_request("HEAD", "/2", flush=False)
        self.assertEqual((conn.received, h.upstream_requests), (b"", []))  # only queued
        conn.send_request("GET", "/3")
        self.assertEqual([r.status for r in conn.responses], [200, 200, 200])
        self.assertEqual([conn.responses[0].json()["uri"], conn.responses[2].json()["uri"]],
                         ["/1", "/3"])
        self.assertEqual([c.request.uri for c in h.contexts], ["/1", "/2", "/3"])

    def test_raw(self):
        """Raw bytes, a head in two pieces; then a malformed request is a
        400 and the connection closes."""
        h = harness()
        conn = h.connect()
        conn.send(b"GET /raw HTTP/1.1\r\nHo")
        self.assertEqual(conn.responses, [])
        conn.send(b"st: example.com\r\n\r\n")
        self.assertEqual(conn.responses[0].json()["uri"], "/raw")
        conn.send(b"GET / HTTP/1.1\r\n\r\n")          # no Host
        self.assertEqual(conn.responses[1].status, 400)
        self.assertTrue(conn.closed)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 "))

    def test_pending(self):
        """A response the upstream has not given yet: ``RequestPending``,
        then the response once it arrives."""
        from twisted.internet.defer import Deferred
        answer = Deferred()
        h = harness(servers={UP: lambda request: answer})
        conn = h.connect()
        self.assertRaises(RequestPending, conn.request, "GET", "/slow")
        answer.callback((200, {}, b"late"))
        h.flush()
        self.assertEqual(conn.responses[0].body, b"late")

    def test_closedFirst(self):
        """The proxy closing before the response: ``ResponseIncomplete``."""
        h = harness()
        conn = h.connect()
        conn.send(b"GET / HTTP/1.1\r\n\r\n")          # a 400, then closed
        self.assertRaises(ResponseIncomplete, conn.request, "GET", "/")

    def test_abort(self):
        """A client that resets while its request is in flight: a client
        abort for the phases."""
        from twisted.internet.defer import Deferred
        h = harness(servers={UP: lambda request: Deferred()})
        conn = h.connect()
        conn.send_request("GET", "/")
        conn.abort()
        [ctx] = h.contexts
        self.assertEqual((ctx.status, ctx.error), (499, "client_abort"))


class PluginTests(SynchronousTestCase):
    """``Harness.plugin`` and ``Harness.names``."""

    def test_byObject(self):
        """A class given with settings: the instance tproxy made from it."""
        h = harness(["router", {"name": Tag, "settings": {"value": "v"}}, "least_conn"])
        plugin = h.plugin(Tag)
        self.assertIsInstance(plugin, Tag)
        self.assertEqual(plugin.value, "v")

    def test_byModule(self):
        """A module with a ``Plugin`` class: its instance, defaults filled in."""
        h = harness(["router", plugin_with_class, "least_conn"])
        self.assertEqual(h.plugin(plugin_with_class).settings, {"greeting": "hello"})

    def test_byName(self):
        """A name: the instance registered under it."""
        h = harness()
        self.assertIsInstance(h.plugin("least_conn"), least_conn.Plugin)

    def test_instance(self):
        """An instance is registered as it is."""
        tag = Tag({"value": "mine"})
        h = harness(["router", tag, "least_conn"])
        self.assertIs(h.plugin(tag), tag)

    def test_occurrence(self):
        """A plugin listed twice: each entry's own instance."""
        h = harness(["router", {"name": Tag, "settings": {"value": "a"}},
                     {"name": Tag, "settings": {"value": "b"}}, "least_conn"])
        self.assertEqual([h.plugin(Tag).value, h.plugin(Tag, 2).value], ["a", "b"])
        self.assertEqual(h.names("header_filter"), ["Tag", "Tag#2"])
        self.assertEqual(h.request("GET", "/").headers.get_all("X-Tag"), ["a", "b"])

    def test_missing(self):
        """An entry not listed: ``KeyError``."""
        h = harness()
        self.assertRaises(KeyError, h.plugin, "access_log")
        self.assertRaises(KeyError, h.plugin, "least_conn", 2)
        self.assertRaises(KeyError, h.plugin, Tag)

    def test_names(self):
        """The plugins of a phase in execution order, without the harness's recorder."""
        h = harness(["registry", "router", Tag({"value": "t"}), "least_conn", "access_log"])
        self.assertEqual(h.names("init_worker"),
                         ["registry", "router", "least_conn", "access_log"])
        self.assertEqual(h.names("rewrite"), ["router"])
        self.assertEqual(h.names("header_filter"), ["Tag"])
        self.assertEqual(h.names("log"), ["access_log"])
        self.assertEqual(h.names("access"), [])
        self.assertRaises(ValueError, h.names, "acess")


class CheckSettingsTests(SynchronousTestCase):
    """``check_settings``: settings checked as at start, without a gateway."""

    def test_defaults(self):
        """The settings ``__init__`` receives, defaults filled in."""
        self.assertEqual(check_settings(Tag), {"value": "tagged"})
        self.assertEqual(check_settings(Tag, {"value": "x"}), {"value": "x"})
        self.assertEqual(check_settings(plugin_with_class), {"greeting": "hello"})
        self.assertEqual(check_settings("tests.plugin_with_class", entry_points=[]),
                         {"greeting": "hello"})

    def test_invalid(self):
        """A problem is named by its path below ``settings``."""
        e = self.assertRaises(ConfigError, check_settings, Tag, {"value": 1})
        self.assertEqual(e.errors, [("settings.value", "expected a string, got 1 "
                                     "(plugin 'Tag')")])
        e = self.assertRaises(ConfigError, check_settings, Tag, {"valeu": "x"})
        self.assertEqual(e.path, "settings.valeu")

    def test_initChecks(self):
        """The checks ``__init__`` makes count too."""
        class Picky(object):
            def __init__(self, settings):
                raise ConfigError(("limit", "must be even"))
        e = self.assertRaises(ConfigError, check_settings, Picky, {"limit": 3})
        self.assertEqual(e.errors, [("settings.limit", "must be even (plugin 'Picky')")])

    def test_noClass(self):
        """An object without a class takes no settings."""
        tag = Tag({"value": "t"})
        self.assertIsNone(check_settings(tag))
        e = self.assertRaises(ConfigError, check_settings, tag, {"value": "x"})
        self.assertEqual(e.path, "settings")
        self.assertIn("give its class to have it made with settings", str(e))
