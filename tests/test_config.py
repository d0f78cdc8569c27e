"""
Tests for :mod:`tproxy.config`: defaults, normalisation, and the exact
messages of invalid configurations.
"""

import json
import os

from twisted.trial.unittest import TestCase

from tproxy.config import ConfigError, load_config, parse_host_port, validate_config

from tests.helpers import temp_path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: Every default, pinned.
DEFAULTS = {
    "listen": "tcp:8080",
    "admin": {"listen": "tcp:9180:interface=127.0.0.1", "token": None, "hosts": [],
              "origins": [], "allow_remote_without_token": False},
    "registry": {"ttl": 60, "cleanup_interval": 10, "max_groups": 10000,
                 "max_servers_per_group": 10000, "max_servers": 100000,
                 "backend": "memory", "url": "redis://127.0.0.1:6379/0",
                 "key_prefix": "tproxy:", "timeout": 2, "retry_interval": 1,
                 "resync_interval": 30},
    "trusted_proxies": [],
    "timeouts": {"connect": 60, "send": 60, "read": 90},
    "upstreams": {},
    "streams": [],
    "plugins": [
        {"name": "registry", "settings": {}},
        {"name": "router", "settings": {}},
        {"name": "least_conn", "settings": {}},
        {"name": "access_log", "settings": {}},
    ],
    "proxy": {
        "tries": 0,
        "keepalive_timeout": 75,
        "keepalive_requests": 10000,
        "header_timeout": 60,
        "max_line_size": 8192,
        "max_header_size": 32768,
        "max_body_size": None,
        "max_upstream_header_size": 65536,
        "upstream_keepalive": 32,
        "upstream_keepalive_timeout": 60,
        "lingering_time": 30,
        "lingering_timeout": 5,
        "underscores_in_headers": False,
        "max_header_line": 8192,
        "client_body_buffer_size": 16384,
        "client_body_timeout": 60,
        "client_send_timeout": 60,
        "upgrade_protocols": ["websocket"],
        "upgrade_idle_timeout": 60,
        "next_upstream": ["error", "timeout"],
        "next_upstream_timeout": 0,
        "retry_body_buffer": 65536,
    },
    "health": {
        "passive": {"max_fails": 1, "fail_timeout": 10, "max_ejection": 300,
                    "statuses": []},
        "when_all_down": "try_all",
        "slow_start": 0,
        "active": None,
    },
    "shutdown_timeout": 10,
    "workers": 1,
    "log_level": "info",
}


def _with(**changes):
    """DEFAULTS with some top-level keys replaced."""
    expected = json.loads(json.dumps(DEFAULTS))
    expected.update(changes)
    return expected


class SchemaTests(TestCase):
    """The schemas tproxy validates with are valid Draft 2020-12 schemas
    (tproxy does not check them at import: it would cost every process)."""

    def test_valid(self):
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        from tproxy.config import SCHEMA
        from tproxy.routing.spec import ROUTE_SCHEMA
        for schema in (SCHEMA, ROUTE_SCHEMA):
            Draft202012Validator.check_schema(schema)
        with self.assertRaises(SchemaError):
            Draft202012Validator.check_schema({"type": "no such type"})


class DefaultsTests(TestCase):
    """
    An empty configuration is the documented defaults; partial sections are
    completed.
    """

    def test_empty(self):
        self.assertEqual(validate_config({}), DEFAULTS)

    def test_partial_sections(self):
        config = validate_config({
            "admin": {"token": "s3cret"},
            "registry": {"ttl": 5},
            "timeouts": {"read": 2.5},
            "proxy": {"tries": 1, "max_body_size": 1024},
        })
        expected = _with(
            admin=dict(DEFAULTS["admin"], token="s3cret"),
            registry=dict(DEFAULTS["registry"], ttl=5),
            timeouts={"connect": 60, "send": 60, "read": 2.5},
        )
        expected["proxy"].update(tries=1, max_body_size=1024)
        self.assertEqual(config, expected)

    def test_input_not_changed(self):
        """validate_config returns a new dict and leaves its input alone."""
        raw = {"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}, "admin": {}}
        before = json.loads(json.dumps(raw))
        validate_config(raw)
        self.assertEqual(raw, before)

    def test_defaults_not_shared(self):
        """Changing one loaded configuration does not change the next."""
        first = validate_config({})
        first["plugins"].append({"name": "x", "settings": {}})
        first["admin"]["token"] = "t"
        self.assertEqual(validate_config({}), DEFAULTS)

    def test_example_file(self):
        """etc/conf.json is valid and spells out the defaults."""
        config = load_config(os.path.join(ROOT, "etc", "conf.json"))
        self.assertEqual(config, DEFAULTS)


class NormalisationTests(TestCase):
    """Shorthands become the one form the rest of tproxy reads."""

    def test_peers(self):
        config = validate_config({"upstreams": {
            "api": {"peers": ["127.0.0.1:9001", "[::1]:80", "backend.local:8080",
                              {"host": "10.0.0.2", "port": 9002},
                              {"host": "::1", "port": 9003.0, "weight": 5}]},
            "api/v2": {"peers": []},
        }})
        self.assertEqual(config["upstreams"], {
            "api": {"peers": [
                {"host": "127.0.0.1", "port": 9001, "weight": 1, "max_conns": 0},
                {"host": "::1", "port": 80, "weight": 1, "max_conns": 0},
                {"host": "backend.local", "port": 8080, "weight": 1, "max_conns": 0},
                {"host": "10.0.0.2", "port": 9002, "weight": 1, "max_conns": 0},
                {"host": "::1", "port": 9003, "weight": 5, "max_conns": 0},
            ]},
            "api/v2": {"peers": []},
        })
        self.assertIsInstance(config["upstreams"]["api"]["peers"][4]["port"], int)

    def test_peerHostsNormalised(self):
        """Static peers' hosts are spelled as the admin API spells them: a
        name lower-cased, IPv6 compressed, IPv4-mapped IPv6 as IPv4."""
        config = validate_config({"upstreams": {"api": {"peers": [
            "Backend.Example.COM:80", "[0:0::1]:81", "[::ffff:10.0.0.1]:82",
            {"host": "LOCALHOST", "port": 83}]}}})
        self.assertEqual([(p["host"], p["port"]) for p in config["upstreams"]["api"]["peers"]],
                         [("backend.example.com", 80), ("::1", 81), ("10.0.0.1", 82),
                          ("localhost", 83)])

    def test_plugins(self):
        config = validate_config({"plugins": [
            "router", {"name": "x.y"}, {"name": "router", "settings": {"a": {"b": 1}}}]})
        self.assertEqual(config["plugins"], [
            {"name": "router", "settings": {}},
            {"name": "x.y", "settings": {}},
            {"name": "router", "settings": {"a": {"b": 1}}},
        ])

    def test_no_plugins(self):
        """An explicit empty list means no plugins at all."""
        self.assertEqual(validate_config({"plugins": []})["plugins"], [])

    def test_trusted_proxies(self):
        """Addresses and networks, IPv4 and IPv6, are kept as written."""
        nets = ["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8", "10.1.2.3/8"]
        self.assertEqual(validate_config({"trusted_proxies": nets})["trusted_proxies"],
                         nets)

    def test_endpoints(self):
        config = validate_config({"listen": "tcp:0:interface=127.0.0.1",
                                  "admin": {"listen": "unix:/tmp/tproxy-admin.sock"}})
        self.assertEqual(config["listen"], "tcp:0:interface=127.0.0.1")
        self.assertEqual(config["admin"]["listen"], "unix:/tmp/tproxy-admin.sock")

    def test_parse_host_port(self):
        self.assertEqual(parse_host_port("a.example:1"), ("a.example", 1))
        self.assertEqual(parse_host_port("[fe80::1]:65535"), ("fe80::1", 65535))
        self.assertRaises(ValueError, parse_host_port, "::1:80")


class ErrorTests(TestCase):
    """
    Each problem is reported as ``<source>: <json path>: <problem>``, one line
    per problem, sorted by path.
    """

    def assertErrors(self, obj, *lines):
        e = self.assertRaises(ConfigError, validate_config, obj, "etc/conf.json")
        self.assertEqual(str(e).split("\n"), list(lines))
        return e

    def test_listenerClash(self):
        """Two listeners binding the same TCP port (on the same address, or
        one on all of them) or the same UNIX socket: the later one is an
        error naming its key, not an "address in use" at start after
        ``--check`` said valid.  Distinct addresses and port 0 are fine."""
        self.assertErrors(
            {"listen": "tcp:8080", "streams": [
                {"listen": "tcp:8080:interface=127.0.0.1", "group": "a"},
                {"listen": "unix:/run/a.sock", "group": "b"},
                {"listen": "unix:address=/run/a.sock:mode=600", "group": "c"},
                {"listen": "tcp:9180", "group": "d"}]},
            "etc/conf.json: streams[0].listen: tcp:8080:interface=127.0.0.1 binds where "
            "listen (tcp:8080) does: each listener needs its own port or socket",
            "etc/conf.json: streams[2].listen: unix:address=/run/a.sock:mode=600 binds "
            "where streams[1].listen (unix:/run/a.sock) does: each listener needs its "
            "own port or socket",
            "etc/conf.json: streams[3].listen: tcp:9180 binds where admin.listen "
            "(tcp:9180:interface=127.0.0.1) does: each listener needs its own port or "
            "socket")
        validate_config({"listen": "tcp:8080:interface=127.0.0.1",
                         "admin": {"listen": "tcp:8080:interface=127.0.0.2"},
                         "streams": [{"listen": "tcp:0", "group": "a"},
                                     {"listen": "tcp:0", "group": "b"}]})

    def test_log_level(self):
        """``log_level``: one of twisted.logger's level names (``info`` when
        absent); anything else is an error naming the key."""
        for value in ("verbose", "DEBUG", "warning", 10, None):
            self.assertErrors({"log_level": value}, 'etc/conf.json: log_level: {} is not one of '
                              '"debug", "info", "warn", "error", "critical"'.format(
                                  json.dumps(value)))
        for value in ("debug", "info", "warn", "error", "critical"):
            self.assertEqual(validate_config({"log_level": value})["log_level"], value)

    def test_ownListenerPeer(self):
        """A static peer at one of tproxy's own listeners is refused, by its
        JSON path (as the admin API refuses to register one)."""
        self.assertErrors(
            {"listen": "tcp:8000", "upstreams": {"api": {"peers": [
                "127.0.0.1:9001", "localhost:8000", "127.0.0.1:9180"]}}},
            "etc/conf.json: upstreams.api.peers[1]: localhost:8000 is tproxy's own proxy "
            "listener: requests sent there would come back to it",
            "etc/conf.json: upstreams.api.peers[2]: 127.0.0.1:9180 is tproxy's own admin "
            "API listener: requests sent there would come back to it")
        validate_config({"listen": "tcp:8000:interface=127.0.0.1",
                         "upstreams": {"api": {"peers": ["127.0.0.2:8000"]}}})

    def test_workers(self):
        """``workers``: a count from 1 to 1024, or ``"auto"``."""
        for value in (0, 1025, -1, 1.5, "all", True, None, [2]):
            self.assertErrors({"workers": value}, 'etc/conf.json: workers: expected an '
                              'integer from 1 to 1024 or "auto"')
        for value in (1, 2, 1024, "auto"):
            self.assertEqual(validate_config({"workers": value})["workers"], value)

    def test_port_out_of_range(self):
        e = self.assertErrors(
            {"upstreams": {"api": {"peers": ["127.0.0.1:9001", "127.0.0.1:70000"]}}},
            "etc/conf.json: upstreams.api.peers[1]: port 70000 is out of range")
        self.assertEqual((e.source, e.path, e.problem),
                         ("etc/conf.json", "upstreams.api.peers[1]",
                          "port 70000 is out of range"))

    def test_port_out_of_range_object(self):
        self.assertErrors(
            {"upstreams": {"api": {"peers": [{"host": "h", "port": 0},
                                             {"host": "h", "port": 65536}]}}},
            "etc/conf.json: upstreams.api.peers[0].port: port 0 is out of range",
            "etc/conf.json: upstreams.api.peers[1].port: port 65536 is out of range")

    def test_bad_host_port(self):
        self.assertErrors(
            {"upstreams": {"api": {"peers": ["localhost", "a b:80", "h:http",
                                             "[zz]:80", "::1:80", "[::1:80",
                                             "[::1]"]}}},
            "etc/conf.json: upstreams.api.peers[0]: bad host:port 'localhost' "
            "(expected HOST:PORT, IPv6 as [::1]:80)",
            "etc/conf.json: upstreams.api.peers[1]: bad host:port 'a b:80': 'a b' "
            "is not a host name or an IP address (IPv6 as [::1]:80)",
            "etc/conf.json: upstreams.api.peers[2]: bad host:port 'h:http': port "
            "'http' is not a number",
            "etc/conf.json: upstreams.api.peers[3]: bad host:port '[zz]:80': 'zz' "
            "is not an IPv6 address",
            "etc/conf.json: upstreams.api.peers[4]: bad host:port '::1:80' (an "
            "IPv6 address needs brackets: [::1]:80)",
            "etc/conf.json: upstreams.api.peers[5]: bad host:port '[::1:80' "
            "(expected [IPv6 address]:PORT, as [::1]:80)",
            "etc/conf.json: upstreams.api.peers[6]: bad host:port '[::1]' "
            "(expected [IPv6 address]:PORT, as [::1]:80)")

    def test_bad_host(self):
        self.assertErrors(
            {"upstreams": {"api": {"peers": [{"host": "a/b", "port": 1},
                                             {"host": "300.1.1.1", "port": 1}]}}},
            "etc/conf.json: upstreams.api.peers[0].host: bad host 'a/b' "
            "(expected a host name or an IP address)",
            "etc/conf.json: upstreams.api.peers[1].host: bad host '300.1.1.1' "
            "(expected a host name or an IP address)")

    def test_weight(self):
        self.assertErrors(
            {"upstreams": {"api": {"peers": [{"host": "h", "port": 1, "weight": 0},
                                             {"host": "h", "port": 2, "weight": 1001}]}}},
            "etc/conf.json: upstreams.api.peers[0].weight: weight 0 is out of "
            "range (1-1000)",
            "etc/conf.json: upstreams.api.peers[1].weight: weight 1001 is out of "
            "range (1-1000)")

    def test_unknown_keys(self):
        self.assertErrors(
            {"lisen": "tcp:1", "admin": {"tokn": "x"},
             "upstreams": {"api": {"peers": [{"host": "h", "port": 1, "wieght": 2}],
                                   "ttl": 3}}},
            "etc/conf.json: admin.tokn: unknown key (known keys: allow_remote_without_token, "
            "hosts, listen, origins, token)",
            "etc/conf.json: lisen: unknown key (known keys: admin, health, listen, log_level, "
            "plugins, proxy, real_ip_header, registry, shutdown_timeout, streams, timeouts, tls, "
            "trusted_proxies, upstreams, workers)",
            "etc/conf.json: upstreams.api.peers[0].wieght: unknown key (known keys: "
            "host, max_conns, port, tls, weight)",
            "etc/conf.json: upstreams.api.ttl: unknown key (known keys: health_check, peers, "
            "routable, tls)")

    def test_wrong_types(self):
        self.assertErrors(
            {"listen": 8080, "admin": [], "registry": {"ttl": "60"},
             "trusted_proxies": "10.0.0.0/8", "proxy": {"tries": 1.5, "max_body_size": True},
             "upstreams": {"api": {"peers": [9001]}}, "plugins": [3]},
            "etc/conf.json: admin: expected an object, got []",
            "etc/conf.json: listen: expected a string, got 8080",
            "etc/conf.json: plugins[0]: expected a string or an object, got 3",
            "etc/conf.json: proxy.max_body_size: expected an integer or null, got true",
            "etc/conf.json: proxy.tries: expected an integer, got 1.5",
            "etc/conf.json: registry.ttl: expected a number, got \"60\"",
            "etc/conf.json: trusted_proxies: expected a list, got \"10.0.0.0/8\"",
            "etc/conf.json: upstreams.api.peers[0]: expected a string or an object, "
            "got 9001")

    def test_health_check_needs_plugin(self):
        self.assertErrors(
            {"upstreams": {"api": {"peers": ["h:1"], "health_check": {"path": "/h"}}},
             "health": {"active": {"type": "tcp"}}},
            "etc/conf.json: upstreams.api.health_check: active checks need the "
            "health_check plugin in plugins",
            "etc/conf.json: health.active: active checks need the health_check "
            "plugin in plugins")

    def test_health_check_defaults(self):
        config = validate_config({"upstreams": {"api": {"peers": ["h:1"],
                                                        "health_check": {}}},
                                  "plugins": ["health_check"]})
        self.assertEqual(config["upstreams"]["api"]["health_check"], {
            "type": "http", "method": "GET", "path": "/", "host": None,
            "statuses": [200], "interval": 5, "timeout": 2, "rise": 2, "fall": 3,
            "concurrency": 10})

    def test_health_errors(self):
        self.assertErrors(
            {"health": {"passive": {"statuses": [404]}, "when_all_down": "x"},
             "proxy": {"next_upstream": ["http_418"]}},
            "etc/conf.json: health.passive.statuses[0]: 404 is out of range (must be "
            "at least 500)",
            "etc/conf.json: health.when_all_down: \"x\" is not one of \"try_all\", "
            "\"503\"",
            "etc/conf.json: proxy.next_upstream[0]: \"http_418\" is not one of "
            "\"error\", \"timeout\", \"invalid_header\", \"http_500\", \"http_502\", "
            "\"http_503\", \"http_504\", \"http_429\", \"non_idempotent\", \"off\"")

    def test_not_an_object(self):
        self.assertErrors([], "etc/conf.json: expected an object, got []")

    def test_numbers_out_of_range(self):
        self.assertErrors(
            {"registry": {"ttl": 0, "cleanup_interval": -1}, "timeouts": {"read": 0},
             "proxy": {"tries": -1, "max_line_size": 10, "upstream_keepalive": -1}},
            "etc/conf.json: proxy.max_line_size: 10 is out of range (must be at "
            "least 64)",
            "etc/conf.json: proxy.tries: -1 is out of range (must be at least 0)",
            "etc/conf.json: proxy.upstream_keepalive: -1 is out of range (must be "
            "at least 0)",
            "etc/conf.json: registry.cleanup_interval: -1 is out of range (must be "
            "greater than 0)",
            "etc/conf.json: registry.ttl: 0 is out of range (must be greater than 0)",
            "etc/conf.json: timeouts.read: 0 is out of range (must be greater than 0)")

    def test_endpoints(self):
        self.assertErrors(
            {"listen": "tcp:abc", "admin": {"listen": "tcp:99999"}},
            "etc/conf.json: admin.listen: bad endpoint 'tcp:99999' (port 99999 is "
            "out of range)",
            "etc/conf.json: listen: bad endpoint 'tcp:abc' (port 'abc' is not a number)")

    def test_endpointMessages(self):
        """What Twisted's parser says in Python's words (a call's arguments)
        is said in the endpoint string's: an IPv6 interface's unescaped
        colons, an unknown option, a UNIX socket without a path."""
        self.assertErrors(
            {"listen": "tcp:8080:interface=::1", "admin": {"listen": "tcp:9180:bogus=1"},
             "streams": [{"listen": "unix:", "group": "g"}]},
            "etc/conf.json: admin.listen: bad endpoint 'tcp:9180:bogus=1' (unknown "
            "option 'bogus')",
            "etc/conf.json: listen: bad endpoint 'tcp:8080:interface=::1' (too many "
            "':'-separated fields: a colon inside a value is escaped, as in "
            "interface=\\:\\:1)",
            "etc/conf.json: streams[0].listen: bad endpoint 'unix:' (a UNIX socket "
            "needs a path: unix:/run/tproxy.sock)")

    def test_unknown_endpoint_type(self):
        self.assertErrors(
            {"listen": "carrier-pigeon:1"},
            "etc/conf.json: listen: bad endpoint 'carrier-pigeon:1' (Unknown "
            "endpoint type: 'carrier-pigeon')")

    def test_trusted_proxies(self):
        self.assertErrors(
            {"trusted_proxies": ["10.0.0.0/8", "10.0.0.300", "example.com"]},
            "etc/conf.json: trusted_proxies[1]: bad address or network "
            "'10.0.0.300' (expected an IP address or a CIDR such as 10.0.0.0/8)",
            "etc/conf.json: trusted_proxies[2]: bad address or network "
            "'example.com' (expected an IP address or a CIDR such as 10.0.0.0/8)")

    def test_group_names(self):
        rule = ("(allowed: letters, digits, '._~-', and '/' between segments; "
                "no '.' or '..' segment)")
        self.assertErrors(
            {"upstreams": {"api v2": {"peers": []}, "/api": {"peers": []},
                           "api//x": {"peers": []}, "ok/fine": {"peers": []},
                           "v1.2/.well~known/..x": {"peers": []}}},
            "etc/conf.json: upstreams[\"/api\"]: bad group name '/api' " + rule,
            "etc/conf.json: upstreams[\"api v2\"]: bad group name 'api v2' " + rule,
            "etc/conf.json: upstreams[\"api//x\"]: bad group name 'api//x' " + rule)

    def test_group_dot_segments(self):
        """A ``.`` or ``..`` segment (``a/../b``), or a final newline, is
        refused by its JSON path, as the registry API refuses it
        (:func:`tproxy.builtins.registry.parse_prefix`: one rule)."""
        rule = ("(allowed: letters, digits, '._~-', and '/' between segments; "
                "no '.' or '..' segment)")
        names = ["a/../b", "..", ".", "a/.", "./a", "a/..", "a\n"]
        self.assertErrors(
            {"upstreams": dict((n, {"peers": []}) for n in names),
             "streams": [{"listen": "tcp:1", "group": "x/../y"}],
             "plugins": [{"name": "cors", "routes": ["ok", "a/./b"]}]},
            *sorted(["etc/conf.json: upstreams[{}]: bad group name {!r} {}".format(
                json.dumps(n), n, rule) for n in names] + [
                "etc/conf.json: streams[0].group: bad group name 'x/../y' " + rule,
                "etc/conf.json: plugins[0].routes[1]: bad route name 'a/./b'"]))
        from tproxy.builtins.registry import BadParameter, parse_prefix
        for name in names:
            self.assertRaises(BadParameter, parse_prefix, name)
        self.assertEqual(parse_prefix("/v1.2/.well~known/..x/"), "v1.2/.well~known/..x")

    def test_group_paths_quoted(self):
        """A group name that is not an identifier is quoted in the path."""
        self.assertErrors(
            {"upstreams": {"api/v2": {"peers": ["h:0"]}}},
            "etc/conf.json: upstreams[\"api/v2\"].peers[0]: port 0 is out of range")

    def test_missing_keys(self):
        self.assertErrors(
            {"upstreams": {"api": {}, "web": {"peers": [{"port": 1}]}},
             "plugins": [{"settings": {}}]},
            "etc/conf.json: plugins[0]: missing key 'name'",
            "etc/conf.json: upstreams.api: missing key 'peers'",
            "etc/conf.json: upstreams.web.peers[0]: missing key 'host'")

    def test_plugins(self):
        self.assertErrors(
            {"plugins": ["", {"name": ""}, {"name": "x", "settings": []},
                         {"name": "x", "route": ["api"]},
                         {"name": "x", "routes": []}]},
            "etc/conf.json: plugins[0]: empty plugin name",
            "etc/conf.json: plugins[1].name: empty plugin name",
            "etc/conf.json: plugins[2].settings: expected an object, got []",
            "etc/conf.json: plugins[3].route: unknown key (known keys: name, "
            "routes, settings)",
            "etc/conf.json: plugins[4].routes: empty list (leave routes out to "
            "enable the plugin everywhere)")

    def test_token(self):
        self.assertErrors(
            {"admin": {"token": ""}},
            "etc/conf.json: admin.token: empty token (use null for no token)")

    def test_default_source(self):
        e = self.assertRaises(ConfigError, validate_config, {"listen": 1})
        self.assertEqual(str(e), "<config>: listen: expected a string, got 1")


class RepeatedValidationTests(TestCase):
    """A document validated again (a reload that changed nothing, a test
    harness per test) is answered from the first validation's result: a new
    dict each time, the same answer as a first validation."""

    def test_newDictEachTime(self):
        doc = {"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}}
        first = validate_config(doc)
        first["upstreams"]["api"]["peers"].append("mutated")
        first["proxy"]["tries"] = 99
        again = validate_config(doc)
        self.assertEqual([(p["host"], p["port"]) for p in again["upstreams"]["api"]["peers"]],
                         [("127.0.0.1", 9001)])
        self.assertEqual(again["proxy"]["tries"], 0)
        self.assertEqual(doc, {"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}})

    def test_sameTextOtherTypes(self):
        """A document whose JSON text is a valid one's but which is not
        that document (a tuple, a key that is not a string) is validated
        as it is."""
        validate_config({"trusted_proxies": ["10.0.0.1"]})
        e = self.assertRaises(ConfigError, validate_config,
                              {"trusted_proxies": ("10.0.0.1",)})
        self.assertEqual(e.path, "trusted_proxies")
        validate_config({"upstreams": {"1": {"peers": []}}})
        self.assertEqual(list(validate_config({"upstreams": {1: {"peers": []}}})["upstreams"]),
                         [1])

    def test_errorsEveryTime(self):
        """An invalid document is refused each time, in its source's name."""
        for source in ("a.json", "b.json"):
            e = self.assertRaises(ConfigError, validate_config, {"listen": 1}, source)
            self.assertEqual(str(e), source + ": listen: expected a string, got 1")

    def test_integralFloats(self):
        """1.0 where an integer is expected is 1, validated the first time
        or again."""
        for _ in range(2):
            config = validate_config({"proxy": {"tries": 2.0}})
            self.assertEqual((config["proxy"]["tries"], type(config["proxy"]["tries"])),
                             (2, int))


class LoadTests(TestCase):
    """load_config reads a file; file and JSON problems are ConfigErrors too."""

    def write(self, data):
        path = temp_path(self)
        with open(path, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path

    def assertLoadError(self, path, message):
        e = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(str(e), message.format(path=path))

    def test_load(self):
        path = self.write('{"listen": "tcp:8081",\n "upstreams": {"api": '
                          '{"peers": ["127.0.0.1:9001"]}}}')
        expected = _with(listen="tcp:8081", upstreams={"api": {"peers": [
            {"host": "127.0.0.1", "port": 9001, "weight": 1, "max_conns": 0}]}})
        self.assertEqual(load_config(path), expected)

    def test_byte_order_mark(self):
        self.assertEqual(load_config(self.write(b'\xef\xbb\xbf{}')), DEFAULTS)

    def test_source_is_the_path(self):
        path = self.write('{"upstreams": {"api": {"peers": ["h:1", "h:70000"]}}}')
        self.assertLoadError(path, "{path}: upstreams.api.peers[1]: port 70000 is "
                                   "out of range")

    def test_syntax_error(self):
        path = self.write('{\n  "listen": "tcp:8080"\n  "admin": {}\n}\n')
        self.assertLoadError(path, "{path}: line 3 column 3: invalid JSON: "
                                   "Expecting ',' delimiter")

    def test_comment(self):
        path = self.write('{\n  // no comments in JSON\n}')
        self.assertLoadError(path, "{path}: line 2 column 3: invalid JSON: "
                                   "Expecting property name enclosed in double quotes")

    def test_empty(self):
        self.assertLoadError(self.write(""), "{path}: line 1 column 1: invalid "
                                             "JSON: Expecting value")

    def test_past_ascii(self):
        """An error at a character past ASCII names it (PyPy's decoder
        gives no usable message for it)."""
        path = self.write('{"listen": \u00e9}'.encode("utf-8"))
        self.assertLoadError(path, "{path}: line 1 column 12: invalid JSON: "
                                   "unexpected '\u00e9'")

    def test_duplicate_key(self):
        path = self.write('{"listen": "tcp:1", "listen": "tcp:2"}')
        self.assertLoadError(path, '{path}: invalid JSON: duplicate key "listen"')

    def test_not_finite(self):
        """NaN, Infinity and a number too large for a float (which Python's
        reader takes, JSON does not have, and NaN passes every minimum of
        the schema) are refused by their JSON paths, plugin settings too."""
        path = self.write('{"timeouts": {"connect": 1e999, "read": NaN},\n'
                          ' "shutdown_timeout": -Infinity,\n'
                          ' "plugins": [{"name": "access_log", "settings": '
                          '{"flush_interval": NaN}}]}')
        finite = "is not a number (JSON has no NaN or Infinity; a number must be finite)"
        self.assertLoadError(path, "\n".join("{path}: " + line for line in [
            "timeouts.connect: Infinity " + finite,
            "timeouts.read: NaN " + finite,
            "shutdown_timeout: -Infinity " + finite,
            "plugins[0].settings.flush_interval: NaN " + finite]))

    def test_not_utf8(self):
        path = self.write(b'{"listen": "\xff"}')
        self.assertLoadError(path, "{path}: not UTF-8 (byte 0xff at offset 12)")

    def test_missing_file(self):
        self.assertLoadError("no-such-conf.json", "{path}: cannot read: No such "
                                                  "file or directory")
