"""
Property-based tests (hypothesis) of the admin API's parameters and requests:
random query strings (randomly percent-encoded), JSON and form bodies for
``/upstream/add``, ``/upstream/remove`` and ``/upstream/servers``, route
objects for ``/routes``, random ``Host``, ``Origin``, ``Sec-Fetch-Site`` and
``Authorization`` fields, with and without ``admin.token``.  Whatever the
request, the answer is a JSON document with a 2xx or 4xx status (never a 5xx,
never a closed connection without an answer), and the registry and the route
table change exactly as a small model of the rules below says: a refused
request changes nothing, an accepted add is visible in ``/upstream/status``,
an accepted remove is gone from it.

Through :class:`tproxy.testing.Harness` (HTTP in memory, fake clock).  Short by
default (10 derandomized examples per test: the suite's run); long mode,
random::

    TPROXY_FUZZ_EXAMPLES=5000 python -m twisted.trial tests.test_fuzz_admin

The test cases are :mod:`tests.test_fuzz_admin`'s: they import this module
when they run; each property's ``self`` is the test case, whose ``gw`` is a
:class:`Gateway`.
"""

import json
import os
from urllib.parse import quote

from tests.helpers import prepare_hypothesis

EXAMPLES = int(os.environ.get("TPROXY_FUZZ_EXAMPLES", "0") or 0)
prepare_hypothesis(derandomized=EXAMPLES == 0)

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from tproxy.testing import Harness  # noqa: E402

FUZZ = settings(
    max_examples=EXAMPLES or 10, deadline=None, derandomize=EXAMPLES == 0,
    database=None, suppress_health_check=list(HealthCheck))

TOKEN = "s3cret-token"
PLUGINS = ["registry", "routes", "router", "least_conn"]

# -- the parameters: good ones (with what they mean), bad ones, anything ---------

# field -> [(text, normalised value)]; None: the field's default
GOOD = {
    "port": [("1", 1), ("80", 80), ("9001", 9001), ("65535", 65535), ("0080", 80)],
    "host": [("127.0.0.1", "127.0.0.1"), ("10.0.0.5", "10.0.0.5"), ("::1", "::1"),
             ("[::1]", "::1"), ("Backend-1.Example", "backend-1.example"),
             ("::ffff:10.1.2.3", "10.1.2.3"), ("", "127.0.0.1"), ("b_2", "b_2")],
    "prefix": [("api", "api"), ("/api/", "api"), ("a/b.c~d-_", "a/b.c~d-_"),
               ("", "default"), ("/", "default")],
    "weight": [("1", 1), ("1000", 1000), ("", None)],
    "max_conns": [("0", 0), ("1000000", 1000000), ("", None)],
    "routable": [("true", True), ("NO", False), ("1", True), ("", None)],
}
BAD = {
    "port": ["0", "65536", "-1", "80a", " 80", "1e3", "\u0668\u0660", "99999", "8 0",
             "+80", "0x50"],
    "host": ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1", "ff02::1", "a..b", "-a",
             "fe80::1%eth0", "256.1.1.1", "a b", "[1.2.3.4]", "10.1", "h\u00e9", "x" * 300,
             "[::1", "a.b.", "0.1.2.3"],
    "prefix": ["a//b", "..", "a/../b", "a:b", "a b", "x" * 201, "./a", "a%2Fb", "\u00e9"],
    "weight": ["0", "1001", "abc", "-1", "1.5"],
    "max_conns": ["-1", "1000001", "x", "1e6"],
    "routable": ["maybe", "2", "tru"],
}
FIELDS = sorted(GOOD)
#: any text (no surrogate: not UTF-8), drawn by code point (``st.characters``
#: would have hypothesis build its Unicode tables, ~0.35 s of CPU in each test
#: process of a fresh clone)
ANY_TEXT = st.lists(st.one_of(st.integers(0, 0xD7FF), st.integers(0xE000, 0x10FFFF)),
                    max_size=12).map(lambda points: "".join(map(chr, points)))


@st.composite
def parameters(draw):
    """``(params, bad)``: ``{field: text}`` with good or bad values (or none),
    and maybe an unknown field; ``bad`` is the set of fields that are bad
    (an unknown one is)."""
    params = {}
    bad = set()
    mode = draw(st.sampled_from(["good", "one bad", "one bad", "any"]))
    wrong = draw(st.sampled_from(FIELDS)) if mode == "one bad" else None
    for field in FIELDS:
        if field == wrong:
            kind = "bad"
        elif mode == "any":
            kind = draw(st.sampled_from(["absent", "good", "bad"]))
        else:
            kind = draw(st.sampled_from(["absent", "good"] if field != "port" else ["good"]))
        if kind == "good":
            params[field] = draw(st.sampled_from(GOOD[field]))[0]
        elif kind == "bad":
            params[field] = draw(st.sampled_from(BAD[field]))
            bad.add(field)
        elif field == "port":
            bad.add(field)   # port is required
    if draw(st.booleans()):
        unknown = draw(st.sampled_from(["x", "name", "ttl", "Port"]))
        params[unknown] = draw(ANY_TEXT)
        bad.add(unknown)
    return params, bad


def normalised(params, client="127.0.0.1"):
    """What a good add registers: ``(prefix, host, port)``."""
    def value(field):
        text = params.get(field, "")
        return dict(GOOD[field])[text]
    host = value("host") if params.get("host") else client
    return value("prefix"), host, value("port")


@st.composite
def percent_encoded(draw, text, safe=""):
    """``text`` (UTF-8) with each byte percent-encoded or not, hex digits in
    either case; the characters that mean something in a query always
    encoded.  (A byte's two choices are two bits of a byte drawn for it, the
    text's all at once: two draws a byte made a query of six fields cost a
    hundred draws.)"""
    data = text.encode("utf-8")
    choices = draw(st.binary(min_size=len(data), max_size=len(data)))
    out = []
    for byte, choice in zip(data, choices):
        char = chr(byte)
        plain = (byte < 128 and char.isalnum()) or char in "-._~" + safe
        if plain and choice & 1:
            out.append(char)
        else:
            hexa = "%02X" % byte
            out.append("%" + (hexa.lower() if choice & 2 else hexa))
    return "".join(out)


@st.composite
def query(draw, params):
    """``(query, broken, unknown)``: ``params`` as a query string, maybe with
    junk; ``broken``: the junk is not UTF-8 once decoded; ``unknown``: it is
    a parameter of another name."""
    broken = unknown = False
    pairs = []
    for name, value in params.items():
        pairs.append(draw(percent_encoded(name)) + "=" + draw(percent_encoded(value)))
    if draw(st.integers(0, 4)) == 0:
        # a broken percent-encoding or a stray separator somewhere
        junk = draw(st.sampled_from(["%", "%zz", "x=%ff", "x=%C3", "&", "=", "x=%e9t%C3%A9",
                                     "y=a+b", ";"]))
        broken = junk in ("x=%ff", "x=%C3", "x=%e9t%C3%A9")
        unknown = junk != "&"
        pairs.insert(draw(st.integers(0, len(pairs))), junk)
    return "&".join(pairs), broken, unknown


# -- the headers ------------------------------------------------------------------

# (value, outcome for a request without the token: None (served), 400, 421)
HOSTS = [("localhost", None), ("127.0.0.1:9180", None), ("[::1]:9180", None),
         ("LOCALHOST", None), ("127.8.9.1", None), ("evil.example", 421),
         ("10.0.0.1:9180", 421), ("0.0.0.0:9180", 421), ("localhost.evil.example", 421),
         ("[::1", 400), ("localhost:x", 400), ("localhost:123456", 400)]
SITES = [(None, None), ("same-origin", None), ("none", None), ("NONE", None),
         ("cross-site", 403), ("same-site", 403), ("", 403), ("bogus", 403)]
AUTHS = [None, "Bearer " + TOKEN, "bearer  " + TOKEN + " ", "Bearer wrong", "Bearer",
         "Basic " + TOKEN, "Bearer " + TOKEN + "x"]


@st.composite
def headers(draw):
    """``(headers, gate)``: request fields and a function of whether a token
    is configured giving the status the checks answer before any handler
    (``None``: the request reaches its handler)."""
    if draw(st.integers(0, 2)):
        # mostly requests a script sends: the checks pass
        host, host_outcome = draw(st.sampled_from(HOSTS[:5]))
        site, site_outcome = draw(st.sampled_from(SITES[:4]))
        auth = draw(st.sampled_from(AUTHS[1:3]))
        origin = draw(st.sampled_from([None, None, "own"]))
    else:
        host, host_outcome = draw(st.sampled_from(HOSTS))
        site, site_outcome = draw(st.sampled_from(SITES))
        auth = draw(st.sampled_from(AUTHS))
        origin = draw(st.sampled_from([None, None, "own", "http://evil.example", "null",
                                       "https://localhost"]))
    fields = [("Host", host)]
    if site is not None:
        fields.append(("Sec-Fetch-Site", site))
    if origin == "own":
        origin = "http://" + host.lower()
    if origin is not None:
        fields.append(("Origin", origin))
    if auth is not None:
        fields.append(("Authorization", auth))
    authorized = auth in AUTHS[1:3]
    origin_outcome = None
    if origin is not None and origin.lower() not in ("http://" + host.lower(),
                                                    "https://" + host.lower()):
        origin_outcome = 403

    def gate(token):
        if token and not authorized:
            return 401
        if not token and host_outcome is not None:
            return host_outcome
        return site_outcome or origin_outcome

    return fields, gate


# -- the harness and the model ----------------------------------------------------

class Gateway(object):
    """A harness and the model of its registry and route table."""

    def __init__(self, token):
        # registrations outlive the examples' idle timeouts (advance(61))
        config = {"registry": {"ttl": 10 ** 9}}
        if token:
            config["admin"] = {"token": TOKEN}
        self.token = token
        self.h = Harness(config=config, plugins=PLUGINS)
        self.servers = set()    # (prefix, host, port)
        self.routes = {}        # name -> the route as answered

    def auth(self):
        return {"Authorization": "Bearer " + TOKEN} if self.token else {}

    def send(self, test, method, uri, fields, body=b""):
        """The answer, checked: a 2xx/4xx JSON document (not for HEAD)."""
        answer = self.h.admin(method, uri, headers=fields, body=body)
        test.assertTrue(200 <= answer.status < 300 or 400 <= answer.status < 500,
                        (method, uri, fields, body, answer.status, answer.body))
        if method != "HEAD":
            test.assertIsInstance(answer.obj, dict, (method, uri, answer.body))
        if answer.status >= 400 and method != "HEAD":
            test.assertIn("error", answer.obj, (method, uri, answer.obj))
        return answer

    def registered(self, test):
        """``(prefix, host, port)`` of every server /upstream/status shows."""
        answer = self.h.admin("GET", "/upstream/status", headers=self.auth())
        test.assertEqual(answer.status, 200)
        found = set()
        for group in answer.obj["groups"]:
            for server in group["servers"]:
                test.assertTrue(server["live"])
                found.add((group["prefix"], server["host"], server["port"]))
        return found

    def route_table(self, test):
        answer = self.h.admin("GET", "/routes", headers=self.auth())
        test.assertEqual(answer.status, 200)
        return {r["name"]: r for r in answer.obj["routes"]}


ENDPOINTS = [("GET", "/upstream/add", "add"), ("POST", "/upstream/add", "add"),
             ("GET", "/upstream/remove", "remove"), ("POST", "/upstream/remove", "remove"),
             ("POST", "/upstream/servers", "add"), ("PUT", "/upstream/servers", "add"),
             ("DELETE", "/upstream/servers", "remove"),
             ("PATCH", "/upstream/servers", None), ("DELETE", "/upstream/add", None)]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(ENDPOINTS), parameters(), headers(),
                          st.sampled_from(["query", "json", "form"]), st.data()),
                min_size=1, max_size=6))
def registry(self, steps):
    """Whatever the request, a JSON 2xx/4xx answer; the registry changes
    exactly as the model says."""
    gw = self.gw
    gw.servers = gw.registered(self)   # as the examples before left it
    for (method, path, action), (params, bad), (fields, gate), carrier, data in steps:
        body = b""
        uri = path
        broken = unknown = False
        if carrier == "query" or method == "GET":
            q, broken, unknown = data.draw(query(params))
            uri = path + ("?" + q if q else "")
        elif carrier == "json":
            obj = {}
            for name, value in params.items():
                # numbers as numbers where they are numbers
                if value.isdigit() and value.isascii() and not value.startswith("0") \
                        and data.draw(st.booleans()):
                    value = int(value)
                obj[name] = value
            body = obj
        else:
            body = "&".join(data.draw(percent_encoded(n)) + "=" + data.draw(
                percent_encoded(v)) for n, v in params.items()).encode("ascii")
            fields = fields + [("Content-Type", "application/x-www-form-urlencoded")]
        before = set(gw.servers)
        answer = gw.send(self, method, uri, fields, body)
        expected = gate(gw.token)
        if expected is None and broken:
            expected = 400
        if expected is None and action is None:
            expected = 405
        if expected is not None:
            self.assertEqual(answer.status, expected, (method, uri, fields, answer.obj))
        elif unknown or (bad if action == "add" else bad - {"weight", "max_conns", "routable"}):
            self.assertEqual(answer.status, 400, (method, uri, fields, body, answer.obj))
            self.assertIn("field", answer.obj)
        elif action == "add":
            self.assertIn(answer.status, (200, 201), (method, uri, body, answer.obj))
            target = normalised(params)
            self.assertEqual((answer.obj["prefix"], answer.obj["host"],
                              answer.obj["port"]), target, (uri, body))
            gw.servers.add(target)
            self.assertEqual(answer.status == 201, path == "/upstream/servers"
                             and target not in before)
            self.assertEqual(answer.obj["created"], target not in before)
        else:
            target = normalised(params)
            if target in before:
                self.assertEqual(answer.status, 200, (method, uri, body, answer.obj))
                gw.servers.discard(target)
            else:
                self.assertEqual(answer.status, 404, (method, uri, body, answer.obj))
        self.assertEqual(gw.registered(self), gw.servers, (method, uri, body, answer.obj))


# -- routes -----------------------------------------------------------------------

NAMES = ["a", "r-1", "x.y~z_", "B"]
GOOD_ROUTES = [
    {"group": "web", "match": {"path": "/x"}},
    {"group": "api/v1", "match": {"path": {"mode": "exact", "value": "/y"}, "methods": ["GET"]},
     "priority": 3},
    {"group": "g", "match": {"host": "example.com", "headers": {"x-env": "canary"}},
     "rewrite": "/z"},
]
BAD_ROUTES = [
    {},                                                   # no group
    {"group": "a b"},
    {"group": "g", "match": {"path": {"mode": "regex", "value": "^/x/([0-9]+"}}},
    {"group": "g", "unknown": 1},
    {"group": "g", "priority": "high"},
    {"group": "g", "max_body_size": -1},
    {"group": "g", "peer": "0.0.0.0:80"},
    {"group": "g", "match": {"methods": ["get"]}},
    {"group": "g", "match": {"host": "::1"}},
    [], "text", 3, None,
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["group", "match", "path", "name", "priority", "peer",
                                       "mode", "value", "methods", "host", "rewrite"])
                      | ANY_TEXT, inner, max_size=4),
    max_leaves=8)


@st.composite
def route_request(draw):
    """``(method, uri, body, expect)``: ``expect`` is ``"good"``, ``"bad"``
    (a 400) or ``None`` (anything but a 5xx)."""
    kind = draw(st.sampled_from(["put", "put", "post", "delete", "get", "match"]))
    name = draw(st.sampled_from(NAMES) | ANY_TEXT)
    good_name = name in NAMES
    shape = draw(st.sampled_from(["good", "bad", "random"]))
    if shape == "good":
        obj, expect = dict(draw(st.sampled_from(GOOD_ROUTES))), "good"
    elif shape == "bad":
        obj, expect = draw(st.sampled_from(BAD_ROUTES)), "bad"
    else:
        obj, expect = draw(json_values), None
    if isinstance(obj, dict):
        obj = dict(obj)
    path_name = draw(percent_encoded(name)) if name else "%41"
    if not name:
        name = "A"
        good_name = False
    if kind == "put":
        return "PUT", "/routes/" + path_name, obj, name, expect if good_name else None
    if kind == "post":
        if isinstance(obj, dict) and draw(st.booleans()):
            obj["name"] = name
        else:
            expect = None
        return "POST", "/routes", obj, name, expect if good_name else None
    if kind == "delete":
        return "DELETE", "/routes/" + path_name, None, name, None
    if kind == "get":
        return "GET", "/routes/" + path_name, None, name, None
    q = "&".join(draw(percent_encoded(k)) + "=" + draw(percent_encoded(v)) for k, v in
                 draw(st.dictionaries(st.sampled_from(["path", "host", "method", "query",
                                                       "body", "header.X-Env", "header.\u00e9",
                                                       "header."]) | ANY_TEXT,
                                      st.sampled_from(["/x", "/y", "", "example.com"])
                                      | ANY_TEXT, max_size=4)).items())
    return "GET", "/routes/match?" + q, None, name, None


@FUZZ
@given(st.lists(st.tuples(route_request(), headers()), min_size=1, max_size=6))
def routes(self, steps):
    """Whatever the request, a JSON 2xx/4xx answer; the table changes
    only when a change is accepted, as the answer says."""
    gw = self.gw
    gw.routes = gw.route_table(self)   # as the examples before left it
    for (method, uri, obj, name, expect), (fields, gate) in steps:
        body = b""
        if obj is not None:
            body = json.dumps(obj).encode("utf-8")
            fields = fields + [("Content-Type", "application/json")]
        before = dict(gw.routes)
        answer = gw.send(self, method, uri, fields, body)
        expected = gate(gw.token)
        after = gw.route_table(self)
        if expected is not None:
            self.assertEqual(answer.status, expected, (method, uri, fields, answer.obj))
            self.assertEqual(after, before)
            continue
        if method in ("PUT", "POST") and 200 <= answer.status < 300:
            route = answer.obj["route"]
            self.assertEqual(answer.obj["created"], route["name"] not in before)
            self.assertEqual(answer.status, 201 if answer.obj["created"] else 200)
            gw.routes[route["name"]] = route
        elif method == "DELETE" and answer.status == 200:
            self.assertIn(answer.obj["deleted"], before)
            del gw.routes[answer.obj["deleted"]]
        if method == "PUT" and expect == "good":
            self.assertIn(answer.status, (200, 201), (uri, obj, answer.obj))
        elif method == "POST" and expect == "good":
            self.assertEqual(answer.status, 409 if name in before else 201,
                             (uri, obj, answer.obj))
        elif expect == "bad" and method == "PUT":
            self.assertEqual(answer.status, 400, (uri, obj, answer.obj))
        elif expect == "bad":
            # a POST for a name taken: 409 before the route is read
            self.assertEqual(answer.status, 409 if name in before else 400,
                             (uri, obj, answer.obj))
        if method == "DELETE" and name in before and uri == "/routes/" + quote(name):
            self.assertEqual(answer.status, 200)
        if method == "GET" and uri.startswith("/routes/match"):
            self.assertIn(answer.status, (200, 400), (uri, answer.obj))
        self.assertEqual(after, gw.routes, (method, uri, obj, answer.obj))


# -- raw requests -------------------------------------------------------------------

RAW_PATHS = [b"/upstream/add", b"/upstream/remove", b"/upstream/servers", b"/upstream/status",
             b"/routes", b"/routes/a", b"/routes/match", b"/upstream/%61dd", b"/nowhere",
             b"/routes/%ff", b"/routes/", b"*", b"http://localhost/upstream/add", b""]
RAW_BYTES = st.binary(max_size=12) | st.sampled_from(
    [b"%", b"%zz", b"%ff", b"%C3%A9", b"port=9001", b"port=9001&host=10.0.0.7",
     b"port=80&prefix=a%2Fb", b"\xff", b" ", b"#", b"?"])


@st.composite
def raw_request(draw):
    """The bytes of a request, maybe broken anywhere (method, target,
    version, fields, framing, what comes before it)."""
    clean = draw(st.booleans())    # half of them well formed
    methods = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"]
    method = draw(st.sampled_from(methods if clean else methods + [b"get", b"G ET", b"BREW"]))
    target = draw(st.sampled_from(RAW_PATHS[:9] if clean else RAW_PATHS))
    if draw(st.booleans()):
        target += b"?" + draw(RAW_BYTES)
    version = b"HTTP/1.1" if clean else draw(st.sampled_from(
        [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/1.1 "]))
    fields = []
    if clean or draw(st.integers(0, 5)):
        fields.append(b"Host: " + draw(st.sampled_from(
            [b"localhost", b"127.0.0.1:9180"] if clean else
            [b"localhost", b"127.0.0.1:9180", b"evil.example", b"", b"[::1"])))
    if draw(st.booleans()):
        fields.append(b"Authorization: Bearer " + draw(st.sampled_from(
            [TOKEN.encode(), b"x", b"\xff"])))
    for _ in range(0 if clean else draw(st.integers(0, 2))):
        fields.append(draw(st.sampled_from(
            [b"Origin: http://evil.example", b"Sec-Fetch-Site: cross-site",
             b"Sec-Fetch-Site: none", b"Content-Type: application/json",
             b"Content-Type: application/x-www-form-urlencoded", b"Expect: 100-continue",
             b"Transfer-Encoding: gzip", b"X: \x01", b"Bad Name: x", b"Content-Length: -1",
             b"Connection: close", b" folded"])))
    body = draw(st.sampled_from([b"", b"", b'{"port": 9002}', b'{"port": 9002, "host": "::1"}',
                                 b'{"group": "g"}', b"[1]", b"{", b"port=9003", b"\xff\xfe"])
                | st.binary(max_size=16))
    if clean and draw(st.booleans()):
        fields.append(b"Content-Type: application/json")
    framing = draw(st.sampled_from(["length", "chunked"] if clean else
                                   ["length", "length", "short", "long", "chunked", "none"]))
    if framing == "length" or (framing == "none" and not body):
        fields.append(b"Content-Length: %d" % len(body))
    elif framing == "short":
        fields.append(b"Content-Length: %d" % max(0, len(body) - 1))
    elif framing == "long":
        fields.append(b"Content-Length: %d" % (len(body) + 3))
    elif framing == "chunked":
        fields.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    lead = draw(st.sampled_from([b"", b"\r\n", b"\n"] if clean else [b"", b"\r"]))
    head = b"\r\n".join([method + b" " + target + b" " + version] + fields)
    return lead + head + b"\r\n\r\n" + body, method


@FUZZ
@given(raw_request())
def raw(self, request):
    """Always one complete answer, at once or at the idle timeout (408):
    a JSON 2xx/4xx (or the 501/505 of a transfer coding or a version
    tproxy does not implement); a refused request changes nothing."""
    data, method = request
    gw = self.gw
    before = gw.registered(self)
    routes = gw.route_table(self)
    pending = gw.h.admin_raw(data, method=method.decode("latin-1"), wait=False)
    if not pending.done:
        gw.h.advance(61)    # admin.IDLE_TIMEOUT: a request that never ends
    answer = pending.result()
    self.assertTrue(200 <= answer.status < 300 or 400 <= answer.status < 500
                    or answer.status in (501, 505), (data, answer.status, answer.body))
    if answer.status != 204 and method != b"HEAD":
        obj = json.loads(answer.body.decode("utf-8"))
        self.assertIsInstance(obj, dict, data)
        if answer.status >= 400:
            self.assertIn("error", obj, data)
    if not 200 <= answer.status < 300:
        self.assertEqual(gw.registered(self), before, data)
        self.assertEqual(gw.route_table(self), routes, data)
