"""
A differential run of tproxy's HTTP/1.1 front end against nginx, over real
sockets: each vector of :mod:`tests.h1_vectors` goes to tproxy (started the
README way, ``twistd -n --pidfile= tproxy -c CONF``, a backend registered
through the admin API) and to nginx (``proxy_http_version 1.1``, upstream
keepalive) at the same time, each in front of its own copy of a backend that
records every byte it receives.  For each vector: the statuses each answers,
whether the connection closed, the requests each backend read, and whether
what tproxy forwarded is unambiguous
(:func:`tests.h1_vectors.forwarded_problems`).  Not a test: a tool for an
audit (nginx must be installed; it takes a few minutes)::

    python bench/tools/h1_differential.py                  # httptools
    TPROXY_PARSER=python python bench/tools/h1_differential.py
    python bench/tools/h1_differential.py --only 'host|absolute' --show
    python bench/tools/h1_differential.py --garden ~/http-garden   # + its TROPHIES.md payloads

Lines are printed for the vectors where the two differ (``DIFF``: status
classes, close, or requests forwarded), or where tproxy forwarded something
ambiguous (``UNSAFE``).  ``C``: the connection closed; ``W``: still open
after ``--idle`` seconds of silence.
"""

import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from tests import h1_vectors  # noqa: E402
from h1_rig import Rig, free_base  # noqa: E402


# -- the run ----------------------------------------------------------------------

def garden_vectors(path):
    """The payloads quoted in an http-garden checkout's ``TROPHIES.md``
    (read at run time: third-party data, not kept here)."""
    with open(os.path.join(path, "TROPHIES.md"), encoding="utf-8") as f:
        text = f.read()
    found = []
    for i, line in enumerate(text.splitlines()):
        if "Payload:" in line:
            for j, quoted in enumerate(re.findall(r"`([^`]*)`", line)):
                data = quoted.encode("latin-1").decode("unicode_escape").encode("latin-1")
                if not data.startswith(b"PRI * HTTP/2"):
                    found.append(("garden-%d-%d" % (i, j), data))
    return found


def classes(found):
    return ["%dxx" % (s // 100) if isinstance(s, int) else s for s in found]


def row(name, data, res):
    """One vector's comparison: ``flag`` holds ``DIFF`` (status classes,
    close, or requests forwarded differ) and ``UNSAFE`` (tproxy forwarded
    something ambiguous)."""
    t_, n_ = res["tp"], res["ng"]
    problems = []
    for stream in t_["data"].values():
        problems += h1_vectors.forwarded_problems(stream)[0]
    flag = ""
    if (classes(t_["statuses"]) != classes(n_["statuses"]) or t_["closed"] != n_["closed"]
            or len(t_["requests"]) != len(n_["requests"])):
        flag = "DIFF"
    if problems:
        flag += " UNSAFE"
    return dict(name=name, payload=data.hex(), flag=flag, problems=problems,
                tproxy=dict(statuses=t_["statuses"], closed=t_["closed"], requests=t_["requests"]),
                nginx=dict(statuses=n_["statuses"], closed=n_["closed"], requests=n_["requests"]))


def line(r):
    """The printed line of the row ``r``."""
    t_, n_ = r["tproxy"], r["nginx"]
    return "%-30s %-11s tproxy %s %s fwd=%d | nginx %s %s fwd=%d %s" % (
        r["name"][:30], r["flag"], t_["statuses"], "C" if t_["closed"] else "W",
        len(t_["requests"]), n_["statuses"], "C" if n_["closed"] else "W",
        len(n_["requests"]), r["problems"][:2])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="a regular expression on vector names")
    p.add_argument("--garden", help="an http-garden checkout: add its TROPHIES.md payloads")
    p.add_argument("--idle", type=float, default=0.5)
    p.add_argument("--base-port", type=int, help="five free ports from there (default: found)")
    p.add_argument("--show", action="store_true", help="print what each backend received")
    p.add_argument("--json", help="write every row there")
    args = p.parse_args()
    vectors = h1_vectors.all_vectors() + (garden_vectors(args.garden) if args.garden else [])
    if args.only:
        vectors = [v for v in vectors if re.search(args.only, v[0])]
    rig = Rig(args.base_port or free_base())
    try:
        rows = []
        for vector in vectors:
            res = rig.send(vector, args.idle)
            rows.append(row(vector[0], vector[1], res))
            if rows[-1]["flag"] or args.show:
                print(line(rows[-1]))
                if args.show:
                    for k in ("tp", "ng"):
                        print("    %s backend got %r" % (k, list(res[k]["data"].values())))
        print("%d vectors, %d differ, %d unsafe, %d tracebacks in tproxy's log (%s)" % (
            len(rows), sum("DIFF" in r["flag"] for r in rows),
            sum("UNSAFE" in r["flag"] for r in rows), rig.tracebacks(), rig.run))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    finally:
        rig.stop()


if __name__ == "__main__":
    main()
