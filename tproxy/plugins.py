# -*- test-case-name: tests.test_plugins -*-
"""
Plugin discovery, settings and ordering.

The ``plugins`` list of the configuration decides which plugins are active
and in what order.  Each entry's name is resolved, in this order, as:

1. a built-in (:data:`BUILTINS`: ``registry``, ``router``, ``least_conn``,
   ``access_log``, ``routes``, ``health_check``, and the gateway plugins ``request_id``,
   ``key_auth``, ``jwt_auth``, ``ip_restriction``, ``cors``, ``rate_limit``,
   ``prometheus``, ``hmac_auth``, ``cache``: see docs/gateway-plugins.md);
2. an entry point of the group ``tproxy`` (what an installed distribution
   declares: ``[project.entry-points.tproxy] key_auth = "tproxy_key_auth"``);
3. a dotted module path (``"mycompany.tproxy_auth"``), or ``"module:attr"``.

What the name resolves to is a module (or an object) with ``@hookimpl``
functions, or a class.  A class, or a module's ``Plugin`` class, is
instantiated as ``Plugin(settings)`` with the entry's ``settings``, validated
against the class's ``settings_schema`` (a JSON Schema; defaults filled in);
anything else is registered as it is and takes no settings.

Per-route plugins: an entry with ``"routes": ["api", ...]`` runs its request
hooks only for requests routed to those groups (its ``init_worker`` always
runs).  The same plugin may be listed once per set of routes, each with its own
settings.  Which implementations run for which route is resolved once, at
start, by :class:`tproxy.phases.Phases`.

Order: the first plugin listed runs first in every phase (unless a hook
implementation says ``tryfirst`` / ``trylast``).  pluggy calls the
last-registered implementation first, so the plugins are registered in
reverse config order.  The same plugin class may be listed several times with
different settings: the second one is registered as ``name#2``, and so on.
"""

import copy
import importlib
import os
import sys
import types

import pluggy

from tproxy import hookspecs
from tproxy.config import ConfigError
from tproxy.plugin_checks import (check_admin_paths, check_listed_once,
                                  check_route_choosers, check_routes_order, refuse_inert,
                                  refuse_wrappers)
from tproxy.plugin_settings import validate_settings
from tproxy.plugin_manager import PluginManager

__all__ = ["BUILTINS", "ENTRY_POINT_GROUP", "available_plugins",
           "build_plugin_manager", "describe_phases", "load_plugin"]

#: The project name: of the hook markers, the plugin manager and the
#: entry-point group.
ENTRY_POINT_GROUP = "tproxy"

#: Built-in plugin names and their modules.
BUILTINS = {
    "registry": "tproxy.builtins.registry",
    "router": "tproxy.builtins.router",
    "least_conn": "tproxy.builtins.least_conn",
    "access_log": "tproxy.builtins.access_log",
    "routes": "tproxy.builtins.routes",
    "health_check": "tproxy.builtins.health_check",
    "request_id": "tproxy.builtins.request_id",
    "key_auth": "tproxy.builtins.key_auth",
    "jwt_auth": "tproxy.builtins.jwt_auth",
    "ip_restriction": "tproxy.builtins.ip_restriction",
    "cors": "tproxy.builtins.cors",
    "rate_limit": "tproxy.builtins.rate_limit",
    "prometheus": "tproxy.builtins.prometheus",
    "hmac_auth": "tproxy.builtins.hmac_auth",
    "cache": "tproxy.builtins.cache",
}

_UNKNOWN = ("unknown plugin {!r} (not a built-in, an entry point of group "
            "'tproxy', or an importable module); built-ins: {}; installed entry "
            "points: {}")


def available_plugins(entry_points):
    """
    ``(built-in names, entry-point names)``, each sorted: the names a
    ``plugins`` entry may use besides module paths (for ``--list-plugins``
    and the message of an unknown name).

    :param entry_points: the entry points of the group ``tproxy``.
    """
    return sorted(BUILTINS), sorted({ep.name for ep in entry_points})


def _unknown(name, entry_points):
    builtins, installed = available_plugins(entry_points)
    return _UNKNOWN.format(name, ", ".join(builtins), ", ".join(installed) or "none")


def tproxy_entry_points():
    """The installed entry points of the group ``tproxy``."""
    # Reading every installed distribution's metadata costs milliseconds; a
    # test suite builds a gateway hundreds of times.  Read again when sys.path
    # or one of its directories changed (an install adds a *.dist-info there).
    key = []
    for entry in sys.path:
        try:
            key.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            key.append((entry, None))
    key = tuple(key)
    if _ENTRY_POINTS_READ[0] != key:
        # (importlib.metadata imported here: a start whose plugins are all
        # built-ins reads no entry point, nor imports it: ~6 ms of CPU)
        import importlib.metadata
        eps = importlib.metadata.entry_points()
        if hasattr(eps, "select"):
            found = list(eps.select(group=ENTRY_POINT_GROUP))
        else:
            found = list(eps.get(ENTRY_POINT_GROUP, ()))  # Python 3.9
        _ENTRY_POINTS_READ[:] = [key, found]
    return list(_ENTRY_POINTS_READ[1])


#: ``[sys.path and its directories' mtimes, the entry points read then]``
_ENTRY_POINTS_READ = [None, []]


def _describe(e):
    return "{}: {}".format(type(e).__name__, e)


def _import(target, path, name):
    """
    Import ``module`` or ``module:attr``; ``None`` if ``module`` itself does
    not exist (a missing module *inside* it is an error of the plugin).
    """
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            return None
        raise ConfigError((path, "plugin {!r} failed to import: {}".format(
            name, _describe(e))))
    except Exception as e:
        raise ConfigError((path, "plugin {!r} failed to import: {}".format(
            name, _describe(e))))
    for part in attr.split(".") if attr else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError((path, "plugin {!r}: module {!r} has no "
                               "attribute {!r}".format(name, module_name, attr)))
    return obj


def resolve_plugin(name, path, entry_points):
    """
    The object ``name`` refers to (a module, a class or an object).

    :param path: the JSON path of the entry, for error messages.
    :param entry_points: the entry points of the group ``tproxy``.
    :raises ConfigError: naming the plugin and ``path``.
    """
    if name in BUILTINS:
        obj = _import(BUILTINS[name], path, name)
        if obj is None:
            raise ConfigError((path, "built-in plugin {!r} is missing "
                               "({})".format(name, BUILTINS[name])))
        return obj
    matches = [ep for ep in entry_points if ep.name == name]
    if len({ep.value for ep in matches}) > 1:
        raise ConfigError((path, "plugin {!r} is ambiguous: several entry points "
                           "of group 'tproxy' have that name ({})".format(
                               name, ", ".join(sorted({ep.value for ep in matches})))))
    if matches:
        try:
            return matches[0].load()
        except Exception as e:
            raise ConfigError((path, "plugin {!r} (entry point {!r}) failed to "
                               "load: {}".format(name, matches[0].value, _describe(e))))
    obj = _import(name, path, name) if _looks_importable(name) else None
    if obj is None:
        raise ConfigError((path, _unknown(name, entry_points)))
    return obj


def _looks_importable(name):
    module_name, _, attr = name.partition(":")
    parts = module_name.split(".") + (attr.split(".") if attr else [])
    return all(p.isidentifier() for p in parts)


def load_plugin(name, settings, path, entry_points):
    """
    Resolve ``name`` and make the object to register: ``Plugin(settings)``
    when it is (or has) a ``Plugin`` class, else the module or object itself.

    :param settings: the entry's ``settings`` (a ``dict``).
    :param path: the JSON path of the entry (``"plugins[1]"``).
    :raises ConfigError: naming the plugin, for bad settings too
        (``plugins[1].settings.header: ...``; a ``ConfigError`` raised by
        ``Plugin(settings)`` has its paths put below ``plugins[1].settings``).
    """
    obj = resolve_plugin(name, path, entry_points)
    return make_plugin(obj, name, settings, path + ".settings", path)[0]


def make_plugin(obj, name, settings, settings_path, path):
    """
    ``(plugin, settings)``: the object to register for ``obj`` (what a name
    resolved to) and the settings it was made with (validated, defaults
    filled in; ``None`` for an object registered as it is).

    :param settings_path: the JSON path of the settings, for error messages.
    :param path: the JSON path of the entry, for ``__init__`` failures.
    """
    cls = obj if isinstance(obj, type) else getattr(obj, "Plugin", None)
    if not isinstance(cls, type):
        if settings:
            why = ("it has no Plugin class" if isinstance(obj, types.ModuleType) else
                   "an object is registered as it is: give its class to have "
                   "it made with settings")
            raise ConfigError((settings_path, "plugin {!r} takes no settings "
                               "({})".format(name, why)))
        return obj, None
    settings = copy.deepcopy(settings)
    schema = getattr(cls, "settings_schema", None)
    if schema is not None:
        settings = validate_settings(name, schema, settings, settings_path, path)
    made = copy.deepcopy(settings)
    try:
        return cls(made), settings
    except ConfigError as e:
        # a plugin checking its settings further names the problems by their
        # JSON paths within the settings ("routes[2].match")
        raise ConfigError([(_within(settings_path, p), "{} (plugin {!r})".format(
            problem, name)) for p, problem in e.errors])
    except Exception as e:
        raise ConfigError((path, "plugin {!r} failed to start: {}".format(
            name, _describe(e))))


def _within(base, path):
    """The JSON path ``path`` (relative) below ``base``."""
    if not path:
        return base
    return base + path if path.startswith("[") else base + "." + path


def build_plugin_manager(config, source=None, entry_points=None):
    """
    A ``pluggy.PluginManager("tproxy")`` with the hook specs of
    :mod:`tproxy.hookspecs` and the plugins of ``config["plugins"]``
    registered so that they run in config order.

    :param config: a validated configuration (:func:`tproxy.config.load_config`).
    :param source: the configuration's file name, for error messages.
    :param entry_points: the entry points of the group ``tproxy`` to resolve
        names against (default: the installed ones, read only when a name is
        not a built-in's: a built-in's name is never an entry point's).
    :raises ConfigError: naming the plugin and its JSON path, when a plugin is
        unknown, fails to import, rejects its settings, or implements a hook
        that does not exist.
    """
    if entry_points is None:
        entry_points = ([] if all(entry["name"] in BUILTINS for entry in config["plugins"])
                        else tproxy_entry_points())
    pm = PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    try:
        loaded, names, seen, scopes = [], {}, {}, {}
        for i, entry in enumerate(config["plugins"]):
            path = "plugins[{}]".format(i)
            name = entry["name"]
            plugin = load_plugin(name, entry.get("settings", {}), path, entry_points)
            if id(plugin) in seen:
                raise ConfigError((path, "plugin {!r} is already listed as {}; a "
                                   "plugin without a Plugin class can be listed "
                                   "once".format(name, seen[id(plugin)])))
            seen[id(plugin)] = path
            names[name] = names.get(name, 0) + 1
            unique = name if names[name] == 1 else "{}#{}".format(name, names[name])
            loaded.append((path, name, unique, plugin))
            if entry.get("routes"):
                scopes[unique] = frozenset(entry["routes"])
        check_route_choosers(config["plugins"])
        check_routes_order(config["plugins"])
        check_listed_once(config["plugins"])
        check_admin_paths(loaded)
        for path, name, unique, plugin in reversed(loaded):
            try:
                pm.register(plugin, name=unique)
            except (pluggy.PluginValidationError, ValueError) as e:
                raise ConfigError((path, "plugin {!r}: {}".format(name, e)))
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as e:
            culprit = pm.get_name(e.plugin)
            path = next(p for p, _, u, _ in loaded if u == culprit)
            hooks = sorted(
                hook for hook, caller in vars(pm.hook).items()
                if not hook.startswith("_") and not caller.has_spec()
                and any(i.plugin is e.plugin for i in caller.get_hookimpls()))
            raise ConfigError((path, "plugin {!r} implements unknown hook {} "
                               "(a typo? the hooks are those of "
                               "tproxy.hookspecs)".format(
                                   culprit, ", ".join(map(repr, hooks)))))
        refuse_wrappers(pm, loaded)
        refuse_inert(pm, loaded)
    except ConfigError as e:
        e.source = source
        raise
    #: {registered name: routes} of the plugins enabled for some routes only
    #: (read by tproxy.phases.Phases; private to tproxy)
    pm._tproxy_scopes = scopes
    return pm


def describe_phases(pm):
    """
    The active plugins per phase, in execution order: a list of
    ``(phase, [plugin name, ...])`` in the order a request meets the phases;
    a plugin enabled for some routes only is shown with them
    (``"key_auth [routes: admin, api]"``).
    """
    scopes = getattr(pm, "_tproxy_scopes", {})

    def label(plugin_name):
        routes = scopes.get(plugin_name)
        if not routes:
            return plugin_name
        return "{} [routes: {}]".format(plugin_name, ", ".join(sorted(routes)))

    out = []
    for name in _phase_names():
        caller = getattr(pm.hook, name, None)
        impls = reversed(caller.get_hookimpls()) if caller is not None else ()
        out.append((name, [label(impl.plugin_name) for impl in impls]))
    return out


def _phase_names():
    """The hook names of :mod:`tproxy.hookspecs`, in declaration order."""
    specs = [(fn.__code__.co_firstlineno, name) for name, fn in vars(hookspecs).items()
             if callable(fn) and hasattr(fn, ENTRY_POINT_GROUP + "_spec")]
    return [name for _, name in sorted(specs)]
