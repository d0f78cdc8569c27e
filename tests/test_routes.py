"""
Tests for :mod:`tproxy.routing` and :mod:`tproxy.builtins.routes` in
memory: every match kind, the precedence rules, the transforms, the match
modes, regexes that cannot blow up, and configuration errors named by their
JSON path; and for the ``path_prefix`` mode of :mod:`tproxy.builtins.router`
(every group whose prefix the path has may serve it, the path unchanged).
"""

import json
import random
import sys

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Request, RequestContext, Response, routing
from tproxy.builtins import _router_path_prefix as path_prefix, router, routes
from tproxy.builtins.registry import parse_prefix
from tproxy.config import ConfigError, validate_config
from tproxy.http.headers import Headers
from tproxy.plugins import build_plugin_manager, describe_phases

from tests.test_router import count_lines, make_gateway




def table(specs, match_mode="host_first"):
    """A :class:`routing.RouteTable` of route documents (schema-checked)."""
    specs = [routing.validate_route(s, "routes[{}]".format(i)) for i, s in enumerate(specs)]
    return routing.compile_routes(specs, match_mode)


def count_lines_in(fn, modules):
    """How many lines of the source files of ``modules`` run while ``fn()``
    runs: :func:`tests.test_router.count_lines` over several files in one
    run (under PyPy, counting each file in a run of its own, the later runs
    of warmer code varied by a few lines)."""
    files = frozenset(m.__file__.replace(".pyc", ".py") for m in modules)
    count = [0]

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename in files else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return count[0]


def view(path, host="", method="GET", headers=(), query="", body=None):
    fields = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    return routing.RequestView(method, host, path, query, Headers(fields), body)


def take(t, path, **kw):
    """The name of the route ``path`` takes in table ``t`` (``None``)."""
    found = t.match(view(path, **kw))
    if found is routing.NEED_BODY:
        return found
    return found[0].name if found is not None else None


def route(name, group="g", **kw):
    """A route document; ``path=`` and the match keys go into ``match``."""
    match = {}
    for key in ("path", "host", "methods", "headers", "cookies", "args", "body_contains"):
        if key in kw:
            match[key] = kw.pop(key)
    doc = {"name": name, "group": group, "match": match}
    doc.update(kw)
    return doc


def regex(value, caseless=False):
    return {"mode": "regexi" if caseless else "regex", "value": value}


def exact(value):
    return {"mode": "exact", "value": value}


class MatchKindTests(SynchronousTestCase):
    """Each kind of condition, alone."""

    def test_prefixAtSegmentBoundary(self):
        """A prefix takes itself and what is below it, never ``/apix``."""
        t = table([route("api", path="/api")])
        for path in ("/api", "/api/", "/api/x", "/api/x/y?"):
            self.assertEqual(take(t, path), "api", path)
        for path in ("/apix", "/ap", "/", "/x/api", "*"):
            self.assertIsNone(take(t, path), path)

    def test_equivalentSpellingsOfAPath(self):
        """A path is matched with its percent-encoded unreserved characters
        decoded, other escapes upper-cased and runs of ``/`` merged (nginx
        decodes and merges before ``location``): ``/%61dmin`` and ``//admin``
        cannot pass by the ``/admin`` route, and a route may be written
        either way."""
        t = table([route("admin", path="/admin"), route("x", path=exact("/a%2Fb")),
                   route("t", path="/%7Euser//x"), route("r", path=regex("^/item/([a-z]+)$"))])
        for path in ("/%61dmin/x", "//admin", "/admin//x", "/a%64min"):
            self.assertEqual(take(t, path), "admin", path)
        self.assertEqual(take(t, "/a%2fb"), "x")
        self.assertEqual(take(t, "/~user/x/y"), "t")
        self.assertEqual(take(t, "/item/%61b"), "r")
        for path in ("/admin%2Fx", "/ADMIN", "/adminx", "/%2561dmin"):
            self.assertIsNone(take(t, path), path)

    def test_prefixTrailingSlashIgnored(self):
        """``/api/`` is the prefix ``/api``; ``/`` takes every path."""
        t = table([route("api", path="/api/"), route("root", group="r", path="/")])
        self.assertEqual(take(t, "/api"), "api")
        self.assertEqual(take(t, "/api/v1"), "api")
        self.assertEqual(take(t, "/other"), "root")
        self.assertEqual(take(t, "/"), "root")

    def test_prefixObjectForm(self):
        """``{"mode": "prefix", "value": ...}`` is the same as the string."""
        t = table([route("api", path={"value": "/a/b"})])
        self.assertEqual(take(t, "/a/b/c"), "api")
        self.assertIsNone(take(t, "/a"))

    def test_exact(self):
        """An exact path takes that path only."""
        t = table([route("x", path=exact("/login"))])
        self.assertEqual(take(t, "/login"), "x")
        for path in ("/login/", "/login/x", "/logi", "/LOGIN"):
            self.assertIsNone(take(t, path), path)

    def test_regex(self):
        """A regex is searched in the path (anchors are the user's)."""
        t = table([route("r", path=regex(r"^/item/[0-9]+$"))])
        self.assertEqual(take(t, "/item/42"), "r")
        self.assertIsNone(take(t, "/item/42/x"))
        self.assertIsNone(take(t, "/ITEM/42"))
        t = table([route("r", path=regex(r"\.php"))])
        self.assertEqual(take(t, "/a/b/index.php"), "r")

    def test_regexCaseless(self):
        """``regexi`` ignores case."""
        t = table([route("r", path=regex(r"^/item/[a-z]+$", caseless=True))])
        self.assertEqual(take(t, "/ITEM/AbC"), "r")
        self.assertIsNone(take(t, "/ITEM/1"))

    def test_hostExact(self):
        """An exact host, case-insensitive, port ignored (Request.host)."""
        t = table([route("h", host="API.example.com")])
        self.assertEqual(take(t, "/x", host="api.example.com"), "h")
        self.assertIsNone(take(t, "/x", host="example.com"))
        self.assertIsNone(take(t, "/x"))
        request = Request("GET", "/x", headers=Headers([(b"Host", b"Api.Example.com:8080")]))
        self.assertEqual(t.match(routing.RequestView.of(request))[0].name, "h")

    def test_hostTrailingDot(self):
        """A fully qualified ``Host: api.example.com.`` (port or not) is the
        host ``api.example.com``, as nginx takes it; a route's own trailing
        dot is ignored too."""
        t = table([route("h", host="API.example.com."), route("w", host="*.shop.example")])
        for value, name in ((b"api.example.com.", "h"), (b"Api.Example.com.:8080", "h"),
                            (b"www.shop.example.", "w"), (b"shop.example.", None)):
            request = Request("GET", "/x", headers=Headers([(b"Host", value)]))
            found = t.match(routing.RequestView.of(request))
            self.assertEqual(found and found[0].name, name, value)
        self.assertEqual(take(t, "/x", host="api.example.com"), "h")

    def test_hostIPv6(self):
        """An IPv6 literal in brackets, as a client sends it (``Host:
        [::1]:8080``: the port ignored, as for a name); the address in any
        spelling, on either side, is the same host (RFC 5952's short form)."""
        t = table([route("one", host="[::1]"), route("doc", host="[2001:DB8:0:0::1]"),
                   route("w", host="*.example.com")])
        for value, name in ((b"[::1]:8080", "one"), (b"[::1]", "one"), (b"[::1].", "one"),
                            (b"[0:0::1]:80", "one"), (b"[2001:db8::1]", "doc"),
                            (b"[2001:DB8:0::1]:443", "doc"), (b"[::2]", None),
                            (b"[::ffff:1.2.3.4]", None), (b"example.com", None)):
            request = Request("GET", "/x", headers=Headers([(b"Host", value)]))
            found = t.match(routing.RequestView.of(request))
            self.assertEqual(found and found[0].name, name, value)

    def test_hostWildcard(self):
        """``*.example.com`` takes every sub-domain, not ``example.com``."""
        t = table([route("w", host="*.example.com")])
        self.assertEqual(take(t, "/", host="a.example.com"), "w")
        self.assertEqual(take(t, "/", host="a.b.example.com"), "w")
        for host in ("example.com", "aexample.com", "example.com.evil", ""):
            self.assertIsNone(take(t, "/", host=host), host)

    def test_methods(self):
        """The request's method must be listed."""
        t = table([route("m", methods=["GET", "POST"])])
        self.assertEqual(take(t, "/", method="GET"), "m")
        self.assertEqual(take(t, "/", method="POST"), "m")
        self.assertIsNone(take(t, "/", method="DELETE"))

    def test_headers(self):
        """Header values exactly; names case-insensitive; all must hold."""
        t = table([route("h", headers={"X-Env": "canary", "X-Team": "a"})])
        self.assertEqual(take(t, "/", headers=[("x-env", "canary"), ("X-TEAM", "a")]), "h")
        self.assertIsNone(take(t, "/", headers=[("X-Env", "canary")]))
        self.assertIsNone(take(t, "/", headers=[("X-Env", "Canary"), ("X-Team", "a")]))
        self.assertIsNone(take(t, "/", headers=[("X-Env", "canary "), ("X-Team", "a")]))

    def test_cookies(self):
        """Cookie values exactly, from any ``Cookie`` field; the first wins."""
        t = table([route("c", cookies={"beta": "1"})])
        self.assertEqual(take(t, "/", headers=[("Cookie", "a=b; beta=1")]), "c")
        self.assertEqual(take(t, "/", headers=[("Cookie", "a=b"), ("Cookie", "beta=1")]), "c")
        self.assertIsNone(take(t, "/", headers=[("Cookie", "beta=2; beta=1")]))
        self.assertIsNone(take(t, "/", headers=[("Cookie", "xbeta=1")]))
        self.assertIsNone(take(t, "/"))

    def test_args(self):
        """Query arguments exactly, percent-decoded; the first wins."""
        t = table([route("a", args={"v": "2 x"})])
        self.assertEqual(take(t, "/", query="a=1&v=2%20x"), "a")
        self.assertEqual(take(t, "/", query="v=2+x"), "a")
        self.assertIsNone(take(t, "/", query="v=3&v=2%20x"))
        self.assertIsNone(take(t, "/", query="v=2"))
        self.assertIsNone(take(t, "/"))

    def test_bodyContains(self):
        """A substring of the body; without the body, the matcher asks for it."""
        t = table([route("b", path="/rpc", body_contains='"method":"pay"'),
                   route("rest", group="r", path="/rpc")])
        self.assertIs(take(t, "/rpc"), routing.NEED_BODY)
        self.assertEqual(take(t, "/rpc", body=b'{"method":"pay","id":1}'), "b")
        self.assertEqual(take(t, "/rpc", body=b'{"method":"get"}'), "rest")
        self.assertEqual(take(t, "/rpc", body=b""), "rest")
        # a route that cannot match anyway never asks for the body
        self.assertIsNone(take(t, "/other"))

    def test_allConditions(self):
        """Every condition of a route must hold."""
        t = table([route("all", path="/api", host="a.com", methods=["PUT"],
                         headers={"X-A": "1"}, cookies={"c": "2"}, args={"q": "3"})])
        good = dict(host="a.com", method="PUT", query="q=3",
                    headers=[("X-A", "1"), ("Cookie", "c=2")])
        self.assertEqual(take(t, "/api/x", **good), "all")
        for key, value in [("host", "b.com"), ("method", "GET"), ("query", "q=4"),
                           ("headers", [("X-A", "1")])]:
            self.assertIsNone(take(t, "/api/x", **dict(good, **{key: value})), key)
        self.assertIsNone(take(t, "/apx", **good))

    def test_prefixKeys(self):
        """The keys a path looks up, longest first, bounded by the longest key."""
        keys = routing.table._prefix_keys
        self.assertEqual(keys("/a/b/c", 100), ["/a/b/c", "/a/b", "/a", "/"])
        self.assertEqual(keys("/a/b/", 100), ["/a/b/", "/a/b", "/a", "/"])
        self.assertEqual(keys("/a/b/c", 4), ["/a/b", "/a", "/"])
        self.assertEqual(keys("/", 100), ["/"])
        self.assertEqual(keys("//x", 100), ["//x", "/"])
        self.assertEqual(keys("*", 100), ())

    def test_noCondition(self):
        """A route without conditions takes everything."""
        t = table([route("all")])
        self.assertEqual(take(t, "*", host="x", method="OPTIONS"), "all")


class PrecedenceTests(SynchronousTestCase):
    """Exact, then the longer prefix, then regex, then no path; then priority,
    then the order of the list; hosts per ``match_mode``."""

    def test_exactBeatsPrefix(self):
        t = table([route("prefix", path="/a/b", priority=100), route("exact", path=exact("/a/b"))])
        self.assertEqual(take(t, "/a/b"), "exact")
        self.assertEqual(take(t, "/a/b/c"), "prefix")

    def test_longerPrefixBeatsShorter(self):
        t = table([route("short", path="/a", priority=100), route("long", path="/a/b")])
        self.assertEqual(take(t, "/a/b/c"), "long")
        self.assertEqual(take(t, "/a/b"), "long")
        self.assertEqual(take(t, "/a/bc"), "short")

    def test_prefixBeatsRegex(self):
        t = table([route("re", path=regex("^/a/b"), priority=100), route("prefix", path="/a")])
        self.assertEqual(take(t, "/a/b"), "prefix")
        self.assertEqual(take(t, "/x/a/b"), None)

    def test_regexBeatsNoPath(self):
        t = table([route("any", priority=100), route("re", path=regex("^/u/"))])
        self.assertEqual(take(t, "/u/1"), "re")
        self.assertEqual(take(t, "/v/1"), "any")

    def test_priorityThenOrder(self):
        """Same path: the higher priority, then the first listed."""
        t = table([route("first", path="/a"), route("second", path="/a"),
                   route("urgent", path="/a", priority=5)])
        self.assertEqual(take(t, "/a"), "urgent")
        t = table([route("first", path="/a"), route("second", path="/a")])
        self.assertEqual(take(t, "/a"), "first")
        t = table([route("r1", path=regex("a")), route("r2", path=regex("b"), priority=1)])
        self.assertEqual(take(t, "/ab"), "r2")

    def test_failedConditionsFallThrough(self):
        """A better-ranked route whose other conditions fail does not block."""
        t = table([route("long", path="/a/b", methods=["POST"]), route("short", path="/a")])
        self.assertEqual(take(t, "/a/b", method="POST"), "long")
        self.assertEqual(take(t, "/a/b", method="GET"), "short")

    def test_hostFirst(self):
        """``host_first``: a route bound to the host wins, however short its path."""
        specs = [route("plain", path=exact("/a/b")), route("hosted", host="h.com", path="/")]
        t = table(specs, "host_first")
        self.assertEqual(take(t, "/a/b", host="h.com"), "hosted")
        self.assertEqual(take(t, "/a/b", host="other.com"), "plain")

    def test_pathFirst(self):
        """``path_first``: the path decides; the host breaks ties of the same path."""
        specs = [route("plain", path=exact("/a/b")), route("hosted", host="h.com", path="/"),
                 route("plain-a", path="/a"), route("hosted-a", host="h.com", path="/a")]
        t = table(specs, "path_first")
        self.assertEqual(take(t, "/a/b", host="h.com"), "plain")
        self.assertEqual(take(t, "/a/x", host="h.com"), "hosted-a")
        self.assertEqual(take(t, "/a/x", host="o.com"), "plain-a")

    def test_hostTiers(self):
        """Exact host, then the longer wildcard, then the shorter, then none."""
        t = table([route("none"), route("wide", host="*.com"),
                   route("narrow", host="*.example.com"), route("exact", host="a.example.com")])
        self.assertEqual(take(t, "/", host="a.example.com"), "exact")
        self.assertEqual(take(t, "/", host="b.example.com"), "narrow")
        self.assertEqual(take(t, "/", host="b.other.com"), "wide")
        self.assertEqual(take(t, "/", host="b.org"), "none")

    def test_fastMatchIsTheRankOrder(self):
        """On random tables and requests, the indexed match is the first route
        in rank order whose conditions hold (found by trying them all)."""
        rnd = random.Random(7)
        paths = ["/", "/a", "/a/b", "/a/b/c", "/b", "/a/bc", "/c/a"]
        hosts = ["", "x.com", "a.x.com", "b.a.x.com", "y.org"]
        for mode in ("host_first", "path_first"):
            for _ in range(20):
                specs = []
                for i in range(rnd.randint(1, 12)):
                    kw = {"priority": rnd.choice([0, 0, 1, 2])}
                    kind = rnd.choice(["prefix", "exact", "regex", None])
                    if kind == "prefix":
                        kw["path"] = rnd.choice(paths)
                    elif kind == "exact":
                        kw["path"] = exact(rnd.choice(paths))
                    elif kind == "regex":
                        kw["path"] = regex(rnd.choice(["^/a", "b", "c$", "^/$"]))
                    host = rnd.choice([None, None, "x.com", "*.x.com", "*.a.x.com", "a.x.com"])
                    if host:
                        kw["host"] = host
                    if rnd.random() < 0.3:
                        kw["methods"] = [rnd.choice(["GET", "POST"])]
                    if rnd.random() < 0.2:
                        kw["fake_prefix"] = "/a"
                    specs.append(route("r%d" % i, **kw))
                t = table(specs, mode)
                for path in paths + ["/a/b/c/d"]:
                    for host in hosts:
                        for method in ("GET", "POST"):
                            v = view(path, host=host, method=method)
                            fast = t.match(v)
                            slow = t.matching(v)
                            self.assertEqual(
                                fast[0].name if fast else None,
                                slow[0][0].name if slow else None,
                                (mode, specs, path, host, method))


class TransformTests(SynchronousTestCase):
    """What goes upstream: path, query, headers."""

    def upstream(self, specs, path, query="", **kw):
        t = table(specs)
        found = t.match(view(path, query=query, **kw))
        return found[0].upstream_path(path, query, found[1])

    def test_unchangedByDefault(self):
        self.assertEqual(self.upstream([route("a", path="/api")], "/api/x", "q=1"), "/api/x?q=1")

    def test_stripPrefix(self):
        specs = [route("a", path="/api/v1", strip_prefix=True)]
        self.assertEqual(self.upstream(specs, "/api/v1/users", "q=1"), "/users?q=1")
        self.assertEqual(self.upstream(specs, "/api/v1"), "/")
        self.assertEqual(self.upstream(specs, "/api/v1/"), "/")
        root = [route("a", path="/", strip_prefix=True)]
        self.assertEqual(self.upstream(root, "/x"), "/x")

    def test_fakePrefix(self):
        """The fake prefix is matched in front of the path, then removed."""
        specs = [route("svc", fake_prefix="/svc", path="/x")]
        t = table(specs)
        self.assertIsNone(take(t, "/x"))
        self.assertIsNone(take(t, "/svcx/x"))
        self.assertEqual(self.upstream(specs, "/svc/x/y", "a=b"), "/x/y?a=b")
        self.assertEqual(self.upstream([route("s", fake_prefix="/svc/")], "/svc/x"), "/x")
        self.assertEqual(self.upstream([route("s", fake_prefix="/svc")], "/svc"), "/")
        both = [route("s", fake_prefix="/svc", path="/v1", strip_prefix=True)]
        self.assertEqual(self.upstream(both, "/svc/v1/users"), "/users")
        ex = [route("s", fake_prefix="/svc", path=exact("/ping"))]
        self.assertEqual(self.upstream(ex, "/svc/ping"), "/ping")

    def test_fakePrefixWithRegex(self):
        """A regex sees the path without the fake prefix."""
        specs = [route("s", fake_prefix="/svc", path=regex(r"^/u/([0-9]+)$"),
                       rewrite=r"/users/\1")]
        self.assertEqual(self.upstream(specs, "/svc/u/7", "x=1"), "/users/7?x=1")
        self.assertIsNone(take(table(specs), "/u/7"))

    def test_equivalentSpellings(self):
        """A route without path transforms forwards the path as it came (as
        nginx's ``proxy_pass`` without a URI); one that strips, removes a
        fake prefix or rewrites works on the path it matched (decoded
        unreserved characters, merged slashes)."""
        t = table([route("plain", path="/api"), route("strip", path="/s", strip_prefix=True),
                   route("fake", fake_prefix="/svc"),
                   route("re", path=regex("^/item/([a-z]+)$"), rewrite=r"/items/\1")])

        def upstream(path):
            request = Request("GET", path, "q=%61")
            v = routing.RequestView.of(request)
            route, found = t.match(v)
            return route.forwarded(v, found)
        self.assertEqual(upstream("/%61pi//x"), "/%61pi//x?q=%61")
        self.assertEqual(upstream("//%73/a//b"), "/a/b?q=%61")
        self.assertEqual(upstream("/sv%63//x%7e"), "/x~?q=%61")
        self.assertEqual(upstream("/item/%61b"), "/items/ab?q=%61")

    def test_rewriteLiteral(self):
        specs = [route("a", path=exact("/old"), rewrite="/new/place")]
        self.assertEqual(self.upstream(specs, "/old", "k=v"), "/new/place?k=v")

    def test_rewriteCaptures(self):
        """``\\1`` and ``\\g<name>`` refer to the regex's groups (RE2 syntax)."""
        specs = [route("a", path=regex(r"^/item/(?P<id>[0-9]+)/(\w+)$"),
                       rewrite=r"/items/\g<id>/\2/\1")]
        self.assertEqual(self.upstream(specs, "/item/42/detail"), "/items/42/detail/42")
        optional = [route("b", path=regex(r"^/p(/x)?$"), rewrite=r"/q\1")]
        self.assertEqual(self.upstream(optional, "/p"), "/q")
        self.assertEqual(self.upstream(optional, "/p/x"), "/q/x")


class RegexSafetyTests(SynchronousTestCase):
    """User regexes run in linear time; bad ones are refused at load."""

    def test_pathologicalRegexIsPrompt(self):
        """
        ``(a+)+$`` against 5,000 ``a`` and a ``b``: no backtracking (which
        would take 2**5000 steps: this test would never end).
        """
        t = table([route("evil", path=regex("(a+)+$"))])
        self.assertIsNone(take(t, "/" + "a" * 5000 + "b"))

    def test_invalidRegexNamedByPath(self):
        e = self.assertRaises(ConfigError, table, [
            route("ok", path="/a"), route("bad", path=regex("(unclosed"))])
        self.assertEqual(e.path, "routes[1].match.path.value")
        self.assertIn("invalid regex", e.problem)
        self.assertIn("missing )", e.problem)

    def test_backtrackingFeaturesRefused(self):
        """Back-references and look-arounds are not RE2: refused."""
        for pattern in (r"(a)\1", r"(?=a)", r"(?<!a)b"):
            e = self.assertRaises(ConfigError, table, [route("r", path=regex(pattern))])
            self.assertEqual(e.path, "routes[0].match.path.value")

    def test_invalidRegexInConfigFile(self):
        """Through the plugin loader: the whole JSON path of the configuration."""
        config = validate_config({"plugins": [
            "registry",
            {"name": "routes", "settings": {"routes": [
                {"name": "a", "group": "g", "match": {"path": {"mode": "regexi",
                                                              "value": "[z-a]"}}}]}}]})
        e = self.assertRaises(ConfigError, build_plugin_manager, config,
                              source="etc/x.json", entry_points=[])
        self.assertEqual(e.path, "plugins[1].settings.routes[0].match.path.value")
        self.assertTrue(str(e).startswith(
            "etc/x.json: plugins[1].settings.routes[0].match.path.value: invalid regex"), str(e))

    def test_withoutRe2(self):
        """
        Where google-re2 is missing (PyPy), regex routes run on the
        linear-time engine of :mod:`tproxy.routing.linear_re`: the same
        matches and rewrites, the same refusals.
        """
        self.patch(routing.spec, "re2", None)
        t = table([route("item", path=regex(r"^/item/(?P<id>[0-9]+)$"),
                         rewrite=r"/items/\g<id>"),
                   route("img", path={"mode": "regexi", "value": r"\.(png|jpe?g)$"})])
        self.assertEqual(take(t, "/item/42"), "item")
        self.assertEqual(take(t, "/a/B.JPG"), "img")
        self.assertIsNone(take(t, "/item/4x"))
        route_, found = t.match(view("/item/42"))
        self.assertEqual(route_.upstream_path("/item/42", "", found), "/items/42")
        for pattern in (r"(a)\1", r"(?=a)", r"(?<!a)b", "(unclosed"):
            e = self.assertRaises(ConfigError, table, [route("r", path=regex(pattern))])
            self.assertEqual(e.path, "routes[0].match.path.value")
            self.assertIn("invalid regex", e.problem)


class ValidationTests(SynchronousTestCase):
    """Bad routes are refused with the JSON path of the problem."""

    def assertRefused(self, specs, path, words):
        e = self.assertRaises(ConfigError, table, specs)
        self.assertEqual(e.path, path, e.errors)
        self.assertIn(words, e.problem)

    def test_schema(self):
        self.assertRefused([{"name": "a"}], "routes[0]", "group")
        self.assertRefused([route("a", path="api")], "routes[0].match.path", "starts with '/'")
        self.assertRefused([route("a", path={"mode": "glob", "value": "/x"})],
                           "routes[0].match.path.mode", "not one of")
        self.assertRefused([route("a bad")], "routes[0].name", "bad route name")
        # "." and "..": a URL (curl, a browser) resolves /routes/.. to / before
        # sending it, so such a route could not be read, replaced or deleted
        for name in (".", ".."):
            self.assertRefused([route(name)], "routes[0].name",
                               "bad route name {!r} (1 to 100 letters, digits and "
                               "'._~-', not '.' or '..')".format(name))
        table([route("..a"), route("a.."), route("...")])
        self.assertRefused([route("a", group="a//b")], "routes[0].group", "bad group name")
        self.assertRefused([route("a", group="a/../b")], "routes[0].group",
                           "bad group name 'a/../b' (allowed: letters, digits, '._~-', and "
                           "'/' between segments; no '.' or '..' segment)")
        self.assertRefused([route("a", peer="10.0.0.1")], "routes[0].peer", "host:port")
        self.assertRefused([dict(route("a"), colour="red")], "routes[0].colour", "unknown key")

    def test_semantics(self):
        self.assertRefused([route("a"), route("a")], "routes[1].name", "duplicate")
        self.assertRefused([route("match")], "routes[0].name", "reserved")
        self.assertRefused([route("a", path=exact("/x"), strip_prefix=True)],
                           "routes[0].strip_prefix", "prefix path")
        self.assertRefused([route("a", path="/x", strip_prefix=True, rewrite="/y")],
                           "routes[0].rewrite", "not both")
        self.assertRefused([route("a", path="/x", rewrite=r"/y/\1")],
                           "routes[0].rewrite", "regex path")
        self.assertRefused([route("a", path="/x", rewrite=r"/y\n")],
                           "routes[0].rewrite", "capture reference")
        self.assertRefused([route("a", path="/x", rewrite="/y?z=1")],
                           "routes[0].rewrite", "query")
        self.assertRefused([route("a", host="*.*.com")], "routes[0].match.host", "bad host")
        self.assertRefused([route("a", host="a.com:80")], "routes[0].match.host", "bad host")
        self.assertRefused([route("a", path="/x?y")], "routes[0].match.path", "query")
        # tproxy resolves a request's dot segments before routing: such a
        # path could never match
        for bad in ("/a/../b", "/a/./b", "/a/%2e%2E", "/..", "/a/.%2e/"):
            self.assertRefused([route("a", path=bad)], "routes[0].match.path",
                               "'.' or '..' segment")
            self.assertRefused([route("a", path=exact(bad))], "routes[0].match.path.value",
                               "'.' or '..' segment")
            self.assertRefused([route("a", fake_prefix=bad)], "routes[0].fake_prefix",
                               "'.' or '..' segment")
        table([route("a", path="/a/..b/.c/c./%2ex")])
        # a priority as JSON clients (JavaScript's numbers) read it exactly
        for bad in (2 ** 31, -2 ** 31 - 1):
            self.assertRefused([route("a", priority=bad)], "routes[0].priority", "out of range")
        table([route("a", priority=2 ** 31 - 1), route("b", priority=-2 ** 31)])
        # values a request can never carry (its fields have CR, LF and NUL
        # refused and the spaces around a value removed; cookies are split
        # at ';' and '=')
        for value in ("a\r\nb", " canary", "canary\t", "a\x00"):
            self.assertRefused([route("a", headers={"X-Env": value})],
                               "routes[0].match.headers.X-Env", "never carries")
        for value in ("1;x", " 1", "a\r\n"):
            self.assertRefused([route("a", cookies={"beta": value})],
                               "routes[0].match.cookies.beta", "never carries")
        for name in ("a;b", "a=b", "a b", ""):
            self.assertRefused([route("a", cookies={name: "1"})],
                               "routes[0].match.cookies." + name, "bad cookie name")
        table([route("a", headers={"X-Env": "a b", "X-Empty": ""},
                     cookies={"beta": "a=b", "e": ""})])
        self.assertRefused([route("a", fake_prefix="/")], "routes[0].fake_prefix", "fake prefix")
        self.assertRefused([route("a", upstream_headers={"X-A": "1\r\nX-B: 2"})],
                           '''routes[0].upstream_headers.X-A''', "CR")
        self.assertRefused([route("a", headers={"Bad Name": "1"})],
                           '''routes[0].match.headers.Bad Name''', "bad header name")
        self.assertRefused([route("a", path=regex("^/(x)"), rewrite=r"/\2")],
                           "routes[0].rewrite", "group")
        self.assertRefused([route("a", path=regex("^/(x)"), rewrite=r"/\g<id>")],
                           "routes[0].rewrite", "names no group")

    def test_hostIPv6Refused(self):
        """An IPv6 host is in brackets, without a port; the address valid."""
        for host, words in (("::1", "[::1]"), ("[::1]:8080", "no port"),
                            ("[::g]", "bad host"), ("[::1", "bad host"),
                            ("*.[::1]", "bad host"), ("[1.2.3.4]", "bad host"),
                            ("[::]", "unspecified")):
            self.assertRefused([route("a", host=host)], "routes[0].match.host", words)

    def test_methodsCaseSensitive(self):
        """A method not in upper case (``get``) is refused, naming its JSON
        path and the spelling meant: methods are case-sensitive (RFC 9110
        9.1: ``get`` is another method than ``GET``, which no client sends
        and nginx answers ``400``)."""
        self.assertRefused([route("a", methods=["GET", "get"])],
                           "routes[0].match.methods[1]",
                           "methods are case-sensitive: GET")
        e = self.assertRaises(ConfigError, table, [route("a", methods=["Post", "PATCH"])])
        self.assertEqual(e.errors, [("routes[0].match.methods[0]", "methods are "
                                     "case-sensitive: POST ('Post' is another method)")])

    def test_everyProblemReported(self):
        e = self.assertRaises(ConfigError, table, [
            route("a", path=exact("/x"), strip_prefix=True), route("b", host="a b")])
        self.assertEqual([p for p, _ in e.errors],
                         ["routes[0].strip_prefix", "routes[1].match.host"])


def gateway_with(*peers):
    """A gateway whose registry has static ``(group, host, port)`` peers."""
    gateway = make_gateway()
    for group, host, port in peers:
        gateway.registry.add_static(group, host, port)
    return gateway


def context(gateway, path, query="", headers=(), method="GET"):
    fields = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
    return RequestContext(gateway, Request(method, path, query, headers=Headers(fields)))


class PluginTests(SynchronousTestCase):
    """The plugin's phases, called directly."""

    def setUp(self):
        self.gateway = gateway_with(("api", "10.0.0.1", 80), ("api", "10.0.0.2", 80))

    def plugin(self, specs, **settings):
        settings["routes"] = specs
        plugin = routes.Plugin(settings)
        plugin.init_worker(self.gateway)
        return plugin

    def test_rewriteSetsTheDecision(self):
        plugin = self.plugin([route("users", group="api", path="/api/users",
                                    strip_prefix=True,
                                    upstream_headers={"X-Svc": "users"})])
        ctx = context(self.gateway, "/api/users/7", "a=1",
                      headers=[("X-Route-Prefix", "evil"), ("Accept", "*/*")])
        ctx.upstream_headers.append(("x-svc", "old"))
        self.assertIsNone(plugin.rewrite(ctx))
        self.assertEqual((ctx.route, ctx.upstream_path), ("api", "/7?a=1"))
        self.assertEqual(ctx.vars["route"], "users")
        self.assertEqual(ctx.upstream_headers,
                         [("X-Route-Prefix", "api"), ("X-Svc", "users")])
        self.assertEqual(ctx.request.headers.raw, [(b"Accept", b"*/*")])

    def test_unmatchedLeftToTheNext(self):
        plugin = self.plugin([route("users", group="api", path="/api")])
        ctx = context(self.gateway, "/other")
        self.assertIsNone(plugin.rewrite(ctx))
        self.assertIsNone(ctx.route)
        self.assertEqual(ctx.upstream_path, "/other")

    def test_unmatched404(self):
        plugin = self.plugin([route("users", group="api", path="/api")], unmatched="404")
        ctx = context(self.gateway, "/other")
        r = plugin.rewrite(ctx)
        self.assertEqual(r.status, 404)
        self.assertEqual(json.loads(r.body), {"error": "no route matched", "path": "/other"})
        self.assertEqual(ctx.error, "no_route")

    def test_unpinnedLeftToTheBalancer(self):
        plugin = self.plugin([route("a", group="api")])
        ctx = context(self.gateway, "/")
        plugin.rewrite(ctx)
        self.assertIsNone(plugin.balancer(ctx, ()))
        self.assertIsNone(plugin.balancer(context(self.gateway, "/"), ()))

    def test_pinnedPeer(self):
        """A pinned route always gets its peer, never another one."""
        plugin = self.plugin([route("a", group="api", peer="10.0.0.2:80")])
        ctx = context(self.gateway, "/")
        plugin.rewrite(ctx)
        peer = plugin.balancer(ctx, ())
        self.assertEqual(peer.address, "10.0.0.2:80")
        r = plugin.balancer(ctx, (peer,))
        self.assertIsInstance(r, Response)
        self.assertEqual(r.status, 502)
        self.assertEqual(json.loads(r.body), {"error": "pinned upstream failed",
                                              "upstream": "10.0.0.2:80", "route": "a"})

    def test_pinnedPeerNotLive(self):
        """A pinned peer that is not (or no longer) in the group: 503."""
        plugin = self.plugin([route("a", group="api", peer="10.0.0.9:80"),
                              route("b", group="gone", peer="10.0.0.1:80", path="/b")])
        for path, group, peer in (("/", "api", "10.0.0.9:80"), ("/b", "gone", "10.0.0.1:80")):
            ctx = context(self.gateway, path)
            plugin.rewrite(ctx)
            r = plugin.balancer(ctx, ())
            self.assertEqual(r.status, 503)
            self.assertEqual(json.loads(r.body), {"error": "no live upstream",
                                                  "group": group, "peer": peer,
                                                  "route": ctx.vars["route"]})
            self.assertEqual(ctx.error, "no_peer")

    def test_pinnedPeerExpires(self):
        self.gateway.registry.register("dyn", "10.0.0.5", 81)
        plugin = self.plugin([route("a", group="dyn", peer="10.0.0.5:81")])
        ctx = context(self.gateway, "/")
        plugin.rewrite(ctx)
        self.assertEqual(plugin.balancer(ctx, ()).port, 81)
        self.gateway.reactor.advance(61)
        self.assertEqual(plugin.balancer(ctx, ()).status, 503)

    def test_bodyRoute(self):
        """A body route reads the start of the body (``ctx.read_body_prefix``)."""
        plugin = self.plugin([route("pay", group="api", path="/rpc", body_contains="pay"),
                              route("rpc", group="other", path="/rpc")], body_limit=10)
        asked = []

        class BodyContext(object):
            def __init__(self, ctx):
                self.__dict__["_ctx"] = ctx

            def __getattr__(self, name):
                return getattr(self._ctx, name)

            def __setattr__(self, name, value):
                setattr(self._ctx, name, value)

            def read_body_prefix(self, n):
                asked.append(n)
                self.__dict__["d"] = Deferred()
                return self.d

        # only the first body_limit bytes count
        for body, group in ((b'{"op":"pay"}', "api"), (b'{"op":"get", "x":"pay"}', "other")):
            ctx = BodyContext(context(self.gateway, "/rpc"))
            d = plugin.rewrite(ctx)
            self.assertIsNone(ctx.route)
            ctx.d.callback(body)
            self.assertIsNone(self.successResultOf(d))
            self.assertEqual(ctx.route, group)
        self.assertEqual(asked, [10, 10])
        # no body needed when the path rules body routes out
        ctx = BodyContext(context(self.gateway, "/x"))
        self.assertIsNone(plugin.rewrite(ctx))

    def test_settingsErrorsNamedInConfig(self):
        """A bad route in the settings: the loader names its whole JSON path."""
        config = validate_config({"plugins": [
            {"name": "routes", "settings": {"routes": [
                {"name": "a", "group": "g", "match": {"path": "/x"}, "strip_prefix": True},
                {"name": "a", "group": "g", "match": {"path": {"mode": "exact", "value": "/y"}},
                 "strip_prefix": True}]}}]})
        e = self.assertRaises(ConfigError, build_plugin_manager, config, entry_points=[])
        self.assertEqual(e.errors, [
            ("plugins[0].settings.routes[1].strip_prefix", "strip_prefix needs a prefix "
             "path (match.path with mode 'prefix') (plugin 'routes')"),
            ("plugins[0].settings.routes[1].name", "duplicate route name 'a' (also "
             "routes[0]) (plugin 'routes')")])

    def test_costIndependentOfRouteCount(self):
        """Exact and prefix routes: the same lines run with 10 or 1,000 routes."""
        def cost(n):
            specs = []
            for i in range(n):
                specs.append(route("p%d" % i, group="api", path="/svc%05d/api" % i))
                specs.append(route("e%d" % i, group="api", path=exact("/svc%05d/ping" % i)))
                specs.append(route("h%d" % i, group="api", host="h%d.example.com" % i,
                                   path="/svc%05d" % i))
            plugin = routes.Plugin({"routes": specs})
            plugin.init_worker(self.gateway)
            paths = ["/svc00003/api/x/y", "/svc00007/ping", "/svc00005/none/a/b",
                     "/nothing/at/all"]
            ctxs = [context(self.gateway, p, headers=[("Host", "h5.example.com")])
                    for p in paths * 25]

            def run():
                for ctx in ctxs:
                    plugin.rewrite(ctx)
            lines = count_lines_in(run, (routes, routing.route, routing.table))
            self.assertEqual((ctxs[0].vars["route"], ctxs[1].vars["route"],
                              ctxs[2].vars["route"]), ("p3", "e7", "h5"))
            return lines
        small, large = cost(10), cost(1000)
        self.assertGreater(small, 100)
        self.assertEqual(small, large)


class RouterModeTests(SynchronousTestCase):
    """The router's ``path_prefix`` mode and its coexistence with
    ``routes``."""

    def setUp(self):
        self.gateway = make_gateway()
        self.registry = self.gateway.registry
        self.plugin = router.Plugin({"mode": "path_prefix"})
        self.plugin.init_worker(self.gateway)

    def route(self, path, query=""):
        ctx = RequestContext(self.gateway, Request("GET", path, query))
        return ctx, self.plugin.rewrite(ctx)

    def pick(self, path, hold=True):
        ctx, r = self.route(path)
        self.assertIsNone(r)
        peer = self.plugin.balancer(ctx, ())
        if hold:
            peer.acquire()
        return peer

    def test_modes(self):
        """``group`` is the default; ``path_prefix`` makes the balancing router."""
        self.assertIsInstance(self.plugin, path_prefix.PathPrefixPlugin)
        self.assertEqual(self.plugin.mode, "path_prefix")
        plain = router.Plugin({})
        self.assertNotIsInstance(plain, path_prefix.PathPrefixPlugin)
        self.assertEqual(plain.mode, "group")
        self.assertFalse(hasattr(plain, "balancer"))

    def test_pathSpelling(self):
        """The groups are found from the path in one spelling (``//api``,
        ``/%61pi`` are ``/api``, as nginx's ``location`` sees them); the path
        goes upstream as it came."""
        self.registry.register(parse_prefix("/api"), "192.168.1.10", 8080)
        self.registry.register(parse_prefix(None), "192.168.1.12", 8080)
        for path in ("//api/users", "/%61pi//users"):
            ctx, _ = self.route(path)
            self.assertEqual((ctx.route, ctx.upstream_path), ("api", path))
            self.assertEqual(ctx.vars[path_prefix.GROUPS_VAR], ("api", "default"))
        ctx, _ = self.route("/api%2Fusers")
        self.assertEqual(ctx.vars[path_prefix.GROUPS_VAR], ("default",))

    def test_referenceExamples(self):
        """``/api/users`` -> the /api server (or a prefix-less one);
        ``/static/css/style.css`` -> /static; ``/other/path`` -> prefix-less."""
        self.registry.register(parse_prefix("/api"), "192.168.1.10", 8080)
        self.registry.register(parse_prefix("/static"), "192.168.1.11", 8080)
        self.registry.register(parse_prefix(None), "192.168.1.12", 8080)
        ctx, _ = self.route("/api/users", "x=1")
        self.assertEqual((ctx.route, ctx.upstream_path), ("api", "/api/users?x=1"))
        self.assertEqual(ctx.vars[path_prefix.GROUPS_VAR], ("api", "default"))
        ctx, _ = self.route("/static/css/style.css")
        self.assertEqual(ctx.vars[path_prefix.GROUPS_VAR], ("static", "default"))
        self.assertEqual(ctx.upstream_path, "/static/css/style.css")
        ctx, _ = self.route("/other/path")
        self.assertEqual((ctx.route, ctx.vars[path_prefix.GROUPS_VAR]), ("default", ("default",)))
        self.assertEqual(self.pick("/other/path", hold=False).host, "192.168.1.12")
        ctx, _ = self.route("/apix")
        self.assertEqual(ctx.vars[path_prefix.GROUPS_VAR], ("default",))
        self.assertEqual(ctx.upstream_headers, [])

    def test_leastConnOverEveryMatchingServer(self):
        """Prefixed and prefix-less servers share a path's requests."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.register("api/v2", "10.0.0.2", 80)
        self.registry.register("default", "10.0.0.3", 80)
        held = [self.pick("/api/v2/x").host for _ in range(6)]
        self.assertEqual(sorted(held), ["10.0.0.1"] * 2 + ["10.0.0.2"] * 2 + ["10.0.0.3"] * 2)
        # /api/x: only api and default qualify
        for _ in range(3):
            self.assertIn(self.pick("/api/x").host, ("10.0.0.1", "10.0.0.3"))

    def test_tiesTakeTurns(self):
        """With nothing in flight, sequential requests still rotate."""
        self.registry.register("api", "10.0.0.1", 80)
        self.registry.register("default", "10.0.0.3", 80)
        seen = [self.pick("/api/x", hold=False).host for _ in range(4)]
        self.assertEqual(sorted(seen), ["10.0.0.1"] * 2 + ["10.0.0.3"] * 2)

    def test_tiesTakeTurnsByWeight(self):
        """Sequential requests over groups of different weights are shared
        by weight, not all sent to the heavier peer."""
        self.registry.register("api", "10.0.0.1", 80, weight=3)
        self.registry.register("default", "10.0.0.3", 80)
        seen = [self.pick("/api/x", hold=False).host for _ in range(8)]
        self.assertEqual(sorted(seen), ["10.0.0.1"] * 6 + ["10.0.0.3"] * 2)

    def test_weightsAndTried(self):
        self.registry.register("api", "10.0.0.1", 80, weight=3)
        self.registry.register("default", "10.0.0.3", 80)
        ctx, _ = self.route("/api")
        first = self.plugin.balancer(ctx, ())
        self.assertEqual(first.host, "10.0.0.1")
        second = self.plugin.balancer(ctx, (first,))
        self.assertEqual(second.host, "10.0.0.3")
        self.assertIsNone(self.plugin.balancer(ctx, (first, second)))
        self.assertEqual(ctx.route, "api")

    def test_noLivePeer(self):
        self.registry.register("api", "10.0.0.1", 80)
        self.gateway.reactor.advance(61)
        ctx, r = self.route("/api/x")
        self.assertEqual(r.status, 503)
        self.assertEqual(json.loads(r.body), {"error": "no live upstream", "group": "api"})
        ctx, r = self.route("/x")
        self.assertEqual(json.loads(r.body), {"error": "no live upstream", "group": "default"})

    def test_expiredGroupSkipped(self):
        self.registry.register("api", "10.0.0.1", 80)
        self.gateway.reactor.advance(30)
        self.registry.register("default", "10.0.0.3", 80)
        self.gateway.reactor.advance(31)
        ctx, _ = self.route("/api/x")
        self.assertEqual(ctx.vars[path_prefix.GROUPS_VAR], ("default",))

    def test_clientRoutePrefixRemoved(self):
        self.registry.register("default", "10.0.0.3", 80)
        ctx = RequestContext(self.gateway, Request("GET", "/x", headers=Headers(
            [(b"X-Route-Prefix", b"admin"), (b"Host", b"h")])))
        self.plugin.rewrite(ctx)
        self.assertEqual(ctx.request.headers.raw, [(b"Host", b"h")])

    def test_notRoutedByTheRouter(self):
        """A request another plugin routed: no rewrite, no balancing here."""
        self.registry.register("api", "10.0.0.1", 80)
        ctx = RequestContext(self.gateway, Request("GET", "/api/x"))
        ctx.route = "chosen"
        self.assertIsNone(self.plugin.rewrite(ctx))
        self.assertEqual((ctx.route, ctx.upstream_path), ("chosen", "/api/x"))
        self.assertIsNone(self.plugin.balancer(ctx, ()))
        group = router.Plugin({})
        self.assertIsNone(group.rewrite(ctx))
        self.assertEqual((ctx.route, ctx.upstream_path, ctx.upstream_headers),
                         ("chosen", "/api/x", []))

    def test_costIndependentOfGroupCount(self):
        """The same lines run with 10 or 1,000 groups."""
        def cost(groups):
            gateway = make_gateway()
            for i in range(groups):
                gateway.registry.add_static("g%d" % i, "10.0.0.1", 80)
                gateway.registry.add_static("g%d/sub" % i, "10.0.0.2", 80)
            gateway.registry.add_static("default", "10.0.0.3", 80)
            plugin = router.Plugin({"mode": "path_prefix"})
            plugin.init_worker(gateway)
            paths = ["/g3/sub/x/y", "/g7/x", "/nothing/a/b/c", "/g5/sub"]
            ctxs = [RequestContext(gateway, Request("GET", p)) for p in paths * 25]

            def run():
                for ctx in ctxs:
                    plugin.rewrite(ctx)
                    plugin.balancer(ctx, ())
            lines = count_lines(run, router.__file__.replace(".pyc", ".py"))
            self.assertEqual(ctxs[0].vars[path_prefix.GROUPS_VAR], ("g3/sub", "g3", "default"))
            return lines
        self.assertEqual(cost(10), cost(1000))

    def test_balancerListedOnlyInPathPrefixMode(self):
        def listing(settings):
            config = validate_config({"plugins": [
                {"name": "router", "settings": settings}, "least_conn"]})
            return dict(describe_phases(build_plugin_manager(config, entry_points=[])))
        self.assertEqual(listing({})["balancer"], ["least_conn"])
        self.assertEqual(listing({"mode": "path_prefix"})["balancer"], ["router", "least_conn"])
        e = self.assertRaises(ConfigError, listing, {"mode": "prefix"})
        self.assertEqual(e.path, "plugins[0].settings.mode")
