"""
How a stream session ends when its client connection is TLS (a listener
with ``tls``): a TLS connection cannot be half-closed, so the client's close
(with or without a ``close_notify``) stands for its FIN.  Real loopback
sockets: what is tested is what crosses them (a FIN or a reset upstream).
"""

import hashlib

from twisted.internet import defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from tests.helpers import turns, until
from tests import test_stream as base
from tests.test_stream import MiB, BackendConnection, pattern


class TLSCloseTests(base.StreamTestCase):
    """The client's close is forwarded as a FIN, after every byte it sent."""

    skip = getattr(base.TLSTests, "skip", None)

    tls_listener = base.TLSTests.tls_listener
    tls_connect = base.TLSTests.tls_connect

    async def upload_then_close(self, close, size=MiB):
        """A TLS client sends ``size`` bytes to a sink and closes at once
        (``close(client)``); the sink's connection and the logged context."""
        sink = self.backend("sink")
        listener = await self.tls_listener([sink])
        client = await self.tls_connect(listener)
        client.send(b"!")       # once it is through, the handshake is done
        await until(lambda: sink.connections and sink.connections[0].count,
                    message="the first byte upstream")
        for block in pattern(size):
            client.send(block)
        await close(client)
        await client.lost
        (ctx,) = await self.logged(listener)
        (conn,) = sink.connections
        await conn.closed
        return conn, ctx

    def assert_delivered(self, conn, ctx, size=MiB):
        # the upstream read every byte, then a FIN (no reset): it answered
        self.assertTrue(conn.eof)
        self.assertIsNotNone(conn.reason.check(ConnectionDone), conn.reason)
        h = hashlib.sha256(b"!")
        for block in pattern(size):
            h.update(block)
        self.assertEqual((conn.count, conn.sha.hexdigest()), (size + 1, h.hexdigest()))
        self.assertEqual((ctx.reason, ctx.error, ctx.status), ("client_closed", None, 200))
        self.assertEqual((ctx.bytes_received, ctx.upstream_bytes_sent), (size + 1, size + 1))
        # its answer came after the client had gone: read, never sent
        answer = b"%d %s\n" % (size + 1, h.hexdigest().encode())
        self.assertEqual((ctx.upstream_bytes_received, ctx.bytes_sent), (len(answer), 0))

    async def test_close_notify(self):
        """A close with ``close_notify``."""
        async def close(client):
            client.transport.loseConnection()
        conn, ctx = await self.upload_then_close(close)
        self.assert_delivered(conn, ctx)

    async def test_close_without_close_notify(self):
        """A TCP close with no ``close_notify`` (what many TLS clients do,
        redis-cli among them): a close too, as nginx counts it."""
        async def close(client):
            await turns(2)      # the TLS layer hands its last records to TCP
            client.transport.transport.loseConnection()
        conn, ctx = await self.upload_then_close(close)
        self.assert_delivered(conn, ctx)

    async def test_close_before_connect(self):
        """Bytes and the close that arrive while ``stream_access`` is awaited
        reach the upstream once it is connected."""
        sink = self.backend("sink")
        listener = await self.tls_listener([sink])
        gate = defer.Deferred()
        listener.recorder.fns["access"] = lambda ctx: gate
        client = await self.tls_connect(listener)
        client.send(b"SET k v\r\n")
        client.transport.loseConnection()
        await client.lost
        self.assertEqual(sink.connections, [])
        gate.callback(None)
        (ctx,) = await self.logged(listener)
        (conn,) = sink.connections
        await conn.closed
        self.assertTrue(conn.eof)
        self.assertEqual(conn.count, 9)
        self.assertEqual((ctx.reason, ctx.status), ("client_closed", 200))

    async def test_upstream_that_never_closes(self):
        """An upstream that ignores the FIN and goes on sending: what it
        sends after the client's close is nobody's, so it does not keep the
        session open past ``timeouts.idle`` (on a fake clock)."""
        talker = self.backend()
        talker.protocol = Talker
        talker.fin = defer.Deferred()
        listener = await self.tls_listener([talker])
        clock = listener.factory.clock = task.Clock()
        self.addCleanup(setattr, listener.factory, "clock", listener.factory.reactor)
        client = await self.tls_connect(listener)
        await client.wait_for(len(Talker.GREETING))
        client.transport.loseConnection()
        await client.lost
        await talker.fin                 # the client's close, as a FIN
        clock.advance(599)
        (up,) = talker.connections
        up.transport.write(Talker.GREETING)
        session = listener.session()
        await until(lambda: session.ctx.upstream_bytes_received == 2 * len(Talker.GREETING),
                    message="the upstream's bytes read")
        self.assertEqual(listener.logged, [])
        clock.advance(1)                 # 600 s after the last byte the client sent
        (ctx,) = await self.logged(listener)
        self.assertEqual((ctx.reason, ctx.status), ("idle_timeout", 200))
        self.assertEqual(ctx.bytes_sent, len(Talker.GREETING))
        self.assertTrue(session.upstream.gone)


@implementer(IHalfCloseableProtocol)
class Talker(BackendConnection):
    """An upstream connection that greets, then ignores the proxy's FIN."""

    GREETING = b"x" * 100000

    def connectionMade(self):
        BackendConnection.connectionMade(self)
        self.transport.write(self.GREETING)

    def readConnectionLost(self):
        self.eof = True
        self.factory.fin.callback(None)
