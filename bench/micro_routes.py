#!/usr/bin/env python3
"""
Micro-benchmark of declarative route matching (:mod:`tproxy.routing`),
in operations per second, at 10 / 1,000 / 10,000 routes.

Usage (from the repository root; pin it to one CPU for steadier numbers)::

    taskset -c 0 python3 bench/micro_routes.py [--seconds 1.0] [--json]

Scenarios, each at 10, 1,000 and 10,000 routes:

match-prefix    ``RouteTable.match`` of ``GET /svcN/api/users/42`` against a table
                of prefix routes (``/svcI/api``), exact routes (``/svcI/ping``) and
                host-bound prefix routes (``hI.example.com``), a third each; the
                request takes a prefix route
match-exact     the same table, ``GET /svcN/ping``: an exact route
match-miss      the same table, ``GET /nothing/here/at/all``: no route (the walk
                of every segment, then nothing)
rewrite         the plugin's whole ``rewrite`` phase for ``GET /svcN/api/users/42``
                (matching, the transforms, ``ctx`` updated), a fresh context each
regex-scan      a table of regex routes only (``^/reI/([0-9]+)$``), request taking
                the last one: regexes are tried one by one, so this one grows
                with the number of routes (shown for contrast; exact and prefix
                routes do not); on RE2, or on tproxy's linear_re engine where
                RE2 is missing (PyPy) or TPROXY_REGEX=python

Each figure is the best of 3 timed batches of about ``--seconds / 3``, after
a warm-up batch; the tables of one size are built, then kept out of the
cyclic collector's scans (``gc.freeze``, as a long-lived configuration
effectively is), while that size is measured.
"""

import argparse
import gc
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from twisted.internet.task import Clock  # noqa: E402

from tproxy import routing  # noqa: E402
from tproxy.config import validate_config  # noqa: E402
from tproxy.context import Request, RequestContext  # noqa: E402
from tproxy.gateway import Gateway  # noqa: E402
from tproxy.http.headers import Headers  # noqa: E402
from tproxy.plugins import build_plugin_manager  # noqa: E402

SIZES = (10, 1000, 10000)


def specs(n):
    """``n`` routes: prefix, exact and host-bound prefix, a third each."""
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append({"name": "p%d" % i, "group": "api",
                        "match": {"path": "/svc%d/api" % i}, "strip_prefix": True})
        elif kind == 1:
            out.append({"name": "e%d" % i, "group": "api",
                        "match": {"path": {"mode": "exact", "value": "/svc%d/ping" % i}}})
        else:
            out.append({"name": "h%d" % i, "group": "api",
                        "match": {"host": "h%d.example.com" % i, "path": "/svc%d" % i}})
    return out


def regex_specs(n):
    return [{"name": "r%d" % i, "group": "api",
             "match": {"path": {"mode": "regex", "value": "^/re%d/([0-9]+)$" % i}}}
            for i in range(n)]


def request(path, host="www.example.com"):
    return Request("GET", path, headers=Headers([(b"Host", host.encode("ascii"))]))


def timed(fn, seconds):
    """Best ops/s of 3 batches of about ``seconds / 3`` each, after a
    warm-up that sizes them."""
    target = max(seconds / 3, 0.01)

    def batch(n):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - start

    n = 1
    while True:
        dt = batch(n)
        if dt >= target / 2 or n >= 1 << 24:
            break
        n *= 4
    n = max(int(n * target / max(dt, 1e-9)), 1)
    best = 0.0
    for _ in range(3):
        gc.collect()
        best = max(best, n / batch(n))
    return best


def scenarios(n):
    table = routing.compile_routes(specs(n))
    # a route near the end of the list, so nothing is found early by luck
    last_prefix = max(i for i in range(n) if i % 3 == 0)
    last_exact = max(i for i in range(n) if i % 3 == 1)
    hit = routing.RequestView.of(request("/svc%d/api/users/42" % last_prefix))
    exact = routing.RequestView.of(request("/svc%d/ping" % last_exact))
    miss = routing.RequestView.of(request("/nothing/here/at/all"))
    assert table.match(hit)[0].name == "p%d" % last_prefix
    assert table.match(exact)[0].name == "e%d" % last_exact
    assert table.match(miss) is None

    config = validate_config({"plugins": [{"name": "routes", "settings": {
        "routes": specs(n)}}], "upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}})
    gateway = Gateway(config, Clock(), build_plugin_manager(config, entry_points=[]))
    gateway.start()
    plugin = gateway.plugins.get_plugin("routes")
    req = request("/svc%d/api/users/42" % last_prefix)

    def rewrite():
        ctx = RequestContext(gateway, req)
        plugin.rewrite(ctx)

    out = {
        "match-prefix": lambda: table.match(hit),
        "match-exact": lambda: table.match(exact),
        "match-miss": lambda: table.match(miss),
        "rewrite": rewrite,
    }
    rtable = routing.compile_routes(regex_specs(n))
    rview = routing.RequestView.of(request("/re%d/42" % (n - 1)))
    assert rtable.match(rview)[0].name == "r%d" % (n - 1)
    out["regex-scan"] = lambda: rtable.match(rview)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="time per figure (default 1.0)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    results = {}
    for n in SIZES:
        cases = scenarios(n)
        # the tables live as long as the process, as in a running proxy:
        # keep them out of the collector's scans (CPython)
        gc.collect()
        if hasattr(gc, "freeze"):
            gc.freeze()
        for name, fn in cases.items():
            results.setdefault(name, {})[n] = timed(fn, args.seconds)
        if hasattr(gc, "unfreeze"):
            gc.unfreeze()
        del cases
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    print("%-14s %14s %14s %14s   (ops/s)" % (("routes:",) + tuple(
        "{:,}".format(n) for n in SIZES)))
    for name, by_size in results.items():
        print("%-14s %14s %14s %14s" % ((name,) + tuple(
            "{:,.0f}".format(by_size[n]) for n in SIZES)))


if __name__ == "__main__":
    main()
