# -*- test-case-name: tests.test_proxy_errors -*-
"""
Requests refused before any plugin sees them: the errors parsing raises
(:class:`BadRequest`, :class:`Closing`), the JSON answer written for them,
the stand-in parser once nothing more may be parsed, the answer queued behind
requests read earlier, and the normalisation of request paths (dot segments).
"""

from tproxy.http.wire import (METHOD_TOKEN, BadRequest, Closing, error_response,  # noqa: F401
                              normalize_path)


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
