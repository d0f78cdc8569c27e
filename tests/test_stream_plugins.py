"""
Which plugins a stream listener runs (docs/streams.md, "The life of a
connection"): one enabled for some routes only runs for the streams whose
``group`` is one of them.  On the fake clock (:mod:`tproxy.testing`).
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy import hookimpl
from tproxy.testing import StreamHarness, StreamServer

UP = "127.0.0.1:7001"


class Deny(object):
    """``stream_access`` refuses every connection with a Redis error."""

    def __init__(self, settings=None):
        pass

    @hookimpl
    def stream_access(self, ctx):
        return b"-ERR no\r\n"


def harness(routes):
    return StreamHarness(
        config={"upstreams": {"db": {"peers": [UP]}, "other": {"peers": [UP]}}},
        stream={"group": "db"},
        plugins=[{"name": Deny, "routes": routes}, "least_conn"],
        servers={UP: StreamServer(echo=True)})


class RouteScopeTests(SynchronousTestCase):

    def test_enabled_for_the_group(self):
        h = harness(["other", "db"])
        client = h.connect()
        self.assertEqual(client.received, b"-ERR no\r\n")
        self.assertTrue(client.closed)
        self.assertEqual(h.logged[0].reason, "access_denied")

    def test_enabled_for_other_routes(self):
        h = harness(["other"])
        client = h.connect()
        client.send(b"PING\r\n")
        self.assertEqual(client.received, b"PING\r\n")    # piped, echoed back
        self.assertFalse(client.closed)
