# -*- test-case-name: tests.test_stream -*-
"""
How a :class:`~tproxy.stream.session.StreamSession` ends: FINs forwarded
both ways, resets, the idle timeout (a close both ways), shutdown, and
``stream_log`` once both connections are closed (the life of a connection
is in :mod:`tproxy.stream`).
"""

from twisted.internet.error import ConnectionDone

from tproxy.stream.context import (
    _CLEAN, CLIENT_CLOSED, CLIENT_RESET, IDLE_TIMEOUT, PLUGIN_TIMEOUT, SHUTDOWN,
    UPSTREAM_CLOSED, UPSTREAM_RESET)
from tproxy.stream.phases import _log_timeout, _run_log
from tproxy.stream.pipe import _FULL, _half_closeable

#: Seconds the connections closed by the idle timeout have to send what is
#: buffered (to a peer that reads none of it, nothing goes) before they are
#: aborted; at most ``timeouts.idle``.
IDLE_CLOSE_TIME = 5.0


class SessionClosing(object):
    """
    The closing side of a :class:`~tproxy.stream.session.StreamSession` (a
    base class: the state is the session's, see there): the first decision
    to end names ``ctx.reason`` (:meth:`_end`); ``stream_log`` runs once
    the client connection, the connect attempt and the upstream connection
    are all gone (:meth:`_finish`).
    """

    def readConnectionLost(self):
        """The client sent its FIN: forward it to the upstream."""
        self.reader.closed = True
        self.client_eof = True
        if self.first_eof is None:
            self.first_eof = CLIENT_CLOSED
        up = self.upstream
        if self.closing is not None or up is None:
            return  # not connected yet: sent after the pending bytes
        ut = up.transport
        ut.unregisterProducer()
        ut.loseWriteConnection()
        self._maybe_both_eof()

    def writeConnectionLost(self):
        """Our FIN to the client was sent (nothing to do)."""

    def _upstream_eof(self):
        self.up_reader.closed = True
        self.upstream_eof = True
        if self.first_eof is None:
            self.first_eof = UPSTREAM_CLOSED
        if self.closing is not None:
            return
        t = self.transport
        if self.client_gone or not _half_closeable(t):
            # no client left to tell, or a TLS one, which cannot take a FIN
            # alone: close (the reason: whoever closed first)
            self._end(self.first_eof, 200, abort=False)
            return
        t.unregisterProducer()
        t.loseWriteConnection()
        self._maybe_both_eof()

    def _maybe_both_eof(self):
        if self.client_eof and self.upstream_eof:
            self._end(self.first_eof, 200, abort=False)

    def connectionLost(self, reason):
        """The client connection is closed."""
        self.client_gone = True
        self.reader.closed = True
        if self.closing is None:
            if reason.check(ConnectionDone) or self.tls_fin:
                # a TLS client (it cannot send a FIN alone) closed: its FIN
                self._client_closed()
            else:
                self._end(CLIENT_RESET, 200 if self.upstream is not None else 499,
                          abort=True)
        self._maybe_finish()

    def _client_closed(self):
        """
        The client closed while the session was open (over TLS: a close,
        with or without ``close_notify``): a FIN for the upstream, after what
        the client sent; what it answers is read and dropped, and no longer
        counts as activity for the idle timeout.
        """
        up = self.upstream
        if up is not None:
            up.dataReceived = self._upstream_dropped
            self.up_reader.resume(_FULL)   # (the client's buffer is gone)
        self.readConnectionLost()

    def _upstream_dropped(self, data):
        # (the upstream's bytes once the client is gone)
        self.ctx.upstream_bytes_received += len(data)

    def _upstream_lost(self, reason):
        if self.up_reader is not None:
            self.up_reader.closed = True
        self._release_peer()
        if self.closing is None:
            clean = reason.check(ConnectionDone) is not None
            self._end(UPSTREAM_CLOSED if clean else UPSTREAM_RESET, 200, abort=False)
        self._maybe_finish()

    def _idle_check(self):
        self.idle_call = None
        if self.done:
            return
        f = self.factory
        now = self.seconds()
        if self.connector is not None:
            self.last = now  # an attempt in progress has its own timeout
        left = self.last + f.idle_timeout - now
        if left > 0:
            self.idle_call = f.clock.callLater(left, self._idle_check)
            return
        if self.closing is not None:
            # a close under way (what is buffered being sent) took too long
            self._end(self.closing, 0, abort=True)
            return
        if self.awaited is not None:
            _log_timeout(self.ctx, self.awaited[1], f.idle_timeout)
            self._end(PLUGIN_TIMEOUT, 500, abort=True)
            return
        # as nginx's stream proxy_timeout: both closed (a FIN each way, after
        # what is buffered), aborted if still open IDLE_CLOSE_TIME later
        self.idle_call = f.clock.callLater(min(f.idle_timeout, IDLE_CLOSE_TIME),
                                           self._idle_check)
        self._end(IDLE_TIMEOUT, 200 if self.upstream is not None else 502, abort=False)

    def shutdown(self):
        """tproxy is stopping and the drain time is over: abort both sides."""
        self._end(SHUTDOWN, 200 if self.upstream is not None else 502, abort=True)

    def _end(self, reason, status, abort):
        """
        Decide that the connection ends (the first decision names the reason)
        and close both sides: gracefully (what is buffered is sent first) or
        at once.  ``stream_log`` runs when both are closed.
        """
        if self.closing is None:
            self.closing = reason
            ctx = self.ctx
            ctx.reason = reason
            ctx.status = status
            ctx.error = None if reason in _CLEAN else reason
        elif not abort:
            return
        awaited = self.awaited
        if awaited is not None:
            # the plugin's work is cancelled (its errback: _phase_failed)
            self.awaited = None
            awaited[0].cancel()
        c = self.connector
        if c is not None:
            self.connector = None
            try:
                c.stopConnecting()   # calls _connect_failed, which releases the peer
            except Exception:
                self._release_peer()
        up = self.upstream
        transports = []
        if not self.client_gone:
            transports.append(self.transport)
        if up is not None and not up.gone:
            transports.append(up.transport)
        for t in transports:
            if t.connected:
                t.unregisterProducer()
                if abort:
                    t.abortConnection()
                else:
                    t.loseConnection()
        if self.idle_call is None and not self.done:
            self.idle_call = self.factory.clock.callLater(
                self.factory.idle_timeout, self._idle_check)
        self._maybe_finish()

    def _maybe_finish(self):
        if self.done or self.closing is None or not self.client_gone:
            return
        if self.connector is not None:
            return
        up = self.upstream
        if up is not None and not up.gone:
            return
        self._finish()

    def _finish(self):
        self.done = True
        call, self.idle_call = self.idle_call, None
        if call is not None and call.active():
            call.cancel()
        self._release_peer()
        f = self.factory
        f.sessions.discard(self)
        ctx = self.ctx
        ctx.end = self.seconds()
        _run_log(ctx.plugins.log, ctx)
        f._maybe_drained()
