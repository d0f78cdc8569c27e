# -*- test-case-name: tests.test_routes -*-
"""
Route documents: their JSON Schema (:data:`ROUTE_SCHEMA`), and their
validation and compilation into :class:`~tproxy.routing.route.Route` objects
(:func:`validate_route`, :func:`compile_route`) and into a
:class:`~tproxy.routing.table.RouteTable` (:func:`compile_routes`).

Every problem is reported at once, each named by its JSON path
(``routes[2].match.path.value``), as a :class:`tproxy.config.ConfigError`.
Regexes are compiled with RE2 (``google-re2``), or where it is missing
(PyPy, which has no wheel of it) or ``TPROXY_REGEX=python`` is set, with
:mod:`tproxy.routing.linear_re`: linear time either way.
"""

import copy
import os
import re

from jsonschema import Draft202012Validator

from tproxy.addresses import parse_host_port
from tproxy.config import ConfigError
from tproxy.schema_checks import fill_defaults, schema_errors
from tproxy.config_schema import FORMATS, GROUP_NAME, GROUP_NAME_RULE
from tproxy.routing.route import (ANY, EXACT, HOST_ANY, HOST_EXACT, HOST_WILD, PREFIX,
                                  REGEX, Route, match_path)
from tproxy.routing.hosts import host_condition
from tproxy.routing.table import RouteTable

from tproxy.routing import linear_re

try:
    import re2
except ImportError:  # pragma: no cover - e.g. PyPy, which has no wheel
    re2 = None
if os.environ.get("TPROXY_REGEX") == "python":
    re2 = None

__all__ = ["ROUTE_SCHEMA", "validate_route", "compile_route",
           "compile_routes"]

#: The name ``GET /routes/match`` takes: no route may have it.
_RESERVED = frozenset(["match"])

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_BAD_PATH = re.compile(r"[?#\s\x00-\x1f\x7f]")
#: a ``.`` or ``..`` segment, also percent-encoded (requests have them resolved)
_DOT_SEGMENT = re.compile(r"/(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)
#: what a request's field value (a cookie's) never has: it could never match
_BAD_FIELD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")
_BAD_COOKIE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f;]|^[ \t]|[ \t]$")
_REF = re.compile(r"\\(?:([0-9]+)|g<([A-Za-z_][A-Za-z0-9_]*|[0-9]+)>)")

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

#: The JSON Schema of one route (the items of the ``routes`` setting, and
#: the body of ``PUT /routes/{name}``).
ROUTE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "group"],
    "properties": {
        # ("." and "..": /routes/.. is resolved to / by curl and browsers)
        "name": {"type": "string", "pattern": r"^(?!\.\.?$)[A-Za-z0-9._~-]{1,100}$",
                 "x-messages": {"pattern": "bad route name {instance!r} (1 to 100 "
                                           "letters, digits and '._~-', not '.' or "
                                           "'..')"}},
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
                  "x-messages": {"pattern": "bad group name {instance!r} (" +
                                            GROUP_NAME_RULE + ")"}},
        "peer": {"type": "string", "format": "tproxy-host-port"},
        "priority": {"type": "integer", "default": 0,
                     "minimum": -2 ** 31, "maximum": 2 ** 31 - 1},
        "fake_prefix": {"type": "string", "pattern": "^/.",
                        "x-messages": {"pattern": "a fake prefix is a path such as "
                                                  "'/svc'"}},
        "strip_prefix": {"type": "boolean", "default": False},
        "rewrite": {"type": "string", "pattern": "^/",
                    "x-messages": {"pattern": "a rewrite is a path: it starts with '/'"}},
        "upstream_headers": _VALUES,
        # this route's proxy.max_body_size (null: no limit)
        "max_body_size": {"type": ["integer", "null"], "minimum": 0},
    },
}

# a constant, checked against the metaschema by tests.test_config.SchemaTests
_ROUTE_VALIDATOR = Draft202012Validator(ROUTE_SCHEMA, format_checker=FORMATS)


def validate_route(obj, path=""):
    """
    Validate a route document against :data:`ROUTE_SCHEMA` and fill its
    defaults in (on a copy).

    :param path: the JSON path of the route, for error messages.
    :raises ConfigError: naming each problem with its JSON path.
    """
    errors = schema_errors(_ROUTE_VALIDATOR, obj, prefix=path)
    if errors:
        raise ConfigError(errors)
    return fill_defaults(_ROUTE_VALIDATOR, ROUTE_SCHEMA, copy.deepcopy(obj))


def compile_routes(specs, match_mode="host_first", path="routes"):
    """
    A :class:`~tproxy.routing.table.RouteTable` of route documents
    (validated, defaults filled), in their order.

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
    r.has_max_body = "max_body_size" in spec
    r.max_body = spec.get("max_body_size")
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
    _fake_prefix(r, spec.get("fake_prefix"), at, errors)
    _path_condition(r, match.get("path"), at, errors)
    _host_condition(r, match.get("host"), at, errors)
    _value_conditions(r, match, at, errors)
    _transforms(r, spec, at, errors)
    _extra_headers(r, spec.get("upstream_headers", {}), at, errors)
    if errors:
        raise ConfigError(errors)
    return r


# -- the parts of compile_route: each sets its slots of ``r`` and appends the
# problems it finds to ``errors`` (in the order the route's keys are read)


def _norm_prefix(value):
    return value.rstrip("/") or "/"


def _regex(pattern, caseless):
    if re2 is None:
        return linear_re.compile(pattern, re.IGNORECASE if caseless else 0)
    options = re2.Options()
    options.log_errors = False
    if caseless:
        options.case_sensitive = False
    return re2.compile(pattern, options)


def _fake_prefix(r, fake, at, errors):
    r.fake = None
    if fake is None:
        return
    if _BAD_PATH.search(fake):
        errors.append((at("fake_prefix"), "a fake prefix has no query, fragment, "
                       "space or control character"))
    elif _DOT_SEGMENT.search(fake):
        errors.append((at("fake_prefix"), _DOTS.format("fake prefix")))
    r.fake = _norm_prefix(match_path(fake))
    if r.fake == "/":
        errors.append((at("fake_prefix"), "the fake prefix '/' removes nothing"))


_DOTS = ("a {} has no '.' or '..' segment (also percent-encoded): tproxy resolves "
         "them in a request's path before routing, so it could never match")


def _path_condition(r, p, at, errors):
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
        elif _DOT_SEGMENT.search(r.value):
            errors.append((where, _DOTS.format(r.mode + " path")))
    if r.mode in ("prefix", "exact"):
        r.value = match_path(r.value)  # requests are matched on this spelling
    if r.mode == "prefix":
        r.value = _norm_prefix(r.value)
        r.tier = PREFIX
        r.key = (r.fake or "") + r.value if r.value != "/" else (r.fake or "/")
    elif r.mode == "exact":
        r.tier = EXACT
        r.key = (r.fake or "") + r.value
    elif r.mode in ("regex", "regexi"):
        r.tier = REGEX
        r.key = None
        try:
            r.regex = _regex(r.value, r.mode == "regexi")
        except (linear_re.error if re2 is None else re2.error) as e:
            why = e.args[0] if e.args else e
            if isinstance(why, bytes):
                why = why.decode("utf-8", "replace")
            errors.append((where, "invalid regex {!r}: {}".format(r.value, why)))
    elif r.fake:
        # no path condition but a fake prefix: the fake prefix is the path
        r.tier, r.key = PREFIX, r.fake
    else:
        r.tier, r.key = ANY, None


def _host_condition(r, host, at, errors):
    r.host_tier, r.host = HOST_ANY, ""
    if host is None:
        return
    wildcard, r.host, problem = host_condition(host)
    r.host_tier = HOST_WILD if wildcard else HOST_EXACT
    if problem is not None:
        errors.append((at("match", "host"), problem))


def _value_conditions(r, match, at, errors):
    methods = match.get("methods")
    r.methods = frozenset(methods) if methods else None
    for i, method in enumerate(methods or ()):
        if method != method.upper():
            # RFC 9110 9.1: "get" is another method than GET, which no
            # client sends (nginx answers it 400)
            errors.append((at("match", "methods") + "[{}]".format(i), "methods are "
                           "case-sensitive: {} ({!r} is another method)".format(
                               method.upper(), method)))
    headers = match.get("headers", {})
    for name in sorted(headers):
        if not _TOKEN.match(name):
            errors.append((at("match", "headers", name), "bad header name"))
    r.headers = tuple(sorted(headers.items()))
    cookies = match.get("cookies", {})
    for name in sorted(cookies):
        if not _TOKEN.match(name):
            errors.append((at("match", "cookies", name), "bad cookie name {!r} (a "
                           "token: no space, ';' or '=')".format(name)))
    for kind, values, bad in (("headers", headers, _BAD_FIELD), ("cookies", cookies,
                                                                 _BAD_COOKIE)):
        for name in sorted(values):
            if bad.search(values[name]):
                errors.append((at("match", kind, name), "a request never carries "
                               "the value {!r} (control characters, {}spaces at "
                               "either end)".format(values[name],
                                                    "';', " if kind == "cookies" else "")))
    r.cookies = tuple(sorted(cookies.items()))
    r.args = tuple(sorted(match.get("args", {}).items()))
    body = match.get("body_contains")
    r.body = None
    if body is not None:
        r.body = body.encode("utf-8")


def _transforms(r, spec, at, errors):
    r.strip = spec.get("strip_prefix", False)
    if r.strip and r.mode != "prefix":
        errors.append((at("strip_prefix"), "strip_prefix needs a prefix path "
                       "(match.path with mode 'prefix')"))
    r.rewrite = spec.get("rewrite")
    if r.rewrite is None:
        return
    if r.strip:
        errors.append((at("rewrite"), "rewrite replaces the whole path: use "
                       "strip_prefix or rewrite, not both"))
    if _BAD_PATH.search(r.rewrite):
        errors.append((at("rewrite"), "a rewrite has no query, fragment, space "
                       "or control character (the query is kept as it came)"))
    if "\\" in _REF.sub("", r.rewrite):
        errors.append((at("rewrite"), "a backslash in a rewrite is a capture "
                       "reference: \\1 or \\g<name>"))
    refs = _REF.findall(r.rewrite)
    if refs and r.tier != REGEX:
        errors.append((at("rewrite"), "capture references need a regex path"))
    elif refs and r.regex is not None:  # an invalid regex is reported already
        for number, name in refs:
            ref = number or name
            if ref.isdigit():
                if int(ref) > r.regex.groups:
                    errors.append((at("rewrite"), "\\{} refers to a group the regex "
                                   "does not have ({} groups)".format(ref, r.regex.groups)))
            elif ref not in r.regex.groupindex:
                errors.append((at("rewrite"), "\\g<{}> names no group of the "
                               "regex".format(ref)))


def _extra_headers(r, headers, at, errors):
    r.extra_headers = []
    for name, value in sorted(headers.items()):
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
