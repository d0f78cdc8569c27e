"""
TLS on both sides (:mod:`tproxy.tls`): real listeners on loopback, real
clients (Python's ``ssl`` module in a thread, curl when installed),
certificates made by the tests with cryptography's x509 builder.
"""

import datetime
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import threading
from types import SimpleNamespace

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, protocol, reactor, threads
from twisted.internet import ssl as tssl
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tproxy import hookimpl
from tproxy.config import ConfigError, validate_config
from tproxy.fastio import install_fast_write
from tproxy.plugins import build_plugin_manager
from tproxy.testing import Harness
from tproxy.tap import Options, makeService
from tproxy.tls import ServerTLS, check_tls, client_hello_sni
from tproxy.tls_listener import plain_head

from tests.helpers import (BodySource, ClockedReactor, ProxyTestCase, UpstreamServer,
                           capture_log, download, log_messages, temp_path, turns, until)

LOCAL = "tcp:0:interface=127.0.0.1"


# -- certificates ------------------------------------------------------------------

class CA(object):
    """
    A test certificate authority writing PEM files into ``directory``.

    Its key and certificate, and what :meth:`issue` and :meth:`pair` make,
    are the same for every test of a process (:func:`authority`): made and
    written once, not for each test (each test's own directory was five
    entries of trial's working directory, which the next run removes entry
    by entry before it starts).
    """

    def __init__(self, directory, name="tproxy test CA"):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._issued = {}
        self._pairs = {}
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = self.write("ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def write(self, name, data):
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def issue(self, *names):
        """PEM ``(cert, key)`` bytes for ``names`` (DNS names or IPs): the
        same bytes for the same names."""
        if names not in self._issued:
            self._issued[names] = self._issue(names)
        return self._issued[names]

    def _issue(self, names):
        import ipaddress
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        sans = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .sign(self.key, hashes.SHA256()))
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

    def pair(self, *names):
        """``{"cert": path, "key": path}`` for ``names`` (the same files for
        the same names)."""
        if names not in self._pairs:
            cert, key = self.issue(*names)
            base = "-".join(names).replace("*", "star")
            self._pairs[names] = {"cert": self.write(base + ".crt", cert),
                                  "key": self.write(base + ".key", key)}
        return dict(self._pairs[names])


_AUTHORITY = []


def authority():
    """This process's :class:`CA`, in trial's working directory."""
    if not _AUTHORITY:
        _AUTHORITY.append(CA(os.path.abspath("tests.test_tls.CA")))
    return _AUTHORITY[0]


class TestCA(object):
    """
    :func:`authority` for one test: its ``path``, ``cert``, :meth:`issue`
    and :meth:`pair`; :meth:`write` writes into a directory of the test's
    own, made when the test first writes.
    """

    def __init__(self, case):
        self._case = case
        self._directory = None
        shared = authority()
        self.path, self.cert, self.issue, self.pair = (
            shared.path, shared.cert, shared.issue, shared.pair)

    def write(self, name, data):
        if self._directory is None:
            self._directory = os.path.abspath(temp_path(self._case))
            os.makedirs(self._directory)
        path = os.path.join(self._directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


# -- clients -----------------------------------------------------------------------

def client_context(ca, alpn=("http/1.1",)):
    ctx = ssl.create_default_context(cafile=ca.path)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def https_get(port, server_name, ctx, paths=("/",)):
    """GET ``paths`` over one TLS connection (blocking: run it in a thread).
    :return: ``{"status", "body", "alpn", "cn"}`` per path."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(sock, server_hostname=server_name)
    try:
        cn = dict(x[0] for x in tls.getpeercert()["subject"]).get("commonName")
        out = []
        for path in paths:
            conn = http.client.HTTPConnection(server_name, port, timeout=10)
            conn.sock = tls
            conn.request("GET", path, headers={"Host": server_name})
            resp = conn.getresponse()
            out.append({"status": resp.status, "body": resp.read(),
                        "alpn": tls.selected_alpn_protocol(), "cn": cn})
        return out
    finally:
        tls.close()


def handshake(port, server_name, ctx):
    """Only the handshake: ``(common name, alpn)`` (blocking)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(sock, server_hostname=server_name)
    try:
        cn = dict(x[0] for x in tls.getpeercert()["subject"]).get("commonName")
        return cn, tls.selected_alpn_protocol()
    finally:
        tls.close()


class TLSTestCase(ProxyTestCase):
    """Starts tproxy (:func:`tproxy.tap.makeService`) with TLS settings."""

    def setUp(self):
        ProxyTestCase.setUp(self)
        self.ca = TestCA(self)
        self.service = None

    async def start(self, config, plugins=None, clock=None):
        """Start tproxy with ``config``; ``clock``: a
        :class:`~tests.helpers.ClockedReactor` for its timers (default: the
        real reactor's)."""
        cfg = {"listen": LOCAL, "admin": {"listen": LOCAL},
               "plugins": ["registry", "router", "least_conn"]}
        cfg.update(config)
        cfg = validate_config(cfg)
        pm = build_plugin_manager(cfg, entry_points=[])
        for p in plugins or ():
            pm.register(p)
        self.service = makeService(SimpleNamespace(config=cfg, plugin_manager=pm),
                                   reactor=clock if clock is not None else reactor)
        self.service.startService()
        self.addCleanup(self._stop)
        n = len(self.service.listeners)
        await until(lambda: len(self.service.ports) == n)
        self.ports = [p.getHost().port for p in self.service.ports]
        return self.service

    async def _stop(self):
        for _, _, f in self.service.listeners:
            if hasattr(f, "abort"):
                f.abort()
        await self.service.stopService()

    def upstream(self):
        up = UpstreamServer().listen()
        self.addCleanup(up.close)
        return up


# -- termination -------------------------------------------------------------------

class TerminationTests(TLSTestCase):

    async def test_httpsListenerBesidePlain(self):
        """``tls.listen``: an HTTPS listener beside the plain one; the
        upstream learns ``X-Forwarded-Proto: https``; ALPN is http/1.1."""
        up = self.upstream()
        await self.start({"tls": dict(self.ca.pair("api.test"), listen=LOCAL),
                          "upstreams": {"default": {"peers": [up.address]}}})
        names = [name for name, _, _ in self.service.listeners]
        self.assertEqual(names[:2], ["proxy", "HTTPS proxy"])
        [r] = await threads.deferToThread(
            https_get, self.ports[1], "api.test", client_context(self.ca, ("h2", "http/1.1")))
        self.assertEqual((r["status"], r["alpn"], r["cn"]), (200, "http/1.1", "api.test"))
        self.assertEqual(up.requests[0].header("X-Forwarded-Proto"), "https")

    async def plain_http_answered(self, plugins=()):
        """A plain HTTP request sent to a TLS listener (``http://`` for
        ``https://``) is answered ``400`` in plain HTTP, JSON, and the
        connection closed, as nginx's "The plain HTTP request was sent to
        HTTPS port"; nothing goes upstream, and TLS clients are served.
        The refusal is logged as any refused request (its ``log`` phase:
        the access log), and the close lingers: a client writing a large
        body before it reads gets the whole answer and the end of the
        stream, not a reset."""
        up = self.upstream()
        logged = LogRecorder()
        await self.start({"tls": dict(self.ca.pair("api.test"), listen=LOCAL),
                          "upstreams": {"default": {"peers": [up.address]}}},
                         plugins=tuple(plugins) + (logged,))
        size = 8 * 1024 * 1024     # far more than the socket buffers hold

        def plain(port):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            data = b""
            try:
                sock.sendall(b"POST /upload?to=a%%22b HTTP/1.1\r\nHost: api.test\r\n"
                             b"User-Agent: curl/8 \"x\"\r\n"
                             b"Content-Length: %d\r\n\r\n" % size)
                sock.sendall(b"x" * size)    # all of it before reading
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError as e:
                return "reset after %d bytes of the answer: %s" % (len(data), e)
            finally:
                sock.close()
            return data
        data = await threads.deferToThread(plain, self.ports[1])
        self.assertIsInstance(data, bytes, data)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 400 Bad Request")
        self.assertIn(b"Connection: close", lines)
        self.assertIn(b"Content-Type: application/json", lines)
        self.assertTrue(any(line.startswith(b"Date: ") for line in lines), lines)
        self.assertEqual(json.loads(body), {
            "error": "plain HTTP request sent to the HTTPS port"})
        self.assertEqual(up.requests, [])
        # (the log ran in the reactor turn that wrote the answer, before
        # the client could read its end)
        self.assertEqual(logged.seen, [(400, "bad_request", "127.0.0.1", len(data))])
        # what came, as nginx's lines show it (the access log's fields)
        self.assertEqual(logged.requests, [("POST", "/upload", "to=a%22b", "1.1",
                                            "api.test", 'curl/8 "x"')])
        [r] = await threads.deferToThread(
            https_get, self.ports[1], "api.test", client_context(self.ca))
        self.assertEqual(r["status"], 200)

    def test_plainHTTPOnTLSPort(self):
        return defer.ensureDeferred(self.plain_http_answered())

    def test_plainHTTPOnTLSPortHeld(self):
        """The same with a ``certificate`` hook (the handshake held for it)."""
        return defer.ensureDeferred(self.plain_http_answered(
            (CertificateOf(self.ca.issue("api.test")),)))

    async def test_tlsOnListen(self):
        """Without ``tls.listen``, ``listen`` itself speaks TLS; a client
        offering only h2 gets no ALPN answer (not a failed handshake)."""
        await self.start({"tls": self.ca.pair("api.test")})
        self.assertEqual(len(self.service.listeners), 2)
        cn, alpn = await threads.deferToThread(
            handshake, self.ports[0], "api.test", client_context(self.ca, ("h2",)))
        self.assertEqual((cn, alpn), ("api.test", None))

    async def test_protocolsAndCiphers(self):
        """TLS 1.1 and a CBC suite are refused; TLS 1.2 with AES-GCM works."""
        await self.start({"tls": self.ca.pair("api.test")})
        ctx = client_context(self.ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA")
        with self.assertRaises(ssl.SSLError):
            await threads.deferToThread(handshake, self.ports[0], "api.test", ctx)
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        cn, _ = await threads.deferToThread(handshake, self.ports[0], "api.test", ctx)
        self.assertEqual(cn, "api.test")
        ctx = client_context(self.ca)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with self.assertRaises(ssl.SSLError):
            await threads.deferToThread(handshake, self.ports[0], "api.test", ctx)

    async def test_sessionResumption(self):
        """A returning client resumes its TLS 1.2 session by ticket."""
        await self.start({"tls": self.ca.pair("api.test")})
        ctx = client_context(self.ca)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2

        def twice():
            reused = []
            session = None
            for _ in range(2):
                sock = socket.create_connection(("127.0.0.1", self.ports[0]), timeout=10)
                tls = ctx.wrap_socket(sock, server_hostname="api.test", session=session)
                reused.append(tls.session_reused)
                session = tls.session
                tls.close()
            return reused
        self.assertEqual(await threads.deferToThread(twice), [False, True])

    async def test_sniTable(self):
        """Exact names, then ``*.`` wildcards, then the default."""
        await self.start({"tls": dict(self.ca.pair("default.test"), sni={
            "api.test": self.ca.pair("api.test"),
            "*.apps.test": self.ca.pair("*.apps.test")})})
        port = self.ports[0]
        seen = []
        for name in ("api.test", "one.apps.test", "API.test"):
            cn, _ = await threads.deferToThread(handshake, port, name,
                                                client_context(self.ca))
            seen.append(cn)
        self.assertEqual(seen, ["api.test", "*.apps.test", "api.test"])
        ctx = client_context(self.ca)
        ctx.check_hostname = False
        cn, _ = await threads.deferToThread(handshake, port, "other.test", ctx)
        self.assertEqual(cn, "default.test")

    async def test_sslEndpointString(self):
        """The issue's case: an ``ssl:`` endpoint string with a combined PEM,
        and a client offering ALPN (which failed with ``internal error``)."""
        cert, key = self.ca.issue("api.test")
        both = self.ca.write("both.pem", key + cert)
        up = self.upstream()
        await self.start({"listen": "ssl:0:interface=127.0.0.1:privateKey=" + both,
                          "upstreams": {"default": {"peers": [up.address]}}})
        [r] = await threads.deferToThread(
            https_get, self.ports[0], "api.test", client_context(self.ca, ("h2", "http/1.1")))
        self.assertEqual((r["status"], r["alpn"]), (200, "http/1.1"))

    async def test_keepAliveAndFastWriteOff(self):
        """Several requests on one TLS connection; the write shortcut of
        :mod:`tproxy.fastio` is not installed on a TLS transport."""
        up = self.upstream()
        await self.start({"tls": self.ca.pair("api.test"),
                          "upstreams": {"default": {"peers": [up.address]}}})
        results = await threads.deferToThread(
            https_get, self.ports[0], "api.test", client_context(self.ca), ["/a", "/b", "/c"])
        self.assertEqual([r["status"] for r in results], [200, 200, 200])
        self.assertEqual([json.loads(r["body"])["uri"] for r in results], ["/a", "/b", "/c"])
        proxy = self.service.listeners[0][2]
        await until(lambda: proxy.open_connections == 0)

    async def test_fastWriteRefusesTLS(self):
        """install_fast_write leaves a TLS transport alone."""
        await self.start({"tls": self.ca.pair("api.test")})
        proxy = self.service.listeners[0][2]
        seen = threading.Event()
        d = threads.deferToThread(self._hold, self.ports[0], seen)
        await until(lambda: proxy.open_connections == 1)
        [p] = proxy.connections
        self.assertFalse(install_fast_write(p.transport))
        seen.set()
        await d

    def _hold(self, port, seen):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        tls = client_context(self.ca).wrap_socket(sock, server_hostname="api.test")
        seen.wait(10)   # a client thread waiting for the test (not the reactor)
        tls.close()

    async def test_streamTLS(self):
        """A ``streams`` listener with ``tls``: bytes decrypted, piped to the
        group's peer, the answer encrypted back."""
        up = self.upstream()
        await self.start({"streams": [{"listen": LOCAL, "group": "raw",
                                       "tls": self.ca.pair("raw.test")}],
                          "upstreams": {"raw": {"peers": [up.address]}}})
        port = self.ports[2]
        [r] = await threads.deferToThread(https_get, port, "raw.test",
                                          client_context(self.ca, ("h2", "http/1.1")),
                                          ["/over-stream"])
        self.assertEqual((r["status"], r["alpn"]), (200, None))
        self.assertEqual(json.loads(r["body"])["uri"], "/over-stream")
        self.assertIsNone(up.requests[0].header("X-Forwarded-Proto"))

    async def test_largeBodiesBothWays(self):
        """A 6 MB response and a 3 MB upload through TLS on both sides
        (backpressure through the TLS transports), byte for byte."""
        curl = shutil.which("curl")
        if curl is None:
            self.skipTest("curl is not installed")
        size = 6 * 1024 * 1024
        up = UpstreamServer(handler=download(size))
        up.acceptableProtocols = lambda: [b"http/1.1"]
        directlyProvides(up, IProtocolNegotiationFactory)
        cert, key = self.ca.issue("backend.test")
        up.listener = reactor.listenSSL(0, up, tssl.PrivateCertificate.loadPEM(cert + key).options(),
                                        interface="127.0.0.1")
        up.port = up.listener.getHost().port
        self.addCleanup(up.close)
        await self.start({"tls": self.ca.pair("api.test"), "upstreams": {"default": {
            "peers": [up.address], "tls": {"ca": self.ca.path, "server_name": "backend.test"}}}})
        port = self.ports[0]
        upload = self.ca.write("upload.bin", BodySource.BLOCK * 12)
        out, err, code = await getProcessOutputAndValue(curl, [
            "-sS", "--cacert", self.ca.path, "--resolve", "api.test:%d:127.0.0.1" % port,
            "--data-binary", "@" + upload, "https://api.test:%d/big" % port], env=os.environ)
        self.assertEqual((code, err), (0, b""))
        self.assertEqual((len(out), hashlib.sha256(out).hexdigest()),
                         (size, BodySource.digest(size)))
        self.assertEqual(up.requests[0].sha256.hexdigest(),
                         hashlib.sha256(BodySource.BLOCK * 12).hexdigest())

    async def test_curl(self):
        """curl, as a user runs it: --resolve, the CA, HTTP/1.1 over ALPN."""
        curl = shutil.which("curl")
        if curl is None:
            self.skipTest("curl is not installed")
        up = self.upstream()
        await self.start({"tls": self.ca.pair("api.test"),
                          "upstreams": {"default": {"peers": [up.address]}}})
        port = self.ports[0]
        out, err, code = await getProcessOutputAndValue(curl, [
            "-sS", "--cacert", self.ca.path, "--resolve", "api.test:%d:127.0.0.1" % port,
            "-o", "/dev/null", "-w", "%{http_code} %{http_version} %{ssl_verify_result}",
            "https://api.test:%d/x" % port], env=os.environ)
        self.assertEqual((code, out.decode(), err), (0, "200 1.1 0", b""))


# -- configuration errors ------------------------------------------------------------

class ConfigErrorTests(TLSTestCase):

    def check(self, tls):
        cfg = validate_config({"tls": tls})
        with self.assertRaises(ConfigError) as e:
            check_tls(cfg)
        return e.exception

    def test_missingFile(self):
        pair = self.ca.pair("api.test")
        e = self.check({"cert": pair["cert"], "key": pair["key"] + ".nope"})
        self.assertEqual(e.path, "tls")
        self.assertIn("cannot read " + pair["key"] + ".nope", e.problem)

    def test_sslListenFileGone(self):
        """An ``ssl:`` listener's files are read again when another
        configuration names it (tproxy.addresses.parse_endpoint keeps the
        answers for tcp: and unix: only): its key file gone, it is
        refused."""
        pair = self.ca.pair("gone.test")
        both = self.ca.write("gone-both.pem", open(pair["key"], "rb").read() +
                             open(pair["cert"], "rb").read())
        listen = "ssl:0:interface=127.0.0.1:privateKey=" + both
        self.assertEqual(validate_config({"listen": listen})["listen"], listen)
        os.remove(both)
        e = self.assertRaises(ConfigError, validate_config,
                              {"listen": listen, "workers": 1})
        self.assertEqual(e.path, "listen")

    def test_sslSettingsFileGone(self):
        """The same for a plugin's settings with an endpoint: checked again
        (tproxy.plugins keeps valid settings only where checking them reads
        nothing else)."""
        class Listens(object):
            settings_schema = {"type": "object", "properties": {
                "listen": {"type": "string", "format": "tproxy-endpoint"}}}

            def __init__(self, settings):
                self.settings = settings

            @hookimpl
            def init_worker(self, gateway):
                """A plugin implements a hook (one with none is refused)."""

        pair = self.ca.pair("gone2.test")
        both = self.ca.write("gone2-both.pem", open(pair["key"], "rb").read() +
                             open(pair["cert"], "rb").read())
        plugins = [{"name": Listens, "settings": {
            "listen": "ssl:0:interface=127.0.0.1:privateKey=" + both}}]
        Harness(plugins=plugins)
        os.remove(both)
        e = self.assertRaises(ConfigError, Harness, plugins=plugins)
        self.assertEqual(e.path, "plugins[0].settings.listen")

    def test_mismatchedKey(self):
        a, b = self.ca.pair("a.test"), self.ca.pair("b.test")
        e = self.check({"cert": a["cert"], "key": b["key"], "sni": {"x.test": a}})
        self.assertEqual((e.path, e.problem),
                         ("tls", "the key does not match the certificate " + a["cert"]))

    def test_badSniEntry(self):
        a = self.ca.pair("a.test")
        e = self.check({"cert": a["cert"], "key": a["key"],
                        "sni": {"x.test": {"cert": a["key"], "key": a["key"]}}})
        self.assertEqual(e.path, 'tls.sni["x.test"]')
        self.assertIn("is not a PEM certificate", e.problem)

    def test_twistdOneLine(self):
        """``twistd tproxy -c`` with a bad key: one line naming file and path."""
        a, b = self.ca.pair("a.test"), self.ca.pair("b.test")
        path = self.ca.write("conf.json", json.dumps(
            {"tls": {"cert": a["cert"], "key": b["key"]}}).encode())
        with self.assertRaises(SystemExit) as e:
            Options().parseOptions(["-c", path])
        self.assertEqual(str(e.exception.code),
                         "{}: tls: the key does not match the certificate {}".format(
                             path, a["cert"]))

    def test_badUpstreamCA(self):
        cfg = validate_config({"upstreams": {"api": {"peers": ["127.0.0.1:1"],
                                                     "tls": {"ca": "/nonexistent.pem"}}}})
        with self.assertRaises(ConfigError) as e:
            check_tls(cfg)
        self.assertEqual(e.exception.path, "upstreams.api.tls.ca")


# -- the certificate hook ---------------------------------------------------------------

class CertificateStore(object):
    """A plugin serving certificates from a dict, answering when the test says."""

    def __init__(self, ca, names):
        self.pairs = {n: ca.issue(n) for n in names}
        self.calls = []
        self.waiting = []

    @hookimpl
    def certificate(self, server_name, client_addr):
        self.calls.append((server_name, client_addr))
        d = defer.Deferred()
        self.waiting.append((d, self.pairs.get(server_name)))
        return d

    def answer(self):
        for d, pair in self.waiting:
            d.callback(pair)
        self.waiting = []


class CertificateHookTests(TLSTestCase):

    async def test_asyncHookCached(self):
        """The handshake waits for an async hook; the result is cached per
        name; ``None`` falls back to the static table."""
        store = CertificateStore(self.ca, ["dyn.test"])
        await self.start({"tls": dict(self.ca.pair("default.test"),
                                      sni={"static.test": self.ca.pair("static.test")})},
                         plugins=[store])
        port = self.ports[0]
        d = threads.deferToThread(handshake, port, "dyn.test", client_context(self.ca))
        await until(lambda: store.waiting)
        self.assertFalse(d.called)
        store.answer()
        self.assertEqual(await d, ("dyn.test", "http/1.1"))
        self.assertEqual(await threads.deferToThread(
            handshake, port, "dyn.test", client_context(self.ca)), ("dyn.test", "http/1.1"))
        self.assertEqual(store.calls, [("dyn.test", "127.0.0.1")])
        d = threads.deferToThread(handshake, port, "static.test", client_context(self.ca))
        await until(lambda: store.waiting)
        store.answer()
        self.assertEqual((await d)[0], "static.test")

    async def test_silentHookTimesOut(self):
        """A hook that never answers: after HOOK_TIMEOUT the static
        certificate serves (the wait is bounded by tproxy's clock: a fake
        one here, moved once the hook was called)."""
        from tproxy.tls import HOOK_TIMEOUT
        store = CertificateStore(self.ca, ["dyn.test"])
        clock = ClockedReactor()
        await self.start({"tls": self.ca.pair("dyn.test")}, plugins=[store], clock=clock)
        done = threads.deferToThread(handshake, self.ports[0], "dyn.test",
                                     client_context(self.ca))
        await until(lambda: store.calls, message="the hook to be called")
        clock.advance(HOOK_TIMEOUT - 2 ** -7)
        await turns()
        self.assertFalse(done.called)
        clock.advance(2 ** -7)
        cn, _ = await done
        self.assertEqual((cn, len(store.waiting)), ("dyn.test", 1))
        self.assertEqual(len(store.calls), 1)

    async def test_failingHookUsesStatic(self):
        """A hook that raises: logged, the static choice serves, not cached."""
        class Broken(object):
            calls = 0

            @hookimpl
            def certificate(self, server_name):
                Broken.calls += 1
                raise RuntimeError("store down")
        await self.start({"tls": self.ca.pair("api.test")}, plugins=[Broken()])
        for _ in range(2):
            cn, _ = await threads.deferToThread(handshake, self.ports[0], "api.test",
                                                client_context(self.ca))
            self.assertEqual(cn, "api.test")
        self.assertEqual(Broken.calls, 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class PlainHeadTests(SynchronousTestCase):
    """What the log of a plain request refused on a TLS port reads of it
    (:func:`tproxy.tls_listener.plain_head`): only what is well formed and
    visible ASCII, within the head limits."""

    def test_wellFormed(self):
        self.assertEqual(
            plain_head(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-E:\r\nUser-Agent: u v \r\n\r\n",
                       100, 100),
            (b"GET", b"/a?b=1", b"1.1", [(b"Host", b"x"), (b"X-E", b""),
                                         (b"User-Agent", b"u v")]))

    def test_fieldsUntilOneIsNot(self):
        """Header lines are read up to the first one that is not whole and
        well formed (a CTL, a bare LF, non-ASCII, cut by the read or by
        ``max_header``)."""
        line = b"GET / HTTP/1.1\r\n"
        for rest in (b"A: 1\r\nB: \x1b[2J\r\n", b"A: 1\r\nB: 2\n", b"A: 1\r\nB: \xe9\r\n",
                     b"A: 1\r\nB: 2", b"A: 1\r\nB\r\n"):
            self.assertEqual(plain_head(line + rest, 100, 100)[3], [(b"A", b"1")], rest)
        self.assertEqual(plain_head(line + b"A: 1\r\nB: 2\r\n", 100, 8)[3], [(b"A", b"1")])

    def test_noRequestLine(self):
        """A request line that is not well formed, or too long, gives
        nothing: the log then shows no method nor target."""
        for data in (b"GET /a\x00b HTTP/1.1\r\n", b"GET /a\nX HTTP/1.1\r\n",
                     b"GET /a b HTTP/1.1\r\n", b"GET /a HTTP/1.1\n", b"GET /a\r\n",
                     b"get /a HTTP/1.1\r\n", b"GET /\xe9 HTTP/1.1\r\n", b"GET /a HTTP/1.1",
                     b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n"):
            self.assertIsNone(plain_head(data, 100, 100), data)


class LogRecorder(object):
    """A plugin recording ``(status, error, client, bytes_sent)`` of each
    request's ``log`` phase."""

    def __init__(self):
        self.seen = []
        self.requests = []

    @hookimpl
    def log(self, ctx):
        self.seen.append((ctx.status, ctx.error, ctx.request.client_addr, ctx.bytes_sent))
        r = ctx.request
        self.requests.append((r.method, r.path, r.query, r.version, r.headers.get("host"),
                              r.headers.get("user-agent")))


class CertificateOf(object):
    """A plugin serving one certificate for every name, synchronously."""

    def __init__(self, pair):
        self.pair = pair
        self.calls = []

    @hookimpl
    def certificate(self, server_name):
        self.calls.append(server_name)
        return self.pair


def serial_of(port, server_name, ctx):
    """The serial number of the certificate served to ``server_name`` (blocking)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = ctx.wrap_socket(sock, server_hostname=server_name)
    try:
        return tls.getpeercert()["serialNumber"]
    finally:
        tls.close()


def serial(pem):
    """The serial number of a PEM certificate, as ``getpeercert()`` gives it."""
    text = "{:X}".format(x509.load_pem_x509_certificate(pem).serial_number)
    return "0" * (len(text) % 2) + text


class ReloadTests(TLSTestCase):
    """A reload (SIGHUP) loads the certificates again, as ``nginx -s reload``:
    files renewed at the same paths, changed ``tls`` settings, the
    ``certificate`` hook of the new plugins; the port stays open."""

    def setUp(self):
        TLSTestCase.setUp(self)
        self.events = capture_log(self)

    def renew(self, name, base):
        """New PEM files for ``name`` written at ``base``.crt/.key (a new
        key and serial each time): ``({"cert", "key"}, cert pem)``."""
        cert, key = authority()._issue((name,))
        return ({"cert": self.ca.write(base + ".crt", cert),
                 "key": self.ca.write(base + ".key", key)}, cert)

    async def reload(self, config, plugins=(), kept=True):
        """Reload ``config`` (over the defaults of :meth:`start`) written to a
        file, as SIGHUP does; ``plugins``: instances registered besides;
        ``kept``: check that the running listeners kept their ports."""
        cfg = {"listen": LOCAL, "admin": {"listen": LOCAL},
               "plugins": ["registry", "router", "least_conn"]}
        cfg.update(config)
        path = self.ca.write("conf.json", json.dumps(cfg).encode())
        reloader = self.service.reloader
        reloader.path, reloader.entry_points = path, []
        loaded = None
        if plugins:
            loaded = reloader._load()
            for p in plugins:
                loaded[1].register(p)
        ports = list(self.service.ports)
        result = await reloader.reload(loaded)
        if kept:
            # the listeners kept their ports: no connection refused meanwhile
            self.assertEqual(self.service.ports[:len(ports)], ports)
        return result

    def reload_lines(self):
        return log_messages(self.events, "tproxy.reload")

    async def serial(self, name="site.test", port=None):
        return await threads.deferToThread(serial_of, port or self.ports[0], name,
                                           client_context(self.ca))

    async def test_renewedFiles(self):
        """New files at the same paths: new handshakes get the new
        certificate after the reload, a connection open before it goes on
        with its own; the log says the TLS was reloaded."""
        up = self.upstream()
        pair, first = self.renew("site.test", "site")
        config = {"tls": pair, "upstreams": {"default": {"peers": [up.address]}}}
        await self.start(config)
        self.assertEqual(await self.serial(), serial(first))

        def connect():
            sock = socket.create_connection(("127.0.0.1", self.ports[0]), timeout=10)
            return client_context(self.ca).wrap_socket(sock, server_hostname="site.test")
        before = await threads.deferToThread(connect)
        self.addCleanup(before.close)
        _, second = self.renew("site.test", "site")
        self.assertTrue(await self.reload(config))
        self.assertEqual(await self.serial(), serial(second))

        def get():
            conn = http.client.HTTPConnection("site.test", timeout=10)
            conn.sock = before
            conn.request("GET", "/", headers={"Host": "site.test"})
            return conn.getresponse().status, before.getpeercert()["serialNumber"]
        self.assertEqual(await threads.deferToThread(get), (200, serial(first)))
        [line] = [m for m in self.reload_lines() if m.startswith("reloaded:")]
        self.assertIn("TLS certificates reloaded on {} (TLS) (proxy)".format(LOCAL), line)

    async def test_sslEndpointStringKept(self):
        """An ``ssl:`` endpoint string's listener is kept with the
        certificate Twisted read at its start: the reload line says so (and
        that a ``tls`` object reloads its files)."""
        cert, key = self.ca.issue("site.test")
        both = self.ca.write("ssl-both.pem", key + cert)
        config = {"listen": "ssl:0:interface=127.0.0.1:privateKey=" + both}
        await self.start(config)
        self.assertTrue(await self.reload(config))
        self.assertEqual(await self.serial(), serial(cert))
        [line] = [m for m in self.reload_lines() if m.startswith("reloaded:")]
        self.assertIn("the ssl: endpoint string keeps the certificate read at its start "
                      "(a tls object reloads its files) on " + config["listen"] + " (proxy)",
                      line)
        self.assertNotIn("TLS certificates reloaded", line)

    async def test_changedSettings(self):
        """Another default certificate and a new ``sni`` entry take effect
        (the listener was kept: before, a changed ``tls`` was ignored)."""
        first, _ = self.renew("site.test", "first")
        await self.start({"tls": first})
        second, second_pem = self.renew("site.test", "second")
        other, other_pem = self.renew("other.test", "other")
        self.assertTrue(await self.reload({"tls": dict(second, sni={"other.test": other})}))
        self.assertEqual(await self.serial(), serial(second_pem))
        self.assertEqual(await self.serial("other.test"), serial(other_pem))

    async def test_streamListener(self):
        """The same for a ``streams`` listener's ``tls``."""
        up = self.upstream()
        first, _ = self.renew("site.test", "stream")
        streams = [{"listen": LOCAL, "group": "default", "tls": first}]
        await self.start({"streams": streams,
                          "upstreams": {"default": {"peers": [up.address]}}})
        _, second = self.renew("site.test", "stream")
        self.assertTrue(await self.reload({"streams": streams, "upstreams": {
            "default": {"peers": [up.address]}}}))
        self.assertEqual(await self.serial(port=self.ports[2]), serial(second))

    async def test_hookOfNewPlugins(self):
        """The ``certificate`` hook of the new configuration's plugins serves,
        its cache empty (before, the retired plugin instance went on
        choosing); a hook removed by the reload no longer holds handshakes."""
        a, a_pem = self.renew("site.test", "a")
        b, b_pem = self.renew("site.test", "b")
        old = CertificateOf(self.ca.issue("site.test"))
        old.pair = (a_pem, open(a["key"], "rb").read())
        await self.start({"tls": self.ca.pair("default.test")}, plugins=[old])
        self.assertEqual(await self.serial(), serial(a_pem))
        new = CertificateOf((b_pem, open(b["key"], "rb").read()))
        self.assertTrue(await self.reload({"tls": self.ca.pair("default.test")},
                                          plugins=[new]))
        self.assertEqual(await self.serial(), serial(b_pem))
        self.assertEqual((old.calls, new.calls), (["site.test"], ["site.test"]))
        self.assertTrue(await self.reload({"tls": a}))
        self.assertEqual(await self.serial(), serial(a_pem))
        from tproxy.tls_hello import HeldHandshake
        [tls_factory] = self.service.listeners[0][1].endpoint.factories
        self.assertFalse(issubclass(tls_factory.protocol, HeldHandshake))

    async def test_unusableRefused(self):
        """A renewed key that does not match, or a missing file: the reload
        is refused with the start's one line, the running certificates
        serve on."""
        pair, first = self.renew("site.test", "site")
        await self.start({"tls": pair})
        with open(pair["key"], "rb") as f:
            key = f.read()
        other, _ = self.renew("site.test", "other")
        os.replace(other["key"], pair["key"])
        self.assertFalse(await self.reload({"tls": pair}))
        self.ca.write("site.key", key)
        missing = dict(pair, key=pair["key"] + ".gone")
        self.assertFalse(await self.reload({"tls": dict(pair, sni={"x.test": missing})}))
        conf = self.service.reloader.path
        self.assertEqual(self.reload_lines(), [
            "reload refused, the running configuration is kept: {}: tls: the key does not "
            "match the certificate {}".format(conf, pair["cert"]),
            "reload refused, the running configuration is kept: {}: tls.sni[\"x.test\"]: "
            "cannot read {}: No such file or directory".format(conf, missing["key"])])
        self.assertEqual(await self.serial(), serial(first))

    async def test_workersRefuseLikeOneProcess(self):
        """With workers, the parent loads the certificates before it starts
        new workers: an unusable one refuses the reload with the same line
        (the file's name included) as with one process.  (That the new
        workers serve renewed files is seen from outside: each loads them
        at its start.)"""
        from tproxy.supervised import _SupervisorReloader
        pair, _ = self.renew("site.test", "site")
        await self.start({"tls": pair})
        path = self.ca.write("conf.json", json.dumps(
            {"tls": dict(pair, key=pair["key"] + ".gone"), "workers": 2}).encode())
        self.service.reloader.path = path
        self.assertFalse(await _SupervisorReloader(None, self.service.reloader).reload())
        self.assertEqual(log_messages(self.events, "tproxy.supervisor"), [
            "reload refused, the running configuration is kept: {}: tls: cannot read {}: "
            "No such file or directory".format(path, pair["key"] + ".gone")])

    async def test_removedListenerCloses(self):
        """A TLS listener the new file no longer has stops listening (its
        port has the TLS factory, which wraps the listener's: it was left
        open, still answering handshakes)."""
        await self.start({"tls": dict(self.ca.pair("site.test"), listen=LOCAL)})
        https = self.service.ports[1]
        self.assertTrue(await self.reload({}, kept=False))
        self.assertNotIn(https, self.service.ports)
        # (a port stops listening in a later turn of the reactor)
        await until(lambda: not https.connected, message="the port to close")
        with self.assertRaises(ConnectionRefusedError):
            await self.serial(port=self.ports[1])

    async def test_plainToTLSNeedsRestart(self):
        """Turning the plain listener into a TLS one on the same endpoint is
        refused with a message saying a restart is needed (on a fixed port,
        not "port in use"; here, the same ``tcp:0`` string)."""
        await self.start({})
        self.assertFalse(await self.reload({"tls": self.ca.pair("site.test")}, kept=False))
        self.assertEqual(self.reload_lines(), [
            "reload refused, the running configuration is kept: {}: tls: the proxy on {} "
            "would turn to TLS: that needs a restart of tproxy".format(
                self.service.reloader.path, LOCAL)])


class ClientHelloTests(TLSTestCase):

    def hello(self, name):
        # (no CA certificates loaded: a ClientHello needs none, and loading
        # the system's takes ~20 ms of CPU)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        return outgoing.read()

    def test_name(self):
        data = self.hello("Api.Example.test")
        self.assertEqual(client_hello_sni(data), (True, "api.example.test"))
        self.assertEqual(client_hello_sni(data[:40]), (False, None))
        self.assertEqual(client_hello_sni(data[:3]), (False, None))

    def test_notAHostName(self):
        """A name that is not a DNS host name (a path, a NUL, a newline, a
        trailing dot, an empty label, over 253 bytes) is no name: the
        ``certificate`` hook, which may look it up in a store or log it,
        never sees it."""
        for bad in (b"../../etc/passw", b"a.test\x00.evil", b"a\nlog: forged", b"api.example.te.",
                    b"api..example.te", b"-api.example.te", b"api.\xe9xample.t", b"api example.tes"):
            good = b"q" * (len(bad) - 5) + b".test"
            data = self.hello(good.decode())
            self.assertEqual(client_hello_sni(data), (True, good.decode()))
            self.assertEqual(client_hello_sni(data.replace(good, bad)), (True, None), bad)
        long_name = ".".join(["a" * 63] * 4)
        self.assertEqual(client_hello_sni(self.hello(long_name[:253])), (True, long_name[:253]))
        self.assertEqual(client_hello_sni(self.hello(long_name[:253] + "b"))[1], None)
        self.assertEqual(client_hello_sni(self.hello("_srv.a-1.test")), (True, "_srv.a-1.test"))

    def test_noName(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing)
        with self.assertRaises(ssl.SSLWantReadError):
            obj.do_handshake()
        self.assertEqual(client_hello_sni(outgoing.read()), (True, None))

    def test_notTLS(self):
        self.assertEqual(client_hello_sni(b"GET / HTTP/1.1\r\n"), (True, None))

    def test_noHooksNoHolding(self):
        """Without a ``certificate`` implementation no handshake is held
        (on HTTP and ``streams`` listeners)."""
        from tproxy.tls_hello import HeldHandshake
        pair = self.ca.pair("a.test")
        for alpn in (None, ("http/1.1",)):
            factory = ServerTLS(pair, alpn=alpn).wrap(object(), reactor)
            self.assertFalse(issubclass(factory.protocol, HeldHandshake))


# -- origination -----------------------------------------------------------------------

class UpstreamTLSTests(TLSTestCase):

    def tls_upstream(self, *names):
        cert, key = self.ca.issue(*names)
        options = tssl.PrivateCertificate.loadPEM(cert + key).options()
        up = UpstreamServer()
        # (Twisted's ALPN callback fails the handshake of a factory naming
        # no protocol when the client offers ALPN, as tproxy does)
        up.acceptableProtocols = lambda: [b"http/1.1"]
        directlyProvides(up, IProtocolNegotiationFactory)
        up.listener = reactor.listenSSL(0, up, options, interface="127.0.0.1")
        up.port = up.listener.getHost().port
        self.addCleanup(up.close)
        return up

    def http_only_upstream(self):
        """A peer answering anything with a plain HTTP ``400``, as a web
        server does to a ClientHello (``python3 -m http.server``)."""
        class Answer(protocol.Protocol):
            def dataReceived(self, data):
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\n"
                                     b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.loseConnection()
        listener = reactor.listenTCP(0, protocol.Factory.forProtocol(Answer),
                                     interface="127.0.0.1")
        self.addCleanup(listener.stopListening)
        return "127.0.0.1:%d" % listener.getHost().port

    async def get(self, port, path="/"):
        out, err, code = await getProcessOutputAndValue(
            "curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}",
                     "http://127.0.0.1:%d%s" % (port, path)], env=os.environ)
        return int(out)

    def setUp(self):
        TLSTestCase.setUp(self)
        if shutil.which("curl") is None:
            self.skipTest("curl is not installed")

    async def test_verifiedPooled(self):
        """``"tls": {"ca", "server_name"}``: verified, SNI sent, and the
        connection kept alive for the next request."""
        up = self.tls_upstream("backend.test")
        await self.start({"upstreams": {"default": {
            "peers": [up.address], "tls": {"ca": self.ca.path, "server_name": "backend.test"}}}})
        self.assertEqual(await self.get(self.ports[0], "/a"), 200)
        self.assertEqual(await self.get(self.ports[0], "/b"), 200)
        self.assertEqual([r.uri for r in up.requests], ["/a", "/b"])
        self.assertEqual(len(up.connections), 1)
        sni = up.connections[0].transport.getHandle().get_servername()
        self.assertEqual(sni, b"backend.test")

    async def test_verificationFails(self):
        """A certificate for another name, one of an unknown CA, a peer
        answering in plain HTTP: 502,
        nothing sent upstream, and the log line of the peer's failure says
        what TLS said (as nginx's "upstream SSL certificate verify error"),
        a plain HTTP peer in the same words whatever the OpenSSL version."""
        events = capture_log(self)
        up = self.tls_upstream("other.test")
        plain = self.http_only_upstream()
        await self.start({"proxy": {"tries": 1}, "upstreams": {
            "default": {"peers": [up.address],
                        "tls": {"ca": self.ca.path, "server_name": "backend.test"}},
            "unknown": {"peers": [up.address], "tls": {"server_name": "other.test"}},
            "plain": {"peers": [plain], "tls": {"ca": self.ca.path}}}})
        for path, said in (("/", "TLS certificate does not name backend.test"),
                           ("/unknown/", "TLS handshake failed: certificate verify failed"),
                           ("/plain/", "TLS handshake failed: the peer does not speak TLS")):
            self.assertEqual(await self.get(self.ports[0], path), 502)
            [line] = [m for m in log_messages(events, "tproxy.health") if said in m]
            del events[:]
            self.assertIn("(error: " + said, line)
        self.assertEqual(up.requests, [])

    async def test_ipPeerAndUnverified(self):
        """A peer's own ``tls``: an IP address is verified as one; ``verify:
        false`` accepts any certificate; ``tls: false`` in a TLS group is plain."""
        up = self.tls_upstream("127.0.0.1")
        wrong = self.tls_upstream("other.test")
        plain = self.upstream()
        await self.start({"upstreams": {
            "ip": {"peers": [up.address], "tls": {"ca": self.ca.path}},
            "any": {"peers": [{"host": "127.0.0.1", "port": wrong.port,
                               "tls": {"verify": False}}]},
            "mixed": {"tls": True, "peers": [{"host": "127.0.0.1", "port": plain.port,
                                              "tls": False}]}}})
        for group, server in (("ip", up), ("any", wrong), ("mixed", plain)):
            self.assertEqual(await self.get(self.ports[0], "/%s/x" % group), 200, group)
            self.assertEqual(len(server.requests), 1, group)
