# -*- test-case-name: tests.test_stream -*-
"""
The TCP (L4) proxy: nginx's ``stream {}``, through tproxy's plugin phases.

Each entry of the configuration's ``streams`` list is a listener
(:class:`StreamFactory`) whose connections are piped, byte for byte, to a
peer of one registry group: the same groups as HTTP routes, static
``upstreams`` and run-time registrations alike (the TTL applies).

The life of one connection (the hooks are in :mod:`tproxy.hookspecs`)::

    accept                          a StreamContext (client and server address)
    stream_access(ctx)              every impl in order, until one refuses
                                    (returns False or bytes): the connection
                                    is closed (after those bytes)
    balancer(ctx, tried)            the HTTP hook, unchanged: the first Peer
                                    wins; peer.acquire(), connect (with the
                                    connect timeout); on failure or timeout
                                    peer.release() and ask again with the
                                    peer in ``tried``, up to ``tries`` peers
                                    (0: each peer once)
    [PROXY protocol header, if configured, then the bytes the client sent
     while the upstream was connecting, then the pipe, both ways]
    stream_log(ctx)                 every impl, exactly once, when both
                                    connections are closed

Client bytes that arrive before the upstream connection is ready are kept (up
to :data:`tproxy.stream.pipe.PENDING_LIMIT`; beyond it the client is not read
until then).

The pipe
--------
Each connection's reading side is registered as a streaming producer of the
other connection's transport: when a transport's write buffer passes
Twisted's ``bufferSize`` (64 KiB) the other side stops being read until it
drains, so a slow reader slows the writer down and memory per connection stays
at about two buffers per direction, however many bytes pass.

A FIN is forwarded as a FIN (``IHalfCloseableProtocol``): when the client
shuts down its writing side, the upstream connection's writing side is shut
down once the bytes before it are sent, and the reply keeps flowing back; the
same the other way.  When both sides have sent their FIN the connections
close.  (A client connection over TLS cannot be half-closed: the upstream's
FIN closes it, and the client's close, with or without ``close_notify``, is
its FIN: the upstream gets it after every byte before it, and what it
answers then is read and dropped.)  A reset on one side aborts the other; an upstream that closes (or
resets) has what it sent flushed to the client first.

The idle timeout counts from the last byte read on either side; when it
passes, both connections are closed (a FIN each way after what is
buffered, as nginx's ``proxy_timeout``: a client reads an end, not a
reset), and aborted if still open
:data:`~tproxy.stream.closing.IDLE_CLOSE_TIME` seconds later.  It also
bounds how long other closing connections may take to flush.  The peer's
``active`` count is taken when the connect attempt starts and released
exactly once, when the attempt fails or the upstream connection closes.

Why a connection ended is ``ctx.reason`` (see :class:`StreamContext`).

The modules
-----------
- :mod:`tproxy.stream.context`: :class:`StreamContext` and the values of
  ``ctx.reason``.
- :mod:`tproxy.stream.phases`: the hook implementations a listener runs
  and how ``stream_log`` is called (internal).
- :mod:`tproxy.stream.listener`: :class:`StreamFactory`, the listener.
- :mod:`tproxy.stream.session`: one connection from accept through the
  phases and the connect attempts to the pipe (internal).
- :mod:`tproxy.stream.closing`: how it ends: FINs, resets, the idle
  timeout, shutdown, then ``stream_log`` (internal).
- :mod:`tproxy.stream.pipe`: the pipe's backpressure (each reading side as
  the other side's producer) and the bound on early client bytes (internal).
- :mod:`tproxy.stream.upstream`: the upstream connect attempt and
  connection (internal).
"""

from tproxy.stream.context import (
    ACCESS_DENIED, BALANCER_REFUSED, CLIENT_CLOSED, CLIENT_RESET,
    CONNECT_FAILED, CONNECT_TIMEOUT, IDLE_TIMEOUT, NO_PEER, PLUGIN_ERROR,
    SHUTDOWN, UPSTREAM_CLOSED, UPSTREAM_RESET, StreamContext)
from tproxy.stream.listener import StreamFactory

# Public: the context plugins receive, the values of ``ctx.reason`` and the
# listener (what tproxy.tap and tproxy.testing build).  The sessions, the
# phase lists and the pipe are internals of the modules below.
__all__ = ["StreamContext", "StreamFactory", "CLIENT_CLOSED",
           "UPSTREAM_CLOSED", "CLIENT_RESET", "UPSTREAM_RESET", "IDLE_TIMEOUT",
           "CONNECT_FAILED", "CONNECT_TIMEOUT", "NO_PEER", "ACCESS_DENIED",
           "BALANCER_REFUSED", "PLUGIN_ERROR", "SHUTDOWN"]
