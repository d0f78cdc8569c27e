"""
A backend that answers every request 200 after a fixed delay, on several
ports (one process): what least-connections balances when requests take
time.  ``python bench/tools/delay_backend.py --delay 0.02 19101 19102 ...``
"""

import argparse

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

BODY = b"x" * 100
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n"
            % len(BODY)) + BODY


class Delayed(Protocol):
    """Answers each request head (pipelining aside) after ``delay`` seconds."""

    def connectionMade(self):
        self.buf = b""

    def dataReceived(self, data):
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            reactor.callLater(self.factory.delay, self.answer)

    def answer(self):
        if self.transport.connected:
            self.transport.write(RESPONSE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    factory = Factory.forProtocol(Delayed)
    factory.delay = args.delay
    for port in args.ports:
        reactor.listenTCP(port, factory, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
