# -*- test-case-name: tests.test_tap -*-
"""
``twistd tproxy``: the command-line options and the service wiring.

Read :func:`makeService` top to bottom for how a running tproxy is put
together: configuration, plugin manager, gateway, listeners; the service it
returns, and how it starts, drains and stops, is
:class:`tproxy.gateway_service.GatewayService`.

A bad configuration, an unknown plugin or a listener that cannot listen
stops the process with a one-line message (``<file>: <json path>:
<problem>``) on standard error and exit status 1, never a traceback: these
are the user's mistakes, not tproxy's.  (twistd's own handling of
``usage.UsageError`` prints the whole ``--help`` text first, and on some
Twisted versions exits 0, hence ``SystemExit``.)
"""

import os
import sys

from twisted.logger import Logger
from twisted.python import usage

from tproxy.addresses import endpoint_is_local
from tproxy.config import ConfigError, load_config, validate_config
from tproxy.gateway_service import GatewayService, open_endpoint, with_tls
from tproxy.plugins import (
    available_plugins, build_plugin_manager, describe_phases, tproxy_entry_points)

__all__ = ["Options", "makeService", "format_phases", "DEFAULT_CONFIG",
           # the service and its endpoints (tproxy.gateway_service)
           "GatewayService", "open_endpoint", "with_tls"]

#: The configuration file used when ``--config`` is not given, if it exists
#: (relative to the working directory); without it the built-in defaults
#: apply.
DEFAULT_CONFIG = os.path.join("etc", "conf.json")

log = Logger()


class Options(usage.Options):
    """
    The options of ``twistd tproxy``.

    After :meth:`parseOptions`, ``self.config`` is the validated
    configuration, ``self.source`` where it came from and
    ``self.plugin_manager`` the loaded plugins.
    """

    synopsis = "[-c CONFIG.json] [--check] [--list-plugins]"
    longdesc = ("Run tproxy, an HTTP reverse proxy and API gateway whose request "
                "phases are pluggy hooks. Without --config, {} is used if it "
                "exists, else the built-in defaults (proxy on tcp:8080, admin API "
                "on tcp:9180:interface=127.0.0.1).".format(DEFAULT_CONFIG))

    optParameters = [
        ["config", "c", None,
         "The JSON configuration file [default: {} if it exists, else the "
         "built-in defaults].".format(DEFAULT_CONFIG)],
    ]
    optFlags = [
        ["check", "t",
         "Check the configuration and the plugins it names, say whether they are "
         "valid, and exit (0 when valid, 1 otherwise), as nginx -t does."],
        ["list-plugins", None,
         "Print the active plugins of each phase, in execution order, and "
         "the plugins available (built-ins, installed entry points), and exit."],
    ]

    config = None
    source = None
    plugin_manager = None

    def opt_version(self):
        """Display tproxy's version and Twisted's, and exit."""
        from twisted import version as twisted_version

        from tproxy import __version__
        print("tproxy {} (distribution tproxy-gateway), Twisted {}".format(
            __version__, twisted_version.short()))
        sys.exit(0)

    def postOptions(self):
        """
        Load and validate the configuration and the plugins; handle
        ``--check`` and ``--list-plugins``.

        :raises SystemExit: with the error message when the configuration or
            a plugin is invalid; with ``0`` after ``--check`` or
            ``--list-plugins``.
        """
        path = self["config"]
        if path is None and os.path.exists(DEFAULT_CONFIG):
            path = DEFAULT_CONFIG
        try:
            if path is None:
                self.source = "<built-in defaults>"
                self.config = validate_config({}, source=self.source)
            else:
                self.source = path
                self.config = load_config(path)
            self.plugin_manager = build_plugin_manager(self.config, source=self.source)
            _check_tls(self.config)
        except ConfigError as e:
            e.source = e.source or self.source
            raise SystemExit(str(e))
        if self["check"]:
            from tproxy.plugin_checks import plugin_warnings
            for where, warning in plugin_warnings(self.config, self.plugin_manager):
                sys.stdout.write("{}: {}: warning: {}\n".format(self.source, where, warning))
            sys.stdout.write("{}: the configuration is valid\n".format(self.source))
            sys.stdout.flush()
            raise SystemExit(0)
        if self["list-plugins"]:
            sys.stdout.write(format_phases(self.config, self.plugin_manager))
            sys.stdout.flush()
            raise SystemExit(0)


def format_phases(config, plugin_manager, entry_points=None):
    """The text of ``--list-plugins``: the plugins, then each phase's, then
    the plugins available (``entry_points``: default the installed ones)."""
    names = [p["name"] for p in config["plugins"]]
    lines = ["plugins (config order): {}".format(", ".join(names) or "-")]
    phases = describe_phases(plugin_manager)
    width = max(len(phase) for phase, _ in phases)
    for phase, plugins in phases:
        lines.append("  {}  {}".format(phase.ljust(width), ", ".join(plugins) or "-"))
    if entry_points is None:
        entry_points = tproxy_entry_points()
    builtins, installed = available_plugins(entry_points)
    lines.append("available plugins:")
    lines.append("  {}  {}".format("built-in".ljust(width), ", ".join(builtins)))
    lines.append("  {}  {}".format("installed".ljust(width), ", ".join(installed) or "-"))
    return "\n".join(lines) + "\n"


def _install_fast_reactor():
    """
    Install tproxy's reactor (:mod:`tproxy.reactor`) when none is installed
    yet: twistd was given no ``-r`` and nothing imported the global reactor.
    So the plain ``twistd tproxy`` is the fast one.  Skipped where epoll is
    missing, or with ``TPROXY_REACTOR=default`` (twistd then installs its
    default reactor as usual).
    """
    if ("twisted.internet.reactor" in sys.modules
            or os.environ.get("TPROXY_REACTOR") == "default"):
        return
    import select
    if not hasattr(select, "epoll"):
        return
    from tproxy.reactor import install
    install()


def _freeze_loaded():
    """
    Leave what is loaded at start (modules, their classes and functions, the
    configuration, the plugin manager: ~50,000 objects alive for the
    process's life) out of the collector's full collections (``gc.freeze``;
    PyPy has none).  Unfrozen, each full collection examines them all, ~10
    ms of CPU on an Intel Xeon, while every request in flight waits: under
    ``Connection: close`` load one comes every few thousand requests, and
    makes the p99.  The listeners' modules are loaded first; the gateway,
    which a reload replaces, is made after (so it is collected as usual).
    """
    import gc
    if not hasattr(gc, "freeze"):
        return
    from importlib import import_module
    for name in ("tproxy.http.server", "tproxy.stream"):
        import_module(name)
    gc.collect()
    gc.freeze()
    log.info("{count} objects loaded at start left out of the collector's full "
             "collections (gc.freeze)", count=gc.get_freeze_count())


#: the JIT parameters ``twistd tproxy`` sets on PyPy (``TPROXY_PYPY_JIT``
#: replaces them; empty: PyPy's defaults).  A request's trace is longer than
#: PyPy's default limit (6000 operations): the aborted traces leave a few of
#: its functions compiled apart, each entered with a frame of its own (~4
#: such entries per request fewer with 16000, the largest limit PyPy takes).
PYPY_JIT = "trace_limit=16000"


def _tune_pypy_jit():
    """
    Set :data:`PYPY_JIT` (or ``TPROXY_PYPY_JIT``) on PyPy.  Return what the
    log line of :func:`_log_fast_paths` says of it (``None`` on CPython).
    """
    try:
        import pypyjit
    except ImportError:
        return None
    params = os.environ.get("TPROXY_PYPY_JIT", PYPY_JIT)
    if not params:
        return "defaults"
    try:
        pypyjit.set_param(params)
    except (ValueError, SystemError) as e:
        # (a limit above PyPy's largest is a SystemError there)
        log.warn("TPROXY_PYPY_JIT={params!r} not taken ({error}): PyPy's defaults",
                 params=params, error=e)
        return "defaults"
    return params


#: PyPy's garbage-collector settings ``twistd tproxy`` runs with when the
#: environment sets no nursery (README, Running on PyPy: a 16 MB nursery makes
#: tproxy ~30 % faster).  PyPy reads them at start-up only.
PYPY_GC = (("PYPY_GC_NURSERY", "16MB"), ("PYPY_GC_INCREMENT_STEP", "4MB"))


def pypy_gc_restart(environ, argv, executable, implementation):
    """
    What to run instead of this process so that PyPy's collector starts with
    :data:`PYPY_GC`: ``(executable, argv, environ)`` for ``os.execve``, the
    same command (``executable argv...``) with the settings added to
    ``environ``; ``None`` when there is nothing to do: not PyPy, a
    ``PYPY_GC_NURSERY`` set (even empty: the user's choice), or a command
    that cannot be run again as it is (``argv[0]`` not a file, as with
    ``python -c``).
    """
    if (implementation != "PyPy" or "PYPY_GC_NURSERY" in environ or not argv
            or not os.path.isfile(argv[0])):
        return None
    env = dict(environ)
    for name, value in PYPY_GC:
        env.setdefault(name, value)
    return executable, [executable] + list(argv), env


def _restart_with_pypy_gc():
    """On PyPy without ``PYPY_GC_NURSERY``, run ``twistd`` again in this
    process (the same pid, before anything is opened or logged) with
    :data:`PYPY_GC` in its environment (:func:`pypy_gc_restart`)."""
    import platform
    restart = pypy_gc_restart(os.environ, sys.argv, sys.executable,
                              platform.python_implementation())
    if restart is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(*restart)


def _log_fast_paths(reactor, jit=None):
    """One line at start saying which of tproxy's fast paths are on (and
    ``jit``: the PyPy JIT parameters set at start)."""
    import platform

    from tproxy import compiled, fastio
    from tproxy.http import parsing
    from tproxy.routing import spec

    pypy = platform.python_implementation() == "PyPy"
    nursery = os.environ.get("PYPY_GC_NURSERY")
    log.info("fast paths: reactor {reactor} ({fast}), fast write {write}, "
             "HTTP parser {parser}, regex {regex}, compiled modules {compiled}, "
             "Twisted {twisted}{jit}{gc}",
             reactor=type(reactor).__module__ + "." + type(reactor).__name__,
             fast="on" if type(reactor).__name__ == "FastEPollReactor" else "off",
             write="on" if fastio.ENABLED else "off",
             parser=parsing.NAME, regex="RE2" if spec.re2 is not None else "linear_re",
             compiled=compiled.STATE, twisted=fastio.TWISTED_VERSION,
             jit=", PyPy JIT " + jit if jit else "",
             gc=", PyPy GC nursery " + nursery if pypy and nursery else "")
    if compiled.WARNING:
        log.warn("{why}", why=compiled.WARNING)   # (not "warning": the legacy log takes it)
    if pypy and not nursery:
        log.warn("PyPy without PYPY_GC_NURSERY: set PYPY_GC_NURSERY=16MB and "
                 "PYPY_GC_INCREMENT_STEP=4MB in the environment for ~30 % more "
                 "requests per second (README, Running on PyPy)")


def _check_tls(config):
    """Load the configuration's certificates and keys (``ConfigError`` for
    an unusable one), importing :mod:`tproxy.tls` only when TLS is used."""
    from tproxy.config import uses_tls
    if uses_tls(config):
        from tproxy.tls import check_tls
        check_tls(config)


def makeService(options, reactor=None):
    """
    The service of ``twistd tproxy``: a :class:`GatewayService` running the
    proxy listener (``listen``), the admin listener (``admin.listen``, with
    the status page of :mod:`tproxy.admin_page`) and one TCP listener per
    entry of ``streams`` (:class:`tproxy.stream.StreamFactory`).

    With ``"workers"`` above 1 the service is instead the parent of that
    many worker processes (:func:`tproxy.supervised.make_supervised`).

    :param options: parsed :class:`Options`.
    :param reactor: the reactor (default: the global one, as twistd runs it:
        then ``SIGUSR1`` also runs ``gateway.reopen``; tests pass theirs and
        leave the process's signals alone).
    """
    twistd = reactor is None
    jit = None
    if twistd:
        _restart_with_pypy_gc()
        _install_fast_reactor()
        jit = _tune_pypy_jit()
        from twisted.internet import reactor
        # the Redis clients' line per reconnection attempt stays out of the
        # log: tproxy logs an outage once, and once when Redis is back
        from tproxy.redis_connections import quiet_the_log
        quiet_the_log()
        # log_level: what twistd's log gets (per-client lines are "debug")
        from tproxy.log_levels import level_the_log
        level_the_log(options.config.get("log_level", "info"))
    _log_fast_paths(reactor, jit)

    if options.config.get("workers", 1) != 1:
        from tproxy.supervised import make_supervised
        return make_supervised(options, reactor, signals=twistd)

    from tproxy.admin_page import install as install_status_page
    from tproxy.gateway import Gateway
    from tproxy.listeners import listener_specs, make_factory

    if twistd:
        _freeze_loaded()
    config = options.config
    plugin_manager = options.plugin_manager
    gateway = Gateway(config, reactor, plugin_manager)
    admin = config["admin"]
    if not admin["token"] and not endpoint_is_local(admin["listen"]):
        log.warn("the admin API listens off loopback ({listen}) without a token "
                 "(admin.allow_remote_without_token): anyone who reaches it can "
                 "change routing", listen=admin["listen"])

    listeners = [(name, open_endpoint(reactor, description, tls, plugin_manager),
                  make_factory(kind, gateway, stream, tls))
                 for kind, name, description, stream, tls in listener_specs(config)]
    install_status_page(gateway, [(name, e.description, factory)
                                  for name, e, factory in listeners])
    source = getattr(options, "source", None)
    return GatewayService(gateway, listeners, signals=twistd,
                          config_path=None if source == "<built-in defaults>" else source)
