"""
A differential run of what tproxy and nginx (``proxy_http_version 1.1``,
upstream keepalive) make of what an upstream SENDS, over real sockets: each
vector is the exact bytes a fake upstream (raw sockets) answers a request
with, through tproxy (``twistd -n --pidfile= tproxy -c CONF``, one static
peer) and nginx side by side, each with its own copy of the upstream.  For
each vector: what the client received, whether its connection closed, and
whether the upstream connection was used again by the next request (a
``GET /v/ok`` on a new client connection).  Not a test: a tool for an audit
(nginx must be installed)::

    python bench/tools/h1_response_differential.py            # all vectors
    TPROXY_PARSER=python python bench/tools/h1_response_differential.py --only 'cl-|te-'

The vectors and their options: :mod:`h1_response_vectors`.
"""

import argparse
import itertools
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from h1_rig import NGINX_CONF, free_base, start_tproxy, wait_port  # noqa: E402
from h1_response_vectors import OK, VECTORS  # noqa: E402

def parse_req(buf):
    """``(method, path, content-length, rest)`` of a request head in ``buf``, or ``None``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    method, path = lines[0].split(b" ")[:2]
    cl = 0
    chunked = False
    for line in lines[1:]:
        n, _, v = line.partition(b":")
        if n.strip().lower() == b"content-length":
            cl = int(v)
        if n.strip().lower() == b"transfer-encoding":
            chunked = True
    return method, path.decode(), cl, chunked, buf[end + 4:]


class Upstream(object):
    """A raw-socket upstream answering ``/v/NAME`` with vector NAME's bytes;
    ``log`` has ``(connection id, path)`` per request read."""

    def __init__(self, port):
        self.log = []
        self.ids = itertools.count()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            c, _ = self.sock.accept()
            threading.Thread(target=self.conn, args=(c, next(self.ids)), daemon=True).start()

    def conn(self, c, cid):
        buf = b""
        try:
            while True:
                r = parse_req(buf)
                while r is None:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                    r = parse_req(buf)
                method, path, cl, chunked, buf = r
                name = path.split("/")[-1]
                vec = VECTORS_BY_NAME.get(name, ("ok", OK, {}))
                opts = vec[2]
                if not opts.get("early"):
                    if chunked:
                        while not buf.endswith(b"0\r\n\r\n"):
                            buf += c.recv(65536)
                        buf = b""
                    else:
                        while len(buf) < cl:
                            data = c.recv(65536)
                            if not data:
                                return
                            buf += data
                        buf = buf[cl:]
                else:
                    buf = b""
                self.log.append((cid, path))
                c.sendall(vec[1])
                if opts.get("later"):
                    time.sleep(0.3)
                    c.sendall(opts["later"])
                if opts.get("reset"):
                    time.sleep(0.2)
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if opts.get("close"):
                    c.shutdown(socket.SHUT_WR)
                    time.sleep(0.2)
                    return
                if opts.get("early"):
                    # drain the body the client still sends
                    c.settimeout(1.0)
                    try:
                        while c.recv(65536):
                            pass
                    except socket.timeout:
                        pass
                    c.settimeout(None)
        except (OSError, ValueError):
            pass
        finally:
            c.close()


VECTORS_BY_NAME = {v[0]: v for v in VECTORS}


def client(port, name, opts, idle=1.0):
    """Send the vector's request; ``(bytes received, closed)``."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(idle)
    method = opts.get("method", "GET").encode()
    if opts.get("early"):
        s.sendall(b"POST /v/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" % name.encode()
                  + b"a" * 50000)
        time.sleep(0.3)
        try:
            s.sendall(b"a" * 50000)
        except OSError:
            pass
    else:
        s.sendall(b"%s /v/%s HTTP/1.%d\r\nHost: x\r\n\r\n" % (method, name.encode(),
                                                              0 if opts.get("http10") else 1))
    out = b""
    closed = False
    sent_second = False
    try:
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                if opts.get("keepalive") and not sent_second:
                    sent_second = True
                    s.sendall(b"GET /v/ok HTTP/1.1\r\nHost: x\r\n\r\n")
                    out += b"<<second>>"
                    continue
                break
            if not data:
                closed = True
                break
            out += data
    except OSError as e:
        out += b"<<%s>>" % type(e).__name__.encode()
        closed = True
    s.close()
    return out, closed


#: the request tool's nginx (``h1_rig.NGINX_CONF``), with a read timeout for
#: the vectors that never end, and request bodies streamed (the early answers)
NGINX_EXTRA = """    proxy_read_timeout 3s;
    client_max_body_size 0;
    proxy_request_buffering off;
"""


def show(out, limit):
    # the Date lines differ run to run
    out = re.sub(rb"Date: [^\r]*", b"Date: *", out)
    r = repr(out)[2:-1]
    return r if len(r) <= limit else r[:limit] + "...(%d bytes)" % len(out)


def lint(httplint, out):
    """The WARN and BAD notes of REDbot's linter (``httplint``, from
    ``pip install httplint``) on the first response in ``out``."""
    first = out.split(b"<<second>>")[0]
    if not first.startswith(b"HTTP/"):
        return set()
    text = subprocess.run([httplint, "-n"], input=first, capture_output=True, timeout=60).stdout
    return {re.sub(r"\d+", "N", x.strip()) for x in text.decode("utf-8", "replace").splitlines()
            if x.startswith(("* [WARN]", "* [BAD]"))}


def reused(up, name):
    """Whether the ``/v/ok`` after vector ``name`` went on its connection."""
    cids = [c for c, p in up.log if p.endswith("/" + name)]
    after = [c for c, p in up.log if p.endswith("/ok-after")]
    if not cids or not after:
        return "?"
    return "REUSED" if after[-1] == cids[-1] else "new"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--json", default="")
    ap.add_argument("--httplint", help="the httplint command: print the notes that differ")
    args = ap.parse_args()
    base = free_base()
    tp, ng, admin, up_tp, up_ng = base, base + 1, base + 2, base + 3, base + 4
    run = tempfile.mkdtemp(prefix="h1resp")
    os.chmod(run, 0o755)   # (nginx's worker writes its temporary files there)
    procs = []
    results = {}
    try:
        u_tp, u_ng = Upstream(up_tp), Upstream(up_ng)
        with open(os.path.join(run, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(run=run, backend=up_ng, port=ng, extra=NGINX_EXTRA))
        procs.append(subprocess.Popen(["nginx", "-e", os.path.join(run, "nginx.error.log"),
                                       "-c", os.path.join(run, "nginx.conf")]))
        procs.append(start_tproxy(
            run, tp, admin, upstreams={"default": {"peers": ["127.0.0.1:%d" % up_tp]}},
            timeouts={"read": 3}, proxy={"next_upstream": []}))
        for port in (tp, ng):
            wait_port(port)
        only = re.compile(args.only)
        for name, _, opts in VECTORS:
            if not only.search(name):
                continue
            rows = {}

            def one(label, port, up):
                out, closed = client(port, name, opts)
                time.sleep(0.1)
                client(port, "ok-after", {})
                rows[label] = (out, closed, reused(up, name))

            threads = [threading.Thread(target=one, args=a) for a in
                       (("tproxy", tp, u_tp), ("nginx", ng, u_ng))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print("== %s" % name)
            for label in ("tproxy", "nginx"):
                out, closed, re_ = rows[label]
                print("  %-6s %s %-6s %s" % (label, "C" if closed else "W", re_, show(out, args.limit)))
            results[name] = {k: [show(v[0], 100000), v[1], v[2]] for k, v in rows.items()}
            if args.httplint:
                notes = {k: lint(args.httplint, v[0]) for k, v in rows.items()}
                for x in sorted(notes["tproxy"] - notes["nginx"]):
                    print("  lint, tproxy only: %s" % x)
                for x in sorted(notes["nginx"] - notes["tproxy"]):
                    print("  lint, nginx only:  %s" % x)
            sys.stdout.flush()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        with open(os.path.join(run, "tproxy.log")) as f:
            log = f.read()
        print("tracebacks in tproxy's log: %d" % log.count("Traceback"))
        shutil.copy(os.path.join(run, "tproxy.log"), "/tmp/h1resp-tproxy.log")
        shutil.copy(os.path.join(run, "nginx.error.log"), "/tmp/h1resp-nginx.log")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
