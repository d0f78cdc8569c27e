# -*- test-case-name: tests.test_proxy_errors -*-
"""
Requests refused before any plugin sees them: the stand-in parser once
nothing more may be parsed, and the answer queued behind requests read
earlier, and the ``log`` phase of such a request (as nginx writes an
access-log line for a ``400``).  (The errors parsing raises and the JSON
answer written for them are in :mod:`tproxy.http.wire`.)
"""

from tproxy.context import Request, RequestContext
from tproxy.http.dates import date_line
from tproxy.http.headers import Headers
from tproxy.http.wire import Closing, error_response

#: ``ctx.error`` of a request refused before any plugin saw it, by the
#: status answered (any other status: ``"bad_request"``)
REFUSED_ERRORS = {
    400: "bad_request",
    408: "header_timeout",
    414: "target_too_long",
    431: "header_too_large",
    500: "internal_error",
    501: "not_implemented",
    505: "version_not_supported",
}


def refused_context(conn, status):
    """
    The :class:`~tproxy.context.RequestContext` of a request the client
    connection ``conn`` refuses (a head that cannot be parsed, too large,
    or not complete after ``header_timeout``), for its ``log`` phase; or
    ``None`` when no plugin implements ``log`` (nothing is made).

    Called at the refusal, while the connection's parsing state is the
    refused head's.  ``ctx.status`` is ``status``, ``ctx.error`` its code
    (:data:`REFUSED_ERRORS`), no route, peer or upstream.  The request's
    method, path, query, version and header fields are those parsed when
    the parser got past the request line (the target was read whole;
    not for a ``414``); otherwise ``method`` and ``version`` are ``None``,
    ``path`` and ``query`` ``""``, no header fields.  The client address is
    the TCP peer's (no forwarding header is believed from a refused head).
    """
    f = conn.factory
    f.requests += 1     # (a request read, as nginx counts it: logged or not)
    gateway = f.gateway
    phases = getattr(gateway, "phases", None)
    if phases is None or not phases.default.log:
        return None
    start = conn.head_start
    method = version = None
    path = query = ""
    headers = Headers()
    url = getattr(conn, "url", b"") if start is not None else b""
    if url and status != 414:
        try:
            method = conn.parser.get_method().decode("ascii", "replace")
            version = conn.parser.get_http_version()
        except Exception:
            method = version = None
        if method is not None:
            path, _, query = url.decode("latin-1").partition("?")
            fields = conn.fields
            if type(fields) is list:
                headers = Headers(list(fields))
    request = Request(method, path, query, version, headers, conn.remote_addr,
                      conn.remote_addr, f.scheme)
    ctx = RequestContext(gateway, request, f.requests,
                         start if start is not None else f.clock.seconds())
    ctx.status = status
    ctx.error = REFUSED_ERRORS.get(status, "bad_request")
    return ctx


def log_refused(conn, ctx, sent):
    """The refused request's answer (``sent`` bytes) is written: its ``log``
    phase (failures are logged by the phase walk, never raised)."""
    ctx.bytes_sent = sent
    ctx.end = conn.factory.clock.seconds()
    ctx.plugins.run_log(ctx)


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

    def __init__(self, conn, status, message, ex=None, ctx=None):
        self.conn = conn
        self.status = status
        self.message = message
        self.ex = ex
        #: the refused request's context (:func:`refused_context`) when the
        #: bad bytes were a head of their own, for its ``log``
        self.ctx = ctx

    def run(self):
        """Its turn: the error is written, and the connection closes."""
        data = error_response(self.status, self.message,
                              date_line(self.conn.factory.clock.seconds()))
        ex = self.ex
        if ex is not None:
            ctx = ex.ctx
            ctx.status = self.status
            ctx.bytes_sent += len(data)
            ex.finish()   # its log; exchange_done ignores it (not the active one)
        self.conn.refuse(data)
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            log_refused(self.conn, ctx, len(data))

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
        # (a refused head never answered is not logged: the connection
        # closed before it, as bytes after the last request)
        self.ctx = None
