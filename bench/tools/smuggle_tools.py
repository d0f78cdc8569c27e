"""
Third-party HTTP request smuggling tools run against tproxy and nginx side by
side, in the rig of ``h1_rig.py`` (tproxy started the README way,
nginx ``proxy_pass``, each in front of its own backend that records every
byte it receives).  The tools are not kept here: give the path of a checkout
of each (the commits run on 2026-12-06 in brackets)::

    --smuggler DIR     defparam/smuggler (2be871e): its configs default.py,
                       doubles.py and exhaustive.py rendered by its own
                       lib/Payload.py into the four probes smuggler.py sends
                       per mutation (TE.CL and CL.TE, attack and edge length,
                       UTF-8 encoded as it sends them)
    --portswigger DIR  PortSwigger/http-request-smuggler (a25814d): every
                       HTTP/1 permutation src/burp/DesyncBox.java registers,
                       applied by a transliteration of its applyDesync to a
                       CL.TE and a TE.CL request (in the manner of its
                       resources/CL-TE.py and TE-CL.py) and to a
                       Content-Length request; a name the transliteration
                       lacks is printed
    --garden DIR       narfindustries/http-garden (ffb9164): the payloads of
                       TROPHIES.md, and --fuzz N requests made by its
                       tools/mutations.py from a few seeds (--seed); its own
                       parser (tools/http1.py) reads what each backend got

Each vector is flagged like ``h1_differential.py``'s (``DIFF`` against nginx,
``UNSAFE``: tproxy forwarded something ambiguous), plus ``SMUGGLED`` (a
backend behind tproxy read a request for /SMUGGLED that the client did not
send as one) and ``GARDEN`` (http-garden's parser finds more requests in what
tproxy forwarded than tproxy answered)::

    python bench/tools/smuggle_tools.py --smuggler S --portswigger P --garden G --fuzz 2000 -j 4
    TPROXY_PARSER=python python bench/tools/smuggle_tools.py ...

``--run-tools`` also runs smuggler.py itself and h2csmuggler.py
(BishopFox/h2csmuggler, 7ea573a; needs ``h2``: ``--tools-python``) against
each proxy, unmodified, and prints their verdicts.
"""

import argparse
import collections
import json
import os
import queue
import random
import re
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from h1_differential import garden_vectors, line, row  # noqa: E402
from h1_rig import Rig, backend_view, free_base  # noqa: E402

G = b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"
SM = b"GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"


# -- defparam/smuggler ------------------------------------------------------------

def smuggler_vectors(path, configs=("default", "doubles", "exhaustive")):
    """The probes smuggler.py sends (``_check_tecl``/``_check_clte``, each with
    the attack and the edge length), from its configs and its Payload class."""
    sys.path.insert(0, path)
    from lib.Payload import Chunked, EndChunk, Payload
    random.seed(0)
    seen, found = set(), []
    for config in configs:
        mutations = {}
        with open(os.path.join(path, "configs", config + ".py")) as f:
            exec(f.read(), {"Payload": Payload, "mutations": mutations})
        for name, payload in mutations.items():
            for kind, cl, body in (("tecl", 6, EndChunk + "X"), ("tecl-edge", 5, EndChunk + "X"),
                                   ("clte", 4, Chunked("Z") + EndChunk),
                                   ("clte-edge", 11, Chunked("Z") + EndChunk)):
                payload.host, payload.method, payload.endpoint = "x", "POST", "/"
                payload.cl, payload.body = cl, body
                data = str(payload).encode()
                key = re.sub(rb"cb=\d+", b"", data)
                if key not in seen:
                    seen.add(key)
                    found.append(("smuggler-%s-%s-%s" % (config, kind, name), data))
    return found


# -- PortSwigger/http-request-smuggler ----------------------------------------------

def _get_header(request, name):
    m = re.search(r"\r\n%s: ([^\r\n]*)" % re.escape(name), request)
    return m.group(1) if m else ""


def _add_header(request, name, value):
    """``Utilities.addOrReplaceHeader``."""
    if ("\r\n%s: " % name) in request:
        return re.sub(r"(\r\n%s: )[^\r\n]*" % re.escape(name), lambda m: m.group(1) + value, request, 1)
    return request.replace("\r\n", "\r\n%s: %s\r\n" % (name, value), 1)


def apply_desync(request, header, technique, special):
    """``DesyncBox.applyDesync`` transliterated: ``request`` with its
    ``header`` (Transfer-Encoding or Content-Length) disguised by
    ``technique``; None for a name this transliteration lacks."""
    h = header + ": "
    value = "chunked" if header == "Transfer-Encoding" else _get_header(request, "Content-Length")
    permuted = {
        "vanilla": h, "underjoin1": h.replace("-", "_"), "spacejoin1": h.replace("-", " "),
        "space1": h.replace(":", " :"), "nameprefix1": "Foo: bar\r\n " + h,
        "nameprefix2": "Foo: bar\r\n\t" + h, "valueprefix1": h + " ", "nospace1": h.replace(" ", ""),
        "linewrapped1": h.replace(" ", "\n "), "doublewrapped": h.replace(" ", "\r\n \r\n "),
        "gareth1": h.replace(":", "\n :"), "badsetupCR": "Foo: bar\r" + h,
        "badsetupLF": "Foo: bar\n" + h, "vertwrap": h + "\n\x0b", "tabwrap": h + "\r\n\t",
        "multiCase": h.upper()[:1].lower() + h.upper()[1:], "UPPERCASE": h.upper(),
        "0dwrap": "Foo: bar\r\n\r" + h, "0dspam": h[:3] + "\r" + h[3:],
        "connection": "Connection: " + header + "\r\n" + h, "spjunk": h.replace(":", " x:"),
        "backslash": h.replace("-", "\\"), "nel": h.replace(":", "\x85:"),
        "nbsp": h.replace(":", "\xa0:"), "shy2": h.replace(":", "\xad:"), "shy": h.replace("-", "\xad"),
        "spaceFF": h[:-1] + "\xff", "unispace": h[:-1] + "\xa0",
    }
    for i in special:
        permuted["spacefix1:%d" % i] = h.replace(" ", "") + chr(i)
        permuted["prefix1:%d" % i] = h + chr(i)
        permuted["namesuffix1:%d" % i] = h.replace(":", chr(i) + ":")
    if technique in permuted:
        return request.replace(h, permuted[technique])
    line_ = h + value
    whole = {
        "0dsuffix": (line_, line_ + "\r"), "tabsuffix": (line_, line_ + "\t"),
        "removed": (line_, "Nothing-interesting: 1"), "h1case": (line_, h.upper() + value),
        "commaCow": (h + "chunked", h + "chunked, identity"), "cowComma": (h, h + "identity, "),
        "contentEnc": (h, "Content-Encoding: "), "quoted": (h + "chunked", h + '"chunked"'),
        "aposed": (h + "chunked", h + "'chunked'"), "lazygrep": (h + "chunked", h + "chunk"),
        "revdualchunk": (h + "chunked", h + "identity\r\n" + h + "chunked"),
        "nested": (h + "chunked", h + "identity, chunked, identity"),
        "encode": (h + "chunked", "Transfer-%45ncoding: chunked"),
        "qencode": (h + "chunked", h + "=?iso-8859-1?B?Y2h1bmtlZA==?="),
        "qencodeutf": (h + "chunked", h + "=?UTF-8?B?Y2h1bmtlZA==?="),
        "accentTE": (h, "Transf\x82r-Encoding: "), "accentCH": (h + "chu", h + "ch\x96"),
        "CL-plus": (h, h + "+"), "CL-minus": (h, h + "-"), "CL-pad": (h, h + "0"),
        "CL-bigpad": (h, h + "00000000000"), "CL-spacepad": (h, h + "0 "),
        "CL-e": (line_, line_ + "e0"), "CL-dec": (line_, line_ + ".0"),
        "CL-commaprefix": (h, h + "0, "), "CL-commasuffix": (line_, line_ + ", 0"),
        "CL-error": (line_, "X-Invalid Y: \r\n" + line_),
    }
    for i in special:
        whole["suffix1:%d" % i] = (line_, line_ + chr(i))
    if technique in whole:
        return request.replace(*whole[technique])
    if technique == "badwrap":
        out = request.replace(h, "X-Blah-Ignore: ")
        return out.replace("\r\n", "\r\n " + h + _get_header(request, header) + "\r\n", 1)
    if technique in ("get", "options", "head"):
        return technique.upper() + request[request.index(" "):]
    if technique == "http1.0":
        return request.replace("HTTP/1.1", "HTTP/1.0", 1)
    if technique == "range":
        return _add_header(request, "Range", "bytes=0-0")
    if technique == "dualchunk":
        return _add_header(request, "Transfer-encoding", "identity")
    if technique == "bodysplit":
        out = _add_header(request.replace(h + "chunked", "X: y"), "Foo", "barzxaazz")
        return out.replace("barzxaazz", "barn\n\nTransfer-Encoding: chunked")
    if technique in ("CL-expect", "CL-expect-obfs"):
        obfuscated = technique.endswith("obfs")
        return _add_header(request, "Expect", ("x " if obfuscated else "") + "100-continue")
    return None


def portswigger_vectors(path):
    """``(vectors, names the transliteration lacks)``."""
    with open(os.path.join(path, "src", "burp", "DesyncBox.java")) as f:
        java = f.read()
    special = [int(x) for x in re.findall(r"chars\.add\((\d+)\)", java)]
    names = {}
    for box, name, loop in re.findall(r'(shared|h1|cl)Permutations\.register\("([^"]+)"(\+i)?', java):
        for n in ([name + str(i) for i in special] if loop else [name]):
            names[n] = box
    te_body = "0\r\n\r\n" + SM.decode()[:-4] + "\r\nX-Ignore: X"
    clte = ("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s" % (len(te_body), te_body))
    chunk = "%x\r\n%s\r\n0\r\n\r\n" % (len(SM), SM.decode())
    tecl = ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            "Transfer-Encoding: chunked\r\n\r\n" + chunk)
    cl = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(SM), SM.decode())
    found, lacking = [], []
    for name, box in names.items():
        bases = [("cl", cl, "Content-Length")] if box == "cl" else [
            ("clte", clte, "Transfer-Encoding"), ("tecl", tecl, "Transfer-Encoding")]
        for kind, base, header in bases:
            out = apply_desync(base, header, name, special)
            if out is None:
                lacking.append(name)
                break
            data = out.encode("latin-1") + (G if kind == "clte" else b"")
            found.append(("portswigger-%s-%s" % (kind, name), data))
    return found, lacking


# -- narfindustries/http-garden ---------------------------------------------------

def garden_tools(path, into):
    """Import http-garden's ``http1`` and ``mutations`` (Python 3.12 syntax:
    copied to ``into`` with the generic ``def f[T](`` spelled for 3.9+)."""
    tools = os.path.join(into, "garden-tools")
    os.makedirs(tools, exist_ok=True)
    for name in ("util.py", "http1.py", "mutations.py"):
        with open(os.path.join(path, "tools", name)) as f:
            text = f.read()
        text = re.sub(r"(?m)^def (\w+)\[[\w, ]+\]\(", r"def \1(", text)
        with open(os.path.join(tools, name), "w") as f:
            f.write("from __future__ import annotations\n" + text)
    sys.path.insert(0, tools)
    import http1
    import mutations
    return http1, mutations


def garden_fuzz(mutations, count, seed):
    """``count`` payloads, each a seed mutated 1-4 times by ``mutations.mutate``."""
    seeds = [[G], [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"],
             [b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"],
             [G + b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"]]
    rnd = random.Random(seed)
    found = []
    for i in range(count):
        random.seed(rnd.random())
        parts = rnd.choice(seeds)
        for _ in range(rnd.randint(1, 4)):
            parts = mutations.mutate(parts)
        parts = [p for p in parts if p] or [b""]
        found.append(("garden-fuzz-%d" % i, b"".join(parts), parts))
    return found


# -- the run ------------------------------------------------------------------------

def judge(r, res, http1):
    """Add ``SMUGGLED`` and ``GARDEN`` to the row ``r``."""
    sent = r["payload"].count(SM[:14].hex())
    for key, who in (("tp", "tproxy"), ("ng", "nginx")):
        lines = res[key]["requests"]
        if sum("/SMUGGLED" in x for x in lines) > sent:
            r["flag"] += " SMUGGLED" if key == "tp" else " ng-SMUGGLED"
        if http1 is not None:
            parsed = sum(len(http1.parse_request_stream(d)[0]) for d in res[key]["data"].values())
            r[who]["garden"] = parsed
            answered = sum(isinstance(s, int) and s >= 200 for s in res[key]["statuses"])
            if key == "tp" and parsed > answered:
                r["flag"] += " GARDEN"
    r["flag"] = r["flag"].strip()


def summary(rows):
    """``{source: Counter}``: the rows the same as nginx's, those where tproxy
    forwards fewer or more requests than nginx, where both refuse with
    another status or close, the rest, and the flags beyond DIFF."""
    out = {}
    for r in rows:
        source = r["name"].split("-")[0]
        if source == "garden":
            source = "garden-fuzz" if r["name"].startswith("garden-fuzz") else "garden-trophies"
        c = out.setdefault(source, collections.Counter())
        c["requests"] += 1
        t, n = r["tproxy"], r["nginx"]
        refused = [not any(isinstance(s, int) and 200 <= s < 300 for s in x["statuses"])
                   for x in (t, n)]
        if "DIFF" not in r["flag"]:
            c["same"] += 1
        elif len(t["requests"]) != len(n["requests"]):
            c["tproxy forwards %s" % ("fewer" if len(t["requests"]) < len(n["requests"])
                                      else "more")] += 1
        elif all(refused):
            c["both refuse"] += 1
        else:
            c["other"] += 1
        for flag in r["flag"].split():
            if flag != "DIFF":
                c[flag] += 1
    return out


#: the fields of an h2c upgrade, as a backend received them
_UPGRADE_FIELDS = re.compile(rb"(?im)^(?:upgrade|http2-settings|connection):[^\r]*")


def run_tools(rig, args):
    """smuggler.py and h2csmuggler.py, unmodified, against each proxy."""
    for key, port in (("tproxy", rig.tp), ("nginx", rig.ng)):
        if args.smuggler:
            for config in ("default.py", "doubles.py", "exhaustive.py"):
                out = subprocess.run(
                    [args.tools_python, "smuggler.py", "-u", "http://127.0.0.1:%d/" % port, "-c",
                     config, "-t", str(args.tool_timeout), "--no-color"],
                    cwd=args.smuggler, capture_output=True, text=True, timeout=3600).stdout
                verdicts = {}
                for name, verdict in re.findall(r"\[([^\]]+)\]\s*: ([^\r\n]*)", out):
                    if not verdict.startswith("Checking"):
                        verdicts[name] = re.sub(r"\d+\.\d+", "t", verdict.strip())
                counts = {}
                for v in verdicts.values():
                    counts[v] = counts.get(v, 0) + 1
                print("smuggler.py %-13s %-6s %d mutations: %s" % (config, key, len(verdicts), counts))
        if args.h2csmuggler:
            log = rig.logs["tp" if key == "tproxy" else "ng"]
            for extra in ([], ["--upgrade-only"]):
                start = os.path.getsize(log)
                out = subprocess.run(
                    [args.tools_python, "h2csmuggler.py", "-x", "http://127.0.0.1:%d/" % port, "--test"]
                    + extra, cwd=args.h2csmuggler, capture_output=True, text=True, timeout=120)
                got = b"".join(backend_view(log, start)[0].values())
                print("h2csmuggler --test %-14s %-6s %s; the backend got %d requests, %s" % (
                    " ".join(extra), key, (out.stdout + out.stderr).strip().splitlines(),
                    got.count(b" HTTP/1.1\r\n"), _UPGRADE_FIELDS.findall(got)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smuggler")
    p.add_argument("--portswigger")
    p.add_argument("--garden")
    p.add_argument("--h2csmuggler")
    p.add_argument("--fuzz", type=int, default=0, help="http-garden mutations to send")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--only", help="a regular expression on vector names")
    p.add_argument("-j", "--jobs", type=int, default=2, help="rigs side by side")
    p.add_argument("--idle", type=float, default=0.3)
    p.add_argument("--json", help="write every row there")
    p.add_argument("--diffs", action="store_true", help="print the rows that differ (DIFF) too")
    p.add_argument("--run-tools", action="store_true")
    p.add_argument("--tools-python", default=sys.executable)
    p.add_argument("--tool-timeout", type=float, default=2.0)
    args = p.parse_args()
    run = tempfile.mkdtemp(prefix="smuggle-")
    vectors, http1 = [], None
    if args.smuggler:
        vectors += smuggler_vectors(args.smuggler)
    if args.portswigger:
        found, lacking = portswigger_vectors(args.portswigger)
        vectors += found
        if lacking:
            print("not transliterated from DesyncBox.java: %s" % sorted(set(lacking)))
    if args.garden:
        http1, mutations = garden_tools(args.garden, run)
        vectors += garden_vectors(args.garden) + garden_fuzz(mutations, args.fuzz, args.seed)
    if args.only:
        vectors = [v for v in vectors if re.search(args.only, v[0])]
    todo = queue.Queue()
    for i, v in enumerate(vectors):
        todo.put((i, v))
    rows = [None] * len(vectors)
    rigs = []

    def work(rig):
        while True:
            try:
                i, v = todo.get_nowait()
            except queue.Empty:
                return
            res = rig.send(v, args.idle)
            r = row(v[0], v[1], res)
            judge(r, res, http1)
            rows[i] = r
            if r["flag"] and (r["flag"] != "DIFF" or args.diffs):
                print(line(r) + (" garden tp=%s ng=%s" % (r["tproxy"].get("garden"),
                                                           r["nginx"].get("garden"))))
    try:
        for _ in range(max(1, args.jobs)):
            rigs.append(Rig(free_base()))
        if args.run_tools:
            run_tools(rigs[0], args)
        threads = [threading.Thread(target=work, args=(rig,)) for rig in rigs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for source, counts in summary(rows).items():
            print("%-16s %s" % (source, dict(counts)))
        print("%d tracebacks in tproxy's logs" % sum(rig.tracebacks() for rig in rigs))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    finally:
        for rig in rigs:
            rig.stop()


if __name__ == "__main__":
    main()
