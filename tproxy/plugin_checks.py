# -*- test-case-name: tests.test_plugins -*-
"""
The checks of a configuration's plugin list beyond its schema, made by
:func:`tproxy.plugins.build_plugin_manager` (refusals: a ``ConfigError``
naming the JSON path) and by ``--check``, ``tproxyctl check`` and the start
(warnings: :func:`plugin_warnings`).  Each says what would otherwise go
wrong silently.
"""

from tproxy.config import ConfigError

__all__ = ["check_route_choosers", "check_routes_order", "check_listed_once",
           "check_admin_paths", "refuse_wrappers", "refuse_inert", "route_scope_warnings",
           "plugin_warnings"]

#: built-ins that choose the route of a request, in ``rewrite``
_CHOOSERS = ("router", "routes")


def check_route_choosers(entries):
    """
    Refuse ``routes`` on an entry of a built-in of :data:`_CHOOSERS`: an
    entry for some routes runs its ``rewrite`` once the every-route plugins
    have chosen the route, so a router there would never route a request
    (each a ``503``, "no live upstream").
    """
    for i, entry in enumerate(entries):
        if entry["name"] in _CHOOSERS and entry.get("routes"):
            raise ConfigError(("plugins[{}].routes".format(i), (
                "plugin {!r} chooses the route of every request (in rewrite); for "
                "some routes only it would run once a route is chosen, and never "
                "route a request: leave routes out").format(entry["name"])))


def check_routes_order(entries):
    """
    Refuse the built-in ``routes`` listed after an every-route ``router``:
    the router routes every request (a group, or the fallback's ``503``) and
    leaves alone only what an earlier plugin routed, so no route would ever
    match, while ``GET /routes/match`` says they do.
    """
    router = None
    for i, entry in enumerate(entries):
        if entry["name"] == "router" and router is None:
            router = i
        elif entry["name"] == "routes" and router is not None:
            raise ConfigError(("plugins[{}]".format(i), (
                "plugin 'routes' is listed after 'router' (plugins[{}]), which "
                "routes every request: no route would ever match (list routes "
                "before router)").format(router)))


#: built-ins that own fixed admin endpoints (``/upstream/...``, ``/routes``):
#: a second entry would fail at start with a ``DuplicateRoute``
_ONCE = ("registry", "routes")


def check_listed_once(entries):
    """Refuse a second entry of a built-in of :data:`_ONCE`, naming both
    (``--check`` said valid, and the start failed on the admin route)."""
    first = {}
    for i, entry in enumerate(entries):
        name = entry["name"]
        if name in _ONCE:
            if name in first:
                raise ConfigError(("plugins[{}]".format(i), (
                    "plugin {!r} is already listed (plugins[{}]): it owns admin "
                    "endpoints, list it once").format(name, first[name])))
            first[name] = i


#: the admin paths a built-in's settings choose: its name -> (the setting,
#: also the plugin's attribute, and the methods served there)
_CHOSEN_PATHS = {"cache": ("admin_path", ("GET", "DELETE")),
                 "prometheus": ("path", ("GET",))}

#: the fixed admin routes a chosen path cannot take: tproxy's own (``None``:
#: the probes, the status page's endpoints) and those of the built-ins
#: listed (pinned against the routes served by tests.test_plugins)
FIXED_ADMIN_ROUTES = {
    None: ("GET /healthz", "GET /readyz", "GET /status/overview", "GET /status/groups",
           "GET /status/peers"),
    "registry": ("GET /upstream/add", "POST /upstream/add", "GET /upstream/remove",
                 "POST /upstream/remove", "GET /upstream/status", "GET /upstream/servers",
                 "POST /upstream/servers", "PUT /upstream/servers",
                 "DELETE /upstream/servers"),
    "routes": ("GET /routes", "POST /routes", "GET /routes/match"),
}


def check_admin_paths(loaded):
    """
    Refuse an admin path a built-in's settings choose (``cache``'s
    ``admin_path``, ``prometheus``'s ``path``) that tproxy itself, a listed
    built-in or another such setting serves with the same method: the start
    would fail on a ``DuplicateRoute``, which ``--check`` cannot see (it
    runs no ``init_worker``, where plugins add their routes).

    :param loaded: ``(path, name, registered name, plugin)`` of each entry.
    :raises ConfigError: naming the setting's JSON path and the other's.
    """
    taken = dict.fromkeys(FIXED_ADMIN_ROUTES[None], "tproxy itself")
    for path, name, _, _ in loaded:
        for route in FIXED_ADMIN_ROUTES.get(name, ()) if name is not None else ():
            taken.setdefault(route, "plugin {!r} ({})".format(name, path))
    for path, name, _, plugin in loaded:
        setting, methods = _CHOSEN_PATHS.get(name, (None, ()))
        chosen = getattr(plugin, setting, None) if setting else None
        if not isinstance(chosen, str):
            continue
        where = "{}.settings.{}".format(path, setting)
        routes = ["{} {}".format(method, chosen) for method in methods]
        clash = [route for route in routes if route in taken]
        if clash:
            raise ConfigError((where, "admin path {!r} is served by {} too ({}): "
                               "choose another".format(chosen, taken[clash[0]],
                                                       ", ".join(clash))))
        taken.update(dict.fromkeys(routes, "plugin {!r} ({})".format(name, where)))


def refuse_wrappers(pm, loaded):
    """
    Refuse pluggy wrapper implementations (``@hookimpl(wrapper=True)``,
    ``@hookimpl(hookwrapper=True)``): tproxy's phase driver calls each
    implementation in turn, awaiting what it returns, and a wrapper (a
    generator around the other implementations' call) would never run: an
    ``access`` wrapper's 403 would let the request through.

    :param loaded: ``(path, name, registered name, plugin)`` of each entry.
    :raises ConfigError: naming the first entry with a wrapper, and its hooks.
    """
    wrapped = {}    # id(plugin) -> [hook, ...] (one pass over the hooks)
    for hook, caller in vars(pm.hook).items():
        if not hook.startswith("_"):
            for impl in caller.get_hookimpls():
                if impl.hookwrapper or getattr(impl, "wrapper", False):
                    wrapped.setdefault(id(impl.plugin), []).append(hook)
    for path, name, unique, plugin in loaded:
        wrappers = sorted(wrapped.get(id(plugin), ()))
        if wrappers:
            raise ConfigError((path, "plugin {!r}: {} {} (wrapper=True / "
                               "hookwrapper=True), which tproxy does not run; "
                               "use a plain @hookimpl (with tryfirst / trylast "
                               "to run before or after the others)".format(
                                   name, ", ".join(map(repr, wrappers)),
                                   "is a pluggy wrapper" if len(wrappers) == 1
                                   else "are pluggy wrappers")))


def route_scope_warnings(config):
    """
    ``[(JSON path, warning)]``: the per-route entries' route names that no
    static group (``upstreams``) and no route of the ``routes`` plugin has,
    in a configuration that names its groups that way: most likely a typo
    (``"routes": ["ap"]``), which would leave an authentication plugin off
    for the real group without a word.  A group registered at run time
    still takes the name, so it is a warning, printed by ``--check`` and
    logged at start; a configuration without static groups or routes gets
    none.
    """
    known = set(config.get("upstreams", ()))
    for entry in config["plugins"]:
        if entry["name"] == "routes":
            known.update(r.get("group") for r in entry.get("settings", {}).get("routes", ()))
    if not known:
        return []
    warnings = []
    for i, entry in enumerate(config["plugins"]):
        for j, name in enumerate(entry.get("routes") or ()):
            if name not in known:
                warnings.append(("plugins[{}].routes[{}]".format(i, j), (
                    "no group {!r} in upstreams nor in a route (known: {}): {!r} "
                    "runs there only if servers register under that prefix").format(
                        name, ", ".join(sorted(known)), entry["name"])))
    return warnings


def plugin_warnings(config, pm):
    """
    ``[(JSON path, warning)]`` of a valid configuration and its plugin
    manager: :func:`route_scope_warnings`; an access log file rotated by
    size under ``"workers"`` (each worker would rotate it on its own,
    docs/scaling.md); no ``balancer`` at all (``least_conn`` left out):
    every request and stream connection would be a ``503`` saying "no live
    upstream" while the peers are live; and ``least_conn`` without any
    ``rewrite`` (no ``router``): no request has a group to choose in.
    """
    warnings = route_scope_warnings(config)
    if config.get("workers", 1) != 1:
        for i, entry in enumerate(config["plugins"]):
            settings = entry.get("settings") or {}
            if (entry["name"] == "access_log" and settings.get("path")
                    and settings.get("max_size", 1) is not None):
                warnings.append(("plugins[{}].settings.max_size".format(i), (
                    "with \"workers\", each worker rotates {} on its own (lines "
                    "lost or split between files): set \"max_size\": null and "
                    "rotate with logrotate and SIGUSR1 to the parent").format(
                        settings["path"])))
    balancers = pm.hook.balancer.get_hookimpls()
    if not balancers:
        warnings.append(("plugins", "no plugin implements balancer (least_conn, or one "
                                    "of yours): every request is answered 503 \"no live "
                                    "upstream\" whatever the peers"))
    elif (not pm.hook.rewrite.get_hookimpls() and not config.get("streams")
          and all(i.plugin_name.partition("#")[0] == "least_conn" for i in balancers)):
        # least_conn chooses in ctx.route's group, which a rewrite sets (a
        # stream listener sets its own: a streams-only file needs none)
        warnings.append(("plugins", "no plugin implements rewrite (router, routes, or "
                                    "one of yours): no request is given a group, and "
                                    "least_conn answers every one 503 \"no live "
                                    "upstream\""))
    return warnings


def refuse_inert(pm, loaded):
    """
    Refuse a plugin that implements no hook: a module named by mistake
    (``"json"``), or hook functions without ``@tproxy.hookimpl``, which pluggy
    skips without a word (an ``access`` check that never runs).

    :param loaded: ``(path, name, registered name, plugin)`` of each entry.
    :raises ConfigError: naming the first such entry, and its functions named
        like hooks.
    """
    # (the plugins with an implementation, in one pass over the hooks:
    # pm.get_hookcallers(plugin) makes that pass for each plugin)
    implementing = {id(impl.plugin) for hook, caller in vars(pm.hook).items()
                    if not hook.startswith("_") for impl in caller.get_hookimpls()}
    for path, name, unique, plugin in loaded:
        if id(plugin) in implementing:
            continue
        specs = [hook for hook, caller in vars(pm.hook).items()
                 if not hook.startswith("_") and caller.has_spec()]
        unmarked = sorted(hook for hook in specs
                          if callable(getattr(plugin, hook, None)))
        raise ConfigError((path, "plugin {!r} implements no hook{}".format(
            name, ": {} {} not marked @tproxy.hookimpl".format(
                ", ".join(unmarked), "is" if len(unmarked) == 1 else "are")
            if unmarked else " (its hook functions must be marked "
                             "@tproxy.hookimpl)")))
