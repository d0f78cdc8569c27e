"""
The per-request cost of the ``prometheus`` plugin: its ``log`` hook on a
finished request's context (what the plugin adds to a request; the scrape
is not per request), beside the Python cost of a whole proxied request
(``bench/micro_request.py``).  Best of many short repeats, so a shared
machine's noise inflates less.

    python bench/micro_prometheus.py
"""

import os
import subprocess
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tproxy import Request, RequestContext  # noqa: E402
from tproxy.builtins import prometheus  # noqa: E402
from tproxy.registry import Peer  # noqa: E402


def main():
    plugin = prometheus.Plugin({"path": "/metrics", "process_metrics": False,
                                "buckets": list(prometheus.DEFAULT_BUCKETS)})
    ctx = RequestContext(None, Request("GET", "/api/x"), start=100.0)
    ctx.route = "api"
    ctx.peer = Peer("api", "127.0.0.1", 9001)
    ctx.status = 200
    ctx.bytes_sent = 250
    ctx.upstream_start, ctx.upstream_end, ctx.end = 100.001, 100.003, 100.004
    n = 20000
    log = plugin.log
    best = min(timeit.repeat(lambda: log(ctx), number=n, repeat=30)) / n
    print("%.3f us per request in prometheus.log" % (best * 1e6))
    here = os.path.dirname(os.path.abspath(__file__))
    for plugins in ("router,least_conn", "router,least_conn,prometheus"):
        out = min(float(subprocess.check_output(
            [sys.executable, os.path.join(here, "micro_request.py"), "-n", "20000",
             "--plugins", plugins]).split()[0]) for _ in range(5))
        print("%.2f us per proxied request (%s), best of 5" % (out, plugins))


if __name__ == "__main__":
    main()
