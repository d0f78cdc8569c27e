# -*- test-case-name: tests.test_routes,tests.test_routes_e2e -*-
"""
The built-in ``routes`` plugin: declarative routing rules (the matcher is
:mod:`tproxy.routing`) in the ``rewrite`` phase, a pinned peer in the
``balancer`` phase, and an admin API to change and question them at run time.

Configured through its settings (see ``docs/routing.md`` for the whole
story)::

    {"name": "routes", "settings": {
        "match_mode": "host_first",
        "routes": [
            {"name": "users", "group": "api",
             "match": {"path": {"mode": "prefix", "value": "/api/users"},
                       "methods": ["GET"], "headers": {"X-Env": "canary"}},
             "strip_prefix": true},
            {"name": "item", "group": "shop", "peer": "10.0.0.7:8080",
             "match": {"path": {"mode": "regex", "value": "^/item/([0-9]+)$"}},
             "rewrite": "/items/\\\\1"}]}}

What a route matches and which route wins (``match_mode``) are described in
:mod:`tproxy.routing`.

The routing decision sets ``ctx.route`` (the ``group``),
``ctx.upstream_path`` (after the transforms ``fake_prefix``,
``strip_prefix``, ``rewrite``; the query string is kept),
``ctx.upstream_headers`` (``X-Route-Prefix: <group>`` plus the route's
``upstream_headers``; a client's ``X-Route-Prefix`` is removed, never
believed) and ``ctx.vars["route"]`` (the route's name).  A request no route
takes is left to the next ``rewrite`` plugin (the ``router``), or answered
``404`` with ``"unmatched": "404"``.  A ``body_contains`` route makes
``rewrite`` read the first ``body_limit`` bytes of the body first.

The admin API: ``GET /routes``, ``POST /routes`` (a new route, named in
its JSON body), ``GET|PUT|DELETE /routes/{name}`` (a change builds a new
table and swaps it: a request keeps the route it started with; at most
``max_routes`` routes, ``409`` beyond), and ``GET /routes/match`` (which
route a request would take, why, and the peer it would get).  Every change
is an audit event (:meth:`tproxy.admin.AdminRequest.audit`).

With ``registry.backend`` ``"redis"`` the routes made through the admin API
are shared by the fleet (:class:`tproxy.shared_routes.SharedRoutes`): a
change is answered once Redis has it (``503`` while Redis is unreachable)
and every instance rebuilds its table when it hears of it; the routes of the
settings stay per-instance configuration, after which the shared ones come
in the order they were created (changing or deleting a configured one
through the API is a ``409``).

The admin API's handlers are :mod:`tproxy.builtins._routes_admin`;
``GET /routes/match`` (which route a request would take, and why) is
:mod:`tproxy.builtins._route_match`.

List it before ``router`` (which leaves alone a request an earlier plugin
routed) and before ``least_conn`` (its ``balancer`` answers only for routes
with a pinned ``peer``).
"""

from twisted.logger import Logger

from tproxy import Response, hookimpl, watch_field
from tproxy.builtins._routes_admin import RoutesAdmin
from tproxy.config import ConfigError
from tproxy.routing import (NEED_BODY, ROUTE_SCHEMA, RequestView, RouteTable,
                            compile_route, compile_routes, validate_route)

__all__ = ["Plugin", "SETTINGS_SCHEMA"]

log = Logger()

#: The JSON Schema of the plugin's settings.
SETTINGS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "match_mode": {"enum": ["host_first", "path_first"], "default": "host_first"},
        "unmatched": {"enum": ["next", "404"], "default": "next"},
        "body_limit": {"type": "integer", "minimum": 1, "maximum": 16 * 1024 * 1024,
                       "default": 65536},
        "routes": {"type": "array", "items": ROUTE_SCHEMA, "default": []},
        # how many routes the admin API may make the table hold (409 beyond)
        "max_routes": {"type": "integer", "minimum": 1, "default": 10000},
    },
}

#: The ``ctx.vars`` key of the route that took the request (private: the
#: balancer reads it; ``ctx.vars["route"]`` is its name).
_ROUTE_VAR = "_routes.route"

_HEADER = "X-Route-Prefix"
_HEADER_LOWER = b"x-route-prefix"
_HEADER_LEN = len(_HEADER_LOWER)
# (the reader notes a client's: Request.watched)
watch_field(_HEADER_LOWER)


class Plugin(RoutesAdmin):
    """
    Declarative routes (``rewrite``), pinned peers (``balancer``) and the
    ``/routes`` admin API (see the module docstring).

    :param settings: ``{"match_mode", "unmatched", "body_limit", "routes"}``
        (:data:`SETTINGS_SCHEMA`).
    :raises ConfigError: for a bad route, naming its JSON path within the
        settings (``routes[2].match.path.value``).
    """

    settings_schema = SETTINGS_SCHEMA

    def __init__(self, settings=None):
        settings = settings or {}
        self.match_mode = settings.get("match_mode", "host_first")
        self.unmatched_404 = settings.get("unmatched", "next") == "404"
        self.body_limit = settings.get("body_limit", 65536)
        self.max_routes = settings.get("max_routes", 10000)
        self.table = compile_routes(settings.get("routes", []), self.match_mode)
        self.gateway = None
        #: the fleet's shared routes (``registry.backend: redis``), or ``None``
        self.shared = None
        self._configured = list(self.table.routes)

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Serve the ``/routes`` admin API."""
        self.gateway = gateway
        admin = gateway.admin
        shared = getattr(gateway.registry, "shared_routes", None)
        # (routes kept in a shared registry: every process reads them there)
        writes = {"shared": shared is not None}
        admin.route("GET", "/routes", self.list_routes)
        admin.route("POST", "/routes", self.post_route, **writes)
        admin.route("GET", "/routes/match", self.match_route)
        admin.route("GET", "/routes/{name}", self.get_route)
        admin.route("PUT", "/routes/{name}", self.put_route, **writes)
        admin.route("DELETE", "/routes/{name}", self.delete_route, **writes)
        if shared is not None:
            self.shared = shared
            shared.listen(self._rebuild)
            gateway.on_stop(lambda: shared.unlisten(self._rebuild))
            self._rebuild()

    def _rebuild(self):
        """The table of the configured routes, then the shared ones."""
        routes = list(self._configured)
        names = set(r.name for r in routes)
        for spec in self.shared.specs():
            name = spec.get("name") if isinstance(spec, dict) else None
            if name in names:
                continue
            try:
                routes.append(compile_route(validate_route(spec), len(routes)))
            except ConfigError as e:
                log.warn("routes: the shared route {name!r} is invalid ({error}); "
                         "ignored", name=name, error=str(e))
                continue
            names.add(name)
        self.table = RouteTable(routes, self.match_mode)

    @hookimpl
    def rewrite(self, ctx):
        """
        Route the request by the first matching rule.

        :return: ``None``, a Deferred of it (a ``body_contains`` route had to
            read the body), or a ``404`` :class:`tproxy.Response` with
            ``"unmatched": "404"``.
        """
        table = self.table  # one table for the whole decision
        request = ctx.request
        view = RequestView.of(request)
        found = table.match(view)
        if found is NEED_BODY:
            d = ctx.read_body_prefix(self.body_limit)
            return d.addCallback(self._with_body, ctx, table, view)
        return self._decided(ctx, found, view)

    def _with_body(self, body, ctx, table, view):
        view.body = bytes(body[:self.body_limit])
        return self._decided(ctx, table.match(view), view)

    def _decided(self, ctx, found, view):
        if found is None:
            if self.unmatched_404:
                ctx.error = "no_route"
                return Response.error(404, "no route matched", path=ctx.request.path)
            return None
        route, match = found
        request = ctx.request
        if request.watched is None or _HEADER_LOWER in request.watched:
            for name, _ in request.headers.raw:
                if len(name) == _HEADER_LEN and name.lower() == _HEADER_LOWER:
                    request.headers.remove(_HEADER)
                    break
        ctx.route = route.group
        ctx.upstream_path = route.forwarded(view, match)
        ctx.vars["route"] = route.name
        ctx.vars[_ROUTE_VAR] = route
        headers = ctx.upstream_headers
        extra = route.extra_headers
        if headers:
            names = {n.lower() for n, _ in extra}
            names.add("x-route-prefix")
            headers[:] = [h for h in headers if _text(h[0]).lower() not in names]
        headers.append((_HEADER, route.group))
        if extra:
            headers.extend(extra)
        if route.has_max_body:
            ctx.max_body_size = route.max_body
        return None

    @hookimpl
    def balancer(self, ctx, tried):
        """
        The pinned peer of the request's route, if it has one.

        :return: ``None`` (not pinned: the next balancer chooses), the
            :class:`~tproxy.registry.Peer`, a ``503`` when it is not a live
            member of the group (or is unhealthy, with ``health.when_all_down``
            ``"503"``: it is the only candidate), or a ``502`` when it failed
            already (a pinned route never moves to another peer).
        """
        route = ctx.vars.get(_ROUTE_VAR) if ctx.vars else None
        if route is None or route.peer_key is None:
            return None
        gateway = ctx.gateway
        peer = self._pinned(gateway.registry, route)
        if peer is None:
            ctx.error = "no_peer"
            return Response.error(503, "no live upstream", group=route.group,
                                  peer=route.peer, route=route.name)
        if tried and peer in tried:
            return Response.error(502, "pinned upstream failed", upstream=peer.address,
                                  route=route.name)
        if peer.max_conns and peer.active >= peer.max_conns:
            ctx.error = "no_peer"
            return Response.error(503, "all upstreams busy", group=route.group,
                                  peer=route.peer, route=route.name)
        if not peer.healthy and not gateway.health.try_unhealthy():
            ctx.error = "no_peer"
            return Response.error(503, "no healthy upstream", group=route.group,
                                  peer=route.peer, route=route.name)
        return peer

    def _pinned(self, registry, route):
        group = registry.group(route.group)
        peer = group.peers.get(route.peer_key) if group is not None else None
        if peer is None or not peer.is_live(registry.now()):
            return None
        return peer


def _text(s):
    return s.decode("latin-1") if isinstance(s, bytes) else str(s)
