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

A vector is ``(name, response bytes, options)``; options: ``close`` (the
upstream closes after sending), ``method`` (``HEAD``), ``early`` (the
upstream answers once the request head is read, not its body: the client
sends a 100,000-byte body in two halves), ``later`` (bytes sent by the
upstream 0.3 s after the response), ``reset`` (the upstream resets the
connection 0.2 s after the response), ``keepalive`` (the client sends a second
``GET /v/ok`` on the same connection once the first response is read).
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
import random
import json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from h1_differential import NGINX_CONF  # noqa: E402

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def head(status=b"200 OK", *fields):
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


CL2 = b"Content-Length: 2"
TE = b"Transfer-Encoding: chunked"

VECTORS = [
    ("ok", OK, {}),
    ("1xx-100-unsolicited", head(b"100 Continue") + OK, {}),
    ("1xx-102", head(b"102 Processing") + OK, {}),
    ("1xx-103-hints", head(b"103 Early Hints", b"Link: </s.css>; rel=preload") + OK, {}),
    ("1xx-many", head(b"100 Continue") + head(b"102 Processing") + head(b"103 Early Hints", b"Link: <a>")
     + head(b"103 Early Hints", b"Link: <b>") + OK, {}),
    ("1xx-with-cl", head(b"100 Continue", b"Content-Length: 5") + OK, {}),
    ("101-unasked", head(b"101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade")
     + b"hello", {}),
    ("204-cl-body", head(b"204 No Content", b"Content-Length: 5") + b"hello", {}),
    ("204-cl-nobody", head(b"204 No Content", b"Content-Length: 5"), {}),
    ("204-chunked", head(b"204 No Content", TE) + b"0\r\n\r\n", {}),
    ("204-chunked-nobody", head(b"204 No Content", TE), {}),
    ("304-cl", head(b"304 Not Modified", b"Content-Length: 10", b"ETag: \"x\""), {}),
    ("304-cl-body", head(b"304 Not Modified", b"Content-Length: 5") + b"hello", {}),
    ("304-chunked", head(b"304 Not Modified", TE), {}),
    ("head-cl", head(b"200 OK", b"Content-Length: 10"), {"method": "HEAD"}),
    ("head-chunked", head(b"200 OK", TE), {"method": "HEAD"}),
    ("head-nolength", head(b"200 OK"), {"method": "HEAD"}),
    ("head-chunked-body", head(b"200 OK", TE) + b"0\r\n\r\n", {"method": "HEAD"}),
    ("head-cl-body", head(b"200 OK", b"Content-Length: 5") + b"hello", {"method": "HEAD"}),
    ("te-and-cl", head(b"200 OK", TE, b"Content-Length: 100") + b"2\r\nok\r\n0\r\n\r\n", {}),
    ("cl-and-te", head(b"200 OK", b"Content-Length: 100", TE) + b"2\r\nok\r\n0\r\n\r\n", {}),
    ("cl-two-differ", head(b"200 OK", CL2, b"Content-Length: 3") + b"okk", {}),
    ("cl-two-same", head(b"200 OK", CL2, CL2) + b"ok", {}),
    ("cl-list-same", head(b"200 OK", b"Content-Length: 2,2") + b"ok", {}),
    ("cl-list-1-1", head(b"200 OK", b"Content-Length: 1,1") + b"o", {}),
    ("cl-negative", head(b"200 OK", b"Content-Length: -1") + b"ok", {"close": True}),
    ("cl-huge", head(b"200 OK", b"Content-Length: 99999999999999999999999") + b"ok", {"close": True}),
    ("cl-big-cut", head(b"200 OK", b"Content-Length: 9223372036854775807") + b"ok", {"close": True}),
    ("cl-alpha", head(b"200 OK", b"Content-Length: abc") + b"ok", {"close": True}),
    ("cl-plus", head(b"200 OK", b"Content-Length: +2") + b"ok", {}),
    ("cl-hex", head(b"200 OK", b"Content-Length: 0x2") + b"ok", {}),
    ("cl-empty", head(b"200 OK", b"Content-Length: ") + b"ok", {"close": True}),
    ("cl-space-inside", head(b"200 OK", b"Content-Length: 1 1") + b"ok", {"close": True}),
    ("cl-leading-zero", head(b"200 OK", b"Content-Length: 002") + b"ok", {}),
    ("te-gzip", head(b"200 OK", b"Transfer-Encoding: gzip") + b"xx", {"close": True}),
    ("te-chunked-gzip", head(b"200 OK", b"Transfer-Encoding: chunked, gzip") + b"xx", {"close": True}),
    ("te-gzip-chunked", head(b"200 OK", b"Transfer-Encoding: gzip, chunked") + b"2\r\nxx\r\n0\r\n\r\n", {}),
    ("te-identity", head(b"200 OK", b"Transfer-Encoding: identity") + b"xx", {"close": True}),
    ("te-identity-cl", head(b"200 OK", b"Transfer-Encoding: identity", CL2) + b"ok", {}),
    ("te-twice-chunked", head(b"200 OK", TE, TE) + b"2\r\nok\r\n0\r\n\r\n", {}),
    ("te-chunked-chunked", head(b"200 OK", b"Transfer-Encoding: chunked, chunked") + b"2\r\nok\r\n0\r\n\r\n", {}),
    ("te-Chunked-case", head(b"200 OK", b"Transfer-Encoding: CHUNKED") + b"2\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-ok", head(b"200 OK", TE) + b"2\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-bad-size", head(b"200 OK", TE) + b"zz\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-size-overflow", head(b"200 OK", TE) + b"10000000000000002\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-size-0x", head(b"200 OK", TE) + b"0x2\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-size-space", head(b"200 OK", TE) + b"2 \r\nok\r\n0\r\n\r\n", {}),
    ("chunk-ext", head(b"200 OK", TE) + b"2;a=b\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-ext-quoted", head(b"200 OK", TE) + b"2;a=\"b;c\"\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-ext-ctl", head(b"200 OK", TE) + b"2;a\x00\r\nok\r\n0\r\n\r\n", {}),
    ("chunk-no-crlf-after", head(b"200 OK", TE) + b"2\r\nokXX0\r\n\r\n", {}),
    ("chunk-bare-lf", head(b"200 OK", TE) + b"2\nok\n0\n\n", {}),
    ("chunk-trailers", head(b"200 OK", TE, b"Trailer: X-T") + b"2\r\nok\r\n0\r\nX-T: 1\r\n\r\n", {}),
    ("chunk-trailer-bad", head(b"200 OK", TE) + b"2\r\nok\r\n0\r\nX-T 1\r\n\r\n", {}),
    ("chunk-last-missing", head(b"200 OK", TE) + b"2\r\nok\r\n", {"close": True}),
    ("obs-fold", head(b"200 OK", CL2, b"X-A: 1", b" 2") + b"ok", {}),
    ("nul-in-value", head(b"200 OK", CL2, b"X-A: 1\x002") + b"ok", {}),
    ("bare-cr-in-value", head(b"200 OK", CL2, b"X-A: 1\r2") + b"ok", {}),
    ("ctl-in-value", head(b"200 OK", CL2, b"X-A: 1\x012") + b"ok", {}),
    ("del-in-value", head(b"200 OK", CL2, b"X-A: 1\x7f2") + b"ok", {}),
    ("bare-lf-lines", b"HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nok", {}),
    ("bare-lf-one-field", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\n\r\nok", {}),
    ("space-before-colon", head(b"200 OK", CL2, b"X-A : 1") + b"ok", {}),
    ("space-before-colon-cl", head(b"200 OK", b"Content-Length : 2") + b"ok", {"close": True}),
    ("space-in-name", head(b"200 OK", CL2, b"X A: 1") + b"ok", {}),
    ("ctl-in-name", head(b"200 OK", CL2, b"X\x01A: 1") + b"ok", {}),
    ("empty-name", head(b"200 OK", CL2, b": 1") + b"ok", {}),
    ("no-colon", head(b"200 OK", CL2, b"Bogus") + b"ok", {}),
    ("leading-space-first-field", b"HTTP/1.1 200 OK\r\n X-A: 1\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-http10", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-http10-ka", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok", {}),
    ("status-http10-nolength", b"HTTP/1.0 200 OK\r\n\r\nbody", {"close": True}),
    ("status-http2", b"HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-http20", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-http12", b"HTTP/1.2 200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-lower", b"http/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-2000", b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-20", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-099", b"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-600", b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-999", b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-no-reason", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-empty-reason", b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-reason-odd", b"HTTP/1.1 200 O\xffk\tx\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-reason-ctl", b"HTTP/1.1 200 O\x01k\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-reason-nul", b"HTTP/1.1 200 O\x00k\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-reason-cr", b"HTTP/1.1 200 O\rX-Evil: 1\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-reason-lf", b"HTTP/1.1 200 O\nX-Evil: 1\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-two-spaces", b"HTTP/1.1  200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("status-leading-crlf", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", {}),
    ("http09", b"hello world\n", {"close": True}),
    ("no-length-close", head(b"200 OK") + b"body until close", {"close": True}),
    ("no-length-reset", head(b"200 OK") + b"body cut by a reset", {"reset": True}),
    ("no-length-close-ka", head(b"200 OK") + b"body until close", {"close": True, "keepalive": True}),
    ("no-length-close-http10", head(b"200 OK") + b"body until close", {"close": True, "http10": True}),
    ("chunked-http10", head(b"200 OK", TE) + b"2\r\nok\r\n0\r\n\r\n", {"http10": True}),
    ("cut-cl", head(b"200 OK", b"Content-Length: 10") + b"abc", {"close": True}),
    ("cut-cl-ka", head(b"200 OK", b"Content-Length: 10") + b"abc", {"close": True, "keepalive": True}),
    ("cut-chunked", head(b"200 OK", TE) + b"5\r\nabc", {"close": True}),
    ("cut-chunked-at-boundary", head(b"200 OK", TE) + b"2\r\nok\r\n", {"close": True}),
    ("cut-in-head", b"HTTP/1.1 200 OK\r\nContent-Len", {"close": True}),
    ("excess-same-read", head(b"200 OK", CL2) + b"okEXTRA", {}),
    ("excess-response", OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!", {}),
    ("excess-later", OK, {"later": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!"}),
    ("excess-chunked", head(b"200 OK", TE) + b"2\r\nok\r\n0\r\n\r\nEXTRA", {}),
    ("early-413-close", head(b"413 Too Large", b"Content-Length: 0", b"Connection: close"),
     {"early": True, "close": True}),
    ("early-401-keep", head(b"401 Unauthorized", b"Content-Length: 0"), {"early": True}),
    ("early-200-keep", head(b"200 OK", CL2) + b"ok", {"early": True}),
    ("huge-head", head(b"200 OK", CL2, *[b"X-Big-%d: %s" % (i, b"v" * 1000) for i in range(70)]) + b"ok", {}),
    ("huge-field", head(b"200 OK", CL2, b"X-Big: " + b"v" * 70000) + b"ok", {}),
    ("big-head-ok", head(b"200 OK", CL2, *[b"X-Big-%d: %s" % (i, b"v" * 1000) for i in range(3)]) + b"ok", {}),
    ("many-fields", head(b"200 OK", CL2, *[b"X-%d: v" % i for i in range(1000)]) + b"ok", {}),
    ("conn-close", head(b"200 OK", CL2, b"Connection: close") + b"ok", {}),
    ("conn-close-upper", head(b"200 OK", CL2, b"Connection: CLOSE") + b"ok", {}),
    ("conn-close-list", head(b"200 OK", CL2, b"Connection: x-foo, close") + b"ok", {}),
    ("conn-close-second", head(b"200 OK", CL2, b"Connection: keep-alive", b"Connection: close") + b"ok", {}),
    ("keep-alive-fields", head(b"200 OK", CL2, b"Connection: keep-alive", b"Keep-Alive: timeout=5, max=10")
     + b"ok", {}),
    ("hop-named", head(b"200 OK", CL2, b"Connection: X-Foo, X-Bar", b"X-Foo: 1", b"X-Bar: 2", b"X-Baz: 3")
     + b"ok", {}),
    ("hop-fields", head(b"200 OK", CL2, b"Proxy-Connection: x", b"TE: trailers", b"Trailer: X-T",
                        b"Upgrade: h2c", b"Proxy-Authenticate: Basic") + b"ok", {}),
    ("date-server", head(b"200 OK", CL2, b"Date: Mon, 01 Jan 2001 00:00:00 GMT", b"Server: up/1")
     + b"ok", {}),
    ("no-date", head(b"200 OK", CL2) + b"ok", {}),
    ("set-cookie-dup", head(b"200 OK", CL2, b"Set-Cookie: a=1", b"X-Mid: m", b"Set-Cookie: b=2",
                            b"set-cookie: c=3") + b"ok", {}),
    ("dup-fields", head(b"200 OK", CL2, b"X-A: 1", b"X-A: 2") + b"ok", {}),
    ("empty-value", head(b"200 OK", CL2, b"X-A:") + b"ok", {}),
    ("value-trailing-ws", head(b"200 OK", CL2, b"X-A: 1 \t") + b"ok", {}),
    ("location-relative", head(b"302 Found", CL2, b"Location: /x") + b"ok", {}),
    ("205-body", head(b"205 Reset", CL2) + b"ok", {}),
]


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


#: the request tool's nginx (``h1_differential.NGINX_CONF``), with a read timeout for
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
    args = ap.parse_args()
    base = random.randint(30000, 59000)
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
        with open(os.path.join(ROOT, "etc", "conf.json")) as f:
            conf = json.load(f)
        conf["listen"] = "tcp:%d:interface=127.0.0.1" % tp
        conf["admin"]["listen"] = "tcp:%d:interface=127.0.0.1" % admin
        conf["upstreams"] = {"default": {"peers": ["127.0.0.1:%d" % up_tp]}}
        conf["timeouts"]["read"] = 3
        conf["proxy"]["next_upstream"] = []
        with open(os.path.join(run, "conf.json"), "w") as f:
            json.dump(conf, f)
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        procs.append(subprocess.Popen(
            [twistd, "-n", "--pidfile=", "tproxy", "-c", os.path.join(run, "conf.json")],
            cwd=ROOT, stdout=open(os.path.join(run, "tproxy.log"), "w"), stderr=subprocess.STDOUT))
        for port in (tp, ng):
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    time.sleep(0.05)
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
