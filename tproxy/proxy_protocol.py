# -*- test-case-name: tests.test_stream -*-
"""
The PROXY protocol header (HAProxy's, versions 1 and 2), sent first on a
connection to an upstream so that it learns the client's address.

Only the sending side is here: :func:`header` builds the bytes from the
addresses of the client connection.  The format is specified in
https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

- v1 is one text line: ``PROXY TCP4 <client> <server> <client port>
  <server port>\\r\\n`` (``TCP6`` for IPv6, ``PROXY UNKNOWN\\r\\n`` when the
  client's address is not an IP address, e.g. a UNIX socket listener).
- v2 is binary: a 12-byte signature, version and command (``0x21``: version
  2, ``PROXY``), family and transport (``0x11`` TCP over IPv4, ``0x21`` TCP
  over IPv6, ``0x00`` unspecified), the length of the address block, then the
  addresses and ports in network byte order.

An IPv4 client of a dual-stack (IPv6) listener is seen as ``::ffff:a.b.c.d``;
when both addresses are IPv4-mapped they are sent as IPv4, which is what the
peer would have seen without the proxy.
"""

import ipaddress
import struct

__all__ = ["V2_SIGNATURE", "header", "v1_header", "v2_header"]

#: The first 12 bytes of every v2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

_V2_PROXY = 0x21      # version 2, command PROXY
_V2_TCP4 = 0x11
_V2_TCP6 = 0x21
_V2_UNSPEC = 0x00


def _addresses(client, server):
    """
    ``(version, client_ip, server_ip)`` with ``ipaddress`` objects of the
    same family, or ``None`` when either side is not an IP address.
    """
    try:
        src = ipaddress.ip_address(client[0])
        dst = ipaddress.ip_address(server[0])
    except (TypeError, ValueError):
        return None
    if src.version == 6 and dst.version == 6:
        if src.ipv4_mapped is not None and dst.ipv4_mapped is not None:
            return 4, src.ipv4_mapped, dst.ipv4_mapped
        return 6, src, dst
    if src.version == 4 and dst.version == 4:
        return 4, src, dst
    # mixed families: map the IPv4 one into IPv6
    if src.version == 4:
        src = ipaddress.IPv6Address("::ffff:" + str(src))
    else:
        dst = ipaddress.IPv6Address("::ffff:" + str(dst))
    return 6, src, dst


def v1_header(client, server):
    """
    The PROXY protocol v1 line.

    :param client: ``(host, port)`` of the client (the TCP peer), or ``None``.
    :param server: ``(host, port)`` the client connected to, or ``None``.
    :return: ``bytes`` ending with CRLF (at most 107 bytes).
    """
    found = _addresses(client, server) if client and server else None
    if found is None:
        return b"PROXY UNKNOWN\r\n"
    version, src, dst = found
    return ("PROXY TCP%d %s %s %d %d\r\n" % (
        version, src.compressed, dst.compressed, client[1], server[1])).encode("ascii")


def v2_header(client, server):
    """
    The PROXY protocol v2 header (binary, command ``PROXY``).

    :param client: ``(host, port)`` of the client (the TCP peer), or ``None``.
    :param server: ``(host, port)`` the client connected to, or ``None``.
    :return: ``bytes``: 28 for IPv4, 52 for IPv6, 16 when the family is
        unknown (``UNSPEC``, no address block).
    """
    found = _addresses(client, server) if client and server else None
    if found is None:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, _V2_UNSPEC, 0)
    version, src, dst = found
    block = src.packed + dst.packed + struct.pack("!HH", client[1], server[1])
    family = _V2_TCP4 if version == 4 else _V2_TCP6
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(block)) + block


_BUILDERS = {"v1": v1_header, "v2": v2_header}


def header(version, client, server):
    """
    The header of PROXY protocol ``version`` (``"v1"`` or ``"v2"``).

    :raises ValueError: for another version.
    """
    try:
        build = _BUILDERS[version]
    except KeyError:
        raise ValueError("unknown PROXY protocol version {!r} (v1 or v2)".format(version))
    return build(client, server)
