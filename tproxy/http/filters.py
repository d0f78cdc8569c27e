# -*- test-case-name: tests.test_proxy_streaming,tests.test_phases -*-
"""
The ``header_filter`` and ``body_filter`` chain of a response: run
synchronously, or awaited with the upstream paused (a Deferred or a
coroutine answer), the body's chunks kept in order behind a filter that has
not answered yet.

The first of the classes :class:`tproxy.http.exchange.Exchange` is made of
(see :mod:`tproxy.http.body`; its ``.pxd`` declares the exchange's fields for
the compiled build): the state is the exchange's, see there.
"""

from tproxy.phase_resume import is_deferred


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
        if self.upstream is not None:
            self.upstream.pause_reading()
        self.filter_chain = d
        d.addCallback(lambda _: then(head))
        d.addCallback(self._resume_upstream)
        d.addErrback(self.plugin_error)

    def _resume_upstream(self, _=None):
        self.filter_chain = None
        if self.upstream is not None and not self.done:
            self.upstream.resume_reading()

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
            if self.upstream is not None:
                self.upstream.pause_reading()
            self.filter_chain = r
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
