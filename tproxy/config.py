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
import ipaddress
import json
import re

from jsonschema import Draft202012Validator, FormatChecker

__all__ = ["ConfigError", "DEFAULT_PLUGINS", "SCHEMA", "load_config", "read_config",
           "validate_config", "parse_host_port"]

#: The plugins that run when the configuration has no ``plugins`` key.
DEFAULT_PLUGINS = ("registry", "router", "least_conn", "access_log")

GROUP_NAME = r"^[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$"

_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
_DOTTED_NUMBERS = re.compile(r"^[0-9.]+$")  # must then be a valid IPv4 address
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


# ---------------------------------------------------------------------------
# formats: checks a JSON Schema cannot express, with their own messages
# ---------------------------------------------------------------------------

FORMATS = FormatChecker(formats=())


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


def parse_host_port(value):
    """
    Parse ``"host:port"`` (IPv6 as ``"[::1]:80"``) into ``(host, port)``.

    :raises ValueError: with a message fit for the user.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port:
        raise ValueError("bad host:port {!r} (expected HOST:PORT, IPv6 as "
                         "[::1]:80)".format(value))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("bad host:port {!r}: {!r} is not an IPv6 "
                             "address".format(value, host))
        problem = unicast_problem(host)
        if problem is not None:
            raise ValueError("bad host:port {!r}: {}".format(value, problem))
    elif ":" in host:
        raise ValueError("bad host:port {!r} (an IPv6 address needs brackets: "
                         "[{}]:{})".format(value, host, port))
    else:
        check_host(host, value)
    if not (port.isdigit() and port.isascii()):
        raise ValueError("bad host:port {!r}: port {!r} is not a "
                         "number".format(value, port))
    if not 1 <= int(port) <= 65535:
        raise ValueError("port {} is out of range".format(int(port)))
    return host, int(port)


def endpoint_is_local(description):
    """
    Whether the server endpoint string ``description`` listens on this
    machine only: an endpoint with a loopback ``interface`` (``tcp``,
    ``tcp6``, ``ssl``), or a UNIX socket.  Anything else (no interface: every
    address; other endpoint kinds) is not.
    """
    try:
        from twisted.internet.endpoints import _parseServer
        kind, args, kwargs = _parseServer(description, None)
    except Exception:
        return False
    if kind == "UNIX":
        return True
    interface = kwargs.get("interface", "")   # tcp, tcp6, ssl
    try:
        return ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return interface.lower() == "localhost"


def unicast_problem(host):
    """
    Why the IP address ``host`` cannot be a backend (unspecified, broadcast,
    multicast: it names no one server), or ``None`` (also for a name).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_unspecified or (address.version == 4 and address in _THIS_NETWORK):
        return "{} is an unspecified address, not a server".format(host)
    if address.is_multicast:
        return "{} is a multicast address, not a server".format(host)
    if address == _BROADCAST:
        return "{} is the broadcast address, not a server".format(host)
    return None


_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_BROADCAST = ipaddress.ip_address("255.255.255.255")


def check_host(host, value=None):
    """
    Check that ``host`` is an IP address or a host name (IPv6 without
    brackets); ``value`` is what to quote in the message.

    :raises ValueError: with a message fit for the user.
    """
    if _HOSTNAME.match(host) and not _DOTTED_NUMBERS.match(host):
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if value is not None and value != host:
            raise ValueError("bad host:port {!r}: {!r} is not a host name or "
                             "an IP address (IPv6 as [::1]:80)".format(value, host))
        raise ValueError("bad host {!r} (expected a host name or an IP "
                         "address)".format(host))
    problem = unicast_problem(host)
    if problem is not None:
        if value is not None and value != host:
            raise ValueError("bad host:port {!r}: {}".format(value, problem))
        raise ValueError("bad host {!r}: {}".format(host, problem))


def normalise_host(host):
    """
    The one spelling of a checked host (see :func:`check_host`), the same as
    the registry's admin API makes: a host name lower-cased, an IPv6 address
    compressed, an IPv4-mapped IPv6 address as IPv4.  So that a static peer
    and a registration of the same server are the same peer.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.lower()
    return str(getattr(address, "ipv4_mapped", None) or address)


@FORMATS.checks("tproxy-host-port", raises=ValueError)
def _check_host_port(value):
    if isinstance(value, str):
        parse_host_port(value)
    return True


@FORMATS.checks("tproxy-host", raises=ValueError)
def _check_host(value):
    if isinstance(value, str):
        check_host(value)
    return True


@FORMATS.checks("tproxy-network", raises=ValueError)
def _check_network(value):
    if isinstance(value, str):
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError("bad address or network {!r} (expected an IP "
                             "address or a CIDR such as 10.0.0.0/8)".format(value))
    return True


@FORMATS.checks("tproxy-endpoint", raises=ValueError)
def _check_endpoint(value):
    if not isinstance(value, str):
        return True
    try:
        # Parses without a reactor (serverFromString needs one); a private
        # API, hence the guard: without it, startup reports bad endpoints.
        from twisted.internet.endpoints import _parseServer
    except ImportError:  # pragma: no cover
        return True
    try:
        kind, args = _parseServer(value, None)[:2]
    except Exception as e:
        raise ValueError("bad endpoint {!r} ({})".format(value, e))
    if kind == "TCP" and not 0 <= args[0] <= 65535:
        raise ValueError("bad endpoint {!r} (port {} is out of range)".format(
            value, args[0]))
    return True


# ---------------------------------------------------------------------------
# the schema
# ---------------------------------------------------------------------------

def _number(default, minimum=None, exclusive=None, integer=False, nullable=False):
    schema = {"type": "integer" if integer else "number", "default": default}
    if minimum is not None:
        schema["minimum"] = minimum
    if exclusive is not None:
        schema["exclusiveMinimum"] = exclusive
    if nullable:
        schema["type"] = [schema["type"], "null"]
    return schema


def _object(properties, **extra):
    schema = {"type": "object", "additionalProperties": False,
              "properties": properties, "default": {}}
    schema.update(extra)
    return schema


# a certificate and its key, PEM files (tproxy.tls; key: default the cert file)
_PAIR = {"type": "object", "additionalProperties": False, "required": ["cert"],
         "properties": {"cert": {"type": "string", "minLength": 1},
                        "key": {"type": "string", "minLength": 1}}}

# TLS termination of a listener (tproxy.tls.ServerTLS)
_SERVER_TLS = {"type": "object", "additionalProperties": False, "required": ["cert"],
               "properties": dict(_PAIR["properties"], sni={
                   "type": "object", "additionalProperties": _PAIR,
                   "propertyNames": {"pattern": r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
                                     "x-messages": {"pattern": "bad server name {instance!r} "
                                                               "(a DNS name or *.name)"}}})}

# TLS to an upstream group or peer (tproxy.tls.client_creator)
_CLIENT_TLS = {"type": ["boolean", "object"], "additionalProperties": False,
               "properties": {"verify": {"type": "boolean", "default": True},
                              "ca": {"type": "string", "minLength": 1},
                              "server_name": {"type": "string", "format": "tproxy-host"}}}

_PEER = {
    "type": ["string", "object"],
    "if": {"type": "string"},
    "then": {"format": "tproxy-host-port"},
    "else": {
        "additionalProperties": False,
        "required": ["host", "port"],
        "properties": {
            "host": {"type": "string", "format": "tproxy-host"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "x-messages": {"minimum": "port {instance} is out of range",
                                    "maximum": "port {instance} is out of range"}},
            "weight": {"type": "integer", "minimum": 1, "maximum": 1000,
                       "default": 1,
                       "x-messages": {"minimum": "weight {instance} is out of range (1-1000)",
                                      "maximum": "weight {instance} is out of range (1-1000)"}},
            # requests in flight at most (0: no limit); a full peer is skipped
            "max_conns": {"type": "integer", "minimum": 0, "maximum": 1000000,
                          "default": 0},
            "tls": _CLIENT_TLS,
        },
    },
}

_PLUGIN = {
    "type": ["string", "object"],
    "if": {"type": "string"},
    "then": {"minLength": 1,
             "x-messages": {"minLength": "empty plugin name"}},
    "else": {
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1,
                     "x-messages": {"minLength": "empty plugin name"}},
            "settings": {"type": "object", "default": {}},
            "routes": {"type": "array", "minItems": 1, "uniqueItems": True,
                       "x-messages": {"minItems": "empty list (leave routes out "
                                                  "to enable the plugin everywhere)"},
                       "items": {"type": "string", "pattern": GROUP_NAME,
                                 "x-messages": {"pattern": "bad route name {instance!r}"}}},
        },
    },
}

_ENDPOINT = {"type": "string", "format": "tproxy-endpoint"}

# the active health checks of a group (the health_check plugin)
_HEALTH_CHECK = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "type": {"enum": ["http", "tcp"], "default": "http"},
        "method": {"enum": ["GET", "HEAD", "OPTIONS"], "default": "GET"},
        "path": {"type": "string", "pattern": "^/[\\x21-\\x7e]*$", "default": "/",
                 "x-messages": {"pattern": "bad path {instance!r} (starts with '/', "
                                           "printable ASCII, no spaces)"}},
        "host": {"type": ["string", "null"], "default": None, "format": "tproxy-host"},
        "statuses": {"type": "array", "minItems": 1, "default": [200],
                     "items": {"type": "integer", "minimum": 100, "maximum": 599}},
        "interval": _number(5, exclusive=0),
        "timeout": _number(2, exclusive=0),
        "rise": _number(2, minimum=1, integer=True),
        "fall": _number(3, minimum=1, integer=True),
        "concurrency": _number(10, minimum=1, integer=True),
    },
}

# a TCP (L4) listener of tproxy.stream
_STREAM = _object({
    "listen": _ENDPOINT,
    "group": {"type": "string", "pattern": GROUP_NAME,
              "x-messages": {"pattern": "bad group name {instance!r} (allowed: letters, "
                                        "digits, '._~-', and '/' between segments)"}},
    "proxy_protocol": {"enum": [None, "v1", "v2"], "default": None},
    "tls": _SERVER_TLS,
    # 0: each peer of the group once (nginx's proxy_next_upstream_tries 0)
    "tries": _number(0, minimum=0, integer=True),
    "timeouts": _object({
        "connect": _number(60, exclusive=0),
        "idle": _number(600, exclusive=0),
    }),
}, required=["listen", "group"])

#: The JSON Schema of the configuration file.
SCHEMA = _object({
    "listen": dict(_ENDPOINT, default="tcp:8080"),
    # TLS termination (tproxy.tls): on "listen", or on its own "listen" beside it
    "tls": dict(_SERVER_TLS, properties=dict(_SERVER_TLS["properties"], listen=_ENDPOINT)),
    "admin": _object({
        "listen": dict(_ENDPOINT, default="tcp:9180:interface=127.0.0.1"),
        "token": {"type": ["string", "null"], "minLength": 1, "default": None,
                  "x-messages": {"minLength": "empty token (use null for no token)"}},
        # names a Host header may give for the admin listener besides loopback
        # addresses, localhost and the listener's own address (DNS rebinding)
        "hosts": {"type": "array", "default": [],
                  "items": {"type": "string", "format": "tproxy-host"}},
        # Origin values (web pages) allowed to call the admin API
        "origins": {"type": "array", "default": [],
                    "items": {"type": "string", "pattern": "^https?://[^/?#]+/?$",
                              "x-messages": {"pattern": "bad origin {instance!r} "
                                             "(expected scheme://host[:port])"}}},
        # an admin listener off loopback without a token is refused unless true
        "allow_remote_without_token": {"type": "boolean", "default": False},
    }),
    "registry": _object({
        "ttl": _number(60, exclusive=0),
        "cleanup_interval": _number(10, exclusive=0),
        # what the admin API may register (409 beyond); static peers count too
        "max_groups": _number(10000, minimum=1, integer=True),
        "max_servers_per_group": _number(10000, minimum=1, integer=True),
        "max_servers": _number(100000, minimum=1, integer=True),
        # "redis": a fleet shares registrations and /routes through Redis
        # (tproxy.registry_redis); each instance serves from a local replica
        "backend": {"enum": ["memory", "redis"], "default": "memory"},
        "url": {"type": "string", "default": "redis://127.0.0.1:6379/0",
                "pattern": r"^redis://(:[^@/]*@)?[^:/@]+(:(6553[0-5]|655[0-2][0-9]|65[0-4]"
                           r"[0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
                           r"(/[0-9]{1,5})?$",
                "x-messages": {"pattern": "bad Redis URL {instance!r} (expected "
                               "redis://[:password@]host[:port][/db])"}},
        "key_prefix": {"type": "string", "default": "tproxy:", "maxLength": 200,
                       "pattern": r"^\S*$",
                       "x-messages": {"pattern": "key_prefix {instance!r} has a space"}},
        "timeout": _number(2, exclusive=0),
        "retry_interval": _number(1, exclusive=0),
        "resync_interval": _number(30, exclusive=0),
    }),
    "trusted_proxies": {"type": "array", "default": [],
                        "items": {"type": "string", "format": "tproxy-network"}},
    "timeouts": _object({
        "connect": _number(60, exclusive=0),
        "send": _number(60, exclusive=0),
        "read": _number(90, exclusive=0),
    }),
    "upstreams": {
        "type": "object", "default": {},
        "propertyNames": {"pattern": GROUP_NAME},
        "additionalProperties": _object(
            {"peers": {"type": "array", "items": _PEER},
             # active checks of this group (the health_check plugin)
             "health_check": _HEALTH_CHECK,
             # false: only a plugin or a route chooses the group, never a path
             "routable": {"type": "boolean"},
             "tls": _CLIENT_TLS},
            required=["peers"]),
    },
    # one health state per peer (tproxy.health)
    "health": _object({
        "passive": _object({
            # nginx's max_fails / fail_timeout; max_fails 0: passive checks off
            "max_fails": _number(1, minimum=0, integer=True),
            "fail_timeout": _number(10, exclusive=0),
            "max_ejection": _number(300, exclusive=0),
            "statuses": {"type": "array", "default": [], "uniqueItems": True,
                         "items": {"type": "integer", "minimum": 500, "maximum": 599}},
        }),
        "when_all_down": {"enum": ["try_all", "503"], "default": "try_all"},
        # seconds a registered or re-admitted peer takes to reach its weight
        # (nginx's slow_start); 0: at once
        "slow_start": _number(0, minimum=0),
        # the active checks of the groups without their own health_check
        # (registered peers' groups); null: none
        "active": dict(_HEALTH_CHECK, type=["object", "null"], default=None),
    }),
    "plugins": {"type": "array", "items": _PLUGIN,
                "default": list(DEFAULT_PLUGINS)},
    "proxy": _object({
        # peers a request may try; 0: each peer of the group once (nginx's
        # proxy_next_upstream_tries 0)
        "tries": _number(0, minimum=0, integer=True),
        # nginx's proxy_next_upstream / proxy_next_upstream_timeout (0: none)
        "next_upstream": {"type": "array", "uniqueItems": True,
                          "default": ["error", "timeout"],
                          "items": {"enum": ["error", "timeout", "invalid_header",
                                             "http_500", "http_502", "http_503",
                                             "http_504", "http_429", "non_idempotent",
                                             "off"]}},
        "next_upstream_timeout": _number(0, minimum=0),
        # request body bytes kept to send again on a retry (more: no retry
        # once the body went upstream)
        "retry_body_buffer": _number(65536, minimum=0, integer=True),
        "keepalive_timeout": _number(75, exclusive=0),
        "keepalive_requests": _number(10000, minimum=1, integer=True),
        "header_timeout": _number(60, exclusive=0),
        "max_line_size": _number(8192, minimum=64, integer=True),
        "max_header_size": _number(32768, minimum=256, integer=True),
        "max_body_size": _number(None, minimum=0, integer=True, nullable=True),
        # nginx's proxy_buffer_size (4k/8k there): a larger upstream head is a 502
        "max_upstream_header_size": _number(65536, minimum=256, integer=True),
        "upstream_keepalive": _number(32, minimum=0, integer=True),
        "upstream_keepalive_timeout": _number(60, exclusive=0),
        # nginx's lingering_time / lingering_timeout (lingering_timeout 0: off)
        "lingering_time": _number(30, exclusive=0),
        "lingering_timeout": _number(5, minimum=0),
        # nginx's underscores_in_headers: request fields whose names have an
        # underscore are dropped unless true (X_Forwarded_For, Transfer_Encoding
        # read as their dashed names by some servers: a smuggling vector)
        "underscores_in_headers": {"type": "boolean", "default": False},
        # nginx's large_client_header_buffers size: a longer header line is a 400
        "max_header_line": _number(8192, minimum=64, integer=True),
        # nginx's client_body_buffer_size: a body this small is read whole
        # before tproxy connects upstream (0: stream every body at once)
        "client_body_buffer_size": _number(16384, minimum=0, integer=True),
        # nginx's client_body_timeout: seconds between two reads of a body
        "client_body_timeout": _number(60, exclusive=0),
        # Upgrade protocols tunneled (tproxy.http.tunnel); others go as plain requests
        "upgrade_protocols": {"type": "array", "default": ["websocket"],
                              "items": {"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"}},
        # seconds an upgraded connection may stay silent both ways (nginx: proxy_read_timeout)
        "upgrade_idle_timeout": _number(60, exclusive=0),
    }),
    "streams": {"type": "array", "items": _STREAM, "default": []},
    # seconds a stopping tproxy lets requests in flight and stream sessions
    # finish before it aborts them (nginx's worker_shutdown_timeout); 0: at once
    "shutdown_timeout": _number(10, minimum=0),
    # worker processes accepting on the listeners (tproxy.supervisor); 1: one
    # process, as without the key; "auto": one per CPU
    "workers": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1024},
                          {"const": "auto"}],
                "default": 1,
                "x-messages": {"anyOf": "expected an integer from 1 to 1024 or \"auto\""}},
})


# ---------------------------------------------------------------------------
# validation, defaults, normalisation
# ---------------------------------------------------------------------------

def validator_for(schema):
    """A Draft 2020-12 validator of ``schema`` that knows tproxy's formats."""
    # Checking a schema against the metaschema costs milliseconds, and each
    # plugin's settings_schema comes back at every start and reload (and in
    # every test that builds a gateway): check each distinct schema once.
    key = repr(schema)
    if key not in _CHECKED_SCHEMAS:
        Draft202012Validator.check_schema(schema)
        if len(_CHECKED_SCHEMAS) < 256:
            _CHECKED_SCHEMAS.add(key)
    return Draft202012Validator(schema, format_checker=FORMATS)


#: ``repr`` of the schemas :func:`validator_for` found valid
_CHECKED_SCHEMAS = set()


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
                instance[name] = copy.deepcopy(sub["default"])
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
