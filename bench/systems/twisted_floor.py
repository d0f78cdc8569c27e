"""
The floor of a Twisted proxy on this machine: a relay that parses nothing.

Each client connection gets one upstream connection; every read from the
client sends one fixed request upstream, every upstream read goes back to the
client as it is.  It runs on tproxy's reactor (``tproxy.reactor``) and fast
write path (``tproxy.fastio``), so the difference between it and tproxy is
tproxy's own per-request Python work.  Not a proxy: a measuring stick.

    taskset -c 0 python bench/systems/twisted_floor.py [PORT] [UPSTREAM_PORT]
    taskset -c 1 wrk -t1 -c32 -d5s http://127.0.0.1:18600/
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tproxy.reactor  # noqa: E402

tproxy.reactor.install()

from twisted.internet import protocol, reactor  # noqa: E402

from tproxy.fastio import install_fast_write  # noqa: E402

REQUEST = b"GET /x HTTP/1.1\r\nHost: backend\r\n\r\n"
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 18600
UPSTREAM = int(sys.argv[2]) if len(sys.argv) > 2 else 19000


class Upstream(protocol.Protocol):
    def __init__(self, client):
        self.client = client

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        install_fast_write(self.transport)
        self.client.upstream = self
        if self.client.waiting:
            self.client.waiting = False
            self.transport.write(REQUEST)

    def dataReceived(self, data):
        self.client.transport.write(data)


class Client(protocol.Protocol):
    upstream = None
    waiting = False

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        install_fast_write(self.transport)
        factory = protocol.ClientFactory()
        factory.buildProtocol = lambda addr: Upstream(self)
        reactor.connectTCP("127.0.0.1", UPSTREAM, factory)

    def dataReceived(self, data):
        if self.upstream is None:
            self.waiting = True
        else:
            self.upstream.transport.write(REQUEST)

    def connectionLost(self, reason):
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


if __name__ == "__main__":
    reactor.listenTCP(PORT, protocol.Factory.forProtocol(Client), interface="127.0.0.1",
                      backlog=1024)
    reactor.run()
