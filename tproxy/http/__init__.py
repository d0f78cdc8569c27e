"""
The HTTP/1.1 proxy: nginx's ``http {}`` with ``proxy_pass``, through
tproxy's plugin phases (the hooks are in :mod:`tproxy.hookspecs`).

The life of one request::

    read            the client connection (connection.ProxyProtocol) feeds
                    the parser; its callbacks (reader.RequestReader) check
                    the limits and, at the end of the head, read the target
                    (target.request_target) and sort the fields
                    (wire.scan_request_fields): a RequestContext and an
                    Exchange.  Requests pipelined behind it wait in the
                    connection's queue (reading pauses), answered in order.
    rewrite, access the phases (tproxy.phases) until one returns a Response
    balancer        a peer; peer.acquire()
    connect         the upstream pool (pool.UpstreamPool): an idle
                    keep-alive connection at once, or a new one
    send            UpstreamProtocol.start: the request head
                    (upstream_head.upstream_request_head), then the body
                    as it comes (body.RequestBody; kept for a retry within
                    proxy.retry_body_buffer)
    [a failure before the response started: the next peer, as nginx's
     proxy_next_upstream (exchange_failures.UpstreamFailures,
     retry.RetryPolicy)]
    header_filter   the response head, hop-by-hop fields removed
                    (response_fields.clean_response_fields; a head of 256
                    bytes or more read whole is cut from the read's bytes
                    instead, response_fields.clean_response_block, its lines passed on as
                    received); its Headers made only for a filter that
                    reads them (context._UpstreamResponseHead: fields no
                    filter changed go on as received); framed, a Date
                    added if it has none (dates.date_line), and written
                    (wire.response_head)
    body_filter     per chunk, streamed (response.ResponseSide); what one
                    upstream read makes leaves in one write
    release         the upstream connection back to its pool (or closed);
                    peer.release()
    log             exactly once, whatever happened (Exchange.finish); the
                    connection starts its next request, or closes

Who talks to whom: the :class:`~tproxy.http.exchange.Exchange` is the only
object that knows both connections, and each side talks to it through a few
methods: the client connection calls ``run``, ``client_body``,
``client_body_end``, ``client_full`` / ``client_drained`` (its transport's
backpressure), ``close_after``, ``client_lost``; the upstream connection calls
``upstream_connected``, ``upstream_reading`` / ``upstream_head`` /
``upstream_body`` / ``upstream_end`` / ``upstream_read_done``,
``upstream_writable``, ``upstream_lost``, ``upstream_timed_out``.  The
exchange answers through ``ProxyProtocol.write`` / ``write_all`` / ``pause``
/ ``unpause`` / ``abort`` / ``exchange_done`` and ``UpstreamProtocol.start``
/ ``send`` / ``set_deadline`` / ``pause_reading`` / ``release`` / ``abort``.

Requests refused before any plugin sees them (bad bytes, limits) are
answered by the connection itself (:mod:`tproxy.http.refusals`), with
:func:`tproxy.http.wire.error_response`.  ``Upgrade`` requests (WebSocket)
become a byte tunnel after a ``101`` (:mod:`tproxy.http.tunnel`: the
handshake; :mod:`tproxy.http.tunnel_pipe`: the bytes piped both ways).

The modules
-----------
- :mod:`tproxy.http.server`: :class:`~tproxy.http.server.ProxyFactory`, the
  listener: settings, the pool, draining.
- :mod:`tproxy.http.connection`: the client connection (keep-alive,
  pipelining, flow control, timeouts); :mod:`tproxy.http.closing` how it
  ends apart from its requests (the lingering close, the drain).
- :mod:`tproxy.http.reader`: its parsing side (limits, the request head).
- :mod:`tproxy.http.exchange`: one request's state machine (phases, peer
  attempts, the end); :mod:`tproxy.http.body` the request going up,
  :mod:`tproxy.http.response` the response coming down,
  :mod:`tproxy.http.filters` its filter phases,
  :mod:`tproxy.http.exchange_failures` a failed attempt (the next peer, or
  the 502 / 504).
- :mod:`tproxy.http.upstream`: an upstream connection,
  :mod:`tproxy.http.response_reader` how it reads a response head;
  :mod:`tproxy.http.pool`: their keep-alive pool per peer.
- :mod:`tproxy.http.wire`: the pure functions (fields, response heads,
  reasons, error answers); :mod:`tproxy.http.target`: the request target
  (path, query, absolute-form authority, dot segments);
  :mod:`tproxy.http.upstream_head`: the request head sent upstream;
  :mod:`tproxy.http.response_fields`: the response's fields cleaned of the
  hop-by-hop ones.
- :mod:`tproxy.http.parsing`: the parser in use (httptools, or
  :mod:`tproxy.http.pyparser`); :mod:`tproxy.http.headers`: ``Headers``.
- :mod:`tproxy.http.refusals`, :mod:`tproxy.http.retry`,
  :mod:`tproxy.http.tunnel`, :mod:`tproxy.http.tunnel_pipe`: as above.
"""
