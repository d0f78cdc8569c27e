# -*- test-case-name: tests.test_config -*-
"""
The configuration's JSON Schema (Draft 2020-12): :data:`SCHEMA`, with its
defaults, and the formats a schema cannot express (:data:`FORMATS`:
``tproxy-host-port``, ``tproxy-host``, ``tproxy-network``,
``tproxy-endpoint``), each with its own message.  :mod:`tproxy.config`
validates against it.
"""

import ipaddress

from jsonschema import FormatChecker

from tproxy.addresses import check_host, parse_endpoint, parse_host_port

__all__ = ["SCHEMA", "FORMATS", "DEFAULT_PLUGINS", "GROUP_NAME", "GROUP_NAME_RULE"]

#: The plugins that run when the configuration has no ``plugins`` key.
DEFAULT_PLUGINS = ("registry", "router", "least_conn", "access_log")

#: A group name: ``/``-separated segments of letters, digits and ``._~-``,
#: none of them ``.`` or ``..`` (a path's dot-segments: ``a/../b`` would name
#: ``b`` to whoever normalises it), and no final newline (``\Z``, not
#: ``$``).  The configuration's schemas and the registry API
#: (:func:`tproxy.builtins.registry.parse_prefix`) share it.
GROUP_NAME = (r"^(?!\.\.?(/|\Z))[A-Za-z0-9._~-]+"
              r"(/(?!\.\.?(/|\Z))[A-Za-z0-9._~-]+)*\Z")

#: What :data:`GROUP_NAME` allows, for the messages.
GROUP_NAME_RULE = ("allowed: letters, digits, '._~-', and '/' between segments; "
                   "no '.' or '..' segment")

FORMATS = FormatChecker(formats=())


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
        parsed = parse_endpoint(value)
    except ValueError as e:
        raise ValueError("bad endpoint {!r} ({})".format(value, e))
    if parsed is None:  # pragma: no cover
        return True
    kind, args, _ = parsed
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

# TLS to an upstream group or peer (tproxy.tls_upstream.client_creator)
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
              "x-messages": {"pattern": "bad group name {instance!r} (" +
                                        GROUP_NAME_RULE + ")"}},
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
                "pattern": r"^redis://(:[^@/]*@)?(\[[0-9A-Fa-f:.]+\]|[^:/@\[\]]+)(:(6553[0-5]|655[0-2][0-9]|65[0-4]"
                           r"[0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
                           r"(/[0-9]{1,5})?$",
                "x-messages": {"pattern": "bad Redis URL {instance!r} (expected "
                               "redis://[:password@]host[:port][/db], an IPv6 "
                               "host in brackets)"}},
        "key_prefix": {"type": "string", "default": "tproxy:", "maxLength": 200,
                       "pattern": r"^\S*$",
                       "x-messages": {"pattern": "key_prefix {instance!r} has a space"}},
        "timeout": _number(2, exclusive=0),
        "retry_interval": _number(1, exclusive=0),
        "resync_interval": _number(30, exclusive=0),
    }),
    "trusted_proxies": {"type": "array", "default": [],
                        "items": {"type": "string", "format": "tproxy-network"}},
    # the one header believed from them (nginx's real_ip_header); absent: both
    "real_ip_header": {"enum": ["X-Real-IP", "X-Forwarded-For"]},
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
        # nginx's send_timeout: seconds a client may leave a response unread
        # (while it does, tproxy does not read the upstream)
        "client_send_timeout": _number(60, exclusive=0),
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
    # the least level of what twistd's log gets (nginx's error_log level);
    # malformed requests and client timeouts are logged at "debug"
    "log_level": {"enum": ["debug", "info", "warn", "error", "critical"],
                  "default": "info"},
})
