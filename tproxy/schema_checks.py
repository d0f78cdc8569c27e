# -*- test-case-name: tests.test_config,tests.test_plugins -*-
"""
JSON Schema checks with precise answers, for the configuration
(:mod:`tproxy.config`) and the plugins' ``settings_schema``
(:mod:`tproxy.plugin_settings`): a validator per distinct schema, made once
(:func:`validator_for`); every problem as ``(JSON path, friendly message)``
(:func:`schema_errors`); the schema's defaults filled in
(:func:`fill_defaults`).
"""

import copy
import json
import re

from jsonschema import Draft202012Validator

from tproxy.config_schema import FORMATS, GROUP_NAME_RULE

#: The settings schema of a header a plugin writes (``request_id``'s and
#: ``cache``'s ``header``, ``consumer_header``, ``claims_to_headers``): a
#: token, and not a field that frames the message or routes it (the proxy
#: writes those; another value would corrupt the response or the request).
HEADER_NAME = {
    "type": "string",
    "pattern": "^(?!(?i:content-length|transfer-encoding|connection|keep-alive|"
               "proxy-connection|te|trailer|upgrade|host)\\Z)"
               "[!#$%&'*+.^_`|~0-9A-Za-z-]+\\Z",
    "x-messages": {"pattern": "bad header name {instance!r} (a token such as "
                              "X-Request-ID; not Content-Length, Transfer-Encoding, "
                              "Connection, Keep-Alive, TE, Trailer, Upgrade or Host, "
                              "which the proxy writes)"},
}

#: The settings schema of an admin API path a plugin serves (``cache``'s
#: ``admin_path``, ``prometheus``'s ``path``): ``/``-separated segments of
#: letters, digits and ``._~-`` (a space or ``?`` would make it unreachable,
#: ``{`` a path parameter).
ADMIN_PATH = {
    "type": "string",
    "pattern": "^(/[A-Za-z0-9._~-]+)+\\Z",
    "x-messages": {"pattern": "bad admin path {instance!r} ('/'-separated segments "
                              "of letters, digits and ._~-: /cache)"},
}

#: a name written as is in a JSON path (``a.b``); others are ``["a-b"]``
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def validator_for(schema):
    """A Draft 2020-12 validator of ``schema`` that knows tproxy's formats."""
    # Checking a schema against the metaschema costs milliseconds, and each
    # plugin's settings_schema comes back at every start and reload (and in
    # every test that builds a gateway): check each distinct schema once.
    # (a validator is immutable: the one made for an equal schema is reused)
    # The same schema object (a class's settings_schema) is first looked up
    # by identity, and compared with the copy the validator was made from:
    # quicker than its repr (~20 microseconds for a large schema).
    seen = _SCHEMA_OBJECTS.get(id(schema))
    if seen is not None and seen[0] is schema and seen[1].schema == schema:
        return seen[1]
    key = repr(schema)
    validator = _CHECKED_SCHEMAS.get(key)
    if validator is None:
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(copy.deepcopy(schema), format_checker=FORMATS)
        if len(_CHECKED_SCHEMAS) < 256:
            _CHECKED_SCHEMAS[key] = validator
    if len(_SCHEMA_OBJECTS) < 256 and repr(validator.schema) == key:
        _SCHEMA_OBJECTS[id(schema)] = (schema, validator)
    return validator


#: ``repr`` of the schemas :func:`validator_for` found valid -> their validator
_CHECKED_SCHEMAS = {}
#: ``id`` of a schema given to :func:`validator_for` -> ``(the schema, its
#: validator)`` (the validator's ``schema``: the copy it was made from)
_SCHEMA_OBJECTS = {}


def schema_errors(validator, instance, prefix=""):
    """
    Every problem of ``instance``: a sorted list of ``(path, problem)`` with
    friendly messages; ``prefix`` is prepended to each path.
    """
    found = []
    for error in validator.iter_errors(instance):
        found.extend(_explain(error, prefix))
    found.sort(key=lambda e: e[0])
    return found


_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string",
               "integer": "an integer", "number": "a number",
               "boolean": "true or false", "null": "null"}


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(parts, prefix=""):
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += "[{}]".format(part)
        elif _IDENTIFIER.fullmatch(part):
            out += ("." if out else "") + part
        else:
            out += "[{}]".format(json.dumps(part))
    return out


def _explain(error, prefix):
    """Turn one jsonschema ``ValidationError`` into ``[(path, problem)]``."""
    parts = list(error.absolute_path)
    kind, instance, schema = error.validator, error.instance, error.schema
    custom = schema.get("x-messages", {}).get(kind) if isinstance(schema, dict) else None
    if custom:
        return [(_path(parts, prefix), custom.format(instance=instance))]
    if kind == "additionalProperties" and isinstance(instance, dict):
        known = sorted(schema.get("properties", {}))
        extra = [k for k in instance if k not in schema.get("properties", {})]
        hint = ("known keys: " + ", ".join(known)) if known else "no keys are allowed here"
        return [(_path(parts + [k], prefix), "unknown key ({})".format(hint))
                for k in extra]
    if kind == "type":
        wanted = error.validator_value
        wanted = [wanted] if isinstance(wanted, str) else wanted
        return [(_path(parts, prefix), "expected {}, got {}".format(
            " or ".join(_TYPE_NAMES[t] for t in wanted), _show(instance)))]
    if kind == "format" and error.cause is not None:
        return [(_path(parts, prefix), str(error.cause))]
    if kind == "pattern" and "propertyNames" in error.relative_schema_path:
        return [(_path(parts + [instance], prefix),
                 "bad group name {!r} ({})".format(instance, GROUP_NAME_RULE))]
    if kind == "required":
        missing = [k for k in error.validator_value if k not in instance]
        return [(_path(parts, prefix), "missing key {!r}".format(k)) for k in missing]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": "at least", "maximum": "at most",
                "exclusiveMinimum": "greater than",
                "exclusiveMaximum": "less than"}[kind]
        return [(_path(parts, prefix), "{} is out of range (must be {} {})".format(
            _show(instance), word, error.validator_value))]
    if kind == "enum":
        return [(_path(parts, prefix), "{} is not one of {}".format(
            _show(instance), ", ".join(_show(v) for v in error.validator_value)))]
    return [(_path(parts, prefix), error.message)]


def fill_defaults(validator, schema, instance):
    """
    Fill in the ``default`` of every absent property of ``instance`` (in
    place, recursively; integral floats where an integer is expected become
    ints) and return it.  ``instance`` must be valid against ``schema``.
    """
    if not isinstance(schema, dict):
        return instance
    if "if" in schema:
        branch = "then" if validator.evolve(schema=schema["if"]).is_valid(instance) else "else"
        instance = fill_defaults(validator, schema.get(branch, {}), instance)
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for name, sub in props.items():
            if name not in instance and isinstance(sub, dict) and "default" in sub:
                default = sub["default"]
                instance[name] = (default if type(default) in _IMMUTABLE
                                  else copy.deepcopy(default))
            if name in instance:
                instance[name] = fill_defaults(validator, sub, instance[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in instance:
                if name not in props:
                    instance[name] = fill_defaults(validator, extra, instance[name])
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        instance[:] = [fill_defaults(validator, schema["items"], v) for v in instance]
    elif isinstance(instance, float) and "integer" in _types(schema):
        instance = int(instance)
    return instance


#: the types of a default that is used as it is (not copied)
_IMMUTABLE = (str, int, float, bool, type(None))


def _types(schema):
    t = schema.get("type", ())
    return (t,) if isinstance(t, str) else t
