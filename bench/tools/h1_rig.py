"""
The rig of the differential tools (``h1_differential.py``,
``h1_response_differential.py``, ``redbot_compare.py``, ``smuggle_tools.py``):
tproxy started the README way and nginx (``NGINX_CONF``), each in front of its
own backend that records every byte it receives (:func:`backend_main`, run as
``python h1_rig.py --backend PORT LOG``), on ports found free in 30000-32767
(:func:`free_base`); :class:`Rig` sends one vector through both and reads what
each backend got.  Not a test: a part of audit tools (nginx must be installed).
"""

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench.fault_rig import wait_port  # noqa: E402,F401 (also the other tools')

NGINX_CONF = """daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/nginx.error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
{extra}    upstream backend {{ server 127.0.0.1:{backend}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        location / {{ proxy_pass http://backend; }}
    }}
}}
"""


# -- the backend: records every byte, answers each request it can frame --------

def backend_main(port, log_path):
    """Serve on ``port``; append ``{"c": connection, "k": kind, "d": hex}``
    lines to ``log_path`` (``data`` as received, ``req`` per request read)."""
    ids = itertools.count()
    log = open(log_path, "a", buffering=1)

    def record(cid, kind, data=b""):
        log.write(json.dumps({"c": cid, "k": kind, "d": data.hex()}) + "\n")

    async def handle(reader, writer):
        cid = next(ids)
        buf = b""

        async def more():
            nonlocal buf
            data = await reader.read(65536)
            if not data:
                raise EOFError
            record(cid, "data", data)
            buf += data

        async def line():
            nonlocal buf
            while b"\r\n" not in buf:
                await more()
            out, buf = buf.split(b"\r\n", 1)
            return out

        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    await more()
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                fields = [x.split(b":", 1) for x in lines[1:]]
                lengths = [v.strip() for n, v in fields if n.lower() == b"content-length"]
                codings = [v.strip().lower() for n, v in fields if n.lower() == b"transfer-encoding"]
                body = b""
                bad = (codings and (codings != [b"chunked"] or lengths)) or len(lengths) > 1 or (
                    lengths and not lengths[0].isdigit())
                if codings and not bad:
                    while True:
                        size = int((await line()).split(b";")[0], 16)
                        if size == 0:
                            while await line():
                                pass
                            break
                        while len(buf) < size + 2:
                            await more()
                        body += buf[:size]
                        buf = buf[size + 2:]
                elif lengths and not bad:
                    n = int(lengths[0])
                    while len(buf) < n:
                        await more()
                    body, buf = buf[:n], buf[n:]
                record(cid, "req", lines[0] + b" body=%d" % len(body))
                if bad:
                    writer.write(b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    break
                out = b"backend saw: " + lines[0] + b" body=%d" % len(body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
                await writer.drain()
        except (EOFError, ConnectionError, ValueError):
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- one vector against one proxy --------------------------------------------------

def exchange(addr, parts, idle):
    """Send ``parts``; read until the close or ``idle`` seconds of silence:
    ``(bytes received, closed)``."""
    s = socket.create_connection(addr)
    s.settimeout(idle)
    out = b""
    closed = False
    try:
        for part in parts:
            s.sendall(part)
            if len(parts) > 1:
                time.sleep(0.05)
        start = time.time()
        while time.time() - start < 4 * idle + 2:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                closed = True
                break
            out += data
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    s.close()
    return out, closed


def statuses(out):
    """The statuses of the responses in ``out`` (``"raw"``: not HTTP/1.x)."""
    found = []
    pos = 0
    while pos < len(out):
        if not out.startswith(b"HTTP/", pos):
            found.append("raw")
            break
        end = out.find(b"\r\n\r\n", pos)
        if end < 0:
            found.append("cut")
            break
        head = out[pos:end].split(b"\r\n")
        status = int(head[0].split()[1])
        fields = {x.split(b":")[0].lower(): x.split(b":", 1)[1].strip() for x in head[1:]}
        pos = end + 4
        found.append(status)
        if status < 200:
            continue
        if b"content-length" in fields:
            pos += int(fields[b"content-length"])
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                nl = out.find(b"\r\n", pos)
                if nl < 0:
                    pos = len(out)
                    break
                size = int(out[pos:nl].split(b";")[0], 16)
                pos = nl + 4 + size
                if size == 0:
                    break
        else:
            pos = len(out)
    return found


def backend_view(log_path, start):
    """``({connection: bytes}, [request lines read])`` logged after ``start``."""
    time.sleep(0.15)
    with open(log_path) as f:
        f.seek(start)
        records = [json.loads(x) for x in f.read().splitlines()]
    data = {}
    requests = []
    for r in records:
        if r["k"] == "data":
            data[r["c"]] = data.get(r["c"], b"") + bytes.fromhex(r["d"])
        elif r["k"] == "req":
            requests.append(bytes.fromhex(r["d"]).decode("latin-1"))
    return data, requests


def probe(addr, log_path, parts, idle, into):
    start = os.path.getsize(log_path)
    out, closed = exchange(addr, parts, idle)
    data, requests = backend_view(log_path, start)
    into.update(statuses=statuses(out), closed=closed, data=data, requests=requests, out=out)


def start_tproxy(run, port, admin, **changes):
    """Start tproxy the README way (``twistd -n --pidfile= tproxy -c CONF``)
    on ``etc/conf.json`` listening on ``port`` with its admin API on
    ``admin``, each top-level key of ``changes`` merged into the file's
    (``CONF`` is written in the directory ``run``, its log beside it)."""
    with open(os.path.join(ROOT, "etc", "conf.json")) as f:
        conf = json.load(f)
    conf["listen"] = "tcp:%d:interface=127.0.0.1" % port
    conf["admin"]["listen"] = "tcp:%d:interface=127.0.0.1" % admin
    for key, value in changes.items():
        conf[key] = dict(conf.get(key) or {}, **value)
    with open(os.path.join(run, "conf.json"), "w") as f:
        json.dump(conf, f)
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    return subprocess.Popen(
        [twistd, "-n", "--pidfile=", "tproxy", "-c", os.path.join(run, "conf.json")],
        cwd=ROOT, stdout=open(os.path.join(run, "tproxy.log"), "w"), stderr=subprocess.STDOUT)


def free_base(n=5):
    """A port in 30000-32767 with the ``n`` ports from it free (each bound
    once to be sure; above 32768 is the ephemeral range)."""
    rnd = random.SystemRandom()   # (whatever seeded the module's generator)
    while True:
        base = rnd.randrange(30000, 32768 - n)
        try:
            for port in range(base, base + n):
                s = socket.socket()
                try:
                    s.bind(("127.0.0.1", port))
                finally:
                    s.close()
            return base
        except OSError:
            continue


class Rig:
    """tproxy (the README way) and nginx, each in front of its own recording
    backend, on the five ports from ``base_port``; :meth:`send` runs one
    vector through both.  Rigs on different ports run side by side."""

    def __init__(self, base_port):
        self.tp, self.ng, self.admin, be_tp, be_ng = range(base_port, base_port + 5)
        self.run = tempfile.mkdtemp(prefix="h1diff-")
        self.procs = []
        self.logs = {}
        for name, be in (("tp", be_tp), ("ng", be_ng)):
            self.logs[name] = os.path.join(self.run, "backend-%s.log" % name)
            open(self.logs[name], "w").close()
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--backend", str(be), self.logs[name]]))
        with open(os.path.join(self.run, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(run=self.run, backend=be_ng, port=self.ng, extra=""))
        self.procs.append(subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c",
                                            os.path.join(self.run, "nginx.conf")]))
        self.procs.append(start_tproxy(self.run, self.tp, self.admin, registry={"ttl": 86400}))
        for port in range(base_port, base_port + 5):
            wait_port(port)
        urllib.request.urlopen("http://127.0.0.1:%d/upstream/add?port=%d" % (self.admin, be_tp)).read()

    def send(self, vector, idle):
        """One vector through both: ``{"tp": ..., "ng": ...}``, each with the
        statuses, whether it closed, what its backend received (``data``, per
        upstream connection) and read (``requests``), and the bytes out."""
        parts = vector[2] if len(vector) > 2 else [vector[1]]
        res = {"tp": {}, "ng": {}}
        threads = [threading.Thread(target=probe, args=(("127.0.0.1", port), self.logs[k], parts,
                                                         idle, res[k]))
                   for k, port in (("tp", self.tp), ("ng", self.ng))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return res

    def tracebacks(self):
        with open(os.path.join(self.run, "tproxy.log")) as f:
            return f.read().count("Traceback")

    def stop(self):
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="a recording backend of the rig")
    p.add_argument("--backend", nargs=2, required=True, metavar=("PORT", "LOG"))
    args = p.parse_args()
    backend_main(int(args.backend[0]), args.backend[1])
