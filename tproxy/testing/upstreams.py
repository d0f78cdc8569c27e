# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
The harness's stub upstream servers (see :mod:`tproxy.testing`): a handler
``handler(request) -> StubResponse`` (or a Deferred / coroutine of one), or
:func:`echo`, served by a real :class:`twisted.web.server.Site` on the
harness's in-memory network.
"""

import json
import types
from collections import namedtuple

from twisted.internet.defer import ensureDeferred, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request as _WebRequest, Site

from tproxy.http.headers import Headers
from tproxy.testing._network import _log, _text


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
