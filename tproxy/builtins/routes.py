# -*- test-case-name: tests.test_routes,tests.test_routes_e2e -*-
"""
The built-in ``routes`` plugin: declarative routing rules (nginx
``location``, Kong and APISIX routes, tl-ops-manage's API / cookie / header /
argument / body strategies) in the ``rewrite`` phase, a pinned peer in the
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

A route matches when every condition of its ``match`` holds: ``path``
(``prefix`` at a segment boundary, ``exact``, ``regex``, ``regexi``; a bare
string is a prefix), ``host`` (exact, or ``*.example.com`` for any
sub-domain), ``methods``, and exact values of ``headers``, ``cookies`` and
``args``.  ``body_contains`` (a substring of the first ``body_limit`` bytes
of the body) is accepted by the matcher but needs the core to let a phase
read the start of the request body; until it does, a route using it is
refused at load (see :data:`BODY_ACCESS`).

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
Regexes run on RE2 (``google-re2``): linear time, no backtracking.

The routing decision sets ``ctx.route`` (the ``group``),
``ctx.upstream_path`` (after the transforms ``fake_prefix``,
``strip_prefix``, ``rewrite``; the query string is kept),
``ctx.upstream_headers`` (``X-Route-Prefix: <group>`` plus the route's
``upstream_headers``; a client's ``X-Route-Prefix`` is removed, never
believed) and ``ctx.vars["route"]`` (the route's name).  A request no route
takes is left to the next ``rewrite`` plugin (the ``router``), or answered
``404`` with ``"unmatched": "404"``.

List it before ``router`` (which leaves alone a request an earlier plugin
routed) and before ``least_conn`` (its ``balancer`` answers only for routes
with a pinned ``peer``).
"""

import copy
import json
import re
from urllib.parse import parse_qsl

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

from tproxy import Request, RequestContext, Response, hookimpl
from tproxy.config import (GROUP_NAME, ConfigError, check_host, fill_defaults,
                           parse_host_port, schema_errors, validator_for)
from tproxy.http.headers import Headers

try:
    import re2
except ImportError:  # pragma: no cover - e.g. PyPy, which has no wheel
    re2 = None

__all__ = ["Plugin", "Route", "RouteTable", "compile_routes", "compile_route",
           "ROUTE_SCHEMA", "SETTINGS_SCHEMA", "BODY_ACCESS", "NEED_BODY"]

log = Logger()

#: Whether the core lets a phase read the start of the request body
#: (``ctx.read_body_prefix(n)``, a Deferred of the first ``n`` bytes that
#: are then still forwarded unchanged).  ``body_contains`` needs it.
BODY_ACCESS = hasattr(RequestContext, "read_body_prefix")

#: What :meth:`RouteTable.match` answers when a route that ranks first so far
#: needs the request body to decide.
NEED_BODY = object()

#: The ``ctx.vars`` key of the route that took the request (private: the
#: balancer reads it; ``ctx.vars["route"]`` is its name).
_ROUTE_VAR = "_routes.route"

_HEADER = "X-Route-Prefix"
_HEADER_LOWER = b"x-route-prefix"
_HEADER_LEN = len(_HEADER_LOWER)

#: The name ``GET /routes/match`` takes: no route may have it.
_RESERVED = frozenset(["match"])

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_PATH = re.compile(r"[?#\s\x00-\x1f\x7f]")
_REF = re.compile(r"\\(?:([0-9]+)|g<([A-Za-z_][A-Za-z0-9_]*|[0-9]+)>)")

_EXACT, _PREFIX, _REGEX, _ANY = 0, 1, 2, 3
_TIER_NAMES = {_EXACT: "exact", _PREFIX: "prefix", _REGEX: "regex", _ANY: "any"}
_HOST_EXACT, _HOST_WILD, _HOST_ANY = 0, 1, 2
_HOST_NAMES = {_HOST_EXACT: "exact", _HOST_WILD: "wildcard", _HOST_ANY: "any"}


# ---------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------

_VALUES = {"type": "object", "default": {},
           "additionalProperties": {"type": "string"}}

_PATH = {
    "type": ["string", "object"],
    "if": {"type": "string"},
    "then": {"pattern": "^/",
             "x-messages": {"pattern": "a path starts with '/' (a regex is written "
                                       "{{\"mode\": \"regex\", \"value\": ...}})"}},
    "else": {
        "additionalProperties": False,
        "required": ["value"],
        "properties": {
            "mode": {"enum": ["prefix", "exact", "regex", "regexi"], "default": "prefix"},
            "value": {"type": "string", "minLength": 1},
        },
    },
}

#: The JSON Schema of one route (the items of ``routes``, and the body of
#: ``PUT /routes/{name}``).
ROUTE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "group"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{1,100}$",
                 "x-messages": {"pattern": "bad route name {instance!r} (1 to 100 "
                                           "letters, digits and '._~-')"}},
        "match": {
            "type": "object", "default": {}, "additionalProperties": False,
            "properties": {
                "path": _PATH,
                "host": {"type": "string", "minLength": 1},
                "methods": {"type": "array", "minItems": 1, "uniqueItems": True,
                            "items": {"type": "string", "pattern": "^[A-Za-z]+$"}},
                "headers": _VALUES,
                "cookies": _VALUES,
                "args": _VALUES,
                "body_contains": {"type": "string", "minLength": 1},
            },
        },
        "group": {"type": "string", "pattern": GROUP_NAME,
                  "x-messages": {"pattern": "bad group name {instance!r} (allowed: "
                                            "letters, digits, '._~-', and '/' "
                                            "between segments)"}},
        "peer": {"type": "string", "format": "tproxy-host-port"},
        "priority": {"type": "integer", "default": 0},
        "fake_prefix": {"type": "string", "pattern": "^/.",
                        "x-messages": {"pattern": "a fake prefix is a path such as "
                                                  "'/svc'"}},
        "strip_prefix": {"type": "boolean", "default": False},
        "rewrite": {"type": "string", "pattern": "^/",
                    "x-messages": {"pattern": "a rewrite is a path: it starts with '/'"}},
        "upstream_headers": _VALUES,
    },
}

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
    },
}

_ROUTE_VALIDATOR = validator_for(ROUTE_SCHEMA)


# ---------------------------------------------------------------------------
# one route
# ---------------------------------------------------------------------------


class _View(object):
    """The parts of a request the conditions look at (cookies and arguments
    parsed once, when a route first asks)."""

    __slots__ = ("method", "host", "path", "query", "headers", "body",
                 "_cookies", "_args")

    def __init__(self, method, host, path, query, headers, body=None):
        self.method = method
        self.host = host
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self._cookies = None
        self._args = None

    @classmethod
    def of(cls, request, body=None):
        """The view of a :class:`tproxy.Request`."""
        return cls(request.method, request.host, request.path, request.query,
                   request.headers, body)

    def cookie(self, name):
        """The first value of cookie ``name`` (``None`` if absent)."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = {}
            for field in self.headers.get_all("cookie"):
                for pair in field.split(";"):
                    key, eq, value = pair.strip().partition("=")
                    if eq and key not in cookies:
                        cookies[key] = value
        return cookies.get(name)

    def arg(self, name):
        """The first value of query argument ``name``, percent-decoded."""
        args = self._args
        if args is None:
            args = self._args = {}
            for key, value in parse_qsl(self.query, keep_blank_values=True,
                                        errors="replace"):
                args.setdefault(key, value)
        return args.get(name)


class Route(object):
    """
    One compiled route: immutable once built, so that a request keeps the
    route it started with when the table changes.

    :ivar name: its name.
    :ivar spec: the route as configured (defaults filled in).
    :ivar group: the target group.
    :ivar peer: the pinned peer ``"host:port"``, or ``None``.
    :ivar peer_key: ``(host, port)`` of the pinned peer, or ``None``.
    :ivar tier: the path tier (exact, prefix, regex, any).
    :ivar key: the index key of an exact or prefix route (fake prefix
        included).
    :ivar host_tier: exact, wildcard or any.
    :ivar host: the exact host, or the wildcard's suffix (``".example.com"``).
    """

    __slots__ = ("name", "spec", "group", "peer", "peer_key", "priority",
                 "position", "tier", "key", "mode", "value", "regex", "fake",
                 "strip", "rewrite", "host_tier", "host", "methods", "headers",
                 "cookies", "args", "body", "extra_headers")

    def accepts(self, view):
        """
        Whether the conditions the index does not cover hold for ``view``:
        methods, headers, cookies, arguments, a regex path, the body.

        :return: ``None`` (no), ``True`` or the regex match (yes), or
            :data:`NEED_BODY`.
        """
        if self.methods is not None and view.method not in self.methods:
            return None
        if self.headers:
            get = view.headers.get
            for name, value in self.headers:
                if get(name) != value:
                    return None
        for name, value in self.cookies:
            if view.cookie(name) != value:
                return None
        for name, value in self.args:
            if view.arg(name) != value:
                return None
        found = True
        if self.regex is not None:
            path = view.path
            fake = self.fake
            if fake:
                if not (path == fake or path.startswith(fake + "/")):
                    return None
                path = path[len(fake):] or "/"
            found = self.regex.search(path)
            if found is None:
                return None
        if self.body is not None:
            if view.body is None:
                return NEED_BODY
            if self.body not in view.body:
                return None
        return found

    def covers(self, view):
        """Whether the host and the exact/prefix path hold (what the index
        checks); with :meth:`accepts`, the whole match, route by route."""
        host = view.host
        if self.host_tier == _HOST_EXACT and host != self.host:
            return False
        if self.host_tier == _HOST_WILD and not host.endswith(self.host):
            return False
        path = view.path
        if self.tier == _EXACT:
            return path == self.key
        if self.tier == _PREFIX:
            key = self.key
            if key == "/":
                return path.startswith("/")
            return path == key or path.startswith(key + "/")
        return True

    def rank(self, host_first=True):
        """The route's place in the precedence order (smaller first)."""
        host = (self.host_tier, -len(self.host) if self.host_tier == _HOST_WILD else 0)
        path = (self.tier, -len(self.key) if self.tier == _PREFIX else 0)
        if host_first:
            return (host, path, -self.priority, self.position)
        return (path, host, -self.priority, self.position)

    def upstream_path(self, path, query, found):
        """
        The path (and query) sent upstream for a request to ``path`` that
        this route took (``found``: what :meth:`accepts` returned).
        """
        if self.fake:
            path = path[len(self.fake):] or "/"
        if self.rewrite is not None:
            path = found.expand(self.rewrite) if self.regex is not None else self.rewrite
        elif self.strip:
            value = self.value
            if value != "/":
                path = path[len(value):] or "/"
        return path + "?" + query if query else path

    def describe(self):
        """A JSON view of how the route matches (for ``/routes/match``)."""
        out = {"path_tier": _TIER_NAMES[self.tier], "host_tier": _HOST_NAMES[self.host_tier],
               "priority": self.priority, "position": self.position}
        if self.tier in (_EXACT, _PREFIX):
            out["path_key"] = self.key
        return out

    def __repr__(self):
        return "<Route %s -> %s>" % (self.name, self.group)


def _regex(pattern, caseless):
    options = re2.Options()
    options.log_errors = False
    if caseless:
        options.case_sensitive = False
    return re2.compile(pattern, options)


def _norm_prefix(value):
    return value.rstrip("/") or "/"


def compile_route(spec, position=0, path=""):
    """
    Compile one route (validated against :data:`ROUTE_SCHEMA`, defaults
    filled in).

    :param position: its place in the list (the last tie-breaker).
    :param path: the JSON path of the route, for error messages
        (``"routes[3]"``; ``""`` for the body of an admin ``PUT``).
    :raises ConfigError: naming each problem with its JSON path.
    """
    def at(*parts):
        out = path
        for p in parts:
            out = out + ("." if out else "") + p
        return out

    errors = []
    r = Route()
    r.name = spec["name"]
    r.spec = spec
    r.group = spec["group"]
    r.priority = spec.get("priority", 0)
    r.position = position
    if r.name in _RESERVED:
        errors.append((at("name"), "the route name {!r} is reserved (GET "
                       "/routes/match is the matching endpoint)".format(r.name)))

    r.peer = r.peer_key = None
    if spec.get("peer"):
        host, port = parse_host_port(spec["peer"])
        r.peer = spec["peer"]
        r.peer_key = (host if ":" in host else host.lower(), port)

    match = spec.get("match", {})
    fake = spec.get("fake_prefix")
    r.fake = None
    if fake is not None:
        if _BAD_PATH.search(fake):
            errors.append((at("fake_prefix"), "a fake prefix has no query, fragment, "
                           "space or control character"))
        r.fake = _norm_prefix(fake)
        if r.fake == "/":
            errors.append((at("fake_prefix"), "the fake prefix '/' removes nothing"))

    # path
    p = match.get("path")
    if p is None:
        r.mode, r.value = None, None
    elif isinstance(p, str):
        r.mode, r.value = "prefix", p
    else:
        r.mode, r.value = p.get("mode", "prefix"), p["value"]
    r.regex = None
    where = at("match", "path") if isinstance(p, str) else at("match", "path", "value")
    if r.mode in ("prefix", "exact"):
        if not r.value.startswith("/"):
            errors.append((where, "a {} path starts with '/'".format(r.mode)))
        elif _BAD_PATH.search(r.value):
            errors.append((where, "a {} path has no query, fragment, space or "
                           "control character".format(r.mode)))
    if r.mode == "prefix":
        r.value = _norm_prefix(r.value)
        r.tier = _PREFIX
        r.key = (r.fake or "") + r.value if r.value != "/" else (r.fake or "/")
    elif r.mode == "exact":
        r.tier = _EXACT
        r.key = (r.fake or "") + r.value
    elif r.mode in ("regex", "regexi"):
        r.tier = _REGEX
        r.key = None
        if re2 is None:
            errors.append((where, "regex routes need the google-re2 package "
                           "(pip install google-re2), which this Python lacks"))
        else:
            try:
                r.regex = _regex(r.value, r.mode == "regexi")
            except re2.error as e:
                why = e.args[0] if e.args else e
                if isinstance(why, bytes):
                    why = why.decode("utf-8", "replace")
                errors.append((where, "invalid regex {!r}: {}".format(r.value, why)))
    elif r.fake:
        # no path condition but a fake prefix: the fake prefix is the path
        r.tier, r.key = _PREFIX, r.fake
    else:
        r.tier, r.key = _ANY, None

    # host
    host = match.get("host")
    r.host_tier, r.host = _HOST_ANY, ""
    if host is not None:
        host = host.lower()
        name = host[2:] if host.startswith("*.") else host
        try:
            if "*" in name or ":" in name:
                raise ValueError("bad host")
            check_host(name)
        except ValueError:
            errors.append((at("match", "host"), "bad host {!r} (a host name, or "
                           "*.example.com for its sub-domains; no port)".format(
                               match["host"])))
        if host.startswith("*."):
            r.host_tier, r.host = _HOST_WILD, host[1:]
        else:
            r.host_tier, r.host = _HOST_EXACT, host

    methods = match.get("methods")
    r.methods = frozenset(m.upper() for m in methods) if methods else None
    for name in sorted(match.get("headers", {})):
        if not _TOKEN.match(name):
            errors.append((at("match", "headers", name), "bad header name"))
    r.headers = tuple(sorted(match.get("headers", {}).items()))
    r.cookies = tuple(sorted(match.get("cookies", {}).items()))
    r.args = tuple(sorted(match.get("args", {}).items()))
    body = match.get("body_contains")
    r.body = None
    if body is not None:
        r.body = body.encode("utf-8")
        if not BODY_ACCESS:
            errors.append((at("match", "body_contains"),
                           "body_contains needs the core to let phases read the "
                           "start of the request body (ctx.read_body_prefix), which "
                           "this tproxy lacks yet"))

    # transforms
    r.strip = spec.get("strip_prefix", False)
    if r.strip and r.mode != "prefix":
        errors.append((at("strip_prefix"), "strip_prefix needs a prefix path "
                       "(match.path with mode 'prefix')"))
    r.rewrite = spec.get("rewrite")
    if r.rewrite is not None:
        if r.strip:
            errors.append((at("rewrite"), "rewrite replaces the whole path: use "
                           "strip_prefix or rewrite, not both"))
        if _BAD_PATH.search(r.rewrite):
            errors.append((at("rewrite"), "a rewrite has no query, fragment, space "
                           "or control character (the query is kept as it came)"))
        rest = _REF.sub("", r.rewrite)
        if "\\" in rest:
            errors.append((at("rewrite"), "a backslash in a rewrite is a capture "
                           "reference: \\1 or \\g<name>"))
        for number, name in _REF.findall(r.rewrite):
            if r.regex is None and r.mode not in ("regex", "regexi"):
                errors.append((at("rewrite"), "capture references need a regex path"))
                break
            if r.regex is None:
                break  # the regex itself is invalid: said above
            ref = number or name
            if ref.isdigit():
                if int(ref) > r.regex.groups:
                    errors.append((at("rewrite"), "\\{} refers to a group the regex "
                                   "does not have ({} groups)".format(ref, r.regex.groups)))
            elif ref not in r.regex.groupindex:
                errors.append((at("rewrite"), "\\g<{}> names no group of the "
                               "regex".format(ref)))

    r.extra_headers = []
    for name, value in sorted(spec.get("upstream_headers", {}).items()):
        if not _TOKEN.match(name):
            errors.append((at("upstream_headers", name), "bad header name"))
            continue
        try:
            value.encode("latin-1")
            bad = any(c in value for c in "\r\n\x00")
        except UnicodeEncodeError:
            bad = True
        if bad:
            errors.append((at("upstream_headers", name), "a header value is latin-1 "
                           "text without CR, LF or NUL"))
            continue
        r.extra_headers.append((name, value))
    if errors:
        raise ConfigError(errors)
    return r


def validate_route(obj, path=""):
    """
    Validate a route document against :data:`ROUTE_SCHEMA`, fill its
    defaults in and compile it.

    :raises ConfigError: naming each problem with its JSON path.
    """
    errors = schema_errors(_ROUTE_VALIDATOR, obj, prefix=path)
    if errors:
        raise ConfigError(errors)
    return fill_defaults(_ROUTE_VALIDATOR, ROUTE_SCHEMA, copy.deepcopy(obj))


def compile_routes(specs, match_mode="host_first", path="routes"):
    """
    A :class:`RouteTable` of route documents (validated, defaults filled),
    in their order.

    :raises ConfigError: every problem of every route, with its JSON path
        (``routes[2].match.path.value``), duplicate names included.
    """
    errors, routes, seen = [], [], {}
    for i, spec in enumerate(specs):
        where = "{}[{}]".format(path, i)
        try:
            routes.append(compile_route(spec, i, where))
        except ConfigError as e:
            errors.extend(e.errors)
        name = spec.get("name")
        if name in seen:
            errors.append((where + ".name", "duplicate route name {!r} (also "
                           "{})".format(name, seen[name])))
        else:
            seen[name] = where
    if errors:
        raise ConfigError(errors)
    return RouteTable(routes, match_mode)


# ---------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------


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
        if route.tier == _EXACT:
            self.exact.setdefault(route.key, []).append(route)
        elif route.tier == _PREFIX:
            self.prefix.setdefault(route.key, []).append(route)
            self.longest = max(self.longest, len(route.key))
        elif route.tier == _REGEX:
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

    :param routes: compiled :class:`Route` objects, in configuration order.
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
            if route.host_tier == _HOST_EXACT:
                bucket = self.hosts.setdefault(route.host, _Bucket())
            elif route.host_tier == _HOST_WILD:
                bucket = self.wildcards.setdefault(route.host, _Bucket())
            else:
                bucket = self.anyhost
            bucket.add(route)
        self.longest = 0
        for bucket in self._every_bucket():
            bucket.seal()
            self.longest = max(self.longest, bucket.longest)
        self._anyhost = [self.anyhost] if self.routes_without_host() else []

    def _every_bucket(self):
        return list(self.hosts.values()) + list(self.wildcards.values()) + [self.anyhost]

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

        :param view: a :class:`_View` (``_View.of(request)``).
        :return: ``(route, found)`` -- ``found`` being the regex match of a
            regex route, else ``True`` --, ``None`` when no route takes the
            request, or :data:`NEED_BODY` when deciding needs the body
            (``view.body`` is ``None``).
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

    def replace(self, route):
        """A new table with ``route`` in place of the one of its name (or
        added last)."""
        routes, added = [], True
        for r in self.routes:
            if r.name == route.name:
                routes.append(route)
                added = False
            else:
                routes.append(r)
        if added:
            routes.append(route)
        return self._renumbered(routes)

    def without(self, name):
        """A new table without the route called ``name``."""
        return self._renumbered([r for r in self.routes if r.name != name])

    def _renumbered(self, routes):
        # positions are the list order; a route keeps its compiled
        # conditions, so only the position changes
        fresh = []
        for i, r in enumerate(routes):
            if r.position != i:
                copy = Route()
                for slot in Route.__slots__:
                    setattr(copy, slot, getattr(r, slot))
                copy.position = i
                r = copy
            fresh.append(r)
        return RouteTable(fresh, self.match_mode)


def _explain(winner, runner_up, host_first):
    """Which precedence rule put ``winner`` before ``runner_up``."""
    if runner_up is None:
        return "the only matching route"
    a, b = winner.rank(host_first), runner_up.rank(host_first)
    names = (("host", "path") if host_first else ("path", "host")) + ("priority", "position")
    for name, x, y in zip(names, a, b):
        if x == y:
            continue
        if name == "host":
            if x[0] != y[0]:
                return "{} host beats {} host ({})".format(
                    _HOST_NAMES[x[0]], _HOST_NAMES[y[0]],
                    "host_first" if host_first else "path_first, same path tier")
            return "longer wildcard host suffix"
        if name == "path":
            if x[0] != y[0]:
                return "{} path beats {} path".format(_TIER_NAMES[x[0]], _TIER_NAMES[y[0]])
            return "longer prefix beats shorter prefix"
        if name == "priority":
            return "higher priority ({} > {})".format(-x, -y)
        return "earlier in the list (position {} < {})".format(x, y)
    return "the only matching route"  # pragma: no cover (names are unique)


# ---------------------------------------------------------------------------
# the plugin
# ---------------------------------------------------------------------------


class Plugin(object):
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
        self.table = compile_routes(settings.get("routes", []), self.match_mode)
        self.gateway = None

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Serve the ``/routes`` admin API."""
        self.gateway = gateway
        admin = gateway.admin
        admin.route("GET", "/routes", self.list_routes)
        admin.route("GET", "/routes/match", self.match_route)
        admin.route("GET", "/routes/{name}", self.get_route)
        admin.route("PUT", "/routes/{name}", self.put_route)
        admin.route("DELETE", "/routes/{name}", self.delete_route)

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
        view = _View.of(request)
        found = table.match(view)
        if found is NEED_BODY:
            d = ctx.read_body_prefix(self.body_limit)
            return d.addCallback(self._with_body, ctx, table, view)
        return self._decided(ctx, found)

    def _with_body(self, body, ctx, table, view):
        view.body = bytes(body[:self.body_limit])
        return self._decided(ctx, table.match(view))

    def _decided(self, ctx, found):
        if found is None:
            if self.unmatched_404:
                ctx.error = "no_route"
                return Response.error(404, "no route matched", path=ctx.request.path)
            return None
        route, match = found
        request = ctx.request
        for name, _ in request.headers.raw:
            if len(name) == _HEADER_LEN and name.lower() == _HEADER_LOWER:
                request.headers.remove(_HEADER)
                break
        ctx.route = route.group
        ctx.upstream_path = route.upstream_path(request.path, request.query, match)
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
        return None

    @hookimpl
    def balancer(self, ctx, tried):
        """
        The pinned peer of the request's route, if it has one.

        :return: ``None`` (not pinned: the next balancer chooses), the
            :class:`~tproxy.registry.Peer`, a ``503`` when it is not a live
            member of the group, or a ``502`` when it failed already (a pinned
            route never moves to another peer).
        """
        route = ctx.vars.get(_ROUTE_VAR) if ctx.vars else None
        if route is None or route.peer_key is None:
            return None
        peer = self._pinned(ctx.gateway.registry, route)
        if peer is None:
            ctx.error = "no_peer"
            return Response.error(503, "no live upstream", group=route.group,
                                  peer=route.peer, route=route.name)
        if tried and peer in tried:
            return Response.error(502, "pinned upstream failed", upstream=peer.address,
                                  route=route.name)
        return peer

    def _pinned(self, registry, route):
        group = registry.group(route.group)
        peer = group.peers.get(route.peer_key) if group is not None else None
        if peer is None or not peer.is_live(registry.now()):
            return None
        return peer

    # -- admin API ------------------------------------------------------------

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

    def put_route(self, request):
        """``PUT /routes/{name}``: add or replace a route (JSON body)."""
        name = request.params["name"]
        try:
            obj = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            return 400, {"error": "the body is not JSON: {}".format(e), "field": ""}
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
        self.table = table.replace(route)
        log.info("route {name} {what} through the admin API", name=name,
                 what="added" if created else "replaced")
        return (201 if created else 200), {"route": spec, "created": created}

    def delete_route(self, request):
        """``DELETE /routes/{name}``: remove a route."""
        name = request.params["name"]
        table = self.table
        if name not in table.by_name:
            return 404, {"error": "no such route", "name": name}
        self.table = table.without(name)
        log.info("route {name} deleted through the admin API", name=name)
        return 200, {"deleted": name}

    def match_route(self, request):
        """
        ``GET /routes/match?method=&host=&path=[&query=][&header.NAME=][&body=]``:
        which route a request would take, why, the upstream path, and the
        peer the balancer would choose now (nothing is acquired).
        """
        args = request.args
        path = args.get("path")
        if not path or not path.startswith("/"):
            return 400, {"error": "path is required and starts with '/'",
                         "field": "path", "value": path}
        path, _, query = path.partition("?")
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
        ctx = RequestContext(self.gateway, req)
        table = self.table
        view = _View.of(req, body.encode("utf-8") if body is not None else None)
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
            self._decided(ctx, found)
            answer.update(
                route=route.name, decided_by="routes", group=route.group,
                rule=_explain(route, others[0] if others else None, table.host_first),
                precedence=route.describe(), also_matched=[r.name for r in others],
                pinned=route.peer)
        else:
            answer.update(route=None, pinned=None)
            router = self.gateway.plugins.get_plugin("router")
            if router is None:
                answer.update(decided_by=None, rule="no route matched", group=None,
                              upstream_path=None, peer=None)
                return 200, answer
            answer["decided_by"] = "router"
            answer["rule"] = "no route matched: the router decides"
            refused = router.rewrite(ctx)
            answer["group"] = ctx.route
            if refused is not None:
                answer.update(upstream_path=None, peer=None,
                              response={"status": refused.status,
                                        "body": json.loads(refused.body)})
                return 200, answer
        answer["upstream_path"] = ctx.upstream_path
        answer["upstream_headers"] = [[_text(n), _text(v)] for n, v in ctx.upstream_headers]
        phases = self.gateway.phases
        ctx.plugins = phases.by_route.get(ctx.route, phases.default) if phases.by_route \
            else phases.default
        d = maybeDeferred(phases.balancer, ctx, ())
        d.addCallback(self._with_peer, answer)
        return d

    def _with_peer(self, chosen, answer):
        if chosen is None:
            answer["peer"] = None
        elif isinstance(chosen, Response):
            answer["peer"] = None
            answer["response"] = {"status": chosen.status, "body": json.loads(chosen.body)}
        else:
            answer["peer"] = dict(chosen.as_dict(), address=chosen.address,
                                  group=chosen.group.name)
        return 200, answer


def _text(s):
    return s.decode("latin-1") if isinstance(s, bytes) else str(s)
