# -*- test-case-name: tests.test_admin_security,tests.test_admin -*-
"""
The checks an admin request meets before its route is looked up
(:class:`tproxy.admin.AdminRoutes`; the order and the reasons are in
:mod:`tproxy.admin`'s docstring): the bearer token, the ``Host`` (a page
reaching the listener through DNS rebinding), the browser (a request
another site's page made: its ``Sec-Fetch-Site``, ``Origin`` or
``Referer``), and the CORS preflight of a page of ``admin.origins``.
Each refusal is the JSON answer to send, logged by :func:`logged_refusal`.
"""

import functools
import hmac
import ipaddress
import json
from urllib.parse import urlsplit

from twisted.logger import Logger

from tproxy.admin_messages import AdminResponse, _error, _raw

__all__ = ["token_accepted", "host_refused", "configured_origin", "browser_refused",
           "preflight", "logged_refusal"]

#: (the admin API's own namespace: its refusals are its lines)
log = Logger(namespace="tproxy.admin")


def token_accepted(request, token):
    """Whether ``request`` carries ``Authorization: Bearer <token>`` (or
    there is no ``token`` to carry); compared in constant time."""
    if not token:
        return True
    scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(_raw(credentials.strip()), token.encode("utf-8"))


def host_refused(request, hosts):
    """Why ``request``'s ``Host`` does not name the admin listener (an
    answer: ``400``, ``421``), or ``None`` if it does (or is absent: no
    browser leaves it out); ``hosts``: ``admin.hosts``, lower-case."""
    value = request.headers.get("host")
    if value is None:
        return None
    host = _split_host(value)
    if host is None:
        return _error(400, "bad Host header", host=value)
    if host == "localhost" or host in hosts:
        return None
    address = _ip(host)
    if address is not None:
        if address.is_loopback:
            return None
        local = request.local_addr
        if local and not address.is_unspecified and address == _ip(local):
            return None
    return _error(421, "Host does not name the admin listener (allowed: "
                  "loopback addresses, localhost, the listener's address and "
                  "admin.hosts)", host=value)


def configured_origin(request, origins):
    """The request's ``Origin`` if it is one of ``origins`` (``admin.origins``,
    lower-case, without a trailing ``/``), else ``None``."""
    origin = request.headers.get("origin")
    if origin is not None and origins:
        if origin.strip().lower().rstrip("/") in origins:
            return origin.strip()
    return None


def browser_refused(request, origins):
    """Why ``request`` looks sent by another site's web page (a ``403``
    answer), or ``None``: a ``Sec-Fetch-Site`` other than ``same-origin`` or
    ``none``; else an ``Origin`` other than the listener's own; else (no
    ``Origin``: an old browser's ``GET``) a ``Referer`` naming a page of
    another origin.  A page of ``origins`` is not refused; a request with
    none of these fields (a script) is not either."""
    if configured_origin(request, origins) is not None:
        return None   # a page of admin.origins, cross-site or not
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return _error(403, "cross-site request refused (Sec-Fetch-Site)",
                      sec_fetch_site=site)
    host = request.headers.get("host", "").strip().lower()
    origin = request.headers.get("origin")
    if origin is not None:
        if _own_origin(origin.strip().lower().rstrip("/"), host):
            return None   # the admin listener's own page
        return _error(403, "request from another origin refused (Origin not "
                      "in admin.origins)", origin=origin)
    referer = request.headers.get("referer")
    if referer is not None:
        # a browser too old to send Origin or Sec-Fetch-Site with a GET (an
        # <img>) still names the page (as Django's CSRF check reads it)
        try:
            parts = urlsplit(referer.strip())
        except ValueError:
            parts = None
        if parts is not None and parts.netloc:
            page = "{}://{}".format(parts.scheme, parts.netloc).lower()
            if page not in origins and not _own_origin(page, host):
                return _error(403, "request from another origin refused (Referer "
                              "names a page outside the admin listener and admin.origins)",
                              referer=referer)
    return None


def _own_origin(origin, host):
    """Whether ``origin`` (lower-case) is the admin listener's own, as the
    request's ``Host`` (lower-case) names it."""
    return bool(host) and origin in ("http://" + host, "https://" + host)


def preflight(request):
    """The ``204`` answer to the CORS preflight of a page of
    ``admin.origins``: no token is needed, as browsers send none."""
    headers = [("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE"),
               ("Access-Control-Allow-Headers", "Authorization, Content-Type"),
               ("Access-Control-Max-Age", "600")]
    if request.headers.get("access-control-request-private-network", "").lower() == "true":
        headers.append(("Access-Control-Allow-Private-Network", "true"))
    return AdminResponse(204, None, headers, b"")


def _split_host(value):
    """
    ``host`` (lower-case, IPv6 without brackets) of a ``Host`` value
    ``host[:port]``, or ``None`` if it is not of that form.
    """
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
    else:
        host, colon, port = value.partition(":")
        rest = colon + port
    if rest:
        port = rest[1:]
        if rest[0] != ":" or not (port.isdigit() and port.isascii() and len(port) <= 5):
            return None
    return host or None


@functools.lru_cache(maxsize=256)
def _ip(text):
    """``text`` as an ``ipaddress`` address, or ``None`` (a name); cached:
    the same few Host values and listener addresses come with every request."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def logged_refusal(request, answer):
    """``answer``, a refusal of the token, ``Host`` or browser check, after
    logging it (a warning: a page trying the API, a script without the
    token); the audit log has only the changes."""
    log.warn("admin request refused ({status} {error}): {method} {path} from {client}, "
             "user agent {user_agent}", status=answer.status, error=answer.obj["error"],
             method=request.method, path=request.path, client=request.client_addr,
             user_agent=json.dumps(request.headers.get("user-agent", "")[:200]),
             admin_refused=True)
    return answer
