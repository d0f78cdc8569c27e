# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
The HTTP harness (:class:`Harness`) and its stub upstream servers (see
:mod:`tproxy.testing`).
"""

import json
import types
from collections import namedtuple

from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.test import iosim
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request as _WebRequest, Site

from tproxy.admin import AdminRequest
from tproxy.admin_page import install as install_status_page
from tproxy.http.headers import Headers
from tproxy.http.server import ProxyFactory
from tproxy.testing._network import (UNREACHABLE, RequestPending, _Network, _Transport,
                                      _address, _log, _text)


#: The address the harness's clients connect to (what the proxy's
#: ``getHost()`` says).
_PROXY_ADDRESS = ("127.0.0.1", 8080)



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


class RawConnection(Protocol):
    """
    A client connection to the proxy whose bytes the test writes itself
    (:meth:`Harness.connect`): for malformed requests, requests split at
    chosen places, pipelining, or a client that stops half-way.

    :ivar received: every byte the proxy sent on it so far (``bytes``).
    :ivar closed: whether the connection is closed.
    """

    def __init__(self, harness):
        self._harness = harness
        self._received = []
        self.closed = False

    @property
    def received(self):
        return b"".join(self._received)

    def dataReceived(self, data):
        self._received.append(data)

    def connectionLost(self, reason):
        self.closed = True

    def send(self, data):
        """Write ``data`` (``bytes``) to the proxy, and move bytes until
        nothing more happens."""
        with self._harness._observing():
            self.transport.write(data)
            self._harness.flush()

    def close(self):
        """Close the client's side (the proxy sees the end of the stream, or
        the client's abort if it was still sending)."""
        with self._harness._observing():
            self.transport.loseConnection()
            self._harness.flush()


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
        # the admin listener's status page and its JSON endpoints, as twistd has them
        install_status_page(self.gateway, [("proxy", "memory", self.factory)])

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

    def connect(self, client="127.0.0.1"):
        """
        Open a client connection whose bytes the test writes itself.

        :param client: the client's address, as the proxy sees it.
        :return: a :class:`RawConnection` (``send``, ``received``,
            ``closed``, ``close``).
        """
        protocol = RawConnection(self)
        client_address = _address(client, next(self._ports))
        with self._observing():
            proxy = self.factory.buildProtocol(client_address)
            self._connect(protocol, client_address, proxy, _address(*_PROXY_ADDRESS))
            self.flush()
        return protocol

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

    def reload(self, config=None, plugins=None, entry_points=None):
        """
        Reload as ``SIGHUP`` does (:mod:`tproxy.reload`): a new gateway with
        ``config`` and ``plugins`` (as for the constructor) serves the
        requests read from now on, the registry goes on; the old gateway's
        requests in flight finish on it, and its ``on_stop`` callbacks run
        once they have (looked at after ``tproxy.reload.RETIRE_POLL``
        seconds of the clock, then at doubling intervals up to
        ``RETIRE_POLL_MAX``: ``advance`` it).

        :raises tproxy.config.ConfigError: for an invalid configuration or
            plugin (the old gateway goes on, untouched).
        :raises Exception: what an ``init_worker`` failed with (the new
            gateway is stopped, the old one goes on).
        :return: the requests in flight on the old gateway (how many).
        """
        from tproxy.gateway import _update_static
        from tproxy.reload import in_flight, retire
        old, old_config, old_ttl = self.gateway, self.config, self.registry.ttl
        try:
            self._start(config, plugins, entry_points, previous=old)
        except BaseException:
            new = self.gateway
            if new is not old:
                _update_static(old.registry, new.config, old.config)
                old.registry.ttl = old_ttl
                self._wait(new.stop, "stopping the new gateway")
            self.gateway, self.config, self.registry = old, old_config, old.registry
            raise
        self.factory.use(self.gateway)
        install_status_page(self.gateway, [("proxy", "memory", self.factory)])
        pending = in_flight(old, [self.factory], [])
        with self._observing():
            retire(old, pending)
            self.flush()
        return len(pending)

    def stop(self):
        """Stop the gateway: its ``on_stop`` callbacks run."""
        with self._observing():
            self._wait(self.gateway.stop, "stopping the gateway")
            self.factory.pool.close()
            self.flush()


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
