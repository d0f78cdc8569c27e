"""
What one no-op hook implementation costs in a phase walk, against the bare
Python call, counted by callgrind: 20 bound methods returning ``None``,
called N times by

- ``walk``: :func:`tproxy.phase_walks._walker`'s walk (``until_response``,
  straight-line on CPython: ``r = f(ctx)``, ``if r is not None``);
- ``bare``: a function calling them as statements (``f(ctx)``, no result
  kept): the floor;
- ``empty``: a function that calls nothing (subtracted from both).

Runs itself under ``valgrind --tool=callgrind`` with N = 10,000 and 30,000
and prints the instructions per implementation call (the difference, so
that the start-up cancels out).  See bench/README.md, "stop 30, hot14".

    python bench/tools/hook_calls.py
"""

import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

IMPLS = 20


class NoOp(object):
    def access(self, ctx):
        return None


def _statements(fns):
    """A function calling each of ``fns`` as a statement."""
    names = ["f%d" % i for i in range(len(fns))]
    source = "def make(%s):\n    def bare(ctx):\n%s        return None\n    return bare\n" % (
        ", ".join(names), "".join("        %s(ctx)\n" % n for n in names))
    namespace = {}
    exec(source, namespace)
    return namespace["make"](*fns)


def run(kind, n):
    from tproxy.phase_walks import _walker
    fns = [NoOp().access for _ in range(IMPLS)]
    if kind == "walk":
        fn = _walker("until_response", fns, True)
    elif kind == "bare":
        fn = _statements(fns)
    else:
        def fn(ctx):
            return None
    ctx = object()
    for _ in range(n):
        fn(ctx)


def main():
    if len(sys.argv) == 3:
        return run(sys.argv[1], int(sys.argv[2]))
    env = dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
    per = {}
    with tempfile.TemporaryDirectory() as out:
        for kind in ("walk", "bare", "empty"):
            totals = []
            for n in (10000, 30000):
                path = os.path.join(out, "callgrind.%s.%d" % (kind, n))
                subprocess.check_call(
                    ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + path,
                     sys.executable, os.path.abspath(__file__), kind, str(n)],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                with open(path) as f:
                    totals.append(next(int(line.split()[1]) for line in f
                                       if line.startswith("totals:")))
            per[kind] = (totals[1] - totals[0]) / 20000.0
    for kind in ("walk", "bare"):
        print("%s: %.0f instructions per implementation call" % (
            kind, (per[kind] - per["empty"]) / IMPLS))


if __name__ == "__main__":
    main()
