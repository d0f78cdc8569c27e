"""
Upstream faults measured from outside (docs/health.md): tproxy and nginx
(default max_fails=1 fail_timeout=10s) in front of the same loopback
backends, with dead, black-holed, failing and racy peers.

    python bench/faults.py [--tproxy-python PYTHON] [--only NAME] [--duration S]

Every process is started here (own session) and stopped here by its PID.
Loopback only. Prints a Markdown table: scenario, system, sent, ok, failed.
The numbers depend on the machine's load: failures are what matter.
"""

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
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


# -- scenarios -----------------------------------------------------------------------

def run(args):
    tmp = tempfile.mkdtemp(prefix="faults-")
    rows = []
    py = args.tproxy_python
    port = BASE

    def row(scenario, system, result, note=""):
        sent, ok, failed = result
        rows.append((scenario, system, sent, ok, failed, note))
        print("%-45s %-8s sent %6d ok %6d failed %6d %s" % (scenario, system, sent, ok,
                                                            failed, note), flush=True)

    want = lambda name: args.only is None or args.only == name

    if want("seq"):
        live = [BASE + 10]
        back = nginx_backend(tmp, live, "be-seq")
        dead = closed_ports(3, BASE + 20)
        p, log = tproxy(tmp, py, live, dead, BASE + 100, name="tp-seq")
        row("1 live + 3 dead, 40 sequential", "tproxy", sequential(BASE + 100, 40))
        stop(p)
        p, log = nginx_proxy(tmp, live, dead, BASE + 102, name="ng-seq")
        row("1 live + 3 dead, 40 sequential", "nginx", sequential(BASE + 102, 40))
        stop(p)
        stop(back)

    if want("fifty"):
        live = [BASE + 10, BASE + 11]
        back = nginx_backend(tmp, live, "be-50")
        dead = closed_ports(48, BASE + 200)
        name = "2 live + 48 dead, 20 clients, %d s" % args.duration
        p, log = tproxy(tmp, py, live, dead, BASE + 110, name="tp-50")
        before = lines(log)
        row(name, "tproxy", wrk(BASE + 110, args.duration), "%d log lines" % (lines(log) - before))
        stop(p)
        p, err = nginx_proxy(tmp, live, dead, BASE + 112, name="ng-50")
        row(name, "nginx", wrk(BASE + 112, args.duration), "%d error.log lines" % lines(err))
        stop(p)
        stop(back)

    if want("outage"):
        # one of two backends killed -9 for 5 s under load, then restarted
        name = "2 peers, one killed for 5 s, 20 clients, 12 s"
        for system in ("tproxy", "nginx"):
            a = nginx_backend(tmp, [BASE + 10], "be-out-a")
            b = nginx_backend(tmp, [BASE + 11], "be-out-b")
            if system == "tproxy":
                p, log = tproxy(tmp, py, [BASE + 10, BASE + 11], [], BASE + 120,
                                extra={"plugins": ["registry", "router", "least_conn"]},
                                name="tp-out")
                target = BASE + 120
            else:
                p, log = nginx_proxy(tmp, [BASE + 10, BASE + 11], [], BASE + 122,
                                     name="ng-out")
                target = BASE + 122
            before = lines(log)
            client = subprocess.Popen([WRK, "-t2", "-c20", "-d12s",
                                       "http://127.0.0.1:%d/" % target],
                                      stdout=subprocess.PIPE, text=True)
            time.sleep(3)
            stop(b, signal.SIGKILL)
            time.sleep(5)
            b = nginx_backend(tmp, [BASE + 11], "be-out-b")
            out = client.communicate()[0]
            sent = int(re.search(r"(\d+) requests in", out).group(1))
            bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                               r"timeout (\d+)", out)
            failed = (int(bad.group(1)) if bad else 0) + (
                sum(int(x) for x in errors.groups()) if errors else 0)
            note = "%d log lines" % (lines(log) - before)
            if system == "tproxy":
                # every request's count released: conn_count back to 0
                import urllib.request
                status = json.load(urllib.request.urlopen(
                    "http://127.0.0.1:%d/upstream/status" % (target + 1)))
                note += ", conn_count after: %d" % sum(
                    s["conn_count"] for g in status["groups"] for s in g["servers"])
            row(name, system, (sent, sent - failed, failed), note)
            stop(p)
            stop(a)
            stop(b)

    if want("race"):
        # the backend closes a reused keep-alive connection unanswered: PUT with a body
        name = "keep-alive closed unanswered, 200 PUT"
        back = py_backend(tmp, "race", [BASE + 12], "be-race")
        p, log = tproxy(tmp, py, [BASE + 12], [], BASE + 130, name="tp-race")
        row(name, "tproxy", sequential(BASE + 130, 200, "PUT", b"x" * 100, keep_alive=True))
        stop(p)
        p, err = nginx_proxy(tmp, [BASE + 12], [], BASE + 132, name="ng-race")
        row(name, "nginx", sequential(BASE + 132, 200, "PUT", b"x" * 100, keep_alive=True))
        stop(p)
        stop(back)

    if want("blackhole"):
        # a peer that accepts and never answers, beside a live one; read timeout 2 s
        name = "1 live + 1 black hole (read timeout 2 s), 40 sequential"
        live = [BASE + 10]
        back = nginx_backend(tmp, live, "be-bh")
        hole = py_backend(tmp, "blackhole", [BASE + 13], "be-hole")
        p, log = tproxy(tmp, py, live, [BASE + 13], BASE + 140,
                        extra={"timeouts": {"read": 2}}, name="tp-bh")
        t = time.time()
        result = sequential(BASE + 140, 40)
        row(name, "tproxy", result, "%.1f s" % (time.time() - t))
        stop(p)
        p, err = nginx_proxy(tmp, live, [BASE + 13], BASE + 142,
                             extra="proxy_read_timeout 2s;", name="ng-bh")
        t = time.time()
        result = sequential(BASE + 142, 40)
        row(name, "nginx", result, "%.1f s" % (time.time() - t))
        stop(p)
        stop(hole)
        stop(back)

    if want("503"):
        # a peer answering 503 for its first 10 s, beside a live one
        name = "1 live + 1 answering 503 for 10 s, 20 clients, 15 s"
        for system in ("tproxy", "nginx"):
            live = [BASE + 10]
            back = nginx_backend(tmp, live, "be-503")
            busy = py_backend(tmp, "503for10", [BASE + 14], "be-busy")
            if system == "tproxy":
                p, log = tproxy(tmp, py, live, [BASE + 14], BASE + 150,
                                extra={"health": {"passive": {"statuses": [503]}},
                                       "proxy": {"next_upstream": ["error", "timeout",
                                                                   "http_503"]}},
                                name="tp-503")
                target = BASE + 150
            else:
                p, log = nginx_proxy(tmp, live, [BASE + 14], BASE + 152,
                                     extra="proxy_next_upstream error timeout http_503;",
                                     name="ng-503")
                target = BASE + 152
            row(name, system, wrk(target, 15))
            stop(p)
            stop(busy)
            stop(back)

    if want("churn"):
        # registrations of closed ports added and removed 200 times a second
        # beside 2 live static peers (tproxy only: nginx has no registry)
        import http.client
        import threading
        name = "2 live + churn of 200 add/remove/s of closed ports, 20 clients, %d s" % (
            args.duration)
        live = [BASE + 10, BASE + 11]
        back = nginx_backend(tmp, live, "be-churn")
        # below Linux's ephemeral ports (32768-): a connect to a closed port
        # there may meet a socket connecting to itself
        dead = closed_ports(400, 30000)
        p, log = tproxy(tmp, py, live, [], BASE + 160, name="tp-churn",
                        extra={"plugins": ["registry", "router", "least_conn"]})
        wait_port(BASE + 161)
        done = threading.Event()
        calls = [0]

        def churn():
            conn = http.client.HTTPConnection("127.0.0.1", BASE + 161, timeout=10)
            i = 0
            while not done.is_set():
                t = time.time()
                conn.request("GET", "/upstream/add?host=127.0.0.1&port=%d"
                             % dead[i % len(dead)])
                conn.getresponse().read()
                if i >= 100:
                    conn.request("GET", "/upstream/remove?host=127.0.0.1&port=%d"
                                 % dead[(i - 100) % len(dead)])
                    conn.getresponse().read()
                i += 1
                calls[0] = i
                time.sleep(max(0.0, 0.005 - (time.time() - t)))
        thread = threading.Thread(target=churn, daemon=True)
        thread.start()
        time.sleep(1)
        before = lines(log)
        result = wrk(BASE + 160, args.duration)
        done.set()
        thread.join()
        row(name, "tproxy", result, "%d registrations, %d log lines" % (
            calls[0], lines(log) - before))
        stop(p)
        stop(back)

    print()
    print("| scenario | system | sent | ok | failed | note |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        print("| %s | %s | %d | %d | %d | %s |" % r)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--tproxy-python", default=sys.executable)
    parser.add_argument("--only", default=None)
    parser.add_argument("--duration", type=int, default=20)
    args = parser.parse_args()
    try:
        run(args)
    finally:
        for p in PROCS:
            stop(p)


if __name__ == "__main__":
    main()
