# -*- test-case-name: tests.test_testing,tests.test_tap -*-
"""
The gateway: what a running tproxy is made of, handed to plugins in
``init_worker`` (Kong's PDK, OpenResty's ``ngx``).
"""

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger

from tproxy.admin import AdminRoutes
from tproxy.phases import Phases
from tproxy.registry import MemoryRegistry


class Gateway(object):
    """
    One running gateway.

    :ivar reactor: the reactor (``IReactorTime`` + ``IReactorTCP`` ...); use it
        as the clock of timers so that tests can pass a ``Clock``.
    :ivar config: the validated configuration (a ``dict`` with defaults filled).
    :ivar registry: the :class:`tproxy.registry.IRegistry` of upstream groups.
    :ivar admin: the :class:`tproxy.admin.AdminRoutes` of the admin listener.
    :ivar phases: the :class:`tproxy.phases.Phases` driver.
    :ivar plugins: the plugin manager (``pluggy.PluginManager``).
    """

    log = Logger()

    def __init__(self, config, reactor, plugin_manager, registry=None):
        self.config = config
        self.reactor = reactor
        self.plugins = plugin_manager
        self.registry = registry if registry is not None else MemoryRegistry(
            reactor, ttl=config["registry"]["ttl"])
        for group, spec in sorted(config.get("upstreams", {}).items()):
            for peer in spec["peers"]:
                self.registry.add_static(group, peer["host"], peer["port"], peer["weight"])
        self.admin = AdminRoutes(token=config["admin"].get("token"))
        self.phases = Phases(plugin_manager)
        self._on_stop = []

    def on_stop(self, fn):
        """Call ``fn()`` (which may return a Deferred) when the gateway stops."""
        self._on_stop.append(fn)

    def start(self):
        """Run every ``init_worker``; a Deferred that fires when all are done."""
        return self.phases.init_worker(self)

    def stop(self):
        """Run the ``on_stop`` callbacks, last registered first."""
        ds = [maybeDeferred(fn) for fn in reversed(self._on_stop)]
        self._on_stop = []
        return DeferredList(ds, consumeErrors=True)
