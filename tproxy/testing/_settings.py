# -*- test-case-name: tests.test_testing -*-
"""
:func:`check_settings`: a plugin's settings checked as tproxy checks them at
start, without a gateway (see :mod:`tproxy.testing`).
"""

from tproxy.plugins import make_plugin, resolve_plugin, tproxy_entry_points


def check_settings(plugin, settings=None, entry_points=None):
    """
    Check ``settings`` for ``plugin`` as tproxy does for an entry
    ``{"name": plugin, "settings": settings}`` of ``plugins``: validate them
    against the class's ``settings_schema``, fill in its defaults and make
    one ``Plugin(settings)`` (so the checks ``__init__`` makes, raising
    :class:`~tproxy.config.ConfigError`, count too).

    :param plugin: a name (a built-in, an entry point, a dotted path), a
        module with a ``Plugin`` class, or a class.
    :param settings: the entry's ``settings`` (``None``: none, ``{}``).
    :param entry_points: the entry points of the group ``tproxy`` names
        resolve against (default: the installed ones).
    :return: the settings ``Plugin.__init__`` receives (a new ``dict``,
        defaults filled in); ``None`` for a plugin without a ``Plugin``
        class, which is registered as it is and takes no settings.
    :raises tproxy.config.ConfigError: one ``(path, problem)`` per problem;
        the paths start at ``settings`` (``"settings.header"``), where a
        configuration's start at ``plugins[N].settings``.
    """
    if isinstance(plugin, str):
        name = plugin
        installed = tproxy_entry_points() if entry_points is None else list(entry_points)
        plugin = resolve_plugin(name, "settings", installed)
    else:
        name = getattr(plugin, "__name__", type(plugin).__name__)
    return make_plugin(plugin, name, settings or {}, "settings", "settings")[1]
