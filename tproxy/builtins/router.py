# -*- test-case-name: tests.test_router,tests.test_routes -*-
"""
The built-in ``router`` plugin: choose the upstream group of a request from
its path.  Two modes (setting ``mode``):

- ``"group"`` (the default): the longest group prefix at a segment
  boundary takes the request and is stripped (below);
- ``"path_prefix"``: every group whose prefix the path has, and
  the fallback group, may serve it, the path unchanged; the router then also
  balances, least-connections over all their live peers (see
  :class:`PathPrefixPlugin`).

A request an earlier ``rewrite`` plugin routed already (``ctx.route`` set,
say by ``routes``) is left alone in both modes.

Group mode
----------

With groups ``api`` and ``api/v2`` (each with a live peer):

======================  ===========  ==================
request target          group        sent upstream as
======================  ===========  ==================
``/api/v2/x``           ``api/v2``   ``/x``
``/api/v1/users?q=1``   ``api``      ``/v1/users?q=1``
``/api``                ``api``      ``/``
``/apix``               ``default``  ``/apix``
``/other/path``         ``default``  ``/other/path``
======================  ===========  ==================

Rules:

- Only groups with at least one live peer take part (a group whose every
  peer's TTL has passed is skipped: ``/api/x`` then goes to ``default``).
- A group marked not routable (``upstreams.NAME.routable: false``,
  ``/upstream/add?routable=false``) never takes a request by its path: it
  is for a balancer plugin or a route that names it (``/canary/x`` then
  goes to ``default`` as ``/canary/x``).  The same holds in path-prefix
  mode.
- Matching is on the path in the one spelling the ``routes`` plugin
  matches on (:func:`tproxy.routing.route.match_path`, as nginx's
  ``location`` after decoding and ``merge_slashes``): dot segments resolved
  (by tproxy, before routing), percent-encoded unreserved characters decoded
  and runs of ``/`` merged, so ``/%61pi/x`` and ``//api//x`` are ``/api/x``;
  ``%2F`` stays encoded, so ``/api%2Fv2/x`` has the one segment ``api%2Fv2``
  and matches neither ``api`` nor ``api/v2``.  A path a group takes goes
  upstream in that spelling, past the prefix; one no group takes goes to the
  fallback group as it came.
- A path that matches no group goes to the fallback group (``default``,
  setting ``default_group``) with its path *unchanged*.  The fallback group
  is never a prefix itself: ``/default/x`` reaches ``default`` as
  ``/default/x``, not as ``/x`` (the fallback is the catch-all, and a
  catch-all that sometimes rewrites paths surprises; deeper groups such as
  ``default/v2`` are matched normally).
- No live peer in the matched group nor in the fallback: the request ends
  with ``503`` and ``{"error": "no live upstream", "group": NAME}``, where
  NAME is the longest group the path named (its peers have all expired) or
  the fallback group.
- The group comes from the path only.  A client-sent ``X-Route-Prefix`` is
  removed from ``ctx.request.headers`` (later plugins never see it) and
  ``X-Route-Prefix: <group>`` is added to ``ctx.upstream_headers``.

Sets ``ctx.route`` (the group name) and ``ctx.upstream_path`` (path and
query).  Cost per request: one dict lookup per path segment, and only as long
as the segments walked are a prefix of some group name, so a request costs
the same with 1 or 10,000 groups.  The set of prefixes is kept current as an
:class:`tproxy.registry.IRegistryListener`.

Path-prefix mode
----------------
Servers register with ``prefix=/api`` (``/api`` and ``api`` are the same
group); servers registered without a prefix are in the fallback group and
serve every path.  ``/api/users`` may go to the servers of ``api`` and of the
fallback group (and of ``api/users`` if there is one), ``/apix`` and
``/other`` to the fallback group's only; the one chosen is the live peer with
the smallest ``active / weight`` among them all (each group's candidate
chosen by ``least_conn``, weighted turns within a group; equal candidates of
different groups take turns by weight) (only healthy peers while one is left: :mod:`tproxy.health`).  The
path is forwarded unchanged; ``ctx.route`` is the most specific matching group
with a live peer (the peer may belong to another of the matching groups:
``ctx.peer.group.name``); a client's ``X-Route-Prefix`` is removed and none is
added.  No live peer in any matching group: ``503`` as in group mode.
"""

from zope.interface import implementer

from tproxy import Response, direct, hookimpl, watch_field
from tproxy.builtins._router_groups import GroupNames
from tproxy.registry import INFINITY, IRegistryListener
from tproxy.routing.route import match_path

_HEADER = "X-Route-Prefix"
_HEADER_LOWER = b"x-route-prefix"
_HEADER_LEN = len(_HEADER_LOWER)
# the reader notes whether a request carries one (Request.watched): the
# usual request, without it, is not looked through
watch_field(_HEADER_LOWER)


@implementer(IRegistryListener)
class Plugin(GroupNames):
    """
    The prefix router (``rewrite`` phase).

    ``Plugin({"mode": "path_prefix"})`` makes a :class:`PathPrefixPlugin`
    (which also implements ``balancer``; group mode does not, so that it costs
    the balancer phase nothing).

    :param settings: ``{"default_group": "default", "mode": "group"}``: the
        group that receives requests no prefix matches, and the mode.
    """

    settings_schema = {
        "type": "object",
        "properties": {
            "default_group": {
                "type": "string",
                "default": "default",
                "pattern": "^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$",
                "description": "the group of requests no prefix matches "
                               "(forwarded with the path unchanged)",
            },
            "mode": {
                "enum": ["group", "path_prefix"],
                "default": "group",
                "description": "group: the longest group prefix takes the request "
                               "and is stripped; path_prefix: every group whose "
                               "prefix the path has, and the default group, may "
                               "serve it, path unchanged",
            },
        },
        "additionalProperties": False,
    }

    mode = "group"

    def __new__(cls, settings=None):
        if cls is Plugin and (settings or {}).get("mode") == "path_prefix":
            # (a subclass of this one, in a module of its own)
            from tproxy.builtins._router_path_prefix import PathPrefixPlugin as cls
        return object.__new__(cls)

    def __init__(self, settings=None):
        settings = settings or {}
        self.default_group = settings.get("default_group", "default")
        self._registry = None
        # group names known to exist, and every segment-prefix of them with
        # the number of names it is a prefix of (a flattened trie: the walk
        # stops at the first candidate that leads to no group), and the names
        # a request's first segment routes to in one step: GroupNames
        self._names = set()
        self._prefix_count = {}
        self._leaves = set()

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Start following the gateway's registry."""
        if self._registry is not gateway.registry:
            self._attach(gateway.registry)

    def _walk(self, registry, path, now):
        """
        The groups named by ``path``'s leading segments, walked segment by
        segment (one dict lookup each, and only while the segments walked
        are a prefix of some group name).

        :return: ``(live, dead)``: ``[(group name, end of its prefix in
            path)]`` of the groups with a live peer, shortest first; and the
            longest named group without one (``None``).
        """
        live = []
        dead = None
        prefix_count = self._prefix_count
        if not prefix_count or path[:1] != "/":
            return live, dead
        names = self._names
        default = self.default_group
        n = len(path)
        i = 1
        while i < n:
            j = path.find("/", i)
            stop = j if j >= 0 else n
            if stop == i:
                break  # empty segment: no group name has one
            candidate = path[1:stop]
            count = prefix_count.get(candidate)
            if count is None:
                break  # no group name starts with these segments
            if candidate != default:
                group = registry.group(candidate)
                if group is not None and group.routable:
                    if group.has_live(now):
                        live.append((candidate, stop))
                    else:
                        dead = candidate
            if j < 0 or (count == 1 and candidate in names):
                # (the path ends; or the candidate is a group name that no
                # other name starts with: none longer can be one, and the
                # usual path, "/<group>/...", takes one pass, so PyPy traces
                # the loop inline instead of compiling it apart)
                break
            i = j + 1
        return live, dead

    def _prepare(self, ctx):
        """
        Follow the gateway's registry, and drop a client-sent X-Route-Prefix:
        never believe it (the upstream would take a client's word for the
        route).
        """
        registry = ctx.gateway.registry
        if registry is not self._registry:
            self._attach(registry)
        request = ctx.request
        if request.watched is None or _HEADER_LOWER in request.watched:
            _drop_header(request.headers)
        return registry

    @hookimpl
    @direct
    def rewrite(self, ctx):
        """
        Route the request (see the module docstring).

        :return: ``None``, or a ``503`` :class:`tproxy.Response` when no group
            that could take the request has a live peer.
        """
        if ctx.route is not None:
            return None  # an earlier rewrite plugin routed it
        # (_prepare inlined: a call costs more than its work here)
        registry = ctx.gateway.registry
        if registry is not self._registry:
            self._attach(registry)
        request = ctx.request
        watched = request.watched
        if watched is None or _HEADER_LOWER in watched:
            _drop_header(request.headers)
        path = request.path
        if "%" in path or "//" in path:
            path = match_path(path)   # (no other spelling passes by a group)
        route = None
        # The usual request: its first segment is a group name that no other
        # name starts with (_leaves), of a routable group with a live peer:
        # what _walk finds in one step, without its lists (the clock read
        # only for a group that can expire).
        parts = path.split("/", 2)
        n = len(parts)
        if n > 1 and parts[1] in self._leaves and not parts[0]:
            name = parts[1]
            group = registry.group(name)
            if group is not None and group.routable and (
                    group.live_until == INFINITY or group.live_until > registry.now()):
                route = name
        if route is None:
            # (Plugin._route, not self._route: the plugin manager gives the
            # instance an ordinary dict, through which CPython 3.11 does not
            # specialise a method call: a generic lookup each)
            found = Plugin._route(self, ctx, registry, request, path)
            if type(found) is not tuple:
                return found    # the 503
            route, upstream_path = found
        else:
            rest = "/" + parts[2] if n > 2 else "/"
            query = request.query
            upstream_path = rest + "?" + query if query else rest
        ctx.upstream_path = upstream_path
        ctx.route = route
        headers = ctx.upstream_headers
        if headers:
            headers[:] = [h for h in headers
                          if h[0].lower() not in ("x-route-prefix", _HEADER_LOWER)]
        headers.append((_HEADER, route))
        return None

    def _route(self, ctx, registry, request, path):
        """
        The route of a request by the walk of its path.

        :return: ``(group name, upstream path)``, or the ``503``
            :class:`tproxy.Response`.
        """
        now = registry.now()
        default = self.default_group
        live, dead = Plugin._walk(self, registry, path, now)
        if live:
            route, end = live[-1]   # the longest
            rest = path[end:] or "/"
            return route, rest + "?" + request.query if request.query else rest
        group = registry.group(default)
        if group is None or not group.has_live(now):
            ctx.route = dead if dead is not None else default
            ctx.error = "no_peer"
            return Response.error(503, "no live upstream", group=ctx.route)
        return default, request.uri


def _drop_header(headers):
    """Remove a client's X-Route-Prefix from ``headers``; look before
    removing: remove() rebuilds the list."""
    for name, _ in headers.raw:
        if len(name) == _HEADER_LEN and name.lower() == _HEADER_LOWER:
            headers.remove(_HEADER)
            break


__all__ = ["Plugin"]
