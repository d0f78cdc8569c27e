"""
Tests for :mod:`tproxy.control`: the parent-worker control channel, over
in-memory transports (``twisted.test.iosim``).
"""

from twisted.internet.defer import Deferred
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import TestCase

from tproxy.control import ChannelClosed, ControlProtocol


class Handler(object):
    """Serves ``echo`` (at once), ``later`` (a Deferred), ``boom`` (fails);
    records notices and the channel's end."""

    def __init__(self):
        self.notices = []
        self.lost = []
        self.connected = []
        self.pending = Deferred()

    def control_connected(self, protocol):
        self.connected.append(protocol)

    def control_echo(self, message):
        return {"got": message["value"]}

    def control_later(self, message):
        return self.pending

    def control_boom(self, message):
        raise ValueError("no luck")

    def control_note(self, message):
        self.notices.append(message["n"])

    def control_lost(self, reason):
        self.lost.append(reason)


def pair():
    """``(a, b, a's handler, b's handler, pump)``."""
    ha, hb = Handler(), Handler()
    b, a, pump = connectedServerAndClient(lambda: ControlProtocol(ha),
                                          lambda: ControlProtocol(hb))
    return a, b, ha, hb, pump


class ControlProtocolTests(TestCase):

    def test_connected(self):
        """Each handler hears of its end of the channel once it is up."""
        a, b, ha, hb, pump = pair()
        self.assertEqual((ha.connected, hb.connected), ([a], [b]))

    def test_call(self):
        """A call is answered with the handler's result."""
        a, b, ha, hb, pump = pair()
        d = a.call("echo", value=[1, "x"])
        self.assertNoResult(d)
        pump.flush()
        self.assertEqual(self.successResultOf(d), {"got": [1, "x"]})

    def test_callEncoded(self):
        """A call whose fields are already JSON text (one encoding for many
        channels) is the same call."""
        a, b, ha, hb, pump = pair()
        d1 = a.call_encoded("echo", '{"value": [1, 2]}')
        d2 = a.call_encoded("later", "{}")
        pump.flush()
        self.assertEqual(self.successResultOf(d1), {"got": [1, 2]})
        hb.pending.callback("done")
        pump.flush()
        self.assertEqual(self.successResultOf(d2), "done")

    def test_deferredResult(self):
        """A handler may answer later, with a Deferred."""
        a, b, ha, hb, pump = pair()
        d = a.call("later")
        pump.flush()
        self.assertNoResult(d)
        hb.pending.callback(7)
        pump.flush()
        self.assertEqual(self.successResultOf(d), 7)

    def test_failure(self):
        """A failing handler's message reaches the caller; it is logged there."""
        a, b, ha, hb, pump = pair()
        d = a.call("boom")
        pump.flush()
        self.assertEqual(str(self.failureResultOf(d, RuntimeError).value), "no luck")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unknown(self):
        """An operation the other side does not serve fails the call."""
        a, b, ha, hb, pump = pair()
        d = a.call("nope")
        pump.flush()
        self.assertIn("unknown operation 'nope'",
                      str(self.failureResultOf(d, RuntimeError).value))

    def test_notices(self):
        """Notices arrive in order, with no reply."""
        a, b, ha, hb, pump = pair()
        for n in range(3):
            a.notify("note", n=n)
        pump.flush()
        self.assertEqual(hb.notices, [0, 1, 2])

    def test_closed(self):
        """Calls waiting when the channel closes fail; later ones at once;
        both handlers hear of the end."""
        a, b, ha, hb, pump = pair()
        d = a.call("later")
        pump.flush()
        a.transport.loseConnection()
        pump.flush()
        self.failureResultOf(d, ChannelClosed)
        self.failureResultOf(a.call("echo", value=1), ChannelClosed)
        self.assertEqual((len(ha.lost), len(hb.lost)), (1, 1))

    def test_unreadable(self):
        """A frame that is not a JSON message is dropped and logged; the
        channel goes on."""
        a, b, ha, hb, pump = pair()
        a.sendString(b"\xff not json")
        d = a.call("echo", value=2)
        pump.flush()
        self.assertEqual(self.successResultOf(d), {"got": 2})


class NonBlockingTests(TestCase):
    """:func:`tproxy.control.nonblocking`: adopting an inherited socket
    leaves it non-blocking, in every process sharing it (PyPy's
    ``socket.fromfd`` would clear the shared flag)."""

    def test_adoptedPortStaysNonBlocking(self):
        import fcntl
        import os
        import socket

        from twisted.internet import reactor
        from twisted.internet.protocol import Factory

        from tproxy.control import nonblocking

        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(("127.0.0.1", 0))
        held.listen(5)
        held.setblocking(False)
        port = nonblocking(reactor.adoptStreamPort, held.fileno(), socket.AF_INET, Factory())
        self.addCleanup(port.stopListening)
        flags = fcntl.fcntl(held.fileno(), fcntl.F_GETFL)
        self.assertTrue(flags & os.O_NONBLOCK)
        self.assertEqual(socket.getdefaulttimeout(), None)
