# -*- test-case-name: tests.test_proxy_streaming,tests.test_phases -*-
"""
The ``header_filter`` and ``body_filter`` chain of a response: run
synchronously, or awaited with the upstream paused (a Deferred or a
coroutine answer), the body's chunks kept in order behind a filter that has
not answered yet.

An awaited filter has ``timeouts.read`` seconds to answer (the phase's
implementations together), as the upstream has to send its next bytes:
the upstream is not read meanwhile, so its own deadline does not judge it
(:meth:`~tproxy.http.exchange_failures.UpstreamFailures.upstream_timed_out`),
and is set anew when reading resumes.  Past it, the filter is cancelled,
an error line names the phase and the plugin, ``ctx.error`` is
``"plugin_timeout"``, and the client gets a ``500`` (as nginx answers a
module's failure), or its connection is cut if the response had started.

The first of the classes :class:`tproxy.http.exchange.Exchange` is made of
(see :mod:`tproxy.http.body`; its ``.pxd`` declares the exchange's fields for
the compiled build): the state is the exchange's, see there.
"""

from twisted.logger import Logger

from tproxy.context import Response, ResponseHead
from tproxy.phase_resume import is_deferred

# (the exchange's lines, under its namespace)
log = Logger(namespace="tproxy.http.exchange")


class FilterChain(object):
    """The filter phases of an :class:`~tproxy.http.exchange.Exchange`'s
    response (``filter_chain``: the Deferred of the filter being awaited)."""

    def _filter_head(self, head, then):
        try:
            r = self.ctx.plugins.run_header_filter(self.ctx, head)
        except Exception:
            return self.plugin_error()
        if r is not None:
            self._await_head(r, head, then)
        else:
            then(head)

    def _await_head(self, d, head, then):
        """``header_filter`` answered with a Deferred ``d``: the upstream
        waits, and ``then(head)`` runs when it fires."""
        self._await_filter(d, "header_filter")
        d.addCallback(lambda _: then(head))
        d.addCallback(self._resume_upstream)
        d.addErrback(self.plugin_error)

    def _await_filter(self, d, phase):
        """Wait for ``d``, the Deferred of ``phase``'s walk: the upstream
        paused, for at most ``timeouts.read`` seconds."""
        if self.upstream is not None:
            self.upstream.pause_reading()
        self.filter_chain = d
        f = self.factory
        timer = f.clock.callLater(f.read_timeout, self._filter_timed_out, d, phase)
        d.addBoth(_stop, timer)

    def _resume_upstream(self, _=None):
        self.filter_chain = None
        up = self.upstream
        if up is not None and not self.done and not self.client_blocked:
            # (its silence while it was not read is not its own; a client
            # that does not read: client_drained resumes it)
            f = self.factory
            up.set_deadline(f.read_timeout if self.request_complete else f.send_timeout)
            up.resume_reading()

    def _filter_timed_out(self, d, phase):
        """``phase``'s walk (``d``) did not answer in ``timeouts.read``
        seconds (see the module docstring)."""
        if self.done:
            return
        ctx = self.ctx
        log.error("{phase} of plugin {plugin} did not answer within {timeout} s "
                  "(timeouts.read): {method} {uri}", phase=phase,
                  plugin=_awaited_plugin(ctx, phase), timeout=self.factory.read_timeout,
                  method=ctx.request.method, uri=ctx.request.uri)
        ctx.error = "plugin_timeout"
        self.response_close = True
        self._close_upstream()
        if self.response_started:
            self._abort_client()
            self.finish()
        else:
            # no filters: they are what failed
            error = Response.error(500, "internal error in a plugin")
            self._send_local_now(ResponseHead(500, error.headers), error.body)
        d.cancel()    # (the plugin's work, if it can be cancelled; its errback: done)

    def _filter_body(self, data, eof):
        if self.done:
            # (a failed filter leaves filter_chain set: queuing behind it
            # again would loop for ever)
            return
        if self.filter_chain is not None:
            # an earlier chunk is still being filtered: keep the order
            self.filter_chain.addCallback(lambda _: self._filter_body(data, eof))
            return
        if type(data) is not bytes:
            data = bytes(data)
        try:
            r = self.ctx.plugins.run_body_filter(self.ctx, data, eof)
        except Exception:
            return self.plugin_error()
        if type(r) is not bytes and is_deferred(r):
            self._await_filter(r, "body_filter")
            r.addCallback(self._send_filtered, eof)
            r.addCallback(self._resume_upstream)
            r.addErrback(self.plugin_error)
        else:
            if r and not self.done:
                # (_send_response_body inlined: once per upstream read)
                self.ctx.bytes_sent += len(r)
                out = self.out
                if self.response_chunked:
                    r = [b"%x\r\n" % len(r), r, b"\r\n"]
                    if out is not None:
                        out.extend(r)
                    else:
                        self.conn.write_all(r)
                elif out is not None:
                    out.append(r)
                else:
                    self.conn.write(r)
            if eof and not self.done:
                # (_end_response inlined)
                if self.response_chunked:
                    self.ctx.bytes_sent += 5
                    self._send(b"0\r\n\r\n")
                self.finish()

    def _send_filtered(self, data, eof):
        self._send_response_body(data)
        if eof:
            self._end_response()


def _stop(result, timer):
    """(A filter answered: its deadline is off.)"""
    if timer.active():
        timer.cancel()
    return result


def _awaited_plugin(ctx, phase):
    """The name of the plugin whose ``phase`` implementation ``ctx`` waits
    for (the walks of :mod:`tproxy.phase_walks` note it), or ``"?"``."""
    awaited = getattr(ctx, "_awaited", None)
    phases = getattr(ctx.gateway, "phases", None)
    if awaited is not None and phases is not None:
        for fn, name, _ in phases.impls.get(phase, ()):
            if fn is awaited:
                return name
    return "?"
