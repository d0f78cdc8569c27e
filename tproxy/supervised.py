# -*- test-case-name: tests.processes.test_workers -*-
"""
The service tree of a ``twistd tproxy`` with workers (``"workers"`` above
1), built by :func:`make_supervised`: the parent's
:class:`tproxy.gateway_service.GatewayService`, which runs the admin listener only, with
a :class:`tproxy.supervisor.Supervisor` child that runs the workers; and
what a reload (``SIGHUP``, ``POST /reload``) does there
(:class:`_SupervisorReloader`).
"""

from twisted.internet.defer import succeed
from twisted.logger import Logger

from tproxy.config import ConfigError, read_config

__all__ = ["make_supervised"]

#: (the supervisor's namespace: one place in the logs for the parent)
log = Logger(namespace="tproxy.supervisor")


class _SupervisorReloader(object):
    """
    The parent's :class:`tproxy.reload.Reloader` stand-in: a reload replaces
    the workers (:meth:`Supervisor.reload`), then reloads the parent's own
    gateway with ``inner`` (a ``Reloader`` of the admin listener only).
    """

    def __init__(self, supervisor, inner):
        self.supervisor = supervisor
        self.inner = inner
        self.busy = False

    @property
    def leaving(self):
        return self.inner.leaving

    def stop(self):
        return self.inner.stop()

    def reload(self):
        from tproxy.plugins import build_plugin_manager
        from tproxy.tap import _check_tls
        if self.busy:
            log.warn("reload refused: a reload is already in progress")
            return succeed(False)
        if not self.inner.service.running:
            log.warn("reload refused: tproxy is stopping")
            return succeed(False)
        path = self.inner.path
        try:
            text, config = read_config(path)
            plugin_manager = build_plugin_manager(config, source=path or "<built-in defaults>")
            _check_tls(config)
        except ConfigError as e:
            if e.source is None and path is not None:
                e.source = path     # (a certificate's problem: as at start)
            log.error("reload refused, the running configuration is kept: {error}",
                      error=str(e))
            return succeed(False)
        self.busy = True

        def done(result):
            self.busy = False
            return result
        d = self.supervisor.reload(
            config, plugin_manager, text, path or "<built-in defaults>",
            lambda: self.inner.reload(loaded=(config, plugin_manager)))
        return d.addBoth(done)


def make_supervised(options, reactor, signals):
    """
    The service of a ``twistd tproxy`` whose configuration asks for more
    than one worker: a :class:`tproxy.gateway_service.GatewayService` running the admin
    listener only, with a :class:`Supervisor` child that runs the workers.
    """
    from tproxy.admin_page import install as install_status_page
    from tproxy.gateway import Gateway
    from tproxy.registry import MemoryRegistry
    from tproxy.listeners import listener_specs, make_factory
    from tproxy.reload import Reloader
    from tproxy.gateway import make_registry
    from tproxy.replica import PublishingRegistry, SharedRegistryPublisher
    from tproxy.supervisor import Supervisor
    from tproxy.gateway_service import GatewayService, open_endpoint

    config = options.config
    source = getattr(options, "source", None)
    path = None if source in (None, "<built-in defaults>") else source
    text, _ = read_config(path)
    if config["registry"].get("backend", "memory") == "memory":
        registry = publisher = PublishingRegistry(
            MemoryRegistry(reactor, ttl=config["registry"]["ttl"]), reactor)
    else:
        # a shared registry (Redis): the parent and every worker are
        # instances of the fleet, each with its own replica of the store
        registry = make_registry(config, reactor)
        publisher = SharedRegistryPublisher(registry)
    gateway = Gateway(config, reactor, options.plugin_manager, registry=registry)
    gateway.role = "supervisor"

    def admin_only(config):
        return [s for s in listener_specs(config) if s[0] == "admin"]
    listeners = [(name, open_endpoint(reactor, description, tls, options.plugin_manager),
                  make_factory(kind, gateway, stream, tls))
                 for kind, name, description, stream, tls in admin_only(config)]
    install_status_page(gateway, [(name, e.description, factory)
                                  for name, e, factory in listeners])
    service = GatewayService(gateway, listeners, signals=signals, config_path=path)
    service.reloader = Reloader(service, path, specs=admin_only)
    supervisor = Supervisor(service, publisher, text, source or "<built-in defaults>",
                            reactor)
    supervisor.setServiceParent(service)
    service.supervisor = supervisor
    service.reloader = _SupervisorReloader(supervisor, service.reloader)
    return service
