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
        [--plugins registry,router,least_conn] [--access-log] [--close]

``--heartbeat`` sends heartbeats (``GET /upstream/add`` of one known server) to
the admin API instead.  ``--access-log`` adds ``access_log`` with its default settings (stdout,
which is a file here, as under a service manager).  ``--close`` sends
``Connection: close`` (a new client connection per request).  PYTHON in the
environment picks the interpreter of twistd (default: this one); ``KEEP=1``
keeps the callgrind output (for ``callgrind_annotate``).  Needs
valgrind (``apt-get install -y valgrind``).
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
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


def _send(port, count, conns, close, path=b"/api/x"):
    """``count`` requests over ``conns`` keep-alive connections, one in
    flight on each (or a new connection per request with ``close``)."""
    request = (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n"
               b"Accept: */*\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n")
    if close:
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request)
                _read_response(s, b"")
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
    parser.add_argument("--heartbeat", action="store_true",
                        help="send heartbeats to the admin API instead "
                             "(GET /upstream/add of one known server)")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed")

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port, admin_port = _free_port(), _free_port()
    plugins = args.plugins.split(",") + (["access_log"] if args.access_log else [])
    work = tempfile.mkdtemp(prefix="callgrind-server-")
    config = {
        "listen": "tcp:%d:interface=127.0.0.1" % port,
        "admin": {"listen": "tcp:%d:interface=127.0.0.1" % admin_port},
        "upstreams": {"api": {"peers": ["127.0.0.1:%d" % upstream.server_address[1]]}},
        "plugins": plugins,
    }
    with open(os.path.join(work, "conf.json"), "w") as f:
        json.dump(config, f)
    python = os.environ.get("PYTHON", sys.executable)
    out = os.path.join(work, "callgrind.out")
    env = dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))
    with open(os.path.join(work, "stdout"), "wb") as stdout:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out + ".%p",
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
        _send(target, args.warmup, args.conns, args.close, path)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _send(target, args.n, args.conns, args.close, path)
        subprocess.run(["callgrind_control", "--dump=counted", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait()
        upstream.shutdown()
    dumps = sorted(p for p in os.listdir(work) if p.startswith("callgrind.out."))
    total = None
    for name in dumps:
        with open(os.path.join(work, name)) as f:
            text = f.read()
        if "desc: Trigger: " in text and "counted" in text.split("desc: Trigger: ", 1)[1].split("\n", 1)[0]:
            for line in text.splitlines():
                if line.startswith("totals:") or line.startswith("summary:"):
                    total = int(line.split()[1])
                    break
    if total is None:
        raise SystemExit("no counted dump in %s" % work)
    if os.environ.get("KEEP") == "1":
        print("callgrind output kept in %s" % work)
    else:
        shutil.rmtree(work)
    print("%d instructions per %s (%s; plugins %s%s; %d requests, %d connection%s)" % (
        total // args.n, "heartbeat" if args.heartbeat else "request", python,
        ",".join(plugins), "; Connection: close" if args.close else "",
        args.n, args.conns, "" if args.conns == 1 else "s"))


if __name__ == "__main__":
    main()
