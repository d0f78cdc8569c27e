"""
Tests for :mod:`tproxy.builtins.router`: longest prefix at a segment boundary
among live groups, prefix stripping, fallback to ``default``, ``503``.
"""

import json
import sys

import pluggy
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Request, RequestContext, Response, hookspecs
from tproxy.builtins import router
from tproxy.gateway import Gateway
from tproxy.http.headers import Headers
from tproxy.registry import MemoryRegistry


def make_gateway(ttl=60):
    """A real :class:`Gateway` over a ``Clock`` and an empty registry."""
    clock = Clock()
    pm = pluggy.PluginManager("tproxy")
    pm.add_hookspecs(hookspecs)
    config = {"registry": {"ttl": ttl, "cleanup_interval": 10},
              "admin": {"token": None}, "upstreams": {}}
    return Gateway(config, clock, pm, MemoryRegistry(clock, ttl))


def count_lines(fn, filename):
    """How many lines of ``filename`` run while ``fn()`` runs."""
    count = [0]

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == filename else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return count[0]


class RouterTests(SynchronousTestCase):
    """The router's decisions, with the plugin called directly."""

    def setUp(self):
        self.gateway = make_gateway()
        self.registry = self.gateway.registry
        self.clock = self.gateway.reactor
        self.plugin = router.Plugin({})
        self.plugin.init_worker(self.gateway)

    def route(self, path, query="", headers=None):
        ctx = RequestContext(self.gateway, Request("GET", path, query,
                                                   headers=Headers(headers)))
        return ctx, self.plugin.rewrite(ctx)

    def assertRouted(self, path, group, upstream_path, query=""):
        ctx, result = self.route(path, query)
        self.assertIsNone(result)
        self.assertEqual((ctx.route, ctx.upstream_path), (group, upstream_path))
        self.assertEqual(ctx.upstream_headers, [("X-Route-Prefix", group)])
        return ctx

    def test_longestPrefix(self):
        """The longest group matching whole segments wins."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.register("api/v2", "10.0.0.2", 80)
        self.registry.register("default", "10.0.0.3", 80)
        self.assertRouted("/api/v2/x", "api/v2", "/x")
        self.assertRouted("/api/x", "api", "/x")
        self.assertRouted("/api/v1/users", "api", "/v1/users?q=1", query="q=1")
        self.assertRouted("/api/v2", "api/v2", "/")
        self.assertRouted("/api/v3/x", "api", "/v3/x")

    def test_segmentBoundary(self):
        """A group matches whole segments only."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.register("default", "10.0.0.3", 80)
        self.assertRouted("/apix", "default", "/apix")
        self.assertRouted("/apix/y", "default", "/apix/y")
        self.assertRouted("/ap", "default", "/ap")

    def test_stripKeepsQuery(self):
        """The prefix is stripped and the query kept; a bare prefix becomes ``/``."""
        self.registry.register("api", "10.0.0.1", 80)
        ctx = self.assertRouted("/api/v1/users", "api", "/v1/users?q=1", query="q=1")
        self.assertEqual(ctx.request.uri, "/api/v1/users?q=1")
        self.assertRouted("/api", "api", "/")
        self.assertRouted("/api", "api", "/?a=b", query="a=b")
        self.assertRouted("/api/", "api", "/")
        self.assertRouted("/api//x", "api", "/x")

    def test_fallbackUnchanged(self):
        """No match: ``default`` with the path and query unchanged."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.register("default", "10.0.0.3", 80)
        self.assertRouted("/other/path", "default", "/other/path?x=1", query="x=1")
        self.assertRouted("/", "default", "/")
        self.assertRouted("*", "default", "*")

    def test_defaultIsNotAPrefix(self):
        """``/default/x`` reaches ``default`` unstripped; ``default/v2`` is a group."""
        self.registry.register("default", "10.0.0.3", 80)
        self.registry.register("default/v2", "10.0.0.4", 80)
        self.assertRouted("/default/x", "default", "/default/x")
        self.assertRouted("/default/v2/x", "default/v2", "/x")

    def test_settingDefaultGroup(self):
        """``default_group`` names the fallback group."""
        self.plugin = router.Plugin({"default_group": "web"})
        self.registry.register("web", "10.0.0.3", 80)
        self.assertRouted("/x", "web", "/x")

    def test_pathSpelling(self):
        """Matching is on the path in one spelling (as nginx's ``location``
        after decoding and ``merge_slashes``): no other spelling passes by
        a group to the fallback; ``%2F`` stays encoded; the rest goes
        upstream in that spelling, an unmatched path as it came."""
        self.registry.register("api/v2", "10.0.0.2", 80)
        self.registry.register("default", "10.0.0.3", 80)
        self.assertRouted("//api/v2/x", "api/v2", "/x")
        self.assertRouted("/api//v2//x", "api/v2", "/x")
        self.assertRouted("/%61pi/v2/%7Euser", "api/v2", "/~user?q=%61", query="q=%61")
        self.assertRouted("/api%2fv2/x", "default", "/api%2fv2/x")
        self.assertRouted("//other//x", "default", "//other//x")

    def test_deepGroupWithoutParents(self):
        """A group ``a/b/c`` matches with no group ``a`` or ``a/b``."""
        self.registry.register("a/b/c", "10.0.0.1", 80)
        self.registry.register("default", "10.0.0.3", 80)
        self.assertRouted("/a/b/c/d", "a/b/c", "/d")
        self.assertRouted("/a/b/x", "default", "/a/b/x")
        self.assertRouted("/a", "default", "/a")

    def test_expiredGroupSkipped(self):
        """A group whose peers all expired does not match; a shorter one may."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.add_static("default", "10.0.0.3", 80)
        self.clock.advance(30)
        self.registry.register("api/v2", "10.0.0.2", 80)
        self.assertRouted("/api/v2/x", "api/v2", "/x")
        self.clock.advance(31)  # api expired at 60, api/v2 lives until 90
        self.assertRouted("/api/v2/x", "api/v2", "/x")
        self.assertRouted("/api/x", "default", "/api/x")
        self.clock.advance(30)  # api/v2 expired too
        self.assertRouted("/api/v2/x", "default", "/api/v2/x")
        self.registry.register("api", "10.0.0.1", 80)  # heartbeat revives it
        self.assertRouted("/api/v2/x", "api", "/v2/x")

    def test_expiredLeafGroupSkipped(self):
        """A group no other group name starts with (routed in one step) is
        skipped once its peers expired, and taken again after a heartbeat."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.add_static("default", "10.0.0.3", 80)
        self.assertRouted("/api/x", "api", "/x")
        self.clock.advance(59)
        self.assertRouted("/api", "api", "/")
        self.assertRouted("/api/", "api", "/")
        self.assertRouted("/api/x", "api", "/x?q=1", query="q=1")
        self.clock.advance(2)
        self.assertRouted("/api/x", "default", "/api/x")
        self.registry.register("api", "10.0.0.1", 80)
        self.assertRouted("/api/x", "api", "/x")
        self.registry.group("api").routable = False
        self.assertRouted("/api/x", "default", "/api/x")

    def test_oneStepRoutesFollowGroups(self):
        """A group routed in one step (no other group name starts with it,
        not the fallback) stops being one when a deeper group appears, and
        is one again when that goes; the routes are the walk's throughout."""
        self.registry.add_static("default", "10.0.0.3", 80)
        self.registry.register("api", "10.0.0.1", 80)
        self.assertEqual(self.plugin._leaves, {"api"})
        self.registry.register("api/v2", "10.0.0.2", 80)
        self.registry.register("default/v2", "10.0.0.4", 80)
        self.assertEqual(self.plugin._leaves, {"api/v2", "default/v2"})
        self.assertRouted("/api/v2/x", "api/v2", "/x")
        self.assertRouted("/api/x", "api", "/x")
        self.assertRouted("/default/v2/x", "default/v2", "/x")
        self.registry.deregister("api/v2", "10.0.0.2", 80)
        self.registry.deregister("default/v2", "10.0.0.4", 80)
        self.assertEqual(self.plugin._leaves, {"api"})
        self.assertRouted("/api/v2/x", "api", "/v2/x")
        self.assertRouted("/api//x", "api", "/x")
        self.assertRouted("//api/x", "api", "/x")
        self.assertRouted("/default/x", "default", "/default/x")

    def test_noLiveUpstream(self):
        """Nothing live: ``503`` JSON naming the group."""
        ctx, result = self.route("/x")
        self.assertIsInstance(result, Response)
        self.assertEqual(result.status, 503)
        self.assertEqual(result.headers.get("content-type"), "application/json")
        self.assertEqual(json.loads(result.body),
                         {"error": "no live upstream", "group": "default"})
        self.assertEqual((ctx.route, ctx.error), ("default", "no_peer"))

    def test_noLiveUpstreamNamesExpiredGroup(self):
        """When the path named a group whose peers expired, the 503 says so."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.register("default", "10.0.0.3", 80)
        self.clock.advance(61)
        ctx, result = self.route("/api/x")
        self.assertEqual(result.status, 503)
        self.assertEqual(json.loads(result.body),
                         {"error": "no live upstream", "group": "api"})

    def test_clientRoutePrefixReplaced(self):
        """A client's ``X-Route-Prefix`` is removed, never believed."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.register("admin", "10.0.0.9", 80)
        ctx, result = self.route("/api/x", headers=[
            (b"Host", b"example"), (b"x-route-prefix", b"admin"),
            (b"X-ROUTE-PREFIX", b"admin"), (b"Accept", b"*/*")])
        self.assertIsNone(result)
        self.assertEqual(ctx.route, "api")
        self.assertEqual(ctx.request.headers.raw,
                         [(b"Host", b"example"), (b"Accept", b"*/*")])
        self.assertEqual(ctx.upstream_headers, [("X-Route-Prefix", "api")])

    def test_existingUpstreamHeaderReplaced(self):
        """An ``X-Route-Prefix`` already in ``upstream_headers`` is replaced."""
        self.registry.register("api", "10.0.0.1", 80)
        ctx = RequestContext(self.gateway, Request("GET", "/api/x"))
        ctx.upstream_headers.append(("x-route-prefix", "evil"))
        ctx.upstream_headers.append(("X-Other", "1"))
        self.plugin.rewrite(ctx)
        self.assertEqual(ctx.upstream_headers,
                         [("X-Other", "1"), ("X-Route-Prefix", "api")])

    def test_groupsComeAndGo(self):
        """Groups registered or removed at run time are followed."""
        self.registry.register("default", "10.0.0.3", 80)
        self.assertRouted("/new/x", "default", "/new/x")
        self.registry.register("new", "10.0.0.1", 80)
        self.registry.register("new", "10.0.0.2", 80)
        self.assertRouted("/new/x", "new", "/x")
        self.registry.deregister("new", "10.0.0.1", 80)
        self.assertRouted("/new/x", "new", "/x")
        self.registry.deregister("new", "10.0.0.2", 80)
        self.assertRouted("/new/x", "default", "/new/x")
        self.assertEqual(self.plugin._names, {"default"})
        self.assertEqual(self.plugin._prefix_count, {"default": 1})
        self.clock.advance(61)
        self.registry.add_static("new", "10.0.0.1", 80)
        self.registry.expire()
        self.assertEqual(self.plugin._names, {"new"})

    def test_staticGroupsBeforeInit(self):
        """Groups present before the plugin starts (static ones) are known."""
        gateway = make_gateway()
        gateway.registry.add_static("api", "10.0.0.1", 80)
        plugin = router.Plugin()
        ctx = RequestContext(gateway, Request("GET", "/api/x"))
        self.assertIsNone(plugin.rewrite(ctx))  # attaches on first use
        self.assertEqual((ctx.route, ctx.upstream_path), ("api", "/x"))

    def test_throughPhases(self):
        """Registered in a plugin manager, it runs as the ``rewrite`` phase."""
        self.registry.register("api", "10.0.0.1", 80)
        self.gateway.plugins.register(self.plugin, "router")
        self.gateway.phases.refresh()
        self.assertEqual(self.gateway.phases.names("rewrite"), ["router"])
        ctx = RequestContext(self.gateway, Request("GET", "/api/v1"))
        self.assertIsNone(self.gateway.phases.rewrite_access(ctx))
        self.assertEqual((ctx.route, ctx.upstream_path), ("api", "/v1"))

    def test_walkEndsAtALeaf(self):
        """The walk ends at a group that no other name starts with (one pass
        for "/api/..."), and goes on past a prefix that is no group, or one
        that a longer name extends; as names come and go."""
        self.registry.register("a/b", "10.0.0.1", 80)
        self.registry.register("default", "10.0.0.3", 80)
        self.assertRouted("/a/b/c", "a/b", "/c")     # "a": a prefix, not a group
        self.registry.register("a", "10.0.0.2", 80)
        self.assertRouted("/a/b/c", "a/b", "/c")     # "a": a group "a/b" extends
        self.assertRouted("/a/x/y", "a", "/x/y")
        self.registry.deregister("a/b", "10.0.0.1", 80)
        self.assertRouted("/a/b/c", "a", "/b/c")     # "a": a leaf now
        self.registry.register("a/b/c", "10.0.0.4", 80)
        self.assertRouted("/a/b/c/d", "a/b/c", "/d")
        self.assertRouted("/a/b/x", "a", "/b/x")

    def test_costIndependentOfGroupCount(self):
        """A route costs the same with 10 or 1,000 groups (lines executed)."""
        def cost(groups):
            gateway = make_gateway()
            for i in range(groups):
                gateway.registry.add_static("g%d" % i, "10.0.0.1", 80)
                gateway.registry.add_static("g%d/sub" % i, "10.0.0.1", 80)
            plugin = router.Plugin()
            plugin.init_worker(gateway)
            paths = ["/g3/sub/x/y", "/g7/x", "/nothing/a/b/c", "/g5/sub"]
            ctxs = [RequestContext(gateway, Request("GET", p)) for p in paths * 25]

            def run():
                for ctx in ctxs:
                    plugin.rewrite(ctx)
            lines = count_lines(run, router.__file__.replace(".pyc", ".py"))
            self.assertEqual(ctxs[0].route, "g3/sub")
            return lines
        small, large = cost(10), cost(1000)
        self.assertGreater(small, 100)
        self.assertEqual(small, large)
