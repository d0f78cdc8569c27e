"""
Shared harness for the proxy tests that need real loopback sockets: real
upstream servers started by the tests, a proxy built from a config dict, raw
clients that control every byte, and treq for ordinary requests.

Use it only for what sockets show (kernel buffers and backpressure, the
reactor and fast write, lingering close against a client that writes before
it reads, half-close and resets of streams); behaviour tests go through
:mod:`tproxy.testing` (in memory, on a fake clock), with
:mod:`tests.upstreams` for an upstream scripted byte for byte.

A test case derives from :class:`ProxyTestCase`::

    class T(ProxyTestCase):
        async def test_x(self):
            up = self.upstream()                       # echoes requests as JSON
            proxy = await self.proxy({"api": [up]})    # group -> upstreams
            resp = await self.get(proxy, "/api/x")
            self.assertEqual(resp.json()["uri"], "/x")

Everything a test starts is closed in its cleanups, which then wait until the
reactor has no socket the test opened, so trial never sees a dirty reactor.
The cleanups also check that every peer's ``active`` count is back to 0.
"""

import hashlib
import itertools
import json
import os
import random
import socket
import sys

import treq
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool
from zope.interface import directlyProvides, providedBy

from tproxy.config import validate_config
from tproxy.gateway import Gateway
from tproxy.http import parsing as httptools  # httptools, or the pure-Python parser on PyPy
from tproxy.http.server import ProxyFactory
from tproxy.plugins import build_plugin_manager

LOG_RECORDER = "tests.proxy_plugins:LogRecorder"


def sleep(seconds):
    """A Deferred that fires after ``seconds`` of the real reactor."""
    return task.deferLater(reactor, seconds, lambda: None)


def prepare_hypothesis(derandomized):
    """
    Import hypothesis without its setuptools plugins, keep its caches in the
    checkout, and, for a derandomized run (the suite's), make what it
    generates depend on the test alone.  The fuzz modules call it before
    they import hypothesis.

    - The plugins are entry points of the group ``hypothesis`` that
      hypothesis loads when it is imported: trio's, installed with selenium,
      imports trio, ~0.06 s of CPU in each test process that fuzzes, for
      tests that use no trio.  ``HYPOTHESIS_NO_PLUGINS`` is set for the
      import only: the processes the tests start do not inherit it.
    - Its caches (its Unicode tables, ~0.35 s of CPU for each test process
      that builds them, which ``st.characters`` and ``st.text`` need: the
      fuzz modules' strategies draw text without them) are kept in the
      checkout's ``.hypothesis/`` (ignored by git) rather than in the
      working directory, trial's, which each run starts empty.
    - Hypothesis (6.131 and later) draws now and then one of the constants
      written in the source of the "local" modules imported so far (here
      tproxy's, not the tests'): which modules a trial worker has imported
      when it fuzzes depends on the tests it ran before, so the same
      derandomized test would be given other inputs from one ``-j2`` run to
      the next (and each process would parse those modules' source, ~0.3 s
      of CPU on a fresh clone).  For a derandomized run hypothesis is given
      none, only its own constants (``_get_local_constants`` is private; a
      hypothesis without it is left as it is).
      (:class:`tests.test_suite.HypothesisTests` checks it.)
    """
    import os
    if "hypothesis" not in sys.modules:
        saved = os.environ.get("HYPOTHESIS_NO_PLUGINS")
        os.environ["HYPOTHESIS_NO_PLUGINS"] = "1"
        try:
            __import__("hypothesis")
        finally:
            if saved is None:
                del os.environ["HYPOTHESIS_NO_PLUGINS"]
            else:
                os.environ["HYPOTHESIS_NO_PLUGINS"] = saved
    from hypothesis.configuration import set_hypothesis_home_dir
    set_hypothesis_home_dir(os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), ".hypothesis"))
    if derandomized:
        from hypothesis.internal.conjecture import providers
        if hasattr(providers, "_get_local_constants"):
            none = providers.Constants()
            providers._get_local_constants = lambda: none


#: picks the ports of :meth:`ProxyTestCase.closed_port` (its own generator:
#: the tests' seeds of ``random`` stay theirs)
_ports = random.Random()


def _ephemeral_low():
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_TEMP = itertools.count(1)


def rsa_key():
    """
    The tests' RSA-2048 private key (``cryptography``'s), read from
    ``tests/rsa2048.pem``: a key made for these tests, where generating one
    costs 30-120 ms of CPU (a random search for primes).  Its consistency
    check (another ~30 ms) is skipped: the key is this checkout's own.
    """
    if not _RSA_KEY:
        from cryptography.hazmat.primitives import serialization
        with open(os.path.join(os.path.dirname(__file__), "rsa2048.pem"), "rb") as f:
            _RSA_KEY.append(serialization.load_pem_private_key(
                f.read(), None, unsafe_skip_rsa_key_validation=True))
    return _RSA_KEY[0]


_RSA_KEY = []


def temp_path(case, suffix=""):
    """
    A new path for ``case``'s temporary file or directory (not created), as
    ``case.mktemp()`` gives, but in one directory of trial's working
    directory for the whole process (``tmp/``), named after the test:
    ``mktemp()`` makes two or more directories for each test
    (``module/class/method/random/``), entries that the next run removes one
    by one before its workers start (1-2 ms each on this machine's ext4).
    """
    directory = os.path.abspath("tmp")
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, "%s-%d%s" % (case.id(), next(_TEMP), suffix))


async def until(predicate, timeout=5.0, interval=0.005, message=None):
    """
    Wait until ``predicate()`` is true; fail after ``timeout``.  It is looked
    at after each of the reactor's next iterations (what loopback I/O makes
    true is seen at once, not at the next tick of a timer), then every
    ``interval`` seconds (what a timer makes true).
    """
    deadline = reactor.seconds() + timeout
    spins = 0
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("timed out waiting for %s" % (message or predicate,))
        if spins < _SPINS:
            spins += 1
            await task.deferLater(reactor, 0, lambda: None)
        else:
            await sleep(interval)


#: reactor iterations :func:`until` looks after before it polls on a timer
_SPINS = 50


def capture_log(case):
    """Record every ``twisted.logger`` event from now until ``case`` ends;
    the list they go to."""
    from twisted.logger import globalLogPublisher
    events = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def log_messages(events, namespace):
    """The text of the ``events`` logged by the logger of ``namespace``."""
    from twisted.logger import formatEvent
    return [formatEvent(e) for e in events if e.get("log_namespace") == namespace]


async def turns(n=20):
    """
    Let the reactor run ``n`` iterations, each polling the sockets: what a
    paused side would read or write if it were not paused moves meanwhile.
    A count of iterations, not a time: the same on a loaded machine.
    """
    for _ in range(n):
        await task.deferLater(reactor, 0, lambda: None)


def buffered(transport):
    """Bytes waiting in a Twisted TCP transport's write buffer."""
    if transport is None:
        return 0
    return (len(transport.dataBuffer) - transport.offset
            + transport._tempDataLen)


def is_reading(transport):
    """Whether the reactor reads from ``transport`` (it is not paused)."""
    return transport in reactor.getReaders()


class ClockedReactor(object):
    """
    The real reactor's I/O on a fake clock: every attribute is the real
    reactor's but ``callLater``, ``seconds`` and ``getDelayedCalls``, which
    are ``clock``'s (a :class:`~twisted.internet.task.Clock`).  A gateway
    or a registry built on it reads and writes real sockets (kernel buffers,
    backpressure, Redis) while its timeouts fire when the test calls
    :meth:`advance`, not after a wait on the wall clock.  A call in 0
    seconds (what the code leaves to the reactor's next turn, not to time)
    is the real reactor's.
    """

    def __init__(self, clock=None):
        self.clock = clock if clock is not None else task.Clock()
        self.seconds = self.clock.seconds
        self.getDelayedCalls = self.clock.getDelayedCalls
        self.advance = self.clock.advance
        directlyProvides(self, providedBy(reactor))

    def callLater(self, delay, f, *args, **kw):
        if delay <= 0:
            return reactor.callLater(0, f, *args, **kw)
        return self.clock.callLater(delay, f, *args, **kw)

    def __getattr__(self, name):
        return getattr(reactor, name)


# -- upstream servers ------------------------------------------------------------


class UpRequest(object):
    """
    One request as a test upstream received it.

    :ivar headers: ``[(name, value)]`` as ``str``, in wire order.
    :ivar body: the body (``bytes``) unless the server only counts it.
    """

    def __init__(self, conn):
        self.conn = conn
        self.method = None
        self.url = b""
        self.version = None
        self.headers = []
        self.body = bytearray()
        self.body_length = 0
        self.sha256 = hashlib.sha256()
        self.complete = False

    @property
    def uri(self):
        """The request target as received."""
        return self.url.decode("latin-1")

    def header(self, name):
        """The first value of ``name`` (case-insensitive), or ``None``."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name):
        """Every value of ``name``, in order."""
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def as_dict(self):
        """What :func:`echo` sends back."""
        return {"method": self.method, "uri": self.uri, "version": self.version,
                "headers": self.headers, "body_length": self.body_length,
                "body_sha256": self.sha256.hexdigest(),
                "connection": self.conn.index}


class UpConnection(Protocol):
    """A test upstream's side of one connection: parses requests (httptools)
    and hands each complete one to the server's handler."""

    index = None
    current = None

    def connectionMade(self):
        server = self.factory
        self.index = len(server.connections)
        server.connections.append(self)
        server.open.add(self)
        self.lost = defer.Deferred()
        self.parser = httptools.HttpRequestParser(self)
        self.received = 0
        self.timers = []
        if server.on_connect is not None:
            server.on_connect(self)

    def dataReceived(self, data):
        self.received += len(data)
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.factory.errors.append(e)
            self.parser = None
            self.transport.abortConnection()

    def on_message_begin(self):
        self.current = UpRequest(self)

    def on_url(self, url):
        self.current.url += url

    def on_header(self, name, value):
        self.current.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self):
        req = self.current
        req.method = self.parser.get_method().decode("ascii")
        req.version = self.parser.get_http_version()
        self.factory.heads.append(req)
        if self.factory.on_head is not None:
            self.factory.on_head(self, req)

    def on_body(self, data):
        req = self.current
        req.body_length += len(data)
        req.sha256.update(data)
        if self.factory.keep_body:
            req.body += data

    def on_message_complete(self):
        req, self.current = self.current, None
        req.complete = True
        self.factory.requests.append(req)
        self.factory.handler(self, req)

    # -- answering -----------------------------------------------------------

    def respond(self, status=200, body=b"", headers=(), reason=b"OK", length=True):
        """Write a whole response (with Content-Length unless ``length`` is false)."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        for n, v in headers:
            lines.append(b"%s: %s\r\n" % (_b(n), _b(v)))
        if length:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        lines.append(body)
        self.transport.write(b"".join(lines))

    def later(self, seconds, fn, *args):
        """``fn(*args)`` after ``seconds``, unless the connection is gone."""
        def call():
            if self.transport.connected:
                fn(*args)
        self.timers.append(reactor.callLater(seconds, call))

    def connectionLost(self, reason):
        self.factory.open.discard(self)
        for t in self.timers:
            if t.active():
                t.cancel()
        self.lost.callback(None)


class UpstreamServer(Factory):
    """
    A test upstream on ``127.0.0.1:<port>``.

    :param handler: ``handler(conn, req)`` for each complete request; it
        answers with ``conn.respond(...)`` or raw ``conn.transport`` writes.
    :ivar connections: every :class:`UpConnection` accepted, in order.
    :ivar requests: every complete :class:`UpRequest`; ``heads`` also holds
        the ones whose body has not arrived yet.
    """

    protocol = UpConnection
    noisy = False

    def __init__(self, handler=None, keep_body=True, on_head=None, on_connect=None):
        self.handler = handler or echo
        self.keep_body = keep_body
        self.on_head = on_head
        self.on_connect = on_connect
        self.connections = []
        self.open = set()
        self.requests = []
        self.heads = []
        self.errors = []
        self.port = None
        self.listener = None

    def listen(self, port=0):
        """Start listening on loopback ``port`` (default: an ephemeral one)."""
        self.listener = reactor.listenTCP(port, self, interface="127.0.0.1")
        self.port = self.listener.getHost().port
        return self

    @property
    def address(self):
        """``"127.0.0.1:<port>"``."""
        return "127.0.0.1:%d" % self.port

    async def close(self):
        """Stop listening and drop every connection."""
        if self.listener is not None:
            await self.listener.stopListening()
            self.listener = None
        conns = list(self.open)
        for c in conns:
            c.transport.abortConnection()
        for c in conns:
            await c.lost


def _b(s):
    return s if isinstance(s, bytes) else str(s).encode("latin-1")


def echo(conn, req):
    """Answer with the request's details as JSON (see :meth:`UpRequest.as_dict`)."""
    conn.respond(200, json.dumps(req.as_dict()), [("Content-Type", "application/json")])


def delayed(seconds, then=echo):
    """A handler answering like ``then`` after ``seconds``."""
    def handler(conn, req):
        conn.later(seconds, then, conn, req)
    return handler


def silent(conn, req):
    """Never answer."""


class Held(object):
    """
    A handler that keeps each request unanswered until the test calls
    :meth:`release` (a request in flight for as long as the test needs it,
    without a wall-clock delay); ``then`` answers the requests released and
    every later one.
    """

    def __init__(self, then=echo):
        self.then = then
        self.waiting = []

    def __call__(self, conn, req):
        if self.waiting is None:
            self.then(conn, req)
        else:
            self.waiting.append((conn, req))

    def release(self):
        """Answer the requests held (unless their connection is gone) and
        hold no more."""
        waiting, self.waiting = self.waiting or [], None
        for conn, req in waiting:
            if conn.transport.connected:
                self.then(conn, req)


def pattern_digest(key, blocks):
    """The sha256 hex digest of the bytes of ``blocks()`` (an iterable of
    ``bytes``), computed once per ``key`` in a process: the streaming tests
    compare bodies of 16 and 32 MiB with it, ~20 ms of hashing each."""
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for block in blocks():
            h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


#: {key: sha256 hex digest} (:func:`pattern_digest`)
_DIGESTS = {}


class BodySource(object):
    """
    A pull producer writing ``size`` bytes of a fixed pattern to a transport,
    one block each time the transport's buffer has drained; ``sent`` counts
    what was written so far and ``sha256`` is the digest of the whole.
    """

    BLOCK = bytes(range(256)) * 1024   # 256 KiB

    def __init__(self, transport, size, chunked=False, done=None):
        self.transport = transport
        self.size = size
        self.sent = 0
        self.chunked = chunked
        self.done = done
        self.pulls = 0
        self.finished = False
        transport.registerProducer(self, False)

    @classmethod
    def digest(cls, size):
        """The sha256 hex digest of ``size`` bytes of the pattern (see
        :func:`pattern_digest`)."""
        full, part = divmod(size, len(cls.BLOCK))
        return pattern_digest((cls.BLOCK, size),
                              lambda: [cls.BLOCK] * full + [cls.BLOCK[:part]])

    def resumeProducing(self):
        self.pulls += 1
        if self.finished:
            return
        n = min(len(self.BLOCK), self.size - self.sent)
        if n:
            data = self.BLOCK[:n]
            self.sent += n
            if self.chunked:
                self.transport.writeSequence([b"%x\r\n" % n, data, b"\r\n"])
            else:
                self.transport.write(data)
        if self.sent >= self.size:
            self.finished = True
            if self.chunked:
                self.transport.write(b"0\r\n\r\n")
            self.transport.unregisterProducer()
            if self.done is not None:
                self.done()

    def pauseProducing(self):
        pass

    def stopProducing(self):
        self.finished = True


def download(size, chunked=False):
    """A handler streaming a ``size``-byte body (see :class:`BodySource`);
    the source is kept as ``conn.source``."""
    def handler(conn, req):
        head = [b"HTTP/1.1 200 OK\r\n"]
        head.append(b"Transfer-Encoding: chunked\r\n" if chunked
                    else b"Content-Length: %d\r\n" % size)
        conn.transport.write(b"".join(head) + b"\r\n")
        conn.source = BodySource(conn.transport, size, chunked)
    return handler


# -- clients ---------------------------------------------------------------------------


class Resp(object):
    """A response as parsed by :func:`parse_responses`."""

    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first value of ``name`` (case-insensitive), or ``None``."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name):
        """Every value of ``name``."""
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def json(self):
        """The body as JSON."""
        return json.loads(self.body)

    def __repr__(self):
        return "<Resp %s %d %r %r>" % (self.version, self.status, self.headers,
                                       self.body[:200])


def parse_responses(data, methods=(), closed=False):
    """
    Parse the responses in ``data`` (1xx ones included, in order).

    :param methods: the request methods in order (``HEAD`` responses have no
        body); missing ones are taken as ``GET``.
    :param closed: the connection closed, so a body without framing ends at
        the end of ``data``.
    :return: ``(responses, complete)``: ``complete`` is false when ``data``
        ends inside a response.
    """
    data = bytes(data)
    out = []
    finals = 0
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, False
        lines = data[pos:end].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        status = int(code)
        headers = []
        for line in lines[1:]:
            n, _, v = line.partition(":")
            headers.append((n, v.strip()))
        resp = Resp(version, status, reason, headers, b"")
        start = end + 4
        if status < 200:
            out.append(resp)
            pos = start
            continue
        method = methods[finals] if finals < len(methods) else "GET"
        finals += 1
        te = resp.header("transfer-encoding")
        cl = resp.header("content-length")
        if method == "HEAD" or status in (204, 304):
            pos = start
        elif te is not None and te.lower() == "chunked":
            body = []
            p = start
            while True:
                eol = data.find(b"\r\n", p)
                if eol < 0:
                    return out, False
                n = int(data[p:eol].split(b";")[0], 16)
                if n == 0:
                    trailer_end = data.find(b"\r\n", eol + 2)
                    if trailer_end < 0:
                        return out, False
                    p = trailer_end + 2
                    break
                if len(data) < eol + 2 + n + 2:
                    return out, False
                body.append(data[eol + 2:eol + 2 + n])
                p = eol + 2 + n + 2
            resp.body = b"".join(body)
            pos = p
        elif cl is not None:
            n = int(cl)
            if len(data) < start + n:
                return out, False
            resp.body = data[start:start + n]
            pos = start + n
        else:
            if not closed:
                return out, False
            resp.body = data[start:]
            pos = len(data)
        out.append(resp)
    return out, True


class RawClient(Protocol):
    """
    A client connection whose bytes the test writes itself; it collects what
    it receives (or only counts it, with ``keep=False``).
    """

    def __init__(self, keep=True):
        self.keep = keep
        self.data = bytearray()
        self.received = 0
        self.closed = False
        self.lost = defer.Deferred()

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.received += len(data)
        if self.keep:
            self.data += data

    def connectionLost(self, reason):
        self.closed = True
        self.reason = reason
        self.lost.callback(None)

    def send(self, data):
        """Write ``data`` (``bytes`` or ``str``)."""
        self.transport.write(_b(data) if isinstance(data, str) else data)

    def responses(self, methods=()):
        """The responses received so far (only complete ones)."""
        return parse_responses(self.data, methods, self.closed)[0]

    def finals(self, methods=()):
        """The final (non-1xx) responses received so far."""
        return [r for r in self.responses(methods) if r.status >= 200]

    async def wait_responses(self, n, methods=(), timeout=5.0):
        """Wait for ``n`` final responses; return them."""
        await until(lambda: len(self.finals(methods)) >= n or self.closed,
                    timeout, message="%d responses" % n)
        resps = self.finals(methods)
        if len(resps) < n:
            raise AssertionError("connection closed after %d of %d responses: %r"
                                 % (len(resps), n, bytes(self.data[:2000])))
        return resps

    async def wait_closed(self, timeout=5.0):
        """Wait until the proxy closes the connection."""
        await until(lambda: self.closed, timeout, message="the connection to close")


def request(method="GET", path="/", headers=(("Host", "example.com"),), body=None,
            version="1.1"):
    """The bytes of a request (``Content-Length`` added when ``body`` is given)."""
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    for n, v in headers:
        lines.append("%s: %s" % (n, v))
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (_b(body) if body is not None else b"")


# -- the proxy ---------------------------------------------------------------------------


class TrackingProxyFactory(ProxyFactory):
    """A :class:`ProxyFactory` that remembers its client connections."""

    def __init__(self, gateway):
        ProxyFactory.__init__(self, gateway)
        self.protocols = []

    def buildProtocol(self, addr):
        p = ProxyFactory.buildProtocol(self, addr)
        self.protocols.append(p)
        return p


class Proxy(object):
    """A running proxy: ``gateway``, ``factory``, ``port``, ``plugins``."""

    def __init__(self, gateway, factory, listener):
        self.gateway = gateway
        self.factory = factory
        self.listener = listener
        self.port = listener.getHost().port

    def url(self, path):
        """The URL of ``path`` on the proxy."""
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def plugin(self, name):
        """The registered plugin object called ``name``."""
        return self.gateway.plugins.get_plugin(name)

    @property
    def logged(self):
        """The contexts ``log`` was called with, in order."""
        return self.plugin(LOG_RECORDER).logged

    def peers(self):
        """Every peer in the registry."""
        return [p for g in self.gateway.registry.groups() for p in g.peers.values()]

    def peer(self, server):
        """The registry's peer for a test upstream ``server``."""
        for p in self.peers():
            if p.port == server.port:
                return p
        raise KeyError(server.port)

    def active(self):
        """``{port: active}`` of every peer."""
        return {p.port: p.active for p in self.peers()}

    def upstream_transports(self):
        """The proxy's transports to upstreams: in flight and pooled."""
        out = []
        for p in self.factory.protocols:
            ex = getattr(p, "exchange", None)
            if ex is not None and ex.upstream is not None:
                out.append(ex.upstream.transport)
        for conns in self.factory.pool.idle.values():
            out.extend(c.transport for c in conns)
        return out


class ProxyTestCase(unittest.TestCase):
    """
    A test case with real upstreams, a real proxy and clients; everything is
    closed afterwards and the reactor left clean.
    """

    def setUp(self):
        self._baseline = set(reactor.getReaders()) | set(reactor.getWriters())
        # registered first, so it runs last
        self.addCleanup(self._wait_quiet)
        self._servers = []
        self._clients = []
        self._proxies = []
        self._listeners = []
        self._pool = None

    async def _wait_quiet(self):
        for c in self._clients:
            if not c.closed:
                c.transport.abortConnection()
        for c in self._clients:
            await c.lost
        if self._pool is not None:
            await self._pool.closeCachedConnections()
        for listener in self._listeners:
            await listener.stopListening()
        for proxy in self._proxies:
            await proxy.listener.stopListening()
            for p in proxy.factory.protocols:
                if p.transport.connected:
                    p.transport.abortConnection()
            proxy.factory.pool.close()
        for s in self._servers:
            await s.close()
        for proxy in self._proxies:
            await proxy.gateway.stop()

        def leftover():
            now = set(reactor.getReaders()) | set(reactor.getWriters())
            internal = set(getattr(reactor, "_internalReaders", ()))
            return now - self._baseline - internal

        def quiet():
            return not leftover()
        def closed():
            # an aborted transport leaves the reactor at once; its
            # connectionLost (which counts it closed) runs an iteration later
            return all(proxy.factory.open_connections == 0 for proxy in self._proxies)
        try:
            await until(quiet, 5.0, message="the reactor to be clean")
            await until(closed, 5.0, message="the proxies' connections to be closed")
        except AssertionError:
            raise AssertionError("left open: %r" % (leftover(),))
        for proxy in self._proxies:
            self.assertEqual(proxy.factory.open_connections, 0)
            leaked = {p.address: p.active for p in proxy.peers() if p.active}
            self.assertEqual(leaked, {}, "peer counts not back to 0")

    def upstream(self, handler=None, port=0, **kw):
        """Start a test upstream (default: :func:`echo`) on ``port`` (default:
        an ephemeral one)."""
        s = UpstreamServer(handler, **kw).listen(port)
        self._servers.append(s)
        return s

    def closed_port(self):
        """
        A loopback port nobody listens on (connections are refused), for a
        server that listens there later: one below the kernel's ephemeral
        range.  A port of that range, once closed, may be any outgoing
        connection's local port the moment after (another test process's,
        in a parallel run), and listening on it fails while that
        connection lasts.
        """
        low = _ephemeral_low()
        for _ in range(100):
            number = _ports.randrange(max(1024, low // 2), low)
            probe = socket.socket()
            try:
                probe.bind(("127.0.0.1", number))
            except OSError:
                continue
            finally:
                probe.close()
            return number
        raise AssertionError("no free loopback port below %d" % low)

    async def proxy(self, upstreams=None, plugins=None, clock=None, **config):
        """
        Build and start a proxy listening on an ephemeral port.

        :param upstreams: ``{group: [UpstreamServer or "host:port" or
            (server, weight)]}``.
        :param plugins: the plugin list (default ``["router", "least_conn"]``);
            :data:`LOG_RECORDER` is appended.
        :param clock: a :class:`ClockedReactor` for the gateway's timers
            (default: the real reactor's).
        :param config: other top-level configuration keys.
        """
        groups = {}
        for name, members in (upstreams or {}).items():
            peers = []
            for m in members:
                weight = 1
                if isinstance(m, tuple):
                    m, weight = m
                addr = m.address if isinstance(m, UpstreamServer) else m
                host, port = addr.rsplit(":", 1)
                peers.append({"host": host, "port": int(port), "weight": weight})
            groups[name] = {"peers": peers}
        cfg = {"listen": "tcp:0", "upstreams": groups,
               "plugins": list(plugins if plugins is not None else ["router", "least_conn"])
               + [LOG_RECORDER]}
        cfg.update(config)
        cfg = validate_config(cfg)
        pm = build_plugin_manager(cfg, entry_points=[])
        gateway = Gateway(cfg, reactor if clock is None else clock, pm)
        await gateway.start()
        factory = TrackingProxyFactory(gateway)
        listener = reactor.listenTCP(0, factory, interface="127.0.0.1")
        proxy = Proxy(gateway, factory, listener)
        self._proxies.append(proxy)
        return proxy

    def admin(self, proxy):
        """Listen with ``proxy``'s admin site; its base URL."""
        listener = reactor.listenTCP(0, proxy.gateway.admin.site(), interface="127.0.0.1")
        self._listeners.append(listener)
        return "http://127.0.0.1:%d" % listener.getHost().port

    async def connect(self, proxy, keep=True, client=None):
        """A :class:`RawClient` (or ``client``) connected to ``proxy``."""
        if client is None:
            client = RawClient(keep)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.port), client)
        self._clients.append(client)
        return client

    async def exchange(self, proxy, data, n=1, methods=()):
        """Send ``data`` on a new connection; wait for ``n`` responses."""
        client = await self.connect(proxy)
        client.send(data)
        resps = await client.wait_responses(n, methods)
        return resps[0] if n == 1 else resps

    @property
    def pool(self):
        """The treq connection pool of this test (closed afterwards)."""
        if self._pool is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
        return self._pool

    async def get(self, proxy, path, method="GET", **kw):
        """A request through treq; a :class:`Resp` with the whole body."""
        response = await treq.request(method, proxy.url(path), pool=self.pool, **kw)
        body = await treq.content(response)
        headers = [(n.decode("latin-1"), v.decode("latin-1"))
                   for n, vs in response.headers.getAllRawHeaders() for v in vs]
        return Resp("HTTP/1.1", response.code, response.phrase, headers, body)

    def assertLoggedOnce(self, proxy, n=1):
        """``log`` ran ``n`` times, once per request (distinct contexts)."""
        ids = [ctx.request_id for ctx in proxy.logged]
        self.assertEqual(len(ids), n, ids)
        self.assertEqual(len(set(ids)), n, ids)
