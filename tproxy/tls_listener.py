# -*- test-case-name: tests.test_tls -*-
"""
A TLS listener (:class:`TLSServerEndpoint`, :class:`TLSFactory`) whose
:class:`tproxy.tls.ServerTLS` (certificates, ``sni`` table, ``certificate``
hooks) a reload replaces while its port stays open: new handshakes get the
new one, connections already open keep theirs.
"""

import re

from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IStreamServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from tproxy.http.refusals import Stopped, bad_request
from tproxy.tls_hello import HeldHandshake

__all__ = ["TLSFactory", "TLSServerEndpoint", "HANDSHAKE_TIMEOUT"]

#: seconds a client of a ``streams`` TLS listener has to finish its
#: handshake (nginx's ``ssl_handshake_timeout`` of its ``stream`` module);
#: on an HTTP listener ``proxy.header_timeout`` covers the handshake
HANDSHAKE_TIMEOUT = 60.0

#: the error of a plain HTTP request sent to the TLS port
_PLAIN_HTTP_ERROR = "plain HTTP request sent to the HTTPS port"
_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
#: a plain request's line and header lines, as its refusal's log shows them:
#: well formed, visible ASCII (nothing a log must escape but quotes)
_REQUEST_LINE = re.compile(rb"([A-Z]" + _TCHAR + rb"*) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])\r\n")
_FIELD_LINE = re.compile(rb"(" + _TCHAR + rb"+):[ \t]*((?:[\x21-\x7e][\x20-\x7e]*)?)\r\n")


def plain_head(data, max_line, max_header):
    """
    ``(method, target, version, fields)`` (bytes, and ``(name, value)``
    pairs of bytes) of the plain HTTP request whose first bytes are
    ``data``, for the log of its refusal: its request line, if well formed
    and within ``max_line`` bytes (``None`` otherwise), and the header lines
    that follow it whole and well formed, within ``max_header`` bytes.
    """
    line = _REQUEST_LINE.match(data, 0, max_line + 64)
    if line is None:
        return None
    fields = []
    pos = line.end()
    end = min(len(data), pos + max_header)
    while True:
        field = _FIELD_LINE.match(data, pos, end)
        if field is None:
            break
        fields.append((field.group(1), field.group(2).rstrip(b" \t")))
        pos = field.end()
    return line.group(1), line.group(2), line.group(3), fields


class _PlainHead(Stopped):
    """The parser of a connection whose plain request was refused, for
    :func:`tproxy.http.refusals.refused_context`: it tells the request
    line's method and version (nothing more is parsed)."""

    def __init__(self, method, version):
        self.method = method
        self.version = version.decode("ascii")

    def get_method(self):
        return self.method

    def get_http_version(self):
        return self.version


class _PlainHTTPAnswered(object):
    """
    A TLS server connection of an HTTP listener that answers a client
    speaking plain HTTP to it (``http://`` for ``https://``) with a plain
    ``400`` and closes, as nginx's "The plain HTTP request was sent to HTTPS
    port", instead of closing without a word: a TLS client's first byte is a
    record type (22, a handshake), an HTTP request's a method's capital
    letter.  The request goes nowhere.

    The HTTP connection (the wrapped protocol) answers it as a request it
    cannot parse, over the TCP connection itself: the ``log`` phase runs
    (the access log writes it, ``ctx.error`` ``"bad_request"``, with the
    method, target, version and header fields that came in the first read,
    where well formed: :func:`plain_head`), and the
    connection closes lingering, reading and dropping the rest of the
    request (a large body sent before reading the answer is not cut by a
    reset).
    """

    _first = True

    def dataReceived(self, data):
        if self._first and data:
            self._first = False
            if 65 <= data[0] <= 90:   # A-Z: a request line, not a TLS record
                self._first = None
                conn = self.wrappedProtocol
                conn.transport = self.transport   # plain from now on
                f = conn.factory
                head = plain_head(data, f.max_line, f.max_header)
                if head is not None:
                    # its log shows what came (as nginx's lines), as if parsed
                    conn.head_start = f.seconds()
                    conn.url, conn.fields = head[1], head[3]
                    conn.parser = _PlainHead(head[0], head[2])
                bad_request(conn, 400, _PLAIN_HTTP_ERROR)
                return
        if self._first is None:
            # the rest of the plain request: read and dropped (and while
            # lingering, the sign the client is not silent)
            return self.wrappedProtocol.dataReceived(data)
        return super(_PlainHTTPAnswered, self).dataReceived(data)


class _PlainHTTPBuffering(_PlainHTTPAnswered, TLSMemoryBIOFactory.protocol):
    """TLS for an HTTP listener without ``certificate`` hooks."""


class _PlainHTTPHeld(_PlainHTTPAnswered, HeldHandshake):
    """TLS for an HTTP listener whose ``certificate`` hooks choose."""


class _StreamAfterHandshake(object):
    """
    A TLS server connection of a ``streams`` listener: the stream (the
    wrapped protocol) starts, and connects to its upstream, once the
    handshake is done, as in nginx's ``stream`` module.  A client whose
    handshake fails, or does not finish within :data:`HANDSHAKE_TIMEOUT`
    seconds, is closed without reaching the stream: no upstream connection,
    no ``stream_log``.
    """

    _timer = None
    _streaming = False

    def makeConnection(self, transport):
        self._connectWrapped = False
        self._timer = self.factory.clock.callLater(HANDSHAKE_TIMEOUT, self._handshake_timeout)
        # (an open connection of the listener's: a stop drains it too)
        handshakes = getattr(self.factory.wrappedFactory, "handshakes", None)
        if handshakes is not None:
            handshakes.add(self)
        return super(_StreamAfterHandshake, self).makeConnection(transport)

    def _checkHandshakeStatus(self):
        super(_StreamAfterHandshake, self)._checkHandshakeStatus()
        if self._handshakeDone and not self._streaming and not self._aborted:
            self._streaming = True
            self._stop_timer()
            self.wrappedProtocol.makeConnection(self)
            self._handshake_ended()

    def _handshake_ended(self):
        # (the stream's factory, StreamFactory, counts the handshakes open)
        ended = getattr(self.factory.wrappedFactory, "handshake_ended", None)
        if ended is not None:
            ended(self)

    def _handshake_timeout(self):
        self._timer = None
        self.transport.abortConnection()

    def _stop_timer(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def connectionLost(self, reason):
        self._stop_timer()
        if not self._streaming:
            self.wrappedProtocol = Protocol()   # (never connected: told nothing)
            self._handshake_ended()
        return super(_StreamAfterHandshake, self).connectionLost(reason)


class _StreamBuffering(_StreamAfterHandshake, TLSMemoryBIOFactory.protocol):
    """TLS for a ``streams`` listener without ``certificate`` hooks."""


class _StreamHeld(_StreamAfterHandshake, HeldHandshake):
    """TLS for a ``streams`` listener whose ``certificate`` hooks choose."""


class TLSFactory(TLSMemoryBIOFactory):
    """
    The TLS factory of a listener, serving with one :class:`tproxy.tls.ServerTLS` until
    :meth:`use` gives it another (a reload: the port stays open, new
    handshakes get the new certificates, open connections keep theirs).

    It leaves ALPN to :class:`tproxy.tls.ServerTLS`: before 26.x Twisted (25.5 on PyPy)
    sets its own ALPN callback from the wrapped factory's protocols, which
    fails the handshake of a client offering none of them.
    """

    def __init__(self, server_tls, factory, clock):
        # the connection creator is asked for each connection: it answers
        # from the ServerTLS of the moment (Twisted keeps its creator in an
        # attribute whose name differs between versions)
        TLSMemoryBIOFactory.__init__(self, _CurrentTLS(self), False, factory, clock)
        self.clock = clock
        self.use(server_tls)

    def use(self, server_tls):
        """Serve new connections with ``server_tls``; its ``certificate``
        hooks hold their handshakes (:class:`HeldHandshake`) when it has any."""
        server_tls.clock = self.clock
        self.server_tls = server_tls
        if server_tls.alpn:   # an HTTP listener
            self.protocol = _PlainHTTPHeld if server_tls.hooks else _PlainHTTPBuffering
        else:
            self.protocol = _StreamHeld if server_tls.hooks else _StreamBuffering

    def _applyProtocolNegotiation(self, connection):
        return None


@implementer(IOpenSSLServerConnectionCreator)
class _CurrentTLS(object):
    """The connection creator of a :class:`TLSFactory`: its ServerTLS now."""

    def __init__(self, factory):
        self.factory = factory

    def serverConnectionForTLS(self, tls_protocol):
        """A connection of the factory's current :class:`tproxy.tls.ServerTLS`."""
        return self.factory.server_tls.serverConnectionForTLS(tls_protocol)


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint(object):
    """A server endpoint whose connections speak TLS (``server_tls``)
    before they reach the factory listening on it."""

    def __init__(self, endpoint, server_tls, clock):
        self.endpoint = endpoint
        self.server_tls = server_tls
        self.clock = clock
        self.factories = []

    def listen(self, factory):
        """Listen on the wrapped endpoint, with TLS in front of ``factory``."""
        tls_factory = self.server_tls.wrap(factory, self.clock)
        self.factories.append(tls_factory)
        return self.endpoint.listen(tls_factory)

    def use(self, server_tls):
        """New handshakes on this endpoint's listener get ``server_tls``
        (a reload's, built from the new settings and plugins); connections
        already open keep the certificates they have."""
        self.server_tls = server_tls
        for tls_factory in self.factories:
            tls_factory.use(server_tls)
