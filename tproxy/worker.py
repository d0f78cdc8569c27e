# -*- test-case-name: tests.processes.test_workers -*-
"""
A worker of a multi-worker tproxy: :func:`main` with ``--control FD``, run
in a process forked by its generation's fork server
(:mod:`tproxy.worker_forks`), or ``python -m tproxy.worker --control FD``
spawned by the parent (:mod:`tproxy.supervisor`) when there is none; never
by hand.

Its life:

1. connect the control channel (the file descriptor ``FD``, one end of a
   UNIX socket pair) and say ``hello``; the parent answers with the
   configuration's text, the worker's index, the listening sockets' file
   descriptors (inherited), the descriptor of the socket its log events go
   to (:mod:`tproxy.worker_logs`: they reach the parent's log) and a
   snapshot of the registry (with a registry shared through Redis, none:
   the worker reads Redis, unless the parent finds it away, and then what
   the parent holds);
2. build a :class:`tproxy.gateway.Gateway` on a
   :class:`tproxy.replica.ReplicaRegistry`, run every ``init_worker``, adopt
   the listening sockets (``adoptStreamPort``: every worker accepts on the
   same sockets, the parent's), and tell the parent it is ``ready``;
3. serve, applying the registry changes the parent sends and answering its
   ``counts`` questions;
4. on ``SIGTERM`` (or ``SIGINT``, ``SIGQUIT``, or when the parent is gone:
   the control channel closes) stop as a single tproxy does: stop
   accepting, drain, ``on_stop``, exit.  ``SIGUSR1`` reopens the access log; ``SIGHUP`` is
   ignored (the parent reloads by replacing its workers).
"""

import json
import os
import signal
import socket
import sys

from twisted.logger import Logger

from tproxy.control import nonblocking
from tproxy.gateway_service import GatewayService, with_tls

__all__ = ["main"]

log = Logger()


class _AdoptedEndpoint(object):
    """A server endpoint listening on an inherited listening socket."""

    def __init__(self, reactor, fd, family):
        self.reactor = reactor
        self.fd = fd
        self.family = family

    def listen(self, factory):
        from twisted.internet.defer import fail, succeed
        # (the socket's non-blocking flag is shared by every worker: one
        # cleared would make every worker's next accept wait, deaf to SIGTERM)
        try:
            port = nonblocking(self.reactor.adoptStreamPort, self.fd, self.family, factory)
        except Exception:
            return fail()
        os.close(self.fd)   # adoptStreamPort duplicated it
        return succeed(port)


def adopted_endpoint(reactor, fd, family, description, tls=None, plugin_manager=None):
    """
    The :class:`tproxy.gateway_service._Endpoint` of the inherited listening socket
    ``fd`` (of address family ``family``) for the listener ``description``,
    with TLS in front as :func:`tproxy.gateway_service.open_endpoint` does.
    """
    return with_tls(reactor, _AdoptedEndpoint(reactor, fd, family), description, tls,
                    plugin_manager)


class Worker(object):
    """
    The worker's side of the control channel, and its service once it has
    its configuration.

    :param reactor: the reactor.
    :param relay: the :class:`tproxy.worker_logs.LogRelay` of its log
        events (the parent says where it takes them), or ``None``.
    """

    def __init__(self, reactor, relay=None):
        self.reactor = reactor
        self.relay = relay
        self.channel = None
        self.registry = None
        self.service = None
        self.index = None
        self.stopping = False

    def control_connected(self, channel):
        """The control channel is up: ask for the configuration."""
        self.channel = channel
        d = channel.call("hello", pid=os.getpid())
        d.addCallback(self._start)
        d.addErrback(self._failed)

    def _start(self, package):
        from tproxy.admin_page import install as install_status_page
        from tproxy.config import validate_config
        from tproxy.gateway import Gateway
        from tproxy.log_levels import set_log_level
        from tproxy.plugins import build_plugin_manager
        from tproxy.listeners import listener_key, listener_specs, make_factory
        from tproxy.replica import ReplicaRegistry

        if self.relay is not None:
            self.relay.start(package.get("log"))
        self.index = package["worker"]
        source = package["source"]
        config = validate_config(json.loads(package["config"]), source=source)
        set_log_level(config["log_level"])
        plugin_manager = build_plugin_manager(config, source=source)
        if package["registry"] is None:
            # a shared registry (Redis): this worker is an instance of the
            # fleet, with its own replica of the store
            gateway = Gateway(config, self.reactor, plugin_manager)
            self.registry = gateway.registry
            # (Redis away: the registrations and routes the parent holds)
            self.registry.seed(package.get("held"))
        else:
            self.registry = ReplicaRegistry(self.reactor, ttl=config["registry"]["ttl"])
            gateway = Gateway(config, self.reactor, plugin_manager, registry=self.registry)
            self.registry.apply(package["registry"]["peers"], package["registry"]["groups"])
        gateway.role = "worker"
        gateway.worker_index = self.index
        # (the active checks' changes: the parent, which probes, logs them)
        gateway.health.relayed = True
        for group, host, port, check_ok, active_down, last_check in package.get("health", ()):
            peer = _peer(gateway, group, host, port)
            if peer is not None:
                gateway.health.restore_checks(peer, check_ok, active_down, last_check)
        for group, host, port, health, in_a_row in package.get("ejected", ()):
            peer = _peer(gateway, group, host, port)
            if peer is not None:
                gateway.health.restore_ejection(peer, health, in_a_row)
        fds = package["fds"]
        listeners = []
        for kind, name, description, stream, tls in listener_specs(config):
            if kind == "admin":
                continue
            fd, family = fds[" ".join(listener_key(kind, description, tls))]
            listeners.append((name, adopted_endpoint(self.reactor, fd, family, description,
                                                     tls, plugin_manager),
                              make_factory(kind, gateway, stream, tls)))
        # the status page's endpoints, which the parent's gathers
        install_status_page(gateway, [(name, e.description, factory)
                                      for name, e, factory in listeners])
        self.service = _WorkerService(gateway, listeners, ready=self._ready,
                                      before=lambda: self._replay(package.get("admin", ())))
        self.service.startService()
        self.reactor.addSystemEventTrigger("before", "shutdown", self._stop)

    def _ready(self, _):
        log.info("worker {index} (pid {pid}) ready", index=self.index, pid=os.getpid())
        if self.relay is not None:
            self.relay.flush()     # (the parent reads the lines before the notice)
        self.channel.notify("ready", pid=os.getpid())

    def _failed(self, f):
        if f.check(SystemExit):    # a start-up failure, said in one line
            log.critical("worker could not start: {message}", message=str(f.value))
        else:
            log.failure("worker could not start", f)
        self._exit(1)

    def _exit(self, status):
        from tproxy.gateway_service import exit_status_on_exit
        exit_status_on_exit(status)
        if self.reactor.running:
            self.reactor.stop()

    def _stop(self):
        self.stopping = True
        if self.service is not None and self.service.running:
            return self.service.stopService()
        return None

    # -- the control operations ------------------------------------------------------

    def control_registry(self, message):
        """Apply the parent's registry changes (then acknowledge them)."""
        self.registry.apply(message["peers"], message.get("groups"))
        return True

    def _replay(self, entries):
        """Make the plugins' admin changes the parent made before this
        worker started (after ``init_worker``, before listening)."""
        from twisted.internet.defer import ensureDeferred

        async def replay():
            for entry in entries:
                await self.control_admin({"request": entry})
        return ensureDeferred(replay())

    def _dispatch(self, entry):
        """The parent's admin request ``entry`` (method, path, args, body,
        content_type) answered by this worker's admin routes: a Deferred
        firing with the :class:`tproxy.admin.AdminResponse`."""
        from urllib.parse import urlencode

        from tproxy.admin import AdminRequest
        admin = self.service.gateway.admin
        headers = {"host": "localhost"}
        if entry.get("content_type"):
            headers["content-type"] = entry["content_type"]
        if admin.token:
            headers["authorization"] = "Bearer " + admin.token
        request = AdminRequest.from_uri(
            entry["method"], entry["path"] + "?" + urlencode(entry.get("args") or {}),
            headers, entry.get("body", "").encode("latin-1"))
        return admin.dispatch(request)

    def control_admin(self, message):
        """Make a plugin's admin change the parent accepted (``PUT
        /routes/{name}``...) here too; the result is the status."""
        return self._dispatch(message["request"]).addCallback(lambda response: response.status)

    def control_ask(self, message):
        """Answer a ``GET`` the parent gathers from every worker (a route
        registered with ``gather``): the whole response."""
        def whole(response):
            return {"status": response.status, "headers": response.headers,
                    "body": response.body.decode("latin-1")}
        return self._dispatch(message["request"]).addCallback(whole)

    def control_health(self, message):
        """The parent's active check results (the workers do not probe):
        each worker's health state takes them as its own."""
        if self.service is None:
            return
        gateway = self.service.gateway
        for group, host, port, ok, detail, rise, fall in message["checks"]:
            peer = _peer(gateway, group, host, port)
            if peer is None:   # (a peer the parent has not sent yet: the next check)
                continue
            if ok is None:     # the parent's checks of the peer ended
                gateway.health.forget_checks(peer)
            else:
                gateway.health.check_result(peer, ok, detail, rise, fall)

    def control_counts(self, message):
        """The in-flight and total requests per peer, and this worker's
        health object of each peer it holds down or has seen fail, with its
        ejections in a row, when the parent asks (``health``: a parent of
        before did not, and took six fields)."""
        from tproxy.replica import counts
        if self.registry is None:
            return []
        rows = counts(self.registry)
        if message.get("health") and self.service is not None:
            gateway = self.service.gateway
            for row in rows:
                peer = _peer(gateway, row[0], row[1], row[2])
                if peer is not None and (not row[5] or peer.health is not None):
                    row.append(gateway.health.as_dict(peer))
                    # (the ejections in a row: a reload's worker goes on from them)
                    row.append(peer.health.ejections if peer.health is not None else 0)
        return rows

    def control_lost(self, reason):
        """The parent is gone (or closed the channel): stop."""
        if not self.stopping and self.reactor.running:
            log.info("worker {index}: the control channel closed; stopping",
                     index=self.index)
            self.reactor.stop()


def _peer(gateway, group, host, port):
    """The peer ``host:port`` of ``group`` in ``gateway``'s registry, or ``None``."""
    g = gateway.registry.group(group)
    return None if g is None else g.peers.get((host, port))


class _WorkerService(GatewayService):
    """A :class:`tproxy.gateway_service.GatewayService` that says when it listens."""

    def __init__(self, gateway, listeners, ready, before=None):
        GatewayService.__init__(self, gateway, listeners)
        self._on_ready = ready
        self._before = before

    def _listen(self):
        from twisted.internet.defer import maybeDeferred
        d = maybeDeferred(self._before or (lambda: None))
        d.addCallback(lambda _: GatewayService._listen(self))
        return d.addCallback(self._on_ready)


def worker_observer(observer):
    """``observer`` as a worker's log has it: without the Redis clients'
    reconnection noise, and at the configuration's ``log_level``
    (:mod:`tproxy.log_levels`; set once the configuration arrives)."""
    from tproxy.log_levels import level_filter
    from tproxy.redis_connections import quiet
    return level_filter(quiet(observer))


def main(argv=None):
    """Run a worker (see the module docstring)."""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m tproxy.worker")
    parser.add_argument("--control", type=int, required=True)
    args = parser.parse_args(argv)

    from tproxy.tap import _install_fast_reactor, _tune_pypy_jit
    _install_fast_reactor()
    _tune_pypy_jit()    # (a worker is a new Python, or a fork of one that never set it)
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from tproxy.worker_logs import LogRelay, worker_system

    observer = textFileLogObserver(sys.stdout)
    pid = os.getpid()

    def tagged(event):
        # (an event not relayed: the worker's standard output shows which
        # worker said what)
        event["log_system"] = worker_system(pid, event.get("log_system"),
                                            event.get("log_namespace"), event.get("log_level"))
        observer(event)
    relay = LogRelay(reactor, tagged)
    globalLogBeginner.beginLoggingTo([worker_observer(relay)], redirectStandardIO=False)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    from tproxy.control import ControlProtocol
    from tproxy.stop_signals import stop_once_on_signals
    worker = Worker(reactor, relay)

    class _ChannelFactory(Factory):
        def buildProtocol(self, addr):
            return ControlProtocol(worker)

    def start():
        nonblocking(reactor.adoptStreamConnection, args.control, socket.AF_UNIX,
                     _ChannelFactory())
        os.close(args.control)
    reactor.callWhenRunning(start)
    reactor.callWhenRunning(_reopen_later, worker)
    reactor.callWhenRunning(stop_once_on_signals, reactor)
    reactor.run()
    relay.close()
    sys.stdout.flush()


def _reopen_later(worker):
    """``SIGUSR1``: reopen the access log (once the gateway exists)."""
    if not hasattr(signal, "SIGUSR1"):
        return
    reactor = worker.reactor

    def reopen(number, frame):
        if worker.service is not None:
            reactor.callFromThread(lambda: worker.service.gateway.reopen())
    signal.signal(signal.SIGUSR1, reopen)


if __name__ == "__main__":
    # this module's names, not __main__'s (log namespaces, classes)
    from tproxy.worker import main as _main
    _main()
