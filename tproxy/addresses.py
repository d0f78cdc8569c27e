# -*- test-case-name: tests.test_config -*-
"""
Addresses in the configuration and the admin API: ``host:port`` pairs,
host names and IP literals (checked and normalised), and whether an
endpoint description listens on loopback only.  Each check raises
``ValueError`` with the message a user reads.
"""

import ipaddress
import re
import socket

__all__ = ["parse_host_port", "check_host", "normalise_host", "parse_endpoint",
           "endpoint_is_local", "unicast_problem", "bind_place", "own_listeners",
           "is_local_address"]

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
# a name whose last label is a number (decimal, or hex as "0x7f000001") is an
# IPv4 address to the resolver (inet_aton: "0x0" is 0.0.0.0, "10.1" 10.0.0.1,
# as to browsers): it must then be a valid one in dotted decimal
_NUMERIC_LAST_LABEL = re.compile(r"(?:^|\.)(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")


def parse_host_port(value):
    """
    Parse ``"host:port"`` (IPv6 as ``"[::1]:80"``) into ``(host, port)``.

    :raises ValueError: with a message fit for the user.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise ValueError("bad host:port {!r} (expected HOST:PORT, IPv6 as "
                         "[::1]:80)".format(value))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("bad host:port {!r}: {!r} is not an IPv6 "
                             "address".format(value, host))
        problem = unicast_problem(host)
        if problem is not None:
            raise ValueError("bad host:port {!r}: {}".format(value, problem))
    elif "[" in value or "]" in value:
        # a bracket left open, or no port after it: the advice below
        # would wrap the brackets in more brackets
        raise ValueError("bad host:port {!r} (expected [IPv6 address]:PORT, as "
                         "[::1]:80)".format(value))
    elif ":" in host:
        raise ValueError("bad host:port {!r} (an IPv6 address needs brackets: "
                         "[{}]:{})".format(value, host, port))
    else:
        check_host(host, value)
    if not (port.isdigit() and port.isascii()):
        raise ValueError("bad host:port {!r}: port {!r} is not a "
                         "number".format(value, port))
    if not 1 <= int(port) <= 65535:
        raise ValueError("port {} is out of range".format(int(port)))
    return host, int(port)


def parse_endpoint(description):
    """
    ``(kind, args, kwargs)`` of the server endpoint string ``description``
    (``("TCP", (8080,), {"interface": "127.0.0.1"})``), parsed without a
    reactor, or ``None`` where Twisted has no such parser (its private
    ``_parseServer``: without it, the listener itself reports a bad
    endpoint at start).

    :raises ValueError: for a description Twisted cannot parse.
    """
    parsed = _PARSED.get(description) if isinstance(description, str) else None
    if parsed is not None:
        kind, args, kwargs = parsed
        return kind, args, dict(kwargs)
    try:
        from twisted.internet.endpoints import _parseServer
    except ImportError:  # pragma: no cover
        return None
    try:
        parsed = tuple(_parseServer(description, None)[:3])
    except Exception as e:
        raise ValueError(_endpoint_problem(str(e)) or type(e).__name__)
    if parsed[0] == "UNIX" and not (parsed[1] and parsed[1][0]):
        raise ValueError("a UNIX socket needs a path: unix:/run/tproxy.sock")
    # Twisted's parser reads a character at a time (~0.1 ms a description),
    # and the same few descriptions come back at every configuration
    # validated (a start, a reload, a test harness): keep the answers for
    # plain TCP and UNIX sockets, made of the string alone (an ssl one reads
    # its certificate files, which may change; a plugin's kind is looked up
    # anew).
    if isinstance(description, str) and parsed[0] in ("TCP", "UNIX"):
        if len(_PARSED) >= 256:
            _PARSED.clear()
        _PARSED[description] = (parsed[0], tuple(parsed[1]), dict(parsed[2]))
    return parsed


#: endpoint description -> ``(kind, args, kwargs)`` (see :func:`parse_endpoint`)
_PARSED = {}

#: what Twisted's endpoint parser says in a Python call's words (its
#: ``_parseTCP(factory, port, interface, backlog)`` called with the fields),
#: and what it means in the endpoint string's
_ENDPOINT_PROBLEMS = [
    (re.compile(r"got multiple values for argument|takes .* positional argument"),
     "too many ':'-separated fields: a colon inside a value is escaped, as in "
     "interface=\\:\\:1"),
    (re.compile(r"unexpected keyword argument '([^']*)'"), "unknown option '{0}'"),
    (re.compile(r"invalid literal for int\(\) with base 10: ('.*')"), "port {0} is not a number"),
]


def _endpoint_problem(message):
    for pattern, said in _ENDPOINT_PROBLEMS:
        m = pattern.search(message)
        if m is not None:
            return said.format(*m.groups())
    return message


def endpoint_is_local(description):
    """
    Whether the server endpoint string ``description`` listens on this
    machine only: an endpoint with a loopback ``interface`` (``tcp``,
    ``tcp6``, ``ssl``), or a UNIX socket.  Anything else (no interface: every
    address; other endpoint kinds) is not.
    """
    try:
        kind, args, kwargs = parse_endpoint(description)
    except (TypeError, ValueError):
        return False
    if kind == "UNIX":
        return True
    interface = kwargs.get("interface", "")   # tcp, tcp6, ssl
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return interface.lower() == "localhost"


def unicast_problem(host):
    """
    Why the IP address ``host`` cannot be a backend (unspecified, broadcast,
    multicast: it names no one server), or ``None`` (also for a name).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_unspecified or (address.version == 4 and address in _THIS_NETWORK):
        return "{} is an unspecified address, not a server".format(host)
    if address.is_multicast:
        return "{} is a multicast address, not a server".format(host)
    if address == _BROADCAST:
        return "{} is the broadcast address, not a server".format(host)
    return None


def bind_place(description):
    """
    Where the server endpoint string ``description`` binds:
    ``("tcp", port, interface)`` (``tcp``, ``tcp6``, ``ssl``; the interface
    normalised, ``0.0.0.0`` for every address; an ``ssl:`` one read for its
    port and interface alone, its files not opened), ``("unix", path)``, or
    ``None`` (another kind, port ``0``, or a description that does not parse).
    """
    try:
        if description.lower().startswith("ssl:"):
            description = _tcp_of_ssl(description)
        kind, args, kwargs = parse_endpoint(description)
        if kind == "UNIX":
            return ("unix", args[0])
        if kind != "TCP" and getattr(kind, "prefix", None) != "tcp6":
            return None
        port = int(kwargs.get("port", args[0] if args else 0))
    except (TypeError, ValueError, IndexError, AttributeError):
        return None
    if not port:
        return None
    return ("tcp", port, normalise_host(kwargs.get("interface", "") or "0.0.0.0"))


def own_listeners(listeners):
    """
    A function ``(host, port) -> name or None`` saying which of this
    process's ``listeners`` (``[(name, endpoint description)]``) a
    connection to ``host:port`` (``host`` normalised: see
    :func:`normalise_host`) would reach, as far as addresses tell: the
    listener's own interface, or, for one listening on every address, a
    loopback address (``localhost``) or another address of this machine
    (its ``eth0`` address, say: see :func:`is_local_address`).  A backend
    registered there would be tproxy itself: a loop, or its admin API
    served to every client.
    """
    own = {}
    for name, description in listeners:
        place = bind_place(description)
        if place is not None and place[0] == "tcp":
            own.setdefault((place[2], place[1]), name)

    def reached(host, port):
        if not own:
            return None
        name = own.get((host, port))
        if name is not None:
            return name
        anywhere = (own.get(("0.0.0.0", port)) if ":" not in host else None) or \
            own.get(("::", port))
        if anywhere is not None and (_is_loopback(host) or is_local_address(host)):
            return anywhere
        if host == "localhost":
            return own.get(("127.0.0.1", port)) or own.get(("::1", port))
        return None
    return reached


def is_local_address(host):
    """
    Whether ``host``, an IP address, is one of this machine's: a socket
    binds to it only then (nothing is sent, nothing waited for).  ``False``
    for a host name (resolving it could block), and where the system lets a
    socket bind any address (Linux's ``ip_nonlocal_bind``: nothing to tell).
    """
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return False
    try:
        with open("/proc/sys/net/ipv{}/ip_nonlocal_bind".format(version)) as f:
            if f.read().strip() != "0":
                return False
    except OSError:
        pass   # (not Linux: no such setting)
    try:
        with socket.socket(socket.AF_INET6 if version == 6 else socket.AF_INET,
                           socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
    except OSError:
        return False
    return True


def _tcp_of_ssl(description):
    """The ``tcp:`` description of an ``ssl:`` one's port and interface."""
    kept = []
    for i, part in enumerate(_UNESCAPED_COLON.split(description)[1:]):
        if (i == 0 and "=" not in part) or part.startswith(("port=", "interface=")):
            kept.append(part)
    return ":".join(["tcp"] + kept)


_UNESCAPED_COLON = re.compile(r"(?<!\\):")


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


def check_host(host, value=None):
    """
    Check that ``host`` is an IP address or a host name (IPv6 without
    brackets); ``value`` is what to quote in the message.

    :raises ValueError: with a message fit for the user.
    """
    if _HOSTNAME.match(host) and not _NUMERIC_LAST_LABEL.search(host):
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if value is not None and value != host:
            raise ValueError("bad host:port {!r}: {!r} is not a host name or "
                             "an IP address (IPv6 as [::1]:80)".format(value, host))
        raise ValueError("bad host {!r} (expected a host name or an IP "
                         "address)".format(host))
    problem = unicast_problem(host)
    if problem is not None:
        if value is not None and value != host:
            raise ValueError("bad host:port {!r}: {}".format(value, problem))
        raise ValueError("bad host {!r}: {}".format(host, problem))


def normalise_host(host):
    """
    The one spelling of a checked host (see :func:`check_host`), the same as
    the registry's admin API makes: a host name lower-cased, an IPv6 address
    compressed, an IPv4-mapped IPv6 address as IPv4.  So that a static peer
    and a registration of the same server are the same peer.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    return str(getattr(address, "ipv4_mapped", None) or address)
