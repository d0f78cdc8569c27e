# -*- test-case-name: tests.test_proxy_errors -*-
"""
Requests refused before any plugin sees them: the errors parsing raises
(:class:`BadRequest`, :class:`Closing`), the JSON answer written for them,
the stand-in parser once nothing more may be parsed, the answer queued behind
requests read earlier, and the normalisation of request paths (dot segments).
"""

import re

from tproxy.context import Response
from tproxy.http.exchange import reason_for


def normalize_path(path):
    """
    Resolve ``.`` and ``..`` segments (also percent-encoded) as nginx does
    before routing, so that ``/api/../admin`` cannot pass for ``/api``; a path
    climbing above the root is a bad request.
    """
    segments = path.split("/")
    out = []
    changed = False
    for seg in segments[1:]:
        low = seg.lower()
        if low in (".", "%2e"):
            changed = True
            continue
        if low in ("..", "%2e.", ".%2e", "%2e%2e"):
            changed = True
            if len(out) == 0:
                raise BadRequest(400, "path climbs above the root")
            out.pop()
            continue
        out.append(seg)
    if not changed:
        return path
    last = segments[-1].lower()
    trailing = last in (".", "..", "%2e", "%2e.", ".%2e", "%2e%2e")
    return "/" + "/".join(out) + ("/" if trailing and out else "")


#: a request line starting with a method token (what a 501 is for)
METHOD_TOKEN = re.compile(rb"[A-Z][A-Z0-9_-]* ")


class Closing(Exception):
    """Stops parsing: the connection closes after what was answered."""


class BadRequest(Exception):
    """A request refused while parsing: answered ``status`` with the JSON
    error ``message``, then the connection closes."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status
        self.message = message


def error_response(status, message):
    """The bytes of the JSON error answering a request that cannot be parsed;
    the connection closes after it."""
    body = Response.error(status, message).body
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, reason_for(status), len(body), body))


class Stopped(object):
    """
    Stands in for the parser once nothing more may be parsed while earlier
    requests are still being answered (bytes after a bad request, or after an
    Upgrade): later reads are dropped.
    """

    @staticmethod
    def feed_data(data):
        raise Closing()


class BadRequestReply(object):
    """
    The answer to a request that could not be parsed, queued behind the
    requests read before it (``ProxyProtocol.queue``): when its turn comes
    it writes the error, and the connection closes.  It is not a request the
    plugins see; but if the bad bytes were the body of a request whose head
    was read (``ex``), that request ends with the error and its ``log`` runs.
    """

    upstream = None   # as an Exchange's, for ProxyProtocol's producer methods

    def __init__(self, conn, status, message, ex=None):
        self.conn = conn
        self.status = status
        self.message = message
        self.ex = ex

    def run(self):
        conn = self.conn
        conn.exchange = None
        data = error_response(self.status, self.message)
        conn.write(data)
        ex = self.ex
        if ex is not None:
            ctx = ex.ctx
            ctx.status = self.status
            ctx.bytes_sent += len(data)
            ex.finish()   # its log; exchange_done ignores it (not the active one)
        conn._close()

    def client_lost(self, error="client_abort"):
        """The connection went before this answer's turn."""
        if self.ex is not None:
            self.ex.client_lost(error)
