"""
``tproxy.direct``: an implementation alone in its phase is called by the
exchange with no walk between, and its result is checked there as its walk
would check it (through :mod:`tproxy.testing`, on the fake clock).
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy import Response, direct, hookimpl
from tproxy.testing import Harness, echo

UP = "127.0.0.1:9001"
#: what each broken promise logs (the TypeError of a walk, naming the plugin)
ACCESS = "a rewrite or access implementation returns None, a tproxy.Response"
BALANCER = "a balancer implementation returns a tproxy.Peer"


class _Access(object):
    """A direct ``access`` returning ``value`` (a callable of ``ctx``)."""

    def __init__(self, value):
        self.value = value

    @hookimpl
    @direct
    def access(self, ctx):
        return self.value(ctx)


class _Balancer(object):
    """A direct ``balancer`` returning ``value`` (a callable of ``ctx``)."""

    def __init__(self, value):
        self.value = value

    @hookimpl
    @direct
    def balancer(self, ctx, tried):
        return self.value(ctx)


async def _later(ctx):
    return None


class DirectTests(SynchronousTestCase):

    def get(self, plugins):
        """``(harness, response)`` of ``GET /api/x`` through ``plugins``."""
        h = Harness(config={"upstreams": {"api": {"peers": [UP]}}},
                    plugins=plugins, servers={UP: echo})
        return h, h.request("GET", "/api/x")

    def test_kept(self):
        """A direct ``access`` alone: its Response answers, its ``None``
        lets the request through; a direct ``balancer``'s Peer is used."""
        h, resp = self.get(["router", _Access(lambda ctx: Response.error(401, "no")),
                            "least_conn"])
        self.assertEqual((resp.status, resp.json()), (401, {"error": "no"}))
        chosen = []

        def first(ctx):
            [peer] = ctx.gateway.registry.group("api").peers.values()
            chosen.append(peer)
            return peer
        h, resp = self.get(["router", _Access(lambda ctx: None), _Balancer(first)])
        self.assertEqual(resp.status, 200)
        self.assertEqual(h.contexts[0].peer, chosen[0])

    def assertBroken(self, plugins, expected):
        h, resp = self.get(plugins)
        self.assertEqual((resp.status, resp.json()),
                         (500, {"error": "internal error in a plugin"}))
        self.assertEqual(h.contexts[0].error, "plugin_error")
        self.assertEqual(h.upstream_requests, [])
        [error] = self.flushLoggedErrors(TypeError)
        self.assertIn(expected, str(error.value))
        [peer] = h.gateway.registry.group("api").peers.values()
        self.assertEqual(peer.active, 0)
        return error

    def test_accessNotAResponse(self):
        """A direct ``access`` returning ``403``: a 500, as its walk answers
        a plain implementation's; nothing goes upstream."""
        error = self.assertBroken(["router", _Access(lambda ctx: 403), "least_conn"], ACCESS)
        # named, behind the router's rewrite walk: the plugin, not the walk
        self.assertIn("_Access.access returned 403", str(error.value))

    def test_accessAwaitable(self):
        """A direct ``access`` that is a coroutine broke its promise: a 500,
        never let through."""
        self.assertBroken(["router", _Access(_later), "least_conn"], ACCESS)
        self.flushWarnings()   # (the coroutine, never awaited)

    def test_balancerNotAPeer(self):
        """A direct ``balancer`` returning an address string: a 500 naming
        it, no count taken."""
        error = self.assertBroken(["router", _Balancer(lambda ctx: "127.0.0.1:9001")],
                                  BALANCER)
        self.assertIn("_Balancer.balancer returned '127.0.0.1:9001'", str(error.value))
