"""
The rig of bench/faults.py: the processes it starts and stops by their PIDs
(start, stop, wait_port), the loopback backends (nginx, or a small asyncio
server that fails, black-holes or races on demand: py_backend), ports that
refuse connections (closed_ports), the proxies in front of them (tproxy and
nginx with the same peers), and the clients that measure (sequential
requests, wrk) and read the logs (lines).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = int(os.environ.get("FAULTS_PORT", "31600"))
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"

PROCS = []


def start(cmd, log, **kw):
    out = open(log, "wb")
    p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                         **kw)
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def wait_port(port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not listening" % port)


# -- backends ------------------------------------------------------------------------

BACKEND = r'''
import asyncio, sys, time
mode, ports = sys.argv[1], [int(p) for p in sys.argv[2].split(",")]
start = time.time()
async def handle(reader, writer):
    n = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            n += 1
            if mode == "blackhole":
                await asyncio.sleep(3600)
            if mode == "race" and n == 2:
                writer.close()       # a reused keep-alive connection, closed unanswered
                return
            status = b"200 OK"
            if mode.startswith("503for") and time.time() - start < float(mode[6:]):
                status = b"503 Service Unavailable"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    servers = [await asyncio.start_server(handle, "127.0.0.1", p, backlog=1024) for p in ports]
    await asyncio.gather(*[s.serve_forever() for s in servers])
asyncio.run(main())
'''


def nginx_backend(tmp, ports, name="backend"):
    conf = os.path.join(tmp, name + ".conf")
    servers = "\n".join("server { listen 127.0.0.1:%d; access_log off; "
                        "location / { return 200 'ok'; } }" % p for p in ports)
    with open(conf, "w") as f:
        f.write("daemon off; worker_processes 1; pid %s/%s.pid; error_log %s/%s.err;\n"
                "events { worker_connections 4096; }\nhttp { keepalive_requests 100000;\n%s\n}\n"
                % (tmp, name, tmp, name, servers))
    p = start([NGINX, "-c", conf, "-p", tmp], os.path.join(tmp, name + ".out"))
    for port in ports:
        wait_port(port)
    return p


def py_backend(tmp, mode, ports, name):
    script = os.path.join(tmp, "backend.py")
    with open(script, "w") as f:
        f.write(BACKEND)
    p = start([sys.executable, script, mode, ",".join(map(str, ports))],
              os.path.join(tmp, name + ".out"))
    for port in ports:
        wait_port(port)
    return p


def closed_ports(n, base):
    """n loopback ports nobody listens on (refused)."""
    ports = []
    port = base
    while len(ports) < n:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            s.close()
        except OSError:
            ports.append(port)
        port += 1
    return ports


# -- proxies -------------------------------------------------------------------------

def tproxy(tmp, python, live, dead, port, extra=None, name="tproxy"):
    conf = {"listen": "tcp:%d:interface=127.0.0.1" % port,
            "admin": {"listen": "tcp:%d:interface=127.0.0.1" % (port + 1)},
            "upstreams": {"default": {"peers": ["127.0.0.1:%d" % p for p in live + dead]}},
            "plugins": ["router", "least_conn"]}
    for key, value in (extra or {}).items():
        conf.setdefault(key, {}).update(value) if isinstance(value, dict) else \
            conf.__setitem__(key, value)
    path = os.path.join(tmp, name + ".json")
    with open(path, "w") as f:
        json.dump(conf, f)
    twistd = os.path.join(os.path.dirname(python), "twistd")
    log = os.path.join(tmp, name + ".log")
    p = start([twistd, "-n", "--pidfile=", "-r", "epoll", "tproxy", "-c", path], log,
              cwd=tmp)
    wait_port(port)
    return p, log


def nginx_proxy(tmp, live, dead, port, extra="", name="nginx"):
    conf = os.path.join(tmp, name + ".conf")
    peers = "\n".join("server 127.0.0.1:%d;" % p for p in live + dead)
    with open(conf, "w") as f:
        f.write("daemon off; worker_processes 1; pid %s/%s.pid; error_log %s/%s.err;\n"
                "events { worker_connections 4096; }\n"
                "http { access_log off; upstream up { least_conn; %s keepalive 32; }\n"
                "server { listen 127.0.0.1:%d; location / { proxy_pass http://up; "
                "proxy_http_version 1.1; proxy_set_header Connection \"\"; %s } } }\n"
                % (tmp, name, tmp, name, peers, port, extra))
    p = start([NGINX, "-c", conf, "-p", tmp], os.path.join(tmp, name + ".out"))
    wait_port(port)
    return p, os.path.join(tmp, name + ".err")


# -- clients -------------------------------------------------------------------------

def sequential(port, n, method="GET", body=None, keep_alive=False, timeout=30):
    """n requests one after the other; (sent, ok, failed, statuses)."""
    statuses = []
    conn = None
    for i in range(n):
        try:
            if conn is None or not keep_alive:
                if conn is not None:
                    conn.close()
                conn = socket.create_connection(("127.0.0.1", port), timeout)
            head = "%s /r%d HTTP/1.1\r\nHost: x\r\n" % (method, i)
            if body is not None:
                head += "Content-Length: %d\r\n" % len(body)
            conn.sendall(head.encode() + b"\r\n" + (body or b""))
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            status = int(data.split(b" ", 2)[1])
            m = re.search(rb"content-length: *(\d+)", data, re.I)
            rest = data.split(b"\r\n\r\n", 1)[1]
            need = int(m.group(1)) if m else 0
            while len(rest) < need:
                rest += conn.recv(65536)
            statuses.append(status)
        except (OSError, ValueError, IndexError):
            statuses.append(0)
            conn = None
    if conn is not None:
        conn.close()
    ok = sum(1 for s in statuses if s == 200)
    return n, ok, n - ok


def wrk(port, seconds, connections=20):
    out = subprocess.run([WRK, "-t2", "-c%d" % connections, "-d%ds" % seconds,
                          "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True).stdout
    sent = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    failed = (int(bad.group(1)) if bad else 0) + (
        sum(int(x) for x in errors.groups()) if errors else 0)
    if failed:
        print("  wrk: %s%s" % (bad.group(0) + "; " if bad else "",
                               errors.group(0) if errors else ""), flush=True)
    return sent, sent - failed, failed


def lines(path):
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0
