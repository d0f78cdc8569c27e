#!/usr/bin/env python3
"""
The registry's write path, in memory vs shared in Redis
(``registry.backend``): heartbeat throughput and the propagation delay of a
registration.  It starts its own ``redis-server`` on a free loopback port
(no persistence, a temporary directory) and stops it by its PID.

Usage (from the repository root)::

    python3 bench/registry_redis.py [--seconds 5] [--count 2000] [--json]

Parts:

http        ``wrk`` (keep-alive, 1 thread, 16 connections) on ``/upstream/add``
            of one known server (a heartbeat), against a real ``twistd -n
            tproxy``, with ``registry.backend`` memory and then redis: requests
            per second, and the CPU time of the tproxy process per heartbeat
            (its utime + stime over the run, from /proc, divided by the
            requests); redis-server's CPU per heartbeat too
registry    ``register()`` of one known server, awaited one after another
            (latency) and 32 at a time (throughput), on a RedisRegistry in
            this process; the MemoryRegistry for comparison
propagation two RedisRegistry instances in this process on one Redis: the time
            from ``register()`` of a new server on one until the other's
            listener is told (``peer_added``), p50 / p99 / max; and until the
            writer has Redis's answer

The machine is shared: the numbers are labelled "under load" where they go.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

TWISTD = ("import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (Linux)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def start_redis(directory):
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in iter(proc.stdout.readline, b""):
        if b"Ready to accept connections" in line:
            return proc, port
    raise SystemExit("redis-server did not start")


def start_twistd(directory, registry):
    admin = free_port()
    conf = {"listen": "tcp:%d:interface=127.0.0.1" % free_port(),
            "admin": {"listen": "tcp:%d:interface=127.0.0.1" % admin},
            "plugins": ["registry", "router", "least_conn"], "registry": registry}
    path = os.path.join(directory, "conf-%d.json" % admin)
    with open(path, "w") as f:
        json.dump(conf, f)
    env = dict(os.environ, PYTHONPATH=REPO)
    # the log goes to a file (twistd logs each heartbeat at debug level: a
    # pipe nobody reads would block it)
    log = open(path + ".log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", TWISTD, "-n", "--pidfile=", "tproxy",
                             "-c", path], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=directory)
    log.close()
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        with open(path + ".log", "rb") as f:
            if b"admin API listening" in f.read():
                return proc, admin
        time.sleep(0.1)
    raise SystemExit("twistd did not start")


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t1", "-c16", "-d%ds" % seconds, url],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    requests = int([l for l in out.splitlines() if "requests in" in l][0].split()[0])
    non2xx = [l for l in out.splitlines() if "Non-2xx" in l]
    return requests, non2xx


def http_part(directory, redis_port, redis_pid, seconds):
    results = {}
    for backend in ("memory", "redis"):
        registry = {"backend": backend}
        if backend == "redis":
            registry.update(url="redis://127.0.0.1:%d/0" % redis_port,
                            key_prefix="bench%d:" % time.time())
        proc, admin = start_twistd(directory, registry)
        try:
            url = "http://127.0.0.1:%d/upstream/add?host=10.0.0.1&port=9001" % admin
            subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)
            wrk(url, 1)     # warm-up
            cpu0, rcpu0, t0 = cpu_seconds(proc.pid), cpu_seconds(redis_pid), time.time()
            requests, non2xx = wrk(url, seconds)
            cpu1, rcpu1, t1 = cpu_seconds(proc.pid), cpu_seconds(redis_pid), time.time()
        finally:
            proc.terminate()
            proc.wait()
        results[backend] = {
            "heartbeats_per_s": round(requests / (t1 - t0)),
            "tproxy_cpu_us_per_heartbeat": round((cpu1 - cpu0) / requests * 1e6, 1),
            "redis_cpu_us_per_heartbeat": round((rcpu1 - rcpu0) / requests * 1e6, 1),
            "non_2xx": non2xx}
    return results


def in_process_parts(redis_port, count):
    from twisted.internet import defer, reactor, task
    from tproxy.registry import MemoryRegistry
    from tproxy.registry_redis import RedisRegistry

    out = {}

    def pct(values, p):
        values = sorted(values)
        return round(values[min(len(values) - 1, int(len(values) * p))] * 1e6)

    class Seen(object):
        peer_changed = None

        def __init__(self):
            self.at = {}

        def peer_added(self, peer):
            self.at[peer.port] = time.perf_counter()

        def peer_removed(self, peer):
            pass

    async def run():
        settings = {"url": "redis://127.0.0.1:%d/0" % redis_port,
                    "key_prefix": "benchp%d:" % time.time()}
        a = RedisRegistry(reactor, settings)
        b = RedisRegistry(reactor, settings)
        await a.start()
        await b.start()
        memory = MemoryRegistry(reactor)
        try:
            t0 = time.perf_counter()
            for _ in range(count * 10):
                memory.register("api", "10.0.0.1", 9001)
            out["memory_register_per_s"] = round(count * 10 / (time.perf_counter() - t0))

            await a.register("api", "10.0.0.1", 9001)
            lat = []
            t0 = time.perf_counter()
            for _ in range(count):
                s = time.perf_counter()
                await a.register("api", "10.0.0.1", 9001)
                lat.append(time.perf_counter() - s)
            out["redis_register_sequential_per_s"] = round(count / (time.perf_counter() - t0))
            out["redis_register_latency_us_p50_p99"] = [pct(lat, 0.5), pct(lat, 0.99)]
            t0 = time.perf_counter()
            for _ in range(count // 32):
                await defer.gatherResults([a.register("api", "10.0.0.1", 9001)
                                           for _ in range(32)])
            out["redis_register_32_at_a_time_per_s"] = round(
                (count // 32) * 32 / (time.perf_counter() - t0))

            seen = Seen()
            b.subscribe(seen)
            acked, delays = [], []
            for i in range(count):
                port = 10000 + i
                s = time.perf_counter()
                await a.register("prop", "10.0.0.2", port)
                acked.append(time.perf_counter() - s)
                while port not in seen.at:
                    await task.deferLater(reactor, 0, lambda: None)
                delays.append(seen.at[port] - s)
            out["propagation_us_p50_p99_max"] = [pct(delays, 0.5), pct(delays, 0.99),
                                                 round(max(delays) * 1e6)]
            out["writer_ack_us_p50_p99"] = [pct(acked, 0.5), pct(acked, 0.99)]
        finally:
            await a.stop()
            await b.stop()

    failures = []
    d = defer.ensureDeferred(run())
    d.addErrback(failures.append)
    d.addBoth(lambda _: reactor.stop())
    reactor.run()
    if failures:
        failures[0].raiseException()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="tproxy-bench-")
    redis, port = start_redis(directory)
    try:
        results = {"python": sys.version.split()[0],
                   "implementation": sys.implementation.name,
                   "load_average": os.getloadavg()}
        results["http"] = http_part(directory, port, redis.pid, args.seconds)
        results["in_process"] = in_process_parts(port, args.count)
    finally:
        redis.terminate()
        redis.communicate()
        shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print("{}: {}".format(key, json.dumps(value)))


if __name__ == "__main__":
    main()
