# -*- test-case-name: tests.test_routes,tests.test_routes_e2e -*-
"""
The ``routes`` plugin's admin API (:mod:`tproxy.builtins.routes`):
``GET /routes``, ``POST /routes``, ``GET|PUT|DELETE /routes/{name}`` and
``GET /routes/match``, as :class:`RoutesAdmin`, the plugin's base class,
which reads and swaps its ``table`` (and, with a Redis registry, writes
through its ``shared`` routes).  A change refuses query parameters (none is
read) and is an audit event.
"""

from tproxy.admin import AdminResponse
from tproxy.builtins._route_match import explain
from tproxy.config import ConfigError, json_error, loads_strict
from tproxy.registry import RegistryUnavailable
from tproxy.routing import compile_route, validate_route

__all__ = ["RoutesAdmin"]


class RoutesAdmin(object):
    """
    The handlers of the ``routes`` admin API: the base of
    :class:`tproxy.builtins.routes.Plugin`, which sets ``table``,
    ``shared``, ``max_routes`` and ``_configured``.
    """

    def list_routes(self, request):
        """``GET /routes``: every route, in order."""
        table = self.table
        return 200, {"routes": table.specs(), "match_mode": table.match_mode,
                     "total": len(table.routes)}

    def get_route(self, request):
        """``GET /routes/{name}``: one route."""
        name = request.params["name"]
        route = self.table.by_name.get(name)
        if route is None:
            return 404, {"error": "no such route", "name": name}
        return 200, route.spec

    def post_route(self, request):
        """``POST /routes``: add a route (JSON body with its ``name``);
        ``409`` if the name is taken."""
        refused, obj = _route_body(request, "POST /routes")
        if refused is not None:
            return refused
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return 400, {"error": "the body must be a route object with a name",
                         "field": "name"}
        if obj["name"] in self.table.by_name:
            return 409, {"error": "route exists (PUT /routes/{name} replaces it)",
                         "name": obj["name"]}
        return self._put(request, obj["name"], obj)

    def put_route(self, request):
        """``PUT /routes/{name}``: add or replace a route (JSON body)."""
        refused, obj = _route_body(request, "PUT /routes/{name}")
        if refused is not None:
            return refused
        return self._put(request, request.params["name"], obj)

    def _put(self, request, name, obj):
        if isinstance(obj, dict):
            obj.setdefault("name", name)
            if obj["name"] != name:
                return 400, {"error": "the body's name {!r} is not the name in the "
                                      "path {!r}".format(obj["name"], name),
                             "field": "name"}
        table = self.table
        try:
            spec = validate_route(obj)
            route = compile_route(spec, len(table.routes))
        except ConfigError as e:
            return 400, {"error": e.problem, "field": e.path,
                         "errors": [{"field": p, "error": m} for p, m in e.errors]}
        created = name not in table.by_name
        if created and len(table.routes) >= self.max_routes:
            return 409, {"error": "limit reached: max_routes is {}".format(self.max_routes),
                         "limit": "max_routes", "value": self.max_routes}
        if self.shared is not None:
            refused = self._configured_refusal(name)
            if refused is not None:
                return refused
            d = self.shared.put(name, spec, create_only=request.method == "POST")
            return d.addCallbacks(self._shared_put, _unavailable,
                                  callbackArgs=(request, name, spec))
        self.table = table.replace(route)
        return _put_done(request, name, spec, created)

    def _shared_put(self, outcome, request, name, spec):
        if outcome == "exists":
            return 409, {"error": "route exists (PUT /routes/{name} replaces it)",
                         "name": name}
        return _put_done(request, name, spec, outcome == "created")

    def _configured_refusal(self, name):
        """The ``409`` for a change of a configured route in shared mode."""
        if any(r.name == name for r in self._configured):
            return 409, {"error": "route {!r} is in this instance's configuration "
                                  "(routes settings): change it there".format(name),
                         "name": name}
        return None

    def delete_route(self, request):
        """``DELETE /routes/{name}``: remove a route."""
        refused = _no_query(request, "DELETE /routes/{name}")
        if refused is not None:
            return refused
        if request.body:
            return 400, {"error": "DELETE /routes/{name} takes no body (the path "
                                  "names the route)", "field": "body", "value": None}
        name = request.params["name"]
        if self.shared is not None:
            refused = self._configured_refusal(name)
            if refused is not None:
                return refused
            d = self.shared.delete(name)
            return d.addCallbacks(_shared_deleted, _unavailable,
                                  callbackArgs=(request, name))
        table = self.table
        if name not in table.by_name:
            return 404, {"error": "no such route", "name": name}
        self.table = table.without(name)
        request.audit("route.delete", route=name)
        return 200, {"deleted": name}

    def match_route(self, request):
        """``GET /routes/match``: which route a request would take
        (:func:`tproxy.builtins._route_match.explain`)."""
        return explain(self, request)


def _route_body(request, endpoint):
    """``(refusal, route object)`` of a ``POST`` / ``PUT``: its JSON body, or
    the ``400`` of query parameters (none is read) or of a body that is not
    JSON."""
    refused = _no_query(request, endpoint)
    if refused is not None:
        return refused, None
    try:
        return None, loads_strict(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return (400, {"error": "the body is not JSON: {}".format(json_error(e)),
                      "field": ""}), None


def _put_done(request, name, spec, created):
    """The answer of a route added or replaced, audited."""
    request.audit("route.add" if created else "route.replace", route=name,
                  group=spec.get("group"))
    return (201 if created else 200), {"route": spec, "created": created}


def _no_query(request, endpoint):
    """The ``400`` answer for a change given query parameters (none is read:
    ``?group=`` would otherwise be dropped without a word), or ``None``."""
    if not request.args:
        return None
    name = sorted(request.args)[0]
    return 400, {"error": "unknown parameter {!r} ({} takes no parameters: the "
                          "route is the JSON body)".format(name, endpoint),
                 "field": name, "value": request.args[name]}


def _shared_deleted(existed, request, name):
    if not existed:
        return 404, {"error": "no such route", "name": name}
    request.audit("route.delete", route=name)
    return 200, {"deleted": name}


def _unavailable(failure):
    """The ``503`` answer of a change the shared routes could not take."""
    failure.trap(RegistryUnavailable)
    return AdminResponse(503, {"error": str(failure.value)}, [("Retry-After", "1")])
