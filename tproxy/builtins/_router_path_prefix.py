# -*- test-case-name: tests.test_routes -*-
"""
The built-in ``router`` plugin in ``path_prefix`` mode (see
:mod:`tproxy.builtins.router`, whose ``Plugin`` makes a
:class:`PathPrefixPlugin` for that mode).
"""

from tproxy import Response, direct, hookimpl
from tproxy.builtins import least_conn
from tproxy.builtins.router import Plugin
from tproxy.routing.route import match_path

#: The ``ctx.vars`` key of the groups that may serve a request in path-prefix
#: mode (most specific first).
GROUPS_VAR = "router.groups"


class PathPrefixPlugin(Plugin):
    """
    The router in ``path_prefix`` mode (``rewrite`` and ``balancer``
    phases; see the module docstring).

    The balancer asks a private :class:`tproxy.builtins.least_conn.Plugin`
    for the best peer of each matching group (its O(1) index per group) and
    takes the best of those: a request costs one pick per matching group,
    that is at most one per path segment plus one, however many groups and
    peers the registry holds.
    """

    mode = "path_prefix"

    def __init__(self, settings=None):
        Plugin.__init__(self, settings)
        self._least = least_conn.Plugin({})
        self._turn = 0

    @hookimpl
    def init_worker(self, gateway):
        """Start following the gateway's registry."""
        Plugin.init_worker(self, gateway)
        self._least.init_worker(gateway)

    @hookimpl
    @direct
    def rewrite(self, ctx):
        """
        Find every live group that may serve the request.

        :return: ``None``, or a ``503`` :class:`tproxy.Response` when none
            has a live peer.
        """
        if ctx.route is not None:
            return None  # an earlier rewrite plugin routed it
        registry = self._prepare(ctx)
        request = ctx.request
        path = request.path
        if "%" in path or "//" in path:
            path = match_path(path)   # (see the router's module docstring)
        now = registry.now()
        default = self.default_group
        live, dead = self._walk(registry, path, now)
        groups = [name for name, _ in reversed(live)]  # most specific first
        group = registry.group(default)
        if group is not None and group.has_live(now):
            groups.append(default)
        if not groups:
            ctx.route = dead if dead is not None else default
            ctx.error = "no_peer"
            return Response.error(503, "no live upstream", group=ctx.route)
        ctx.route = groups[0]
        ctx.upstream_path = request.uri
        ctx.vars[GROUPS_VAR] = tuple(groups)
        return None

    @hookimpl
    @direct
    def balancer(self, ctx, tried):
        """
        The live peer with the smallest ``active / weight`` among the
        groups :meth:`rewrite` found (skipping ``tried``): each group's
        ``least_conn`` choice, equal ones of different groups taking turns
        by weight.

        :return: a :class:`tproxy.registry.Peer`, or ``None`` (none left, or
            a request this router did not route).
        """
        groups = ctx.vars.get(GROUPS_VAR) if ctx.vars else None
        if groups is None:
            return None
        least = self._least
        if least._registry is not ctx.gateway.registry:
            least._attach(ctx.gateway)
        pick = least.choose
        best, best_score, ties = None, None, None
        for name in groups:
            peer = pick(name, tried, False)   # healthy peers first
            if peer is None:
                continue
            score = peer.active / (peer.weight * peer.ramp or 1)
            if best is None or score < best_score:
                best, best_score, ties = peer, score, None
            elif score == best_score:
                if ties is None:
                    ties = [best]
                ties.append(peer)
        if best is None:
            registry = least._registry
            if not tried and any(least._busy(g) for g in
                                 [registry.group(n) for n in groups] if g is not None):
                ctx.error = "no_peer"
                return Response.error(503, "all upstreams busy", group=ctx.route)
            # no healthy peer in any matching group (health.when_all_down)
            health = least._health
            if health is not None and not health.try_unhealthy():
                if not tried:
                    ctx.error = "no_peer"
                    return Response.error(503, "no healthy upstream", group=ctx.route)
                return None
            for name in groups:
                peer = pick(name, tried, True)
                if peer is not None:
                    return peer
            return None
        if ties is not None:
            # equal candidates of different groups take turns by weight
            # (their passes in their groups' least_conn do not compare)
            self._turn = turn = self._turn + 1
            weights = [p.weight for p in ties]
            k = turn % sum(weights)
            for peer, weight in zip(ties, weights):
                if k < weight:
                    return peer
                k -= weight
        return best
