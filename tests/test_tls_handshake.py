"""
The TLS handshake as a client sees it, without sockets: tproxy's TLS
listener (:mod:`tproxy.tls_listener`) on a
:class:`~twisted.internet.testing.StringTransport` and a fake clock, a
client of Python's ``ssl`` module on memory BIOs, so every byte exchanged
is the test's to give or hold back.  What a ``streams`` listener does before
and after the handshake, the suites tproxy negotiates, and the errors of
unusable keys; and, on a real socket and tproxy's fake clock, an HTTP
listener's stalled handshake.
"""

import datetime
import socket
import ssl
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import threads
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tproxy import hookimpl
from tproxy.config import ConfigError, validate_config
from tproxy.plugins import build_plugin_manager
from tproxy.stream.listener import StreamFactory
from tproxy.tls import CIPHERS, ServerTLS, check_tls, context_from_pem
from tproxy.tls_listener import HANDSHAKE_TIMEOUT

from tests.helpers import ClockedReactor, rsa_key, turns, until
from tests.test_tls import TLSTestCase, authority

ADDRESS = IPv4Address("TCP", "127.0.0.1", 40000)


class Recorder(Protocol):
    """The stream behind TLS: records what reaches it."""

    def __init__(self, events):
        self.events = events

    def connectionMade(self):
        self.events.append("made")

    def dataReceived(self, data):
        self.events.append(data)

    def connectionLost(self, reason):
        self.events.append("lost")


class Client(object):
    """A TLS client on memory BIOs, talking to one server protocol on a
    StringTransport."""

    def __init__(self, server, name, cafile=None, ciphers=None, key_kind=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cafile)
        if ciphers is not None:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(ciphers)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=name)
        self.server = server
        self.transport = StringTransport()
        server.makeConnection(self.transport)

    def pump(self):
        """Exchange bytes until neither side has more: ``True`` once the
        client's handshake is done."""
        for _ in range(10):
            try:
                self.tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            sent = self.outgoing.read()
            if sent:
                self.server.dataReceived(sent)
            answer = self.transport.value()
            self.transport.clear()
            if answer:
                self.incoming.write(answer)
            if not sent and not answer:
                return done
        raise AssertionError("the handshake does not end")


def client_hello(name):
    """The bytes of a TLS ClientHello for ``name``."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_bio(
        ssl.MemoryBIO(), outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        return outgoing.read()
    raise AssertionError("a handshake without a server")


def stream_listener(pair, clock, events, plugins=()):
    """A ``streams`` TLS listener's factory (``pair``: cert and key files)
    in front of a :class:`Recorder`."""
    pm = None
    if plugins:
        pm = build_plugin_manager(validate_config({}), entry_points=[])
        for p in plugins:
            pm.register(p)
    server_tls = ServerTLS(pair, "streams[0].tls", pm)
    return server_tls.wrap(Factory.forProtocol(lambda: Recorder(events)), clock)


class StaticHook(object):
    """A ``certificate`` hook that answers ``None`` (the static choice) at once."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def certificate(self, server_name):
        self.calls.append(server_name)


class StreamHandshakeTests(SynchronousTestCase):
    """A ``streams`` TLS listener starts the stream, which connects to the
    upstream, once the handshake is done (nginx's ``stream`` module); a
    client that never finishes it, or fails it, never reaches the stream."""

    def setUp(self):
        self.ca = authority()
        self.clock = Clock()
        self.events = []

    def connect(self, plugins=()):
        factory = stream_listener(self.ca.pair("raw.test"), self.clock, self.events, plugins)
        return factory, factory.buildProtocol(ADDRESS)

    def test_streamAfterHandshake(self):
        for plugins in ((), (StaticHook(),)):
            del self.events[:]
            factory, server = self.connect(plugins)
            client = Client(server, "raw.test", cafile=self.ca.path)
            self.assertEqual(self.events, [])
            self.assertTrue(client.pump())
            self.assertEqual(self.events, ["made"])
            client.tls.write(b"PING\r\n")
            server.dataReceived(client.outgoing.read())
            self.assertEqual(self.events, ["made", b"PING\r\n"])
            # the handshake's timer is gone with the handshake
            self.assertEqual(self.clock.getDelayedCalls(), [])
            server.connectionLost(None)
            self.assertEqual(self.events[-1], "lost")

    def test_handshakeTimeout(self):
        """Half a ClientHello, then silence: cut after HANDSHAKE_TIMEOUT,
        the stream never told."""
        factory, server = self.connect()
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(client_hello("raw.test")[:40])
        self.clock.advance(HANDSHAKE_TIMEOUT - 2 ** -7)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(2 ** -7)
        self.assertTrue(transport.disconnecting)
        server.connectionLost(None)
        self.assertEqual(self.events, [])
        self.assertEqual(factory.protocols, {})

    def test_stopDrainsHandshakes(self):
        """A stop counts a client still in its handshake as an open
        connection: the drain waits for it (else its stream would start,
        and connect upstream, after the stop); the stop's abort closes it."""
        gateway = SimpleNamespace(
            reactor=self.clock, plugins=build_plugin_manager(validate_config({}), entry_points=[]))
        streams = StreamFactory(gateway, {"group": "default"})
        server = ServerTLS(self.ca.pair("raw.test"), "streams[0].tls").wrap(
            streams, self.clock).buildProtocol(ADDRESS)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(client_hello("raw.test")[:40])
        self.assertEqual(streams.open_connections, 1)
        drained = streams.drain()
        self.assertNoResult(drained)
        self.assertEqual(streams.abort(), 1)
        self.assertTrue(transport.disconnecting)
        server.connectionLost(Failure(ConnectionLost()))
        self.successResultOf(drained)
        self.assertEqual((streams.open_connections, self.events), (0, []))

    def test_failedHandshake(self):
        """Plain text to the TLS port: the connection closes, the stream
        (and its upstream) never hears of it, no timer is left."""
        factory, server = self.connect()
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: raw.test\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        server.connectionLost(None)
        self.assertEqual(self.events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


def stalled_client(port, hello):
    """Connect, send ``hello`` and read until the server closes (blocking:
    run it in a thread): what it read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(hello)
        got = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return got
            if not data:
                return got
            got += data
    finally:
        sock.close()


class HTTPHandshakeTests(TLSTestCase):
    """On an HTTP listener ``proxy.header_timeout`` covers the handshake
    (nginx's ``client_header_timeout`` does): a client stalled in it is
    closed, its connection released."""

    async def test_stalledHandshakeClosed(self):
        clock = ClockedReactor()
        await self.start({"tls": self.ca.pair("api.test"), "proxy": {"header_timeout": 5}},
                         clock=clock)
        factory = self.service.ports[0].factory
        done = threads.deferToThread(stalled_client, self.ports[0],
                                     client_hello("api.test")[:40])
        await until(lambda: factory.protocols, message="the connection")
        clock.advance(5 - 2 ** -7)
        await turns()
        self.assertFalse(done.called)
        clock.advance(2 ** -7)
        self.assertEqual(await done, b"")
        await until(lambda: not factory.protocols, message="the connection released")


def rsa_pair(ca, name):
    """PEM ``(cert, key)`` of an RSA-2048 certificate for ``name`` signed by
    ``ca`` (the key: :func:`tests.helpers.rsa_key`)."""
    key = rsa_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


class CipherTests(SynchronousTestCase):
    """Every TLS 1.2 suite tproxy lists (:data:`tproxy.tls.CIPHERS`) is one
    a client limited to it gets, with an RSA or an ECDSA certificate as the
    suite says: none is listed that OpenSSL would never choose (scanners
    report the listed ones)."""

    def test_everySuiteNegotiates(self):
        ca = authority()
        pems = {"ECDSA": ca.issue("ec.test"), "RSA": rsa_pair(ca, "rsa.test")}
        # one context of each kind, as a listener has one for all its
        # connections (reading an RSA key costs ~30 ms: its check)
        contexts = {kind: context_from_pem(*pem) for kind, pem in pems.items()}
        suites = CIPHERS.split(":")
        self.assertTrue(suites)
        for suite in suites:
            kind = "ECDSA" if "ECDSA" in suite else "RSA"
            conn = _server(contexts[kind])
            client = Client(conn, "x.test", ciphers=suite)
            self.assertTrue(client.pump(), suite)
            self.assertEqual(client.tls.cipher()[0], suite)


@implementer(IOpenSSLServerConnectionCreator)
class OneContext(object):
    """Server connections on one ``OpenSSL.SSL.Context``."""

    def __init__(self, ctx):
        self.ctx = ctx

    def serverConnectionForTLS(self, protocol):
        conn = SSL.Connection(self.ctx, None)
        conn.set_app_data(protocol)
        return conn


def _server(ctx):
    """A server-side TLS protocol on ``ctx`` alone (no listener)."""
    factory = TLSMemoryBIOFactory(OneContext(ctx), False, Factory.forProtocol(Protocol))
    return factory.buildProtocol(ADDRESS)


class KeyErrorTests(SynchronousTestCase):
    """An unusable key file of its own is named in the error, not its
    certificate's file."""

    def test_encryptedKey(self):
        ca = authority()
        pair = ca.pair("enc.test")
        key = serialization.load_pem_private_key(open(pair["key"], "rb").read(), None)
        encrypted = ca.write("enc.test-encrypted.key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret")))
        with self.assertRaises(ConfigError) as e:
            check_tls(validate_config({"tls": {"cert": pair["cert"], "key": encrypted}}))
        self.assertEqual(e.exception.path, "tls")
        self.assertTrue(e.exception.problem.startswith(
            "the key {} is not a usable PEM private key (".format(encrypted)), e.exception.problem)
        self.assertIn("encrypted", e.exception.problem)

    def test_combinedFileWithoutKey(self):
        ca = authority()
        pair = ca.pair("nokey.test")
        with self.assertRaises(ConfigError) as e:
            check_tls(validate_config({"tls": {"cert": pair["cert"]}}))
        self.assertTrue(e.exception.problem.startswith(
            "the certificate {} has no usable PEM private key (".format(pair["cert"])))

