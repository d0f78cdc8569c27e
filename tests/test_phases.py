"""
Tests of the phases as a request meets them, through :mod:`tproxy.testing`
(a real gateway, in memory, on a fake clock): hooks that return plain
values, Deferreds or coroutines; ``access`` answering by itself; exceptions
in plugins becoming a 500; ``log`` exactly once however the request ended;
the order of plugins.
"""

import hashlib

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Response
from tproxy.http.headers import Headers
from tproxy.phase_walks import UNROLL
from tproxy.testing import Harness, echo
from tests.helpers import capture_log, log_messages, pattern_digest
from tests.upstreams import Scripted

HOOKS = "tests.proxy_plugins:Hooks"
FILTERS = "tests.proxy_plugins:Filters"
HEAD_FILTER = "tests.proxy_plugins:HeadFilter"
PLUGINS = ["router", HOOKS, "least_conn", FILTERS]

UP, OTHER = "127.0.0.1:9001", "127.0.0.1:9002"
REFUSED = "127.0.0.1:9009"         # no stub server: connections are refused

#: the delay of the asynchronous hooks, on the harness's clock
DELAY = 0.001


def deferred(fn):
    """``fn`` made asynchronous: it runs a moment later (on the gateway's
    clock), its result is the result of a Deferred."""
    def hook(ctx, *args):
        return deferLater(ctx.gateway.reactor, DELAY, fn, ctx, *args)
    return hook


def coroutine(fn):
    """``fn`` made an ``async def``: it runs after an ``await``."""
    async def hook(ctx, *args):
        await deferLater(ctx.gateway.reactor, DELAY, lambda: None)
        return fn(ctx, *args)
    return hook


def plain(fn):
    """``fn`` as it is."""
    return fn


class Boom(Exception):
    """What the failing hooks raise."""


def boom(*args):
    """A hook that raises :class:`Boom`."""
    raise Boom("a plugin failed")


class Pieces(Factory):
    """
    A stub upstream that answers a connection's first read with ``pieces``
    (bytes), one write per tick (2**-20 s) of the harness's clock: the proxy
    reads them one at a time.  :class:`PhaseTestCase` sets ``clock``.
    """

    clock = None

    def __init__(self, pieces):
        self.pieces = pieces

    def buildProtocol(self, addr):
        return _PiecesProtocol(self)


class _PiecesProtocol(Protocol):

    def __init__(self, factory):
        self.factory = factory
        self.left = None

    def dataReceived(self, data):
        if self.left is None:
            self.left = list(self.factory.pieces)
            self._write()

    def _write(self):
        if self.left and self.transport.connected:
            self.transport.write(self.left.pop(0))
            self.factory.clock.callLater(2 ** -20, self._write)


BLOCK = bytes(range(256)) * 256        # 64 KiB


def big_body(size):
    """``size`` bytes of a fixed pattern, in blocks of 64 KiB."""
    whole = BLOCK * (size // len(BLOCK) + 1)
    return [whole[i:min(i + len(BLOCK), size)] for i in range(0, size, len(BLOCK))]


def download(size):
    """A stub sending a ``size``-byte body in blocks, one per read."""
    return Pieces([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size]
                  + big_body(size))


def digest(size):
    """The sha256 of ``size`` bytes of the pattern (once per size)."""
    return pattern_digest(("phases", size), lambda: big_body(size))


class PhaseTestCase(SynchronousTestCase):
    """Builds harnesses and sends requests, moving the clock for async hooks."""

    #: the phase walks (straight-line or loops; None: this interpreter's)
    unroll = None

    def harness(self, upstreams=None, plugins=PLUGINS, servers=None):
        servers = servers if servers is not None else {UP: echo, OTHER: echo}
        h = Harness(config={"upstreams": upstreams or {"default": {"peers": [UP, OTHER]}}},
                    plugins=plugins, servers=servers)
        if self.unroll is not None:
            h.gateway.phases.unroll = self.unroll
            h.gateway.phases.refresh()
        for stub in servers.values():
            if isinstance(stub, Pieces):
                stub.clock = h.clock
        return h

    def get(self, h, uri, conn=None):
        """GET ``uri`` and wait (on the fake clock) for the response."""
        if conn is not None:
            conn.send_request("GET", uri)
            h.advance(1)
            return conn.responses[-1]
        pending = h.request("GET", uri, wait=False)
        h.advance(1)
        return pending.result()

    def peer(self, h, address, group="default"):
        host, port = address.split(":")
        return h.registry.group(group).peers[(host, int(port))]

    def active(self, h):
        """``{address: active}`` of every peer."""
        return {p.address: p.active for g in h.registry.groups() for p in g.peers.values()}

    def assertLoggedOnce(self, h, n=1):
        """``log`` ran ``n`` times, once per request (distinct contexts)."""
        self.assertEqual(len(h.contexts), n)
        self.assertEqual(len({id(ctx) for ctx in h.contexts}), n)


class HookStyleMixin(object):
    """The phase tests, run with each kind of hook result."""

    style = staticmethod(plain)

    def setup(self, servers=None):
        """A harness with two upstreams in ``default`` and the test plugins."""
        h = self.harness(servers=servers)
        self.hooks = h.plugin(HOOKS)
        self.filters = h.plugin(FILTERS)
        return h

    def test_everyPhase(self):
        """rewrite, access, balancer, header_filter and body_filter all take
        effect, in that order, and the request waits for each."""
        h = self.setup()
        order = []

        def rewrite(ctx):
            order.append("rewrite")
            ctx.upstream_path = "/rewritten"
            ctx.upstream_headers.append(("X-Rewritten", "1"))

        def access(ctx):
            order.append("access")

        def balancer(ctx, tried):
            order.append("balancer")
            return self.peer(h, OTHER)

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
        resp = self.get(h, "/original")
        self.assertEqual(resp.status, 201)
        self.assertEqual(resp.headers.get("X-Filtered"), "yes")
        self.assertIn(b'"URI": "/REWRITTEN"', resp.body)
        [received] = h.upstream_requests
        self.assertEqual((received.server, received.headers.get("X-Rewritten")), (OTHER, "1"))
        self.assertEqual(order, ["rewrite", "access", "balancer", "header_filter",
                                 "body_filter"])
        self.assertLoggedOnce(h)

    def test_bodyFilterOrder(self):
        """A 1 MiB body read in 16 pieces through a body filter keeps its
        bytes in order; a call per piece, the last one with ``eof``."""
        size = 1024 * 1024
        h = self.setup(servers={UP: download(size), OTHER: download(size)})
        self.filters.fns["body_filter"] = self.style(lambda ctx, chunk, eof: chunk)
        resp = self.get(h, "/big")
        self.assertEqual(hashlib.sha256(resp.body).hexdigest(), digest(size))
        self.assertEqual([eof for _, eof in self.filters.chunks][-1], True)
        self.assertEqual([eof for _, eof in self.filters.chunks].count(True), 1)
        self.assertGreaterEqual(len(self.filters.chunks), 16)
        self.assertEqual(sum(len(c) for c, _ in self.filters.chunks), size)

    def test_bodyFilterSmallResponse(self):
        """A response read at once (head, body and end) is one body_filter
        call: its whole body with ``eof``; one read in pieces is a call per
        piece, the last with ``eof`` (and whatever came with the end)."""
        h = self.setup()
        self.filters.fns["body_filter"] = self.style(lambda ctx, chunk, eof: chunk)
        resp = self.get(h, "/small")
        self.assertEqual(self.filters.chunks, [(resp.body, True)])

    def test_bodyFilterPieces(self):
        """... and a response read in pieces is a call per piece."""
        def pieces():
            return Pieces([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabc\r\n", b"3\r\ndef\r\n0\r\n\r\n"])
        h = self.setup(servers={UP: pieces(), OTHER: pieces()})
        self.filters.fns["body_filter"] = self.style(lambda ctx, chunk, eof: chunk)
        resp = self.get(h, "/pieces")
        self.assertEqual(resp.body, b"abcdef")
        self.assertEqual(self.filters.chunks, [(b"abc", False), (b"def", True)])

    def test_bodyFilterChangesLength(self):
        """A filter that changes the length, with Content-Length removed in
        header_filter: the response goes chunked."""
        h = self.setup()

        def header_filter(ctx, response):
            response.headers.remove("Content-Length")

        def body_filter(ctx, chunk, eof):
            return chunk + (b"\n-- the end" if eof else b"")
        self.filters.fns.update(header_filter=self.style(header_filter),
                                body_filter=self.style(body_filter))
        resp = self.get(h, "/x")
        self.assertEqual(resp.headers.get("Transfer-Encoding"), "chunked")
        self.assertTrue(resp.body.endswith(b"}\n-- the end"))

    def test_headerFilterRawInPlace(self):
        """A filter that renames Content-Length in place in ``headers.raw``
        (the list kept, its length unchanged): the framing follows the
        fields as the filter left them, chunked."""
        h = self.setup()

        def header_filter(ctx, response):
            raw = response.headers.raw
            for i, (name, value) in enumerate(raw):
                if name.lower() == b"content-length":
                    raw[i] = (b"X-Old-Length", value)

        self.filters.fns["header_filter"] = self.style(header_filter)
        resp = self.get(h, "/x")
        self.assertEqual(resp.headers.get("Transfer-Encoding"), "chunked")
        self.assertIsNone(resp.headers.get("Content-Length"))
        self.assertIsNotNone(resp.headers.get("X-Old-Length"))
        self.assertEqual(resp.json()["uri"], "/x")

    def test_headerFilterNewHeaders(self):
        """A filter that gives the head a new Headers object without
        Content-Length: the new fields are sent, and framed (chunked)."""
        h = self.harness(plugins=["router", "least_conn", HEAD_FILTER])

        def header_filter(ctx, response):
            response.headers = Headers([(b"X-New", b"1")])

        h.plugin(HEAD_FILTER).fns["header_filter"] = self.style(header_filter)
        resp = self.get(h, "/x")
        self.assertEqual(resp.headers.get("X-New"), "1")
        self.assertEqual(resp.headers.get("Transfer-Encoding"), "chunked")
        self.assertIsNone(resp.headers.get("Content-Length"))
        self.assertEqual(resp.json()["uri"], "/x")

    def test_headerFilterOnly(self):
        """A header_filter without any body_filter: the body (which may come
        in the same read as the head) follows the filtered head, whole."""
        size = 1024 * 1024
        big, small = "127.0.0.1:9003", "127.0.0.1:9004"
        h = self.harness({"big": {"peers": [big]}, "small": {"peers": [small]}},
                         plugins=["router", "least_conn", HEAD_FILTER],
                         servers={big: download(size), small: echo})
        h.plugin(HEAD_FILTER).fns["header_filter"] = self.style(
            lambda ctx, response: response.headers.set("X-Filtered", "1"))
        conn = h.connect()
        for uri in ("/small/x", "/big/x", "/small/y"):
            conn.send_request("GET", uri, flush=False)
        h.advance(1)
        resps = conn.responses
        self.assertEqual([r.headers.get("X-Filtered") for r in resps], ["1", "1", "1"])
        self.assertEqual(resps[0].json()["uri"], "/x")
        self.assertEqual(hashlib.sha256(resps[1].body).hexdigest(), digest(size))
        self.assertEqual(resps[2].json()["uri"], "/y")
        self.assertLoggedOnce(h, 3)

    def test_accessResponse(self):
        """access returns a Response: it is sent (through header_filter), no
        upstream is contacted, later access hooks do not run."""
        h = self.setup()
        self.hooks.fns["access"] = self.style(lambda ctx: Response(
            403, b"go away", {"X-Reason": "denied", "Content-Type": "text/plain"}))
        self.filters.fns["header_filter"] = self.style(
            lambda ctx, response: response.headers.set("X-Seen", "1"))
        resp = self.get(h, "/x")
        self.assertEqual((resp.status, resp.body), (403, b"go away"))
        self.assertEqual(resp.headers.get("X-Reason"), "denied")
        self.assertEqual(resp.headers.get("X-Seen"), "1")
        self.assertEqual(self.hooks.calls, ["rewrite", "access"])
        self.assertEqual(h.upstream_requests, [])
        self.assertEqual(h.contexts[0].status, 403)
        self.assertLoggedOnce(h)

    def test_balancerResponse(self):
        """balancer returns a Response: it is sent."""
        h = self.setup()
        self.hooks.fns["balancer"] = self.style(
            lambda ctx, tried: Response.error(429, "slow down"))
        resp = self.get(h, "/x")
        self.assertEqual((resp.status, resp.json()), (429, {"error": "slow down"}))
        self.assertEqual(h.upstream_requests, [])
        self.assertEqual(self.active(h), {UP: 0, OTHER: 0})

    def test_balancerRetry(self):
        """The balancer's choice refuses: it is asked again with that peer in
        ``tried``, and may leave the choice to least_conn."""
        h = self.harness({"default": {"peers": [REFUSED, UP]}}, servers={UP: echo})
        seen = []

        def balancer(ctx, tried):
            seen.append(tuple(p.address for p in tried))
            if not tried:
                return self.peer(h, REFUSED)
        h.plugin(HOOKS).fns["balancer"] = self.style(balancer)
        resp = self.get(h, "/x")
        self.assertEqual(resp.status, 200)
        self.assertEqual(seen, [(), (REFUSED,)])
        self.assertEqual(self.active(h), {REFUSED: 0, UP: 0})

    def assertPluginError(self, phase, args_fn=boom):
        """A ``phase`` hook raising: logged once as ``plugin_error``, the
        traceback logged, counts at 0, the proxy still serving; returns the
        client connection."""
        h = self.setup()
        plugin = self.filters if phase in ("header_filter", "body_filter") else self.hooks
        plugin.fns[phase] = self.style(args_fn)
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(1)
        self.assertTrue(conn.closed)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        [ctx] = h.contexts
        self.assertEqual(ctx.error, "plugin_error")
        self.assertEqual(self.active(h), {UP: 0, OTHER: 0})
        # the proxy serves on
        del plugin.fns[phase]
        self.assertEqual(self.get(h, "/y").status, 200)
        self.assertLoggedOnce(h, 2)
        return h, conn

    def assertPluginError500(self, phase):
        """The same, and the client got the 500 JSON response."""
        h, conn = self.assertPluginError(phase)
        [resp] = conn.responses
        self.assertEqual(resp.status, 500)
        self.assertEqual(resp.json(), {"error": "internal error in a plugin"})
        return h

    def test_notAResponse(self):
        """A rewrite or access hook returning neither None nor a Response
        (``403``, or an admin handler's ``(403, {}, b"no")``): a 500 and the
        TypeError naming the implementation logged, as for an exception;
        never let through to the upstream."""
        for phase in ("rewrite", "access"):
            for value in (403, (403, {}, b"no")):
                h = self.setup()
                self.hooks.fns[phase] = self.style(lambda ctx, value=value: value)
                conn = h.connect()
                conn.send_request("GET", "/x")
                h.advance(1)
                [resp] = conn.responses
                self.assertEqual(resp.status, 500, (phase, value))
                self.assertEqual(h.upstream_requests, [])
                [error] = self.flushLoggedErrors(TypeError)
                self.assertIn("returned {!r}: a rewrite or access implementation returns "
                              "None, a tproxy.Response, or an awaitable of one".format(value),
                              str(error.value))
                self.assertEqual(h.contexts[0].error, "plugin_error")

    def test_balancerNotAPeer(self):
        """A balancer returning something else than a Peer, None or a
        Response (an address string, a tuple): a 500 and the TypeError naming
        the implementation logged (it was a 400 "malformed request"), the
        peers' counts untouched."""
        for value in ("127.0.0.1:9001", ("127.0.0.1", 9001)):
            h = self.setup()
            self.hooks.fns["balancer"] = self.style(lambda ctx, tried, value=value: value)
            conn = h.connect()
            conn.send_request("GET", "/x")
            h.advance(1)
            [resp] = conn.responses
            self.assertEqual(resp.status, 500, value)
            [error] = self.flushLoggedErrors(TypeError)
            self.assertIn("returned {!r}: a balancer implementation returns a tproxy.Peer"
                          .format(value), str(error.value))
            self.assertEqual(self.active(h), {UP: 0, OTHER: 0})

    def test_rewriteRaises(self):
        """An exception in rewrite: 500 JSON, traceback logged, log once."""
        self.assertPluginError500("rewrite")

    def test_accessRaises(self):
        """The same in access."""
        self.assertPluginError500("access")

    def test_balancerRaises(self):
        """The same in balancer."""
        self.assertPluginError500("balancer")

    def test_headerFilterRaises(self):
        """The same in header_filter: the upstream was contacted, and its
        connection and count are released."""
        h = self.assertPluginError500("header_filter")
        self.assertEqual(len(h.upstream_requests), 2)

    def test_bodyFilterRaises(self):
        """In body_filter, on the body read with the head: a hook raising at
        once finds the head not left yet, and the client gets the 500 (not
        a connection closed without a byte); an awaited one raises once the
        head went to the client, and the response is cut."""
        if self.style is plain:
            self.assertPluginError500("body_filter")
            return
        h, conn = self.assertPluginError("body_filter")
        self.assertEqual(conn.responses, [])
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK\r\n"), conn.received)

    def test_bodyFilterRaisesLater(self):
        """In body_filter, on a body read after the head went to the
        client: the response is cut."""
        pieces = Pieces([b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", b"body"])
        h = self.setup(servers={UP: pieces, OTHER: pieces})
        self.filters.fns["body_filter"] = self.style(boom)
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(1)
        self.assertTrue(conn.closed)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertEqual(conn.responses, [])
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK\r\n"), conn.received)
        self.assertEqual(h.contexts[0].error, "plugin_error")

    def test_logRaises(self):
        """An exception in a log hook is logged; the other log hooks run."""
        h = self.harness({"default": {"peers": [UP]}},
                         plugins=["router", "least_conn", "tests.proxy_plugins:BadLog"])
        self.assertEqual(self.get(h, "/x").status, 200)
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertLoggedOnce(h)


class PlainHookTests(HookStyleMixin, PhaseTestCase):
    """Hooks returning plain values."""


class DeferredHookTests(HookStyleMixin, PhaseTestCase):
    """Hooks returning Deferreds that fire later."""

    style = staticmethod(deferred)


class CoroutineHookTests(HookStyleMixin, PhaseTestCase):
    """Hooks that are coroutines (``async def``)."""

    style = staticmethod(coroutine)


class OtherWalkPlainHookTests(PlainHookTests):
    """:class:`PlainHookTests` with the other phase walks than this
    interpreter's (loops on CPython, straight-line code on PyPy)."""

    unroll = not UNROLL


class OtherWalkDeferredHookTests(DeferredHookTests):
    """:class:`DeferredHookTests` with the other phase walks."""

    unroll = not UNROLL


class OtherWalkCoroutineHookTests(CoroutineHookTests):
    """:class:`CoroutineHookTests` with the other phase walks."""

    unroll = not UNROLL


class LogOnceTests(PhaseTestCase):
    """``log`` runs exactly once per request, however it ended."""

    def test_everyEnding(self):
        """Success, upstream error, client abort, access denial, plugin
        exception: one ``log`` each, with the right status and error."""
        slow = "127.0.0.1:9005"
        h = self.harness({"ok": {"peers": [UP]}, "refused": {"peers": [REFUSED]},
                          "slow": {"peers": [slow]}},
                         servers={UP: echo, slow: lambda request: Deferred()})

        def access(ctx):
            if ctx.request.path == "/ok/deny":
                return Response.error(401, "no")
            if ctx.request.path == "/ok/raise":
                raise Boom("oops")
        h.plugin(HOOKS).fns["access"] = access
        for uri in ("/ok/x", "/refused/x", "/ok/deny", "/ok/raise"):
            h.request("GET", uri)
        conn = h.connect()
        conn.send_request("GET", "/slow/x")
        conn.abort()
        self.assertEqual(len(self.flushLoggedErrors(Boom)), 1)
        self.assertLoggedOnce(h, 5)
        self.assertEqual([(c.status, c.error) for c in h.contexts], [
            (200, None), (502, "upstream_connect"), (401, None),
            (500, "plugin_error"), (499, "client_abort")])


class OrderTests(PhaseTestCase):
    """Config order is execution order."""

    def test_configOrder(self):
        """The first-listed plugin's hook runs first; a Response from access
        stops the later access hooks; a Deferred in between keeps the order."""
        h = self.harness({"default": {"peers": [UP]}},
                         plugins=["router", HOOKS, HOOKS, "least_conn"])
        first, second = h.plugin(HOOKS), h.plugin(HOOKS, 2)
        seen = []
        first.fns["rewrite"] = deferred(lambda ctx: seen.append("first"))
        second.fns["rewrite"] = lambda ctx: seen.append("second")
        first.fns["access"] = coroutine(lambda ctx: Response(204))
        self.assertEqual(self.get(h, "/x").status, 204)
        self.assertEqual(seen, ["first", "second"])
        self.assertEqual(second.calls, ["rewrite"])


class FilterDeadlineTests(PhaseTestCase):
    """
    An awaited ``header_filter`` or ``body_filter`` has ``timeouts.read``
    seconds to answer (the upstream is not read meanwhile): past it, the
    request fails as the plugin's (``500``, or the response cut), with an
    error line naming the phase and the plugin; the upstream's own deadline
    counts only the time it is read.
    """

    READ = 5

    def setUp(self):
        self.events = capture_log(self)

    def filtered(self, upstream, **fns):
        h = Harness(config={"upstreams": {"default": {"peers": [UP]}},
                            "timeouts": {"read": self.READ}},
                    plugins=["router", "least_conn", FILTERS], servers={UP: upstream})
        if self.unroll is not None:
            h.gateway.phases.unroll = self.unroll
            h.gateway.phases.refresh()
        if isinstance(upstream, Pieces):
            upstream.clock = h.clock
        h.plugin(FILTERS).fns.update(fns)
        return h

    def lines(self):
        return log_messages(self.events, "tproxy.http.exchange")

    def test_headerFilter(self):
        """A header_filter that does not answer: 500 after timeouts.read,
        whether the upstream's response is whole or not; the filter's
        Deferred is cancelled; the peer is not blamed."""
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        for pieces in ([head + b"0123456789"], [head, b"01234"]):
            cancelled = []

            def header_filter(ctx, response):
                return Deferred(canceller=cancelled.append)
            h = self.filtered(Pieces(pieces), header_filter=header_filter)
            conn = h.connect()
            conn.send_request("GET", "/x")
            h.advance(self.READ - 0.5)
            self.assertEqual(conn.received, b"")
            h.advance(1)
            [response] = conn.responses
            self.assertEqual((response.status, response.json()),
                             (500, {"error": "internal error in a plugin"}))
            self.assertTrue(conn.closed)
            self.assertEqual([(c.status, c.error) for c in h.contexts], [(500, "plugin_timeout")])
            self.assertEqual(len(cancelled), 1)
            self.assertIsNone(self.peer(h, UP).health)
        self.assertEqual(self.lines(), [
            "header_filter of plugin %s did not answer within %d s (timeouts.read): GET /x"
            % (FILTERS, self.READ)] * 2)

    def test_bodyFilter(self):
        """A body_filter that does not answer once the response started: the
        response is cut (its status stays); the line names the phase."""
        h = self.filtered(Pieces([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234",
                                  b"56789"]),
                          body_filter=lambda ctx, chunk, eof: Deferred())
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(self.READ + 1)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(conn.closed)
        self.assertEqual([(c.status, c.error) for c in h.contexts], [(200, "plugin_timeout")])
        self.assertEqual(self.lines(), [
            "body_filter of plugin %s did not answer within %d s (timeouts.read): GET /x"
            % (FILTERS, self.READ)])

    def test_localResponse(self):
        """A response tproxy makes (a 503 here) waits for an async
        body_filter for at most timeouts.read seconds too."""
        h = Harness(config={"upstreams": {"default": {"peers": []}},
                            "timeouts": {"read": self.READ}},
                    plugins=["router", "least_conn", FILTERS])
        h.plugin(FILTERS).fns["body_filter"] = lambda ctx, chunk, eof: Deferred()
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(self.READ + 1)
        self.assertEqual([r.status for r in conn.responses], [500])
        self.assertEqual([(c.status, c.error) for c in h.contexts], [(500, "plugin_timeout")])

    def test_slowFilterThenSlowUpstream(self):
        """A filter answering within the deadline, then an upstream silent
        for less than timeouts.read from then on: served whole (the time
        the upstream was not read is not counted against it)."""
        late = self.READ - 1

        def header_filter(ctx, response):
            return deferLater(ctx.gateway.reactor, late, lambda: None)
        up = Scripted(answer=lambda request: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
        h = self.filtered(up, header_filter=header_filter)
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(late + 0.5)
        self.assertTrue(conn.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        h.advance(late)       # (the upstream: silent since the head, late * 2 + 0.5 s)
        self.assertFalse(conn.closed)
        self.assertEqual(h.contexts, [])
        h.advance(self.READ)  # and now past timeouts.read since the filter answered
        self.assertEqual([(c.status, c.error) for c in h.contexts], [(200, "upstream_timeout")])
        self.assertEqual(self.lines(), [])


class OtherWalkFilterDeadlineTests(FilterDeadlineTests):
    """:class:`FilterDeadlineTests` with the other phase walks."""

    unroll = not UNROLL
