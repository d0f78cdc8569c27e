"""
The phase driver: order, awaiting, first results, short-circuits and
per-route plugin sets, on a gateway built from a real config and plugin
manager (no sockets: the driver is called directly).
"""

import sys
import types

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Peer, Request, RequestContext, Response, hookimpl
from tproxy.config import validate_config
from tproxy.gateway import Gateway
from tproxy.phase_walks import UNROLL, direct
from tproxy.plugins import build_plugin_manager

CALLS = []


class Recorder(object):
    """A plugin recording its calls; ``settings["tag"]`` names it."""

    settings_schema = {"type": "object", "properties": {
        "tag": {"type": "string"}, "deny": {"type": "boolean", "default": False},
        "async_": {"type": "string", "default": ""},
        "route": {"type": "string", "default": ""}}}

    def __init__(self, settings):
        self.tag = settings["tag"]
        self.deny = settings["deny"]
        self.async_ = settings["async_"]
        self.route = settings["route"]

    def _result(self, value):
        if self.async_ == "deferred":
            return succeed(value)
        if self.async_ == "coroutine":
            async def coro():
                return value
            return coro()
        return value

    @hookimpl
    def rewrite(self, ctx):
        CALLS.append(("rewrite", self.tag))
        if self.route:
            ctx.route = self.route
        return self._result(None)

    @hookimpl
    def access(self, ctx):
        CALLS.append(("access", self.tag))
        return self._result(Response.error(403, "denied by " + self.tag) if self.deny else None)

    @hookimpl
    def balancer(self, tried):          # a subset of the hook's arguments
        CALLS.append(("balancer", self.tag))
        return self._result(None)

    @hookimpl
    def log(self, ctx):
        CALLS.append(("log", self.tag))


_module = types.ModuleType("tests._phase_recorder")
_module.Plugin = Recorder
sys.modules[_module.__name__] = _module


def entry(tag, **settings):
    settings["tag"] = tag
    return {"name": _module.__name__, "settings": settings}


class _Settingless(object):
    """A test's own plugin class, taking no settings."""

    def __init__(self, settings):
        pass


class PhaseDriverTests(SynchronousTestCase):

    def setUp(self):
        del CALLS[:]

    #: the phase walks (straight-line or loops; None: this interpreter's)
    unroll = None

    def gateway(self, plugins):
        config = validate_config({"plugins": plugins})
        gateway = Gateway(config, Clock(), build_plugin_manager(config))
        if self.unroll is not None:
            gateway.phases.unroll = self.unroll
            gateway.phases.refresh()
        return gateway

    def installed(self, cls):
        """``cls`` made importable for this test: its ``plugins`` entry."""
        setattr(_module, cls.__name__, cls)
        self.addCleanup(delattr, _module, cls.__name__)
        return _module.__name__ + ":" + cls.__name__

    def ctx(self, gateway):
        return RequestContext(gateway, Request("GET", "/x"))

    def test_config_order(self):
        """Every phase runs the plugins in the order the config lists them."""
        gw = self.gateway([entry("a"), entry("b"), entry("c")])
        ctx = self.ctx(gw)
        self.assertIsNone(gw.phases.rewrite_access(ctx))
        self.assertIsNone(gw.phases.balancer(ctx, ()))
        gw.phases.log(ctx)
        self.assertEqual(CALLS, [(phase, tag) for phase in ("rewrite", "access", "balancer", "log")
                                 for tag in "abc"])

    def test_access_short_circuit(self):
        """The first access Response ends the phase: later plugins do not run."""
        gw = self.gateway([entry("a"), entry("b", deny=True), entry("c")])
        r = gw.phases.rewrite_access(self.ctx(gw))
        self.assertEqual(r.status, 403)
        self.assertEqual([c for c in CALLS if c[0] == "access"], [("access", "a"), ("access", "b")])

    def test_awaitables(self):
        """Deferreds and coroutines are awaited, in order, in every phase."""
        for kind in ("deferred", "coroutine"):
            del CALLS[:]
            gw = self.gateway([entry("a", async_=kind), entry("b", async_=kind, deny=True),
                               entry("c", async_=kind)])
            ctx = self.ctx(gw)
            r = self.successResultOf(gw.phases.rewrite_access(ctx))
            self.assertEqual(r.status, 403)
            self.assertEqual(CALLS, [("rewrite", "a"), ("rewrite", "b"), ("rewrite", "c"),
                                     ("access", "a"), ("access", "b")])
            self.assertIsNone(self.successResultOf(gw.phases.balancer(ctx, ())))

    def test_pending_hook_holds_the_phase(self):
        """A phase waits for an unfired Deferred before the next plugin runs."""
        pending = Deferred()

        class Slow(_Settingless):
            @hookimpl
            def access(self, ctx):
                CALLS.append(("access", "slow"))
                return pending

        path = self.installed(Slow)
        gw = self.gateway([path, entry("b")])
        d = gw.phases.rewrite_access(self.ctx(gw))
        self.assertNoResult(d)
        self.assertNotIn(("access", "b"), CALLS)
        pending.callback(None)
        self.assertIsNone(self.successResultOf(d))
        self.assertIn(("access", "b"), CALLS)

    def test_per_route_sets(self):
        """A plugin enabled for some routes runs only for requests routed there."""
        gw = self.gateway([
            entry("router", route="api"),
            dict(entry("only-api"), routes=["api"]),
            dict(entry("only-web"), routes=["web"]),
            entry("everywhere"),
        ])
        ctx = self.ctx(gw)
        gw.phases.rewrite_access(ctx)
        gw.phases.balancer(ctx, ())
        gw.phases.log(ctx)
        tags = [t for _, t in CALLS]
        self.assertNotIn("only-web", tags)
        self.assertEqual(CALLS, [
            ("rewrite", "router"), ("rewrite", "everywhere"),   # every-route rewrites
            ("rewrite", "only-api"),                              # then the route's
            ("access", "router"), ("access", "only-api"), ("access", "everywhere"),
            ("balancer", "router"), ("balancer", "only-api"), ("balancer", "everywhere"),
            ("log", "router"), ("log", "only-api"), ("log", "everywhere")])

    def test_unscoped_route(self):
        """A route no plugin is scoped to runs the every-route plugins only."""
        gw = self.gateway([entry("router", route="other"),
                           dict(entry("only-api"), routes=["api"])])
        ctx = self.ctx(gw)
        gw.phases.rewrite_access(ctx)
        self.assertIs(ctx.plugins, gw.phases.default)
        self.assertEqual(CALLS, [("rewrite", "router"), ("access", "router")])

    def test_same_plugin_two_routes(self):
        """One plugin listed twice with other routes and settings: each its own."""
        gw = self.gateway([entry("router", route="web"),
                           dict(entry("api-deny", deny=True), routes=["api"]),
                           dict(entry("web-allow"), routes=["web"])])
        ctx = self.ctx(gw)
        self.assertIsNone(gw.phases.rewrite_access(ctx))
        self.assertIn(("access", "web-allow"), CALLS)
        self.assertNotIn(("access", "api-deny"), CALLS)

    def test_log_errors_contained(self):
        """An exception in log is logged and the other log hooks still run."""

        class Broken(_Settingless):
            @hookimpl
            def log(self, ctx):
                raise RuntimeError("boom")

        path = self.installed(Broken)
        gw = self.gateway([path, entry("b")])
        gw.phases.log(self.ctx(gw))
        self.assertIn(("log", "b"), CALLS)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_coroutine_balancer_every_time(self):
        """A lone balancer answering with a coroutine is awaited on every
        request, not only until the driver has seen its type once."""
        peer = Peer("default", "10.0.0.1", 80)

        class AsyncBalancer(_Settingless):
            @hookimpl
            def balancer(self, ctx, tried):
                async def choose():
                    return peer
                return choose()

            @hookimpl
            def log(self, ctx):
                async def done():
                    CALLS.append(("log", "async"))
                return done()

        path = self.installed(AsyncBalancer)
        gw = self.gateway([path])
        for _ in range(3):
            ctx = self.ctx(gw)
            d = gw.phases.balancer(ctx, ())
            self.assertIsInstance(d, Deferred)
            self.assertIs(self.successResultOf(d), peer)
            gw.phases.log(ctx)
        self.assertEqual(CALLS, [("log", "async")] * 3)

    def test_first_result_ends_balancer(self):
        """Once a balancer answers, the ones after it are not called."""
        peer = Peer("default", "10.0.0.1", 80)

        class Fixed(_Settingless):
            @hookimpl
            def balancer(self, ctx, tried):
                CALLS.append(("balancer", "fixed"))
                return peer

        path = self.installed(Fixed)
        gw = self.gateway([entry("a"), path, entry("b")])
        self.assertIs(gw.phases.balancer(self.ctx(gw), ()), peer)
        self.assertEqual(CALLS, [("balancer", "a"), ("balancer", "fixed")])

    def test_direct_alone_is_the_walk(self):
        """A :func:`~tproxy.phase_walks.direct` implementation alone in its
        phase is called with no walk between; its results are the walk's."""
        peer = Peer("default", "10.0.0.1", 80)

        class Direct(_Settingless):
            @hookimpl
            @direct
            def rewrite(self, ctx):
                CALLS.append(("rewrite", "direct"))
                ctx.route = "api"
                return Response.error(403, "denied") if ctx.request.path == "/deny" else None

            @hookimpl
            @direct
            def balancer(self, ctx, tried):
                CALLS.append(("balancer", "direct"))
                return peer

        path = self.installed(Direct)
        gw = self.gateway([path])
        phases = gw.phases
        self.assertIs(phases.rewrite_access.__func__, Direct.rewrite)
        self.assertIs(phases.default.run_balancer.__func__, Direct.balancer)
        ctx = self.ctx(gw)
        self.assertIsNone(phases.rewrite_access(ctx))
        self.assertIs(phases.balancer(ctx, ()), peer)
        ctx = RequestContext(gw, Request("GET", "/deny"))
        self.assertEqual(phases.rewrite_access(ctx).status, 403)
        self.assertEqual(CALLS, [("rewrite", "direct"), ("balancer", "direct"),
                                 ("rewrite", "direct")])
        # not alone: walked as any other (the access and the route's
        # plugins run after the rewrite; the next balancer after a None)
        del CALLS[:]
        gw = self.gateway([path,
                           dict(entry("api"), routes=["api"])])
        ctx = self.ctx(gw)
        self.assertIsNone(gw.phases.rewrite_access(ctx))
        self.assertIs(ctx.plugins, gw.phases.by_route["api"])
        self.assertEqual(CALLS, [("rewrite", "direct"), ("rewrite", "api"), ("access", "api")])
        del CALLS[:]
        gw = self.gateway([entry("a"), path])
        self.assertIs(gw.phases.balancer(self.ctx(gw), ()), peer)
        self.assertEqual(CALLS, [("balancer", "a"), ("balancer", "direct")])


class OtherWalkPhaseDriverTests(PhaseDriverTests):
    """:class:`PhaseDriverTests` with the other phase walks than this
    interpreter's (loops on CPython, straight-line code on PyPy)."""

    unroll = not UNROLL
