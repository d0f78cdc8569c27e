# -*- test-case-name: tests.test_testing -*-
"""
How a harness's ``plugins`` and configuration are made from what a test
gives it: plugin objects named (:func:`_plugin_entry`, :class:`_Given`, an
entry point whose object is at hand) and the ``access_log`` sent to the
harness's events.
"""

import types


class _Given(object):
    """An entry point (for the loader) whose object is already at hand."""

    group = "tproxy"

    def __init__(self, name, obj):
        self.name = name
        self.obj = obj
        self.value = "<{} given to tproxy.testing.Harness>".format(name)

    def load(self):
        return self.obj


def _access_log_to_events(config):
    """
    ``config`` with the built-in ``access_log``'s default target
    ``"logger"`` instead of the standard output: in a harness its records go
    to :attr:`_Network.events`, not into the test run's output.
    """
    plugins = []
    for entry in config["plugins"]:
        settings = entry.get("settings")
        if (entry.get("name") == "access_log" and isinstance(settings, dict)
                and "target" not in settings and "path" not in settings):
            entry = dict(entry, settings=dict(settings, target="logger"))
        plugins.append(entry)
    return dict(config, plugins=plugins)


def _plugin_entry(entry, given, taken):
    """
    A ``plugins`` entry with a plugin object replaced by a name, which
    ``given`` (``{name: _Given}``) maps to the object; ``taken``: the names
    that resolve to something else.
    """
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        if isinstance(entry.get("name"), str):
            return entry
        return dict(entry, name=_name_for(entry.get("name"), given, taken))
    return _name_for(entry, given, taken)


def _name_for(obj, given, taken):
    for name, point in given.items():
        if point.obj is obj:
            return name
    if isinstance(obj, (types.ModuleType, type)):
        base = obj.__name__
    else:
        base = type(obj).__name__
    name, n = base, 1
    while name in taken or name in given:
        n += 1
        name = "{}-{}".format(base, n)
    given[name] = _Given(name, obj)
    return name
