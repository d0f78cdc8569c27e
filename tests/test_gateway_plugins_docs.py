"""
Tests for ``docs/gateway-plugins.md``: every complete configuration in it
(a ``json`` block with ``plugins``) is valid and its plugins load, and every
built-in has its section.
"""

import json
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import validate_config
from tproxy.plugins import BUILTINS, build_plugin_manager

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "docs", "gateway-plugins.md")

#: the built-ins documented elsewhere (README, docs/routing.md, docs/health.md)
CORE = {"registry", "router", "least_conn", "access_log", "routes", "health_check"}


def configurations():
    """``[(section title, config dict)]`` of the json blocks with ``plugins``."""
    with open(DOCS, encoding="utf-8") as f:
        text = f.read()
    out = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        for block in re.findall(r"^```json\n(.*?)^```", section, re.S | re.M):
            obj = json.loads(block)
            if "plugins" in obj:
                out.append((title, obj))
    return out


class ConfigurationTests(SynchronousTestCase):

    def test_everyConfigurationLoads(self):
        """Each section's configuration validates and its plugins load; a
        built-in's section lists that built-in."""
        found = configurations()
        self.assertGreaterEqual(len(found), 5)
        for title, config in found:
            config = validate_config(config)
            pm = build_plugin_manager(config, entry_points=[])
            if title in BUILTINS:     # a plugin's section shows that plugin
                self.assertIsNotNone(pm.get_plugin(title), title)

    def test_sectionPerPlugin(self):
        """Every built-in has a section, except those documented elsewhere."""
        with open(DOCS, encoding="utf-8") as f:
            sections = set(re.findall(r"^## (\S+)$", f.read(), re.M))
        self.assertEqual(set(BUILTINS) - CORE - sections, set())

