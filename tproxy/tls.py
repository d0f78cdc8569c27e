# -*- test-case-name: tests.test_tls -*-
"""
TLS on both sides of the proxy.

Termination (the ``tls`` object of the configuration, and of a ``streams``
entry)::

    "tls": {"cert": "/etc/tproxy/site.pem", "key": "/etc/tproxy/site.key",
            "sni": {"api.example.com": {"cert": "...", "key": "..."},
                    "*.example.org":   {"cert": "...", "key": "..."}}}

``cert`` is a PEM file holding the certificate and, after it, its chain;
``key`` a PEM private key (default: the ``cert`` file, for a combined PEM).
The certificate is chosen at the handshake, from the client's SNI name:

1. the ``certificate(server_name, client_addr)`` hook (when some plugin
   implements it; its result is cached per name, see :class:`ServerTLS`);
2. the ``sni`` table: the exact name, then ``*.`` + the name without its
   first label;
3. ``cert`` / ``key``, the default (also for clients that send no name).

HTTP listeners negotiate ALPN ``http/1.1`` (a client offering only other
protocols gets no ALPN answer, as from nginx without HTTP/2); ``streams``
listeners ignore ALPN.  TLS 1.2 is the minimum version; the ciphers are
the ECDHE suites of Mozilla's "intermediate" list (:data:`CIPHERS`).

Origination (``"tls"`` of an ``upstreams`` group or peer): see
:mod:`tproxy.tls_upstream`.
"""

import collections
import json

from OpenSSL import SSL, crypto
from twisted.internet import ssl as tssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from tproxy.config import ConfigError
from tproxy.phase_resume import _awaitable
from tproxy.phases import _adapt
from tproxy.tls_hello import client_hello_sni
from tproxy.tls_listener import TLSFactory

__all__ = ["ServerTLS", "CertificateError", "check_tls", "tls_specs",
           "load_pair", "context_from_pem", "client_hello_sni", "HTTP_ALPN", "CIPHERS"]

log = Logger()

#: the ALPN protocol of HTTP listeners
HTTP_ALPN = (b"http/1.1",)

#: names whose ``certificate`` hook result is kept (least recently used
#: names are forgotten beyond this)
CACHE_SIZE = 4096

#: the TLS 1.2 ciphers: the ECDHE suites of Mozilla's "intermediate" list
#: (Kong's and many nginx setups' default): forward secrecy and AEAD only
#: (TLS 1.3 suites are OpenSSL's, all AEAD).  Not its DHE-RSA suites: OpenSSL
#: 3 negotiates them only with DH parameters configured (nginx's
#: ``ssl_dhparam``), which tproxy does not take (scanners report a listed
#: suite as offered)
CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")

#: seconds the handshakes of a name wait for the ``certificate`` hook before
#: the static choice serves them (the hook's answer is still cached)
HOOK_TIMEOUT = 10.0


class CertificateError(ValueError):
    """A certificate or key that cannot be used (the message says why)."""


# ---------------------------------------------------------------------------
# certificates and keys
# ---------------------------------------------------------------------------

def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertificateError("cannot read {}: {}".format(path, e.strerror or e))


def context_from_pem(cert_pem, key_pem, alpn=None, what="the certificate", key_what=None):
    """
    An ``OpenSSL.SSL.Context`` serving the certificate chain ``cert_pem``
    (the leaf first) with the private key ``key_pem`` (both PEM, ``bytes``
    or ``str``).

    :param alpn: the ALPN protocols to select from (``None``: no ALPN).
    :param what: the certificate, as errors name it.
    :param key_what: the key, as errors name it, when it is a file of its
        own (``None``: ``what`` holds it).
    :raises CertificateError: when either cannot be parsed or they do not
        belong together.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    if isinstance(cert_pem, str):
        cert_pem = cert_pem.encode("ascii")
    if isinstance(key_pem, str):
        key_pem = key_pem.encode("ascii")
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertificateError("{} is not a PEM certificate".format(what))
    try:
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError) as e:
        reason = str(e).split("\n")[0] or type(e).__name__
        if key_what is not None:
            raise CertificateError("{} is not a usable PEM private key ({})".format(
                key_what, reason))
        raise CertificateError("{} has no usable PEM private key ({})".format(what, reason))
    chain = [crypto.X509.from_cryptography(c) for c in certs]
    options = tssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key), certificate=chain[0],
        extraCertChain=chain[1:], raiseMinimumTo=tssl.TLSVersion.TLSv1_2,
        acceptableCiphers=_ciphers(),
        # resumption by RFC 5077 tickets, keys random per process (nginx's
        # default ssl_session_tickets on): a returning client skips the
        # full handshake
        enableSessionTickets=True)
    try:
        ctx = options.getContext()
        ctx.check_privatekey()
    except SSL.Error:
        raise CertificateError("the key does not match {}".format(what))
    # always ours: Twisted's own callback fails the handshake (an "internal
    # error" alert) when the listening factory names no protocol
    ctx.set_alpn_select_callback(_alpn_select(alpn or ()))
    return ctx


_CIPHERS = []


def _ciphers():
    if not _CIPHERS:
        _CIPHERS.append(tssl.AcceptableCiphers.fromOpenSSLCipherString(CIPHERS))
    return _CIPHERS[0]


def load_pair(spec, path, alpn=None):
    """
    The context of one ``{"cert": ..., "key": ...}`` object of the
    configuration at JSON path ``path``.

    :raises ConfigError: naming ``path`` and the problem.
    """
    cert = spec["cert"]
    key = spec.get("key") or cert
    try:
        return context_from_pem(_read(cert), _read(key), alpn,
                                what="the certificate {}".format(cert),
                                key_what="the key {}".format(key) if key != cert else None)
    except CertificateError as e:
        raise ConfigError((path, str(e)))


def _alpn_select(protocols):
    def select(conn, offered):
        for p in protocols:
            if p in offered:
                return p
        return SSL.NO_OVERLAPPING_PROTOCOLS
    return select


# ---------------------------------------------------------------------------
# termination
# ---------------------------------------------------------------------------

@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS(object):
    """
    The TLS side of one listener: its default certificate, its ``sni`` table
    and the ``certificate`` hook.

    The hook may be asynchronous, but OpenSSL asks for the certificate from
    a synchronous callback.  So tproxy holds the client's first bytes
    (:class:`tproxy.tls_hello.HeldHandshake`) until the ClientHello has arrived, reads its
    SNI name, awaits the hook when the name is not cached yet, and only then
    lets OpenSSL see the handshake: the first client of a name waits for the
    hook (as nginx's ``ssl_certificate_by_lua`` yields), later ones do not.
    A result (a certificate, or ``None``: the static choice) is cached per
    name, at most :data:`CACHE_SIZE` names; a hook that fails is logged and
    the static choice serves that handshake (the next one asks again); so
    it does when the hook has not answered within :data:`HOOK_TIMEOUT`
    seconds.

    :param spec: the validated ``tls`` object.
    :param path: its JSON path (for errors).
    :param plugin_manager: where the ``certificate`` implementations are
        (``None``: none).
    :param alpn: the ALPN protocols offered (``None``: ALPN is ignored).
    :raises ConfigError: for a certificate or key that cannot be used.
    """

    def __init__(self, spec, path="tls", plugin_manager=None, alpn=None):
        self.alpn = alpn
        self.default = load_pair(spec, path, alpn)
        self.sni = {}
        for name, pair in sorted(spec.get("sni", {}).items()):
            self.sni[name.lower()] = load_pair(
                pair, "{}.sni[{}]".format(path, json.dumps(name)), alpn)
        self._contexts = [self.default] + list(self.sni.values())
        for ctx in self._contexts:
            ctx.set_tlsext_servername_callback(self._servername)
        caller = getattr(getattr(plugin_manager, "hook", None), "certificate", None)
        impls = reversed(caller.get_hookimpls()) if caller is not None else ()
        self.hooks = [_adapt(i, ("server_name", "client_addr")) for i in impls]
        self.cache = collections.OrderedDict()   # name -> Context or None
        self._pending = {}                       # name -> [Deferred]
        self._timers = {}                        # name -> DelayedCall
        self.clock = None                        # set by wrap()

    # -- IOpenSSLServerConnectionCreator --------------------------------------

    def serverConnectionForTLS(self, tls_protocol):
        """A new server-side ``OpenSSL.SSL.Connection`` on the default context."""
        conn = SSL.Connection(self.default, None)
        conn.set_app_data(tls_protocol)
        return conn

    def _servername(self, conn):
        name = conn.get_servername()
        if not name:
            return
        ctx = self.context_for(name.decode("ascii", "replace").lower())
        if ctx is not self.default:
            conn.set_context(ctx)

    # -- choosing a certificate --------------------------------------------------

    def static(self, name):
        """The context of ``name`` from the ``sni`` table, else the default."""
        ctx = self.sni.get(name)
        if ctx is None and "." in name:
            ctx = self.sni.get("*." + name.split(".", 1)[1])
        return ctx if ctx is not None else self.default

    def context_for(self, name):
        """The context serving ``name`` now (the hook's cached choice first)."""
        ctx = self.cache.get(name)
        if ctx is not None:
            self.cache.move_to_end(name)
            return ctx
        return self.static(name)

    def resolve(self, name, client_addr):
        """
        Make sure the hook has been asked about ``name``.

        :return: ``None`` when the handshake can go on now, else a Deferred
            firing (never failing) once it can.
        """
        if not self.hooks or not name or name in self.cache:
            return None
        waiting = self._pending.get(name)
        if waiting is None:
            waiting = self._pending[name] = []
            self._ask(name, client_addr, 0)
            if name not in self._pending:
                return None   # answered at once
            if self.clock is not None:
                self._timers[name] = self.clock.callLater(
                    HOOK_TIMEOUT, self._timed_out, name)
        d = Deferred()
        waiting.append(d)
        return d

    def _ask(self, name, client_addr, i):
        while i < len(self.hooks):
            try:
                result = self.hooks[i](name, client_addr)
            except Exception:
                return self._failed(None, name)
            i += 1
            d = _awaitable(result)
            if d is not None:
                d.addCallbacks(self._next, self._failed,
                               callbackArgs=(name, client_addr, i), errbackArgs=(name,))
                return
            if result is not None:
                return self._answer(name, result)
        self._answer(name, None)

    def _next(self, result, name, client_addr, i):
        if result is not None:
            self._answer(name, result)
        else:
            self._ask(name, client_addr, i)

    def _answer(self, name, result):
        ctx = None
        if result is not None:
            try:
                cert, key = result
                ctx = context_from_pem(cert, key, self.alpn,
                                       what="the certificate for {}".format(name))
            except (CertificateError, TypeError, ValueError) as e:
                log.error("certificate hook: unusable result for {name}: {error}",
                          name=name, error=str(e))
                return self._done(name)
            ctx.set_tlsext_servername_callback(self._servername)
        self.cache[name] = ctx if ctx is not None else self.static(name)
        if len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)
        self._done(name)

    def _failed(self, failure, name):
        log.failure("certificate hook failed for {name}", failure, name=name)
        self._done(name)

    def _timed_out(self, name):
        self._timers.pop(name, None)
        log.warn("certificate hook: no answer for {name} after {timeout} s: "
                 "serving the configured certificate", name=name, timeout=HOOK_TIMEOUT)
        self._done(name)

    def _done(self, name):
        timer = self._timers.pop(name, None)
        if timer is not None and timer.active():
            timer.cancel()
        for d in self._pending.pop(name, ()):
            d.callback(None)

    def forget(self, name=None):
        """Drop the cached hook result of ``name`` (``None``: of every name)."""
        if name is None:
            self.cache.clear()
        else:
            self.cache.pop(name.lower(), None)

    # -- the listener ----------------------------------------------------------

    def wrap(self, factory, clock):
        """``factory`` behind TLS: a factory for :class:`ServerTLS`'s listener."""
        return TLSFactory(self, factory, clock)


def check_tls(config):
    """
    Load every certificate and key the configuration names (as ``--check``
    and the start do).

    :raises ConfigError: naming the JSON path of the first unusable one.
    """
    from tproxy.tls_upstream import client_creator, upstream_tls_specs
    for path, spec in tls_specs(config):
        ServerTLS(spec, path)
    for path, spec in upstream_tls_specs(config):
        client_creator(spec, "localhost", path)


def tls_specs(config):
    """``[(json path, tls object)]`` of the configuration's TLS listeners."""
    specs = []
    if config.get("tls"):
        specs.append(("tls", config["tls"]))
    for i, stream in enumerate(config.get("streams", ())):
        if stream.get("tls"):
            specs.append(("streams[{}].tls".format(i), stream["tls"]))
    return specs
