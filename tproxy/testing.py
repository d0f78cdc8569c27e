# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
Test plugins without sockets: a real gateway, its real HTTP server and
upstream pool, and stub upstream servers, all wired in memory on a fake clock
(:class:`twisted.internet.testing.MemoryReactorClock` and the pumps of
:mod:`twisted.test.iosim`), in the spirit of :mod:`treq.testing`.

Every call of a :class:`Harness` moves bytes until nothing more happens and
returns; nothing waits for real time, so a test stays synchronous::

    from twisted.trial.unittest import SynchronousTestCase

    from tproxy import hookimpl
    from tproxy.testing import Harness, echo


    class Greeting(object):
        @hookimpl
        def header_filter(self, response):
            response.headers.set("X-Greeting", "hello")


    class GreetingTests(SynchronousTestCase):

        def test_header(self):
            h = Harness(
                config={"upstreams": {"default": {"peers": ["127.0.0.1:9001"]}}},
                plugins=["router", "least_conn", Greeting()],
                servers={"127.0.0.1:9001": echo},
            )
            response = h.request("GET", "/hello")
            self.assertEqual(response.status, 200)
            self.assertEqual(response.headers.get("x-greeting"), "hello")
            self.assertEqual(h.upstream_requests[0].uri, "/hello")
            self.assertEqual(h.contexts[0].peer.address, "127.0.0.1:9001")

What a test can look at:

- the client's view: the :class:`StubResponse` of :meth:`Harness.request`;
- the upstreams' view: :attr:`Harness.upstream_requests`, one
  :class:`UpstreamRequest` per request a stub server received;
- the phases' view: :attr:`Harness.contexts`, the
  :class:`~tproxy.context.RequestContext` of every finished request as the
  ``log`` phase saw it (``status``, ``route``, ``peer``, ``tried``,
  ``error``, ``vars``);
- what was logged: :attr:`Harness.events`, the :mod:`twisted.logger` events
  emitted while the harness worked (the ``access_log`` lines among them).

Time moves only with :meth:`Harness.advance`, which fires the timers that
fall due on the way (``LoopingCall`` s, timeouts, TTLs) in order, moving bytes
between each.

Stub servers (the values of ``servers``):

- a function ``handler(request) -> (status, headers, body)``, where
  ``request`` is an :class:`UpstreamRequest`; it may return a Deferred or be
  ``async def`` (a Deferred that never fires is an upstream that never
  answers);
- a :class:`twisted.web.resource.IResource`, served by a real
  :class:`twisted.web.server.Site`;
- any other :class:`twisted.internet.interfaces.IProtocolFactory` (to send
  bytes that are not HTTP, say);
- :data:`UNREACHABLE`: connection attempts hang until the connect timeout.

An address with no stub refuses connections.

Stream listeners (``streams``, :mod:`tproxy.stream`) have their own harness,
:class:`StreamHarness`, on the same clock and pumps: :meth:`StreamHarness.connect`
opens a client connection (a :class:`StreamConnection`: ``send``,
``half_close``, ``close``, ``abort``, ``received``, ``eof``, ``closed``,
``reset``), the stubs are :class:`StreamServer` s (recording, echoing), FINs
and resets travel as on a TCP socket, and :attr:`StreamHarness.logged` holds
the :class:`~tproxy.stream.StreamContext` of every connection ``stream_log``
saw.

Stability: :class:`Harness`, :class:`StubResponse`, :class:`UpstreamRequest`,
:class:`PendingRequest`, :class:`RequestPending`,
:class:`ResponseIncomplete`, :func:`echo`, :data:`UNREACHABLE`,
:class:`StreamHarness`, :class:`StreamConnection` and :class:`StreamServer`
are public API; everything whose name starts with ``_`` is not.
"""

import itertools
import json
import types
from collections import namedtuple
from contextlib import contextmanager

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet import tcp
from twisted.internet.error import (ConnectionAborted, ConnectionDone, ConnectionLost,
                                    ConnectionRefusedError, TimeoutError)
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request as _WebRequest, Site
from zope.interface import implementer

from tproxy import hookimpl
from tproxy.admin import AdminRequest
from tproxy.config import parse_host_port, validate_config
from tproxy.gateway import Gateway
from tproxy.http.headers import Headers
from tproxy.http.server import ProxyFactory
from tproxy.plugins import BUILTINS, build_plugin_manager, tproxy_entry_points
from tproxy.stream import StreamFactory

__all__ = ["Harness", "PendingRequest", "RequestPending", "ResponseIncomplete",
           "StreamConnection", "StreamHarness", "StreamServer", "StubResponse",
           "UNREACHABLE", "UpstreamRequest", "echo"]

_log = Logger()

#: The address the harness's clients connect to (what the proxy's
#: ``getHost()`` says).
_PROXY_ADDRESS = ("127.0.0.1", 8080)

#: The address a :class:`StreamHarness`'s clients connect to by default.
_STREAM_ADDRESS = ("127.0.0.1", 6380)

#: The registration name of the harness's own ``log`` recorder.
_RECORDER = "tproxy.testing"

#: Pump rounds after which :meth:`Harness.flush` gives up (something is
#: sending forever).
_MAX_ROUNDS = 10000


class _Unreachable(object):
    """The type of :data:`UNREACHABLE`."""

    def __repr__(self):
        return "UNREACHABLE"


#: A stub server whose connection attempts never complete: each fails with a
#: ``TimeoutError`` once the connect timeout (``timeouts.connect``) has
#: passed on the harness's clock.
UNREACHABLE = _Unreachable()


class RequestPending(Exception):
    """
    The request has no complete response yet: the upstream did not answer
    (or the proxy is waiting for a timer).  Send it with ``wait=False`` and
    :meth:`Harness.advance` the clock.
    """


class ResponseIncomplete(Exception):
    """
    The proxy closed the client connection before the response was complete.

    :ivar partial: a :class:`StubResponse` of what arrived (``status`` is
        ``None`` when not even the head did).
    """

    def __init__(self, message, partial):
        Exception.__init__(self, message)
        self.partial = partial


class StubResponse(namedtuple("StubResponse", "status reason headers body")):
    """
    The response the client received.

    :ivar status: the status code (``int``).
    :ivar reason: the reason phrase (``str``).
    :ivar headers: a :class:`tproxy.http.headers.Headers` (case-insensitive
        ``get``, ``get_all``), framing fields (``Content-Length``,
        ``Transfer-Encoding``) included.
    :ivar body: the body (``bytes``), de-chunked.
    """

    __slots__ = ()

    def json(self):
        """The body decoded as JSON."""
        return json.loads(self.body.decode("utf-8"))


class UpstreamRequest(namedtuple("UpstreamRequest",
                                 "server method uri headers body client")):
    """
    One request a stub server received.

    :ivar server: the stub's address, ``"host:port"`` (the peer tproxy chose).
    :ivar method: ``"GET"``, ...
    :ivar uri: the request target as received (path and query).
    :ivar headers: a :class:`tproxy.http.headers.Headers` (names as the stub's
        HTTP server spells them; look them up case-insensitively).
    :ivar body: the whole request body (``bytes``).
    :ivar client: ``"host:port"`` of tproxy's side of the connection (the
        same for requests that reused a kept-alive connection).
    """

    __slots__ = ()

    @property
    def path(self):
        """The target without its query."""
        return self.uri.partition("?")[0]

    @property
    def query(self):
        """The query string without ``?`` (``""`` when absent)."""
        return self.uri.partition("?")[2]


def echo(request):
    """
    A stub handler answering ``200`` with a JSON description of the request
    it received: ``{"server", "method", "uri", "headers": {lower-case name:
    value}, "body"}`` (the body decoded as latin-1).

    :param request: an :class:`UpstreamRequest`.
    """
    body = json.dumps({
        "server": request.server, "method": request.method, "uri": request.uri,
        "headers": dict((n.lower(), v) for n, v in request.headers.items()),
        "body": request.body.decode("latin-1"),
    }, sort_keys=True).encode("utf-8")
    return 200, {"Content-Type": "application/json"}, body


# ---------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------


class _Transport(iosim.FakeTransport):
    """
    An iosim transport with what tproxy's protocols use of a TCP transport:
    ``connected``, and an ``abortConnection`` that drops unsent bytes.
    """

    @property
    def connected(self):
        return not self.disconnected

    def abortConnection(self):
        self.stream = []
        self.disconnecting = True


def _address(host, port):
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def _text(address):
    host = address.host
    return "{}:{}".format("[%s]" % host if ":" in host else host, address.port)


class _Recorder(object):
    """
    The harness's plugin: keeps every context the ``log`` phase saw (and,
    for a :class:`StreamHarness`, every one ``stream_log`` saw).
    """

    def __init__(self):
        self.contexts = []
        self.logged = []

    @hookimpl(trylast=True)
    def log(self, ctx):
        """Keep ``ctx``."""
        self.contexts.append(ctx)

    @hookimpl(trylast=True)
    def stream_log(self, ctx):
        """Keep ``ctx``."""
        self.logged.append(ctx)


class _Given(object):
    """An entry point (for the loader) whose object is already at hand."""

    group = "tproxy"

    def __init__(self, name, obj):
        self.name = name
        self.obj = obj
        self.value = "<{} given to tproxy.testing.Harness>".format(name)

    def load(self):
        return self.obj


class _StubRequest(_WebRequest):
    """A twisted.web request that records itself before it is rendered."""

    def process(self):
        self.content.seek(0)
        body = self.content.read()
        self.content.seek(0)
        fields = [(name, value) for name, values in self.requestHeaders.getAllRawHeaders()
                  for value in values]
        self.upstream_request = UpstreamRequest(
            _text(self.channel.transport.getHost()), self.method.decode("ascii"),
            self.uri.decode("latin-1"), Headers(fields), body,
            _text(self.channel.transport.getPeer()))
        self.channel.site.received(self.upstream_request)
        _WebRequest.process(self)


class _StubSite(Site):
    """A ``Site`` that reports each request to the harness; no access log."""

    requestFactory = _StubRequest
    noisy = False

    def __init__(self, resource, clock, received):
        Site.__init__(self, resource, logPath=None, reactor=clock)
        self.received = received

    def log(self, request):
        pass


class _HandlerResource(Resource):
    """Serves every request with a ``handler(UpstreamRequest)`` function."""

    isLeaf = True

    def __init__(self, handler):
        Resource.__init__(self)
        self.handler = handler

    def render(self, request):
        gone = []
        request.notifyFinish().addErrback(gone.append)
        d = maybeDeferred(self.handler, request.upstream_request)
        d.addCallback(lambda r: ensureDeferred(r) if isinstance(r, types.CoroutineType) else r)
        d.addCallback(self._answer, request, gone)
        d.addErrback(self._failed, request, gone)
        return NOT_DONE_YET

    def _answer(self, result, request, gone):
        if gone:
            return
        status, headers, body = result
        if isinstance(body, str):
            body = body.encode("utf-8")
        if hasattr(headers, "items"):
            headers = list(headers.items())
        request.setResponseCode(int(status))
        # the handler decides every field: drop twisted.web's Server and Date
        request.responseHeaders.removeHeader(b"server")
        request.responseHeaders.removeHeader(b"date")
        request.defaultContentType = None
        framed = False
        for name, value in headers or ():
            if name.lower() in ("content-length", "transfer-encoding"):
                framed = True
            request.responseHeaders.addRawHeader(name, value)
        if not framed:
            request.setHeader(b"Content-Length", b"%d" % len(body))
        if body:
            request.write(body)
        request.finish()

    def _failed(self, failure, request, gone):
        # a logged failure: trial fails the test unless it flushes the error
        _log.failure("stub server handler failed for {uri}", failure,
                     uri=request.upstream_request.uri)
        if gone:
            return
        request.setResponseCode(500)
        request.responseHeaders.removeHeader(b"server")
        request.responseHeaders.removeHeader(b"date")
        body = b"stub handler failed: " + failure.getErrorMessage().encode("utf-8")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()


class _Client(Protocol):
    """
    The harness's HTTP client: writes one request, reads one response (with
    a parser of its own, independent of tproxy's), then closes.
    """

    def __init__(self, data, method):
        self.data = data
        self.head_only = method == "HEAD"
        self.buffer = b""
        self.status = None
        self.reason = ""
        self.headers = None
        self.body = []
        self.remaining = None    # body bytes still expected (Content-Length)
        self.chunked = False
        self.until_close = False
        self.response = None     # a StubResponse once complete
        self.failure = None      # a ResponseIncomplete if the connection died first

    def connectionMade(self):
        self.transport.write(self.data)

    @property
    def done(self):
        return self.response is not None or self.failure is not None

    def dataReceived(self, data):
        if self.done:
            return
        self.buffer += data
        while not self.done and self._step():
            pass

    def _step(self):
        """Parse what the buffer allows; whether to go on."""
        if self.headers is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            status = int(parts[1])
            if 100 <= status < 200:
                return True     # interim (100 Continue): the real head follows
            self.status = status
            self.reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
            fields = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields.append((name, value.strip()))
            self.headers = Headers(fields)
            length = self.headers.get("content-length")
            if self.head_only or status in (204, 304):
                self.remaining = 0
            elif "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                self.chunked = True
            elif length is not None:
                self.remaining = int(length)
            else:
                self.until_close = True
            return True
        if self.until_close:
            self.body.append(self.buffer)
            self.buffer = b""
            return False
        if not self.chunked:
            take = self.buffer[:self.remaining]
            self.body.append(take)
            self.buffer = self.buffer[len(take):]
            self.remaining -= len(take)
            if self.remaining == 0:
                self._complete()
            return False
        line_end = self.buffer.find(b"\r\n")
        if line_end < 0:
            return False
        size = int(self.buffer[:line_end].split(b";")[0], 16)
        if size == 0:
            # last chunk, then trailer fields, then an empty line
            end = self.buffer.find(b"\r\n\r\n", line_end)
            if end < 0:
                return False
            self.buffer = self.buffer[end + 4:]
            self._complete()
            return False
        if len(self.buffer) < line_end + 2 + size + 2:
            return False
        start = line_end + 2
        self.body.append(self.buffer[start:start + size])
        self.buffer = self.buffer[start + size + 2:]
        return True

    def _response(self):
        return StubResponse(self.status, self.reason,
                            self.headers if self.headers is not None else Headers(),
                            b"".join(self.body))

    def _complete(self):
        self.response = self._response()
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self.done:
            return
        if self.until_close:
            self.response = self._response()
        else:
            self.failure = ResponseIncomplete(
                "the proxy closed the connection before the response was "
                "complete", self._response())


class PendingRequest(object):
    """
    A request sent with ``wait=False``: its response arrives when the
    harness has pumped enough (after :meth:`Harness.advance`, say).
    """

    def __init__(self, harness, client, method, uri):
        self._harness = harness
        self._client = client
        self.method = method
        self.uri = uri

    @property
    def done(self):
        """Whether the response is complete (or the connection died)."""
        self._harness.flush()
        return self._client.done

    def result(self):
        """
        The response, after moving whatever bytes are waiting.

        :rtype: :class:`StubResponse`
        :raises RequestPending: if it is not complete yet.
        :raises ResponseIncomplete: if the proxy closed the connection first.
        """
        self._harness.flush()
        client = self._client
        if client.response is not None:
            return client.response
        if client.failure is not None:
            raise client.failure
        raise RequestPending(
            "{} {}: no complete response yet (clock at {}s; the upstream has "
            "not answered, or the proxy is waiting for a timer): advance the "
            "harness's clock".format(self.method, self.uri,
                                     self._harness.clock.seconds()))

    def abort(self):
        """The client goes away (tproxy sees a client abort)."""
        with self._harness._observing():
            self._client.transport.abortConnection()
            self._harness.flush()

    def __repr__(self):
        return "<PendingRequest {} {} done={}>".format(
            self.method, self.uri, self._client.done)


# ---------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------


class _Network(object):
    """
    What :class:`Harness` and :class:`StreamHarness` share: the clock, the
    in-memory connections and their pumps, the stub servers' addresses, the
    log events, and the gateway built from a configuration and plugin objects.
    """

    def __init__(self, servers):
        self.clock = self.reactor = MemoryReactorClock()
        self.events = []
        self._observer = self.events.append
        self._depth = 0
        self._pumps = []
        self._ports = itertools.count(40000)
        self._servers = {}
        for address, stub in (servers or {}).items():
            self._servers[parse_host_port(address)] = self._server_factory(stub)

    def _start(self, config, plugins, entry_points):
        """
        Validate ``config`` (its ``plugins`` replaced by ``plugins``), load
        the plugins, register the recorder and start the gateway.
        """
        installed = tproxy_entry_points() if entry_points is None else list(entry_points)
        config = dict(config or {})
        given = {}
        if plugins is not None:
            taken = set(BUILTINS) | {ep.name for ep in installed}
            config["plugins"] = [_plugin_entry(p, given, taken) for p in plugins]
        self.config = validate_config(config, source="<harness config>")

        plugin_manager = build_plugin_manager(
            self.config, source="<harness config>",
            entry_points=installed + list(given.values()))
        # Registered last and trylast: pluggy puts it at the very end of the
        # ``log`` (and ``stream_log``) implementations, after trylast ones.
        self._recorder = _Recorder()
        plugin_manager.register(self._recorder, name=_RECORDER)
        self.gateway = Gateway(self.config, self.clock, plugin_manager)
        self.registry = self.gateway.registry
        self._wait(self.gateway.start, "init_worker")

    def _server_factory(self, stub):
        raise NotImplementedError()

    def _connect(self, client, client_address, server, server_address):
        raise NotImplementedError()

    # -- moving bytes -----------------------------------------------------------

    def flush(self):
        """
        Move bytes between every connection, make the connections tproxy
        asked for and run the calls due now, until nothing more happens.
        (Every other method does this; call it after firing a Deferred a stub
        handler returned.)
        """
        with self._observing():
            for _ in range(_MAX_ROUNDS):
                self.clock.advance(0)
                moved = self._connect_pending()
                for pump in list(self._pumps):
                    if pump.pump(advanceClock=False):
                        moved = True
                    elif pump.clientIO.disconnected and pump.serverIO.disconnected:
                        self._pumps.remove(pump)
                if not moved:
                    return
        raise RuntimeError("tproxy.testing: still moving bytes after {} rounds"
                           .format(_MAX_ROUNDS))

    @contextmanager
    def _observing(self):
        """Collect log events into :attr:`events` while the block runs."""
        self._depth += 1
        if self._depth == 1:
            globalLogPublisher.addObserver(self._observer)
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                globalLogPublisher.removeObserver(self._observer)

    def _connect_pending(self):
        """Answer the ``connectTCP`` calls made since the last round."""
        made = False
        clients, connectors = self.clock.tcpClients, self.clock.connectors
        while clients:
            host, port, factory, timeout, _ = clients.pop(0)
            connector = connectors.pop(0)
            made = True
            server = self._servers.get((host, port))
            if server is None:
                factory.clientConnectionFailed(connector, Failure(
                    ConnectionRefusedError("no stub server at {}:{}".format(host, port))))
            elif server is UNREACHABLE:
                self.clock.callLater(timeout, factory.clientConnectionFailed, connector,
                                     Failure(TimeoutError("connect to {}:{}".format(host, port))))
            else:
                local = _address("127.0.0.1" if ":" not in host else "::1", next(self._ports))
                remote = _address(host, port)
                self._connect(factory.buildProtocol(remote), local,
                              server.buildProtocol(local), remote)
        return made

    def _wait(self, fn, what):
        """
        Call ``fn`` and return its result once the harness is quiet (raise
        its failure), logging what happens meanwhile.
        """
        box = []
        with self._observing():
            maybeDeferred(fn).addBoth(box.append)
            self.flush()
        if not box:
            raise RequestPending("{} has not finished (clock at {}s)".format(
                what, self.clock.seconds()))
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]


    # -- time and logs ------------------------------------------------------------

    def advance(self, seconds):
        """
        Move the clock ``seconds`` forward, running each timer that falls due
        on the way at its own time and moving bytes after each.
        """
        with self._observing():
            self.flush()
            end = self.clock.seconds() + seconds
            while True:
                due = [c.getTime() for c in self.clock.getDelayedCalls()
                       if c.getTime() <= end]
                if not due:
                    break
                self._advance_to(min(due))
                self.flush()
            self._advance_to(end)
            self.flush()

    def _advance_to(self, when):
        now = self.clock.seconds()
        if when > now:
            self.clock.advance(when - now)
        if self.clock.seconds() < when:   # float rounding: land exactly
            self.clock.rightNow = when
        self.clock.advance(0)

    def messages(self):
        """:attr:`events` formatted as text, one string each."""
        return [formatEvent(e) for e in self.events]


class Harness(_Network):
    """
    A gateway with its plugins, its HTTP server and its upstream pool, whose
    network and clock are in memory.

    :param config: a configuration ``dict`` as in ``conf.json`` (validated
        and completed by :func:`tproxy.config.validate_config`; ``None`` for
        the defaults).
    :param plugins: the ``plugins`` list to use instead of the
        configuration's: names (built-ins, entry points, dotted paths) and
        ``{"name", "settings", "routes"}`` dicts as in ``conf.json``, and also
        plugin objects -- a module, a class (made with its validated
        ``settings``: ``{"name": MyPlugin, "settings": {...}}``) or an
        instance --, all run in the order given.
    :param servers: the stub upstream servers: ``{"host:port": stub}`` (see
        the module docstring).  The configuration's ``upstreams`` and the
        registry decide which addresses tproxy connects to; ``servers``
        decides what answers there.
    :param entry_points: the entry points of the group ``tproxy`` that names
        resolve against (default: the installed ones).

    :raises tproxy.config.ConfigError: for an invalid configuration or plugin.
    :raises Exception: what an ``init_worker`` failed with.

    :ivar clock: the :class:`~twisted.internet.testing.MemoryReactorClock`
        that is the gateway's reactor (also ``reactor``).
    :ivar gateway: the :class:`tproxy.gateway.Gateway`.
    :ivar registry: the gateway's registry.
    :ivar config: the validated configuration.
    :ivar factory: the :class:`tproxy.http.server.ProxyFactory` the harness's
        clients connect to.
    :ivar upstream_requests: every :class:`UpstreamRequest` the stub servers
        received, in order.
    :ivar contexts: the :class:`~tproxy.context.RequestContext` of every
        finished request, in the order their ``log`` phase ran (the harness's
        ``log`` implementation runs after every other one).
    :ivar events: the :mod:`twisted.logger` events emitted while the harness
        was working (see :meth:`messages`).
    """

    def __init__(self, config=None, plugins=None, servers=None, entry_points=None):
        self.upstream_requests = []
        _Network.__init__(self, servers)
        self._start(config, plugins, entry_points)
        self.contexts = self._recorder.contexts
        self.factory = ProxyFactory(self.gateway)

    def _server_factory(self, stub):
        if stub is UNREACHABLE:
            return stub
        if IResource.providedBy(stub):
            return _StubSite(stub, self.clock, self.upstream_requests.append)
        if IProtocolFactory.providedBy(stub):
            return stub
        if callable(stub):
            return _StubSite(_HandlerResource(stub), self.clock,
                             self.upstream_requests.append)
        raise TypeError("a stub server is a handler function, an IResource, an "
                        "IProtocolFactory or UNREACHABLE, not {!r}".format(stub))

    def _connect(self, client, client_address, server, server_address):
        """Connect two protocols with in-memory transports."""
        client_io = _Transport(client, isServer=False, hostAddress=client_address,
                               peerAddress=server_address)
        server_io = _Transport(server, isServer=True, hostAddress=server_address,
                               peerAddress=client_address)
        self._pumps.append(iosim.connect(server, server_io, client, client_io,
                                         greet=False, clock=self.clock))

    # -- what a test calls --------------------------------------------------------

    def request(self, method, uri, headers=None, body=b"", client="127.0.0.1",
                wait=True):
        """
        Send one request through the proxy, on a new client connection.

        A ``Host`` field is added when ``headers`` has none, and a
        ``Content-Length`` when there is a body.

        :param method: ``"GET"``, ...
        :param uri: the request target (``"/api/users?id=1"``).
        :param headers: a ``dict`` or a list of ``(name, value)`` pairs.
        :param body: ``bytes`` (or ``str``, sent as UTF-8).
        :param client: the client's address, as the proxy sees it (for
            ``trusted_proxies``).
        :param wait: with ``False``, return a :class:`PendingRequest` at once.
        :return: a :class:`StubResponse`.
        :raises RequestPending: if the response is not complete once nothing
            more happens without the clock moving (an upstream that does not
            answer, a plugin waiting for a timer).
        :raises ResponseIncomplete: if the proxy closed the connection first.
        """
        data = _request_bytes(method, uri, headers, body)
        protocol = _Client(data, method.upper())
        client_address = _address(client, next(self._ports))
        with self._observing():
            proxy = self.factory.buildProtocol(client_address)
            self._connect(protocol, client_address, proxy, _address(*_PROXY_ADDRESS))
            pending = PendingRequest(self, protocol, method, uri)
            self.flush()
        return pending.result() if wait else pending

    def admin(self, method, uri, headers=None, body=b"", client="127.0.0.1"):
        """
        Send a request to the admin API (no HTTP: straight to
        :meth:`tproxy.admin.AdminRoutes.dispatch`), the token check included.

        :param uri: path and query (``"/upstream/add?port=9001&prefix=api"``).
        :param headers: a ``dict``.
        :param client: the caller's address.
        :return: a :class:`tproxy.admin.AdminResponse` (``status``, ``obj``).
        """
        request = AdminRequest.from_uri(method, uri, headers, body, client)
        return self._wait(lambda: self.gateway.admin.dispatch(request),
                          "admin {} {}".format(method, uri))

    def stop(self):
        """Stop the gateway: its ``on_stop`` callbacks run."""
        with self._observing():
            self._wait(self.gateway.stop, "stopping the gateway")
            self.factory.pool.close()
            self.flush()




# ---------------------------------------------------------------------------
# streams: TCP connections with half-close and resets
# ---------------------------------------------------------------------------


class _NoSocket(object):
    """
    The ``socket`` of a :class:`_TCPTransport`: it never takes a byte, so
    :func:`tproxy.fastio.install_fast_write` always falls back to the
    transport's own ``write`` (the in-memory buffer).
    """

    def send(self, data):
        raise BlockingIOError()

    def sendmsg(self, buffers):
        raise BlockingIOError()


class _TCPTransport(_Transport, tcp.Connection):
    """
    An iosim transport that behaves as a plain TCP connection towards the
    stream proxy: ``loseWriteConnection`` sends a FIN (a half-close),
    ``loseConnection`` sends the buffered bytes and a FIN then is gone,
    ``abortConnection`` is a reset (the peer sees ``ConnectionLost``).  It
    is a :class:`twisted.internet.tcp.Connection` by type only (never
    initialised as one) because :mod:`tproxy.stream` tells plain TCP, which
    can be half-closed, from TLS, which cannot, by type.  :class:`_TCPPump`
    moves its bytes and FINs.
    """

    socket = _NoSocket()
    dataBuffer = b""
    _tempDataBuffer = ()
    write_closing = False   # no byte may be written any more: a FIN follows them
    fin_sent = False        # the FIN reached the other side
    closing = False         # once the FIN is sent, the connection is gone
    aborting = False        # reset: drop what is buffered, both sides lost

    def write(self, data):
        if not (self.write_closing or self.disconnecting or self.disconnected):
            self.stream.append(data)

    def loseWriteConnection(self):
        self.write_closing = True

    def loseConnection(self):
        self.write_closing = self.closing = True
        self.disconnecting = True

    def abortConnection(self):
        self.stream = []
        self.aborting = self.disconnecting = True

    def _lost(self, reason):
        """Tell the protocol the connection is gone (once)."""
        if not self.disconnected:
            self.disconnected = self.disconnecting = True
            self.stream = []
            self.protocol.connectionLost(Failure(reason))

    def _eof(self):
        """The other side's FIN arrived."""
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            half.readConnectionLost()
        else:
            # as Twisted does: a protocol that cannot be half-closed is closed
            self.write_closing = self.closing = True
            self._lost(ConnectionDone("connection closed by the other side"))


class _TCPPump(iosim.IOPump):
    """
    Moves bytes, then FINs, then closes and resets between two
    :class:`_TCPTransport` s.  Bytes sent to a side that is gone reset the
    sender, as TCP does.
    """

    def pump(self, debug=False, advanceClock=True):
        if advanceClock:
            self.clock.advance(0)
        a, b = self.clientIO, self.serverIO
        a._checkProducer()
        b._checkProducer()
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.getOutBuffer()
            if data:
                moved = True
                if dst.disconnected:
                    src._lost(ConnectionLost("connection reset by peer"))
                else:
                    dst.bufferReceived(data)
        if moved:
            return True
        for src, dst in ((a, b), (b, a)):
            if src.aborting and not src.disconnected:
                src._lost(ConnectionAborted())
                dst._lost(ConnectionLost("connection reset by peer"))
                return True
            if src.write_closing and not src.fin_sent:
                src.fin_sent = True
                if not dst.disconnected:
                    dst._eof()
                half = IHalfCloseableProtocol(src.protocol, None)
                if half is not None and not src.closing:
                    half.writeConnectionLost()
                return True
            if src.closing and src.fin_sent and not src.disconnected:
                src._lost(ConnectionDone())
                return True
        return False


@implementer(IHalfCloseableProtocol)
class StreamConnection(Protocol):
    """
    One end of a TCP connection of a :class:`StreamHarness`: a client of the
    listener (:meth:`StreamHarness.connect`) or a stub server's end of an
    upstream connection (:attr:`StreamHarness.upstream_connections`).

    Every method moves bytes until nothing more happens, like the harness's.

    :ivar received: the bytes received so far (``bytes``).
    :ivar eof: the other end sent its FIN (it half-closed or closed).
    :ivar closed: this end is gone: closed by either side or reset.
    :ivar reset: it ended with a reset (an abort on either side, an idle
        timeout...) rather than a clean close.
    :ivar echo: whether it sends back every byte it receives.
    :ivar close_on_eof: whether it closes as soon as the other end's FIN
        arrives (as most clients and servers do); with ``False`` it stays
        half-open until :meth:`close`, :meth:`half_close` or :meth:`abort`.
    """

    _harness = None
    _session = None

    def __init__(self, echo=False, greeting=b"", close_on_eof=True):
        self.echo = echo
        self.greeting = greeting
        self.close_on_eof = close_on_eof
        self._received = bytearray()
        self.eof = False
        self.closed = False
        self.reset = False

    @property
    def received(self):
        """The bytes received so far."""
        return bytes(self._received)

    @property
    def context(self):
        """
        The :class:`~tproxy.stream.StreamContext` of the proxy's session this
        connection belongs to (``None`` for a connection tproxy did not make).
        """
        return self._session.ctx if self._session is not None else None

    @property
    def local(self):
        """``"host:port"`` of this end."""
        return _text(self.transport.getHost())

    @property
    def remote(self):
        """``"host:port"`` of the other end (tproxy's)."""
        return _text(self.transport.getPeer())

    # -- the protocol ----------------------------------------------------------

    def connectionMade(self):
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data):
        self._received += data
        if self.echo:
            self.transport.write(data)

    def readConnectionLost(self):
        self.eof = True
        if self.close_on_eof:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.closed = True
        self.reset = reason.check(ConnectionDone) is None

    # -- what a test calls -----------------------------------------------------

    def _act(self, what):
        harness = self._harness
        if harness is None:
            what()
            return
        with harness._observing():
            what()
            harness.flush()

    def send(self, data):
        """Send ``data`` (``bytes``) to the other end."""
        self._act(lambda: self.transport.write(data))

    def half_close(self):
        """Send a FIN (``shutdown(SHUT_WR)``): no more bytes from this end."""
        self._act(self.transport.loseWriteConnection)

    def close(self):
        """Close: what was sent is delivered, then a FIN; this end is gone."""
        self._act(self.transport.loseConnection)

    def abort(self):
        """Reset the connection: unsent bytes are dropped."""
        self._act(self.transport.abortConnection)

    def __repr__(self):
        return "<StreamConnection received={} eof={} closed={} reset={}>".format(
            len(self._received), self.eof, self.closed, self.reset)


class StreamServer(Factory):
    """
    A stub TCP server for a :class:`StreamHarness` (a value of its
    ``servers``): each connection is a :class:`StreamConnection` that records
    what it receives.

    :param echo: send every byte received back.
    :param greeting: ``bytes`` to send as soon as a connection is made.
    :param close_on_eof: close a connection when the proxy's FIN arrives
        (with ``False``, the test closes it).

    :ivar connections: its :class:`StreamConnection` s, in order.
    """

    noisy = False

    def __init__(self, echo=False, greeting=b"", close_on_eof=True):
        self.echo = echo
        self.greeting = greeting
        self.close_on_eof = close_on_eof
        self.connections = []

    def buildProtocol(self, addr):
        """A new :class:`StreamConnection`, recorded in :attr:`connections`."""
        p = StreamConnection(self.echo, self.greeting, self.close_on_eof)
        p.factory = self
        self.connections.append(p)
        return p


class StreamHarness(_Network):
    """
    A gateway with its plugins and one stream listener
    (:class:`tproxy.stream.StreamFactory`), whose network and clock are in
    memory: clients connect with :meth:`connect`, the upstream group's
    addresses are answered by stub servers (:class:`StreamServer`).

    A FIN is a FIN and a reset a reset: a half-close (:meth:`StreamConnection.
    half_close`) reaches the other side as ``readConnectionLost``, so the
    listener behaves as on a plain TCP socket::

        h = StreamHarness(
            config={"upstreams": {"redis": {"peers": ["127.0.0.1:6379"]}}},
            stream={"group": "redis", "timeouts": {"idle": 30}},
            plugins=["least_conn", MyStreamPlugin()],
            servers={"127.0.0.1:6379": StreamServer(echo=True)},
        )
        client = h.connect(client="192.0.2.7")
        client.send(b"PING\\r\\n")
        assert client.received == b"PING\\r\\n"
        client.close()
        [ctx] = h.logged
        assert ctx.reason == "client_closed"

    :param config: a configuration ``dict`` as for :class:`Harness`.
    :param stream: the listener's entry of ``streams`` (``group`` required,
        ``listen`` may be left out; ``proxy_protocol``, ``tries``,
        ``timeouts``); it replaces the configuration's ``streams``.  Without
        it, the configuration's first ``streams`` entry is the listener.
    :param plugins: as for :class:`Harness` (names, entries and plugin
        objects); the listener needs a ``balancer`` (``"least_conn"``).
    :param servers: the stub upstream servers: ``{"host:port": stub}``, a
        stub being a :class:`StreamServer`, any other
        :class:`~twisted.internet.interfaces.IProtocolFactory` or
        :data:`UNREACHABLE` (its connect attempts time out after the
        stream's ``timeouts.connect``).  An address with no stub refuses
        connections.
    :param entry_points: as for :class:`Harness`.

    :raises tproxy.config.ConfigError: for an invalid configuration or plugin.
    :raises ValueError: when there is no stream entry at all.

    :ivar clock: the :class:`~twisted.internet.testing.MemoryReactorClock`
        (also ``reactor``).
    :ivar gateway: the :class:`tproxy.gateway.Gateway`.
    :ivar registry: the gateway's registry.
    :ivar config: the validated configuration.
    :ivar stream: the listener's validated entry.
    :ivar factory: the :class:`tproxy.stream.StreamFactory` (``sessions``:
        the open ones).
    :ivar clients: the :class:`StreamConnection` s :meth:`connect` made.
    :ivar upstream_connections: the stub servers' ends (:class:`StreamConnection`)
        of every upstream connection tproxy made, in order.
    :ivar logged: the :class:`~tproxy.stream.StreamContext` of every ended
        connection, in the order ``stream_log`` ran (the harness's
        implementation runs after every other one).
    :ivar events: the :mod:`twisted.logger` events emitted while the harness
        was working (see :meth:`messages`).
    """

    def __init__(self, config=None, stream=None, plugins=None, servers=None,
                 entry_points=None):
        _Network.__init__(self, servers)
        self.clients = []
        self.upstream_connections = []
        config = dict(config or {})
        if stream is not None:
            entry = dict(stream)
            entry.setdefault("listen", "tcp:{}".format(_STREAM_ADDRESS[1]))
            config["streams"] = [entry]
        elif not config.get("streams"):
            raise ValueError("StreamHarness: no stream (give stream={'group': ...} "
                             "or a configuration with a 'streams' entry)")
        self._start(config, plugins, entry_points)
        self.stream = self.config["streams"][0]
        self.logged = self._recorder.logged
        self.factory = StreamFactory(self.gateway, self.stream)

    def _server_factory(self, stub):
        if stub is UNREACHABLE or IProtocolFactory.providedBy(stub):
            return stub
        raise TypeError("a stub stream server is a StreamServer, an IProtocolFactory "
                        "or UNREACHABLE, not {!r}".format(stub))

    def _connect(self, client, client_address, server, server_address):
        """Connect two protocols with in-memory TCP transports."""
        client_io = _TCPTransport(client, isServer=False, hostAddress=client_address,
                                  peerAddress=server_address)
        server_io = _TCPTransport(server, isServer=True, hostAddress=server_address,
                                  peerAddress=client_address)
        if isinstance(server, StreamConnection):
            # a stub's end of an upstream connection of a session
            server._harness = self
            server._session = getattr(client, "session", None)
            self.upstream_connections.append(server)
        server.makeConnection(server_io)
        client.makeConnection(client_io)
        self._pumps.append(_TCPPump(client, server, client_io, server_io, False,
                                    clock=self.clock))

    # -- what a test calls --------------------------------------------------------

    def connect(self, client="127.0.0.1", port=None, server=None, close_on_eof=True):
        """
        Open a client connection to the listener.  ``stream_access`` runs
        and the upstream connection is made (or not) before this returns.

        :param client: the client's IP address (``ctx.client_addr``).
        :param port: the client's port (default: a new one each time).
        :param server: ``"host:port"`` the client connects to
            (``ctx.server_addr``, ``ctx.server_port``; default
            ``"127.0.0.1:6380"``).
        :param close_on_eof: as for :class:`StreamConnection`: the client
            closes when the proxy's FIN arrives.
        :return: a :class:`StreamConnection` (``context`` is the session's
            :class:`~tproxy.stream.StreamContext`).
        """
        protocol = StreamConnection(close_on_eof=close_on_eof)
        protocol._harness = self
        client_address = _address(client, next(self._ports) if port is None else port)
        host, server_port = parse_host_port(server) if server else _STREAM_ADDRESS
        with self._observing():
            session = self.factory.buildProtocol(client_address)
            protocol._session = session
            self.clients.append(protocol)
            self._connect(protocol, client_address, session, _address(host, server_port))
            self.flush()
        return protocol

    def stop(self):
        """
        Stop as tproxy does once ``shutdown_timeout`` is over: the open
        sessions are aborted (``ctx.reason`` ``"shutdown"``), then the
        gateway's ``on_stop`` callbacks run.
        """
        with self._observing():
            self.factory.abort()
            self.flush()
            self._wait(self.gateway.stop, "stopping the gateway")


def _plugin_entry(entry, given, taken):
    """
    A ``plugins`` entry with a plugin object replaced by a name, which
    ``given`` (``{name: _Given}``) maps to the object; ``taken``: the names
    that resolve to something else.
    """
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        if isinstance(entry.get("name"), str):
            return entry
        return dict(entry, name=_name_for(entry.get("name"), given, taken))
    return _name_for(entry, given, taken)


def _name_for(obj, given, taken):
    for name, point in given.items():
        if point.obj is obj:
            return name
    if isinstance(obj, (types.ModuleType, type)):
        base = obj.__name__
    else:
        base = type(obj).__name__
    name, n = base, 1
    while name in taken or name in given:
        n += 1
        name = "{}-{}".format(base, n)
    given[name] = _Given(name, obj)
    return name


def _request_bytes(method, uri, headers, body):
    if isinstance(body, str):
        body = body.encode("utf-8")
    if headers is None:
        headers = []
    elif hasattr(headers, "items"):
        headers = list(headers.items())
    fields = [(_latin1(n), _latin1(v)) for n, v in headers]
    names = {n.lower() for n, _ in fields}
    if b"host" not in names:
        fields.insert(0, (b"Host", b"localhost"))
    if body and b"content-length" not in names and b"transfer-encoding" not in names:
        fields.append((b"Content-Length", b"%d" % len(body)))
    lines = [b"%s %s HTTP/1.1\r\n" % (method.upper().encode("ascii"), _latin1(uri))]
    lines.extend(b"%s: %s\r\n" % pair for pair in fields)
    lines.append(b"\r\n")
    return b"".join(lines) + body


def _latin1(value):
    return value if isinstance(value, bytes) else str(value).encode("latin-1")

