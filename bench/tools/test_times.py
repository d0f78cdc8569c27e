#!/usr/bin/env python3
"""Where the test suite's time goes: trial, run as ``python -m twisted.trial``
runs it, with each test's wall time, its CPU time in this process and the
CPU time of the child processes it waited for (twistd, redis-server,
chromium); then the modules and the tests that cost most.

Usage (from the checkout, in the venv)::

    python bench/tools/test_times.py [-n 30] [--json FILE] [TRIAL ARGS, default: tests]

``wait`` = wall - CPU - children's CPU: sockets, timers, subprocesses
starting, and, on a loaded machine, the time this process waited for a core
(compare CPU, not wall, between runs on a shared machine).  The whole run's
garbage collection time is printed too.  Sequential runs only (``-j`` runs
the tests in other processes).  Standard library and Twisted only.  The
twistd processes forked by the tests' fork server (``tests/zygote.py``) are
its children, not this process's: their CPU is in no test's line (it is in
the run's total once the fork server has ended).
"""

import argparse
import collections
import gc
import json
import resource
import sys
import time

from twisted.scripts import trial
from twisted.trial import reporter


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class TimingReporter(reporter.TreeReporter):
    """trial's usual reporter, which also records ``(test id, wall, CPU,
    children's CPU)`` of each test in :attr:`times`."""

    times = []

    def startTest(self, test):
        self._started = (time.perf_counter(), time.process_time(), _children_cpu())
        reporter.TreeReporter.startTest(self, test)

    def stopTest(self, test):
        reporter.TreeReporter.stopTest(self, test)
        wall, cpu, children = self._started
        self.times.append((test.id(), time.perf_counter() - wall,
                           time.process_time() - cpu, _children_cpu() - children))


class _GCTimer(object):
    """Sums the time of the garbage collections (``gc.callbacks``)."""

    def __init__(self):
        self.seconds = 0.0
        self.collections = 0
        self._start = None

    def __call__(self, phase, info):
        if phase == "start":
            self._start = time.perf_counter()
        elif self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.collections += 1


def report(times, total, top, out=sys.stdout):
    """Print the totals, the ``top`` modules and the ``top`` tests."""
    def line(wall, cpu, children, name):
        out.write("{:8.3f} {:8.3f} {:8.3f} {:8.3f}  {}\n".format(
            wall, cpu, children, wall - cpu - children, name))
    out.write("\n{} tests, {:.2f} s of wall time; in tests: CPU {:.2f} s, children's "
              "CPU {:.2f} s\n".format(len(times), total, sum(t[2] for t in times),
                                      sum(t[3] for t in times)))
    modules = collections.OrderedDict()
    for name, wall, cpu, children in times:
        m = modules.setdefault(name.rsplit(".", 2)[0], [0.0, 0.0, 0.0, 0])
        m[0] += wall
        m[1] += cpu
        m[2] += children
        m[3] += 1
    out.write("\n    wall      cpu children     wait  module (tests)\n")
    for name, (wall, cpu, children, n) in sorted(modules.items(),
                                                 key=lambda kv: -kv[1][0])[:top]:
        line(wall, cpu, children, "{} ({})".format(name, n))
    out.write("\n    wall      cpu children     wait  test\n")
    for name, wall, cpu, children in sorted(times, key=lambda t: -t[1])[:top]:
        line(wall, cpu, children, name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30, help="modules and tests shown")
    parser.add_argument("--json", help="also write [[test id, wall, cpu, children]] here")
    args, trial_args = parser.parse_known_args(argv)
    config = trial.Options()
    config.parseOptions(trial_args or ["tests"])
    if config["jobs"]:
        parser.error("-j runs the tests in other processes: time a sequential run")
    runner = trial._makeRunner(config)
    runner.reporterFactory = TimingReporter
    suite = trial._getSuite(config)
    collector = _GCTimer()
    gc.callbacks.append(collector)
    started = time.perf_counter()
    result = runner.run(suite)
    total = time.perf_counter() - started
    gc.callbacks.remove(collector)
    report(TimingReporter.times, total, args.n)
    sys.stdout.write("garbage collection: {:.2f} s in {} collections\n".format(
        collector.seconds, collector.collections))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(TimingReporter.times, f)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
