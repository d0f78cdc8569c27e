"""
Tests for ``docs/gateway-plugins.md``: every JSON configuration on the page
is valid and its plugins start, and every built-in has its section.
"""

import json
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from tproxy.config import validate_config
from tproxy.plugins import BUILTINS, build_plugin_manager

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "docs", "gateway-plugins.md")

#: the built-ins documented elsewhere (README, docs/routing.md)
CORE = {"registry", "router", "least_conn", "access_log", "routes",
        "health_check"}  # health_check: docs/health.md


def read_docs():
    with open(DOCS, encoding="utf-8") as f:
        return f.read()


class GatewayPluginsPageTests(SynchronousTestCase):

    def test_configurationsWork(self):
        """Each ```json block with "plugins" is a configuration tproxy accepts."""
        blocks = re.findall(r"^```json\n(.*?)^```", read_docs(), re.S | re.M)
        configs = [json.loads(b) for b in blocks]
        configs = [c for c in configs if "plugins" in c]
        self.assertGreaterEqual(len(configs), 5)
        for config in configs:
            build_plugin_manager(validate_config(config), entry_points=[])

    def test_sectionPerPlugin(self):
        sections = set(re.findall(r"^## (\S+)$", read_docs(), re.M))
        missing = set(BUILTINS) - CORE - sections
        self.assertEqual(missing, set())
