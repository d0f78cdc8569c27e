"""
The objects made per connection and per request store, at creation, every
attribute name they set later (``ProxyProtocol.__init__``,
``UpstreamProtocol.__init__``, ``Exchange.__init__``): CPython 3.11 keeps an
instance's values inline, its attribute reads and method calls specialised,
only for names its class's instances added while there was room, and each
instance made takes one from that room; a name first set later, once other
instances exist, gives every instance setting it a dict (see bench/README.md,
"Instance values kept inline").  These tests fail when a hot path sets a name
its class's ``__init__`` does not store.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy import compiled, hookimpl
from tproxy.http.connection import ProxyProtocol
from tproxy.http.upstream import UpstreamProtocol
from tproxy.testing import Harness, echo


class _Names(object):
    """Records the exchange's attribute names just after it was made (the
    ``rewrite`` phase: nothing set it yet but ``__init__``) and at ``log``."""

    def __init__(self):
        self.made = []
        self.ended = []

    @hookimpl(tryfirst=True)
    def rewrite(self, ctx):
        self.made.append(set(vars(ctx._exchange)))

    @hookimpl
    def log(self, ctx):
        self.ended.append(set(vars(ctx._exchange)))


class InitStoresEveryNameTests(SynchronousTestCase):
    """Keep-alive GETs and a POST, on two client connections: the names the
    connections, the pooled upstream connection and the exchanges have at
    the end are those their ``__init__`` stored (the pure-Python classes:
    the compiled ones keep their fields in C structures)."""

    if compiled.STATE == "on":
        skip = "the compiled classes are in use (tproxy.compiled)"

    def setUp(self):
        self.names = _Names()
        self.h = Harness(
            config={"upstreams": {"default": {"peers": ["127.0.0.1:9001"]}}},
            plugins=["router", "least_conn", self.names],
            servers={"127.0.0.1:9001": echo})
        self.conns = [self.h.connect(), self.h.connect()]
        for conn in self.conns:
            for _ in range(2):
                self.assertEqual(conn.request("GET", "/x").status, 200)
        self.assertEqual(self.conns[0].request("POST", "/x", body=b"abc").status, 200)

    def test_clientConnection(self):
        """The client connections set no name beyond ``__init__``'s."""
        stored = set(vars(ProxyProtocol()))
        self.assertLessEqual(len(stored), 29)   # (more cannot be kept inline)
        proxies = list(self.h.factory.connections)
        self.assertEqual(len(proxies), 2)
        for proxy in proxies:
            self.assertEqual(set(vars(proxy)) - stored, set())

    def test_upstreamConnection(self):
        """The pooled upstream connection sets no name beyond ``__init__``'s."""
        pool = self.h.factory.pool
        idle = [conn for conns in pool.idle.values() for conn in conns]
        self.assertTrue(idle)
        stored = set(vars(UpstreamProtocol(pool, idle[0].key)))
        self.assertLessEqual(len(stored), 29)
        for conn in idle:
            self.assertEqual(set(vars(conn)) - stored, set())

    def test_exchange(self):
        """A GET's exchange sets no name beyond ``__init__``'s."""
        self.assertEqual(len(self.names.ended), 5)
        made = self.names.made[0]
        self.assertLessEqual(len(made), 29)
        for ended in self.names.ended[:4]:   # (the GETs)
            self.assertEqual(ended - made, set())
