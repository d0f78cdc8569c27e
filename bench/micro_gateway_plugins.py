"""
The Python cost per request of each gateway built-in (request_id, key_auth,
jwt_auth, ip_restriction, cors): a whole proxied request as in
``micro_request.py`` (real gateway, client and upstream protocols, no
sockets), with and without the plugin, on the same request bytes.

    python bench/micro_gateway_plugins.py [-n 20000] [--only key_auth,cors]

Prints, per plugin (best of 7 interleaved rounds, CPU time), microseconds per request with it, and the difference to
the same request through ``router`` and ``least_conn`` alone.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jwt  # noqa: E402

from bench import micro_request  # noqa: E402

SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = jwt.encode({"sub": "alice", "exp": 4102444800}, SECRET, algorithm="HS256")

#: (name, plugin entry, extra request header lines)
SCENARIOS = [
    ("request_id", "request_id", b""),
    ("key_auth", {"name": "key_auth", "settings": {"consumers": [
        {"username": "u%d" % i, "keys": ["key-number-%06d" % i]} for i in range(1000)]}},
     b"apikey: key-number-000500\r\n"),
    ("jwt_auth (HS256, cached)", {"name": "jwt_auth", "settings": {
        "keys": [{"algorithm": "HS256", "secret": SECRET}]}},
     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"),
    ("jwt_auth (HS256, no cache)", {"name": "jwt_auth", "settings": {
        "keys": [{"algorithm": "HS256", "secret": SECRET}], "cache_size": 0}},
     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"),
    ("ip_restriction (1000 CIDRs)", {"name": "ip_restriction", "settings": {
        "allow": ["10.%d.%d.0/24" % (i // 256, i % 256) for i in range(999)]
        + ["127.0.0.0/8"]}}, b""),
    ("cors (actual request)", {"name": "cors", "settings": {
        "origins": ["https://app.example.com"]}},
     b"Origin: https://app.example.com\r\n"),
]


def runner(plugins, extra):
    """A function running one request through a gateway with ``plugins``."""
    request = micro_request.REQUEST[:-2] + extra + b"\r\n"
    client, up = micro_request.build(plugins)

    def one():
        client.dataReceived(request)
        up.dataReceived(micro_request.RESPONSE)
    for _ in range(2000):
        one()
    return one


def timed(one, n):
    """Microseconds of this process's CPU per call (not wall time: on a
    shared machine, time spent preempted is not ours)."""
    t = time.process_time()
    for _ in range(n):
        one()
    return (time.process_time() - t) / n * 1e6


def measure(entry, extra, n, rounds=7):
    """``(with, without)``: the best of ``rounds`` interleaved timings (a
    shared machine's noise hits both alike)."""
    base = runner(["router", "least_conn"], extra)
    with_it = runner(["router", entry, "least_conn"], extra)
    b = w = float("inf")
    for _ in range(rounds):
        b = min(b, timed(base, n))
        w = min(w, timed(with_it, n))
    return w, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    only = [o for o in args.only.split(",") if o]
    print("%s %s, %d requests per round, best of 7 rounds (CPU time)" % (
        sys.implementation.name, sys.version.split()[0], args.n))
    for name, entry, extra in SCENARIOS:
        if only and not any(name.startswith(o) for o in only):
            continue
        with_it, base = measure(entry, extra, args.n)
        print("%-28s %6.2f us/request, +%5.2f us over router+least_conn (%.2f)" % (
            name, with_it, with_it - base, base))


if __name__ == "__main__":
    main()
