"""A plugin module that cannot be imported (for tests.test_plugins)."""

import tproxy_no_such_module_for_tests  # noqa: F401
