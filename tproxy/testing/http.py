# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
The HTTP harness (:class:`Harness`) and its stub upstream servers (see
:mod:`tproxy.testing`).
"""

import json
import types
from collections import namedtuple

from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request as _WebRequest, Site
from zope.interface import implementer

from tproxy.admin import AdminResponse
from tproxy.admin_page import install as install_status_page
from tproxy.http.headers import Headers
from tproxy.http.server import ProxyFactory
from tproxy.testing._network import (UNREACHABLE, RequestPending, _Network,
                                      _address, _log, _text)
from tproxy.testing.stream import _ConnectionEnd, _TCPPump, _TCPTransport


#: The address the harness's clients connect to (what the proxy's
#: ``getHost()`` says).
_PROXY_ADDRESS = ("127.0.0.1", 8080)

#: The address of the admin listener the harness's admin clients connect to.
_ADMIN_ADDRESS = ("127.0.0.1", 9180)



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
        self.response = None     # a StubResponse once complete
        self.failure = None      # a ResponseIncomplete if the connection died first
        self._new_response()

    def _new_response(self):
        """Get ready to parse a response head."""
        self.status = None
        self.reason = ""
        self.headers = None
        self.body = []
        self.remaining = None    # body bytes still expected (Content-Length)
        self.chunked = False
        self.until_close = False

    def _head_response(self):
        """Whether the response being parsed answers a HEAD (no body)."""
        return self.head_only

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
            if 100 <= status < 200 and status != 101:
                return True     # interim (100 Continue): the real head follows
            self.status = status
            self.reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
            fields = []
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields.append((name, value.strip()))
            self.headers = Headers(fields)
            length = self.headers.get("content-length")
            if self._head_response() or status in (101, 204, 304):
                self.remaining = 0     # (101: what follows is not HTTP)
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


@implementer(IHalfCloseableProtocol)
class ClientConnection(_ConnectionEnd, _Client):
    """
    A client connection of a :class:`Harness` (:meth:`Harness.connect`) that
    stays open: several requests on it (keep-alive), requests pipelined
    (sent before the previous response arrived), or raw bytes.

    Every method moves bytes until nothing more happens, like the harness's.

    The connection behaves as a TCP socket: the proxy's FIN (a
    ``shutdown(SHUT_WR)``, as in its lingering close) arrives as :attr:`eof`,
    before the connection closes.

    :ivar responses: every complete :class:`StubResponse` received on the
        connection so far, in order.
    :ivar eof: the proxy sent its FIN (it will send nothing more).
    :ivar closed: the connection is closed (by the proxy or by this end).
    :ivar reset: it ended with a reset rather than a clean close.
    :ivar close_on_eof: whether this end closes as soon as the proxy's FIN
        arrives (as most clients do); with ``False`` it stays open, and may
        go on sending, until :meth:`close` or :meth:`abort`.
    """

    def __init__(self, harness, close_on_eof=True):
        _Client.__init__(self, b"", "GET")
        self._harness = harness
        self.close_on_eof = close_on_eof
        self.eof = False
        self.reset = False
        self._received = bytearray()
        self._methods = []       # of the requests whose responses are due
        self._index = -1         # of the last request's response in ``responses``
        self._again = False
        self.responses = []
        self.closed = False
        #: whether a ``101 Switching Protocols`` came: the bytes after it are
        #: only in :attr:`received`, not parsed as responses
        self.switched = False

    @property
    def received(self):
        """Every byte received so far (``bytes``), parsed or not."""
        return bytes(self._received)

    # -- the protocol ------------------------------------------------------------

    def _head_response(self):
        return bool(self._methods) and self._methods[0] == "HEAD"

    def dataReceived(self, data):
        self._received += data
        if self.switched:
            return      # after a 101: bytes of another protocol (``received``)
        self.buffer += data
        while not self.switched:
            self._again = False
            if not (self._step() or self._again):
                return
        self.buffer = b""

    def _complete(self):
        response = self._response()
        self.responses.append(response)
        if self._methods:
            self._methods.pop(0)
        self.switched = response.status == 101
        self._new_response()
        self._again = True

    def readConnectionLost(self):
        self.eof = True
        if self.headers is not None and self.until_close:
            self.body.append(self.buffer)
            self.buffer = b""
            self._complete()
        if self.close_on_eof:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.closed = True
        self.reset = reason.check(ConnectionDone) is None
        if self.headers is not None and self.until_close:
            self.body.append(self.buffer)
            self.buffer = b""
            self._complete()

    # -- what a test calls -------------------------------------------------------

    def _act(self, fn, *args):
        with self._harness._observing():
            fn(*args)
            self._harness.flush()

    def send(self, data):
        """
        Send raw ``bytes`` (a request head in pieces, a malformed request,
        several requests at once...).  Responses to requests sent this way
        are parsed as responses to ``GET`` (a body unless 204 or 304).
        """
        self._act(self.transport.write, data)

    def send_request(self, method, uri, headers=None, body=b"", flush=True):
        """
        Send one request (built as :meth:`Harness.request` builds it) without
        waiting for its response: call it several times to pipeline.

        :param flush: with ``False`` the request is only queued on the
            connection: the next call that moves bytes sends everything
            queued at once, so the proxy reads the pipelined requests in one
            piece.
        """
        self._methods.append(method.upper())
        # this request's response comes after every one received so far
        # (raw requests' included) and after those owed to earlier requests
        self._index = max(self._index + 1, len(self.responses))
        data = _request_bytes(method, uri, headers, body)
        if flush:
            self._act(self.transport.write, data)
        else:
            self.transport.write(data)

    def request(self, method, uri, headers=None, body=b""):
        """
        Send one request and return its response (the connection stays
        open when the proxy keeps it alive).  Arguments as for
        :meth:`Harness.request`.

        :return: a :class:`StubResponse`: the response to this request (the
            one after the responses received so far and those owed to the
            requests sent before with :meth:`request` and
            :meth:`send_request`; a request sent raw with :meth:`send` whose
            response has not arrived yet is not counted).
        :raises RequestPending: if the response is not complete yet.
        :raises ResponseIncomplete: if the proxy closed the connection first.
        """
        self.send_request(method, uri, headers, body)
        index = self._index
        if index < len(self.responses):
            return self.responses[index]
        if self.closed:
            raise ResponseIncomplete(
                "the proxy closed the connection before the response was complete",
                self._response())
        raise RequestPending(
            "{} {}: no complete response yet (clock at {}s): advance the harness's "
            "clock".format(method, uri, self._harness.clock.seconds()))

    def __repr__(self):
        return "<ClientConnection responses={} closed={}>".format(
            len(self.responses), self.closed)


#: Another name of :class:`ClientConnection` (what :meth:`Harness.connect`
#: returns), for the tests that name it so.
RawConnection = ClientConnection


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
    :ivar admin_factory: the admin listener's factory
        (:meth:`tproxy.admin.AdminRoutes.site`) that :meth:`admin` and
        :meth:`admin_raw` connect to.
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
        self.admin_factory = self.gateway.admin.site()

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
        """Connect two protocols with in-memory TCP transports (FINs and
        resets travel as on a socket: an upgraded connection's half-close
        reaches the stub upstream)."""
        client_io = _TCPTransport(client, isServer=False, hostAddress=client_address,
                                  peerAddress=server_address)
        server_io = _TCPTransport(server, isServer=True, hostAddress=server_address,
                                  peerAddress=client_address)
        server.makeConnection(server_io)
        client.makeConnection(client_io)
        self._pumps.append(_TCPPump(client, server, client_io, server_io, False,
                                    clock=self.clock))

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

    def connect(self, client="127.0.0.1", close_on_eof=True):
        """
        Open a client connection to the proxy and keep it open: for
        keep-alive, pipelining and raw bytes (see :class:`ClientConnection`).
        It is a TCP connection in memory: FINs and resets travel as on a
        socket.

        :param client: the client's address, as the proxy sees it.
        :param close_on_eof: as for :class:`ClientConnection`.
        :rtype: :class:`ClientConnection`
        """
        connection = ClientConnection(self, close_on_eof)
        client_address = _address(client, next(self._ports))
        server_address = _address(*_PROXY_ADDRESS)
        with self._observing():
            proxy = self.factory.buildProtocol(client_address)
            client_io = _TCPTransport(connection, isServer=False,
                                      hostAddress=client_address, peerAddress=server_address)
            server_io = _TCPTransport(proxy, isServer=True,
                                      hostAddress=server_address, peerAddress=client_address)
            proxy.makeConnection(server_io)
            connection.makeConnection(client_io)
            self._pumps.append(_TCPPump(connection, proxy, client_io, server_io, False,
                                        clock=self.clock))
            self.flush()
        return connection

    def admin(self, method, uri, headers=None, body=b"", client="127.0.0.1"):
        """
        Send a request to the admin API over HTTP, on a new connection to the
        admin listener (every check included: token, ``Host``, browser
        requests, limits).

        A ``Host`` field (``localhost``) is added when ``headers`` has none,
        and a ``Content-Length`` when there is a body; a ``dict`` or ``list``
        body is sent as JSON (with ``Content-Type: application/json``).

        :param uri: path and query (``"/upstream/add?port=9001&prefix=api"``).
        :param headers: a ``dict`` or a list of ``(name, value)`` pairs.
        :param client: the caller's address.
        :return: a :class:`tproxy.admin.AdminResponse` (``status``, ``obj``:
            the decoded JSON body, ``None`` for another type; ``headers``:
            every response field; ``body``).
        """
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode("utf-8")
            headers = (list(headers.items()) if hasattr(headers, "items")
                       else list(headers or []))
            if not any(n.lower() == "content-type" for n, _ in headers):
                headers.append(("Content-Type", "application/json"))
        response = self.admin_raw(_request_bytes(method, uri, headers, body), client,
                                  method)
        is_json = "json" in (response.headers.get("content-type") or "")
        obj = json.loads(response.body.decode("utf-8")) if is_json and response.body else None
        return AdminResponse(response.status, obj,
                             [(_str(n), _str(v)) for n, v in response.headers.raw],
                             response.body)

    def admin_raw(self, data, client="127.0.0.1", method="GET", wait=True):
        """
        Send ``data`` (``bytes``, as they are) to the admin listener on a new
        connection and read one response.

        :param method: the request's method (a ``HEAD`` response has no body).
        :param wait: with ``False``, return a :class:`PendingRequest` at once.
        :return: a :class:`StubResponse`.
        :raises RequestPending: if no complete response came yet.
        :raises ResponseIncomplete: if the listener closed the connection
            first.
        """
        protocol = _Client(data, method.upper())
        client_address = _address(client, next(self._ports))
        with self._observing():
            server = self.admin_factory.buildProtocol(client_address)
            self._connect(protocol, client_address, server, _address(*_ADMIN_ADDRESS))
            pending = PendingRequest(self, protocol, method, "(admin)")
            self.flush()
        return pending.result() if wait else pending

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
                old.health.configure(old.config.get("health"))
                self._wait(new.stop, "stopping the new gateway")
            self.gateway, self.config, self.registry = old, old_config, old.registry
            raise
        self.factory.use(self.gateway)
        self.gateway.take_over(old)
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


def _str(value):
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _latin1(value):
    return value if isinstance(value, bytes) else str(value).encode("latin-1")
