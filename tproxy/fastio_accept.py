# -*- test-case-name: tests.test_fastio -*-
"""
The HTTP listener's accept loop, the other half of :mod:`tproxy.fastio`
(Twisted's private parts, read only where the fast paths are on):
:func:`fast_listener` makes a plain TCP listener accept with a loop of
tproxy's own (:func:`_accept`) and hand each connection a
:class:`~tproxy.fastio.FastServer` transport.
"""

import socket
from types import MethodType

from twisted.internet import tcp
from twisted.python import log

from tproxy import fastio
from tproxy.fastio import FastServer

__all__ = ["fast_listener"]

#: what :func:`_accept` reads of a ``tcp.Port`` and of its socket, there
_ACCEPT = (hasattr(socket.socket, "_accept")
           and all(hasattr(tcp.Port, name) for name in (
               "doRead", "_buildAddr", "addressFamily", "socketType", "sessionno")))


def _accept(self):
    """
    ``tcp.Port.doRead`` of a fast listener (:func:`fast_listener`): accept
    what is waiting (at most ``numberAccepts``, adapted as Twisted adapts
    it) and connect a protocol to each, as Twisted does, without what it
    does around each batch and each connection that serves no purpose
    here: a buffering logger made per batch, a generator, and
    ``socket.accept``'s conversion of the listening socket's family and type
    to enumerations.  Any error but "nothing more to accept" is left to
    Twisted's own ``doRead`` (which accepts again and handles ``EMFILE``,
    ``ECONNABORTED`` and the rest).
    """
    limit = self.numberAccepts
    accepted = 0
    try:
        accept = self.socket._accept
        family, kind = self.addressFamily, self.socketType
        factory, build_address, reactor = self.factory, self._buildAddr, self.reactor
        while accepted < limit:
            try:
                fd, addr = accept()
            except BlockingIOError:
                break
            except OSError:
                return tcp.Port.doRead(self)
            accepted += 1
            skt = socket.socket(family, kind, 0, fileno=fd)
            if len(addr) == 4:
                # IPv6: the numeric host with its scope, as Twisted gives it
                host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                addr = (host[0],) + addr[1:]
            protocol = factory.buildProtocol(build_address(addr))
            if protocol is None:
                skt.close()
                continue
            s = self.sessionno
            self.sessionno = s + 1
            protocol.makeConnection(self.transport(skt, protocol, addr, self, s, reactor))
    except BaseException:
        log.deferr()
    self.numberAccepts = limit + 20 if accepted == limit else max(1, accepted)


def fast_listener(port):
    """
    Make ``port`` accept with :func:`_accept`, and the connections it accepts
    from now on :class:`FastServer` transports, if it is a plain TCP
    listener (``tcp.Port`` accepting ``tcp.Server`` connections, not TLS)
    and the fast paths are on; set ``TCP_NODELAY`` on its socket (accepted
    sockets inherit it).

    :return: whether it did.
    """
    if (not fastio.ENABLED or type(port) is not tcp.Port
            or getattr(port, "transport", None) is not tcp.Server):
        return False
    try:
        port.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        return False
    port.transport = FastServer
    if _ACCEPT and hasattr(port, "numberAccepts"):
        port.doRead = MethodType(_accept, port)   # (a cycle: one per listener)
    return True
