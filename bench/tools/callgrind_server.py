"""
Instructions per proxied request of the real server, counted by callgrind:
``twistd -n tproxy`` (the README's command, tproxy's reactor and fast paths
as it chooses them) runs under ``valgrind --tool=callgrind`` behind a local
upstream; a client sends ``--warmup`` requests, the counters are zeroed
(``callgrind_control --zero``), ``-n`` more requests are sent, and the
counters dumped: the figure is the instructions tproxy's process executed
(Python, the reactor, the system call wrappers; not the kernel) divided by
``-n``.  Unlike a timing it does not depend on what else the machine does, so
it compares two commits on a shared machine; unlike
``bench/micro_request.py`` it includes the reactor, the sockets and the log
phase as the server runs them.

    python bench/tools/callgrind_server.py [-n 2000] [--conns 8]
        [--plugins registry,router,least_conn] [--access-log] [--close [--batch N]]
        [--peers N [--cache-sim]]

``--heartbeat`` sends heartbeats (``GET /upstream/add`` of one known server) to
the admin API instead.  ``--access-log`` adds ``access_log`` with its default settings (stdout,
which is a file here, as under a service manager).  ``--close`` sends
``Connection: close`` (a new client connection per request; ``--batch N``:
N opened at a time, their requests sent, then their responses read: the
accept loop's batches and the timers of connections open together, as
under wrk).  ``--peers N``
sets up what ``bench/run.sh``'s ``tproxy_nN`` has: N peers
127.0.0.1:BASE..BASE+N-1 registered in ``api`` through the admin API (TTL one
day), each a listening port of nginx backends made from
``bench/conf/backend.nginx.conf.in`` (2,500 ports per nginx), and 2N requests
before the warm-up so that every peer has its upstream connection; the
start-up, the registrations and the priming run with callgrind's
instrumentation off (``--instr-atstart=no``), which makes them several times
faster.  ``--cache-sim`` adds callgrind's cache simulation (D1/LL misses per
request; ``--ll`` sets the last-level cache it simulates).  PYTHON in the
environment picks the interpreter of twistd (default: this one); ``KEEP=1``
keeps the callgrind output (for ``callgrind_annotate``).  Needs
valgrind (``apt-get install -y valgrind``).
"""

import argparse
import errno
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"x" * 100


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port, proc, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("tproxy exited (%s): see %s" % (proc.returncode, proc.args[-1]))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("tproxy did not listen on %d" % port)


def _read_response(sock, buf):
    """Read one response (Content-Length framed) from ``sock``; return the
    bytes left over."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed before a response")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit("unexpected response: %r" % head[:80])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("connection closed in a body")
        rest += data
    return rest[length:]


PORTS_PER_NGINX = 2500


def _free_block(n):
    """A base port such that base..base+n-1 are free on 127.0.0.1 (below the
    ephemeral range, which the proxy's upstream connections use), or
    SystemExit."""
    low = list(range(10000, 32768 - n, 500))
    high = list(range(32768, 61000 - n, 500))
    random.shuffle(low)
    random.shuffle(high)
    for base in low + high:
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                # (as nginx binds them: a port some closed connection left
                # in TIME_WAIT is free for a listener)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
            return base
        except OSError as e:
            if e.errno == errno.EMFILE:
                raise SystemExit("%d ports need more descriptors than `ulimit -n` allows (%d)"
                                 % (n, resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit("no block of %d free ports" % n)


def _start_backends(work, n):
    """nginx backends listening on n ports (as bench/run.sh starts them);
    return (base port, [Popen])."""
    nginx = os.environ.get("NGINX", "/usr/sbin/nginx")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "conf", "backend.nginx.conf.in")) as f:
        template = f.read()
    base = _free_block(n)
    for sub in ("conf", "logs", "tmp", "data"):
        os.makedirs(os.path.join(work, sub), exist_ok=True)
    procs = []
    for b, first in enumerate(range(base, base + n, PORTS_PER_NGINX)):
        name = "backend%d" % b
        last = min(first + PORTS_PER_NGINX, base + n)
        with open(os.path.join(work, "conf", name + ".listen.conf"), "w") as f:
            for port in range(first, last):
                f.write("listen 127.0.0.1:%d backlog=4096;\n" % port)
        conf = os.path.join(work, "conf", name + ".conf")
        with open(conf, "w") as f:
            # the backends keep idle connections a day, not 75 s: under
            # callgrind a round through 10,000 peers takes longer than that,
            # and every request would then open a new upstream connection
            f.write(template.replace("@RUN@", work).replace("@NAME@", name)
                    .replace("keepalive_timeout 75s;", "keepalive_timeout 86400s;"))
        procs.append(subprocess.Popen(
            [nginx, "-p", work, "-e", os.path.join(work, "logs", name + ".error.log"), "-c", conf],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 30
    for port in sorted({p for first in range(base, base + n, PORTS_PER_NGINX)
                        for p in (first, min(first + PORTS_PER_NGINX, base + n) - 1)}):
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    _stop(procs)
                    raise SystemExit("the nginx backends did not listen on %d (see %s/logs)"
                                     % (port, work))
                time.sleep(0.2)
    return base, procs


def _stop(procs):
    for proc in procs:
        proc.terminate()
        proc.wait()


def _register(admin_port, base, n):
    """Register 127.0.0.1:base..base+n-1 in group api (as bench/tools/regctl.py)."""
    sock = socket.create_connection(("127.0.0.1", admin_port))
    buf = b""
    for port in range(base, base + n):
        query = urllib.parse.urlencode({"host": "127.0.0.1", "port": port, "prefix": "api"})
        sock.sendall(b"GET /upstream/add?" + query.encode()
                     + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        buf = _read_response(sock, buf)
    sock.close()


def _send(port, count, conns, close, path=b"/api/x", batch=1):
    """``count`` requests over ``conns`` keep-alive connections, one in
    flight on each (or a new connection per request with ``close``,
    ``batch`` of them open at a time)."""
    request = (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n"
               b"Accept: */*\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    if close:
        sent = 0
        while sent < count:
            socks = [socket.create_connection(("127.0.0.1", port))
                     for _ in range(min(batch, count - sent))]
            for s in socks:
                s.sendall(request)
            for s in socks:
                _read_response(s, b"")
                s.close()
            sent += len(socks)
        return
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    bufs = [b""] * conns
    sent = 0
    while sent < count:
        batch = min(conns, count - sent)
        for s in socks[:batch]:
            s.sendall(request)
        for i in range(batch):
            bufs[i] = _read_response(socks[i], bufs[i])
        sent += batch
    for s in socks:
        s.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="requests counted")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--plugins", default="registry,router,least_conn")
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--close", action="store_true")
    parser.add_argument("--batch", type=int, default=1,
                        help="with --close: connections opened at a time (each sends "
                             "its request, then all are read; default 1, one at a time)")
    parser.add_argument("--peers", type=int, default=0,
                        help="N peers in api, as bench/run.sh's tproxy_nN (nginx backends)")
    parser.add_argument("--cache-sim", action="store_true",
                        help="callgrind --cache-sim=yes: D1 and LL misses per request too")
    parser.add_argument("--ll", default="33554432,16,64",
                        help="the simulated last-level cache: size,associativity,line "
                             "(default: 32 MB, 16-way, as the AMD EPYC's L3; valgrind's "
                             "own guess here was 256 MB direct-mapped)")
    parser.add_argument("--heartbeat", action="store_true",
                        help="send heartbeats to the admin API instead "
                             "(GET /upstream/add of one known server)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed")
    # a SIGTERM stops what this started (the finally clause below)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit("terminated"))

    port, admin_port = _free_port(), _free_port()
    plugins = args.plugins.split(",") + (["access_log"] if args.access_log else [])
    work = tempfile.mkdtemp(prefix="callgrind-server-")
    config = {
        "listen": "tcp:%d:interface=127.0.0.1" % port,
        "admin": {"listen": "tcp:%d:interface=127.0.0.1" % admin_port},
        "plugins": plugins,
    }
    upstream = None
    backends = []
    if args.peers:
        base, backends = _start_backends(work, args.peers)
        config["registry"] = {"ttl": 86400, "cleanup_interval": 10}
        # a round through N peers takes minutes under callgrind (0.5 s at
        # 10,000 peers in bench/run.sh): keep the idle upstream connections,
        # and do not let their timers fire (re-arming each would cost more
        # per request than in a real run, and feed the GC)
        config["proxy"] = {"upstream_keepalive_timeout": 86400}
        config["timeouts"] = {"read": 86400}
    else:
        upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
        config["upstreams"] = {"api": {"peers": ["127.0.0.1:%d" % upstream.server_address[1]]}}
    with open(os.path.join(work, "conf.json"), "w") as f:
        json.dump(config, f)
    python = os.environ.get("PYTHON", sys.executable)
    out = os.path.join(work, "callgrind.out")
    env = dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
    with open(os.path.join(work, "stdout"), "wb") as stdout:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out + ".%p"]
            + (["--instr-atstart=no"] if args.peers else [])
            + (["--cache-sim=yes", "--LL=%s" % args.ll] if args.cache_sim else []) + [
             python, "-c", "import sys; sys.argv[0] = 'twistd'; "
             "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "--logfile",
             os.path.join(work, "twistd.log"), "tproxy", "-c", os.path.join(work, "conf.json")],
            cwd=work, stdout=stdout, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_port(port, proc)
        _wait_port(admin_port, proc)
        target, path = port, b"/api/x"
        if args.heartbeat:
            target = admin_port
            path = b"/upstream/add?host=127.0.0.1&port=9101&prefix=hb"
        if args.peers:
            _register(admin_port, base, args.peers)
            if args.peers >= 100 and not args.heartbeat:
                _send(target, 2 * args.peers, args.conns, args.close, path)   # priming
            subprocess.run(["callgrind_control", "--instr=on", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _send(target, args.warmup, args.conns, args.close, path, args.batch)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _send(target, args.n, args.conns, args.close, path, args.batch)
        subprocess.run(["callgrind_control", "--dump=counted", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait()
        if upstream is not None:
            upstream.shutdown()
        _stop(backends)
    dumps = sorted(p for p in os.listdir(work) if p.startswith("callgrind.out."))
    total = None
    misses = ""
    for name in dumps:
        with open(os.path.join(work, name)) as f:
            text = f.read()
        if "desc: Trigger: " in text and "counted" in text.split("desc: Trigger: ", 1)[1].split("\n", 1)[0]:
            for line in text.splitlines():
                if line.startswith("events:"):
                    events = line.split()[1:]
                if line.startswith("totals:") or line.startswith("summary:"):
                    counts = dict(zip(events, map(int, line.split()[1:])))
                    total = counts["Ir"]
                    if "D1mr" in counts:
                        misses = "; per request: D1 misses %.1f, LL misses %.1f" % (
                            (counts["D1mr"] + counts["D1mw"] + counts["I1mr"]) / args.n,
                            (counts["DLmr"] + counts["DLmw"] + counts["ILmr"]) / args.n)
                    break
    if total is None:
        raise SystemExit("no counted dump in %s" % work)
    if os.environ.get("KEEP") == "1":
        print("callgrind output kept in %s" % work)
    else:
        shutil.rmtree(work)
    print("%d instructions per %s (%s; plugins %s%s%s; %d requests, %d connection%s%s)" % (
        total // args.n, "heartbeat" if args.heartbeat else "request", python,
        ",".join(plugins), ("; Connection: close, %d at a time" % args.batch) if args.close else "",
        "; %d peers" % args.peers if args.peers else "",
        args.n, args.conns, "" if args.conns == 1 else "s", misses))


if __name__ == "__main__":
    main()
