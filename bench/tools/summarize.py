#!/usr/bin/env python3
"""Turn a results directory of bench/run.sh into table.md (and print it).

Usage: summarize.py RESULTS_DIR [--check]

Per system and mode: the median over the measured rounds of requests/s (or MB/s), that
median as a ratio of nginx's median in the same mode of the same run, the medians of the
per-round p50 and p99 latencies, how busy the proxy CPU and the load CPU were, the proxy
process's own CPU time per request (and its user and system parts), each round's figure, and
all wrk errors summed.
Warm-up runs are in runs.jsonl but are not counted. Then the 1 GiB transfers, the admin
API registrations, and the targets of issue 6 checked against this run, followed (when the run
has nginx, nginx_n10000, tproxy_n1 and tproxy_n10000) by nginx_n10000 / nginx beside
tproxy_n10000 / tproxy_n1, for context.

--check: exit 1 when a measured run moved nothing, had wrk errors or non-2xx answers, or a
transfer failed (the smoke mode's pass/fail). Standard library only.
"""
import json
import statistics
import sys
from pathlib import Path

REFERENCE = "nginx"
MB = 1e6


def fmt_ms(us):
    return f"{us / 1000:.2f}" if us < 10_000 else f"{us / 1000:.1f}"


def rps(r):
    return r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0


def mbps(r):
    return r["bytes"] / r["duration_us"] if r["duration_us"] else 0.0  # bytes/us = MB/s


def cpu_us_per_req(r):
    if not r.get("requests") or "proxy_cpu_ticks" not in r:
        return None
    return r["proxy_cpu_ticks"] / r["clk_tck"] * 1e6 / r["requests"]


def user_us_per_req(r):
    """The user part of :func:`cpu_us_per_req` (runs that recorded the split)."""
    total, sys_us = cpu_us_per_req(r), sys_us_per_req(r)
    return total - sys_us if total is not None and sys_us is not None else None


def sys_us_per_req(r):
    """The system (kernel) part of :func:`cpu_us_per_req`."""
    if not r.get("requests") or "proxy_sys_ticks" not in r:
        return None
    return r["proxy_sys_ticks"] / r["clk_tck"] * 1e6 / r["requests"]


def fmt_split(runs):
    """``user / sys`` µs per request, medians over ``runs`` (n/a without the split)."""
    user = median(user_us_per_req(r) for r in runs)
    sys_us = median(sys_us_per_req(r) for r in runs)
    return f"{user:.1f} / {sys_us:.1f}" if user is not None and sys_us is not None else "n/a"


def upstream_conns_per_1k(r):
    if r.get("backend_accepts") is None or not r.get("requests"):
        return None
    return max(r["backend_accepts"], 0) * 1000 / r["requests"]


def ratio_of(a, b):
    return a / b if a is not None and b else None


def errors(runs):
    err = {name: sum(r.get(f"err_{name}", 0) for r in runs)
           for name in ("connect", "read", "write", "timeout", "status")}
    return ", ".join(f"{n} {c}" for n, c in err.items() if c) or "0"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def load_jsonl(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Summary:
    def __init__(self, results):
        self.results = results
        self.meta = json.loads((results / "meta.json").read_text()) if (results / "meta.json").exists() else {}
        self.desc = self.meta.get("desc", {})
        everything = load_jsonl(results / "runs.jsonl")
        self.primes = [r for r in everything if r.get("kind") == "prime"]
        runs = [r for r in everything if not r.get("warmup")]
        self.wrk = {}
        self.transfers = {}
        for r in runs:
            target = self.wrk if r.get("kind", "wrk") == "wrk" else self.transfers
            target.setdefault((r["mode"], r["system"]), []).append(r)
        self.registrations = load_jsonl(results / "registration.jsonl")
        self.lines = []
        self.problems = []

    def metric(self, mode, system, fn=rps):
        runs = self.wrk.get((mode, system))
        return median(fn(r) for r in runs) if runs else None

    def p99(self, mode, system):
        runs = self.wrk.get((mode, system))
        return median(r["lat_p99_us"] for r in runs) if runs else None

    def out(self, line=""):
        self.lines.append(line)

    def header(self):
        versions = self.results / "versions.txt"
        if versions.exists():
            keep = ("date:", "host:", "cpu:", "settings:", "tproxy commit:", "tproxy python:",
                    "tproxy twisted", "httptools", "twisted system python:", "nginx:", "wrk:")
            self.out("```")
            for line in versions.read_text().splitlines():
                if line.startswith(keep):
                    self.out(line)
            self.out("```")
            self.out()

    def wrk_table(self, mode, title, unit_fn, unit):
        keys = [k for k in self.wrk if k[0] == mode]
        if not keys:
            return
        ref = self.metric(mode, REFERENCE, unit_fn)
        ref_p99 = self.p99(mode, REFERENCE)
        self.out(f"### {title}\n")
        self.out(f"| system | what | median {unit} | × nginx | p50 ms | p99 ms | p99 × nginx | proxy CPU % "
                 f"| load CPU % | proxy µs CPU/req | user / sys µs | upstream conns per 1k req "
                 f"| {unit} per round | wrk errors |")
        self.out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for k in keys:
            runs = self.wrk[k]
            m = self.metric(mode, k[1], unit_fn)
            p99 = self.p99(mode, k[1])
            cpu_req = median(cpu_us_per_req(r) for r in runs)
            conns = median(upstream_conns_per_1k(r) for r in runs)
            per_round = " / ".join(f"{unit_fn(r):,.0f}" for r in runs)
            ratio = f"{m / ref:.3f}" if ref else "n/a"
            p99_ratio = f"{p99 / ref_p99:.2f}" if ref_p99 else "n/a"
            self.out(
                f"| {k[1]} | {self.desc.get(k[1], '')} | {m:,.0f} | {ratio} | "
                f"{fmt_ms(median(r['lat_p50_us'] for r in runs))} | {fmt_ms(p99)} | {p99_ratio} | "
                f"{median(r.get('cpu_proxy_busy', 0) for r in runs):.0f} | "
                f"{median(r.get('cpu_load_busy', 0) for r in runs):.0f} | "
                f"{'%.1f' % cpu_req if cpu_req is not None else 'n/a'} | {fmt_split(runs)} | "
                f"{'%.1f' % conns if conns is not None else 'n/a'} | {per_round} | {errors(runs)} |")
            for r in runs:
                if r.get("failed") or not r.get("requests"):
                    self.problems.append(f"{mode} {k[1]} round {r['round']}: no result")
                elif errors([r]) != "0":
                    self.problems.append(f"{mode} {k[1]} round {r['round']}: wrk errors {errors([r])}")
        self.out()

    def prime_notes(self):
        if not self.primes:
            return
        self.out("Before each keep-alive run, the variants with 100 or more peers were primed with 2 requests "
                 "per peer (not counted; see README). Priming, median over the rounds:\n")
        by_system = {}
        for r in self.primes:
            by_system.setdefault(r["system"], []).append(r)
        for system, runs in by_system.items():
            rate = median(r["requests"] / r["seconds"] for r in runs if r["seconds"])
            secs = median(r["seconds"] for r in runs)
            conns = median(max(r["backend_accepts"], 0) for r in runs)
            self.out(f"- {system}: {runs[0]['requests']:,} requests in {secs:.1f} s ({rate:,.0f} rps), "
                     f"{conns:,.0f} new upstream connections")
            for r in runs:
                if not r.get("ok"):
                    self.problems.append(f"priming {system} round {r['round']}: non-200 answers or wrk failed")
        self.out()

    def transfer_size(self):
        sizes = {r["bytes_expected"] for runs in self.transfers.values() for r in runs}
        size = max(sizes) if sizes else 1 << 30
        return f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / (1 << 20):g} MiB"

    def transfer_table(self):
        if not self.transfers:
            return
        self.out(f"### {self.transfer_size()} through the proxy (curl; the proxy's RSS sampled every 20 ms)\n")
        self.out("| system | direction | MB/s | × nginx | RSS before MB | peak RSS growth MB | proxy CPU s | ok |")
        self.out("|---|---|---:|---:|---:|---:|---:|---|")
        for (mode, system), runs in self.transfers.items():
            m = median(r["mb_s"] for r in runs)
            ref_runs = self.transfers.get((mode, REFERENCE))
            ref = median(r["mb_s"] for r in ref_runs) if ref_runs else None
            ok = all(r["ok"] for r in runs)
            if not ok:
                for r in runs:
                    if not r["ok"]:
                        self.problems.append(f"{mode} {system} round {r['round']}: transfer failed "
                                             f"(http {r['http_code']}, {r['bytes']} of {r['bytes_expected']} "
                                             f"bytes, {r['curl_error']})")
            self.out(f"| {system} | {mode} | {m:,.0f} | {(m / ref) if ref else 0:.2f} | "
                     f"{median(r['rss_before_kb'] for r in runs) * 1024 / MB:.0f} | "
                     f"{max(r['rss_growth_mb'] for r in runs):.1f} | "
                     f"{median(r['proxy_cpu_s'] for r in runs):.1f} | {'yes' if ok else 'NO'} |")
        self.out()

    def registration_table(self):
        if not self.registrations:
            return
        self.out("### Registrations through the admin API (`GET /upstream/add`, one keep-alive connection)\n")
        self.out("| system | what | requests | seconds | per second | failed |")
        self.out("|---|---|---:|---:|---:|---:|")
        for r in self.registrations:
            self.out(f"| {r['system']} | {r['what']} | {r['requests']:,} | {r['seconds']:.2f} | "
                     f"{r['per_s']:,.0f} | {r['failed']} |")
        self.out()

    def targets(self):
        pypy = self.meta.get("python_impl") == "PyPy"
        rows = []

        def ratio(a, b):
            return a / b if a is not None and b else None

        ka_floor = 0.70 if pypy else 0.40
        r = ratio(self.metric("keepalive", "tproxy_n1"), self.metric("keepalive", REFERENCE))
        rows.append((f"keep-alive rps ≥ {ka_floor:.2f}× nginx ({'PyPy' if pypy else 'CPython'})",
                     r, r is not None and r >= ka_floor, "{:.3f}×"))
        r = ratio(self.p99("keepalive", "tproxy_n1"), self.p99("keepalive", REFERENCE))
        rows.append(("keep-alive p99 ≤ 3× nginx's", r, r is not None and r <= 3, "{:.2f}×"))
        r = ratio(self.metric("close", "tproxy_n1"), self.metric("close", REFERENCE))
        rows.append(("`Connection: close` rps ≥ 0.30× nginx", r, r is not None and r >= 0.30, "{:.3f}×"))
        r = ratio(self.metric("close", REFERENCE, cpu_us_per_req), self.metric("close", "tproxy_n1", cpu_us_per_req))
        rows.append(("`Connection: close` by CPU per request (nginx µs / tproxy µs) ≥ 0.30", r,
                     r is not None and r >= 0.30, "{:.3f}"))
        base = self.metric("keepalive", "tproxy_n1")
        for name, text, floor in (("tproxy_n10000", "10,000 peers within 5 % of 1 peer", 0.95),
                                  ("tproxy_g1000", "1,000 route groups within 5 % of 1", 0.95),
                                  ("tproxy_p20", "20 no-op plugins ≤ 15 % below 0 plugins", 0.85)):
            r = ratio(self.metric("keepalive", name), base)
            rows.append((text, r, r is not None and r >= floor, "{:.3f}× of tproxy_n1"))
        logged = self.metric("keepalive", "tproxy_log", cpu_us_per_req)
        bare = self.metric("keepalive", "tproxy_n1", cpu_us_per_req)
        if logged is not None and bare is not None:
            rows.append(("the default access log ≤ 5 µs of CPU per request (tproxy_log − tproxy_n1)",
                         logged - bare, logged - bare <= 5, "{:.1f} µs"))
        r = ratio(self.metric("body1m", "tproxy_n1", mbps), self.metric("body1m", REFERENCE, mbps))
        rows.append(("1 MB bodies ≥ 0.3× nginx's MB/s", r, r is not None and r >= 0.3, "{:.3f}×"))
        for mode in ("download", "upload", "upload_chunked"):
            runs = self.transfers.get((mode, "tproxy_n1"))
            g = max(x["rss_growth_mb"] for x in runs) if runs else None
            ok = runs is not None and all(x["ok"] for x in runs) and g < 100
            rows.append((f"{self.transfer_size()} {mode.replace('_', ' ')}: RSS growth < 100 MB", g, ok,
                         "{:.1f} MB"))
        rows = [row for row in rows if row[1] is not None]
        if not rows:
            return
        self.out("### Targets of issue 6 (tproxy_n1 unless named; ratios from this run)\n")
        self.out("| target | this run | met |")
        self.out("|---|---:|---|")
        for text, value, met, fmt in rows:
            self.out(f"| {text} | {fmt.format(value)} | {'yes' if met else '**no**'} |")
        self.out()
        self.peers_context()

    def peers_context(self):
        """nginx with 10,000 peers beside tproxy with 10,000 peers (each to its 1-peer self)."""
        ng = ratio_of(self.metric("keepalive", "nginx_n10000"), self.metric("keepalive", REFERENCE))
        tp = ratio_of(self.metric("keepalive", "tproxy_n10000"), self.metric("keepalive", "tproxy_n1"))
        if ng is None or tp is None:
            return

        def conns(system):
            c = self.metric("keepalive", system, upstream_conns_per_1k)
            return f"{c:,.0f}" if c is not None else "n/a"

        self.out(f"10,000 peers, for context (keep-alive rps): nginx_n10000 / nginx = {ng:.3f}×, "
                 f"tproxy_n10000 / tproxy_n1 = {tp:.3f}× (upstream connections opened per 1k requests: "
                 f"nginx_n10000 {conns('nginx_n10000')}, tproxy_n10000 {conns('tproxy_n10000')}; "
                 f"nginx keeps 64 idle upstream connections for the whole upstream). "
                 f"tproxy's CPU per request, user / sys µs: tproxy_n1 "
                 f"{fmt_split(self.wrk.get(('keepalive', 'tproxy_n1'), []))}, tproxy_n10000 "
                 f"{fmt_split(self.wrk.get(('keepalive', 'tproxy_n10000'), []))}.")
        self.out()

    def render(self):
        self.header()
        self.wrk_table("keepalive", "Client keep-alive (wrk -t1 -c CONNS, GET /api/x, 100-byte body)", rps, "rps")
        self.prime_notes()
        self.wrk_table("close", 'Client sends "Connection: close" (a new connection per request)', rps, "rps")
        self.wrk_table("body1m", "1 MB response body (keep-alive)", mbps, "MB/s")
        self.transfer_table()
        self.registration_table()
        self.targets()
        micro = self.results / "micro.md"
        if micro.exists() and micro.read_text().strip():
            self.out("### Micro-benchmarks (bench/micro.py, pinned to the proxy CPU)\n")
            self.out(micro.read_text().strip())
            self.out()
        if self.problems:
            self.out("### Problems\n")
            for p in self.problems:
                self.out(f"- {p}")
            self.out()
        text = "\n".join(self.lines)
        (self.results / "table.md").write_text(text + "\n")
        print(text)


def main(argv):
    summary = Summary(Path(argv[1]))
    summary.render()
    if "--check" in argv[2:]:
        if summary.problems or not (summary.wrk or summary.transfers):
            print("bench check FAILED", file=sys.stderr)
            return 1
        print("bench check passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
