# -*- test-case-name: tests.test_reload -*-
"""
Reload: re-read the configuration file (``SIGHUP`` under ``twistd``) and
swap the running gateway for a new one without refusing a connection.

A reload builds a new *generation*: a :class:`tproxy.gateway.Gateway` with
its own plugin manager (new plugin instances), phases, admin routes and
configuration.  What goes on from one generation to the next:

- the registry (the same object): registrations made through the admin API
  survive, and the counts of requests in flight stay exact; the static peers
  are updated to the new ``upstreams``, and plugins subscribed by the old
  generation stop hearing from it once it has retired;
- every listener whose endpoint string did not change: its port stays open
  (no connection is refused) and its factory serves the new generation; a
  TLS one serves new handshakes with the certificates and ``certificate``
  hooks of the new generation (its files read again, as ``nginx -s reload``).

The steps, in order; the first failure stops the reload, logs why, and the
old generation keeps running untouched:

1. read and validate the file and its plugins, load the certificates of
   the TLS listeners (the same ``<file>: <json path>: <problem>`` messages
   as at start);
2. build the new gateway and run its ``init_worker`` hooks;
3. listen on the endpoints that are new;
4. swap: the listeners kept serve the new gateway, ``admin`` included,
   the TLS ones with the new certificates;
   listeners no longer configured stop listening and drain (as on
   ``SIGTERM``, their connections finish what they were doing);
5. the old generation *retires*: its requests and stream sessions in flight
   finish on it; once the last has ended its ``on_stop`` callbacks run (its
   plugins' timers stop).

Which generation serves what: an HTTP request is bound to the gateway that
was current when its head was read (``ctx.gateway``), so a keep-alive
connection's next request uses the new configuration and no connection has
to be closed; a stream session, one TCP connection, is bound to the gateway
current when it was accepted.  Binding per request rather than per
connection means a reload never has to close idle keep-alive connections
(whose clients may be sending a request as they are closed).
"""

from twisted.internet.defer import DeferredList, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tproxy.config import ConfigError, load_config, validate_config
from tproxy.gateway import Gateway, _update_static
from tproxy.listeners import kind_of, listen_path, listener_key, listener_specs, make_factory
from tproxy.log_levels import set_log_level
from tproxy.plugins import build_plugin_manager

__all__ = ["Reloader", "describe_changes", "in_flight", "retire"]

log = Logger()

#: seconds between the first two looks at whether a retiring generation's
#: requests have all ended (only while one retires: nothing per request);
#: the interval then doubles up to :data:`RETIRE_POLL_MAX`, so that
#: long-lived stream sessions cost little to watch
RETIRE_POLL = 0.1
RETIRE_POLL_MAX = 2.0


class Reloader(object):
    """
    Reloads a :class:`tproxy.gateway_service.GatewayService` from a configuration file.

    :param service: the running ``GatewayService``.
    :param path: the configuration file (``None``: the built-in defaults).
    :param entry_points: passed to
        :func:`tproxy.plugins.build_plugin_manager` (tests: ``[]``).
    :param specs: the listeners of a configuration (default
        :func:`listener_specs`; the parent of workers: its admin listener only).
    """

    def __init__(self, service, path, entry_points=None, specs=None):
        self.service = service
        self.path = path
        self.entry_points = entry_points
        self.specs = specs or listener_specs
        self.busy = False
        #: ``{gateway: LoopingCall}``: generations whose requests are finishing
        self.retiring = {}
        #: factories of listeners a reload removed, until their connections close
        self.leaving = []

    def _load(self):
        if self.path is None:
            source = "<built-in defaults>"
            config = validate_config({}, source=source)
        else:
            source = self.path
            config = load_config(self.path)
        kwargs = {} if self.entry_points is None else {"entry_points": self.entry_points}
        return config, build_plugin_manager(config, source=source, **kwargs)

    def reload(self, loaded=None):
        """
        Reload now.

        :param loaded: ``(config, plugin_manager)`` already read and
            validated (default: read the file now).
        :return: a Deferred firing ``True`` once the new configuration serves,
            ``False`` if it was refused (the old one goes on).
        """
        if self.busy:
            log.warn("reload refused: a reload is already in progress")
            return succeed(False)
        if not self.service.running:
            log.warn("reload refused: tproxy is stopping")
            return succeed(False)
        current = {(kind_of(f), e.description): (name, e, f)
                   for name, e, f in self.service.listeners}
        try:
            config, plugin_manager = loaded or self._load()
            # every certificate is loaded before anything switches: one
            # that cannot be used refuses the reload
            prepared = self._prepare(config, plugin_manager, current)
        except ConfigError as e:
            if e.source is None and self.path is not None:
                e.source = self.path
            log.error("reload refused, the running configuration is kept: {error}",
                      error=str(e))
            return succeed(False)
        self.busy = True
        old = self.service.gateway
        old_ttl = old.registry.ttl
        new = Gateway(config, old.reactor, plugin_manager, previous=old)
        plan = []      # (kind, name, endpoint, factory, stream, kept)
        retls = []     # (name, endpoint, its new ServerTLS): kept TLS listeners
        for kind, name, stream, tls, found, endpoint, server_tls in prepared:
            if found is not None:
                plan.append((kind, name, found[1], found[2], stream, True))
                if server_tls is not None:
                    retls.append((name, found[1], server_tls))
            else:
                plan.append((kind, name, endpoint, make_factory(kind, new, stream, tls),
                             stream, False))
        removed = list(current.values())
        from tproxy.admin_page import install as install_status_page
        install_status_page(new, [(name, e.description, f) for _, name, e, f, _, _ in plan])
        opened = []

        def listen(_):
            ds = []
            for kind, name, endpoint, factory, stream, kept in plan:
                if not kept:
                    ds.append(self.service._listen_one(name, endpoint, factory,
                                                       record=False).addCallback(opened.append))
            return DeferredList(ds, fireOnOneErrback=True, consumeErrors=True).addErrback(
                lambda f: f.value.subFailure)

        def failed(f):
            for port in opened:
                port.stopListening()
            _update_static(new.registry, new.config, old.config)
            new.registry.ttl = old_ttl
            old.health.configure(old.config.get("health"))
            new.stop()
            self.busy = False
            log.error("reload refused, the running configuration is kept: {error}",
                      error=_message(f))
            return False

        def swap(_):
            self.busy = False
            self._swap(old, new, plan, removed, opened, retls)
            return True
        d = new.start()
        d.addCallback(listen)
        d.addCallbacks(swap, failed)
        return d

    def _prepare(self, config, plugin_manager, current):
        """
        ``[(kind, name, stream, tls, kept listener or None, new endpoint or
        None, new ServerTLS or None)]``: for each listener of ``config``, the
        running listener it keeps (popped from ``current``) and, when that
        one speaks TLS, a :class:`tproxy.tls.ServerTLS` loaded from the new
        settings, with the ``certificate`` hooks of ``plugin_manager``; else
        a new endpoint.

        :raises ConfigError: for a certificate or key that cannot be used,
            or a listener turning between plain and TLS on an endpoint.
        """
        prepared = []
        for kind, name, description, stream, tls in self.specs(config):
            found = current.pop(listener_key(kind, description, tls), None)
            endpoint = server_tls = None
            if found is None:
                if listener_key(kind, description, not tls) in current:
                    raise ConfigError((tls[1] if tls else listen_path(kind, stream, config),
                                       "the {} on {} would turn {}: that needs a restart "
                                       "of tproxy".format(
                                           name, description,
                                           "to TLS" if tls else "to plain TCP")))
                endpoint = self.service.endpoint(description, tls, plugin_manager)
            elif tls and hasattr(found[1].endpoint, "use"):
                from tproxy.tls import HTTP_ALPN, ServerTLS
                settings, path, http = tls
                server_tls = ServerTLS(settings, path, plugin_manager,
                                       HTTP_ALPN if http else None)
            prepared.append((kind, name, stream, tls, found, endpoint, server_tls))
        return prepared

    def _swap(self, old, new, plan, removed, opened, retls=()):
        service = self.service
        for name, endpoint, server_tls in retls:
            endpoint.endpoint.use(server_tls)
        # log_level: twistd's log follows the new file from now on
        set_log_level(new.config.get("log_level", "info"))
        for kind, name, endpoint, factory, stream, kept in plan:
            if not kept:
                continue
            if kind == "proxy":
                factory.use(new)
                new.listeners.append(factory)
            elif kind == "stream":
                factory.use(new, stream)
                new.listeners.append(factory)
            else:
                factory.routes = new.admin
        service.ports.extend(opened)
        service.listeners = [(name, endpoint, factory)
                             for _, name, endpoint, factory, _, _ in plan]
        service.gateway = new
        new.take_over(old)
        for name, endpoint, factory in removed:
            self._close_listener(name, endpoint, factory)
        pending = self._in_flight(old)
        changes = describe_changes(old.config, new.config)
        if retls:
            changes += "; TLS certificates reloaded on " + ", ".join(
                "{} ({})".format(endpoint.description, name) for name, endpoint, _ in retls)
        # Twisted's ssl: endpoint reads its files once, when it is made
        stale = ["{} ({})".format(endpoint.description, name)
                 for _, name, endpoint, _, _, kept in plan
                 if kept and endpoint.description.startswith("ssl:")]
        if stale:
            changes += ("; the ssl: endpoint string keeps the certificate read at its start "
                        "(a tls object reloads its files) on " + ", ".join(stale))
        log.info("reloaded: {changes}; {in_flight} request(s) and session(s) in flight "
                 "finish on the previous configuration",
                 changes=changes, in_flight=len(pending))
        self._retire(old, pending)

    def _close_listener(self, name, endpoint, factory):
        """Stop listening on a removed listener; drain its connections."""
        service = self.service
        # (a TLS listener's port has the TLS factory wrapping ``factory``)
        for port in [p for p in service.ports
                     if factory in (getattr(p, "factory", None),
                                    getattr(getattr(p, "factory", None), "wrappedFactory", None))]:
            service.ports.remove(port)
            port.stopListening()
        log.info("{name} no longer listening on {endpoint}", name=name,
                 endpoint=endpoint.description)
        drain = getattr(factory, "drain", None)
        if drain is None:     # the admin site: its requests are short
            return
        self.leaving.append(factory)

        def drained(_):
            self.leaving.remove(factory)
            pool = getattr(factory, "pool", None)
            if pool is not None:
                pool.close()
                unsubscribe = getattr(service.gateway.registry, "unsubscribe", None)
                if unsubscribe is not None:
                    unsubscribe(pool)
        drain().addCallback(drained)

    def _in_flight(self, old):
        http, streams = self.service._drainable()
        return in_flight(old, http, streams)

    def _retire(self, old, pending):
        """Run ``old``'s ``on_stop`` once ``pending`` have ended."""
        self.retiring[old] = None    # (retire may call _retired at once)
        loop = retire(old, pending, lambda: self._retired(old))
        if old in self.retiring:
            self.retiring[old] = loop

    def _retired(self, old):
        if old not in self.retiring:    # (stop() did it)
            return None
        del self.retiring[old]
        d = old.stop()
        d.addCallback(lambda _: log.info("the previous configuration retired: its "
                                         "requests ended, its on_stop callbacks ran"))
        return d

    def stop(self):
        """
        (The service stops, its connections drained.)  Retire every old
        generation now.

        :return: a Deferred that fires when their ``on_stop`` callbacks ran.
        """
        ds = []
        for old, loop in list(self.retiring.items()):
            del self.retiring[old]
            if loop is not None and loop.running:
                loop.stop()    # (its _retired finds nothing left to do)
            ds.append(maybeDeferred(old.stop))
        return DeferredList(ds, consumeErrors=True)


def in_flight(old, http_factories, stream_factories):
    """
    The HTTP exchanges and stream sessions the gateway ``old`` is serving on
    the listeners' factories given (looked at once per reload: nothing is
    counted per request).
    """
    pending = []
    seen = set()
    for factory in http_factories:
        for conn in factory.connections:
            for ex in [conn.exchange, conn.reading] + list(conn.queue or ()):
                if (ex is not None and not ex.done and ex.ctx.gateway is old
                        and id(ex) not in seen):
                    seen.add(id(ex))
                    pending.append(ex)
    for factory in stream_factories:
        for session in factory.sessions:
            ctx = getattr(session, "ctx", None)
            if not session.done and ctx is not None and ctx.gateway is old:
                pending.append(session)
    return pending


def retire(old, pending, retired=None):
    """
    Call ``retired()`` (default: ``old.stop``, its ``on_stop`` callbacks)
    once every exchange or session of ``pending`` is done, looked at after
    :data:`RETIRE_POLL` seconds of ``old.reactor``, then at doubling
    intervals up to :data:`RETIRE_POLL_MAX`.

    :return: the running ``LoopingCall`` (stop it to give up waiting).
    """
    def check():
        pending[:] = [p for p in pending if not p.done]
        if not pending:
            loop.stop()
        else:
            loop.interval = min(loop.interval * 2, RETIRE_POLL_MAX)

    loop = LoopingCall(check)
    loop.clock = old.reactor
    loop.start(RETIRE_POLL / 2, now=True).addCallback(
        lambda _: (retired or old.stop)())
    return loop


def describe_changes(old, new):
    """
    A short text of what differs between two configurations: the listeners
    added and removed, the plugins' names, the other top-level keys changed.
    """
    parts = []
    before = {listener_key(k, d, t) for k, _, d, _, t in listener_specs(old)}
    after = {listener_key(k, d, t) for k, _, d, _, t in listener_specs(new)}
    added = sorted(after - before)
    gone = sorted(before - after)
    if added or gone:
        parts.append("listeners " + " ".join(
            ["+{} ({})".format(d, k) for k, d in added]
            + ["-{} ({})".format(d, k) for k, d in gone]))
    names_old = [p["name"] for p in old.get("plugins", ())]
    names_new = [p["name"] for p in new.get("plugins", ())]
    if names_old != names_new:
        parts.append("plugins {} -> {}".format(", ".join(names_old) or "-",
                                               ", ".join(names_new) or "-"))
    elif old.get("plugins") != new.get("plugins"):
        parts.append("plugin settings")
    keys = sorted(k for k in set(old) | set(new)
                  if k not in ("plugins", "listen", "streams") and old.get(k) != new.get(k))
    if old.get("streams") != new.get("streams") and not (added or gone):
        keys.append("streams")
    if keys:
        parts.append("changed " + ", ".join(keys))
    return "; ".join(parts) or "nothing changed"


def _message(f):
    from tproxy.gateway_service import one_line
    return one_line(f, "the new configuration")
