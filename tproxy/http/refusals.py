# -*- test-case-name: tests.test_proxy_errors -*-
"""
Requests refused before any plugin sees them (:func:`bad_request`, and
:func:`internal_error` for a defect of tproxy's own): the stand-in parser
once nothing more may be parsed, and the answer queued behind requests read
earlier, and the ``log`` phase of such a request (as nginx writes an
access-log line for a ``400``).  (The errors parsing raises and the JSON
answer written for them are in :mod:`tproxy.http.wire`.)
"""

from twisted.logger import Logger
from twisted.python.failure import Failure

from tproxy.context import Request, RequestContext, Response
from tproxy.http.dates import date_line
from tproxy.http.headers import Headers
from tproxy.http.wire import Closing, error_response

#: the client connection's log (:mod:`tproxy.http.connection`): its client
#: errors are logged there, at debug (``proxy.log_client_errors``)
log = Logger(namespace="tproxy.http.connection")

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
                         start if start is not None else f.seconds())
    ctx.status = status
    ctx.error = REFUSED_ERRORS.get(status, "bad_request")
    return ctx


def log_refused(conn, ctx, sent):
    """The refused request's answer (``sent`` bytes) is written: its ``log``
    phase (failures are logged by the phase walk, never raised)."""
    ctx.bytes_sent = sent
    ctx.end = conn.factory.seconds()
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
                              date_line(self.conn.factory.seconds()))
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


def internal_error(conn, exc):
    """A defect of tproxy's own while reading a request (a parser callback
    raised ``exc``): logged with its traceback, answered ``500``, and
    the connection closed, as a request that cannot be parsed is."""
    log.failure("internal error reading a request from {client}",
                Failure(exc, type(exc), exc.__traceback__), client=conn.remote_addr)
    if conn.reading is not None:   # (its exchange is made: its log says so)
        conn.reading.ctx.error = "internal_error"
    bad_request(conn, 500, "internal error")


def bad_request(conn, status, message):
    """Answer a request that cannot be parsed, and close."""
    # the client may be sending more (the rest of a body or of a head):
    # the close lingers
    conn.linger = True
    if conn.closing:
        # bytes after the last response (it closed the connection, and
        # was answered within the same read): they are not answered
        return
    # (not a field called "message": the legacy log bridge takes it over)
    if conn.factory.log_client_errors:
        log.debug("bad request from {client}: {why}", client=conn.remote_addr, why=message)
    if conn.exchange is None:
        # (the refused request's log: nothing made without a log plugin)
        ctx = refused_context(conn, status)
        data = error_response(status, message, date_line(conn.factory.seconds()))
        conn.transport.write(data)
        conn.close()
        if ctx is not None:
            log_refused(conn, ctx, len(data))
    elif conn.reading is conn.exchange:
        # the body of the request in flight is broken: it ends here
        conn.closing = True
        for queued in conn.queue:
            queued.client_lost()
        conn.queue.clear()
        conn.exchange.close_after()
        conn.exchange.respond(Response.error(status, message))
    elif not conn.closing:
        # Requests read before this one are answered first, in order;
        # then the error, then the connection closes (as nginx).  Nothing
        # after the bad bytes is parsed: later reads are dropped.
        ex, conn.reading = conn.reading, None
        # a head of its own: its log when its turn comes (made now,
        # from the head's parsing state)
        ctx = refused_context(conn, status) if ex is None else None
        conn.parser = Stopped
        conn.head_start = None
        if ex is not None:
            # the body of a queued request is broken (it is the last
            # one read): it ends with the error when its turn comes
            conn.queue.pop()
        conn.queue.append(BadRequestReply(conn, status, message, ex, ctx))
