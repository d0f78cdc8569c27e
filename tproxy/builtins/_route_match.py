# -*- test-case-name: tests.test_routes_e2e -*-
"""
``GET /routes/match`` of the ``routes`` plugin (:mod:`tproxy.builtins.routes`):
which route a request described by the query would take and why (the
rule that ranked it first, the other routes it matched), or that the
``router`` decides, the path and fields it would go upstream with, and the
peer the balancer would choose now, without acquiring it.
"""

import json
import re

from twisted.internet.defer import maybeDeferred

from tproxy import Request, RequestContext, Response
from tproxy.http.headers import Headers
from tproxy.http.target import normalize_path
from tproxy.http.wire import BadRequest
from tproxy.routing import NEED_BODY, RequestView

__all__ = ["explain"]


def explain(plugin, request):
    """
    The answer of ``GET
    /routes/match?method=&host=&path=[&query=][&header.NAME=][&body=]``
    for the ``routes`` plugin ``plugin``: which route the request would
    take, why, the upstream path, and the peer the balancer would choose
    now (nothing is acquired).
    """
    args = request.args
    refused = _bad_parameter(args)
    if refused is not None:
        return 400, refused
    path = args.get("path")
    if not path or not path.startswith("/"):
        return 400, {"error": "path is required and starts with '/'",
                     "field": "path", "value": path}
    path, _, query = path.partition("?")
    try:
        path = normalize_path(path)  # as a request's (tproxy.http.target)
    except BadRequest as e:
        return 400, {"error": e.message, "field": "path", "value": args["path"]}
    query = args.get("query", query)
    method = (args.get("method") or "GET").upper()
    host = args.get("host") or ""
    fields = []
    if host:
        fields.append((b"Host", host.encode("latin-1", "replace")))
    for key, value in sorted(args.items()):
        if key.lower().startswith("header."):
            fields.append((key[7:].encode("latin-1", "replace"),
                           value.encode("latin-1", "replace")))
    body = args.get("body")
    req = Request(method, path, query, headers=Headers(fields))
    ctx = RequestContext(plugin.gateway, req)
    table = plugin.table
    view = RequestView.of(req, body.encode("utf-8") if body is not None else None)
    found = table.match(view)
    answer = {"request": {"method": method, "host": req.host, "path": path,
                          "query": query},
              "match_mode": table.match_mode}
    if found is NEED_BODY:
        answer.update(route=None, decided_by=None, needs_body=True,
                      rule="a body_contains route ranks first: pass body=")
        return 200, answer
    if found is not None:
        route = found[0]
        ranked = table.matching(view)
        others = [r for r, _ in ranked if r is not route]
        plugin._decided(ctx, found, view)
        answer.update(
            route=route.name, decided_by="routes", group=route.group,
            rule=table.explain(route, others[0] if others else None),
            precedence=route.describe(), also_matched=[r.name for r in others],
            pinned=route.peer)
    else:
        answer.update(route=None, pinned=None)
        router = plugin.gateway.plugins.get_plugin("router")
        if router is None:
            answer.update(decided_by=None, rule="no route matched", group=None,
                          upstream_path=None, peer=None)
            return 200, answer
        answer["decided_by"] = "router"
        answer["rule"] = "no route matched: the router decides"
        refused = router.rewrite(ctx)
        answer["group"] = ctx.route
        if refused is not None:
            answer.update(upstream_path=None, peer=None, response=_described(refused))
            return 200, answer
    answer["upstream_path"] = ctx.upstream_path
    answer["upstream_headers"] = [[_text(n), _text(v)] for n, v in ctx.upstream_headers]
    phases = plugin.gateway.phases
    ctx.plugins = phases.by_route.get(ctx.route, phases.default) if phases.by_route \
        else phases.default
    d = maybeDeferred(phases.balancer, ctx, ())
    d.addCallback(_with_peer, answer)
    return d


#: the parameters of ``GET /routes/match`` besides ``header.NAME``
PARAMETERS = ("body", "host", "method", "path", "query")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _bad_parameter(args):
    """The ``400`` answer's object for the first parameter that is unknown
    (a typo would describe another request than the one meant), a header
    name or a method that is not an HTTP token; else ``None``."""
    for key in sorted(args):
        if key.lower().startswith("header."):
            if not _TOKEN.fullmatch(key[7:]):
                return {"error": "bad header name {!r}".format(key[7:]), "field": key}
        elif key not in PARAMETERS:
            return {"error": "unknown parameter {!r} (known: body, header.NAME, host, "
                             "method, path, query)".format(key), "field": key}
    method = args.get("method")
    if method and not _TOKEN.fullmatch(method):
        return {"error": "bad method {!r}".format(method), "field": "method"}
    return None


def _with_peer(chosen, answer):
    if chosen is None:
        answer["peer"] = None
    elif isinstance(chosen, Response):
        answer.update(peer=None, response=_described(chosen))
    else:
        answer["peer"] = dict(chosen.as_dict(), address=chosen.address,
                              group=chosen.group.name)
    return 200, answer


def _described(response):
    """A JSON view of an answer a phase gave (a JSON error :class:`Response`)."""
    return {"status": response.status, "body": json.loads(response.body)}


def _text(s):
    return s.decode("latin-1") if isinstance(s, bytes) else str(s)
