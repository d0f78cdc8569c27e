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

