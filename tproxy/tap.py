# -*- test-case-name: tests.test_tap -*-
"""
``twistd tproxy``: the command-line options and the service wiring.

Read :func:`makeService` top to bottom for how a running tproxy is put
together: configuration, plugin manager, gateway, listeners.

A bad configuration, an unknown plugin or a listener that cannot listen
stops the process with a one-line message (``<file>: <json path>:
<problem>``) on standard error and exit status 1, never a traceback: these
are the user's mistakes, not tproxy's.  (twistd's own handling of
``usage.UsageError`` prints the whole ``--help`` text first, and on some
Twisted versions exits 0, hence ``SystemExit``.)
"""

import os
import sys

from twisted.application.service import MultiService, Service
from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python import usage

from tproxy.addresses import endpoint_is_local
from tproxy.config import ConfigError, load_config, validate_config
from tproxy.plugins import (
    available_plugins, build_plugin_manager, describe_phases, tproxy_entry_points)

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


class GatewayService(MultiService):
    """
    Runs a gateway: on start, every ``init_worker`` first, then the child
    services, then the listeners; on stop, the reverse, with a drain of the
    open connections between the listeners and the child services (see
    :meth:`stopService`).

    :param gateway: the :class:`tproxy.gateway.Gateway`.
    :param listeners: ``[(name, endpoint, factory)]``: what to listen on.
    :param signals: install a ``SIGUSR1`` handler that runs
        ``gateway.reopen`` (the access log's file reopened for logrotate)
        and a ``SIGHUP`` handler that runs :meth:`reload`; only the service
        of a real ``twistd`` run does.
    :param config_path: the configuration file :meth:`reload` reads
        (``None``: the built-in defaults).

    :ivar gateway: the gateway serving new requests (a reload replaces it).
    :ivar reloader: the :class:`tproxy.reload.Reloader`.
    """

    def __init__(self, gateway, listeners, signals=False, config_path=None):
        MultiService.__init__(self)
        self.gateway = gateway
        self.listeners = listeners
        self.signals = signals
        self.ports = []
        from tproxy.reload import Reloader
        self.reloader = Reloader(self, config_path)

    def reload(self):
        """
        Re-read the configuration file and serve new requests with it, or
        refuse it and keep the running one (see :mod:`tproxy.reload`).

        :return: a Deferred firing ``True`` (reloaded) or ``False`` (refused).
        """
        return self.reloader.reload()

    def endpoint(self, description, tls=None, plugin_manager=None):
        """The server endpoint of an endpoint string (see
        :func:`open_endpoint`)."""
        return open_endpoint(self.gateway.reactor, description, tls, plugin_manager)

    def startService(self):
        """
        Start the gateway and listen.

        A failure that happens before the reactor runs (the usual case: a port
        in use fails at once) raises ``SystemExit`` with a one-line message;
        a later one is logged and stops the reactor with exit status 1.
        """
        Service.startService(self)
        if self.signals:
            _reopen_on_sigusr1(self)
            _reload_on_sighup(self)
        early = []

        def failed(f):
            if early is not None:
                early.append(f)
            else:
                self._failed_late(f)
        d = maybeDeferred(self.gateway.start)
        d.addCallback(lambda _: [s.startService() for s in self])
        d.addCallback(lambda _: self._listen())
        d.addErrback(failed)
        early, found = None, early
        if found:
            raise SystemExit(_one_line(found[0]))

    def _listen(self):
        ds = [self._listen_one(*listener) for listener in self.listeners]
        return DeferredList(ds, fireOnOneErrback=True, consumeErrors=True).addErrback(
            lambda f: f.value.subFailure)

    def _listen_one(self, name, endpoint, factory, record=True):
        def listening(port):
            if record:
                self.ports.append(port)
            address = port.getHost()
            if hasattr(address, "port"):
                address = "{}:{}".format(address.host, address.port)
            log.info("{name} listening on {address}", name=name, address=address)
            return port

        def failed(f):
            raise _StartupError("cannot listen for the {} on {}: {}".format(
                name, endpoint.description, f.getErrorMessage()))
        return endpoint.endpoint.listen(factory).addCallbacks(listening, failed)

    def _failed_late(self, f):
        log.critical("{message}", message=_one_line(f))
        _exit_status_on_exit(1)
        reactor = self.gateway.reactor
        if reactor.running:
            reactor.stop()

    def stopService(self):
        """
        Stop gracefully, as nginx's graceful quit: stop listening; drain the
        connections open (:meth:`_drain`); then stop the child services and
        the gateway (its ``on_stop`` callbacks), and close the idle upstream
        connections.

        :return: a Deferred that fires when all is done (twistd runs this in
            a "before shutdown" trigger and waits for it before the reactor
            stops).
        """
        Service.stopService(self)
        self.gateway.serving = False   # /readyz: 503 while draining
        ports, self.ports = self.ports, []
        d = DeferredList([maybeDeferred(p.stopListening) for p in ports],
                         consumeErrors=True)
        d.addCallback(lambda _: self._drain())
        d.addCallback(lambda _: MultiService.stopService(self))
        d.addCallback(lambda _: self.reloader.stop())
        d.addCallback(lambda _: self.gateway.stop())
        d.addCallback(lambda _: self._close_pools())
        return d

    def _drainable(self):
        """``(http, streams)``: the listeners' proxy and stream factories."""
        from tproxy.http.server import ProxyFactory
        from tproxy.stream import StreamFactory
        factories = [listener[2] for listener in self.listeners] + self.reloader.leaving
        return ([f for f in factories if isinstance(f, ProxyFactory)],
                [f for f in factories if isinstance(f, StreamFactory)])

    def _drain(self):
        """
        Let the connections open finish, for at most ``shutdown_timeout``
        seconds (the listeners are closed already): an idle keep-alive HTTP
        connection closes at once, one serving requests after answering the
        requests read so far (the last response says ``Connection: close``;
        see :meth:`tproxy.http.server.ProxyFactory.drain`); a stream
        session goes on until it ends.  Whatever is left when the time is up
        is aborted; ``shutdown_timeout`` 0 aborts everything at once.

        :return: a Deferred that fires once every connection is closed.
        """
        http, streams = self._drainable()
        clock = self.gateway.reactor
        timeout = self.gateway.config.get("shutdown_timeout", 10)
        open_http = sum(f.open_connections for f in http)
        open_streams = sum(f.open_connections for f in streams)
        if not open_http and not open_streams:
            return None
        log.info("stopping: draining {http} HTTP connection(s) and {streams} stream "
                 "session(s) (shutdown_timeout {timeout} s)",
                 http=open_http, streams=open_streams, timeout=timeout)
        start = clock.seconds()
        aborted = []

        def abort():
            aborted.append((sum(f.abort() for f in http),
                            sum(f.abort() for f in streams)))

        if not timeout:
            abort()
        ds = [f.drain() for f in http] + [f.drain() for f in streams]
        done = DeferredList(ds, consumeErrors=True)
        if not aborted:
            timer = clock.callLater(timeout, abort)

            def stop_timer(result):
                if timer.active():
                    timer.cancel()
                return result
            done.addBoth(stop_timer)

        def report(_):
            if aborted:
                log.warn("stopped: {http} HTTP connection(s) and {streams} stream "
                         "session(s) aborted after shutdown_timeout ({timeout} s)",
                         http=aborted[0][0], streams=aborted[0][1], timeout=timeout)
            else:
                log.info("stopped: every connection closed in {elapsed:.3f} s",
                         elapsed=clock.seconds() - start)
        return done.addCallback(report)

    def _close_pools(self):
        """Close the idle upstream connections of the proxy listeners."""
        for f in self._drainable()[0]:
            f.pool.close()


class _StartupError(Exception):
    """A startup failure whose message says it all (no traceback needed)."""


class _Endpoint(object):
    """An endpoint and the string it came from (for messages)."""

    def __init__(self, endpoint, description):
        self.endpoint = endpoint
        self.description = description


def _one_line(f):
    if f.check(_StartupError):
        return str(f.value)
    return "tproxy failed to start: {}: {}".format(
        f.type.__name__, f.getErrorMessage())


def _reload_on_sighup(service):
    """
    Run ``service.reload`` in the reactor on ``SIGHUP`` (which would end the
    process otherwise: twistd installs no handler for it).
    """
    import signal
    signum = getattr(signal, "SIGHUP", None)
    if signum is None:  # not on Windows
        return
    reactor = service.gateway.reactor

    def reload(number, frame):
        reactor.callFromThread(service.reload)
    signal.signal(signum, reload)


def _reopen_on_sigusr1(service):
    """
    Run the current gateway's ``reopen`` in the reactor on ``SIGUSR1``
    (``callFromThread`` is what a signal handler may call), then the handler
    that was there (twistd's, which reopens its own log file when it writes
    one).
    """
    import signal
    signum = getattr(signal, "SIGUSR1", None)
    if signum is None:  # not on Windows
        return
    previous = signal.getsignal(signum)
    reactor = service.gateway.reactor

    def reopen(number, frame):
        reactor.callFromThread(lambda: service.gateway.reopen())
        if callable(previous):
            previous(number, frame)
    signal.signal(signum, reopen)


def _exit_status_on_exit(status):
    """
    Make the process exit with ``status`` once twistd is done (twistd itself
    exits 0 after the reactor stops): a last ``atexit`` hook.
    """
    import atexit

    def _exit():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    atexit.register(_exit)


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


def _log_fast_paths(reactor):
    """One line at start saying which of tproxy's fast paths are on."""
    import platform

    from tproxy import fastio
    from tproxy.http import parsing

    log.info("fast paths: reactor {reactor} ({fast}), fast write {write}, "
             "HTTP parser {parser}, Twisted {twisted}",
             reactor=type(reactor).__module__ + "." + type(reactor).__name__,
             fast="on" if type(reactor).__name__ == "FastEPollReactor" else "off",
             write="on" if fastio.ENABLED else "off",
             parser=parsing.NAME, twisted=fastio.TWISTED_VERSION)
    if (platform.python_implementation() == "PyPy"
            and not os.environ.get("PYPY_GC_NURSERY")):
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


def open_endpoint(reactor, description, tls=None, plugin_manager=None):
    """
    The server endpoint of an endpoint string, as an :class:`_Endpoint`;
    with ``tls`` (``(settings, JSON path, speaks HTTP)``, see
    :func:`tproxy.reload.listener_specs`), TLS in front of its connections,
    the ``certificate`` hook of ``plugin_manager`` choosing certificates.
    """
    from twisted.internet.endpoints import serverFromString
    return with_tls(reactor, serverFromString(reactor, description), description, tls,
                    plugin_manager)


def with_tls(reactor, endpoint, description, tls=None, plugin_manager=None):
    """``endpoint`` (a server endpoint) as an :class:`_Endpoint` named
    ``description``, with TLS in front of its connections when ``tls`` is
    given (see :func:`open_endpoint`)."""
    e = _Endpoint(endpoint, description)
    if not tls:
        return e
    from tproxy.tls import HTTP_ALPN, ServerTLS, TLSServerEndpoint
    settings, path, http = tls
    server_tls = (ServerTLS(settings, path, plugin_manager, HTTP_ALPN) if http
                  else ServerTLS(settings, path, plugin_manager))
    return _Endpoint(TLSServerEndpoint(e.endpoint, server_tls, reactor),
                     description + " (TLS)")


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
    if twistd:
        _install_fast_reactor()
        from twisted.internet import reactor
    _log_fast_paths(reactor)

    if options.config.get("workers", 1) != 1:
        from tproxy.supervised import make_supervised
        return make_supervised(options, reactor, signals=twistd)

    from tproxy.admin_page import install as install_status_page
    from tproxy.gateway import Gateway
    from tproxy.reload import listener_specs, make_factory

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
