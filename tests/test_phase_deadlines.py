"""
The deadline of an awaited ``rewrite``, ``access`` or ``balancer`` (the
filters': :class:`tests.test_phases.FilterDeadlineTests`): a walk's Deferred
has ``timeouts.read`` seconds to fire, past which the request fails as the
plugin's (``500``, ``ctx.error`` ``"plugin_timeout"``, an error line naming
the phase and the plugin); and an awaited phase or filter is cancelled when
the request ends first (the client gone, a shutdown); a stream's ``stream_access`` and ``balancer`` alike,
within its ``timeouts.idle``.  Through :mod:`tproxy.testing`, on its fake
clock.
"""

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import capture_log, log_messages
from tests.test_phases import FILTERS, HOOKS, UP, PhaseTestCase, Pieces
from tests.test_shutdown import Drain
from tests.test_stream import RECORDER, recorded_harness
from tproxy.phase_walks import UNROLL
from tproxy.testing import Harness, echo

READ = 5


class Pending(object):
    """A hook's answer that never fires by itself: ``made`` the Deferreds
    it gave, ``cancelled`` those whose plugin was told to stop."""

    def __init__(self):
        self.made = []
        self.cancelled = []

    def __call__(self, *args):
        d = Deferred(canceller=self.cancelled.append)
        self.made.append(d)
        return d


class PhaseDeadlineTests(PhaseTestCase):
    """``rewrite``, ``access`` and ``balancer`` awaited for at most
    ``timeouts.read`` seconds."""

    def setUp(self):
        self.events = capture_log(self)

    def deadline_harness(self, plugins=("router", HOOKS, "least_conn"), servers=None):
        h = Harness(config={"upstreams": {"default": {"peers": [UP]}},
                            "timeouts": {"read": READ}},
                    plugins=list(plugins), servers=servers or {UP: echo})
        if self.unroll is not None:
            h.gateway.phases.unroll = self.unroll
            h.gateway.phases.refresh()
        for stub in (servers or {}).values():
            if isinstance(stub, Pieces):
                stub.clock = h.clock
        return h

    def lines(self):
        return log_messages(self.events, "tproxy.http.exchange")

    def test_neverAnswers(self):
        """A rewrite, access or balancer Deferred that never fires: nothing
        before timeouts.read; then 500, plugin_timeout, the Deferred
        cancelled, log once, the line naming the phase and the plugin; no
        upstream request, no peer held."""
        for phase in ("rewrite", "access", "balancer"):
            h = self.deadline_harness()
            pending = h.plugin(HOOKS).fns[phase] = Pending()
            conn = h.connect()
            conn.send_request("GET", "/x")
            h.advance(READ - 0.5)
            self.assertEqual((conn.received, pending.cancelled), (b"", []), phase)
            h.advance(1)
            [response] = conn.responses
            self.assertEqual((response.status, response.json()),
                             (500, {"error": "internal error in a plugin"}), phase)
            self.assertTrue(conn.closed, phase)
            self.assertEqual([(c.status, c.error) for c in h.contexts],
                             [(500, "plugin_timeout")], phase)
            self.assertEqual(pending.cancelled, pending.made, phase)
            self.assertEqual(len(pending.made), 1, phase)
            self.assertEqual(h.upstream_requests, [], phase)
            self.assertEqual(self.active(h), {UP: 0}, phase)
            self.assertEqual(h.factory.open_connections, 0, phase)
            h.advance(3600)
            self.assertEqual(len(h.contexts), 1, phase)
        self.assertEqual(self.lines(), [
            "%s of plugin %s did not answer within %d s (timeouts.read): GET /x"
            % (phase, HOOKS, READ) for phase in ("rewrite", "access", "balancer")])

    def test_answersInTime(self):
        """A phase answering a moment before the deadline: the request goes
        on (the deadline is off: no line, the response whole)."""
        for phase in ("rewrite", "access", "balancer"):
            h = self.deadline_harness()

            def late(ctx, *args, phase=phase):
                peer = self.peer(h, UP) if phase == "balancer" else None
                return deferLater(ctx.gateway.reactor, READ - 0.5, lambda: peer)
            h.plugin(HOOKS).fns[phase] = late
            conn = h.connect()
            conn.send_request("GET", "/x")
            h.advance(READ + 60)
            self.assertEqual([r.status for r in conn.responses], [200], phase)
            self.assertEqual([(c.status, c.error) for c in h.contexts], [(200, None)], phase)
        self.assertEqual(self.lines(), [])

    def test_deadlinePerWalk(self):
        """rewrite then access answering late, each within timeouts.read but
        not together: the walk has the deadline; the line names the phase
        awaited then (access). A balancer asked again after a failed peer
        has a deadline of its own."""
        h = self.deadline_harness()
        hooks = h.plugin(HOOKS)
        hooks.fns["rewrite"] = lambda ctx: deferLater(ctx.gateway.reactor, READ - 1,
                                                       lambda: None)
        hooks.fns["access"] = Pending()
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(READ + 0.5)
        self.assertEqual([r.status for r in conn.responses], [500])
        self.assertEqual(self.lines(), [
            "access of plugin %s did not answer within %d s (timeouts.read): GET /x"
            % (HOOKS, READ)])

    def test_clientGoneWhileAwaited(self):
        """The client goes away while rewrite, access or balancer is
        awaited: the Deferred is cancelled, log runs once (499), no line;
        a plugin that answers anyway (a Deferred without canceller) changes
        nothing: no peer acquired, no upstream request."""
        for phase in ("rewrite", "access", "balancer"):
            for canceller in (True, False):
                h = self.deadline_harness()
                made, seen = [], []

                def hook(*args):
                    # (without a canceller: the plugin sees a CancelledError)
                    made.append(Deferred())
                    return made[-1].addErrback(lambda f: seen.append(f.type))
                if canceller:
                    pending = h.plugin(HOOKS).fns[phase] = Pending()
                else:
                    h.plugin(HOOKS).fns[phase] = hook
                conn = h.connect()
                conn.send_request("GET", "/x")
                h.advance(1)
                conn.abort()
                self.assertEqual([(c.status, c.error) for c in h.contexts],
                                 [(499, "client_abort")], phase)
                if canceller:
                    self.assertEqual(pending.cancelled, pending.made, phase)
                else:
                    self.assertEqual(seen, [CancelledError], phase)
                    made[0].callback(self.peer(h, UP) if phase == "balancer" else None)
                h.advance(READ * 2)
                self.assertEqual(len(h.contexts), 1, phase)
                self.assertEqual(h.upstream_requests, [], phase)
                self.assertEqual(self.active(h), {UP: 0}, phase)
                self.assertEqual(h.factory.open_connections, 0, phase)
        self.assertEqual(self.lines(), [])

    def test_shutdown(self):
        """A stop whose shutdown_timeout passes while access is awaited:
        the request is cut (503, shutdown), the Deferred cancelled."""
        h = Harness(config={"upstreams": {"default": {"peers": [UP]}},
                            "timeouts": {"read": READ}, "shutdown_timeout": 1},
                    plugins=["router", HOOKS, "least_conn"], servers={UP: echo})
        pending = h.plugin(HOOKS).fns["access"] = Pending()
        drain = Drain(self, h)
        conn = h.connect()
        conn.send_request("GET", "/x")
        drain.stop()
        h.advance(1.5)
        self.assertEqual((drain.stopped, conn.closed), ([True], True))
        self.assertEqual([(c.status, c.error) for c in h.contexts], [(503, "shutdown")])
        self.assertEqual((len(pending.made), pending.cancelled), (1, pending.made))
        self.assertEqual(self.lines(), [])

    def test_retryAwaitedBalancer(self):
        """A balancer asked again after a failed peer, the client gone
        meanwhile: the failed peer's count was released, the Deferred
        cancelled."""
        refused = "127.0.0.1:9009"
        h = Harness(config={"upstreams": {"default": {"peers": [refused, UP]}},
                            "timeouts": {"read": READ}},
                    plugins=["router", HOOKS, "least_conn"], servers={UP: echo})
        pending = Pending()
        asked = []

        def balancer(ctx, tried):
            asked.append(tried)
            if not tried:
                return self.peer(h, refused)
            return pending()
        h.plugin(HOOKS).fns["balancer"] = balancer
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(1)
        self.assertEqual(len(asked), 2)
        self.assertEqual(self.active(h), {refused: 0, UP: 0})
        conn.abort()
        self.assertEqual(pending.cancelled, pending.made)
        self.assertEqual([(c.status, c.error) for c in h.contexts], [(499, "client_abort")])

    def test_clientGoneWhileFilterAwaited(self):
        """The client goes away while a header_filter or body_filter is
        awaited: its Deferred is cancelled, the upstream connection closed,
        the peer released, log once."""
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
        for phase in ("header_filter", "body_filter"):
            h = self.deadline_harness(plugins=("router", "least_conn", FILTERS),
                                      servers={UP: Pieces([head, b"01234"])})
            pending = h.plugin(FILTERS).fns[phase] = Pending()
            conn = h.connect()
            conn.send_request("GET", "/x")
            h.advance(1)
            self.assertEqual(len(pending.made), 1, phase)
            self.assertEqual(self.active(h), {UP: 1}, phase)
            conn.abort()
            self.assertEqual(pending.cancelled, pending.made, phase)
            self.assertEqual(self.active(h), {UP: 0}, phase)
            self.assertEqual([(c.status, c.error) for c in h.contexts],
                             [(200, "client_abort")], phase)
            h.advance(READ * 2)
            self.assertEqual(len(h.contexts), 1, phase)
        self.assertEqual(self.lines(), [])

    def test_coroutine(self):
        """An ``async def`` access that never answers: its coroutine gets
        the cancellation (CancelledError at its await)."""
        h = self.deadline_harness()
        seen = []

        async def access(ctx):
            try:
                await Deferred()
            except CancelledError:
                seen.append("cancelled")
                raise
        h.plugin(HOOKS).fns["access"] = access
        conn = h.connect()
        conn.send_request("GET", "/x")
        h.advance(READ + 1)
        self.assertEqual([r.status for r in conn.responses], [500])
        self.assertEqual(seen, ["cancelled"])


class OtherWalkPhaseDeadlineTests(PhaseDeadlineTests):
    """:class:`PhaseDeadlineTests` with the other phase walks."""

    unroll = not UNROLL


class StreamDeadlineTests(SynchronousTestCase):
    """A stream connection waits for an awaited ``stream_access`` or
    ``balancer`` for at most its ``timeouts.idle``, and cancels it when it
    ends first."""

    IDLE = 5

    def setUp(self):
        self.events = capture_log(self)

    def stream(self, phase):
        h = recorded_harness(plugins=(HOOKS, "least_conn"), timeouts={"idle": self.IDLE})
        pending = Pending()
        if phase == "stream_access":
            h.recorder.fns["access"] = pending
        else:
            h.plugin(HOOKS).fns["balancer"] = pending
        return h, pending

    def active(self, h):
        return [p.active for p in h.registry.group("db").peers.values()]

    def test_neverAnswers(self):
        """Past timeouts.idle: closed, plugin_timeout (500), the Deferred
        cancelled, a line naming the phase and the plugin."""
        for phase, plugin in (("stream_access", RECORDER), ("balancer", HOOKS)):
            h, pending = self.stream(phase)
            client = h.connect()
            client.send(b"hello")
            h.advance(self.IDLE - 0.5)
            self.assertEqual((client.closed, pending.cancelled), (False, []), phase)
            h.advance(1)
            self.assertTrue(client.closed, phase)
            [ctx] = h.recorder.logged
            self.assertEqual((ctx.reason, ctx.error, ctx.status),
                             ("plugin_timeout", "plugin_timeout", 500), phase)
            self.assertEqual((len(pending.made), pending.cancelled),
                             (1, pending.made), phase)
            self.assertEqual(h.upstream_connections, [], phase)
            self.assertEqual(self.active(h), [0], phase)
            [line] = log_messages(self.events, "tproxy.stream")[-1:]
            self.assertTrue(line.startswith(
                "%s of plugin %s did not answer within %d s (timeouts.idle): stream db from "
                % (phase, plugin, self.IDLE)), line)

    def test_clientGone(self):
        """The client goes away (a reset) while the phase is awaited: the
        Deferred is cancelled, stream_log runs once, no upstream connection."""
        for phase in ("stream_access", "balancer"):
            h, pending = self.stream(phase)
            client = h.connect()
            h.advance(1)
            client.abort()
            self.assertEqual((len(pending.made), pending.cancelled), (1, pending.made), phase)
            h.advance(self.IDLE * 2)
            [ctx] = h.recorder.logged
            self.assertEqual((ctx.reason, ctx.status), ("client_reset", 499), phase)
            self.assertEqual(h.upstream_connections, [], phase)
            self.assertEqual(self.active(h), [0], phase)
        self.assertEqual(log_messages(self.events, "tproxy.stream"), [])
        self.assertEqual(self.flushLoggedErrors(CancelledError), [])
