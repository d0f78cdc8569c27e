# -*- test-case-name: tests.test_routes -*-
"""
The matcher: :class:`RouteTable` indexes compiled routes so that a request
finds the first route in precedence order without trying them all.

Per host (exact host, wildcard suffix, no host) a *bucket* holds a dict of
exact paths, a dict of prefixes, and the lists of regex and path-less
routes, each in ``(-priority, position)`` order.  A request looks up its
host and each parent domain, and each segment prefix of its path, longest
first (:func:`_prefix_keys`); buckets and tiers are visited in the order of
``match_mode``, so the first route found is the first in rank order
(:meth:`tproxy.routing.route.Route.rank`).  :meth:`RouteTable.matching` is
the slow, route-by-route definition the tests hold the index to.

A table is never changed: :meth:`RouteTable.replace` and
:meth:`RouteTable.without` build a new one, which the plugin swaps in.
"""

from tproxy.routing.route import (EXACT, HOST_EXACT, HOST_NAMES, HOST_WILD, NEED_BODY,
                                  PREFIX, REGEX, TIER_NAMES)

__all__ = ["RouteTable"]


def _order(route):
    return (-route.priority, route.position)


class _Bucket(object):
    """The routes of one host (exact or wildcard), or of no host."""

    __slots__ = ("exact", "prefix", "longest", "regex", "rest")

    def __init__(self):
        self.exact = {}
        self.prefix = {}
        self.longest = 0
        self.regex = []
        self.rest = []

    def add(self, route):
        if route.tier == EXACT:
            self.exact.setdefault(route.key, []).append(route)
        elif route.tier == PREFIX:
            self.prefix.setdefault(route.key, []).append(route)
            self.longest = max(self.longest, len(route.key))
        elif route.tier == REGEX:
            self.regex.append(route)
        else:
            self.rest.append(route)

    def seal(self):
        for table in (self.exact, self.prefix):
            for routes in table.values():
                routes.sort(key=_order)
        self.regex.sort(key=_order)
        self.rest.sort(key=_order)


def _first(routes, view):
    """The first of ``routes`` whose conditions hold: ``(route, found)``,
    :data:`NEED_BODY`, or ``None``."""
    for route in routes:
        found = route.accepts(view)
        if found is None:
            continue
        if found is NEED_BODY:
            return found
        return route, found
    return None


def _prefix_keys(path, longest):
    """The keys a prefix route may have to take ``path``, longest first,
    none longer than ``longest``: ``/a/b/c`` -> ``/a/b/c, /a/b, /a, /``."""
    if path[:1] != "/":
        return ()
    keys = []
    end = len(path)
    if end <= longest:
        keys.append(path)
    i = path.rfind("/", 0, min(end, longest + 1))
    while i > 0:
        keys.append(path[:i])
        i = path.rfind("/", 0, i)
    if not keys or keys[-1] != "/":
        keys.append("/")
    return keys


class RouteTable(object):
    """
    Routes indexed for matching: per host (exact, wildcard suffix, none), a
    dict of exact paths, a dict of prefixes, and the lists of regex and
    path-less routes, each in precedence order.

    :param routes: compiled :class:`~tproxy.routing.route.Route` objects, in
        configuration order.
    :param match_mode: ``"host_first"`` or ``"path_first"``.
    """

    def __init__(self, routes, match_mode="host_first"):
        self.routes = list(routes)
        self.match_mode = match_mode
        self.host_first = match_mode == "host_first"
        self.by_name = dict((r.name, r) for r in self.routes)
        self.hosts = {}
        self.wildcards = {}
        self.anyhost = _Bucket()
        for route in self.routes:
            if route.host_tier == HOST_EXACT:
                bucket = self.hosts.setdefault(route.host, _Bucket())
            elif route.host_tier == HOST_WILD:
                bucket = self.wildcards.setdefault(route.host, _Bucket())
            else:
                bucket = self.anyhost
            bucket.add(route)
        self.longest = 0
        for bucket in list(self.hosts.values()) + list(self.wildcards.values()) + [self.anyhost]:
            bucket.seal()
            self.longest = max(self.longest, bucket.longest)
        self._anyhost = [self.anyhost] if self.routes_without_host() else []

    def routes_without_host(self):
        """Whether some route has no host condition."""
        b = self.anyhost
        return bool(b.exact or b.prefix or b.regex or b.rest)

    def specs(self):
        """The route documents, in order."""
        return [r.spec for r in self.routes]

    def _buckets(self, host):
        """The buckets a request for ``host`` looks in, in host-tier order."""
        out = []
        if host:
            if self.hosts:
                b = self.hosts.get(host)
                if b is not None:
                    out.append(b)
            if self.wildcards:
                i = host.find(".")
                while i >= 0:
                    b = self.wildcards.get(host[i:])
                    if b is not None:
                        out.append(b)
                    i = host.find(".", i + 1)
        if self._anyhost:
            out.extend(self._anyhost)
        return out

    def match(self, view):
        """
        The route ``view`` takes.

        :param view: a :class:`~tproxy.routing.route.RequestView`
            (``RequestView.of(request)``).
        :return: ``(route, found)`` -- ``found`` being the regex match of a
            regex route, else ``True`` --, ``None`` when no route takes the
            request, or :data:`~tproxy.routing.route.NEED_BODY` when
            deciding needs the body (``view.body`` is ``None``).
        """
        buckets = self._buckets(view.host)
        if not buckets:
            return None
        path = view.path
        keys = _prefix_keys(path, self.longest) if self.longest else ()
        if self.host_first:
            for b in buckets:
                if b.exact:
                    routes = b.exact.get(path)
                    if routes is not None:
                        r = _first(routes, view)
                        if r is not None:
                            return r
                if b.prefix:
                    prefix = b.prefix
                    for key in keys:
                        routes = prefix.get(key)
                        if routes is not None:
                            r = _first(routes, view)
                            if r is not None:
                                return r
                if b.regex:
                    r = _first(b.regex, view)
                    if r is not None:
                        return r
                if b.rest:
                    r = _first(b.rest, view)
                    if r is not None:
                        return r
            return None
        for b in buckets:
            if b.exact:
                routes = b.exact.get(path)
                if routes is not None:
                    r = _first(routes, view)
                    if r is not None:
                        return r
        for key in keys:
            for b in buckets:
                routes = b.prefix.get(key)
                if routes is not None:
                    r = _first(routes, view)
                    if r is not None:
                        return r
        for b in buckets:
            if b.regex:
                r = _first(b.regex, view)
                if r is not None:
                    return r
        for b in buckets:
            if b.rest:
                r = _first(b.rest, view)
                if r is not None:
                    return r
        return None

    def matching(self, view):
        """
        Every route whose conditions hold for ``view``, in precedence order,
        found by trying each route (for introspection and tests: it scans).

        :return: a list of ``(route, found)``; a route needing a body that
            ``view`` lacks counts as not matching.
        """
        out = []
        for route in sorted(self.routes, key=lambda r: r.rank(self.host_first)):
            if not route.covers(view):
                continue
            found = route.accepts(view)
            if found is not None and found is not NEED_BODY:
                out.append((route, found))
        return out

    def explain(self, winner, runner_up):
        """Which precedence rule put ``winner`` before ``runner_up`` (a
        sentence; ``runner_up`` ``None`` when ``winner`` alone matched)."""
        if runner_up is None:
            return "the only matching route"
        host_first = self.host_first
        a, b = winner.rank(host_first), runner_up.rank(host_first)
        names = (("host", "path") if host_first else ("path", "host")) + ("priority", "position")
        for name, x, y in zip(names, a, b):
            if x == y:
                continue
            if name == "host":
                if x[0] != y[0]:
                    return "{} host beats {} host ({})".format(
                        HOST_NAMES[x[0]], HOST_NAMES[y[0]],
                        "host_first" if host_first else "path_first, same path tier")
                return "longer wildcard host suffix"
            if name == "path":
                if x[0] != y[0]:
                    return "{} path beats {} path".format(TIER_NAMES[x[0]], TIER_NAMES[y[0]])
                return "longer prefix beats shorter prefix"
            if name == "priority":
                return "higher priority ({} > {})".format(-x, -y)
            return "earlier in the list (position {} < {})".format(x, y)
        return "the only matching route"  # pragma: no cover (names are unique)

    def replace(self, route):
        """A new table with ``route`` in place of the one of its name (or
        added last)."""
        routes = [route if r.name == route.name else r for r in self.routes]
        if route.name not in self.by_name:
            routes.append(route)
        return self._renumbered(routes)

    def without(self, name):
        """A new table without the route called ``name``."""
        return self._renumbered([r for r in self.routes if r.name != name])

    def _renumbered(self, routes):
        # positions are the list order; a route keeps its compiled
        # conditions, so only the position changes
        return RouteTable([r.moved(i) for i, r in enumerate(routes)], self.match_mode)
