# -*- test-case-name: tests.test_tls -*-
"""
TLS to upstream peers (``"tls"`` of an ``upstreams`` group or peer:
``true``, or ``{"verify", "ca", "server_name"}``): the client side of
:mod:`tproxy.tls`, whose certificates and ALPN it shares.  Verification is
on by default, against the system's trust store or a PEM bundle (``ca``,
loaded once per file).
"""

import ipaddress

from OpenSSL import SSL, crypto
from twisted.internet import ssl as tssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from tproxy.config import ConfigError
from tproxy.tls import HTTP_ALPN, CertificateError, _read

__all__ = ["client_creator", "tls_failure", "upstream_tls_specs"]


def upstream_tls_specs(config):
    """``[(json path, tls object)]`` of the upstream groups and peers that
    speak TLS (``true`` is ``{}``)."""
    specs = []
    for group, spec in sorted(config.get("upstreams", {}).items()):
        if spec.get("tls"):
            specs.append(("upstreams.{}.tls".format(group), _tls_object(spec["tls"])))
        for i, peer in enumerate(spec["peers"]):
            if isinstance(peer, dict) and peer.get("tls"):
                specs.append(("upstreams.{}.peers[{}].tls".format(group, i),
                              _tls_object(peer["tls"])))
    return specs


def _tls_object(value):
    return {} if value is True else value


_TRUST = {}


def _trust_root(ca, path):
    if ca is None:
        return tssl.platformTrust()
    root = _TRUST.get(ca)
    if root is None:
        from cryptography import x509
        try:
            certs = x509.load_pem_x509_certificates(_read(ca))
        except CertificateError as e:
            raise ConfigError((path + ".ca", str(e)))
        except ValueError:
            raise ConfigError((path + ".ca", "{} is not a PEM certificate bundle".format(ca)))
        root = _TRUST[ca] = tssl.trustRootFromCertificates(
            [tssl.Certificate(crypto.X509.from_cryptography(c)) for c in certs])
    return root


def client_creator(spec, host, path="tls"):
    """
    The client TLS settings for a connection to ``host``: an
    ``IOpenSSLClientConnectionCreator``.

    ``spec`` (an upstream's ``tls`` object): ``verify`` (default ``true``:
    the peer's certificate must chain to ``ca`` -- a PEM bundle; default
    the system's trust store -- and name ``server_name``), ``server_name``
    (the SNI name and the name verified; default the peer's host; an IP
    address sends no SNI and is verified as an IP address), ALPN
    ``http/1.1``.
    """
    name = spec.get("server_name") or host
    if spec.get("verify", True):
        return tssl.optionsForClientTLS(
            name, trustRoot=_trust_root(spec.get("ca"), path),
            acceptableProtocols=list(HTTP_ALPN))
    return _Unverified(name)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified(object):
    """TLS to a peer whose certificate is not checked (``"verify": false``),
    still sending SNI."""

    def __init__(self, name):
        self.name = name
        self.options = tssl.CertificateOptions(
            verify=False, raiseMinimumTo=tssl.TLSVersion.TLSv1_2)
        self._ascii = name.encode("idna") if not _is_ip(name) else None

    def clientConnectionForTLS(self, tls_protocol):
        conn = SSL.Connection(self.options.getContext(), None)
        conn.set_app_data(tls_protocol)
        if self._ascii:
            conn.set_tlsext_host_name(self._ascii)
        conn.set_alpn_protos(list(HTTP_ALPN))
        return conn


def _is_ip(name):
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


#: What OpenSSL says of an answer that is not a TLS record (a plain HTTP
#: peer's ``HTTP/1.1 400``), depending on its version: the record's version
#: is wrong, or (OpenSSL 3.3, bundled by PyPy's cryptography < 44) its length.
_NOT_TLS = frozenset(["wrong version number", "packet length too long"])


def tls_failure(reason):
    """
    Why a TLS connection to an upstream failed, for the log and the health
    detail (nginx's "upstream SSL certificate verify error"), from the
    ``Failure`` its connection was lost with: ``"TLS handshake failed:
    certificate verify failed"`` (no chain to ``ca``, expired, self-signed),
    ``"TLS handshake failed: the peer does not speak TLS (wrong version
    number)"`` (a plain HTTP peer; OpenSSL's words in brackets),
    ``"TLS certificate does not name billing.internal"``; ``None`` when TLS
    is not the cause.
    """
    exc = getattr(reason, "value", None)
    if isinstance(exc, SSL.Error):
        args = exc.args[0] if exc.args and isinstance(exc.args[0], list) else ()
        said = [e[2] for e in args if isinstance(e, tuple) and len(e) == 3 and e[2]]
        if _NOT_TLS.intersection(said):
            return "TLS handshake failed: the peer does not speak TLS (%s)" % "; ".join(said)
        return "TLS handshake failed: " + ("; ".join(said) or "connection closed")
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ == "VerificationError" and errors:   # service_identity
        names = []
        for e in errors:
            wanted = getattr(e, "mismatched_id", None)
            name = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None)
            names.append(name.decode("ascii", "replace") if isinstance(name, bytes)
                         else str(name))
        return "TLS certificate does not name " + ", ".join(names)
    return None
