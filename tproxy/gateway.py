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
from tproxy.trust import TrustedProxies


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
    """

    log = Logger()

    def __init__(self, config, reactor, plugin_manager, registry=None):
        self.config = config
        self.reactor = reactor
        self.plugins = plugin_manager
        self.registry = registry if registry is not None else MemoryRegistry(
            reactor, ttl=config["registry"]["ttl"])
        self.health = HealthState(reactor, self.registry, config.get("health"))
        for group, spec in sorted(config.get("upstreams", {}).items()):
            for peer in spec["peers"]:
                self.registry.add_static(group, peer["host"], peer["port"], peer["weight"],
                                         peer.get("max_conns", 0))
            if not spec.get("routable", True) and self.registry.group(group) is not None:
                self.registry.group(group).routable = False
        self.trusted_proxies = TrustedProxies(config.get("trusted_proxies", ()))
        admin = config["admin"]
        self.admin = AdminRoutes(token=admin.get("token"), hosts=admin.get("hosts", ()),
                                 origins=admin.get("origins", ()), clock=reactor)
        probes.install(self)
        self.phases = Phases(plugin_manager)
        self.listeners = []
        self._on_stop = [self.health.stop]
        #: whether the gateway takes traffic (``/readyz``): from the end of
        #: :meth:`start` until it begins to stop
        self.serving = False
        self.started = False
        self._on_reopen = []

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

    def start(self):
        """Run every ``init_worker``; a Deferred that fires when all are done."""
        def started(result):
            self.started = self.serving = True
            return result
        return self.phases.init_worker(self).addCallback(started)

    def stop(self):
        """Run the ``on_stop`` callbacks, last registered first."""
        self.serving = False
        ds = [maybeDeferred(fn) for fn in reversed(self._on_stop)]
        self._on_stop = []
        return DeferredList(ds, consumeErrors=True)
