"""
The plugins' share of a request, counted by callgrind: on a real gateway
(one static peer in ``api``), a new ``RequestContext`` for ``GET /api/x``
with three header fields, then ``rewrite_access``, ``run_balancer``,
``acquire`` and ``release``, as the exchange calls them; no HTTP, no
sockets.  Runs itself under ``valgrind --tool=callgrind`` with N = 2,000 and
6,000 and prints the instructions per request (the difference, so that the
start-up cancels out).  See bench/README.md, "The built-in plugins' share
of a request".

    python bench/tools/plugins_share.py [--plugins registry,router,least_conn]
        [--upto context|rewrite|balancer|release]

``--plugins one_peer`` stands for ``registry`` and a 10-line plugin that
routes every request to ``api`` and returns its one peer (the floor).
``--upto`` stops each request after that step.  PYTHON picks the interpreter
(default: this one); PYTHONHASHSEED is 0 unless set.
"""

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from tproxy import hookimpl  # noqa: E402

STEPS = ("context", "rewrite", "balancer", "release")


class OnePeer(object):
    """The floor: every request to ``api``, its one peer chosen."""

    def __init__(self, settings):
        self.peer = None

    @hookimpl
    def rewrite(self, ctx):
        ctx.route = "api"

    @hookimpl
    def balancer(self, ctx, tried):
        if self.peer is None:
            self.peer = next(iter(ctx.gateway.registry.group("api").peers.values()))
        return self.peer


def run(n, plugins, upto):
    from twisted.internet.task import Clock

    from tproxy.config import validate_config
    from tproxy.context import Request, RequestContext
    from tproxy.gateway import Gateway
    from tproxy.http.headers import Headers
    from tproxy.plugins import build_plugin_manager

    if plugins == ["one_peer"]:
        plugins = ["registry", "__main__:OnePeer"]
    cfg = validate_config({"upstreams": {"api": {"peers": ["127.0.0.1:19000"]}},
                           "plugins": plugins})
    gateway = Gateway(cfg, Clock(), build_plugin_manager(cfg))
    gateway.start()
    phases = gateway.phases
    raw = [(b"Host", b"127.0.0.1:18500"), (b"User-Agent", b"wrk"), (b"Accept", b"*/*")]
    stop = STEPS.index(upto)

    def one():
        ctx = RequestContext(gateway, Request("GET", "/api/x", "", "1.1", Headers(list(raw))))
        if stop == 0:
            return
        if phases.rewrite_access(ctx) is not None or stop == 1:
            return
        peer = ctx.plugins.run_balancer(ctx, ctx.tried)
        if stop == 2:
            return
        peer.acquire()
        peer.release()

    for _ in range(300 + n):
        one()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plugins", default="registry,router,least_conn")
    ap.add_argument("--upto", choices=STEPS, default="release")
    ap.add_argument("--count", type=int, help="(under callgrind) run N requests")
    args = ap.parse_args()
    if args.count is not None:
        return run(args.count, args.plugins.split(","), args.upto)
    python = os.environ.get("PYTHON", sys.executable)
    env = dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
    totals = {}
    with tempfile.TemporaryDirectory() as out:
        runs = {}
        for n in (2000, 6000):
            path = os.path.join(out, "callgrind.%d" % n)
            runs[n] = (path, subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + path, python,
                 os.path.abspath(__file__), "--count", str(n), "--plugins", args.plugins,
                 "--upto", args.upto],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for n, (path, proc) in runs.items():
            if proc.wait() != 0:
                sys.exit("the run of %d requests failed" % n)
            with open(path) as f:
                totals[n] = next(int(line.split()[1]) for line in f
                                 if line.startswith("totals:"))
    print("%d instructions per request (%s, up to %s)" % (
        (totals[6000] - totals[2000]) // 4000, args.plugins, args.upto))


if __name__ == "__main__":
    main()
