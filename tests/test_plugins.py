"""
Tests for :mod:`tproxy.plugins`: resolving plugin names, settings, order,
and the errors that stop startup.
"""

import importlib.metadata
import os
import sys

import pluggy
from twisted.trial.unittest import SkipTest, TestCase

from tproxy import hookimpl, plugin_checks, plugin_manager, plugins
from tproxy.config import DEFAULT_PLUGINS, ConfigError, validate_config
from tproxy.plugins import BUILTINS, build_plugin_manager, describe_phases

from tests import plugin_with_class, plugins_for_tests

T = "tests.plugins_for_tests"


def _ep(name, value):
    return importlib.metadata.EntryPoint(name=name, value=value, group="tproxy")


def build(plugin_list, entry_points=(), source="conf.json"):
    """A plugin manager for a configuration with these ``plugins``."""
    config = validate_config({"plugins": plugin_list})
    return build_plugin_manager(config, source=source, entry_points=list(entry_points))


class ResolutionTests(TestCase):
    """A name is a built-in, else an entry point, else a dotted path."""

    def test_builtins(self):
        """The default configuration loads the four built-ins, in order."""
        pm = build_plugin_manager(validate_config({}), entry_points=[])
        self.assertEqual([name for name, _ in pm.list_name_plugin()],
                         ["access_log", "least_conn", "router", "registry"])
        for name in DEFAULT_PLUGINS:  # BUILTINS has more (routes), not listed by default
            plugin = pm.get_plugin(name)
            self.assertIsInstance(plugin, sys.modules[BUILTINS[name]].Plugin)

    def test_builtin_name_wins(self):
        """A built-in name is not looked up among entry points or modules."""
        self.patch(plugins, "BUILTINS", {"demo": "tests.plugin_with_class"})
        pm = build(["demo"], [_ep("demo", T + ":NoSchema")])
        self.assertIsInstance(pm.get_plugin("demo"), plugin_with_class.Plugin)

    def test_entry_point(self):
        """An entry point of group tproxy, loaded by name."""
        pm = build(["greeter"], [_ep("other", "no.such.module"),
                                 _ep("greeter", "tests.plugin_with_class")])
        plugin = pm.get_plugin("greeter")
        self.assertIsInstance(plugin, plugin_with_class.Plugin)
        self.assertEqual(plugin.settings, {"greeting": "hello"})

    def test_entry_point_class(self):
        """An entry point naming a class: instantiated with the settings."""
        pm = build([{"name": "hdr", "settings": {"header": "X-A"}}],
                   [_ep("hdr", T + ":AddHeader")])
        self.assertEqual(pm.get_plugin("hdr").settings,
                         {"header": "X-A", "value": "yes", "limits": {"burst": 5}})

    def test_entry_point_object(self):
        """An entry point naming an object: registered as it is."""
        pm = build(["inst"], [_ep("inst", T + ":instance")])
        self.assertIs(pm.get_plugin("inst"), plugins_for_tests.instance)

    def test_entry_point_wins_over_module(self):
        pm = build(["tests.plugins_for_tests"],
                   [_ep("tests.plugins_for_tests", "tests.plugin_with_class")])
        self.assertIsInstance(pm.get_plugin("tests.plugins_for_tests"),
                              plugin_with_class.Plugin)

    def test_installed_entry_points(self):
        """Without entry_points, the installed ones of group tproxy are used."""
        self.patch(plugins, "tproxy_entry_points",
                   lambda: [_ep("greeter", "tests.plugin_with_class")])
        pm = build_plugin_manager(validate_config({"plugins": ["greeter"]}))
        self.assertIsInstance(pm.get_plugin("greeter"), plugin_with_class.Plugin)

    def test_builtinsReadNoEntryPoint(self):
        """Built-in names only: the installed entry points are not read (an
        entry point cannot take a built-in's name), not even one named like
        a built-in."""
        read = []
        self.patch(plugins, "tproxy_entry_points",
                   lambda: read.append(1) or [_ep("router", "tests.plugin_with_class")])
        pm = build_plugin_manager(validate_config({"plugins": ["registry", "router"]}))
        self.assertEqual(read, [])
        self.assertNotIsInstance(pm.get_plugin("router"), plugin_with_class.Plugin)
        build_plugin_manager(validate_config({"plugins": ["router", "tests.plugin_with_class"]}))
        self.assertEqual(read, [1])

    def test_tproxy_entry_points(self):
        """The real lookup returns a list of entry points of group tproxy."""
        eps = plugins.tproxy_entry_points()
        self.assertIsInstance(eps, list)
        self.assertEqual({ep.group for ep in eps} - {"tproxy"}, set())

    def test_module_without_class(self):
        """A module without Plugin is registered itself."""
        pm = build([T])
        self.assertIs(pm.get_plugin(T), plugins_for_tests)

    def test_module_with_class(self):
        pm = build([{"name": "tests.plugin_with_class",
                     "settings": {"greeting": "hi"}}])
        plugin = pm.get_plugin("tests.plugin_with_class")
        self.assertIsInstance(plugin, plugin_with_class.Plugin)
        self.assertEqual(plugin.settings, {"greeting": "hi"})

    def test_module_attribute(self):
        pm = build([{"name": T + ":NoSchema", "settings": {"anything": [1]}}])
        plugin = pm.get_plugin(T + ":NoSchema")
        self.assertIsInstance(plugin, plugins_for_tests.NoSchema)
        self.assertEqual(plugin.settings, {"anything": [1]})

    def test_settings_copied(self):
        """A plugin's settings are its own: the configuration is not changed."""
        config = validate_config({"plugins": [
            {"name": T + ":AddHeader", "settings": {"header": "X", "limits": {}}}]})
        pm = build_plugin_manager(config, entry_points=[])
        pm.get_plugin(T + ":AddHeader").settings["limits"]["burst"] = 99
        self.assertEqual(config["plugins"][0]["settings"], {"header": "X", "limits": {}})

    def test_settings_again(self):
        """Settings validated again (the next harness, a reload) are the
        same completed settings as the first time, new ones each time: what
        one plugin did to its own does not reach the next."""
        made = []
        for _ in range(3):
            pm = build_plugin_manager(validate_config({"plugins": [
                {"name": T + ":AddHeader", "settings": {"header": "X",
                                                      "limits": {"burst": 2.0}}}]}),
                entry_points=[])
            made.append(pm.get_plugin(T + ":AddHeader").settings)
        self.assertEqual(made[0], {"header": "X", "value": "yes", "limits": {"burst": 2}})
        self.assertEqual(type(made[0]["limits"]["burst"]), int)
        self.assertEqual(made[1], made[0])
        self.assertIsNot(made[1], made[0])
        made[1]["limits"]["burst"] = 99
        self.assertEqual(made[2]["limits"], {"burst": 2})

    def test_schema_changed(self):
        """A class's settings_schema changed after a first use is the one
        the next settings are checked against."""
        class Plugin(object):
            settings_schema = {"type": "object", "properties": {
                "n": {"type": "integer", "default": 1}}}

            def __init__(self, settings):
                self.settings = settings

        self.assertEqual(plugins.make_plugin(Plugin, "p", {}, "s", "p")[1], {"n": 1})
        Plugin.settings_schema["properties"]["n"]["default"] = 2
        self.assertEqual(plugins.make_plugin(Plugin, "p", {}, "s", "p")[1], {"n": 2})
        Plugin.settings_schema["properties"]["n"]["type"] = "string"
        e = self.assertRaises(ConfigError, plugins.make_plugin, Plugin, "p", {"n": 3},
                              "s", "p")
        self.assertEqual(e.errors, [("s.n", "expected a string, got 3 (plugin 'p')")])


class InstanceDictTests(TestCase):
    """A registered plugin instance keeps its attributes in an ordinary dict
    (see ``tproxy.plugin_manager._own_dict``: CPython 3.11 reads the attributes of
    the dict pluggy's ``dir()`` makes ~100 instructions slower each)."""

    def test_attributes_kept(self):
        """The instance's attributes are all there after registration, and
        setting one works."""
        pm = build_plugin_manager(validate_config({}), entry_points=[])
        log = pm.get_plugin("access_log")
        self.assertEqual(log.buffer_size, 65536)
        self.assertEqual(log.target, "stdout")
        log.buffer_size = 1
        self.assertEqual(vars(log)["buffer_size"], 1)

    def test_unshared(self):
        """On CPython, the dict is not the key-sharing kind (which
        ``sys.getsizeof`` tells: it counts only the values of one)."""
        if sys.implementation.name != "cpython":
            raise SkipTest("CPython's instance dicts")
        pm = build_plugin_manager(validate_config({}), entry_points=[])
        for name in DEFAULT_PLUGINS:
            attributes = vars(pm.get_plugin(name))
            self.assertEqual(sys.getsizeof(attributes), sys.getsizeof(dict(attributes)), name)


class _Kinds(object):
    """An attribute of each kind the plugin manager's quick look sorts."""

    __slots__ = ("slot", "__dict__")
    constant = 3
    unmarked_static = staticmethod(lambda: None)
    unmarked_class = classmethod(lambda cls: None)

    @hookimpl
    def rewrite(self, ctx):
        pass

    @staticmethod
    @hookimpl
    def access(ctx):
        pass

    @classmethod
    @hookimpl
    def log(cls, ctx):
        pass

    @property
    def prop(self):
        return 1

    def helper(self):
        pass


class _Meta(type):
    """A metaclass (pluggy's look may see other attributes through it)."""


class _WithMeta(_Meta("_Base", (object,), {})):
    @hookimpl
    def rewrite(self, ctx):
        pass


class QuickLookTests(TestCase):
    """The plugin manager's quick answers (``tproxy.plugin_manager._quick_look``:
    'not a hook implementation', a marked function's options) agree with
    pluggy's own look."""

    def test_sameAnswers(self):
        plugin = _Kinds()
        plugin.slot = hookimpl(lambda ctx: None)
        plugin.helper_of_instance = hookimpl(lambda ctx: None)
        plugin.settings = {}
        pm = build_plugin_manager(validate_config({"plugins": []}), entry_points=[])
        pluggys = pluggy.PluginManager(plugins.ENTRY_POINT_GROUP)
        quick = []
        for obj in (plugin, plugins_for_tests, plugin_with_class, _WithMeta()):
            for name in dir(obj):
                if name.startswith("__"):
                    continue
                self.assertEqual(pm.parse_hookimpl_opts(obj, name),
                                 pluggys.parse_hookimpl_opts(obj, name), name)
                if obj is plugin and plugin_manager._quick_look(plugin, name) is None:
                    quick.append(name)
        self.assertEqual(sorted(quick), ["constant", "helper", "settings", "unmarked_class",
                                         "unmarked_static"])
        # a marked function of the class (or of a plain module) is answered
        # without pluggy, with the marker's options, as pluggy answers
        self.assertIs(plugin_manager._quick_look(plugin, "rewrite"),
                      _Kinds.__dict__["rewrite"].tproxy_impl)
        self.assertIs(plugin_manager._quick_look(plugins_for_tests, "rewrite"),
                      plugins_for_tests.rewrite.tproxy_impl)
        for name in ("access", "log", "slot", "helper_of_instance", "prop"):
            self.assertIs(plugin_manager._quick_look(plugin, name), plugin_manager._ASK, name)
        self.assertIs(plugin_manager._quick_look(_WithMeta(), "rewrite"), plugin_manager._ASK)
        pm.register(plugin, "kinds")
        self.assertEqual(sorted(impl.function.__name__ for hook in ("rewrite", "access", "log")
                                for impl in getattr(pm.hook, hook).get_hookimpls()),
                         ["access", "log", "rewrite"])


class HookspecCacheTests(TestCase):
    """The plugin manager keeps pluggy's answers about hook specifications
    (``tproxy.plugin_manager._SPECS``): the same answers as pluggy's own,
    and a value that changed is read again."""

    def test_sameAnswers(self):
        from tproxy import hookspecs
        pm = build_plugin_manager(validate_config({"plugins": []}), entry_points=[])
        pluggys = pluggy.PluginManager(plugins.ENTRY_POINT_GROUP)
        for _ in range(2):      # (read, then kept)
            for name in dir(hookspecs):
                self.assertEqual(pm.parse_hookspec_opts(hookspecs, name),
                                 pluggys.parse_hookspec_opts(hookspecs, name), name)
        self.assertIsNotNone(pm.parse_hookspec_opts(hookspecs, "access"))

    def test_changedValue(self):
        spec = pluggy.HookspecMarker(plugins.ENTRY_POINT_GROUP)

        class Specs(object):
            def extra(self, ctx):
                pass
        pm = build_plugin_manager(validate_config({"plugins": []}), entry_points=[])
        self.assertIsNone(pm.parse_hookspec_opts(Specs, "extra"))
        Specs.extra = spec(firstresult=True)(lambda self, ctx: None)
        self.assertTrue(pm.parse_hookspec_opts(Specs, "extra")["firstresult"])


class OrderTests(TestCase):
    """Config order is execution order, in every phase."""

    def test_config_order(self):
        pm = build([T + ":NoSchema", "tests.plugin_with_class", T,
                    {"name": T + ":AddHeader", "settings": {"header": "X"}}])
        self.assertEqual(describe_phases(pm), [
            ("init_worker", []),
            ("rewrite", [T, T + ":AddHeader"]),
            ("access", [T + ":NoSchema", "tests.plugin_with_class"]),
            ("balancer", []),
            ("header_filter", [T + ":AddHeader"]),
            ("body_filter", []),
            ("log", ["tests.plugin_with_class", T]),
            ("stream_access", []),
            ("stream_log", []),
            ("certificate", []),
        ])

    def test_reversed(self):
        pm = build([{"name": T + ":AddHeader", "settings": {"header": "X"}}, T])
        self.assertEqual(dict(describe_phases(pm))["rewrite"], [T + ":AddHeader", T])

    def test_pluggy_calls_in_config_order(self):
        """pm.hook.X() runs the first-listed plugin first, too."""
        pm = build([T + ":NoSchema", "tests.plugin_with_class"])
        calls = [impl.plugin_name for impl in pm.hook.access.get_hookimpls()]
        self.assertEqual(calls[::-1], [T + ":NoSchema", "tests.plugin_with_class"])

    def test_tryfirst(self):
        """tryfirst still wins over config order, and the listing says so."""
        pm = build([T, T + ":First"])
        self.assertEqual(dict(describe_phases(pm))["rewrite"], [T + ":First", T])

    def test_duplicates(self):
        """One plugin twice, with different settings: two instances, two names."""
        pm = build([{"name": T + ":AddHeader", "settings": {"header": "X-A"}},
                    T,
                    {"name": T + ":AddHeader", "settings": {"header": "X-B"}},
                    {"name": T + ":AddHeader", "settings": {"header": "X-C"}}])
        self.assertEqual(dict(describe_phases(pm))["rewrite"], [
            T + ":AddHeader", T, T + ":AddHeader#2", T + ":AddHeader#3"])
        self.assertEqual(
            [pm.get_plugin(n).settings["header"]
             for n in (T + ":AddHeader", T + ":AddHeader#2", T + ":AddHeader#3")],
            ["X-A", "X-B", "X-C"])

    def test_no_plugins(self):
        pm = build([])
        self.assertEqual(pm.list_name_plugin(), [])
        self.assertEqual([plugins for _, plugins in describe_phases(pm)], [[]] * 10)

    def test_hookspecs_added(self):
        pm = build([])
        self.assertEqual(pm.project_name, "tproxy")
        self.assertTrue(pm.hook.balancer.spec.opts["firstresult"])


class ErrorTests(TestCase):
    """A plugin problem stops startup with a message naming plugin and path."""

    def assertBuildError(self, plugin_list, message, entry_points=()):
        e = self.assertRaises(ConfigError, build, plugin_list, entry_points)
        self.assertEqual(str(e), message)
        return e

    def test_unknown(self):
        e = self.assertBuildError(
            ["tests.plugin_with_class", "tests.plugins_for_tests", "foo"],
            "conf.json: plugins[2]: unknown plugin 'foo' (not a built-in, an entry "
            "point of group 'tproxy', or an importable module); built-ins: "
            + ", ".join(sorted(BUILTINS)) + "; installed entry points: none")
        self.assertEqual(e.path, "plugins[2]")

    def test_routesAfterRouter(self):
        """``routes`` after ``router``: the router routes every request (a
        group, or the fallback's 503), so no route would ever match while
        ``GET /routes/match`` says they do; refused, naming both."""
        e = self.assertBuildError(
            ["registry", "router", "routes", "least_conn"],
            "conf.json: plugins[2]: plugin 'routes' is listed after 'router' "
            "(plugins[1]), which routes every request: no route would ever match "
            "(list routes before router)")
        self.assertEqual(e.path, "plugins[2]")
        # before it, or without the router
        build(["registry", "routes", "router", "least_conn"])
        build(["registry", "routes", "least_conn"])

    def test_routeChoosersEverywhere(self):
        """``router`` or ``routes`` for some routes only: they choose the
        route (in ``rewrite``), and an entry with ``routes`` runs once a route
        is chosen, so it would never route a request (every request a 503
        while ``--check`` said valid); refused, naming the entry's routes."""
        for i, name in ((0, "router"), (1, "routes")):
            plugins = ["registry", "least_conn"]
            plugins.insert(i, {"name": name, "routes": ["api"]})
            e = self.assertBuildError(plugins, (
                "conf.json: plugins[{}].routes: plugin {!r} chooses the route of "
                "every request (in rewrite); for some routes only it would run once a "
                "route is chosen, and never route a request: leave routes out").format(
                    i, name))
            self.assertEqual(e.path, "plugins[{}].routes".format(i))

    def test_unknown_dotted(self):
        self.assertBuildError(
            ["tests.no_such_plugin_module"],
            "conf.json: plugins[0]: unknown plugin 'tests.no_such_plugin_module' (not "
            "a built-in, an entry point of group 'tproxy', or an importable module); "
            "built-ins: " + ", ".join(sorted(BUILTINS)) + "; installed entry points: none")

    def test_unknownListsEntryPoints(self):
        """The message lists the built-ins and the installed entry points."""
        e = self.assertRaises(ConfigError, build, ["nope"], [
            _ep("zeta", "tests.plugins_for_tests"), _ep("apikey", "tests.plugin_with_class")])
        self.assertTrue(str(e).endswith("; installed entry points: apikey, zeta"), str(e))
        self.assertIn("jwt_auth, key_auth", str(e))

    def test_not_a_module_name(self):
        self.assertBuildError(
            ["key-auth"],
            "conf.json: plugins[0]: unknown plugin 'key-auth' (not a built-in, an "
            "entry point of group 'tproxy', or an importable module); built-ins: "
            + ", ".join(sorted(BUILTINS)) + "; installed entry points: none")

    def test_missing_attribute(self):
        self.assertBuildError(
            [T + ":Nope"],
            "conf.json: plugins[0]: plugin 'tests.plugins_for_tests:Nope': module "
            "'tests.plugins_for_tests' has no attribute 'Nope'")

    def test_broken_import(self):
        """A module that exists but fails to import is not 'unknown'."""
        self.assertBuildError(
            [T, "tests.plugin_broken_import"],
            "conf.json: plugins[1]: plugin 'tests.plugin_broken_import' failed to "
            "import: ModuleNotFoundError: No module named "
            "'tproxy_no_such_module_for_tests'")

    def test_broken_entry_point(self):
        self.assertBuildError(
            ["broken"],
            "conf.json: plugins[0]: plugin 'broken' (entry point "
            "'tests.plugin_broken_import') failed to load: ModuleNotFoundError: No "
            "module named 'tproxy_no_such_module_for_tests'",
            [_ep("broken", "tests.plugin_broken_import")])

    def test_ambiguous_entry_point(self):
        self.assertBuildError(
            ["auth"],
            "conf.json: plugins[0]: plugin 'auth' is ambiguous: several entry points "
            "of group 'tproxy' have that name (a.auth, b.auth)",
            [_ep("auth", "b.auth"), _ep("auth", "a.auth")])

    def test_missing_builtin(self):
        self.patch(plugins, "BUILTINS", {"gone": "tproxy.builtins.no_such_builtin"})
        self.assertBuildError(
            ["gone"],
            "conf.json: plugins[0]: built-in plugin 'gone' is missing "
            "(tproxy.builtins.no_such_builtin)")

    def test_settings_schema(self):
        self.assertBuildError(
            [T, {"name": T + ":AddHeader",
                 "settings": {"header": 5, "limits": {"burst": "x"}, "extra": 1}}],
            "conf.json: plugins[1].settings.extra: unknown key (known keys: header, "
            "limits, value) (plugin 'tests.plugins_for_tests:AddHeader')\n"
            "conf.json: plugins[1].settings.header: expected a string, got 5 "
            "(plugin 'tests.plugins_for_tests:AddHeader')\n"
            "conf.json: plugins[1].settings.limits.burst: expected an integer, got "
            "\"x\" (plugin 'tests.plugins_for_tests:AddHeader')")

    def test_settings_required(self):
        self.assertBuildError(
            [{"name": "hdr"}],
            "conf.json: plugins[0].settings: missing key 'header' (plugin 'hdr')",
            [_ep("hdr", T + ":AddHeader")])

    def test_invalid_settings_schema(self):
        self.assertBuildError(
            [T + ":BadSchema"],
            "conf.json: plugins[0]: plugin 'tests.plugins_for_tests:BadSchema' has "
            "an invalid settings_schema: 'no-such-type' is not valid under any of "
            "the given schemas")

    def test_module_takes_no_settings(self):
        self.assertBuildError(
            [{"name": T, "settings": {"a": 1}}],
            "conf.json: plugins[0].settings: plugin 'tests.plugins_for_tests' takes "
            "no settings (it has no Plugin class)")

    def test_module_listed_twice(self):
        self.assertBuildError(
            [T, "tests.plugin_with_class", T],
            "conf.json: plugins[2]: plugin 'tests.plugins_for_tests' is already "
            "listed as plugins[0]; a plugin without a Plugin class can be listed once")

    def test_constructor_fails(self):
        self.assertBuildError(
            [T + ":Exploding"],
            "conf.json: plugins[0]: plugin 'tests.plugins_for_tests:Exploding' failed "
            "to start: ValueError: no way")

    def test_unknown_hook(self):
        """A misspelt hook name is caught by check_pending."""
        self.assertBuildError(
            [T, T + ":Misspelt"],
            "conf.json: plugins[1]: plugin 'tests.plugins_for_tests:Misspelt' "
            "implements unknown hook 'rewite' (a typo? the hooks are those of "
            "tproxy.hookspecs)")

    def test_bad_hook_arguments(self):
        e = self.assertRaises(ConfigError, build, [T, T + ":BadArgument"])
        self.assertEqual(e.path, "plugins[1]")
        self.assertIn("plugin 'tests.plugins_for_tests:BadArgument': ", str(e))
        self.assertIn("nonsense", str(e))

    def test_wrapper(self):
        """A pluggy wrapper (which tproxy's phases would never run: an access
        wrapper's 403 would let the request through) stops startup."""
        self.assertBuildError(
            ["router", T + ":Wrapper"],
            "conf.json: plugins[1]: plugin 'tests.plugins_for_tests:Wrapper': "
            "'access' is a pluggy wrapper (wrapper=True / hookwrapper=True), "
            "which tproxy does not run; use a plain @hookimpl (with tryfirst / "
            "trylast to run before or after the others)")

    def test_hookwrappers(self):
        """Old-style hook wrappers too; every such hook is named."""
        self.assertBuildError(
            [T + ":OldWrappers"],
            "conf.json: plugins[0]: plugin 'tests.plugins_for_tests:OldWrappers': "
            "'access', 'rewrite' are pluggy wrappers (wrapper=True / "
            "hookwrapper=True), which tproxy does not run; use a plain @hookimpl "
            "(with tryfirst / trylast to run before or after the others)")

    def test_listedTwice(self):
        """``registry`` or ``routes`` listed twice (each owns fixed admin
        endpoints): refused naming both entries, not a DuplicateRoute at
        start after --check said valid."""
        self.assertBuildError(
            ["registry", "router", "registry"],
            "conf.json: plugins[2]: plugin 'registry' is already listed (plugins[0]): "
            "it owns admin endpoints, list it once")
        self.assertBuildError(
            ["routes", "routes", "router"],
            "conf.json: plugins[1]: plugin 'routes' is already listed (plugins[0]): "
            "it owns admin endpoints, list it once")

    def test_adminPathTaken(self):
        """A built-in's admin path setting (``cache.admin_path``,
        ``prometheus.path``) that another plugin or tproxy itself serves:
        refused naming its JSON path and the other's (``--check`` sees it),
        not a DuplicateRoute at start."""
        cache = lambda path: {"name": "cache", "settings": {"admin_path": path}}  # noqa: E731
        e = self.assertBuildError(
            ["registry", "router", "least_conn", "prometheus", cache("/metrics")],
            "conf.json: plugins[4].settings.admin_path: admin path '/metrics' "
            "is served by plugin 'prometheus' (plugins[3].settings.path) too "
            "(GET /metrics): choose another")
        self.assertEqual(e.path, "plugins[4].settings.admin_path")
        self.assertBuildError(
            [cache("/stats"), "router", {"name": "prometheus", "settings": {"path": "/stats"}}],
            "conf.json: plugins[2].settings.path: admin path '/stats' is served by "
            "plugin 'cache' (plugins[0].settings.admin_path) too (GET /stats): "
            "choose another")
        self.assertBuildError(
            ["registry", "router", cache("/upstream/status")],
            "conf.json: plugins[2].settings.admin_path: admin path "
            "'/upstream/status' is served by plugin 'registry' (plugins[0]) too "
            "(GET /upstream/status): choose another")
        self.assertBuildError(
            ["router", {"name": "prometheus", "settings": {"path": "/healthz"}}],
            "conf.json: plugins[1].settings.path: admin path '/healthz' is served "
            "by tproxy itself too (GET /healthz): choose another")
        self.assertBuildError(
            ["router", cache("/c"), cache("/c")],
            "conf.json: plugins[2].settings.admin_path: admin path '/c' is served by "
            "plugin 'cache' (plugins[1].settings.admin_path) too (GET /c, DELETE "
            "/c): choose another")
        # a path of its own, or one of a plugin not listed, is fine
        build(["router", cache("/routes"), "prometheus", cache("/c2")], ())

    def test_fixedAdminRoutesAsServed(self):
        """The fixed admin routes the check knows are those served: tproxy's
        own and the built-ins' (the chosen paths, the status page's ``/``,
        which a plugin may take, and the routes with parameters aside)."""
        from tproxy.testing import Harness
        h = Harness(plugins=["registry", "routes", "router", "least_conn", "prometheus",
                             "cache"])
        served = {}
        for (method, path), owner in h.gateway.admin.owners.items():
            if "{" not in path and path not in ("/", "/metrics", "/cache"):
                served.setdefault(owner, set()).add(method + " " + path)
        self.assertEqual(served, dict((owner, set(routes)) for owner, routes
                                      in plugin_checks.FIXED_ADMIN_ROUTES.items()))

    def test_unmarkedHooks(self):
        """A plugin whose hook functions lack ``@hookimpl`` implements no hook
        (pluggy skips them: an access check that never runs): refused, naming
        them."""
        self.assertBuildError(
            ["router", T + ":Unmarked"],
            "conf.json: plugins[1]: plugin 'tests.plugins_for_tests:Unmarked' "
            "implements no hook: access, log are not marked @tproxy.hookimpl")

    def test_noHooks(self):
        """A module with no hook at all (a name given by mistake) is refused."""
        self.assertBuildError(
            ["router", "json"],
            "conf.json: plugins[1]: plugin 'json' implements no hook (its hook "
            "functions must be marked @tproxy.hookimpl)")

    def test_no_source(self):
        """Without a source the message starts with the JSON path."""
        e = self.assertRaises(ConfigError, build, ["foo"], (), None)
        self.assertTrue(str(e).startswith("plugins[0]: unknown plugin 'foo'"))

    def test_pluggy_error_type(self):
        """The manager is a real pluggy manager for project tproxy."""
        self.assertIsInstance(build([]), pluggy.PluginManager)


class RouteScopeWarningTests(TestCase):
    """:func:`tproxy.plugin_checks.route_scope_warnings`: per-route entries naming
    no group the configuration knows."""

    def warnings(self, config):
        return plugin_checks.route_scope_warnings(validate_config(config))

    def test_typo(self):
        """A name that is no static group nor a route's group is warned
        about; the groups of the ``routes`` plugin's routes count."""
        config = {
            "upstreams": {"api": {"peers": ["127.0.0.1:9001"]}},
            "plugins": [
                {"name": "routes", "settings": {"routes": [
                    {"name": "r", "group": "shop", "match": {"path": "/s"}}]}},
                "router",
                {"name": "request_id", "routes": ["api", "shop", "ap"]}]}
        self.assertEqual(self.warnings(config), [(
            "plugins[2].routes[2]",
            "no group 'ap' in upstreams nor in a route (known: api, shop): "
            "'request_id' runs there only if servers register under that prefix")])

    def test_registeredOnly(self):
        """Without static groups or routes (every group registers at run
        time) there is nothing to compare with: no warning."""
        self.assertEqual(self.warnings({"plugins": [
            "registry", "router", {"name": "request_id", "routes": ["api"]}]}), [])

    def test_loggedAtStart(self):
        """The gateway logs each warning when it starts."""
        from twisted.logger import formatEvent
        from tproxy.testing import Harness
        from tests.helpers import capture_log
        events = capture_log(self)
        Harness({"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}},
                plugins=["router", {"name": "request_id", "routes": ["ap"]}],
                entry_points=[])
        self.assertIn("plugins[1].routes[0]: no group 'ap' in upstreams nor in a route "
                      "(known: api): 'request_id' runs there only if servers register "
                      "under that prefix", [formatEvent(e) for e in events])

    def test_noBalancer(self):
        """No ``balancer`` implementation (``least_conn`` left out): every
        request would be a 503 "no live upstream"; warned about."""
        def warnings(names):
            config = validate_config({"plugins": names})
            return plugin_checks.plugin_warnings(config, build_plugin_manager(config, entry_points=[]))
        self.assertEqual(warnings(["registry", "router"]), [(
            "plugins", "no plugin implements balancer (least_conn, or one of yours): "
                       "every request is answered 503 \"no live upstream\" whatever "
                       "the peers")])
        self.assertEqual(warnings(["registry", "router", "least_conn"]), [])
        # least_conn without a rewrite: no group to choose in
        self.assertEqual(warnings(["registry", "least_conn"]), [(
            "plugins", "no plugin implements rewrite (router, routes, or one of yours): "
                       "no request is given a group, and least_conn answers every one "
                       "503 \"no live upstream\"")])
        # (a stream listener gives its connections their group)
        config = validate_config({"plugins": ["registry", "least_conn"], "streams": [
            {"listen": "tcp:0", "group": "redis"}]})
        self.assertEqual(plugin_checks.plugin_warnings(
            config, build_plugin_manager(config, entry_points=[])), [])

    def test_accessLogRotatedByWorkers(self):
        """With ``"workers"``, an access log file rotated by size (each
        worker would rotate it on its own) is warned about; with
        ``"max_size": null``, or one process, it is not."""
        def warnings(workers, settings):
            config = validate_config({"workers": workers, "plugins": [
                "router", "least_conn", {"name": "access_log", "settings": settings}]})
            return plugin_checks.plugin_warnings(config, build_plugin_manager(config, entry_points=[]))
        path = os.path.abspath("access.log")
        self.assertEqual(warnings(2, {"path": path}), [(
            "plugins[2].settings.max_size",
            "with \"workers\", each worker rotates {} on its own (lines lost or split "
            "between files): set \"max_size\": null and rotate with logrotate and "
            "SIGUSR1 to the parent".format(path))])
        self.assertEqual(warnings(2, {"path": path, "max_size": None}), [])
        self.assertEqual(warnings(1, {"path": path}), [])
        self.assertEqual(warnings("auto", {}), [])
