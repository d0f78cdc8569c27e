# -*- test-case-name: tests.test_tls -*-
"""
A TLS handshake held until the ``certificate`` hook has chosen
(:class:`tproxy.tls.ServerTLS`): the client's first bytes are kept
(:class:`HeldHandshake`) until its ClientHello is whole, its SNI name is
read from them (:func:`client_hello_sni`, without OpenSSL), and OpenSSL sees
them only once the hook knows that name.
"""

import re

from twisted.protocols.tls import BufferingTLSTransport

__all__ = ["HeldHandshake", "client_hello_sni", "MAX_HELLO"]

#: bytes of a ClientHello tproxy waits for to read its SNI name
MAX_HELLO = 16384 + 5
_LABEL = rb"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
#: an SNI name the ``certificate`` hook is asked about: a DNS host name
#: (RFC 6066 3: ASCII, no trailing dot), at most 253 bytes
_HOST_NAME = re.compile(_LABEL + rb"(?:\." + _LABEL + rb")*")


class HeldHandshake(BufferingTLSTransport):
    """A TLS server connection that lets OpenSSL see the handshake only once
    the ``certificate`` hook knows the client's SNI name."""

    _held = b""
    _waiting = False
    _lost = False

    def makeConnection(self, transport):
        # the ServerTLS whose connection this is (a reload may give the
        # factory another before the ClientHello has arrived)
        self.server_tls = self.factory.server_tls
        return BufferingTLSTransport.makeConnection(self, transport)

    def dataReceived(self, data):
        if self._held is None:
            return BufferingTLSTransport.dataReceived(self, data)
        self._held += data
        if self._waiting:
            return
        done, name = client_hello_sni(self._held)
        if not done and len(self._held) < MAX_HELLO:
            return
        peer = self.transport.getPeer()
        d = self.server_tls.resolve(name, getattr(peer, "host", None))
        if d is None:
            return self._release()
        self._waiting = True
        d.addCallback(lambda _: self._release())

    def _release(self):
        held, self._held = self._held, None
        if not self._lost:
            BufferingTLSTransport.dataReceived(self, held)

    def connectionLost(self, reason):
        self._lost = True
        return BufferingTLSTransport.connectionLost(self, reason)


def client_hello_sni(data):
    """
    The SNI name of a TLS ClientHello that begins ``data``.

    :return: ``(False, None)`` while more bytes are needed, else
        ``(True, name)``, ``name`` in lower case; ``None`` when there is
        none, when it is not a DNS host name (letters, digits, ``-``,
        ``_``, dots between labels), or when the bytes are not a
        ClientHello in one record (OpenSSL judges them).
    """
    if len(data) < 5:
        return False, None
    if data[0] != 22:
        return True, None
    end = 5 + int.from_bytes(data[3:5], "big")
    if len(data) < end:
        return False, None
    try:
        if data[5] != 1:
            return True, None
        hello_end = 9 + int.from_bytes(data[6:9], "big")
        if hello_end > end:
            return True, None
        p = 9 + 2 + 32
        p += 1 + data[p]                                  # session id
        p += 2 + int.from_bytes(data[p:p + 2], "big")     # cipher suites
        p += 1 + data[p]                                  # compression
        ext_end = min(p + 2 + int.from_bytes(data[p:p + 2], "big"), hello_end)
        p += 2
        while p + 4 <= ext_end:
            kind = int.from_bytes(data[p:p + 2], "big")
            size = int.from_bytes(data[p + 2:p + 4], "big")
            p += 4
            if kind == 0:
                q, stop = p + 2, p + size
                while q + 3 <= stop:
                    n = int.from_bytes(data[q + 1:q + 3], "big")
                    if data[q] == 0:
                        name = data[q + 3:q + 3 + n]
                        if n > 253 or not _HOST_NAME.fullmatch(name):
                            # not a host name (a path, a NUL, a newline...):
                            # served as a client sending none, never a hook's
                            return True, None
                        return True, name.decode("ascii").lower()
                    q += 3 + n
                return True, None
            p += size
    except IndexError:
        pass
    return True, None
