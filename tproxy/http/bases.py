# -*- test-case-name: tests.test_proxy -*-
"""
The first bases of the listener's factory and of both connections: what the
exchange and the connections call on each other and read on every request,
declared at the root of the request path's modules.

The compiled build (:mod:`tproxy.compiled`) makes them extension types
(``bases.pxd``), and the exchange and the client connection hold each other
and the factory typed as these: a read of a limit, a timeout, the pool or
the clock is a read of a C structure, and a call of the methods below a C
call, not a lookup by name (~150 instructions each on CPython 3.11, with the
call's own cost on top).  The modules that define the classes import these
(the compiled ones cannot import each other both ways).  Pure Python (PyPy,
``TPROXY_COMPILED=0``) has plain base classes.
"""


class ListenerFields(object):
    """
    The first base of :class:`~tproxy.http.server.ProxyFactory`, which
    sets the fields (their meaning: there).  ``seconds`` is the clock's
    ``seconds``, looked up once.
    """


class ClientConnection(object):
    """
    What an :class:`~tproxy.http.exchange.Exchange` calls on its client
    connection (:class:`~tproxy.http.connection.ProxyProtocol`, which
    implements it).
    """

    def write(self, data):
        """Write response bytes to the client."""
        raise NotImplementedError()

    def write_all(self, seq):
        """Write a list of pieces of response bytes to the client."""
        raise NotImplementedError()

    def can_keep_alive(self):
        """Whether the connection may serve another request after this one."""
        raise NotImplementedError()

    def exchange_done(self, ex):
        """``ex`` finished (its ``log`` ran)."""
        raise NotImplementedError()

    def pause(self, reason):
        """Stop reading from the client while ``reason`` holds."""
        raise NotImplementedError()

    def unpause(self, reason):
        """``reason`` no longer holds."""
        raise NotImplementedError()


class UpstreamConnection(object):
    """
    What an :class:`~tproxy.http.exchange.Exchange` calls on its upstream
    connection (:class:`~tproxy.http.upstream.UpstreamProtocol`, which
    implements it).
    """

    def start(self, exchange, head_only, data, timeout):
        """Send the request head (and body if known) for ``exchange``."""
        raise NotImplementedError()

    def send(self, data, timeout):
        """Send more of the request."""
        raise NotImplementedError()

    def release(self):
        """The exchange is over and the connection is clean."""
        raise NotImplementedError()

    def abort(self):
        """Drop the connection."""
        raise NotImplementedError()
