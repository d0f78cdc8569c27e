# -*- test-case-name: tests.test_admin -*-
"""
Which client address to believe: the TCP peer, or -- when the peer is one of
the configured ``trusted_proxies`` -- what it says in ``X-Real-IP`` or
``X-Forwarded-For`` (nginx's ``realip`` module with ``real_ip_recursive on``).

One rule for the proxy (``ctx.request.client_addr``, the ``X-Real-IP`` sent
upstream) and for the registry's admin API (the default ``host`` of
``/upstream/add``).
"""

import ipaddress


class UntrustworthyHeader(ValueError):
    """
    A trusted proxy sent a forwarding header that is not an address.

    :ivar header: ``"X-Real-IP"`` or ``"X-Forwarded-For"``.
    :ivar message: what is wrong, for the user.
    :ivar value: the header's value.
    """

    def __init__(self, header, message, value):
        ValueError.__init__(self, header, message, value)
        self.header = header
        self.message = message
        self.value = value


def ip(text):
    """An ``ipaddress`` address (IPv4-mapped IPv6 as IPv4), or ``None``."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def configured(config):
    """The :class:`TrustedProxies` of a configuration's ``trusted_proxies``
    and ``real_ip_header``."""
    return TrustedProxies(config.get("trusted_proxies", ()), config.get("real_ip_header"))


class TrustedProxies(object):
    """
    The addresses whose ``X-Real-IP`` / ``X-Forwarded-For`` are believed.

    :param networks: addresses or CIDRs (``"10.0.0.0/8"``, ``"::1"``).
    :param header: the one header believed, ``"X-Real-IP"`` or
        ``"X-Forwarded-For"`` (nginx's ``real_ip_header``), or ``None``:
        ``X-Real-IP`` when present, else ``X-Forwarded-For``.
    """

    def __init__(self, networks=(), header=None):
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self.header = header

    def __bool__(self):
        return bool(self.networks)

    def __contains__(self, address):
        if not self.networks:
            return False
        if isinstance(address, str):
            address = ip(address)
        if address is None:
            return False
        return any(address.version == n.version and address in n
                   for n in self.networks)

    def client_address(self, peer, real_ip=None, forwarded=None):
        """
        The client's address: ``peer`` (the TCP peer), unless ``peer`` is a
        trusted proxy that says otherwise in ``X-Real-IP`` or, failing that,
        ``X-Forwarded-For`` (its rightmost untrusted address).

        :param peer: the TCP peer's address (``str``).
        :param real_ip: the ``X-Real-IP`` value (``str``) or ``None``.
        :param forwarded: the ``X-Forwarded-For`` value (``str``) or ``None``.
        :return: the address (``str``), or ``None`` if ``peer`` is unknown.
        :raises UntrustworthyHeader: a trusted proxy sent something that is
            not an address.
        """
        address = ip(peer) if peer else None
        if address is None or address not in self:
            return str(address) if address is not None else None
        if self.header is not None:
            if self.header == "X-Forwarded-For":
                real_ip = None
            else:
                forwarded = None
        real = (real_ip or "").strip()
        if real:
            believed = ip(real)
            if believed is None:
                raise UntrustworthyHeader("X-Real-IP", "X-Real-IP from a trusted proxy "
                                          "is not an IP address", real)
            return str(believed)
        forwarded = (forwarded or "").strip()
        if not forwarded:
            return str(address)
        # from the right, as nginx's real_ip_recursive: the first address
        # that is not a trusted proxy's; what is left of an entry that is
        # not an address is the client's own words (a client sending
        # "X-Forwarded-For: unknown" must not become the proxy, for
        # ip_restriction or rate_limit): the last address believed stands
        believed = address
        for hop in reversed(forwarded.split(",")):
            hop_address = ip(hop)
            if hop_address is None:
                if believed is address:
                    # the entry the trusted peer wrote itself
                    raise UntrustworthyHeader(
                        "X-Forwarded-For", "X-Forwarded-For from a trusted proxy holds "
                        "something that is not an IP address", forwarded)
                return str(believed)
            if hop_address not in self:
                return str(hop_address)
            believed = hop_address
        return str(believed)
