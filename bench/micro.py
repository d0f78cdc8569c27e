#!/usr/bin/env python3
"""
Micro-benchmarks of the pieces on tproxy's hot path, in operations per second.

Usage (from the repository root; pin it to one CPU for steadier numbers)::

    taskset -c 0 bench/.venv/bin/python bench/micro.py [--seconds 1.0] [--json] [--only NAME]
    taskset -c 0 bench/.venv-pypy/bin/python bench/micro.py      # the same on PyPy

Everything is built with tproxy's real wiring (configuration -> plugin manager ->
:class:`tproxy.gateway.Gateway` on a ``Clock``, ``init_worker`` run), with no sockets:

balancer        ``least_conn``'s ``balancer`` at 1 / 100 / 10,000 peers, each pick followed by
                ``acquire()``, with 32 requests in flight (the oldest is released per op),
                as wrk -c32 drives the proxy
route           ``router``'s ``rewrite`` of ``GET /api/x`` with 10 / 1,000 / 10,000 groups
                (``api`` plus g0.., one peer each)
dispatch        one request's plugin phases through :class:`tproxy.phases.Phases`
                (rewrite + access, header_filter, one body_filter with eof, log) with
                0 / 5 / 20 no-op plugins (``bench.noop_plugins``), no built-ins
heartbeat       the ``registry`` plugin's ``/upstream/add`` handler re-adding (heartbeating)
                one of 10,000 registered servers, parameters parsed as from the admin API;
                and ``MemoryRegistry.register`` alone
access_log      the ``access_log`` plugin's ``log`` phase for one finished request: its
                default settings (batched writes; the file descriptor is /dev/null instead
                of stdout), with two request header fields added, and the ``"logger"``
                target through twisted.logger's text observer to /dev/null (what twistd's
                log file costs; last, since it starts twisted.logger for the process)

Each figure is the best of 3 timed batches, each at least ``--seconds / 3`` long, after
a warm-up batch (it matters on PyPy). These isolate the pieces; bench/run.sh measures
them in a running proxy (scenarios peers, groups, plugins).
"""

import argparse
import collections
import gc
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # the working tree's tproxy, and bench.noop_plugins

from twisted.internet.task import Clock  # noqa: E402

from tproxy.admin import AdminRequest  # noqa: E402
from tproxy.config import validate_config  # noqa: E402
from tproxy.context import Request, RequestContext, ResponseHead  # noqa: E402
from tproxy.gateway import Gateway  # noqa: E402
from tproxy.http.headers import Headers  # noqa: E402
from tproxy.plugins import build_plugin_manager  # noqa: E402

BACKEND_PORT = 19000
NOOP = {"name": "bench.noop_plugins", "settings": {}}


def make_gateway(plugins):
    """A started Gateway with ``plugins`` (config entries) on a Clock."""
    config = validate_config({"plugins": plugins, "registry": {"ttl": 86400}})
    pm = build_plugin_manager(config, entry_points=[])
    gateway = Gateway(config, Clock(), pm)
    gateway.start()
    return gateway


def timeit(op, seconds, batch=1000):
    """ops/s of ``op(n)`` (which runs n operations): best of 3 batches after a warm-up."""
    target = max(seconds / 3, 0.01)
    n = batch
    # warm-up and calibration: grow the batch until it lasts ~target
    while True:
        t0 = time.perf_counter()
        op(n)
        dt = time.perf_counter() - t0
        if dt >= target / 2 or n >= 1 << 26:
            break
        n *= 4
    n = max(int(n * target / max(dt, 1e-9)), 1)
    best = 0.0
    for _ in range(3):
        gc.collect()
        t0 = time.perf_counter()
        op(n)
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    return best


def bench_balancer(peers, seconds):
    gateway = make_gateway(["registry", "router", "least_conn"])
    for i in range(peers):
        gateway.registry.register("api", "127.0.0.1", BACKEND_PORT + i)
    balancer = gateway.plugins.get_plugin("least_conn")
    ctx = RequestContext(gateway, Request("GET", "/api/x"))
    ctx.route = "api"
    in_flight = collections.deque()
    for _ in range(32):
        peer = balancer.balancer(ctx=ctx, tried=())
        peer.acquire()
        in_flight.append(peer)
    pick = balancer.balancer
    push, pop = in_flight.append, in_flight.popleft

    def op(n):
        for _ in range(n):
            peer = pick(ctx, ())
            peer.acquire()
            push(peer)
            pop().release()

    return timeit(op, seconds)


def bench_route(groups, seconds):
    gateway = make_gateway(["registry", "router", "least_conn"])
    gateway.registry.register("api", "127.0.0.1", BACKEND_PORT)
    for i in range(groups - 1):
        gateway.registry.register("g%d" % i, "127.0.0.1", BACKEND_PORT)
    assert len(gateway.registry.groups()) == groups
    router = gateway.plugins.get_plugin("router")
    ctx = RequestContext(gateway, Request("GET", "/api/x",
                                          headers=Headers([(b"host", b"127.0.0.1")])))
    rewrite = router.rewrite
    router.rewrite(ctx)
    assert ctx.route == "api" and ctx.upstream_path == "/x", (ctx.route, ctx.upstream_path)

    def op(n):
        for _ in range(n):
            ctx.route = None       # else the router sees a routed request and returns
            ctx.upstream_headers = []
            rewrite(ctx)

    return timeit(op, seconds)


def bench_dispatch(plugins, seconds):
    gateway = make_gateway([NOOP] * plugins)
    phases = gateway.phases
    ctx = RequestContext(gateway, Request("GET", "/api/x"))
    head = ResponseHead(200, Headers([(b"content-length", b"100")]))
    chunk = b"x" * 100
    rewrite_access, header_filter = phases.rewrite_access, phases.header_filter
    body_filter, log = phases.body_filter, phases.log

    def op(n):
        for _ in range(n):
            rewrite_access(ctx)
            header_filter(ctx, head)
            body_filter(ctx, chunk, True)
            log(ctx)

    return timeit(op, seconds)


def bench_heartbeat(seconds, handler=True):
    gateway = make_gateway(["registry", "router", "least_conn"])
    servers = 10000
    for i in range(servers):
        gateway.registry.register("api", "127.0.0.1", BACKEND_PORT + i)
    add = gateway.plugins.get_plugin("registry").add
    register = gateway.registry.register
    requests = [AdminRequest("GET", "/upstream/add",
                             args={"host": "127.0.0.1", "port": str(BACKEND_PORT + i), "prefix": "api"},
                             client_addr="127.0.0.1")
                for i in range(servers)]
    status, body = add(requests[0])
    assert status == 200 and body["created"] is False, (status, body)

    def op_handler(n):
        for i in range(n):
            add(requests[i % servers])

    def op_registry(n):
        for i in range(n):
            register("api", "127.0.0.1", BACKEND_PORT + i % servers, 1)

    return timeit(op_handler if handler else op_registry, seconds)


def bench_access_log(seconds, target="default", **settings):
    from tproxy.builtins.access_log import Plugin
    if target == "logger":
        from twisted.logger import globalLogBeginner, textFileLogObserver
        out = open(os.devnull, "w")
        globalLogBeginner.beginLoggingTo([textFileLogObserver(out)], redirectStandardIO=False)
        settings["target"] = "logger"
    else:
        settings.update(target="file", path=os.devnull)
    gateway = make_gateway(["registry"])
    plugin = Plugin(settings)
    plugin.init_worker(gateway)
    peer, _ = gateway.registry.register("api", "127.0.0.1", BACKEND_PORT)
    headers = Headers([(b"Host", b"127.0.0.1:18500"), (b"User-Agent", b"wrk"),
                       (b"Accept", b"*/*"), (b"X-Request-ID", b"f3a1c2")])
    ctx = RequestContext(gateway, Request("GET", "/api/x", "q=1", headers=headers,
                                          client_addr="127.0.0.1"), request_id=12345)
    ctx.route = "api"
    ctx.peer = peer
    ctx.upstream_start, ctx.upstream_end, ctx.end = 0.0001, 0.0009, 0.001
    ctx.status, ctx.bytes_sent = 200, 227
    log = plugin.log

    def op(n):
        for _ in range(n):
            log(ctx)

    try:
        return timeit(op, seconds)
    finally:
        plugin.close()


def cases():
    for n in (1, 100, 10000):
        yield "balancer", "least_conn pick + acquire/release, %s peer%s, 32 in flight" % (
            format(n, ","), "" if n == 1 else "s"), \
            lambda s, n=n: bench_balancer(n, s)
    for n in (10, 1000, 10000):
        yield "route", "router rewrite GET /api/x, %s groups" % format(n, ","), \
            lambda s, n=n: bench_route(n, s)
    for n in (0, 5, 20):
        yield "dispatch", "one request's phases, %d no-op plugins" % n, \
            lambda s, n=n: bench_dispatch(n, s)
    yield "heartbeat", "/upstream/add handler, heartbeat of 1 of 10,000 servers", \
        lambda s: bench_heartbeat(s, handler=True)
    yield "heartbeat", "MemoryRegistry.register, heartbeat of 1 of 10,000", \
        lambda s: bench_heartbeat(s, handler=False)
    yield "access_log", "log phase, default settings (batched, 64 KiB writes)", \
        lambda s: bench_access_log(s)
    yield "access_log", "log phase, + request_headers [user-agent, x-request-id]", \
        lambda s: bench_access_log(s, request_headers=["user-agent", "x-request-id"])
    yield "access_log", "log phase, \"logger\" target (twisted.logger text observer)", \
        lambda s: bench_access_log(s, target="logger")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0, help="time per figure (default 1.0)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--only", action="append", choices=("balancer", "route", "dispatch", "heartbeat",
                                                    "access_log"),
                   help="run only these groups (repeatable)")
    args = p.parse_args()
    impl = "%s %s" % (platform.python_implementation(), platform.python_version())
    if not args.json:
        print("tproxy micro-benchmarks on %s (best of 3, %.1f s per figure)\n" % (impl, args.seconds))
        print("| piece | case | ops/s | µs/op |")
        print("|---|---|---:|---:|")
    for group, what, fn in cases():
        if args.only and group not in args.only:
            continue
        ops = fn(args.seconds)
        if args.json:
            print(json.dumps({"group": group, "case": what, "ops_s": round(ops), "python": impl}))
        else:
            print("| %s | %s | %s | %.2f |" % (group, what, format(round(ops), ","), 1e6 / ops))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
