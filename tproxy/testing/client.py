# -*- test-case-name: tests.test_testing,tests.test_builtins_harness -*-
"""
The harness's HTTP client side (see :mod:`tproxy.testing`): a connection to
the proxy that writes requests and reads responses with a parser of its own
(independent of tproxy's), one request at a time, pipelined or raw.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from tproxy.http.headers import Headers
from tproxy.testing._network import RequestPending
from tproxy.testing._tcp import _ConnectionEnd
from tproxy.testing.upstreams import StubResponse


class ResponseIncomplete(Exception):
    """
    The proxy closed the client connection before the response was complete.

    :ivar partial: a :class:`StubResponse` of what arrived (``status`` is
        ``None`` when not even the head did).
    """

    def __init__(self, message, partial):
        Exception.__init__(self, message)
        self.partial = partial


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

    def _ended(self):
        """A body read until the connection closes is complete."""
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
