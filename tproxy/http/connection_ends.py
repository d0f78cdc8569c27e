# -*- test-case-name: tests.test_proxy_connections -*-
"""
How a client connection stops being plain keep-alive HTTP: bytes that
cannot be parsed answered and the connection closed (:meth:`_bad_request`,
:meth:`refuse`), the lingering close (as nginx's ``lingering_close``), the
drain when the proxy stops, and an upgrade (the client held while the
upstream answers, then handed over to the tunnel, or HTTP again).

A part of :class:`tproxy.http.connection.ProxyProtocol` (a mixin: the state
is the connection's, see there).
"""

from collections import deque

from twisted.logger import Logger

from tproxy.context import Response
from tproxy.http.exchange import Exchange
from tproxy.http.parsing import HttpRequestParser
from tproxy.http.refusals import BadRequestReply, Stopped
from tproxy.http.wire import error_response

# (the connection's lines, under its namespace as before this module)
log = Logger(namespace="tproxy.http.connection")

#: Seconds a connection that has sent nothing yet when the proxy begins to
#: drain may take to begin its first request, which is then answered (with
#: ``Connection: close``): a client that connected just before the drain
#: has its request on the way, but an idle preconnection does not hold the
#: stop for its whole first-request timeout.
DRAIN_FIRST_REQUEST = 1.0


class ConnectionEnds(object):
    """The unusual turns of a :class:`~tproxy.http.connection.ProxyProtocol`:
    a bad request, lingering, the drain, an upgrade."""

    # -- closing lingering --------------------------------------------------------

    def _linger(self):
        """
        Close as nginx's ``lingering_close``: the client may still be sending
        (a body not read, bytes after a bad request), and closing a socket
        with unread bytes sends a reset, which can destroy the response
        before the client reads it.  So the response is flushed, then the
        write side is shut down (the client sees the end of the response),
        and what the client still sends is read and dropped until it closes,
        or is silent for ``proxy.lingering_timeout`` seconds, or
        ``proxy.lingering_time`` seconds have passed; then the connection
        closes (:meth:`_check_timeout`).
        """
        f = self.factory
        t = self.transport
        self.lingering = True
        # requests read but not started will not be: they end now, not
        # when the connection does
        queue, self.queue = self.queue, deque()
        for queued in queue:
            queued.client_lost()
        now = f.clock.seconds()
        self.idle_since = now
        self.linger_end = now + f.lingering_time
        # after the bytes buffered (the response): FIN (Twisted's doWrite
        # half-closes once its buffer is empty; the fast write path in
        # tproxy.fastio only sends while that buffer is empty, so the order
        # holds)
        t.loseWriteConnection()
        # read (and drop) whatever the reasons for not reading were
        self.paused.clear()
        t.resumeProducing()
        delay = min(f.lingering_timeout, f.lingering_time)
        timer = self.timer
        if timer is not None and timer.active():
            # (not timer.reset(delay): moving a DelayedCall sooner searches
            # the reactor's whole timer heap)
            timer.cancel()
        self.timer = f.clock.callLater(delay, self._check_timeout)

    def _end_linger(self):
        """Lingering is over: close (a reset if the client is still sending)."""
        t = self.transport
        if t.dataBuffer or t._tempDataBuffer:
            # the response is still not flushed (the client does not read):
            # loseConnection would wait for it for ever
            t.abortConnection()
        else:
            t.loseConnection()   # (the write side is shut already: at once)

    # -- an upgrade (tproxy.http.tunnel) -----------------------------------------

    def hold_for_upgrade(self, early):
        """
        An upgrade request's head is read: nothing more is parsed and the
        client is not read until the upstream answers.  ``early``: the
        client sent bytes after the head (for the new protocol: if the
        upgrade is refused, the connection closes lingering).
        """
        self.parser = Stopped
        self.pause("upgrade")
        if early:
            self.linger = True

    def upgrade_refused(self):
        """The upgrade was not made: HTTP goes on, with a new parser (unless
        the connection is closing)."""
        if not self.closing:
            self.parser = HttpRequestParser(self)
            self.unpause("upgrade")

    def hand_over(self):
        """The connection is a tunnel's from now on: no more HTTP, no timer."""
        self.closing = True
        t = self.timer
        if t is not None and t.active():
            t.cancel()
        self.timer = None

    def read_again(self):
        """Read whatever the reasons for not reading were (the tunnel's
        producers take over)."""
        self.paused.clear()
        self.transport.resumeProducing()

    def _upgraded(self):
        """
        The request just read asked for an Upgrade to a protocol not in
        ``proxy.upgrade_protocols`` (those are tunneled: see
        :mod:`tproxy.http.tunnel`), or is a CONNECT: it is answered as a
        plain request, with ``Connection: close``, and what
        follows it is not HTTP: nothing more is parsed.
        """
        if self.queue:
            # it waits behind others, which are answered first
            self.parser = Stopped
            self.queue[-1].close_after()
        elif self.exchange is not None:
            self.closing = True
        else:
            # it was answered already (by a plugin): only the close is left
            self.close()

    # -- bytes that cannot be parsed ---------------------------------------------

    def refuse(self, data):
        """Write ``data``, the answer to bytes that cannot be parsed (see
        :class:`~tproxy.http.refusals.BadRequestReply`), and close."""
        self.exchange = None
        self.transport.write(data)
        self.close()

    def _bad_request(self, status, message):
        """Answer a request that cannot be parsed, and close."""
        # the client may be sending more (the rest of a body or of a head):
        # the close lingers
        self.linger = True
        if self.closing:
            # bytes after the last response (it closed the connection, and
            # was answered within the same read): they are not answered
            return
        # (not a field called "message": the legacy log bridge takes it over)
        log.info("bad request from {client}: {why}", client=self.remote_addr, why=message)
        if self.exchange is None:
            self.transport.write(error_response(status, message))
            self.close()
        elif self.reading is self.exchange:
            # the body of the request in flight is broken: it ends here
            self.closing = True
            for queued in self.queue:
                queued.client_lost()
            self.queue.clear()
            self.exchange.close_after()
            self.exchange.respond(Response.error(status, message))
        elif not self.closing:
            # Requests read before this one are answered first, in order;
            # then the error, then the connection closes (as nginx).  Nothing
            # after the bad bytes is parsed: later reads are dropped.
            self.parser = Stopped
            self.head_start = None
            ex, self.reading = self.reading, None
            if ex is not None:
                # the body of a queued request is broken (it is the last
                # one read): it ends with the error when its turn comes
                self.queue.pop()
            self.queue.append(BadRequestReply(self, status, message, ex))

    # -- the proxy stopping -------------------------------------------------------

    def drain(self):
        """
        The proxy is stopping (:meth:`ProxyFactory.drain`): the last request
        read is answered with ``Connection: close`` and the connection closes
        after it; nothing read after the requests being served is answered.

        - Idle after a response (keep-alive): closes now, as nginx's
          graceful quit closes idle keep-alive connections.
        - Accepted and silent so far: its first request may be on the way
          (the client connected just before the drain); it is answered if it
          begins within :data:`DRAIN_FIRST_REQUEST` seconds, else the
          connection closes then.
        - Receiving a request head: the request is answered (the header
          timeout bounds the wait).
        - Serving requests: those read so far are answered, the last
          response with ``Connection: close`` if its head is not sent yet.
        """
        if self.closing:
            return   # closing already (flushing or lingering)
        if self.exchange is None:
            if self.head_start is not None or self.head_bytes:
                return   # a request is arriving: answered, then closed
            if self.served:
                self.close()
                return
            t = self.timer
            if t is not None and t.active():
                t.cancel()
            self.timer = self.factory.clock.callLater(DRAIN_FIRST_REQUEST,
                                                      self._drain_wait_over)
            return
        last = self.queue[-1] if self.queue else self.exchange
        if isinstance(last, Exchange):
            # its response says Connection: close (unless its head went out
            # already), and exchange_done closes the connection after it
            last.close_after()
        if self.reading is None:
            # every request read is whole: nothing more is parsed (bytes
            # that come now are dropped, and the close lingers)
            self.parser = Stopped
            self.head_start = None

    def _drain_wait_over(self):
        """:data:`DRAIN_FIRST_REQUEST` has passed since :meth:`drain`: a
        connection still silent closes; one whose request began goes on
        under its usual timeouts."""
        self.timer = None
        if self.exchange is None and self.head_start is None and not self.head_bytes:
            self.close()
        else:
            self._check_timeout()
