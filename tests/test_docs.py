"""
Tests for ``docs/plugins.md``: its hook reference follows
:mod:`tproxy.hookspecs` (a hook added without docs fails here, and so does a
section for a hook that is gone), and its tutorial's code runs; and for the
configurations README.md and docs/ show: each one is valid.
"""

import inspect
import os
import re
import sys
import types
import unittest as pyunit

from twisted.trial.unittest import SynchronousTestCase

from tproxy import hookspecs

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "docs", "plugins.md")

REFERENCE = "## Hook reference"


def read_docs():
    with open(DOCS, encoding="utf-8") as f:
        return f.read()


def hook_signatures():
    """``{hook name: (argument names)}`` of every spec in tproxy.hookspecs."""
    return {name: tuple(inspect.signature(fn).parameters)
            for name, fn in vars(hookspecs).items()
            if callable(fn) and hasattr(fn, "tproxy_spec")}


def reference_sections(text):
    """``{title: body}`` of the ``###`` sections under the hook reference."""
    start = text.index("\n" + REFERENCE + "\n")
    end = text.find("\n## ", start + 1)
    part = text[start:end if end >= 0 else len(text)]
    pieces = re.split(r"^### (.+)$", part, flags=re.M)
    return dict((pieces[i].strip(), pieces[i + 1]) for i in range(1, len(pieces), 2))


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


class ReferenceTests(SynchronousTestCase):
    """One section per hook, with the hook's signature."""

    def setUp(self):
        self.sections = reference_sections(read_docs())
        self.hooks = hook_signatures()

    def test_everyHookDocumented(self):
        """Every hook spec has a ``### <hook>`` section."""
        missing = sorted(set(self.hooks) - set(self.sections))
        self.assertEqual(missing, [], "hooks without a '### <name>' section under "
                         "'{}' in docs/plugins.md".format(REFERENCE))

    def test_noStaleSections(self):
        """Every section of the reference is a hook that exists."""
        stale = sorted(set(self.sections) - set(self.hooks))
        self.assertEqual(stale, [], "sections of docs/plugins.md for hooks that "
                         "tproxy.hookspecs does not have")

    def test_signatures(self):
        """Each section starts with the hook's signature, as the spec has it."""
        for name, args in sorted(self.hooks.items()):
            body = self.sections.get(name)
            if body is None:
                continue
            first = body.strip().splitlines()[0]
            self.assertEqual(first, "`{}({})`".format(name, ", ".join(args)))

    def test_hooksFound(self):
        """The specs are found at all (the test above is not vacuous)."""
        self.assertIn("access", self.hooks)
        self.assertEqual(self.hooks["balancer"], ("ctx", "tried"))


class TutorialTests(SynchronousTestCase):
    """The code of the page is valid, and the tutorial's plugin passes its tests."""

    def test_blocksCompile(self):
        """Every Python block compiles."""
        blocks = python_blocks(read_docs())
        self.assertGreater(len(blocks), 5)
        for block in blocks:
            compile(block, DOCS, "exec")

    def test_tutorialRuns(self):
        """The tutorial's plugin module passes the tutorial's tests."""
        blocks = python_blocks(read_docs())
        [plugin_code] = [b for b in blocks if "class Plugin" in b]
        [test_code] = [b for b in blocks if "class AccessTests" in b]
        module = types.ModuleType("tproxy_apikey")
        exec(compile(plugin_code, DOCS, "exec"), module.__dict__)
        # the tests block imports tproxy_apikey: give it the tutorial's
        previous = sys.modules.get("tproxy_apikey")
        sys.modules["tproxy_apikey"] = module

        def restore():
            if previous is None:
                del sys.modules["tproxy_apikey"]
            else:
                sys.modules["tproxy_apikey"] = previous
        self.addCleanup(restore)
        namespace = {"__name__": "tutorial_tests"}
        exec(compile(test_code, DOCS, "exec"), namespace)
        suite = pyunit.TestLoader().loadTestsFromTestCase(namespace["AccessTests"])
        result = pyunit.TestResult()
        suite.run(result)
        self.assertEqual((result.testsRun, result.errors, result.failures), (2, [], []))


#: The top-level keys of a configuration file (a JSON block made only of
#: them is a configuration to check).
CONFIG_KEYS = frozenset([
    "listen", "tls", "admin", "registry", "trusted_proxies", "timeouts",
    "upstreams", "plugins", "proxy", "health", "shutdown_timeout", "log_level",
    "workers", "streams"])

#: Plugins the pages write themselves (the tutorial's), not shipped.
TUTORIAL_PLUGINS = ('"apikey"',)


def json_blocks():
    """``(file, line, text)`` of every ```json block of README.md and docs/."""
    root = os.path.dirname(os.path.dirname(DOCS))
    names = ["README.md"] + sorted(
        os.path.join("docs", n) for n in os.listdir(os.path.join(root, "docs"))
        if n.endswith(".md"))
    for name in names:
        with open(os.path.join(root, name), encoding="utf-8") as f:
            text = f.read()
        for m in re.finditer(r"^```json\n(.*?)^```", text, re.S | re.M):
            yield name, text.count("\n", 0, m.start()) + 1, m.group(1)


class ConfigurationBlockTests(SynchronousTestCase):
    """Every configuration the README and the docs show (a whole file, or
    one plugin entry) is valid, plugins included: a user pasting one gets a
    running tproxy, not a config error."""

    def test_blocksValid(self):
        import json
        import tempfile
        from tproxy.config import ConfigError, validate_config
        from tproxy.plugins import build_plugin_manager
        logs = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, logs)
        checked, problems = 0, []
        for name, line, text in json_blocks():
            if any(p in text for p in TUTORIAL_PLUGINS):
                continue
            # the pages' log directory stands for one that exists
            text = text.replace("/var/log/tproxy/", logs + "/")
            try:
                obj = json.loads(text)
            except ValueError:
                continue   # an answer with "..." in it, not a configuration
            if not isinstance(obj, dict):
                continue
            if "name" in obj and not set(obj) & CONFIG_KEYS:
                obj = {"plugins": [obj]}
            elif not obj or not set(obj) <= CONFIG_KEYS:
                continue
            checked += 1
            try:
                build_plugin_manager(validate_config(obj, source=name),
                                     source=name, entry_points=[])
            except ConfigError as e:
                problems.append("{}:{}: {}".format(name, line, e))
        self.assertEqual(problems, [])
        self.assertGreater(checked, 15)


class ListPluginsOutputTests(SynchronousTestCase):
    """The ``--list-plugins`` outputs the README and docs/plugins.md show are
    what tproxy prints for their configuration."""

    def shown(self, name):
        """``(command, output)`` of every ``$ twistd tproxy -c FILE
        --list-plugins`` block of ``name``."""
        root = os.path.dirname(os.path.dirname(DOCS))
        with open(os.path.join(root, name), encoding="utf-8") as f:
            text = f.read()
        return re.findall(r"^```\n\$ (twistd tproxy -c (\S+) --list-plugins)\n(.*?)^```",
                          text, re.S | re.M)

    def printed(self, config, entry_points):
        from tproxy.config import validate_config
        from tproxy.plugins import build_plugin_manager
        from tproxy.tap import format_phases
        config = validate_config(config)
        pm = build_plugin_manager(config, entry_points=entry_points)
        return format_phases(config, pm, entry_points=entry_points)

    def test_readme(self):
        import json
        [(command, path, output)] = self.shown("README.md")
        root = os.path.dirname(os.path.dirname(DOCS))
        with open(os.path.join(root, path), encoding="utf-8") as f:
            config = json.load(f)
        self.assertEqual(output, self.printed(config, []))

    def test_tutorial(self):
        """The tutorial's configuration, with the example plugin installed
        (examples/tproxy-apikey, found by its entry point)."""
        import importlib.metadata
        import json
        [(command, path, output)] = self.shown("docs/plugins.md")
        text = read_docs()
        start = text.index(command)
        config = json.loads(re.findall(r"^```json\n(.*?)^```", text[:start],
                                       re.S | re.M)[-1])
        example = os.path.join(os.path.dirname(os.path.dirname(DOCS)),
                               "examples", "tproxy-apikey")
        sys.path.insert(0, example)
        self.addCleanup(sys.path.remove, example)
        self.addCleanup(sys.modules.pop, "tproxy_apikey", None)
        ep = importlib.metadata.EntryPoint(name="apikey", value="tproxy_apikey",
                                           group="tproxy")
        self.assertEqual(output, self.printed(config, [ep]))


def read_page(name):
    root = os.path.dirname(os.path.dirname(DOCS))
    with open(os.path.join(root, name), encoding="utf-8") as f:
        return f.read()


def run_test_case(test_case, code, source, modules=()):
    """Run ``code`` (a block defining the TestCase class ``test_case``) and
    return trial's view of it: ``(tests run, errors, failures)``."""
    namespace = {"__name__": "docs_block"}
    exec(compile(code, source, "exec"), namespace)
    suite = pyunit.TestLoader().loadTestsFromTestCase(namespace[test_case])
    result = pyunit.TestResult()
    suite.run(result)
    return result.testsRun, result.errors, result.failures


class HookSnippetTests(SynchronousTestCase):
    """Every hook implementation the pages show (README.md, docs/*.md) is one
    pluggy accepts for tproxy's specs: a hook that exists, arguments it has."""

    def snippets(self):
        root = os.path.dirname(os.path.dirname(DOCS))
        names = ["README.md"] + sorted(
            os.path.join("docs", n) for n in os.listdir(os.path.join(root, "docs"))
            if n.endswith(".md"))
        for name in names:
            for block in python_blocks(read_page(name)):
                if "@hookimpl" in block:
                    yield name, block

    def registered(self, name, block):
        """The plugin object of ``block``, registered on a manager of the specs."""
        import hashlib
        import pluggy
        from twisted.internet.task import LoopingCall
        from tproxy import Response, hookimpl
        if re.search(r"^@hookimpl\n(async )?def \w+\(self", block, re.M):
            # a method shown without its class
            block = "class Plugin(object):\n" + "".join(
                "    " + line for line in block.splitlines(True))
        namespace = {"hookimpl": hookimpl, "Response": Response, "hashlib": hashlib,
                     "LoopingCall": LoopingCall, "__name__": "docs_snippet"}
        exec(compile(block, name, "exec"), namespace)
        module = types.ModuleType("docs_snippet")
        module.__dict__.update(namespace)
        # the module's functions, and an instance of each class it defines
        plugins = [module] + [
            value.__new__(value) for value in namespace.values()
            if isinstance(value, type) and value.__module__ == "docs_snippet"]
        pm = pluggy.PluginManager("tproxy")
        pm.add_hookspecs(hookspecs)
        for plugin in plugins:
            pm.register(plugin)
        pm.check_pending()
        return sum(len(pm.get_hookcallers(plugin)) for plugin in plugins)

    def test_snippets(self):
        checked = 0
        for name, block in self.snippets():
            try:
                hooks = self.registered(name, block)
            except Exception as e:
                self.fail("{}: a hook implementation pluggy refuses: {}\n{}".format(
                    name, e, block))
            self.assertGreater(hooks, 0, (name, block))
            checked += 1
        self.assertGreater(checked, 15)

    def test_refusesUnknown(self):
        """The check above is not vacuous: a misspelt hook or argument fails it."""
        import pluggy
        self.assertRaises(pluggy.PluginValidationError, self.registered, "x",
                          "@hookimpl\ndef rewite(ctx):\n    pass\n")
        self.assertRaises(pluggy.PluginValidationError, self.registered, "x",
                          "@hookimpl\ndef access(ctx, request):\n    pass\n")


class TestingExamplesTests(SynchronousTestCase):
    """The examples of ``tproxy.testing`` run and pass: the stream plugin's
    tests of docs/plugins.md, and the module docstring's."""

    def test_streamTests(self):
        [code] = [b for b in python_blocks(read_docs()) if "class StreamAccessTests" in b]
        self.assertEqual(run_test_case("StreamAccessTests", code, DOCS), (2, [], []))

    def test_moduleDocstring(self):
        import tproxy.testing
        code = re.search(r"::\n\n(.*?)\n\S", tproxy.testing.__doc__, re.S).group(1)
        code = "\n".join(line[4:] for line in code.splitlines())
        self.assertEqual(run_test_case("GreetingTests", code, "tproxy/testing/__init__.py"),
                         (1, [], []))


class BuiltinListTests(SynchronousTestCase):
    """The lists of built-in plugins in README.md ("Plugins") and
    docs/plugins.md ("Names") name every built-in, and nothing else."""

    def listed(self, page, start, end):
        text = read_page(page)
        part = text[text.index(start):]
        part = part[:part.index(end)]
        return set(re.findall(r"`([a-z_]+)`", part))

    def test_readme(self):
        from tproxy.plugins import BUILTINS
        self.assertEqual(self.listed("README.md", "1. a built-in", "2. an entry point"),
                         set(BUILTINS))

    def test_pluginsPage(self):
        from tproxy.plugins import BUILTINS
        names = self.listed(os.path.join("docs", "plugins.md"), "1. a built-in",
                            "2. an entry point")
        # the hooks and settings the descriptions name
        names -= {"rewrite", "log", "stream_log", "weight"}
        self.assertEqual(names, set(BUILTINS))


class AttributeTablesTests(SynchronousTestCase):
    """Every public attribute of what the hooks receive (``Peer``, the
    request's context, ``Request``, ``ResponseHead``) is named on
    docs/plugins.md, as `` `name` `` or `` `name(...)` ``."""

    def public(self, cls):
        names = {n for n in dir(cls) if not n.startswith("_")}
        for c in cls.__mro__:
            names |= {s for s in getattr(c, "__slots__", ()) if not s.startswith("_")}
        return names

    def test_documented(self):
        from tproxy import Peer, Request, RequestContext, ResponseHead
        text = read_docs()
        undocumented = {}
        for cls in (Peer, RequestContext, Request, ResponseHead):
            names = self.public(cls)
            self.assertIn("group" if cls is Peer else "headers" if cls is not
                          RequestContext else "request", names)
            missing = sorted(n for n in names if not any(
                form.format(n) in text for form in ("`{}`", "`{}(", ".{}`", ".{}(")))
            if missing:
                undocumented[cls.__name__] = missing
        self.assertEqual(undocumented, {})


class MoreSectionTests(SynchronousTestCase):
    """README's "More" links every page of docs/ once, and names every
    gateway plugin beside docs/gateway-plugins.md."""

    def more(self):
        text = read_page("README.md")
        part = text[text.index("\n## More\n"):]
        return part[:part.index("\n## ", 1)] if "\n## " in part[1:] else part

    def test_everyPageOnce(self):
        root = os.path.dirname(os.path.dirname(DOCS))
        pages = sorted(n for n in os.listdir(os.path.join(root, "docs")) if n.endswith(".md"))
        linked = re.findall(r"^- \[docs/([\w-]+\.md)\]", self.more(), re.M)
        self.assertEqual(sorted(linked), pages)

    def test_gatewayPlugins(self):
        from tproxy.plugins import BUILTINS
        item = re.search(r"^- \[docs/gateway-plugins\.md\].*?(?=^- )", self.more(),
                         re.S | re.M).group(0)
        core = {"registry", "router", "least_conn", "access_log", "routes", "health_check"}
        self.assertEqual(set(re.findall(r"`([a-z_]+)`", item)),
                         set(BUILTINS) - core)


class StreamsPageTests(SynchronousTestCase):
    """docs/streams.md's plugin (a ``Plugin`` class, shown as the module
    ``mycompany.tproxy_limits``) passes the page's own harness lines."""

    def test_limitsPlugin(self):
        from tproxy.testing import StreamHarness, StreamServer
        blocks = python_blocks(read_page(os.path.join("docs", "streams.md")))
        [plugin_code] = [b for b in blocks if "class Plugin" in b]
        [harness_code] = [b for b in blocks if "StreamHarness(" in b]
        package = types.ModuleType("mycompany")
        package.__path__ = []
        module = types.ModuleType("mycompany.tproxy_limits")
        exec(compile(plugin_code, "docs/streams.md", "exec"), module.__dict__)
        package.tproxy_limits = module
        for name, value in (("mycompany", package), ("mycompany.tproxy_limits", module)):
            self.assertNotIn(name, sys.modules)
            sys.modules[name] = value
            self.addCleanup(sys.modules.pop, name)
        namespace = {"StreamHarness": StreamHarness, "StreamServer": StreamServer}
        exec(compile(harness_code, "docs/streams.md", "exec"), namespace)
        h = namespace["h"]
        self.assertEqual(h.logged[0].reason, "access_denied")
        allowed = h.connect(client="10.1.2.3")
        allowed.send(b"PING\r\n")
        self.assertEqual(allowed.received, b"PING\r\n")
        self.assertEqual(h.plugin("mycompany.tproxy_limits").open, {"10.1.2.3": 1})
