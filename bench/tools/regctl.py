#!/usr/bin/env python3
"""Register peers through tproxy's admin API, as a fleet would (adapted from
shared/bench/tools/seedctl.py). Standard library only.

  regctl.py add ADMIN_URL --base PORT --count N [--prefix api] [--host 127.0.0.1]
      GET /upstream/add?host=HOST&port=P&prefix=PREFIX for P = BASE .. BASE+N-1.
  regctl.py groups ADMIN_URL --count N [--port PORT] [--host 127.0.0.1] [--format g{}]
      One peer HOST:PORT in each of the groups g0 .. g(N-1).
  regctl.py probe URL PATH
      GET PATH and print "<status> <first 120 bytes of body>" (never raises on HTTP errors).

add and groups send every request over one keep-alive connection (a new one if the server
closes it), print one JSON line {"requests", "failed", "seconds", "per_s"}, and exit 1 if
any registration failed (non-2xx, or a JSON body with "success": false).
"""
import argparse
import http.client
import json
import sys
import time
import urllib.parse


class Client:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.conn = None

    def get(self, path):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                body = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return resp.status, body
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _succeeded(body):
    """Accept any JSON body that does not say "success": false."""
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return not (isinstance(doc, dict) and doc.get("success", True) is False)


def _register(url, triples):
    client = Client(url)
    failed = 0
    start = time.monotonic()
    for host, port, prefix in triples:
        query = urllib.parse.urlencode({"host": host, "port": port, "prefix": prefix})
        status, body = client.get("/upstream/add?" + query)
        if not 200 <= status < 300 or not _succeeded(body):
            failed += 1
            if failed <= 3:
                print(f"add {host}:{port} to {prefix} failed: {status} {body[:200]!r}", file=sys.stderr)
    seconds = time.monotonic() - start
    client.close()
    n = len(triples)
    print(json.dumps({"requests": n, "failed": failed, "seconds": round(seconds, 3),
                      "per_s": round(n / seconds, 1) if seconds else 0}))
    return 1 if failed else 0


def cmd_add(args):
    return _register(args.url, [(args.host, port, args.prefix)
                                for port in range(args.base, args.base + args.count)])


def cmd_groups(args):
    return _register(args.url, [(args.host, args.port, args.format.format(i)) for i in range(args.count)])


def cmd_probe(args):
    client = Client(args.url)
    status, body = client.get(args.path)
    client.close()
    print(status, body[:120].decode("utf-8", "replace").replace("\n", " "))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("add")
    a.add_argument("url")
    a.add_argument("--base", type=int, required=True)
    a.add_argument("--count", type=int, default=1)
    a.add_argument("--prefix", default="api")
    a.add_argument("--host", default="127.0.0.1")
    g = sub.add_parser("groups")
    g.add_argument("url")
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--port", type=int, default=19000)
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--format", default="g{}")
    r = sub.add_parser("probe")
    r.add_argument("url")
    r.add_argument("path")
    args = p.parse_args()
    return {"add": cmd_add, "groups": cmd_groups, "probe": cmd_probe}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
