# -*- test-case-name: tests.test_proxy_errors -*-
"""
Requests refused before any plugin sees them: the stand-in parser once
nothing more may be parsed, and the answer queued behind requests read
earlier.  (The errors parsing raises and the JSON answer written for them are
in :mod:`tproxy.http.wire`.)
"""

from tproxy.http.wire import Closing, error_response


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

    def __init__(self, conn, status, message, ex=None):
        self.conn = conn
        self.status = status
        self.message = message
        self.ex = ex

    def run(self):
        """Its turn: the error is written, and the connection closes."""
        data = error_response(self.status, self.message)
        ex = self.ex
        if ex is not None:
            ctx = ex.ctx
            ctx.status = self.status
            ctx.bytes_sent += len(data)
            ex.finish()   # its log; exchange_done ignores it (not the active one)
        self.conn.refuse(data)

    # (as an Exchange's: the client connection's calls while this is its turn)

    def close_after(self):
        """The connection closes after it anyway."""

    def client_full(self):
        """No upstream to pause."""

    client_drained = client_full

    def client_lost(self, error="client_abort"):
        """The connection went before this answer's turn."""
        if self.ex is not None:
            self.ex.client_lost(error)
