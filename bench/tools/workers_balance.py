"""
Balance quality of least-connections across workers, read from outside:
sample ``/upstream/status`` (box-wide and per-worker ``conn_count`` of each
peer) while a load runs, and print how far the peers' in-flight counts
drift apart.  ``python bench/tools/workers_balance.py --admin
http://127.0.0.1:19180 --samples 200 --every 0.05``

Per sample, the *spread* is max - min of the peers' in-flight counts of
one group: box-wide (the sum over workers) and within each worker.
"""

import argparse
import json
import time
import urllib.request


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin", default="http://127.0.0.1:9180")
    parser.add_argument("--prefix", default="default")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--every", type=float, default=0.05)
    args = parser.parse_args()
    box, inner, inflight = [], [], []
    last = None
    for _ in range(args.samples):
        with urllib.request.urlopen(args.admin + "/upstream/status?prefix=" + args.prefix) as r:
            status = json.load(r)
        last = status
        servers = status["groups"][0]["servers"]
        counts = [s["conn_count"] for s in servers]
        inflight.append(sum(counts))
        box.append(max(counts) - min(counts))
        per = {}
        for s in servers:
            for w in s.get("workers", ()):
                per.setdefault(w["pid"], []).append(w["conn_count"])
        for c in per.values():
            inner.append(max(c) - min(c))
        time.sleep(args.every)

    def describe(values):
        values = sorted(values)
        return "mean {:.2f}, p50 {}, p99 {}, max {}".format(
            sum(values) / len(values), values[len(values) // 2],
            values[min(len(values) - 1, int(len(values) * 0.99))], values[-1])
    servers = last["groups"][0]["servers"]
    print("samples: {}; in flight (box): mean {:.1f}".format(
        len(box), sum(inflight) / len(inflight)))
    print("spread of peers' in-flight counts, box-wide: " + describe(box))
    if inner:
        print("spread within one worker:                 " + describe(inner))
    totals = {}
    for s in servers:
        for w in s.get("workers", ()):
            totals[w["pid"]] = totals.get(w["pid"], 0) + w["total_requests"]
    if totals:
        print("requests per worker: " + ", ".join(
            "{}: {}".format(pid, n) for pid, n in sorted(totals.items())))
    print("requests per peer: " + ", ".join(
        "{}: {}".format(s["port"], s["total_requests"]) for s in servers))


if __name__ == "__main__":
    main()
