#!/usr/bin/env python3
"""Where a parallel run of the test suite (``trial -jN``) spends its wall
time: each worker's timeline (which tests ran when), the idle tail of the
worker that finished first, the CPU of each worker process and of the
processes its tests started (twistd, redis-server, chromium), per test.

Usage (from the checkout, in the venv)::

    python bench/tools/test_timeline.py [-n 25] [--json FILE] [TRIAL ARGS, default: -j2 tests]

The manager process is trial's own (``python -m twisted.trial -jN``), with
the start and the end of each test recorded where the manager hands the
test to a worker and gets its result; a worker's CPU (``utime + stime``)
and its waited-for children's (``cutime + cstime``) are read from
``/proc/PID/stat`` at both points.  Linux, standard library and Twisted
only.  (The twistd processes forked by the tests' fork server,
``tests/zygote.py``, are the fork server's children: their CPU is in no
test's line; it reaches the worker that started the fork server when the
fork server ends, after the last test.  Nor is the CPU of headless
Chromium's renderers and GPU process, children of its zygote that no one
waits for: ~1 s of the browser test's, which /usr/bin/time does not see
either; a run in a PID namespace of its own, whose first process waits for
every orphan, counts them: ``unshare --pid --fork`` a script that runs the
command, then ``os.wait()`` until none is left, then reads
``getrusage(RUSAGE_CHILDREN)``.)  On a shared machine compare CPU, not wall,
between runs, and give the load average with any wall time.
"""

import argparse
import json
import os
import resource
import sys
import time

from twisted.scripts import trial
from twisted.trial._dist import disttrial, worker

_TICK = os.sysconf("SC_CLK_TCK")
#: [(worker index, test id, start, end, cpu, children's cpu)]
RECORDS = []
#: {id(LocalWorkerAMP): (index, pid)}
WORKERS = {}
T0 = time.perf_counter()
STARTED = {}


def _cpu(pid):
    """``(CPU, children's CPU)`` of process ``pid``, in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # fields[0] is the state (field 3): utime is field 14
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _patch():
    start = disttrial.WorkerPool.start

    async def recording_start(self, reactor):
        pool = await start(self, reactor)
        for index, (local, amp) in enumerate(zip(pool.workers, pool.ampWorkers)):
            WORKERS[id(amp)] = (index, local.transport.pid)
        STARTED["pool"] = time.perf_counter() - T0
        return pool
    disttrial.WorkerPool.start = recording_start

    run = worker.LocalWorkerAMP.run

    async def recording_run(self, testCase, result):
        index, pid = WORKERS.get(id(self), (-1, 0))
        began, cpu = time.perf_counter() - T0, _cpu(pid)
        try:
            return await run(self, testCase, result)
        finally:
            after = _cpu(pid)
            RECORDS.append((index, testCase.id(), began, time.perf_counter() - T0,
                            after[0] - cpu[0], after[1] - cpu[1]))
    worker.LocalWorkerAMP.run = recording_run


def report(records, total, top, out=sys.stdout):
    """Print each worker's totals, its idle tail, the tests that ran while
    only one worker was busy, and the ``top`` longest tests."""
    by_worker = {}
    for r in records:
        by_worker.setdefault(r[0], []).append(r)
    ends = {w: max(r[3] for r in rs) for w, rs in by_worker.items()}
    last = max(ends.values())
    out.write("\n{} tests, {:.2f} s of wall time (workers started at {:.2f} s); "
              "load average {}\n".format(len(records), total, STARTED.get("pool", 0),
                                        " ".join("%.2f" % x for x in os.getloadavg())))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.write("the manager (this process): CPU {:.2f} s\n".format(usage.ru_utime + usage.ru_stime))
    out.write("worker  tests   first    last    busy     CPU  children  idle tail\n")
    for w in sorted(by_worker):
        rs = by_worker[w]
        out.write("{:>6} {:>6} {:7.2f} {:7.2f} {:7.2f} {:7.2f} {:9.2f} {:10.2f}\n".format(
            w, len(rs), min(r[2] for r in rs), ends[w], sum(r[3] - r[2] for r in rs),
            sum(r[4] for r in rs), sum(r[5] for r in rs), last - ends[w]))
    first_done = min(ends.values())
    out.write("\ntests running after the first worker finished ({:.2f} s):\n".format(
        first_done))
    for r in sorted(records, key=lambda r: r[2]):
        if r[3] > first_done:
            out.write("  w{} {:7.2f} -> {:7.2f}  cpu {:5.2f}  children {:5.2f}  {}\n".format(
                r[0], r[2], r[3], r[4], r[5], r[1]))
    out.write("\n    wall      cpu children   start  w  test\n")
    for r in sorted(records, key=lambda r: r[2] - r[3])[:top]:
        out.write("{:8.3f} {:8.3f} {:8.3f} {:7.2f} {:2}  {}\n".format(
            r[3] - r[2], r[4], r[5], r[2], r[0], r[1]))
    # the timeline, in one-second columns: which module each worker ran
    out.write("\ntimeline (the module each worker was in at each second):\n")
    for second in range(int(last) + 1):
        cells = []
        for w in sorted(by_worker):
            names = [r[1].split(".")[-3] for r in by_worker[w]
                     if r[2] < second + 1 and r[3] > second]
            cells.append("{:<28}".format(",".join(sorted(set(names), key=names.index))[:28]
                                         or "-"))
        out.write("{:4d}s  {}\n".format(second, "  ".join(cells)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=25, help="how many tests to list")
    parser.add_argument("--json", help="also write the records to this file")
    args, rest = parser.parse_known_args()
    _patch()
    sys.argv = ["trial"] + (rest or ["-j2", "tests"])
    try:
        trial.run()
    except SystemExit as e:
        status = e.code
    else:
        status = 0
    total = time.perf_counter() - T0
    report(RECORDS, total, args.n)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"total": total, "records": RECORDS}, f)
    return status


if __name__ == "__main__":
    sys.exit(main())
