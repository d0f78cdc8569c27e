"""
What parsing one head costs, three ways: httptools (llhttp) with the
callbacks tproxy needs at minimum (the URL or reason, each field appended,
the end of the head and of the message), tproxy's pure-Python parser with
the same callbacks, and one scan of a whole head without a parser: two
compiled expressions (the head validated, then its fields found), what
``re`` can do "at C speed".  The inputs are ``micro_request.py``'s request
and response.

    python bench/micro_heads.py                 # CPU time per head, each way
    python bench/micro_heads.py --count WAY -n N  # N heads one way, untimed
    bash bench/tools/callgrind_request.sh        # (the whole request instead)

Instructions per head, as ``callgrind_request.sh`` counts them (two runs of
``--count`` under callgrind, N = 10,000 and 30,000; see bench/README.md,
"One scan of the head instead of parser callbacks").
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tproxy.http import pyparser  # noqa: E402
from tproxy.http.pygrammar import _TOKEN  # noqa: E402

try:
    import httptools
except ImportError:   # PyPy
    httptools = None

from micro_request import REQUEST, RESPONSE  # noqa: E402

_FIELD_CHARS = rb"[\t\x20-\x7e\x80-\xff]"
_FIELDS = rb"((?:" + _TOKEN + rb"+:" + _FIELD_CHARS + rb"*\r\n)*)\r\n"
_REQUEST_HEAD = re.compile(rb"([A-Z_-]+) (/[\x21-\x7e]*) HTTP/1\.([01])\r\n" + _FIELDS)
_RESPONSE_HEAD = re.compile(
    rb"HTTP/1\.([01]) ([1-9][0-9][0-9]) (" + _FIELD_CHARS + rb"*)\r\n" + _FIELDS)
_FIELD = re.compile(rb"(" + _TOKEN + rb"+):[ \t]*(" + _FIELD_CHARS + rb"*)\r\n")


def scan_request(data):
    """The method, target, minor version and fields of a whole request head."""
    m = _REQUEST_HEAD.match(data)
    return m.group(1, 2, 3), _FIELD.findall(m.group(4))


def scan_response(data):
    """The status, reason and fields of a whole response head."""
    m = _RESPONSE_HEAD.match(data)
    return int(m.group(2)), m.group(3), _FIELD.findall(m.group(4))


class Request(object):
    """The least a server keeps of a request."""

    def __init__(self):
        self.fields = []

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.fields.append((name, value))

    def on_headers_complete(self):
        self.fields = []

    def on_message_complete(self):
        pass


class Response(Request):
    """The least a client keeps of a response."""

    def on_status(self, reason):
        self.reason = reason

    def on_body(self, data):
        pass


def ways():
    """``{name: function parsing one head}``."""
    out = {"scan-request": lambda: scan_request(REQUEST),
           "scan-response": lambda: scan_response(RESPONSE),
           "empty": lambda: None}
    for name, mod in (("httptools", httptools), ("python", pyparser)):
        if mod is None:
            continue
        req = mod.HttpRequestParser(Request())
        resp = mod.HttpResponseParser(Response())
        out[name + "-request"] = (lambda p: lambda: p.feed_data(REQUEST))(req)
        out[name + "-response"] = (lambda p: lambda: p.feed_data(RESPONSE))(resp)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", metavar="WAY", help="run WAY N times, untimed (callgrind)")
    ap.add_argument("-n", type=int, default=200000)
    args = ap.parse_args()
    table = ways()
    if args.count:
        f = table[args.count]
        for _ in range(args.n):
            f()
        return
    for name, f in sorted(table.items()):
        best = None
        for _ in range(3):
            t = time.process_time()
            for _ in range(args.n):
                f()
            dt = (time.process_time() - t) / args.n
            best = dt if best is None else min(best, dt)
        print("%-20s %6.2f us" % (name, best * 1e6))


if __name__ == "__main__":
    main()
