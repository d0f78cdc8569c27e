# -*- test-case-name: tests.test_retry -*-
"""
When an upstream attempt fails: a connection refused or timed out, lost
before the response, a response that is not HTTP or whose head is too big,
a deadline passed; then the next peer as ``proxy.next_upstream`` allows
(:mod:`tproxy.http.retry`), or the 502 / 504 that ends the request (or the
client connection cut, when the response had started).

A part of :class:`tproxy.http.exchange.Exchange` (a base class of it, see
:mod:`tproxy.http.body`: the state is the exchange's, see there).
"""

from twisted.internet.error import (
    ConnectingCancelledError, ConnectionDone, TimeoutError as TxTimeoutError)
from twisted.logger import Logger

from tproxy.context import Response
from tproxy.http.body import RequestBody

# (the exchange's lines, under its namespace as before this module)
log = Logger(namespace="tproxy.http.exchange")


def _lost_detail(reason):
    """The health detail of a connection lost before the response: what TLS
    said when that was the cause (:func:`tproxy.tls_upstream.tls_failure`)."""
    from tproxy.tls_upstream import tls_failure
    return tls_failure(reason) or "connection lost before the response"


class UpstreamFailures(RequestBody):
    """The failed upstream attempts of an :class:`~tproxy.http.exchange.Exchange`."""

    def upstream_connect_failed(self, reason):
        """A new connection to the chosen peer failed: try the next peer."""
        if self.done:
            return
        timeout = reason.check(TxTimeoutError, ConnectingCancelledError) is not None
        why = reason.getErrorMessage()
        self.factory.health.failed(self.ctx.peer, "timeout" if timeout else "connect", why)
        self._retry("upstream_timeout" if timeout else "upstream_connect",
                    504 if timeout else 502,
                    "upstream connect timed out" if timeout else "upstream connection failed",
                    "timeout" if timeout else "error", False)

    def _retry(self, error, status, message, condition, sent):
        """
        The attempt failed: the next peer if ``proxy.next_upstream`` allows
        (:mod:`tproxy.http.retry`), else the end of the request.
        ``condition`` is the failure's ``next_upstream`` condition (``None``:
        already checked), ``sent`` whether the request went upstream.
        """
        # no line per attempt: the health state logs the peer's changes of
        # state and keeps its last error (an outage of a busy peer is not a
        # line per request; ctx.error tells the access log)
        self._close_upstream()
        self.last_failure = (error, status, message)
        if self._may_retry(condition, sent):
            self.answered = False
            self.balance()
        else:
            self.fail_upstream(error, status, message)

    def _untried_left(self):
        """Whether the request's group has a peer not tried yet (a response
        is dropped for a retry only then: the last one goes to the client)."""
        ctx = self.ctx
        group = ctx.gateway.registry.group(ctx.route) if ctx.route else None
        return group is not None and len(group.peers) > len(ctx.tried)

    def _may_retry(self, condition, sent):
        if self.response_started or self.done:
            return False
        policy = self.factory.retry
        if condition is not None and condition not in policy.conditions:
            return False
        if sent and (self.body_lost or not policy.may_resend(self.ctx.request.method)):
            return False
        ctx = self.ctx
        if len(ctx.tried) >= policy.tries:
            return False
        if policy.timeout and ctx.upstream_start is not None and \
                self.factory.seconds() - ctx.upstream_start >= policy.timeout:
            return False
        return True

    def fail_upstream(self, error, status, message):
        """End the request with an upstream error (502/504), or cut it short."""
        ctx = self.ctx
        ctx.error = error
        if ctx.upstream_end is None and ctx.upstream_start is not None:
            ctx.upstream_end = self.factory.seconds()
        self._close_upstream()
        if self.response_started and not self._unsend_head():
            self.response_close = True
            self._abort_client()
            self.finish()
        else:
            self.respond(Response.error(status, message, upstream=ctx.upstream_addr))

    def upstream_lost(self, reason, was_reused, eof_body):
        """
        The upstream connection closed: the end of a body delimited by the
        close (``eof_body``), or before the response was complete.  Only a
        clean close ends such a body: after a reset (or a TLS connection cut
        without its close_notify) it is incomplete (RFC 9112 9.8), and the
        client's connection is cut, as nginx's, without the last chunk.
        The head may still be in a ``header_filter`` (``filter_chain``):
        the end then follows it.
        """
        if self.done:
            return
        if (eof_body and (self.response_started or self.filter_chain is not None)
                and reason.check(ConnectionDone) is not None):
            return self.upstream_end()
        self.upstream = None
        if not self.response_started and not self.answered:
            if (was_reused and self.reused and not self.body_lost
                    and self.factory.retry.may_resend(self.ctx.request.method)):
                # a kept-alive connection the peer had closed while idle: once
                # more on a fresh one (not a try, not the peer's failure)
                self.reused = False
                self.factory.pool.connect(self.ctx.peer, self, fresh=True)
                return
            self.factory.health.failed(self.ctx.peer, "error", _lost_detail(reason))
            return self._retry("upstream_error", 502, "upstream closed the connection",
                               "error", True)
        self.fail_upstream("upstream_error", 502, "upstream closed the connection")

    def upstream_invalid(self, exc):
        """The upstream sent something that is not HTTP."""
        if self.done:
            return
        log.error("invalid response from {peer}: {exc}", peer=self.ctx.upstream_addr, exc=exc)
        self.upstream = None
        self.factory.health.failed(self.ctx.peer, "invalid", str(exc))
        if self.answered:
            return self.fail_upstream("upstream_invalid", 502, "invalid response from upstream")
        self._retry("upstream_invalid", 502, "invalid response from upstream",
                    "invalid_header", True)

    def upstream_head_too_big(self, limit):
        """The response head passed ``limit`` bytes: 502."""
        if not self.done:
            log.error("upstream {peer} sent too big header (more than {limit} bytes)",
                      peer=self.ctx.upstream_addr, limit=limit)
            self.fail_upstream("upstream_header_too_big", 502, "upstream sent too big header")

    def upstream_timed_out(self):
        """The upstream connection's deadline passed (see ``set_deadline``)."""
        if self.done:
            return
        if self.client_blocked:
            # the client did not read for proxy.client_send_timeout seconds
            # (nginx's send_timeout): the response is cut, the peer not blamed
            return self.fail_upstream("client_send_timeout", 504, "client send timeout")
        if self.filter_chain is not None:
            # a header_filter or body_filter is awaited, the upstream not
            # read meanwhile: its silence is not its own, and the filter has
            # a deadline of its own (tproxy.http.filters)
            self.upstream.set_deadline(self.factory.read_timeout)
            return
        if not self.request_complete and not self.upstream_full:
            # the upstream takes the body, the client is not sending it: not
            # the upstream's fault, and not for timeouts.send to judge (nginx's
            # proxy_send_timeout runs only while the upstream does not take
            # bytes); the client's own timer (proxy.client_body_timeout,
            # ProxyProtocol.check_timeout) answers 408 if it stays silent
            self.upstream.set_deadline(self.factory.send_timeout)
            return
        if self.answered:
            # the peer answered: a body that stops is no failure of the
            # peer (nginx counts them only before the response head)
            return self.fail_upstream("upstream_timeout", 504, "upstream timed out")
        self.factory.health.failed(self.ctx.peer, "timeout", "upstream timed out")
        self._retry("upstream_timeout", 504, "upstream timed out", "timeout", True)
