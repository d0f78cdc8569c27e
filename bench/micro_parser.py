"""
Micro-benchmark: parses per second of a typical ~200-byte GET request, fed
whole to a fresh-per-connection parser, for tproxy's pure-Python parser and
for httptools (when importable).

    python bench/micro_parser.py [seconds-per-run]

Each parser is run a few times; the best run is printed (on PyPy the first
runs include JIT warm-up).  The protocol object does what a real server's
does at minimum: keeps the URL, the header pairs, and the keep-alive flag.
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

try:
    from tproxy.http import pyparser
except ImportError:
    # tproxy's dependencies are not installed in this interpreter (e.g. a
    # bare pypy3): the parser module itself only needs the stdlib.
    import importlib.util
    _spec = importlib.util.spec_from_file_location(
        "pyparser", os.path.join(ROOT, "tproxy", "http", "pyparser.py"))
    pyparser = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(pyparser)

REQUEST = (
    b"GET /api/v1/items?id=12345&sort=desc HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench/1.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n"
)


class Protocol(object):
    __slots__ = ("url", "headers", "keep_alive", "parser", "done")

    def __init__(self):
        self.url = None
        self.headers = []
        self.keep_alive = None
        self.done = 0

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_headers_complete(self):
        self.keep_alive = self.parser.should_keep_alive()

    def on_message_complete(self):
        self.done += 1


def run(module, seconds, per_parser=10):
    """Parse REQUEST for ``seconds``; return parses per second."""
    make = module.HttpRequestParser
    data = REQUEST
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(200):
            proto = Protocol()
            parser = proto.parser = make(proto)
            for _ in range(per_parser):     # keep-alive: several requests
                proto.headers = []
                parser.feed_data(data)
            count += per_parser
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    modules = [("pyparser", pyparser)]
    try:
        import httptools
    except ImportError:
        print("httptools: not importable, skipped")
    else:
        modules.append(("httptools %s" % httptools.__version__, httptools))
    impl = sys.implementation.name
    print("%s %s, %d-byte GET, parser reused for 10 requests"
          % (impl, sys.version.split()[0], len(REQUEST)))
    for name, module in modules:
        best = max(run(module, seconds) for _ in range(5))
        print("  %-16s %10.0f parses/s  (%.2f us each)" % (name, best, 1e6 / best))


if __name__ == "__main__":
    main()
