# -*- test-case-name: tests.test_admin,tests.test_registry -*-
"""
The ``registry`` plugin: the admin API through which upstream servers
register, heartbeat and leave, and the timer that removes expired
registrations.

Endpoints (on the admin listener):

``GET /upstream/add?port=P[&host=H][&prefix=G][&weight=W][&max_conns=M][&routable=R]``
    Register ``H:P`` in group ``G``, or heartbeat it.  ``host`` defaults to
    the caller's address (the TCP peer; ``X-Real-IP`` / ``X-Forwarded-For``
    are believed only from an address in the ``trusted_proxies``
    configuration); an unspecified, broadcast or multicast address
    (``0.0.0.0``, ``::``, ``255.255.255.255``, ``224.0.0.1``) is refused;
    ``prefix`` defaults to ``default`` and one leading and one trailing ``/``
    are ignored (``/api`` is ``api``); ``weight`` is an integer from 1 to
    1000, 1 for a new server and unchanged on a heartbeat that leaves it out;
    ``max_conns`` (0 to 1000000, 0: no limit, the default) caps the requests
    in flight to it: a full server is skipped, and when all are full the
    request gets ``503 {"error": "all upstreams busy"}``; ``routable``
    (``true``/``false``) marks the group as one a request's path may choose
    or not (unchanged when left out; see the ``router``).  Answers
    ``{"success": true, "server": "prefix:host:port", "prefix", "host",
    "port", "weight", "max_conns", "created", "static", "routable",
    "expires_in"}``.  A new registration beyond ``registry.max_groups``,
    ``registry.max_servers_per_group`` or ``registry.max_servers`` is a
    ``409 {"error", "limit", "value"}`` (configured servers count too).

``GET /upstream/remove?port=P[&host=H][&prefix=G]``
    Remove a registration: ``200 {"success": true, "removed":
    "prefix:host:port", ...}``; ``404 {"error": "server not registered"}``
    if there is none (or it had expired), with ``"registered_under":
    [groups]`` when the server is registered under other prefixes; ``409``
    for a server of the configuration's ``upstreams`` (those cannot be
    removed at run time).

``GET /upstream/status[?prefix=G]``
    ``{"groups": [{"prefix", "servers": [...], "live", "healthy", "total",
    "routable"}], "total_groups", "total_servers", "timestamp"}``, groups
    sorted by name and servers by host and port.  Each server has a
    ``health`` object (:meth:`tproxy.health.HealthState.as_dict`):
    ``healthy``, ``ejections``, ``ejected_for`` (seconds left), ``fails``,
    ``last_error`` and ``last_check`` (``{"time", "kind"/"ok", "detail"}`` or
    ``null``).

``add`` and ``remove`` also accept ``POST``, with the parameters in the query
string or in an ``application/x-www-form-urlencoded`` body.  The JSON forms:
``POST /upstream/servers`` (or ``PUT``: register or heartbeat; ``201`` when
created) and ``DELETE /upstream/servers`` take the same parameters as the
members of a JSON object body (``{"port": 8080, "prefix": "api"}``) or in
the query; ``GET /upstream/servers`` is the status.  Bad parameters are a
``400 {"error": ..., "field": ..., "value": ...}`` and change nothing;
unknown parameters are ignored.  Every change (a new registration, a weight
or ``routable`` change, a removal) is an audit event
(:meth:`tproxy.admin.AdminRequest.audit`); a heartbeat that changes nothing
is not.

With ``registry.backend`` ``"redis"`` (:mod:`tproxy.registry_redis`) a
registration, heartbeat or removal is answered once Redis has it, and is a
``503 {"error": ...}`` with ``Retry-After: 1`` while Redis is unreachable
(the registry then serves what it had); ``/upstream/status`` reads the
instance's replica, with its own ``conn_count`` and ``total_requests``.

Every ``registry.cleanup_interval`` seconds a ``LoopingCall`` removes the
registrations whose last heartbeat is older than ``registry.ttl`` seconds (an
expired registration is never selected, even before it is removed).  The
plugin has no settings of its own: it reads the ``registry`` and
``trusted_proxies`` keys of the configuration.  The parameters are parsed by
:mod:`tproxy.builtins._registry_parameters` (whose names this module
re-exports); the status answer is made by
:mod:`tproxy.builtins._registry_status`.
"""

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from zope.interface import implementer

from tproxy import hookimpl
from tproxy.admin import AdminResponse
from tproxy.builtins._registry_parameters import (
    DEFAULT_GROUP, BadParameter, check_caller, parse_host, parse_max_conns, parse_port,
    parse_prefix, parse_routable, parse_weight, request_parameters)
from tproxy.builtins._registry_status import upstream_status
from tproxy.registry import IRegistryListener, IRegistryReplica, RegistryUnavailable
from tproxy import trust
from tproxy.trust import TrustedProxies, UntrustworthyHeader

__all__ = ["Plugin", "BadParameter", "parse_host", "parse_port", "parse_prefix",
           "parse_weight", "TrustedProxies", "DEFAULT_GROUP"]

log = Logger()


@implementer(IRegistryListener)
class Plugin(object):
    """
    The ``registry`` built-in plugin (see the module docstring).

    It follows the registry's changes (an :class:`IRegistryListener`) to
    count groups and servers for the ``registry.max_*`` limits in O(1).

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
        self._groups = 0    # groups and servers in the registry (limits)
        self._servers = 0

    @hookimpl
    def init_worker(self, gateway):
        """Add the ``/upstream/*`` admin routes and start the cleanup timer."""
        self.gateway = gateway
        if self.registry is not gateway.registry:
            self.registry = gateway.registry
            groups = self.registry.groups()
            self._groups = len(groups)
            self._servers = sum(len(g.peers) for g in groups)
            self.registry.subscribe(self)
        self.trusted = trust.configured(gateway.config)
        admin = gateway.admin
        for method in ("GET", "POST"):
            admin.route(method, "/upstream/add", self.add, shared=True,
                        changes=method == "GET")
            admin.route(method, "/upstream/remove", self.remove, shared=True,
                        changes=method == "GET")
        admin.route("GET", "/upstream/status", self.status)
        admin.route("GET", "/upstream/servers", self.status)
        admin.route("POST", "/upstream/servers", self.add, shared=True)
        admin.route("PUT", "/upstream/servers", self.add, shared=True)
        admin.route("DELETE", "/upstream/servers", self.remove, shared=True)

        config = gateway.config.get("registry", {})
        self.max_groups = config.get("max_groups", 10000)
        self.max_servers_per_group = config.get("max_servers_per_group", 10000)
        self.max_servers = config.get("max_servers", 100000)
        interval = config.get("cleanup_interval", 10)
        if IRegistryReplica.providedBy(self.registry):
            # a worker's replica (tproxy.replica): the parent expires, once
            return
        self._loop = LoopingCall(self._cleanup)
        self._loop.clock = gateway.reactor
        self._loop.start(interval, now=False).addErrback(
            lambda f: log.failure("registry cleanup timer stopped", f))
        gateway.on_stop(self._stop)

    # -- the counts of the limits (IRegistryListener) -------------------------

    def peer_added(self, peer):
        """A server joined (its group is new if it is the only one)."""
        self._servers += 1
        if len(peer.group.peers) == 1:
            self._groups += 1

    def peer_removed(self, peer):
        """A server left (its group is gone if the registry no longer has it)."""
        self._servers -= 1
        if self.registry.group(peer.group.name) is None:
            self._groups -= 1

    #: load changes do not matter to the limits: not called per request
    peer_changed = None

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
            log.info("registration of {server} expired (last heartbeat {age:.1f} s ago)",
                     server=_server(peer), prefix=peer.group.name, host=peer.host,
                     port=peer.port, age=now - peer.last_heartbeat)

    # -- admin handlers -------------------------------------------------

    def _target(self, args, request):
        """``(prefix, host, port)`` of an add/remove request."""
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
            check_caller(host)
        return prefix, host, port

    def _over_limit(self, prefix, host, port):
        """
        The ``409`` answer if registering a new ``host:port`` in ``prefix``
        would pass a ``registry.max_*`` limit, else ``None``.
        """
        group = self.registry.group(prefix)
        if group is not None:
            old = group.peers.get((host, port))
            if old is not None:
                return None   # a heartbeat (or a re-registration in its place)
            if len(group.peers) >= self.max_servers_per_group:
                return _limit("max_servers_per_group", self.max_servers_per_group,
                              prefix=prefix)
        if group is None and self._groups >= self.max_groups:
            return _limit("max_groups", self.max_groups, prefix=prefix)
        if self._servers >= self.max_servers:
            return _limit("max_servers", self.max_servers, prefix=prefix)
        return None

    def add(self, request):
        """``/upstream/add`` (and ``POST``/``PUT /upstream/servers``):
        register or heartbeat a server."""
        try:
            args = request_parameters(request)
            prefix, host, port = self._target(args, request)
            own = self.gateway.own_listener(host, port)
            if own is not None:
                raise BadParameter("port", "{} is tproxy's own {} listener: requests "
                                   "sent there would come back to it".format(
                                       _address(host, port), own), args.get("port"))
            weight = parse_weight(args.get("weight"))
            max_conns = parse_max_conns(args.get("max_conns"))
            routable = parse_routable(args.get("routable"))
        except BadParameter as e:
            return e.status, e.as_dict()
        refused = self._over_limit(prefix, host, port)
        if refused is not None:
            return refused
        old = None
        group = self.registry.group(prefix)
        if group is not None:
            old = group.peers.get((host, port))
        before = (old.weight if old else None, old.max_conns if old else None,
                  group.routable if group is not None else True)
        options = {}
        if max_conns is not None:
            options["max_conns"] = max_conns
        if routable is not None:
            options["routable"] = routable
        result = self.registry.register(prefix, host, port, weight, **options)
        if isinstance(result, Deferred):
            # a shared registry: answered once its store has the write
            return result.addCallbacks(self._added, _unavailable, callbackArgs=(
                request, prefix, host, port, routable, before))
        return self._added(result, request, prefix, host, port, routable, before)

    def _added(self, result, request, prefix, host, port, routable, before):
        peer, created = result
        old_weight, old_max_conns, old_routable = before
        group = peer.group
        changed = {}
        if routable is not None and old_routable != routable:
            changed["routable"] = routable
        if not created and old_weight is not None and peer.weight != old_weight:
            changed["weight"] = peer.weight
        if not created and old_max_conns is not None and peer.max_conns != old_max_conns:
            changed["max_conns"] = peer.max_conns
        if created:
            request.audit("upstream.add", server=_server(peer), prefix=prefix, host=host,
                          port=port, weight=peer.weight, max_conns=peer.max_conns,
                          routable=group.routable)
        elif changed:
            request.audit("upstream.change", server=_server(peer), prefix=prefix,
                          host=host, port=port, **changed)
        # (a plain heartbeat changes nothing and is not logged: a line per
        # heartbeat would cost more than the heartbeat)
        status = 201 if created and request.path == "/upstream/servers" else 200
        return status, {
            "success": True, "server": _server(peer), "prefix": prefix,
            "host": host, "port": port, "weight": peer.weight,
            "max_conns": peer.max_conns,
            "created": created, "static": peer.static, "routable": group.routable,
            "expires_in": None if peer.static else self.registry.ttl,
        }

    def remove(self, request):
        """``/upstream/remove`` (and ``DELETE /upstream/servers``): remove a
        registration."""
        try:
            args = request_parameters(request)
            prefix, host, port = self._target(args, request)
        except BadParameter as e:
            return e.status, e.as_dict()
        fields = {"server": "{}:{}".format(prefix, _address(host, port)),
                  "prefix": prefix, "host": host, "port": port}
        group = self.registry.group(prefix)
        peer = group.peers.get((host, port)) if group is not None else None
        if peer is not None and peer.static:
            return 409, dict(fields, error="server is configured in upstreams and "
                             "cannot be removed at run time")
        if getattr(self.registry, "shared", False):
            # the store decides (the replica may not have a registration
            # made through another instance a moment ago)
            d = self.registry.deregister(prefix, host, port)
            return d.addCallbacks(self._removed, _unavailable,
                                  callbackArgs=(request, fields, prefix, host, port))
        if peer is None or not peer.is_live(self.registry.now()):
            if peer is not None:
                self.registry.deregister(prefix, host, port)  # expired: clean up
            return self._not_registered(fields, prefix, host, port)
        self.registry.deregister(prefix, host, port)
        return self._removed(peer, request, fields, prefix, host, port)

    def _removed(self, peer, request, fields, prefix, host, port):
        if peer is None:
            return self._not_registered(fields, prefix, host, port)
        request.audit("upstream.remove", server=fields["server"], prefix=prefix,
                      host=host, port=port)
        return 200, dict(fields, success=True, removed=fields["server"])

    def _not_registered(self, fields, prefix, host, port):
        elsewhere = self._registered_under(host, port)
        if elsewhere:
            return 404, dict(
                fields, registered_under=elsewhere,
                error="server not registered under prefix {!r}; it is registered "
                      "under {} (pass {})".format(
                          prefix, ", ".join(repr(p) for p in elsewhere),
                          " or ".join("prefix=" + p for p in elsewhere)))
        return 404, dict(fields, error="server not registered")

    def _registered_under(self, host, port):
        """The groups where ``host:port`` is live (a scan: only for a
        ``remove`` that found nothing)."""
        now = self.registry.now()
        found = []
        for group in self.registry.groups():
            peer = group.peers.get((host, port))
            if peer is not None and peer.is_live(now):
                found.append(group.name)
        return found

    def status(self, request):
        """``/upstream/status``: every group and its servers."""
        wanted = request.args.get("prefix")
        if wanted:
            try:
                wanted = parse_prefix(wanted)
            except BadParameter as e:
                return 400, e.as_dict()
        return upstream_status(self.registry, getattr(self.gateway, "health", None),
                               wanted)


def _unavailable(failure):
    """The ``503`` answer of a write a shared registry could not make."""
    failure.trap(RegistryUnavailable)
    return AdminResponse(503, {"error": str(failure.value)}, [("Retry-After", "1")])


def _limit(name, value, **fields):
    """The ``409`` answer for the limit ``registry.<name>``."""
    return 409, dict(fields, error="limit reached: registry.{} is {}".format(name, value),
                     limit="registry." + name, value=value)


def _address(host, port):
    return "[{}]:{}".format(host, port) if ":" in host else "{}:{}".format(host, port)


def _server(peer):
    """The ``prefix:host:port`` name of a server in the answers (IPv6 hosts
    bracketed)."""
    return "{}:{}".format(peer.group.name, peer.address)
