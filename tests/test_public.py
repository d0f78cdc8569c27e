"""
Tests for tproxy's public surface: what ``import tproxy`` gives a plugin
author, the distribution's name and version, and what a ``header_filter``
can tell about the response it sees.
"""

import importlib.metadata
import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import tproxy
from tproxy import Response, hookimpl
from tproxy.testing import UNREACHABLE, Harness, echo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExportsTests(SynchronousTestCase):
    """``tproxy`` re-exports what plugins handle, and nothing imports a reactor."""

    def test_names(self):
        """Every name of ``__all__`` is there, and is the defining module's object."""
        from tproxy.config import ConfigError
        from tproxy.gateway import Gateway
        from tproxy.http.headers import Headers
        from tproxy.registry import Peer
        self.assertEqual(
            (tproxy.ConfigError, tproxy.Gateway, tproxy.Headers, tproxy.Peer),
            (ConfigError, Gateway, Headers, Peer))
        from tproxy.http.wire import watch_field
        self.assertIs(tproxy.watch_field, watch_field)
        for name in tproxy.__all__:
            self.assertTrue(hasattr(tproxy, name), name)
        self.assertEqual(
            set(tproxy.__all__) - {"__version__", "hookimpl", "direct", "watch_field"},
            {"ConfigError", "Gateway", "Headers", "Peer", "Request",
             "RequestContext", "Response", "ResponseHead", "StreamContext"})

    def test_noReactor(self):
        """
        What imports do in a fresh Python (one process, ~0.3 s of CPU, for
        these checks in this order):

        - ``tproxy-ctl`` imports neither Twisted nor the gateway (its start
          is the standard library's);
        - the worker fork server's preload (:func:`tproxy.worker_forks.preload`:
          a worker's modules and the built-in plugins) installs no reactor and
          starts no thread (each forked worker installs its own reactor);
        - ``import tproxy`` and ``tproxy.testing`` install no reactor, so
          ``twistd -r ...`` can still choose one after a plugin imported them;
        - a preloaded module that installs a reactor: the fork server refuses
          to serve (exit status 1; the parent then spawns its workers).
        """
        code = (
            "import json, sys, threading; import tproxy.ctl; "
            "seen = {'ctl': sorted({m.split('.')[0] for m in sys.modules} & "
            "{'twisted', 'pluggy', 'jsonschema', 'tproxy'})}; "
            "import tproxy.worker_forks as w; failed = w.preload(); "
            "seen['preload'] = [failed, 'twisted.internet.reactor' in sys.modules, "
            "threading.active_count(), sorted(m for m in sys.modules "
            "if m.startswith('tproxy.'))]; "
            "import tproxy, tproxy.testing; "
            "seen['testing'] = 'twisted.internet.reactor' in sys.modules; "
            "w.PRELOAD_PACKAGES = (); w.PRELOAD = ('twisted.internet.reactor',); "
            "seen['refused'] = w.main(); "
            "print(json.dumps(seen))")
        from tests.test_tap import python_environ
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=python_environ(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        output = proc.stdout.decode("utf-8", "replace")
        self.assertEqual(proc.returncode, 0, output)
        seen = json.loads(output.splitlines()[-1])
        self.assertEqual(seen["ctl"], ["tproxy"], "tproxy-ctl imports the standard library only")
        failed, reactor, threads, modules = seen["preload"]
        self.assertEqual((failed, reactor, threads), ([], False, 1),
                         "the fork server's preload: every module, no reactor, no thread")
        for name in ("tproxy.worker", "tproxy.reactor", "tproxy.builtins.routes",
                     "tproxy.builtins.prometheus", "tproxy.http.connection",
                     "tproxy.stream.session"):
            self.assertIn(name, modules, "preloaded by the fork server")
        self.assertFalse(seen["testing"], "import tproxy.testing installs no reactor")
        self.assertEqual(seen["refused"], 1, "a preloaded module installed a reactor: refused")
        self.assertIn("tproxy.worker_forks: a preloaded module installed a reactor", output)

    def test_version(self):
        """The distribution ``tproxy-gateway`` takes its version from
        ``tproxy.__version__`` (when it is installed at all)."""
        try:
            version = importlib.metadata.version("tproxy-gateway")
        except importlib.metadata.PackageNotFoundError:
            raise self.skipTest("tproxy-gateway is not installed")
        self.assertEqual(version, tproxy.__version__)

    def test_versionOptions(self):
        """``twistd tproxy --version`` and ``tproxyctl --version`` print
        tproxy's version (and the distribution's name), and exit 0."""
        import contextlib
        import io
        from tproxy.ctl_args import parser
        from tproxy.tap import Options
        for run in (lambda: Options().parseOptions(["--version"]),
                    lambda: parser().parse_args(["--version"])):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                e = self.assertRaises(SystemExit, run)
            self.assertIn(e.code, (0, None))
            self.assertIn("{} (distribution tproxy-gateway)".format(tproxy.__version__),
                          out.getvalue())


class Seen(object):
    """Records what each ``header_filter`` call saw."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def header_filter(self, ctx, response):
        """Record ``(status, from_upstream, ctx.error, peer address)``."""
        self.seen.append((response.status, response.from_upstream, ctx.error,
                          ctx.upstream_addr))


class Deny(object):
    """Denies requests whose path ends with ``/deny``."""

    @hookimpl
    def access(self, ctx):
        """Deny."""
        if ctx.request.path.endswith("/deny"):
            return Response.error(403, "denied")


class FromUpstreamTests(SynchronousTestCase):
    """``response.from_upstream`` and ``ctx.error`` in ``header_filter``."""

    def harness(self, servers):
        self.seen = Seen()
        return Harness(
            config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]},
                                  "down": {"peers": ["127.0.0.1:9002"]},
                                  "slow": {"peers": ["127.0.0.1:9003"]}}},
            plugins=["router", Deny(), "least_conn", self.seen],
            servers=servers)

    def test_upstream(self):
        """The upstream's response: ``from_upstream``, no error; ``tried``
        in ``log`` holds the peer that answered."""
        h = self.harness({"127.0.0.1:9001": echo})
        self.assertEqual(h.request("GET", "/api/x").status, 200)
        self.assertEqual(self.seen.seen, [(200, True, None, "127.0.0.1:9001")])
        [ctx] = h.contexts
        self.assertEqual([p.address for p in ctx.tried], ["127.0.0.1:9001"])
        self.assertIs(ctx.tried[-1], ctx.peer)

    def test_upstreamError(self):
        """An upstream's own 500 is still the upstream's response."""
        h = self.harness({"127.0.0.1:9001": lambda r: (500, {}, b"oops")})
        self.assertEqual(h.request("GET", "/api/x").status, 500)
        self.assertEqual(self.seen.seen, [(500, True, None, "127.0.0.1:9001")])

    def test_denied(self):
        """A plugin's response: not from upstream, no error, no peer."""
        h = self.harness({"127.0.0.1:9001": echo})
        self.assertEqual(h.request("GET", "/api/deny").status, 403)
        self.assertEqual(self.seen.seen, [(403, False, None, None)])

    def test_noPeer(self):
        """tproxy's 503 (no group ``default``, so no live peer): not from
        upstream, ``no_peer``."""
        h = self.harness({})
        self.assertEqual(h.request("GET", "/elsewhere").status, 503)
        self.assertEqual(self.seen.seen, [(503, False, "no_peer", None)])

    def test_refused(self):
        """tproxy's 502 after a refused connect: the failed peer is ``ctx.peer``."""
        h = self.harness({})
        self.assertEqual(h.request("GET", "/down/x").status, 502)
        self.assertEqual(self.seen.seen,
                         [(502, False, "upstream_connect", "127.0.0.1:9002")])

    def test_connectTimeout(self):
        """tproxy's 504 after a connect timeout."""
        h = self.harness({"127.0.0.1:9003": UNREACHABLE})
        pending = h.request("GET", "/slow/x", wait=False)
        h.advance(h.config["timeouts"]["connect"])
        self.assertEqual(pending.result().status, 504)
        self.assertEqual(self.seen.seen,
                         [(504, False, "upstream_timeout", "127.0.0.1:9003")])


class Pick(object):
    """A balancer returning the first peer of ``default``, whatever its state."""

    @hookimpl
    def balancer(self, ctx):
        return next(iter(ctx.gateway.registry.group("default").peers.values()))


class BalancerChoiceTests(SynchronousTestCase):
    """What docs/plugins.md says of a balancer: it only chooses; the request
    goes to the peer it returned, full or not (skipping is its part)."""

    def test_fullPeerChosen(self):
        from twisted.internet.defer import Deferred
        h = Harness(
            config={"upstreams": {"default": {"peers": [
                {"host": "127.0.0.1", "port": 9001, "max_conns": 1}]}}},
            plugins=["router", Pick()],
            servers={"127.0.0.1:9001": lambda request: Deferred()})
        pending = [h.request("GET", path, wait=False) for path in ("/a", "/b")]
        self.assertEqual([r.uri for r in h.upstream_requests], ["/a", "/b"])
        [peer] = h.registry.group("default").peers.values()
        self.assertEqual((peer.max_conns, peer.active), (1, 2))
        for request in pending:
            request.abort()
        self.assertEqual(peer.active, 0)


class _Channel(object):
    """A worker's control channel answering ``ask`` with ``answer``."""

    closed = False

    def __init__(self, answer):
        self.answer = answer

    def call(self, op, request):
        from twisted.internet.defer import succeed
        return succeed(self.answer)


class _Handle(object):
    def __init__(self, index, answer):
        self.index = index
        self.channel = _Channel(answer)


class _Supervisor(object):
    def __init__(self, handles):
        from twisted.internet.task import Clock
        self.reactor = Clock()
        self.publisher = None
        self.handles = handles

    def live_workers(self):
        return self.handles


class GatherTests(SynchronousTestCase):
    """``gateway.admin.route(..., gather=combine)`` with ``"workers"``: the
    workers' answers reach ``combine`` as ``AdminResponse`` s whose ``obj``
    is their JSON document, as the parent's own answer's is (docs/plugins.md,
    Admin endpoints)."""

    def gathered(self, answers):
        from tproxy.admin import AdminRequest, AdminResponse
        from tproxy.box_admin import BoxAdmin
        seen = []

        def combine(request, answer, workers):
            seen.append((answer, workers))
            total = answer.obj["n"] + sum(r.obj["n"] for _, r in workers if r.obj)
            return 200, {"n": total}
        handles = [_Handle(i, a) for i, a in enumerate(answers)]
        box = BoxAdmin(_Supervisor(handles))
        handler = box._gathering(lambda request: (200, {"n": 1}), combine)
        request = AdminRequest.from_uri("GET", "/counts", {"host": "localhost"}, b"")
        result = self.successResultOf(handler(request))
        [(answer, workers)] = seen
        self.assertIsInstance(answer, AdminResponse)
        return result, workers

    def test_jsonAnswers(self):
        from tproxy.admin import AdminResponse
        answers = [{"status": 200, "headers": [], "body": AdminResponse(200, {"n": n}).body
                    .decode("latin-1")} for n in (2, 3)]
        result, workers = self.gathered(answers)
        self.assertEqual(result, (200, {"n": 6}))
        self.assertEqual([(i, r.status, r.obj) for i, r in workers],
                         [(0, 200, {"n": 2}), (1, 200, {"n": 3})])

    def test_otherType(self):
        """An answer of another type (``/metrics``' text) has ``obj`` ``None``
        and its ``body``."""
        answers = [{"status": 200, "headers": [["Content-Type", "text/plain"]],
                    "body": "n 2\n"}]
        result, [(index, response)] = self.gathered(answers)
        self.assertEqual((response.obj, response.body), (None, b"n 2\n"))
        self.assertEqual(result, (200, {"n": 1}))
