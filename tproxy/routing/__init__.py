"""
Declarative routing rules (nginx ``location``, Kong and APISIX routes,
tl-ops-manage's API / cookie / header / argument / body strategies): what a
route matches, which route wins, and what it sends upstream.  The
``routes`` plugin (:mod:`tproxy.builtins.routes`) applies them; see
``docs/routing.md`` for the whole story.

A route matches when every condition of its ``match`` holds: ``path``
(``prefix`` at a segment boundary, ``exact``, ``regex``, ``regexi``; a bare
string is a prefix), ``host`` (exact, ``[::1]`` for an IPv6 address, or
``*.example.com`` for any sub-domain), ``methods`` (case-sensitive:
``GET``), and exact values of ``headers``, ``cookies`` and ``args``.
``body_contains`` is a substring of the first ``body_limit`` bytes of the
body, read with ``ctx.read_body_prefix(n)`` only when such a route is the
best candidate left.

Precedence, deterministic: every route has a static rank, and the request
takes the first route in rank order whose conditions all hold.  The rank is
``(host tier, path tier, -priority, position)`` with ``match_mode``
``host_first`` (the default), ``(path tier, host tier, -priority,
position)`` with ``path_first``:

- path tier: ``exact`` < ``prefix`` (the longer first) < ``regex`` /
  ``regexi`` < no path condition at all;
- host tier: exact host < wildcard (the longer suffix first) < no host;
- then the higher ``priority``, then the earlier in the list.

Cost: exact and prefix routes sit in dictionaries by path, per host; a
request costs one lookup per path segment and per host label, whatever the
number of routes.  Regex routes (and routes without a path) are tried one by
one, in rank order, only when no better-ranked route took the request.
Regexes run on RE2 (``google-re2``), or where it is missing (PyPy) on
:mod:`tproxy.routing.linear_re`: linear time either way, no backtracking.

The modules:

- :mod:`tproxy.routing.spec`: the JSON Schema of a route, its validation
  and compilation (errors named by JSON path);
- :mod:`tproxy.routing.route`: one compiled :class:`Route`, and the
  :class:`RequestView` its conditions read;
- :mod:`tproxy.routing.table`: the :class:`RouteTable` index and the
  precedence order;
- :mod:`tproxy.routing.hosts`: a route's host checked, and hosts spelled
  the one way they are matched on;
- :mod:`tproxy.routing.linear_re`: the linear-time regex engine used where
  RE2 is missing.
"""

from tproxy.routing.route import NEED_BODY, RequestView, Route
from tproxy.routing.spec import ROUTE_SCHEMA, compile_route, compile_routes, validate_route
from tproxy.routing.table import RouteTable

__all__ = ["Route", "RequestView", "NEED_BODY", "RouteTable", "ROUTE_SCHEMA",
           "validate_route", "compile_route", "compile_routes"]
