# -*- test-case-name: tests.test_admin,tests.test_registry -*-
"""
The ``registry`` plugin: the admin API through which upstream servers
register, heartbeat and leave, and the timer that removes expired
registrations.

Endpoints (on the admin listener):

``GET /upstream/add?port=P[&host=H][&prefix=G][&weight=W]``
    Register ``H:P`` in group ``G``, or heartbeat it.  ``host`` defaults to
    the caller's address (the TCP peer; ``X-Real-IP`` / ``X-Forwarded-For``
    are believed only from an address in the ``trusted_proxies``
    configuration); ``prefix`` defaults to ``default`` and one leading and
    one trailing ``/`` are ignored (``/api`` is ``api``); ``weight`` is an
    integer from 1 to 1000, 1 for a new server and unchanged on a heartbeat
    that leaves it out.  Answers ``{"success": true, "server":
    "prefix:host:port", "prefix", "host", "port", "weight", "created",
    "static", "expires_in"}``.

``GET /upstream/remove?port=P[&host=H][&prefix=G]``
    Remove a registration: ``200 {"success": true, "removed":
    "prefix:host:port", ...}``; ``404 {"error": "server not registered"}``
    if there is none (or it had expired); ``409`` for a server of the
    configuration's ``upstreams`` (those cannot be removed at run time).

``GET /upstream/status[?prefix=G]``
    ``{"groups": [{"prefix", "servers": [...], "live", "total"}],
    "total_groups", "total_servers", "timestamp"}``, groups sorted by name and
    servers by host and port.

``add`` and ``remove`` also accept ``POST``, with the parameters in the query
string or in an ``application/x-www-form-urlencoded`` body.  Bad parameters
are a ``400 {"error": ..., "field": ..., "value": ...}`` and change nothing;
unknown parameters are ignored.

Every ``registry.cleanup_interval`` seconds a ``LoopingCall`` removes the
registrations whose last heartbeat is older than ``registry.ttl`` seconds (an
expired registration is never selected, even before it is removed).  The
plugin has no settings of its own: it reads the ``registry`` and
``trusted_proxies`` keys of the configuration.
"""

import ipaddress
import re

from twisted.internet.defer import maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tproxy import hookimpl
from tproxy.trust import TrustedProxies, UntrustworthyHeader

__all__ = ["Plugin", "BadParameter", "parse_host", "parse_port", "parse_prefix",
           "parse_weight", "TrustedProxies", "DEFAULT_GROUP"]

log = Logger()

#: The group of requests that match no other prefix.
DEFAULT_GROUP = "default"

MAX_PREFIX_LENGTH = 200
MAX_HOST_LENGTH = 253
MAX_WEIGHT = 1000

_PORT = re.compile(r"[0-9]{1,5}")
_WEIGHT = re.compile(r"[0-9]{1,4}")
# RFC 1123 labels; "_" is also accepted, as the configuration accepts it
# (container service names use it)
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


class BadParameter(ValueError):
    """
    A request parameter is invalid.

    :ivar field: the parameter's name.
    :ivar message: what is wrong, for the user.
    :ivar value: the value received (``None`` when absent).
    """

    def __init__(self, field, message, value=None):
        ValueError.__init__(self, field, message, value)
        self.field = field
        self.message = message
        self.value = value

    def as_dict(self):
        """The JSON body of the ``400`` answer."""
        return {"error": self.message, "field": self.field, "value": self.value}


def parse_port(value):
    """
    A port number from its decimal text (``"8080"``): 1 to 65535, digits only.

    :raises BadParameter: if absent, not a number, or out of range.
    """
    if value is None or value == "":
        raise BadParameter("port", "port is required", value)
    if not _PORT.fullmatch(value):
        raise BadParameter("port", "port must be a number from 1 to 65535", value)
    port = int(value)
    if not 1 <= port <= 65535:
        raise BadParameter("port", "port {} is out of range (1-65535)".format(port), value)
    return port


def parse_weight(value):
    """
    A weight from its decimal text: 1 to 1000; ``None`` if absent or empty.

    :raises BadParameter: if not an integer in range.
    """
    if value is None or value == "":
        return None
    if not _WEIGHT.fullmatch(value) or not 1 <= int(value) <= MAX_WEIGHT:
        raise BadParameter("weight", "weight must be an integer from 1 to {}".format(
            MAX_WEIGHT), value)
    return int(value)


def parse_host(value, field="host"):
    """
    A host name or IP address, normalised: a host name lower-cased, an IP
    address in its canonical form (IPv6 compressed, brackets removed, an
    IPv4-mapped IPv6 address as IPv4).

    :raises BadParameter: if it is neither.
    """
    bad = BadParameter(field, "host must be a host name or an IP address", value)
    if not value or len(value) > MAX_HOST_LENGTH + 2:
        raise bad
    host = value
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            raise bad
    if ":" in host:
        if "%" in host:  # no zone ids: they name an interface of this machine
            raise bad
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise bad
        return str(address.ipv4_mapped or address)
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if len(host) > MAX_HOST_LENGTH:
        raise bad
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        # an all-numeric last label is a malformed IPv4 address ("10.1",
        # "256.0.0.1", "010.0.0.1"), not a name
        raise bad
    return host.lower()


def parse_prefix(value, field="prefix"):
    """
    A group name: ``/``-separated segments of ``[A-Za-z0-9._~-]``; one leading
    and one trailing ``/`` are ignored; absent or empty is
    :data:`DEFAULT_GROUP`.

    :raises BadParameter: for other characters (``:`` included), empty
        segments, ``.`` or ``..`` segments, or more than 200 characters.
    """
    if value is None:
        return DEFAULT_GROUP
    prefix = value
    if prefix.startswith("/"):
        prefix = prefix[1:]
    if prefix.endswith("/"):
        prefix = prefix[:-1]
    if prefix == "":
        return DEFAULT_GROUP
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise BadParameter(field, "prefix is longer than {} characters".format(
            MAX_PREFIX_LENGTH), value)
    for segment in prefix.split("/"):
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise BadParameter(
                field, "prefix must be '/'-separated segments of letters, digits "
                "and ._~- (no empty, '.' or '..' segments)", value)
    return prefix


class Plugin(object):
    """
    The ``registry`` built-in plugin (see the module docstring).

    :param settings: none (the plugin reads the configuration's
        ``registry`` and ``trusted_proxies`` keys).
    """

    settings_schema = {"type": "object", "properties": {},
                       "additionalProperties": False}

    def __init__(self, settings=None):
        self.settings = settings or {}
        self.gateway = None
        self.registry = None
        self.trusted = TrustedProxies()
        self._loop = None

    @hookimpl
    def init_worker(self, gateway):
        """Add the ``/upstream/*`` admin routes and start the cleanup timer."""
        self.gateway = gateway
        self.registry = gateway.registry
        self.trusted = TrustedProxies(gateway.config.get("trusted_proxies", ()))
        admin = gateway.admin
        for method in ("GET", "POST"):
            admin.route(method, "/upstream/add", self.add)
            admin.route(method, "/upstream/remove", self.remove)
        admin.route("GET", "/upstream/status", self.status)

        interval = gateway.config.get("registry", {}).get("cleanup_interval", 10)
        self._loop = LoopingCall(self._cleanup)
        self._loop.clock = gateway.reactor
        self._loop.start(interval, now=False).addErrback(
            lambda f: log.failure("registry cleanup timer stopped", f))
        gateway.on_stop(self._stop)

    def _stop(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _cleanup(self):
        """Remove expired registrations; never fails (a failure would end the
        ``LoopingCall``)."""
        d = maybeDeferred(self.registry.expire)
        d.addCallback(self._expired)
        d.addErrback(lambda f: log.failure("registry cleanup failed", f))
        return d

    def _expired(self, peers):
        now = self.registry.now()
        for peer in peers:
            log.info("registration of {server} expired (last heartbeat {age} s ago)",
                     server=_server(peer), prefix=peer.group.name, host=peer.host,
                     port=peer.port, age=now - peer.last_heartbeat)

    # -- admin handlers -------------------------------------------------

    def _target(self, request):
        """``(prefix, host, port)`` of an add/remove request."""
        args = request.args
        port = parse_port(args.get("port"))
        prefix = parse_prefix(args.get("prefix"))
        host = args.get("host")
        if host:
            host = parse_host(host)
        else:
            try:
                host = self.trusted.client_address(
                    request.client_addr, request.headers.get("x-real-ip"),
                    request.headers.get("x-forwarded-for"))
            except UntrustworthyHeader as e:
                raise BadParameter("host", e.message, e.value)
            if host is None:
                raise BadParameter("host", "host is required (the caller's "
                                   "address is unknown)", None)
        return prefix, host, port

    def add(self, request):
        """``/upstream/add``: register or heartbeat a server."""
        try:
            prefix, host, port = self._target(request)
            weight = parse_weight(request.args.get("weight"))
        except BadParameter as e:
            return 400, e.as_dict()
        peer, created = self.registry.register(prefix, host, port, weight)
        if created:
            log.info("registered {server} (weight {weight})", server=_server(peer),
                     prefix=prefix, host=host, port=port, weight=peer.weight)
        else:
            log.debug("heartbeat of {server}", server=_server(peer))
        return 200, {
            "success": True, "server": _server(peer), "prefix": prefix,
            "host": host, "port": port, "weight": peer.weight,
            "created": created, "static": peer.static,
            "expires_in": None if peer.static else self.registry.ttl,
        }

    def remove(self, request):
        """``/upstream/remove``: remove a registration."""
        try:
            prefix, host, port = self._target(request)
        except BadParameter as e:
            return 400, e.as_dict()
        fields = {"server": "{}:{}".format(prefix, _address(host, port)),
                  "prefix": prefix, "host": host, "port": port}
        group = self.registry.group(prefix)
        peer = group.peers.get((host, port)) if group is not None else None
        if peer is not None and peer.static:
            return 409, dict(fields, error="server is configured in upstreams and "
                             "cannot be removed at run time")
        if peer is None or not peer.is_live(self.registry.now()):
            if peer is not None:
                self.registry.deregister(prefix, host, port)  # expired: clean up
            return 404, dict(fields, error="server not registered")
        self.registry.deregister(prefix, host, port)
        log.info("removed {server}", server=fields["server"], prefix=prefix,
                 host=host, port=port)
        return 200, dict(fields, success=True, removed=fields["server"])

    def status(self, request):
        """``/upstream/status``: every group and its servers."""
        wanted = request.args.get("prefix")
        if wanted:
            try:
                wanted = parse_prefix(wanted)
            except BadParameter as e:
                return 400, e.as_dict()
        now = self.registry.now()
        groups = []
        total = 0
        for group in self.registry.groups():
            if wanted and group.name != wanted:
                continue
            servers = []
            live = 0
            for peer in sorted(group.peers.values(), key=lambda p: (p.host, p.port)):
                view = peer.as_dict()
                view["live"] = peer.is_live(now)
                live += view["live"]
                servers.append(view)
            if not servers:
                continue
            groups.append({"prefix": group.name, "servers": servers,
                           "live": live, "total": len(servers)})
            total += len(servers)
        return 200, {"groups": groups, "total_groups": len(groups),
                     "total_servers": total, "timestamp": now}


def _address(host, port):
    return "[{}]:{}".format(host, port) if ":" in host else "{}:{}".format(host, port)


def _server(peer):
    """The reference's ``prefix:host:port`` key (IPv6 hosts bracketed)."""
    return "{}:{}".format(peer.group.name, peer.address)
