"""
A scripted HTTP/1.1 upstream for :mod:`tproxy.testing` harnesses: it reads
requests as an origin server does (Content-Length and chunked bodies,
keep-alive) and answers each with the bytes a test chose, so tests can send
what a well-behaved server framework would not (a split status line, a body
after HEAD, an unframed body, interim responses).
"""

import json

from twisted.internet.protocol import Factory, Protocol


class Request(object):
    """A request the scripted upstream read (``conn``: its connection's index)."""

    def __init__(self, conn, method, uri, version, headers, body):
        self.conn = conn
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.body = body

    def header(self, name):
        """The first value of ``name`` (``str``), or ``None``."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name):
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.headers if n.lower() == key]


def json_answer(request, extra=()):
    """``200`` with ``{"uri", "method", "body_length"}`` as JSON."""
    body = json.dumps({"uri": request.uri, "method": request.method,
                       "body_length": len(request.body)}).encode("utf-8")
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json",
            b"Content-Length: %d" % len(body)] + list(extra)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


#: In an answer's pieces: close the connection (a FIN) at this point.
CLOSE = object()
#: In an answer's pieces: reset the connection at this point.
ABORT = object()


def pieces(data, size):
    """``data`` cut into pieces of ``size`` bytes, for an answer that
    arrives in as many reads."""
    return [data[i:i + size] for i in range(0, len(data), size)]


class Scripted(Factory):
    """
    The upstream.  ``answer(request)`` returns the bytes to send (or a list
    of pieces, sent one per tick of ``clock``, so the proxy reads them
    separately; a piece :data:`CLOSE` or :data:`ABORT` ends the connection
    with a FIN or a reset there), or ``None`` to send nothing; ``close``
    closes each connection after its first answer.  Set ``clock`` (the
    harness's) before using pieces.  With ``early`` a request is answered as
    soon as its head is read (its ``body`` is then ``b""``), and nothing
    more is read.

    :ivar requests: every :class:`Request` read, in order.
    :ivar connections: how many connections were made.
    :ivar open: how many of them are open.
    :ivar received: every byte received, on any connection.
    :ivar sent: how many bytes were sent, on every connection.
    """

    clock = None

    def __init__(self, answer=json_answer, close=False, early=False):
        self.answer = answer
        self.close = close
        self.early = early
        self.requests = []
        self.connections = 0
        self.open = 0
        self.received = b""
        self.sent = 0

    def buildProtocol(self, addr):
        self.connections += 1
        return _ScriptedProtocol(self, self.connections - 1)


class _ScriptedProtocol(Protocol):

    def __init__(self, factory, index):
        self.factory = factory
        self.index = index
        self.buffer = b""

    def connectionMade(self):
        self.factory.open += 1

    def connectionLost(self, reason):
        self.factory.open -= 1

    def dataReceived(self, data):
        self.factory.received += data
        self.buffer += data
        while self.transport.connected:
            request = self._parse()
            if request is None:
                return
            self.factory.requests.append(request)
            self._send(self.factory.answer(request))

    def _send(self, out):
        if out is None:
            return
        pieces = list(out) if isinstance(out, list) else [out]
        close = self.factory.close

        def write(delay):
            if not self.transport.connected:
                return
            piece = pieces.pop(0)
            if piece is CLOSE:
                self.transport.loseConnection()
                return
            if piece is ABORT:
                self.transport.abortConnection()
                return
            self.transport.write(piece)
            self.factory.sent += len(piece)
            if pieces:
                self.factory.clock.callLater(delay, write, delay)
            elif close:
                self.transport.loseConnection()
        write(2 ** -20)

    def _parse(self):
        """The next complete request of the buffer (removed from it), or ``None``."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = self.buffer[:end].split(b"\r\n")
        method, uri, version = lines[0].split(b" ")
        headers = [tuple(p.strip() for p in line.split(b":", 1)) for line in lines[1:]]
        names = {n.lower(): v for n, v in headers}
        rest = self.buffer[end + 4:]
        if self.factory.early:
            self.buffer = b""
            self.dataReceived = lambda data: None
            return Request(self.index, method.decode("ascii"), uri.decode("latin-1"),
                           version.decode("ascii"), headers, b"")
        if b"chunked" in names.get(b"transfer-encoding", b"").lower():
            body, pos = [], 0
            while True:
                eol = rest.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(rest[pos:eol].split(b";")[0], 16)
                if size == 0:
                    if rest.find(b"\r\n\r\n", eol) != eol:
                        return None
                    pos = eol + 4
                    break
                if len(rest) < eol + 2 + size + 2:
                    return None
                body.append(rest[eol + 2:eol + 2 + size])
                pos = eol + 2 + size + 2
            body = b"".join(body)
        else:
            length = int(names.get(b"content-length", b"0"))
            if len(rest) < length:
                return None
            body, pos = rest[:length], length
        self.buffer = rest[pos:]
        return Request(self.index, method.decode("ascii"), uri.decode("latin-1"),
                       version.decode("ascii"), headers, body)
