# -*- test-case-name: tests.test_ip_restriction -*-
"""
The built-in ``ip_restriction`` plugin: allow and deny lists of addresses and
CIDRs (IPv4 and IPv6), checked against the client's address in ``access``;
a refused request gets ``403 {"error": "forbidden", ...}``.

- The address is ``ctx.request.client_addr``: the TCP peer's, or, when the
  peer is one of ``trusted_proxies``, what it says in ``X-Real-IP`` /
  ``X-Forwarded-For`` (:mod:`tproxy.trust`); a client cannot choose it.
  IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) are their IPv4 address,
  in the lists too.
- ``deny`` wins: an address in ``deny`` is refused; otherwise, when ``allow``
  is not empty, an address outside it is refused.
- On a ``streams`` listener (``stream_access``) the address is the TCP
  peer's, and a refused connection is closed at once.
- The lists are compiled at start into one set of network numbers per prefix
  length, so a check costs one set lookup per distinct prefix length in the
  lists, whatever their size; the last decisions are remembered per address.
"""

import ipaddress

from tproxy import Response, hookimpl
from tproxy.config import ConfigError
from tproxy.trust import ip

__all__ = ["Plugin", "NetworkSet"]


class NetworkSet(object):
    """
    A set of networks answering ``address in networks`` in
    O(distinct prefix lengths).

    :param networks: ``ipaddress`` networks.
    """

    def __init__(self, networks):
        by_length = {4: {}, 6: {}}
        for network in networks:
            if network.version == 6 and network.prefixlen >= 96:
                mapped = network.network_address.ipv4_mapped
                if mapped is not None:   # ::ffff:a.b.c.d/n is a.b.c.d/(n-96)
                    network = ipaddress.ip_network(
                        "{}/{}".format(mapped, network.prefixlen - 96))
            bits = network.max_prefixlen
            masks = by_length[network.version]
            prefixes = masks.setdefault(network.prefixlen, set())
            prefixes.add(int(network.network_address) >> (bits - network.prefixlen))
        #: {version: [(shift, set of prefixes)]}, shortest prefix first
        self.tables = {
            version: [((32 if version == 4 else 128) - length, frozenset(prefixes))
                      for length, prefixes in sorted(masks.items())]
            for version, masks in by_length.items()}

    def __bool__(self):
        return any(self.tables.values())

    def __contains__(self, address):
        value = int(address)
        for shift, prefixes in self.tables[address.version]:
            if (value >> shift) in prefixes:
                return True
        return False


class Plugin(object):
    """
    Client address allow / deny lists (``access``).

    :param settings: see :attr:`settings_schema`.
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "allow": {"type": "array", "items": {"type": "string"}, "default": [],
                      "description": "addresses or CIDRs; when not empty, only these"},
            "deny": {"type": "array", "items": {"type": "string"}, "default": [],
                     "description": "addresses or CIDRs refused (deny wins)"},
            "message": {"type": "string", "default": "forbidden"},
            "cache_size": {"type": "integer", "minimum": 0, "default": 4096},
        },
    }

    def __init__(self, settings):
        errors = []
        lists = {}
        for name in ("allow", "deny"):
            networks = []
            for i, text in enumerate(settings[name]):
                try:
                    networks.append(ipaddress.ip_network(text.strip(), strict=False))
                except ValueError:
                    errors.append(("{}[{}]".format(name, i),
                                   "{!r} is not an IP address or CIDR".format(text)))
            lists[name] = NetworkSet(networks)
        if not settings["allow"] and not settings["deny"] and not errors:
            errors.append(("", "give allow or deny (or both)"))
        if errors:
            raise ConfigError(errors)
        self.allow = lists["allow"] if settings["allow"] else None
        self.deny = lists["deny"]
        self.message = settings["message"]
        self.cache_size = settings["cache_size"]
        self.cache = {}

    def allowed(self, text):
        """Whether the address ``text`` (a ``str``) may pass."""
        decision = self.cache.get(text)
        if decision is None:
            address = ip(text) if text else None
            if address is None:
                decision = False
            elif address in self.deny:
                decision = False
            else:
                decision = self.allow is None or address in self.allow
            if self.cache_size:
                if len(self.cache) >= self.cache_size:
                    self.cache.clear()
                self.cache[text] = decision
        return decision

    @hookimpl
    def access(self, ctx):
        """Refuse the request when its client address is not allowed."""
        if not self.allowed(ctx.request.client_addr):
            return Response.error(403, self.message)
        return None

    @hookimpl
    def stream_access(self, ctx):
        """Close a TCP connection of a ``streams`` listener whose client
        address (the socket's) is not allowed."""
        if not self.allowed(ctx.client_addr):
            return False
        return None
