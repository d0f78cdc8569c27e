"""The client-address rule shared by the proxy and the admin API (tproxy.trust)."""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.trust import TrustedProxies, UntrustworthyHeader


class ClientAddressTests(SynchronousTestCase):

    def setUp(self):
        self.trusted = TrustedProxies(["10.0.0.0/8", "::1"])

    def test_untrusted_peer(self):
        """An untrusted peer's forwarding headers are ignored."""
        self.assertEqual(self.trusted.client_address("192.0.2.1", "6.6.6.6", "7.7.7.7"),
                         "192.0.2.1")

    def test_real_ip_first(self):
        self.assertEqual(self.trusted.client_address("10.1.1.1", "203.0.113.5", "7.7.7.7"),
                         "203.0.113.5")

    def test_rightmost_untrusted_hop(self):
        """X-Forwarded-For: the rightmost address that is not a trusted proxy."""
        self.assertEqual(self.trusted.client_address(
            "10.1.1.1", None, "198.51.100.1, 203.0.113.9, 10.2.2.2"), "203.0.113.9")
        self.assertEqual(self.trusted.client_address("10.1.1.1", None, "10.3.3.3, 10.2.2.2"),
                         "10.3.3.3")

    def test_ipv4_mapped(self):
        """An IPv4-mapped IPv6 peer is matched as IPv4."""
        self.assertIn("::ffff:10.0.0.7", self.trusted)
        self.assertEqual(self.trusted.client_address("::ffff:10.0.0.7", "1.2.3.4"), "1.2.3.4")

    def test_garbage_from_trusted(self):
        """The entry a trusted proxy wrote itself is not an address: its
        header is not believed (the caller keeps the peer's address)."""
        e = self.assertRaises(UntrustworthyHeader, self.trusted.client_address,
                              "::1", None, "1.2.3.4, evil")
        self.assertEqual(e.header, "X-Forwarded-For")

    def test_garbageFromTheClient(self):
        """An entry that is not an address, left of what the trusted proxies
        wrote, is the client's: the address the last trusted proxy saw
        stands (as nginx's real_ip_recursive), not the proxy's own, which
        would let a denied client through ip_restriction."""
        self.assertEqual(self.trusted.client_address("10.1.1.1", None, "unknown, 1.2.3.4"),
                         "1.2.3.4")
        self.assertEqual(self.trusted.client_address(
            "10.1.1.1", None, "1.2.3.4, unknown, 198.51.100.7, 10.2.2.2"), "198.51.100.7")
        # left of trusted hops only: the leftmost trusted hop the chain reached
        self.assertEqual(self.trusted.client_address("10.1.1.1", None, "evil, 10.2.2.2"),
                         "10.2.2.2")

    def test_oneHeader(self):
        """``real_ip_header``: only the header named is believed, the other
        one ignored even when it is there (a proxy that appends to
        X-Forwarded-For and passes a client's X-Real-IP on)."""
        xff = TrustedProxies(["10.0.0.0/8"], "X-Forwarded-For")
        self.assertEqual(xff.client_address("10.1.1.1", "6.6.6.6", "203.0.113.9"),
                         "203.0.113.9")
        self.assertEqual(xff.client_address("10.1.1.1", "6.6.6.6"), "10.1.1.1")
        real = TrustedProxies(["10.0.0.0/8"], "X-Real-IP")
        self.assertEqual(real.client_address("10.1.1.1", "203.0.113.5", "7.7.7.7"),
                         "203.0.113.5")
        self.assertEqual(real.client_address("10.1.1.1", None, "7.7.7.7"), "10.1.1.1")

    def test_none_configured(self):
        self.assertFalse(TrustedProxies())
        self.assertNotIn("10.0.0.1", TrustedProxies())
