#!/usr/bin/env python3
"""
What the kernel sees of one request, for running servers (standard library only).

    per_request.py [--seconds 5] [--conns 32] [--rounds 3] [--load-cpu 1] [--strace]
                   [--close] LABEL=PID=URL [LABEL=PID=URL ...]

Runs ``wrk -t1 -cCONNS -dSECONDS URL`` pinned to --load-cpu, for each target in
turn (interleaved rounds), and prints per request, for the process PID (for
nginx: its worker's pid); ``--close`` sends ``Connection: close`` (a new
connection per request):

- ``user`` / ``sys``: CPU microseconds (``/proc/PID/stat`` utime, stime);
- ``minflt`` / ``majflt``: page faults (``/proc/PID/stat``);
- ``vcsw`` / ``ivcsw``: voluntary / involuntary context switches (``/proc/PID/status``);
- ``segs``: TCP segments sent, machine-wide (``/proc/net/snmp`` OutSegs: a
  proxied request on loopback is 4, anything else on the machine adds to it);
- ``ipi``: rescheduling and function-call interrupts (``/proc/interrupts`` RES +
  CAL, all CPUs: how often a wake-up needed another CPU interrupted).

``--strace``: one more run per target under ``strace -c -f -p PID`` (slow:
only the counts per request mean anything), printing the system calls made
per request.

The figures are per request *under this load*: on a shared machine, compare
targets interleaved in the same run, never across runs.  Example (bench/README,
"PyPy: where the system time goes")::

    per_request.py nginx=$(pgrep -f 'nginx: worker' | head -1)=http://127.0.0.1:18400/api/x \\
                   pypy=$(pgrep -f 'tproxy -c' | head -1)=http://127.0.0.1:18500/api/x
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_counts(pid):
    """utime, stime (ticks), minflt, majflt, voluntary and involuntary switches."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/%d/status" % pid) as f:
        status = f.read()
    vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
    nvol = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
    # after the command name: state=0 ... minflt=7 majflt=9 utime=11 stime=12
    return {"utime": int(fields[11]), "stime": int(fields[12]), "minflt": int(fields[7]),
            "majflt": int(fields[9]), "vcsw": vol, "ivcsw": nvol}


def machine_counts():
    """TCP OutSegs and RES + CAL interrupts, machine-wide."""
    with open("/proc/net/snmp") as f:
        tcp = [line.split() for line in f if line.startswith("Tcp:")]
    segs = int(tcp[1][tcp[0].index("OutSegs")])
    ipi = 0
    with open("/proc/interrupts") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in ("RES:", "CAL:"):
                ipi += sum(int(p) for p in parts[1:] if p.isdigit())
    return {"segs": segs, "ipi": ipi}


def wrk(url, seconds, conns, cpu, prefix=(), close=False):
    out = subprocess.run(list(prefix) + ["taskset", "-c", str(cpu), "wrk", "-t1",
                                         "-c%d" % conns, "-d%ds" % seconds, url]
                         + (["-H", "Connection: close"] if close else []),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True, check=False).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        sys.exit("wrk gave no result for %s:\n%s" % (url, out))
    return int(m.group(1))


def measure(pid, url, args):
    p0, m0 = proc_counts(pid), machine_counts()
    n = wrk(url, args.seconds, args.conns, args.load_cpu, close=args.close)
    p1, m1 = proc_counts(pid), machine_counts()
    d = {k: p1[k] - p0[k] for k in p0}
    d.update({k: m1[k] - m0[k] for k in m0})
    return n, {
        "user": d["utime"] / CLK_TCK / n * 1e6, "sys": d["stime"] / CLK_TCK / n * 1e6,
        "minflt": d["minflt"] / n, "majflt": d["majflt"] / n, "vcsw": d["vcsw"] / n,
        "ivcsw": d["ivcsw"] / n, "segs": d["segs"] / n, "ipi": d["ipi"] / n}


def strace_counts(pid, url, args):
    """System calls per request: strace -c -f -p PID over one wrk run."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out.name],
                                  stderr=subprocess.DEVNULL)
        try:
            subprocess.run(["sleep", "0.5"], check=False)
            n = wrk(url, args.seconds, args.conns, args.load_cpu, close=args.close)
        finally:
            tracer.send_signal(2)
            tracer.wait()
        calls = {}
        for line in out.read().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    return n, calls


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="+", metavar="LABEL=PID=URL")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--load-cpu", type=int, default=1)
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--close", action="store_true",
                    help="send Connection: close (a new connection per request)")
    args = ap.parse_args(argv)
    targets = []
    for t in args.targets:
        label, pid, url = t.split("=", 2)
        targets.append((label, int(pid), url))
    for r in range(1, args.rounds + 1):
        for label, pid, url in targets:
            n, f = measure(pid, url, args)
            print("round %d %-10s %8d requests  cpu %5.1f us (user %4.1f sys %4.1f)  "
                  "minflt %.3f majflt %.3f vcsw %.4f ivcsw %.4f segs %.2f ipi %.3f"
                  % (r, label, n, f["user"] + f["sys"], f["user"], f["sys"], f["minflt"],
                     f["majflt"], f["vcsw"], f["ivcsw"], f["segs"], f["ipi"]), flush=True)
    if args.strace:
        for label, pid, url in targets:
            n, calls = strace_counts(pid, url, args)
            print("strace %-10s %d requests: " % (label, n) + ", ".join(
                "%s %.3f" % (name, c / n) for name, c in
                sorted(calls.items(), key=lambda kv: -kv[1]) if c / n >= 0.001), flush=True)


if __name__ == "__main__":
    main()
