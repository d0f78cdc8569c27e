# -*- test-case-name: tests.test_testing,tests.test_tap -*-
"""
The gateway: what a running tproxy is made of, handed to plugins in
``init_worker`` (Kong's PDK, OpenResty's ``ngx``).
"""

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

from tproxy import probes
from tproxy.admin import AdminRoutes
from tproxy.health import HealthState
from tproxy.phases import Phases
from tproxy.registry import MemoryRegistry
from tproxy import trust


class Gateway(object):
    """
    One running gateway.

    :ivar reactor: the reactor (``IReactorTime`` + ``IReactorTCP`` ...); use it
        as the clock of timers so that tests can pass a ``Clock``.
    :ivar config: the validated configuration (a ``dict`` with defaults filled).
    :ivar registry: the :class:`tproxy.registry.IRegistry` of upstream groups.
    :ivar health: the :class:`tproxy.health.IHealth` state of its peers
        (balancers read ``peer.healthy``; tproxy reports every attempt's
        outcome to it).
    :ivar admin: the :class:`tproxy.admin.AdminRoutes` of the admin listener.
    :ivar phases: the :class:`tproxy.phases.Phases` driver.
    :ivar plugins: the plugin manager (``pluggy.PluginManager``).
    :ivar trusted_proxies: the :class:`tproxy.trust.TrustedProxies` of the
        configuration's ``trusted_proxies``: ``ctx.request.remote_addr in
        gateway.trusted_proxies`` tells whether a request came through one
        (whose headers, ``X-Request-ID`` say, may then be believed).
    :ivar listeners: the factories serving traffic for this gateway, as they
        are made: HTTP ``tproxy.http.server.ProxyFactory`` (``kind``
        ``"http"``; ``open_connections``, ``requests`` read so far) and
        ``tproxy.stream.StreamFactory`` (``kind`` ``"stream"``;
        ``open_connections``: the sessions open, ``group``).  Read them when
        asked (a metrics scrape), not per request.
    :param previous: the gateway this one replaces (a reload, see
        :mod:`tproxy.reload`): its registry, with the registrations made at
        run time, goes on; the static peers are updated to this
        configuration's ``upstreams`` (a peer in both keeps its counts).
    """

    log = Logger()

    #: ``"single"`` (one process), ``"worker"`` (one of ``workers``; see
    #: :mod:`tproxy.supervisor`) or ``"supervisor"`` (their parent: it runs
    #: the admin API and owns the registry, and serves no request)
    role = "single"
    #: the worker's index (``0`` to ``workers - 1``) in a worker, else ``None``
    worker_index = None

    def __init__(self, config, reactor, plugin_manager, registry=None, previous=None):
        self.config = config
        self.reactor = reactor
        self.plugins = plugin_manager
        if previous is not None:
            # a reload: the registry and the peers' health go on
            self.role, self.worker_index = previous.role, previous.worker_index
            self.registry = previous.registry
            self.registry.ttl = config["registry"]["ttl"]
            _warn_registry_changes(previous.config, config)
            if self.role == "single":
                _warn_workers_change(previous.config, config)
            self.health = previous.health
            self.health.configure(config.get("health"))
            _update_static(self.registry, previous.config, config)
        else:
            self.registry = registry if registry is not None else make_registry(
                config, reactor)
            self.health = HealthState(reactor, self.registry, config.get("health"))
            for group, spec in sorted(config.get("upstreams", {}).items()):
                for peer in spec["peers"]:
                    self.registry.add_static(group, peer["host"], peer["port"],
                                             peer["weight"], peer.get("max_conns", 0))
            _set_routable(self.registry, config)
        self.trusted_proxies = trust.configured(config)
        admin = config["admin"]
        self.admin = AdminRoutes(token=admin.get("token"), hosts=admin.get("hosts", ()),
                                 origins=admin.get("origins", ()), clock=reactor)
        probes.install(self)
        self.phases = Phases(plugin_manager)
        self.listeners = []
        #: whether :meth:`stop` stops ``health`` (its timers): the gateway
        #: serving owns it; a reload hands it over (:meth:`take_over`)
        self.owns_health = previous is None
        self._on_stop = [self._stop_health, self._stop_registry]
        #: whether the gateway takes traffic (``/readyz``): from the end of
        #: :meth:`start` until it begins to stop
        self.serving = False
        self.started = False
        self._on_reopen = []
        self._subscribed = []   # (source, listener) the plugins subscribed in start()
        self._own_listeners = None   # (own_listener's, made when first asked)

    def _stop_health(self):
        if self.owns_health:
            self.health.stop()

    def _stop_registry(self):
        stop = getattr(self.registry, "stop", None)
        if self.owns_health and stop is not None:
            return stop()
        return None

    def own_listener(self, host, port):
        """
        The name of this configuration's listener (``"proxy"``, ``"admin
        API"``, ``"stream of group db (streams[0])"``) that a connection to
        ``host:port`` would reach, or ``None``: a peer there would be tproxy
        itself (a loop, or the admin API served to every client).  ``host``
        normalised as peers' are (:func:`tproxy.addresses.normalise_host`);
        known from the addresses alone: the listener's interface, or a
        loopback address for one listening on every address.
        """
        reached = self._own_listeners
        if reached is None:
            from tproxy.listeners import own_listener_of
            reached = self._own_listeners = own_listener_of(self.config)
        return reached(host, port)

    def take_over(self, previous):
        """This gateway replaces ``previous`` (a reload is done): the shared
        health state is stopped by this one's :meth:`stop` from now on."""
        previous.owns_health = False
        self.owns_health = True

    def on_stop(self, fn):
        """Call ``fn()`` (which may return a Deferred) when the gateway stops."""
        self._on_stop.append(fn)

    def on_reopen(self, fn):
        """
        Call ``fn()`` when the process is asked to reopen its log files
        (:meth:`reopen`: ``SIGUSR1`` under ``twistd``, as logrotate sends).
        """
        self._on_reopen.append(fn)

    def reopen(self):
        """Run the :meth:`on_reopen` callbacks (a failure is logged, and the
        others still run)."""
        for fn in self._on_reopen:
            try:
                fn()
            except Exception:
                self.log.failure("reopening with {fn!r} failed", fn=fn)

    def _sources(self):
        """What plugins subscribe to in ``init_worker`` (the registry, the
        health state): unsubscribed again when this gateway stops."""
        return [s for s in (self.registry, self.health)
                if s is not None and hasattr(s, "subscribers")]

    def start(self):
        """Run every ``init_worker``; a Deferred that fires when all are done."""
        if self.role != "worker":
            from tproxy.plugin_checks import plugin_warnings
            # (not a field named "warning": twisted.logger's legacy
            # observers take such an event for a Python warning)
            for path, problem in plugin_warnings(self.config, self.plugins):
                self.log.warn("{path}: {problem}", path=path, problem=problem)
        before = {id(s): set(map(id, s.subscribers())) for s in self._sources()}

        def started(result):
            self.started = self.serving = True
            return result

        def subscribed(result):
            self._subscribed = [(source, listener) for source in self._sources()
                                for listener in source.subscribers()
                                if id(listener) not in before.get(id(source), ())]
            return result
        registry_start = getattr(self.registry, "start", None)
        if registry_start is not None and not self.started:
            # a shared registry: serve with its state (or without, once it
            # gave up waiting for its store)
            d = maybeDeferred(registry_start)
            d.addCallback(lambda _: self.phases.init_worker(self))
        else:
            d = self.phases.init_worker(self)
        return d.addBoth(subscribed).addCallback(started)

    def stop(self):
        """Run the ``on_stop`` callbacks, last registered first; then stop
        telling the registry and health listeners this gateway's plugins
        subscribed (a reloaded gateway's registry and health state go on)."""
        self.serving = False
        ds = [maybeDeferred(fn) for fn in reversed(self._on_stop)]
        self._on_stop = []
        subscribed, self._subscribed = self._subscribed, []
        for source, listener in subscribed:
            source.unsubscribe(listener)
        return DeferredList(ds, consumeErrors=True)


def make_registry(config, reactor):
    """The registry of ``registry.backend``: in memory, or shared in Redis."""
    settings = config["registry"]
    if settings.get("backend", "memory") == "redis":
        from tproxy.registry_redis import RedisRegistry
        return RedisRegistry(reactor, settings)
    return MemoryRegistry(reactor, ttl=settings["ttl"])


#: the registry settings a reload cannot change (the registry goes on)
_REGISTRY_AT_START = ("backend", "url", "key_prefix", "timeout", "retry_interval",
                      "resync_interval")


def _warn_registry_changes(old_config, new_config):
    old, new = old_config.get("registry", {}), new_config.get("registry", {})
    for key in _REGISTRY_AT_START:
        if old.get(key) != new.get(key):
            Gateway.log.warn("registry.{key} changed: it takes effect at the next "
                             "restart (a reload keeps the registry and its "
                             "connection)", key=key)


def _warn_workers_change(old_config, new_config):
    """A reload of a single process (started with ``"workers": 1``) cannot
    become a parent of workers: say so, instead of a silent ``changed
    workers`` (the parent of workers applies a new count at a reload)."""
    workers = new_config.get("workers", 1)
    if workers != 1 and workers != old_config.get("workers", 1):
        Gateway.log.warn("workers changed to {workers}: a process started with "
                         "\"workers\": 1 starts workers at the next restart (a "
                         "reload keeps it one process)", workers=workers)


def _static_peers(config):
    return {(group, peer["host"], peer["port"]): (peer["weight"], peer.get("max_conns", 0))
            for group, spec in config.get("upstreams", {}).items()
            for peer in spec["peers"]}


def _set_routable(registry, config):
    """``upstreams.NAME.routable`` on the registry's static groups."""
    for name, spec in config.get("upstreams", {}).items():
        group = registry.group(name)
        if group is not None:
            group.routable = spec.get("routable", True)


def _update_static(registry, old_config, new_config):
    """Make ``registry``'s static peers those of ``new_config``: add the new
    ones, remove the dropped ones, change weights; leave the others alone."""
    old, new = _static_peers(old_config), _static_peers(new_config)
    for key in sorted(set(old) - set(new)):
        registry.remove_static(*key)
    for key in sorted(new):
        group, host, port = key
        if key not in old:
            registry.add_static(group, host, port, *new[key])
        elif old[key] != new[key]:
            registry.register(group, host, port, *new[key])
    _set_routable(registry, new_config)
