"""
End-to-end tests of the phases as a request meets them: hooks that return
plain values, Deferreds or coroutines; ``access`` answering by itself;
exceptions in plugins becoming a 500; ``log`` exactly once however the
request ended; the order of plugins.
"""

import hashlib

from twisted.internet.defer import Deferred

from tproxy import Response
from tests.helpers import (BodySource, ProxyTestCase, download, request, sleep,
                           until)

HOOKS = "tests.proxy_plugins:Hooks"
FILTERS = "tests.proxy_plugins:Filters"
HEAD_FILTER = "tests.proxy_plugins:HeadFilter"
PLUGINS = ["router", HOOKS, "least_conn", FILTERS]


def deferred(fn):
    """``fn`` made asynchronous: it runs a moment later, its result is the
    result of a Deferred."""
    def hook(*args):
        d = sleep(0.002)
        d.addCallback(lambda _: fn(*args))
        return d
    return hook


def coroutine(fn):
    """``fn`` made an ``async def``: it runs after an ``await``."""
    async def hook(*args):
        await sleep(0.002)
        return fn(*args)
    return hook


def plain(fn):
    """``fn`` as it is."""
    return fn


class Boom(Exception):
    """What the failing hooks raise."""


def boom(*args):
    """A hook that raises :class:`Boom`."""
    raise Boom("a plugin failed")


class HookStyleMixin(object):
    """The phase tests, run with each kind of hook result."""

    style = staticmethod(plain)

    async def setup_proxy(self, **kw):
        """A proxy with two upstreams in ``default`` and the test plugins."""
        self.up = self.upstream(**kw)
        self.other = self.upstream()
        proxy = await self.proxy({"default": [self.up, self.other]}, plugins=PLUGINS)
        self.hooks = proxy.plugin(HOOKS)
        self.filters = proxy.plugin(FILTERS)
        return proxy

    async def test_everyPhase(self):
        """rewrite, access, balancer, header_filter and body_filter all take
        effect, in that order, and the request waits for each."""
        proxy = await self.setup_proxy()
        order = []

        def rewrite(ctx):
            order.append("rewrite")
            ctx.upstream_path = "/rewritten"
            ctx.upstream_headers.append(("X-Rewritten", "1"))

        def access(ctx):
            order.append("access")

        def balancer(ctx, tried):
            order.append("balancer")
            return proxy.peer(self.other)

        def header_filter(ctx, response):
            order.append("header_filter")
            response.status = 201
            response.headers.set("X-Filtered", "yes")

        def body_filter(ctx, chunk, eof):
            order.append("body_filter")
            return chunk.upper()

        s = self.style
        self.hooks.fns.update(rewrite=s(rewrite), access=s(access), balancer=s(balancer))
        self.filters.fns.update(header_filter=s(header_filter), body_filter=s(body_filter))
        resp = await self.exchange(proxy, request("GET", "/original"))
        # with Content-Length the client has it all before the last
        # body_filter call (eof) returns
        await until(lambda: proxy.logged)
        self.assertEqual(resp.status, 201)
        self.assertEqual(resp.header("X-Filtered"), "yes")
        self.assertIn(b'"URI": "/REWRITTEN"', resp.body)
        self.assertEqual(self.up.requests, [])
        self.assertEqual(self.other.requests[0].header("X-Rewritten"), "1")
        self.assertEqual(order[:4], ["rewrite", "access", "balancer", "header_filter"])
        self.assertEqual(set(order[4:]), {"body_filter"})
        self.assertLoggedOnce(proxy)

    async def test_bodyFilterOrder(self):
        """A 1 MiB body through a body filter keeps its bytes in order; the
        last call has ``eof``."""
        size = 1024 * 1024
        proxy = await self.setup_proxy(handler=download(size))
        self.filters.fns["body_filter"] = self.style(lambda ctx, chunk, eof: chunk)
        resp = await self.exchange(proxy, request("GET", "/big"))
        self.assertEqual(hashlib.sha256(resp.body).hexdigest(), BodySource.digest(size))
        self.assertEqual([eof for _, eof in self.filters.chunks][-1], True)
        self.assertEqual(sum(len(c) for c, _ in self.filters.chunks), size)

    async def test_bodyFilterSmallResponse(self):
        """A response read at once (head, body and end) is one body_filter
        call: its whole body with ``eof``; one read in pieces is a call per
        piece, the last with ``eof`` (and whatever came with the end)."""
        proxy = await self.setup_proxy()
        self.filters.fns["body_filter"] = self.style(lambda ctx, chunk, eof: chunk)
        resp = await self.exchange(proxy, request("GET", "/small"))
        await until(lambda: proxy.logged)
        self.assertEqual(self.filters.chunks, [(resp.body, True)])

        def pieces(conn, req):
            conn.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"3\r\nabc\r\n")
            conn.later(0.05, conn.transport.write, b"3\r\ndef\r\n0\r\n\r\n")
        self.up.handler = self.other.handler = pieces
        self.filters.chunks[:] = []
        resp = await self.exchange(proxy, request("GET", "/pieces"))
        self.assertEqual(resp.body, b"abcdef")
        await until(lambda: len(proxy.logged) == 2)
        self.assertEqual(self.filters.chunks, [(b"abc", False), (b"def", True)])

    async def test_bodyFilterChangesLength(self):
        """A filter that changes the length, with Content-Length removed in
        header_filter: the response goes chunked."""
        proxy = await self.setup_proxy()

        def header_filter(ctx, response):
            response.headers.remove("Content-Length")

        def body_filter(ctx, chunk, eof):
            return chunk + (b"\n-- the end" if eof else b"")
        self.filters.fns.update(header_filter=self.style(header_filter),
                                body_filter=self.style(body_filter))
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.header("Transfer-Encoding"), "chunked")
        self.assertTrue(resp.body.endswith(b"}\n-- the end"))

    async def test_headerFilterOnly(self):
        """A header_filter without any body_filter: the body (which may come
        in the same read as the head) follows the filtered head, whole."""
        size = 1024 * 1024
        up = self.upstream(download(size))
        small = self.upstream()
        proxy = await self.proxy({"big": [up], "small": [small]},
                                 plugins=["router", "least_conn", HEAD_FILTER])
        proxy.plugin(HEAD_FILTER).fns["header_filter"] = self.style(
            lambda ctx, response: response.headers.set("X-Filtered", "1"))
        client = await self.connect(proxy)
        client.send(request("GET", "/small/x") + request("GET", "/big/x")
                    + request("GET", "/small/y"))
        resps = await client.wait_responses(3)
        self.assertEqual([r.header("X-Filtered") for r in resps], ["1", "1", "1"])
        self.assertEqual(resps[0].json()["uri"], "/x")
        self.assertEqual(hashlib.sha256(resps[1].body).hexdigest(), BodySource.digest(size))
        self.assertEqual(resps[2].json()["uri"], "/y")
        self.assertLoggedOnce(proxy, 3)

    async def test_accessResponse(self):
        """access returns a Response: it is sent (through header_filter), no
        upstream is contacted, later access hooks do not run."""
        proxy = await self.setup_proxy()
        self.hooks.fns["access"] = self.style(lambda ctx: Response(
            403, b"go away", {"X-Reason": "denied", "Content-Type": "text/plain"}))
        self.filters.fns["header_filter"] = self.style(
            lambda ctx, response: response.headers.set("X-Seen", "1"))
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual((resp.status, resp.body), (403, b"go away"))
        self.assertEqual(resp.header("X-Reason"), "denied")
        self.assertEqual(resp.header("X-Seen"), "1")
        self.assertEqual(self.hooks.calls, ["rewrite", "access"])
        self.assertEqual((self.up.connections, self.other.connections), ([], []))
        self.assertEqual(proxy.logged[0].status, 403)
        self.assertLoggedOnce(proxy)

    async def test_balancerResponse(self):
        """balancer returns a Response: it is sent."""
        proxy = await self.setup_proxy()
        self.hooks.fns["balancer"] = self.style(
            lambda ctx, tried: Response.error(429, "slow down"))
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual((resp.status, resp.json()), (429, {"error": "slow down"}))
        self.assertEqual(self.up.connections, [])
        self.assertEqual(proxy.active(), {self.up.port: 0, self.other.port: 0})

    async def test_balancerRetry(self):
        """The balancer's choice refuses: it is asked again with that peer in
        ``tried``, and may leave the choice to least_conn."""
        refused = self.closed_port()
        up = self.upstream()
        proxy = await self.proxy({"default": ["127.0.0.1:%d" % refused, up]},
                                 plugins=PLUGINS)
        seen = []

        def balancer(ctx, tried):
            seen.append(tuple(p.port for p in tried))
            if not tried:
                return [p for p in proxy.peers() if p.port == refused][0]
        proxy.plugin(HOOKS).fns["balancer"] = self.style(balancer)
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 200)
        self.assertEqual(seen, [(), (refused,)])
        self.assertEqual(proxy.active(), {refused: 0, up.port: 0})

    async def assertPluginError(self, phase, args_fn=boom):
        """A ``phase`` hook raising: logged once as ``plugin_error``, the
        traceback logged, counts at 0, the proxy still serving."""
        proxy = await self.setup_proxy()
        plugin = self.filters if phase in ("header_filter", "body_filter") else self.hooks
        plugin.fns[phase] = self.style(args_fn)
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await until(lambda: proxy.logged)
        await client.wait_closed()
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        ctx, = proxy.logged
        self.assertEqual(ctx.error, "plugin_error")
        self.assertEqual(proxy.active(), {self.up.port: 0, self.other.port: 0})
        # the proxy serves on
        del plugin.fns[phase]
        resp = await self.exchange(proxy, request("GET", "/y"))
        self.assertEqual(resp.status, 200)
        self.assertLoggedOnce(proxy, 2)
        return client

    async def assertPluginError500(self, phase):
        """The same, and the client got the 500 JSON response."""
        client = await self.assertPluginError(phase)
        resp, = client.responses()
        self.assertEqual(resp.status, 500)
        self.assertEqual(resp.json(), {"error": "internal error in a plugin"})

    def test_rewriteRaises(self):
        """An exception in rewrite: 500 JSON, traceback logged, log once."""
        return self.assertPluginError500("rewrite")

    def test_accessRaises(self):
        """The same in access."""
        return self.assertPluginError500("access")

    def test_balancerRaises(self):
        """The same in balancer."""
        return self.assertPluginError500("balancer")

    async def test_headerFilterRaises(self):
        """The same in header_filter: the upstream was contacted, and its
        connection and count are released."""
        await self.assertPluginError500("header_filter")
        self.assertEqual(len(self.up.requests) + len(self.other.requests), 2)

    async def test_bodyFilterRaises(self):
        """In body_filter, after the head was sent: the response is cut."""
        client = await self.assertPluginError("body_filter")
        # the head may still have been in the transport's buffer when the
        # connection was aborted: all the client may see is a cut response
        self.assertTrue(b"HTTP/1.1 200 OK\r\n".startswith(bytes(client.data[:17])))
        self.assertEqual(client.finals(), [])

    async def test_logRaises(self):
        """An exception in a log hook is logged; the other log hooks run."""
        proxy = await self.proxy({"default": [self.upstream()]},
                                 plugins=["router", "least_conn", "tests.proxy_plugins:BadLog"])
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 200)
        await until(lambda: proxy.logged)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertLoggedOnce(proxy)


class PlainHookTests(HookStyleMixin, ProxyTestCase):
    """Hooks returning plain values."""


class DeferredHookTests(HookStyleMixin, ProxyTestCase):
    """Hooks returning Deferreds that fire later."""

    style = staticmethod(deferred)


class CoroutineHookTests(HookStyleMixin, ProxyTestCase):
    """Hooks that are coroutines (``async def``)."""

    style = staticmethod(coroutine)


class LogOnceTests(ProxyTestCase):
    """``log`` runs exactly once per request, however it ended."""

    async def test_everyEnding(self):
        """Success, upstream error, client abort, access denial, plugin
        exception: one ``log`` each, with the right status and error."""
        up = self.upstream()
        slow = self.upstream(lambda conn, req: None)
        refused = self.closed_port()
        proxy = await self.proxy({"ok": [up], "refused": ["127.0.0.1:%d" % refused],
                                  "slow": [slow]}, plugins=PLUGINS)
        hooks = proxy.plugin(HOOKS)

        def access(ctx):
            if ctx.request.path == "/ok/deny":
                return Response.error(401, "no")
            if ctx.request.path == "/ok/raise":
                raise Boom("oops")
        hooks.fns["access"] = access
        await self.exchange(proxy, request("GET", "/ok/x"))
        await self.exchange(proxy, request("GET", "/refused/x"))
        await self.exchange(proxy, request("GET", "/ok/deny"))
        await self.exchange(proxy, request("GET", "/ok/raise"))
        client = await self.connect(proxy)
        client.send(request("GET", "/slow/x"))
        await until(lambda: slow.requests)
        client.transport.abortConnection()
        await until(lambda: len(proxy.logged) == 5)
        await sleep(0.05)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertLoggedOnce(proxy, 5)
        self.assertEqual([(c.status, c.error) for c in proxy.logged], [
            (200, None), (502, "upstream_connect"), (401, None),
            (500, "plugin_error"), (499, "client_abort")])


class OrderTests(ProxyTestCase):
    """Config order is execution order."""

    async def test_configOrder(self):
        """The first-listed plugin's hook runs first; a Response from access
        stops the later access hooks; a Deferred in between keeps the order."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]},
                                 plugins=["router", HOOKS, HOOKS, "least_conn"])
        first, second = proxy.plugin(HOOKS), proxy.plugin(HOOKS + "#2")
        seen = []
        first.fns["rewrite"] = deferred(lambda ctx: seen.append("first"))
        second.fns["rewrite"] = lambda ctx: seen.append("second")
        first.fns["access"] = coroutine(lambda ctx: Response(204))
        resp = await self.exchange(proxy, request("GET", "/x"))
        self.assertEqual(resp.status, 204)
        self.assertEqual(seen, ["first", "second"])
        self.assertEqual(second.calls, ["rewrite"])

    async def test_waitsForPendingDeferred(self):
        """A request waits as long as an access hook's Deferred is pending."""
        up = self.upstream()
        proxy = await self.proxy({"default": [up]}, plugins=PLUGINS)
        pending = Deferred()
        proxy.plugin(HOOKS).fns["access"] = lambda ctx: pending
        client = await self.connect(proxy)
        client.send(request("GET", "/x"))
        await sleep(0.1)
        self.assertEqual((client.data, up.connections), (bytearray(), []))
        pending.callback(None)
        resp, = await client.wait_responses(1)
        self.assertEqual(resp.status, 200)
