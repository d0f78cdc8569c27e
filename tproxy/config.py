# -*- test-case-name: tests.test_config -*-
"""
The configuration file: one JSON document, validated against a JSON Schema
(Draft 2020-12) when tproxy starts, with defaults filled in and shorthands
normalised.

An invalid file is reported as ``<file>: <json path>: <problem>``, one line
per problem, for example::

    etc/conf.json: upstreams.api.peers[1]: port 70000 is out of range

The schema checks (:mod:`tproxy.schema_checks`) are also what
:mod:`tproxy.plugins` uses for each plugin's ``settings``.
"""

import copy
import json
import math

from jsonschema import Draft202012Validator

from tproxy.addresses import endpoint_is_local, normalise_host, parse_host_port
from tproxy.config_schema import DEFAULT_PLUGINS, FORMATS, SCHEMA
from tproxy.schema_checks import _IDENTIFIER, _path, fill_defaults, schema_errors

__all__ = ["ConfigError", "DEFAULT_PLUGINS", "SCHEMA", "load_config", "read_config",
           "validate_config"]


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


def _not_finite(obj, parts=()):
    """``(path parts, value)`` of every NaN or infinite number in ``obj``.
    Python's JSON reader takes ``NaN``, ``Infinity`` and a number too large
    for a float (``1e999``), which JSON does not have, and a NaN passes
    every ``minimum`` of the schema (a timer armed for NaN seconds breaks
    the reactor's ordering of its timers)."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            yield parts, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            for found in _not_finite(value, parts + (key,)):
                yield found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            for found in _not_finite(value, parts + (i,)):
                yield found


def _validate_config(obj, source):
    bad = [(_path(parts), "{} is not a number (JSON has no NaN or Infinity; a "
            "number must be finite)".format(
                "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"))
           for parts, value in _not_finite(obj)]
    if bad:
        raise ConfigError(bad, source)
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
    _check_own_peers(config, source)
    config["plugins"] = [
        {"name": p, "settings": {}} if isinstance(p, str) else p
        for p in config["plugins"]]
    _check_health_plugin(config, source)
    from tproxy.listeners import listener_clashes
    clashes = listener_clashes(config)
    if clashes:
        raise ConfigError(clashes, source)
    return config


def _check_own_peers(config, source):
    """Refuse a static peer at one of tproxy's own listeners (as the admin
    API refuses to register one): requests sent there would come back."""
    from tproxy.listeners import own_listener_of
    reached = own_listener_of(config)
    errors = []
    for name, group in sorted(config["upstreams"].items()):
        for i, peer in enumerate(group["peers"]):
            own = reached(peer["host"], peer["port"])
            if own is not None:
                errors.append((_path(["upstreams", name, "peers", i]),
                               "{}:{} is tproxy's own {} listener: requests sent there "
                               "would come back to it".format(peer["host"], peer["port"],
                                                              own)))
    if errors:
        raise ConfigError(errors, source)


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


def loads_strict(text):
    """:func:`json.loads` of ``text``, refusing a key given twice in an
    object (a ``ValueError`` naming it), as the configuration file does:
    Python's reader keeps the last one without a word); arrays and objects
    nested past the interpreter's recursion limit (~1000 deep) are a
    ``ValueError`` too, not a ``RecursionError``."""
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except RecursionError:
        raise ValueError("arrays and objects nested too deeply") from None


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
        obj = loads_strict(text)
    except json.JSONDecodeError as e:
        raise ConfigError(("line {} column {}".format(e.lineno, e.colno),
                           "invalid JSON: {}".format(json_error(e, position=False))), path)
    except ValueError as e:
        raise ConfigError(("", "invalid JSON: {}".format(e)), path)
    return text, validate_config(obj, source=path)
