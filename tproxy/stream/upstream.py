# -*- test-case-name: tests.test_stream -*-
"""
The upstream side of a stream session: one connect attempt
(:class:`_UpstreamConnector`) and the connection it makes
(:class:`_UpstreamProtocol`), both reporting to the session.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, Protocol
from zope.interface import implementer


class _UpstreamConnector(ClientFactory):
    """One connect attempt of a :class:`StreamSession`."""

    noisy = False

    def __init__(self, session):
        self.session = session

    def buildProtocol(self, addr):
        p = _UpstreamProtocol()
        p.session = self.session
        return p

    def clientConnectionFailed(self, connector, reason):
        self.session._connect_failed(reason)


@implementer(IHalfCloseableProtocol)
class _UpstreamProtocol(Protocol):
    """The upstream side of a :class:`StreamSession`: reports to it."""

    session = None
    gone = False

    def connectionMade(self):
        self.session._upstream_connected(self)

    def dataReceived(self, data):
        # replaced by the session's _upstream_data once connected
        self.session._upstream_data(data)

    def readConnectionLost(self):
        self.session._upstream_eof()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.gone = True
        if self.session.upstream is self:
            self.session._upstream_lost(reason)
