"""
CPU cost of one call and reply on the workers' control channel
(:mod:`tproxy.control`) over a real UNIX socket pair, both ends in this
process: what an exact box-wide count kept by the parent would add per
request (an acquire and a release: at least two such messages).
``python bench/tools/control_roundtrip.py [N]``
"""

import socket
import sys
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.protocol import Factory

from tproxy.control import ControlProtocol


class Counter(object):
    def __init__(self):
        self.counts = {}

    def control_acquire(self, message):
        key = message["peer"]
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    a, b = socket.socketpair()
    ends = []

    def factory(handler):
        f = Factory()
        f.buildProtocol = lambda addr: ends.append(ControlProtocol(handler)) or ends[-1]
        return f
    reactor.adoptStreamConnection(a.fileno(), socket.AF_UNIX, factory(object()))
    reactor.adoptStreamConnection(b.fileno(), socket.AF_UNIX, factory(Counter()))
    a.close()
    b.close()

    async def run():
        caller = ends[0]
        for _ in range(1000):
            await caller.call("acquire", peer="127.0.0.1:80")
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            await caller.call("acquire", peer="127.0.0.1:80")
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print("{} calls: {:.1f} us of CPU each (both ends), {:.1f} us wall each".format(
            n, cpu / n * 1e6, wall / n * 1e6))
        reactor.stop()
    reactor.callWhenRunning(lambda: ensureDeferred(run()))
    reactor.run()


if __name__ == "__main__":
    main()
