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
import json
import re
import signal
import subprocess
import sys
import tempfile
import time

from fault_rig import (BASE, PROCS, WRK, closed_ports, lines, nginx_backend, nginx_proxy,
                       py_backend, sequential, stop, tproxy, wait_port, wrk)


# -- scenarios -----------------------------------------------------------------------

def run(args):
    tmp = tempfile.mkdtemp(prefix="faults-")
    rows = []
    py = args.tproxy_python

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
