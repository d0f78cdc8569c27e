"""
Tests for what README.md and docs/ show beyond the hook reference and the
tutorial (``tests/test_docs.py``): every hook implementation they show is
one tproxy's specs accept, the examples of ``tproxy.testing`` and
docs/streams.md run, the lists of built-ins and of pages are complete, and
the attribute tables name every public attribute.
"""

import os
import re
import sys
import types
import unittest as pyunit

from twisted.trial.unittest import SynchronousTestCase

from tproxy import hookspecs
from tests.test_docs import DOCS, python_blocks, read_docs


def read_page(name):
    root = os.path.dirname(os.path.dirname(DOCS))
    with open(os.path.join(root, name), encoding="utf-8") as f:
        return f.read()


def run_test_case(test_case, code, source):
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


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped
    (but ``-`` and ``_``), spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def without_code(text):
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


class LinkTests(SynchronousTestCase):
    """Every link of README.md, docs/ and the example's README to a file of
    the checkout names one that exists, and its ``#anchor`` a heading (or an
    ``<a id>``) of that page: a reader never lands on nothing."""

    def anchors(self, page):
        text = without_code(read_page(page))
        found, seen = set(re.findall(r'<a id="([^"]+)">', text)), {}
        for heading in re.findall(r"^#+ (.+)$", text, re.M):
            s = slug(heading)
            n = seen[s] = seen.get(s, -1) + 1
            found.add(s if n == 0 else "{}-{}".format(s, n))
        return found

    def test_links(self):
        root = os.path.dirname(os.path.dirname(DOCS))
        pages = ["README.md", os.path.join("examples", "tproxy-apikey", "README.md")] + [
            os.path.join("docs", n) for n in sorted(os.listdir(os.path.join(root, "docs")))
            if n.endswith(".md")]
        broken, checked = [], 0
        for page in pages:
            for target in re.findall(r"\]\(([^)\s]+)\)", without_code(read_page(page))):
                if re.match(r"[a-z]+:", target):
                    continue   # a URL
                path, _, anchor = target.partition("#")
                name = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                checked += 1
                if not os.path.exists(os.path.join(root, name)):
                    broken.append("{}: {} (no such file)".format(page, target))
                elif anchor and name.endswith(".md") and anchor not in self.anchors(name):
                    broken.append("{}: {} (no such heading)".format(page, target))
        self.assertEqual(broken, [])
        self.assertGreater(checked, 50)

    def test_slug(self):
        self.assertEqual(slug("Compiled hot modules (CPython)"), "compiled-hot-modules-cpython")
        self.assertEqual(slug("`/upstream/status` for the box"), "upstreamstatus-for-the-box")
        self.assertEqual(slug("Reload (SIGHUP)"), "reload-sighup")
