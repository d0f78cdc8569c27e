# -*- test-case-name: tests.test_routes -*-
"""
Hosts as routes see them: a route's ``match.host`` checked and spelled
(:func:`host_condition`), and a request's IPv6 literal spelled the same way
(:func:`literal_host`), so that ``[2001:DB8:0::1]`` and ``[2001:db8::1]``
are one host on either side.  Names are lower-cased and lose the trailing
dot of a fully qualified name, as nginx takes them; the port of a request's
``Host`` is ignored (:attr:`tproxy.Request.host`).
"""

import ipaddress

from tproxy.addresses import check_host

__all__ = ["host_condition", "literal_host"]


def literal_host(host):
    """
    The one spelling of an IPv6 literal ``"[2001:DB8:0::1]"``, the one routes
    are matched on: RFC 5952's short form, lower case, in brackets
    (``"[2001:db8::1]"``); ``host`` as it is when it is no IPv6 address.
    """
    spelled = _LITERALS.get(host)
    if spelled is None:
        spelled = host
        if host[-1:] == "]" and _is_ipv6(host[1:-1]):
            spelled = "[" + str(ipaddress.IPv6Address(host[1:-1])) + "]"
        if len(_LITERALS) < 1024:
            _LITERALS[host] = spelled
    return spelled


#: literal_host's answers (clients send the same few): bounded, past that a
#: literal is read anew each time
_LITERALS = {}


def host_condition(given):
    """
    ``(wildcard, host, problem)`` of a route's ``match.host``: ``wildcard``
    true for ``*.example.com`` (``host`` is then the suffix
    ``.example.com``), ``host`` in the spelling requests' hosts are matched
    on, ``problem`` the message of a host that is none (else ``None``).
    """
    host = given.lower()
    if host[-1:] == ".":
        host = host[:-1]  # a fully qualified name: requests' hosts lose the dot too
    problem = None
    if host[:1] == "[" and host[-1:] == "]" and _is_ipv6(host[1:-1]):
        # an IPv6 literal, as clients send it (Host: [::1]:8080)
        host = literal_host(host)
        try:
            check_host(host[1:-1])
        except ValueError as e:
            problem = str(e)
    elif _is_ipv6(host):
        problem = ("bad host {!r}: an IPv6 address is written in brackets, as "
                   "clients send it: [{}]".format(given, host))
    elif host[:1] == "[" and "]:" in host:
        problem = "bad host {!r} (no port: a request's port is ignored)".format(given)
    else:
        name = host[2:] if host.startswith("*.") else host
        try:
            if "*" in name or ":" in name or "[" in name:
                raise ValueError("bad host")
            check_host(name)
        except ValueError:
            problem = ("bad host {!r} (a host name, an IPv6 address in brackets "
                       "as [::1], or *.example.com for its sub-domains; no "
                       "port)".format(given))
    if host.startswith("*."):
        return True, host[1:], problem
    return False, host, problem


def _is_ipv6(text):
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True
