"""
The Python cost of one proxied request, without sockets: a real gateway,
ProxyFactory, client protocol and upstream protocol, on transports that only
count bytes.  What is left of tproxy's per-request CPU when system calls and
the reactor are taken away.

    python bench/micro_request.py [--profile] [--plugins router,least_conn] [--access-log]
    python bench/micro_request.py --count -n 2000    # exactly N requests, untimed (callgrind)
    python bench/micro_request.py --close            # a new client connection per request
    python bench/micro_request.py --cpu              # timed by CPU time (a loaded machine)

``--close`` sends ``Connection: close``: each request comes on a new client
connection (built, connected, answered, closed and lost), as wrk's
``close`` scenario in run.sh; the upstream connection is still kept alive.

On PyPy it sets the JIT parameters ``twistd tproxy`` sets at start
(``tproxy.tap.PYPY_JIT``; ``TPROXY_PYPY_JIT=`` for PyPy's defaults).

``--peers N`` puts N peers in the group (127.0.0.1:19000 and up), each with
one kept-alive upstream connection in the pool, the response coming on the
connection the request was written to (``least_conn`` takes them in turn):
the cost of their objects no cache holds, as ``bench/run.sh``'s
``tproxy_nN`` pays it without the sockets.  On PyPy it is the cheap
measure of 10,000 peers (callgrind does not run PyPy).

``--fields N`` adds N header fields to the request and to the response
(browser-like names and values: real heads carry 5 to 15 more than these).

``--access-log`` adds the ``access_log`` plugin with its default settings (the
configuration of ``etc/conf.json``), its lines going to /dev/null instead of
stdout (the same writes on another descriptor).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from tproxy.config import validate_config  # noqa: E402
from tproxy.gateway import Gateway  # noqa: E402
from tproxy.http.server import ProxyFactory  # noqa: E402
from tproxy.http.upstream import UpstreamProtocol  # noqa: E402
from tproxy.plugins import build_plugin_manager  # noqa: E402

REQUEST = (b"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:18500\r\n"
           b"User-Agent: wrk\r\nAccept: */*\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 30 Nov 2026 06:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 100\r\nConnection: keep-alive\r\n\r\n"
            + b"x" * 100)


class Sink(object):
    """A transport that takes bytes and does nothing else."""
    connected = True
    disconnecting = False
    dataBuffer = b""
    TLS = False

    def __init__(self, port):
        self.port = port
        self.written = 0
        self.producer = None

    def write(self, data):
        self.written += len(data)

    def writeSequence(self, seq):
        for d in seq:
            self.written += len(d)

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def pauseProducing(self):
        pass

    resumeProducing = stopProducing = pauseProducing

    def setTcpNoDelay(self, flag):
        pass

    def getPeer(self):
        return IPv4Address("TCP", "127.0.0.1", self.port)

    def loseConnection(self):
        if not self.closable:
            raise AssertionError("closed")
        self.connected = False

    abortConnection = loseConnection
    closable = False


class UpstreamSink(Sink):
    """An upstream connection's :class:`Sink` that says which connection
    the last request was written to (``--peers``)."""

    written_to = [None]

    def write(self, data):
        self.written += len(data)
        self.written_to[0] = self.upstream


class _ConnectFactory(object):
    exchange = None


def build(plugins, access_log=False, close=False, peers=1):
    if access_log:
        plugins = list(plugins) + [{"name": "access_log",
                                    "settings": {"target": "file", "path": os.devnull}}]
    addresses = ["127.0.0.1:%d" % (19000 + i) for i in range(peers)]
    cfg = validate_config({"upstreams": {"api": {"peers": addresses}},
                           "proxy": {"keepalive_requests": 10 ** 9}, "plugins": plugins})
    clock = Clock()
    gateway = Gateway(cfg, clock, build_plugin_manager(cfg))
    gateway.start()
    factory = ProxyFactory(gateway)
    client = factory.buildProtocol(None)
    client.makeConnection(Sink(40000))
    # one kept-alive upstream connection per peer in the pool
    from tproxy.http.parsing import HttpResponseParser
    for peer in list(gateway.registry.group("api").peers.values()):
        up = UpstreamProtocol(factory.pool, peer)
        up.factory = _ConnectFactory()
        if peers == 1:
            up.transport = Sink(peer.port)
        else:
            up.transport = UpstreamSink(peer.port)
            up.transport.upstream = up
        up.parser = HttpResponseParser(up)
        up.connected = 1
        factory.pool._idle(up)
    if peers > 1:
        up = None   # (the one written to: see one_of_many)
    if close:
        return factory, up
    return client, up


def one(client, up):
    client.dataReceived(REQUEST)
    up.dataReceived(RESPONSE)


def one_of_many(client, up):
    """A request to one of ``--peers``, its response on the upstream
    connection it was written to."""
    client.dataReceived(REQUEST)
    UpstreamSink.written_to[0].dataReceived(RESPONSE)


REQUEST_CLOSE = REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
_DONE = Failure(ConnectionDone())


def one_close(factory, up):
    """A client connection for one request (``Connection: close``)."""
    client = factory.buildProtocol(None)
    sink = Sink(40000)
    sink.closable = True
    client.makeConnection(sink)
    client.dataReceived(REQUEST_CLOSE)
    up.dataReceived(RESPONSE)
    assert not sink.connected
    client.connectionLost(_DONE)


#: browser-like fields (--fields): name, value
_FIELDS = [
    (b"Accept-Language", b"en-US,en;q=0.9"), (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Cache-Control", b"no-cache"), (b"Cookie", b"session=4f1c2a9b8e7d6c5b; theme=dark"),
    (b"Referer", b"https://example.com/app/page"), (b"Sec-Fetch-Mode", b"cors"),
    (b"X-Request-Id", b"7d2f9c1e-5b3a-4e8d-9f6a-2c1b0e3d4f5a"), (b"Pragma", b"no-cache"),
    (b"Vary", b"Accept-Encoding"), (b"ETag", b'"5f3c-1a2b3c4d"'),
]


def with_fields(head, n):
    """``head`` with ``n`` more fields before its empty line."""
    lines = b"".join(b"%s: %s\r\n" % _FIELDS[i % len(_FIELDS)] for i in range(n))
    i = head.index(b"\r\n\r\n") + 2
    return head[:i] + lines + head[i:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--plugins", default="router,least_conn")
    ap.add_argument("--access-log", action="store_true",
                    help="add access_log (default settings, lines to /dev/null)")
    ap.add_argument("--close", action="store_true",
                    help="Connection: close, a new client connection per request")
    ap.add_argument("--fields", type=int, default=0,
                    help="N more header fields in the request and the response")
    ap.add_argument("--peers", type=int, default=1,
                    help="N peers in the group, each with its kept-alive connection")
    ap.add_argument("--cpu", action="store_true",
                    help="time by the process's CPU time, not the wall clock (a "
                         "loaded machine preempts the benchmark)")
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--count", action="store_true",
                    help="run exactly N requests once, untimed (for callgrind: "
                         "compare two N, see bench/README.md)")
    args = ap.parse_args()
    # the JIT parameters twistd tproxy sets on PyPy (TPROXY_PYPY_JIT= for
    # PyPy's defaults)
    from tproxy.tap import _tune_pypy_jit
    _tune_pypy_jit()
    global one, REQUEST, RESPONSE, REQUEST_CLOSE
    if args.fields:
        REQUEST, RESPONSE, REQUEST_CLOSE = (
            with_fields(REQUEST, args.fields), with_fields(RESPONSE, args.fields),
            with_fields(REQUEST_CLOSE, args.fields))
    if args.close and args.peers > 1:
        ap.error("--close takes one peer")
    client, up = build(args.plugins.split(","), args.access_log, args.close, args.peers)
    if args.close:
        one = one_close
    elif args.peers > 1:
        one = one_of_many
    for _ in range(max(200 if args.count else 2000, 2 * args.peers)):
        one(client, up)
    if args.count:
        for _ in range(args.n):
            one(client, up)
        return
    if args.profile:
        import cProfile
        import pstats
        cProfile.runctx("for _ in range(n): one(client, up)", globals(),
                        {"n": args.n, "one": one, "client": client, "up": up},
                        "/tmp/micro_request.prof")
        pstats.Stats("/tmp/micro_request.prof").sort_stats("tottime").print_stats(25)
        return
    best = None
    clock = time.process_time if args.cpu else time.perf_counter
    for _ in range(3):
        t = clock()
        for _ in range(args.n):
            one(client, up)
        dt = (clock() - t) / args.n
        best = dt if best is None else min(best, dt)
    print("%.2f us of Python per proxied request (%s%s%s%s)" % (
        best * 1e6, args.plugins, ",access_log" if args.access_log else "",
        ", Connection: close" if args.close else "",
        ", %d peers" % args.peers if args.peers > 1 else ""))


if __name__ == "__main__":
    main()
