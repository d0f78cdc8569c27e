# -*- test-case-name: tests.test_config -*-
"""
The configuration file: one JSON document, validated against a JSON Schema
(Draft 2020-12) when tproxy starts, with defaults filled in and shorthands
normalised.

An invalid file is reported as ``<file>: <json path>: <problem>``, one line
per problem, for example::

    etc/conf.json: upstreams.api.peers[1]: port 70000 is out of range

The schema helpers (:func:`validator_for`, :func:`schema_errors`,
:func:`fill_defaults`) are also what :mod:`tproxy.plugins` uses for each
plugin's ``settings``.
"""

import copy
import json
import re

from jsonschema import Draft202012Validator

from tproxy.addresses import endpoint_is_local, normalise_host, parse_host_port
from tproxy.config_schema import DEFAULT_PLUGINS, FORMATS, SCHEMA

__all__ = ["ConfigError", "DEFAULT_PLUGINS", "SCHEMA", "load_config", "read_config",
           "validate_config"]

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(Exception):
    """
    The configuration (or a plugin's settings) is invalid.

    ``str()`` gives one line per problem: ``<source>: <json path>: <problem>``
    (the path is left out when the problem is the whole file, the source when
    it is unknown).

    :ivar errors: a list of ``(path, problem)`` pairs; ``path`` is a JSON path
        without the leading ``$.`` (``"upstreams.api.peers[1]"``) or ``""``.
    :ivar source: the file name, or ``None``.
    """

    def __init__(self, errors, source=None):
        if isinstance(errors, tuple):
            errors = [errors]
        self.errors = list(errors)
        self.source = source
        Exception.__init__(self, self.errors, source)

    @property
    def path(self):
        """The JSON path of the first problem."""
        return self.errors[0][0]

    @property
    def problem(self):
        """The description of the first problem."""
        return self.errors[0][1]

    def __str__(self):
        return "\n".join(
            ": ".join(part for part in (self.source, path, problem) if part)
            for path, problem in self.errors)


def json_error(e, position=True):
    """
    The text of ``e``, an exception of :func:`json.loads` (or of decoding its
    bytes), safe to format: PyPy 7.3's decoder builds the message of a
    :class:`json.JSONDecodeError` at a multi-byte character from part of it,
    an invalid ``str`` whose formatting raises ``SystemError`` (and dumps
    an internal traceback); so an error at a character past ASCII is told
    from the document: ``unexpected 'é'``.

    :param position: with a :class:`json.JSONDecodeError`, end with
        ``": line L column C (char P)"`` (as ``str(e)`` does).
    """
    if not isinstance(e, json.JSONDecodeError):
        return "{}".format(e)
    char = e.doc[e.pos:e.pos + 1]
    if char > "\x7f":   # PyPy's message at such a character may be an invalid str
        what = "unexpected {!r}".format(char)
    else:
        what = e.msg
    if not position:
        return what
    return "{}: line {} column {} (char {})".format(what, e.lineno, e.colno, e.pos)


# ---------------------------------------------------------------------------
# validation, defaults, normalisation
# ---------------------------------------------------------------------------

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
    if seen is not None and seen[0] is schema and seen[1] == schema:
        return seen[2]
    key = repr(schema)
    validator = _CHECKED_SCHEMAS.get(key)
    if validator is None:
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(copy.deepcopy(schema), format_checker=FORMATS)
        if len(_CHECKED_SCHEMAS) < 256:
            _CHECKED_SCHEMAS[key] = validator
    if len(_SCHEMA_OBJECTS) < 256 and repr(validator.schema) == key:
        _SCHEMA_OBJECTS[id(schema)] = (schema, validator.schema, validator)
    return validator


#: ``repr`` of the schemas :func:`validator_for` found valid -> their validator
_CHECKED_SCHEMAS = {}
#: ``id`` of a schema given to :func:`validator_for` -> ``(the schema, the
#: copy its validator was made from, the validator)``
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


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _show(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _path(parts, prefix=""):
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += "[{}]".format(part)
        elif _IDENTIFIER.match(part):
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
                 "bad group name {!r} (allowed: letters, digits, '._~-', and "
                 "'/' between segments)".format(instance))]
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


# Not validator_for: checking this schema against the metaschema costs ~30 ms
# at every import (every twistd, tproxy-ctl and test process); the schema is a
# constant, checked by tests.test_config.SchemaTests.
_VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FORMATS)


def validate_config(obj, source="<config>"):
    """
    Validate a parsed configuration and return a new ``dict`` with every
    default filled in and shorthands normalised: a peer ``"host:port"``
    becomes ``{"host", "port", "weight": 1}``, a plugin name becomes
    ``{"name", "settings": {}}``.

    :param obj: the parsed JSON document.
    :param source: the file name used in error messages.
    :raises ConfigError: naming every problem with its JSON path.
    """
    # The same document comes back at a reload that changed nothing and in
    # every test harness of a class: its validated form, kept as JSON text,
    # is parsed again (a new dict each time) instead of validated again
    # (~0.7 ms); only plain JSON documents are kept (no tuple, no key that
    # is not a string: their text would stand for another document).
    key = _plain_json_text(obj)
    if key is not None:
        done = _VALIDATED.get(key)
        if done is not None:
            return json.loads(done)
    config = _validate_config(obj, source)
    if key is not None:
        text = _plain_json_text(config)
        if text is not None:
            if len(_VALIDATED) >= 256:
                _VALIDATED.clear()
            _VALIDATED[key] = text
    return config


#: the JSON text of a valid document -> the JSON text of its validated form
_VALIDATED = {}


def _plain_json_text(obj):
    """``obj``'s JSON text if it is a plain JSON document (parsing the text
    gives ``obj`` back, with the same types), else ``None``."""
    try:
        text = json.dumps(obj)
    except (TypeError, ValueError):
        return None
    return text if json.loads(text) == obj else None


def _validate_config(obj, source):
    errors = schema_errors(_VALIDATOR, obj)
    if errors:
        raise ConfigError(errors, source)
    config = fill_defaults(_VALIDATOR, SCHEMA, copy.deepcopy(obj))
    admin = config["admin"]
    if (not admin["token"] and not admin["allow_remote_without_token"]
            and not endpoint_is_local(admin["listen"])):
        raise ConfigError([("admin.listen", "the admin API would listen off loopback "
                            "({}) without a token: anyone who reaches it can change "
                            "routing; set admin.token, listen on loopback "
                            "(tcp:9180:interface=127.0.0.1), or set "
                            "admin.allow_remote_without_token to true".format(
                                admin["listen"]))], source)
    for group in config["upstreams"].values():
        group["peers"] = [_normalise_peer(p) for p in group["peers"]]
    config["plugins"] = [
        {"name": p, "settings": {}} if isinstance(p, str) else p
        for p in config["plugins"]]
    _check_health_plugin(config, source)
    return config


def _check_health_plugin(config, source):
    """Active checks configured without the plugin that runs them: say so."""
    if any(p["name"] == "health_check" for p in config["plugins"]):
        return
    paths = ["upstreams.{}.health_check".format(name)
             if _IDENTIFIER.match(name) else
             "upstreams[{}].health_check".format(json.dumps(name))
             for name, group in sorted(config["upstreams"].items())
             if group.get("health_check") is not None]
    if config["health"]["active"] is not None:
        paths.append("health.active")
    if paths:
        raise ConfigError([(path, "active checks need the health_check plugin in "
                                  "plugins") for path in paths], source)


def uses_tls(config):
    """Whether a listener or an upstream of ``config`` speaks TLS."""
    return bool(config.get("tls") or any(s.get("tls") for s in config.get("streams", ()))
                or any(g.get("tls") or any(p.get("tls") for p in g["peers"])
                       for g in config.get("upstreams", {}).values()))


def _normalise_peer(peer):
    if isinstance(peer, str):
        host, port = parse_host_port(peer)
        peer = {"host": host, "port": port, "weight": 1, "max_conns": 0}
    return dict(peer, host=normalise_host(peer["host"]))


def _reject_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key {}".format(json.dumps(key)))
        obj[key] = value
    return obj


def load_config(path):
    """
    Read, validate and normalise the JSON configuration file ``path`` (see
    :func:`validate_config`).

    :raises ConfigError: if the file cannot be read, is not JSON (the message
        names the line and column), or is not a valid configuration.
    """
    return read_config(path)[1]


def read_config(path):
    """
    ``(text, config)``: the text of the configuration file ``path`` and the
    configuration :func:`load_config` makes of it (``path`` ``None``: ``"{}"``
    and the built-in defaults).  The workers of a multi-worker tproxy build
    their configuration from the very text the parent validated.

    :raises ConfigError: as :func:`load_config`.
    """
    if path is None:
        return "{}", validate_config({}, source="<built-in defaults>")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(("", "cannot read: {}".format(e.strerror or e)), path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(("", "not UTF-8 (byte {} at offset {})".format(
            hex(data[e.start]), e.start)), path)
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(("line {} column {}".format(e.lineno, e.colno),
                           "invalid JSON: {}".format(json_error(e, position=False))), path)
    except ValueError as e:
        raise ConfigError(("", "invalid JSON: {}".format(e)), path)
    return text, validate_config(obj, source=path)
