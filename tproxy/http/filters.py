# -*- test-case-name: tests.test_proxy_streaming,tests.test_phases -*-
"""
The ``header_filter`` and ``body_filter`` chain of a response: run
synchronously, or awaited with the upstream paused (a Deferred or a
coroutine answer), the body's chunks kept in order behind a filter that has
not answered yet; and the deadline of every awaited phase.

An awaited walk -- ``rewrite`` and ``access`` (together), ``balancer``,
``header_filter``, a ``body_filter`` call -- has ``timeouts.read`` seconds
to answer, as the upstream has to send its next bytes.  While a filter is
awaited the upstream is not read, so its own deadline does not judge it
(:meth:`~tproxy.http.exchange_failures.UpstreamFailures.upstream_timed_out`),
and is set anew when reading resumes.  Past the deadline an error line
names the phase and the plugin, ``ctx.error`` is ``"plugin_timeout"``, and
the client gets a ``500`` (as nginx answers a module's failure), or its
connection is cut if the response had started.  However the request ends
meanwhile (that deadline, the client gone, a shutdown), the walk's Deferred
is cancelled (:meth:`~tproxy.http.exchange.Exchange.finish`): the plugin's
work, if it can be cancelled.

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
    response, and the deadline of its awaited phases (``filter_chain``: the
    Deferred of the walk being awaited, a filter's or another phase's)."""

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
        self._await(d, (phase,))

    def _await(self, d, phases):
        """Wait for ``d``, the Deferred of the walk of ``phases`` (one, or
        ``rewrite`` and ``access``), for at most ``timeouts.read`` seconds
        (``filter_chain``: ``d``; :meth:`finish` cancels it)."""
        self.filter_chain = d
        f = self.factory
        timer = f.clock.callLater(f.read_timeout, self._phase_timed_out, phases)
        d.addBoth(_stop, timer)

    def _await_phase(self, d, phases, then):
        """The walk of ``rewrite`` and ``access``, or of ``balancer``,
        answered with a Deferred ``d``: ``then(result)`` runs when it fires,
        within ``timeouts.read`` seconds."""
        self._await(d, phases)
        d.addCallbacks(self._phase_answered, self.plugin_error, (then,))

    def _phase_answered(self, r, then):
        self.filter_chain = None
        if not self.done:
            then(r)

    def _resume_upstream(self, _=None):
        self.filter_chain = None
        up = self.upstream
        if up is not None and not self.done and not self.client_blocked:
            # (its silence while it was not read is not its own; a client
            # that does not read: client_drained resumes it)
            f = self.factory
            up.set_deadline(f.read_timeout if self.request_complete else f.send_timeout)
            up.resume_reading()

    def _phase_timed_out(self, phases):
        """The walk of ``phases`` (``filter_chain``) did not answer in
        ``timeouts.read`` seconds (see the module docstring)."""
        if self.done:
            return
        ctx = self.ctx
        phase, plugin = _awaited_plugin(ctx, self.phases, phases)
        log.error("{phase} of plugin {plugin} did not answer within {timeout} s "
                  "(timeouts.read): {method} {uri}", phase=phase, plugin=plugin,
                  timeout=self.factory.read_timeout,
                  method=ctx.request.method, uri=ctx.request.uri)
        ctx.error = "plugin_timeout"
        self.response_close = True
        self._close_upstream()
        if self.response_started:
            self._abort_client()
            self.finish()
        else:
            # no filters: a plugin is what failed
            error = Response.error(500, "internal error in a plugin")
            self._send_local_now(ResponseHead(500, error.headers), error.body)
        # (finish cancelled the walk's Deferred: the plugin's work, if it
        # can be cancelled; the errback ends in plugin_error, done by then)

    def _filter_body(self, data, eof):
        if self.done:
            # (a failed filter leaves filter_chain set: queuing behind it
            # again would loop for ever)
            return
        if self.filter_chain is not None:
            # an earlier chunk is still being filtered: keep the order
            # (a module function, not a lambda: the compiled method makes no
            # closure per call)
            self.filter_chain.addCallback(_filter_later, self, data, eof)
            return
        if type(data) is not bytes:
            data = bytes(data)
        try:
            # (the route's phases, as the response side holds them: called
            # for an upstream's response, after the balancer)
            r = self.plugins.run_body_filter(self.ctx, data, eof)
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

    def finish(self):
        """Release everything and run ``log``: exactly once.  The exchange's
        (:meth:`tproxy.http.exchange.Exchange.finish`), declared on this
        first class so that the compiled response side calls it in C."""
        raise NotImplementedError()


def _filter_later(_, chain, data, eof):
    """(An earlier chunk was filtered: ``data`` now.)"""
    chain._filter_body(data, eof)


def _stop(result, timer):
    """(A filter answered: its deadline is off.)"""
    if timer.active():
        timer.cancel()
    return result


def _awaited_plugin(ctx, phases, names):
    """``(phase, plugin)``: the phase among ``names`` and the name of the
    plugin whose implementation ``ctx`` waits for (the walks of
    :mod:`tproxy.phase_walks` note it), or ``(names[0], "?")``."""
    awaited = getattr(ctx, "_awaited", None)
    impls = getattr(phases, "impls", None)
    if awaited is not None and impls is not None:
        for phase in names:
            for fn, name, _ in impls.get(phase, ()):
                if fn is awaited:
                    return phase, name
    return names[0], "?"
