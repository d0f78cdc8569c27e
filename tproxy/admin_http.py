# -*- test-case-name: tests.test_admin,tests.test_admin_security -*-
"""
The admin listener's HTTP side: :class:`AdminFactory` reads requests with
the proxy's request parser (:mod:`tproxy.http.parsing`), within the limits
of :mod:`tproxy.admin` (``414`` / ``431`` / ``413`` / ``408``, answered in
JSON), and has them answered by the :class:`tproxy.admin.AdminRoutes` one
at a time, in order.
"""

from collections import deque
from http import HTTPStatus

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from tproxy.admin import IDLE_TIMEOUT, MAX_BODY_SIZE, MAX_HEADER_SIZE, MAX_LINE_SIZE
from tproxy.admin_messages import AdminRequest, AdminResponse, _error, _raw
from tproxy.http.chunk_sizes import chunk_refusal, unfinished_line
from tproxy.http.dates import date_line
from tproxy.http.head_reads import bare_cr_ahead
from tproxy.http.parsing import HttpParserError, HttpParserUpgrade, HttpRequestParser

__all__ = ["AdminFactory"]

log = Logger(namespace="tproxy.admin")


class _Refused(Exception):
    """A request refused while it is read: answered, then the connection
    closes."""

    def __init__(self, status, message, request=None):
        Exception.__init__(self, message)
        self.status = status
        self.message = message
        #: the request to answer through the routes (its body unread)
        self.request = request


def _status_line(status):
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    return ("HTTP/1.1 %d %s\r\n" % (status, reason)).encode("ascii")


class AdminFactory(Factory):
    """
    Makes an :class:`_AdminProtocol` per admin connection.

    :param routes: the :class:`AdminRoutes`.
    :param clock: the ``IReactorTime`` of the idle timeout.
    """

    noisy = False

    def __init__(self, routes, clock):
        self.routes = routes
        self.clock = clock

    def buildProtocol(self, addr):
        p = _AdminProtocol()
        p.factory = self
        return p


@implementer(IHalfCloseableProtocol)
class _AdminProtocol(Protocol):
    """
    One admin connection: requests parsed with tproxy's request parser and
    answered one at a time, in order (reading pauses while one is handled).
    A client that closes its sending side after a request (``nc -N``) still
    gets the answers to the requests it sent whole.
    """

    closing = False
    gone = False
    busy = False
    eof = False
    timer = None
    chunked = False
    chunk_mark = None   # body bytes before the chunk begun in this read
    line_part = b""     # a chunked body's line left unfinished by the last read

    def connectionMade(self):
        self.parser = HttpRequestParser(self)
        self.queue = deque()
        self.heads = 0
        self.in_body = False
        self.paused = False
        self.head_bytes = 0
        self.line_bytes = 0
        self.line_done = False
        self.begun = False      # a request line began (on_message_begin)
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)
        self.client = getattr(self.transport.getPeer(), "host", None)
        self.local = getattr(self.transport.getHost(), "host", None)
        self.timer = self.factory.clock.callLater(IDLE_TIMEOUT, self._timed_out)

    # -- reading ---------------------------------------------------------------

    def dataReceived(self, data):
        if self.closing:
            return
        if self.timer is not None and self.timer.active():
            self.timer.reset(IDLE_TIMEOUT)
        heads = self.heads
        if ((self.head_bytes or data and data[0] <= 13) and not self.in_body and not self.begun
                and bare_cr_ahead(self, data)):
            # nothing before a request line but empty lines, in this read or
            # in earlier ones (llhttp would skip a bare CR there)
            self._refuse(400, "bare CR before the request line")
            return
        try:
            self.parser.feed_data(data)
        except _Refused as e:
            self._refuse(e.status, e.message, e.request)
        except HttpParserUpgrade:
            self._refuse(400, "protocol upgrade not supported")
        except HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause.status, cause.message, cause.request)
            else:
                self._refuse(400, "malformed request")
        else:
            if self.in_body and self.chunked:
                if self.chunk_mark is not None:
                    self._check_chunk_size(data)
                self.line_part = unfinished_line(data, self.line_part)
            elif self.heads == heads and not self.in_body:
                self._count_head(data)

    def _check_chunk_size(self, data):
        """A chunk began in ``data`` and goes on past its end: its size must
        fit in :data:`~tproxy.admin.MAX_BODY_SIZE` (``413`` now, as nginx,
        not once a mebibyte came; :mod:`tproxy.http.chunk_sizes`)."""
        mark, self.chunk_mark = self.chunk_mark, None
        if self.closing:
            return
        refusal = chunk_refusal(data, len(data) - (self.body_size - mark), self.line_part,
                                mark, MAX_BODY_SIZE)
        if refusal is not None:
            self._refuse(*refusal)

    def _count_head(self, data):
        """``data`` went into a head not complete yet: bound its lines (the
        parser keeps a partial line until it ends)."""
        self.head_bytes += len(data)
        end = data.rfind(b"\n")
        if end < 0:
            self.line_bytes += len(data)
        else:
            self.line_done = True
            self.line_bytes = len(data) - end - 1
        if self.line_bytes > MAX_LINE_SIZE + 64:
            if self.line_done:
                self._refuse(431, "request header line too long")
            else:
                self._refuse(414, "request line too long")
        elif self.head_bytes > MAX_HEADER_SIZE:
            self._refuse(431, "request header fields too large")

    def on_message_begin(self):
        if self.closing:
            raise _Refused(400, "nothing more is read on this connection")
        self.begun = True
        self.url = b""
        self.fields = []
        self.size = 0
        self.body = []
        self.body_size = 0

    def on_url(self, url):
        self.url += url
        if len(self.url) > MAX_LINE_SIZE:
            raise _Refused(414, "request line too long")

    def on_header(self, name, value):
        if len(name) + len(value) > MAX_LINE_SIZE:
            raise _Refused(431, "request header line too long")
        self.size += len(name) + len(value) + 4
        if self.size > MAX_HEADER_SIZE:
            raise _Refused(431, "request header fields too large")
        self.fields.append((name, value))

    def on_headers_complete(self):
        self.heads += 1
        self.head_bytes = self.line_bytes = 0
        self.line_done = self.begun = False
        version = self.parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Refused(505 if version != "0.9" else 400, "HTTP version not supported")
        headers = {}
        hosts = 0
        length = None
        chunked = False
        expect = False
        for name, value in self.fields:
            name = name.decode("latin-1").lower()
            value = value.decode("latin-1")
            if name == "host":
                hosts += 1
            elif name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                if value.strip().lower() != "chunked":
                    raise _Refused(501, "transfer coding not implemented")
                chunked = True
            elif name == "expect" and value.strip().lower() == "100-continue":
                expect = True
            headers[name] = value if name not in headers else headers[name] + ", " + value
        if hosts > 1 or (hosts == 0 and version == "1.1"):
            raise _Refused(400, "exactly one Host header is required")
        if length is not None and length > MAX_BODY_SIZE:
            raise _Refused(413, "request body too large")
        url = self.url.decode("latin-1")
        if not url.startswith("/"):
            raise _Refused(400, "invalid request target")
        self.request = AdminRequest.from_uri(
            self.parser.get_method().decode("ascii"), url, headers, b"",
            self.client, self.local)
        self.keep_alive = self.parser.should_keep_alive()
        routes = self.factory.routes
        if ((length or chunked) and not routes._authorized(self.request)
                and not routes._is_public(self.request)):
            # no token: answered (401) without reading the body
            raise _Refused(401, "missing or invalid bearer token", self.request)
        self.in_body = True
        self.chunked = chunked
        if expect and (length or chunked) and not self.busy and not self.queue:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_chunk_header(self):
        self.chunk_mark = self.body_size

    def on_chunk_complete(self):
        self.chunk_mark = None

    def on_body(self, data):
        self.body_size += len(data)
        if self.body_size > MAX_BODY_SIZE:
            raise _Refused(413, "request body too large")
        self.body.append(data)

    def on_message_complete(self):
        self.in_body = False
        request = self.request
        request.body = b"".join(self.body)
        self.body = []
        self.queue.append((request, self.keep_alive))
        self._next()

    # -- answering -------------------------------------------------------------

    def _refuse(self, status, message, request=None):
        """Answer ``status`` (or ``request`` through the routes) after the
        requests read before, then close."""
        self.closing = True
        self.in_body = False
        self.queue.append((request if request is not None else _error(status, message),
                           False))
        self._next()

    def _next(self):
        """Answer the requests read, in order, while each is answered at
        once (a loop, not a recursion: a pipelined burst stays shallow);
        one answered later continues from :meth:`_answered`."""
        while not self.busy and self.queue and not self.gone:
            item, keep_alive = self.queue.popleft()
            if isinstance(item, AdminResponse):
                self._send(item, None, False)
                return
            self.busy = True
            try:
                answer = self.factory.routes.answer(item)
            except Exception:
                # a defect before the handler (the handler's own are a 500
                # there): answered and logged, never a connection left
                # waiting with the request unanswered
                log.failure("admin request {method} {path} failed", method=item.method,
                            path=item.path)
                answer = _error(500, "internal error", path=item.path)
            if isinstance(answer, Deferred):
                # an answer that takes time: read no more requests meanwhile
                self.paused = True
                self.transport.pauseProducing()
                answer.addCallback(self._answered, item, keep_alive)
                answer.addErrback(lambda f: log.failure("writing an admin response failed", f))
                return
            self._send(answer, item, keep_alive)   # (a heartbeat: at once)

    def _answered(self, response, request, keep_alive):
        self._send(response, request, keep_alive)
        self._next()

    def _send(self, response, request, keep_alive):
        self.busy = False
        if self.gone:
            return
        head = [_status_line(response.status)]
        names = set()
        for name, value in response.headers:
            names.add(name.lower())
            head.append(b"%s: %s\r\n" % (_raw(name), _raw(value)))
        if "content-type" not in names and response.status not in (204, 304):
            head.append(b"Content-Type: application/json\r\n")
        if "cache-control" not in names:
            head.append(b"Cache-Control: no-store\r\n")
        if "x-content-type-options" not in names:
            head.append(b"X-Content-Type-Options: nosniff\r\n")
        if response.status not in (204, 304):
            head.append(b"Content-Length: %d\r\n" % len(response.body))
        if "date" not in names:
            head.append(date_line(self.factory.clock.seconds()))
        if not keep_alive or (self.closing and not self.queue):
            keep_alive = False
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        if (request is None or request.method != "HEAD") and response.status not in (204, 304):
            head.append(response.body)
        self.transport.write(b"".join(head))
        if not keep_alive:
            self.closing = True
            self.queue.clear()
            self.transport.loseConnection()
            return
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()
        if self.timer is not None and self.timer.active():
            self.timer.reset(IDLE_TIMEOUT)

    def _timed_out(self):
        self.timer = None
        if self.busy or self.gone:
            if not self.gone:
                self.timer = self.factory.clock.callLater(IDLE_TIMEOUT, self._timed_out)
            return
        if self.in_body or self.head_bytes:
            self._refuse(408, "request not received in time")
        else:
            self.closing = True
            self.transport.loseConnection()

    def readConnectionLost(self):
        """The client sends no more: answer what it sent whole, then close."""
        self.eof = True
        self.closing = True
        if not self.busy and not self.queue:
            self.transport.loseConnection()

    def writeConnectionLost(self):
        """The client reads no more."""
        self.gone = True
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.gone = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
