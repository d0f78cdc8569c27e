# -*- test-case-name: tests.processes.test_workers -*-
"""
Workers on one box (``"workers": N``, ``"auto"``): the parent process.

With ``workers`` above 1, the ``twistd`` process is the *parent*: it

- opens the listeners (``listen``, ``tls.listen``, ``streams``) and never
  accepts on them itself: it hands their sockets to N worker processes
  (:mod:`tproxy.worker`), which all accept on the same sockets
  (``adoptStreamPort``; one accept queue per listener, shared);
- starts those workers by fork: each generation of workers (the first
  configuration, each reload's) has a fork server
  (:mod:`tproxy.worker_forks`, the parent's side in
  :mod:`tproxy.fork_handles`) that imported a worker's modules once and
  forks a worker for each request, the worker's sockets passed along; a
  generation without one (it could not start, or died) has its workers
  spawned, each a new Python (``reactor.spawnProcess(childFDs=...)``);
- runs the admin listener and owns the registry
  (:class:`tproxy.replica.PublishingRegistry`): registrations, heartbeats,
  TTL expiry and the cleanup timer happen once, here; each change reaches
  every worker's replica over its control channel (:mod:`tproxy.control`)
  before the admin API answers;
- relays the workers' log events to its own log (:mod:`tproxy.worker_logs`:
  twistd's ``--logfile``, standard output, ``--logger``), each tagged with
  its worker;
- supervises the workers: one that dies is replaced at once, and after a
  back-off while replacements keep dying young
  (:func:`tproxy.worker_counts.restart_delay`),
  the others untouched;
- on ``SIGTERM`` stops the admin listener, has every worker drain (each
  one stops as a single tproxy does) and closes its copies of the listening
  sockets, so that a new connection is refused once the workers stopped
  accepting; after ``shutdown_timeout`` plus :data:`KILL_GRACE` seconds a
  worker still there is killed;
- on ``SIGHUP`` validates the file, opens the new listeners, starts a new
  set of workers on the new configuration (from a new fork server: the
  code is imported anew), and once every one of them
  accepts, reloads its own gateway (admin API, registry settings) and lets
  the old workers drain: the listening sockets the new file keeps stay
  open throughout, so no connection is refused there; the parent closes
  the ones it drops at once (a connection there is refused as soon as the
  old workers stopped accepting).  A refused reload (bad file, port in use, a new
  worker that fails to start) leaves everything as it was.

The parent's own gateway runs the plugins' ``init_worker`` too (for their
admin routes, the registry's cleanup timer and the active health checks)
but serves no request; its admin API answers for the whole box
(:mod:`tproxy.box_admin`: the workers' counts, gathered ``GET`` routes,
plugins' changes made in every worker, health check results relayed).
The service tree around the :class:`Supervisor` is built by
:func:`tproxy.supervised.make_supervised`; the
parent's view of one worker is in :mod:`tproxy.worker_handles`.
"""

import os
import socket
import sys

from twisted.application.service import Service
from twisted.internet.defer import DeferredList, maybeDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from tproxy.box_admin import BoxAdmin
from tproxy.control import ControlProtocol, nonblocking
from tproxy.fork_handles import ForkServer, forking_available, how_it_ended
from tproxy.worker_forks import command as fork_server_command
from tproxy.worker_counts import STABLE_AFTER, restart_delay, worker_count
from tproxy.worker_logs import RelayedLog
from tproxy.worker_handles import (Generation, ParentChannel, WorkerHandle, WorkerProcess,
                                   open_ports)

__all__ = ["Supervisor"]

log = Logger()

#: seconds, beyond ``shutdown_timeout``, a stopping worker has before it is killed
KILL_GRACE = 5.0

#: seconds a new worker has to become ready (start or reload)
START_TIMEOUT = 60.0


class Supervisor(Service):
    """
    Starts, watches, replaces and stops the workers (see the module
    docstring).

    :param service: the parent's :class:`tproxy.gateway_service.GatewayService` (its
        gateway owns the registry and the admin API).
    :param publisher: the :class:`tproxy.replica.PublishingRegistry`.
    :param text: the configuration file's text (what the workers validate).
    :param source: its name.
    :param reactor: the reactor.
    :param argv: the worker command when a worker is spawned (default
        ``python -m tproxy.worker``, with this interpreter).
    :param fork: whether workers are forked from a fork server
        (:mod:`tproxy.worker_forks`) where the platform allows it; else each
        is spawned with ``argv``.
    """

    def __init__(self, service, publisher, text, source, reactor, argv=None, fork=True):
        self.service = service
        self.publisher = publisher
        self.reactor = reactor
        self.argv = argv or [sys.executable, "-m", "tproxy.worker"]
        self.fork = fork
        self._fork_servers = []   # ForkServers not ended
        self.stopping = False
        self.generation = None
        self.old = []            # generations whose workers drain after a reload
        self.starting = None     # the generation a reload is starting
        self._generations = 0
        self._restarts = {}      # index -> IDelayedCall
        self._first = None
        self._text = text
        self._source = source
        #: the admin API answering for the box
        self.box = BoxAdmin(self)

    # -- start ----------------------------------------------------------------------

    def startService(self):
        """Open the listeners, instrument the admin API, start the workers."""
        Service.startService(self)
        config = self.service.gateway.config
        self.generation = self._new_generation(config, self._text, self._source, {})
        self.box.instrument(self.service.gateway)
        self.service.gateway.health.observe_checks(self.box.relay_check)
        self._first = self._start_workers(self.generation)
        self._first.addErrback(self._failed_start)

    def _failed_start(self, f):
        from tproxy.gateway_service import exit_status_on_exit
        if self.stopping:
            return None
        log.critical("{message}", message=f.getErrorMessage())
        exit_status_on_exit(1)
        if self.reactor.running:
            self.reactor.stop()

    def _new_generation(self, config, text, source, keep):
        """A generation for ``config``: its listeners' ports, the ones in
        ``keep`` reused, the others opened (:func:`open_ports`)."""
        self._generations += 1
        ports = open_ports(self.reactor, config, keep)
        return Generation(self._generations, config, text, source, ports)

    def _start_workers(self, generation):
        """Start ``generation``'s fork server and its workers; a Deferred
        firing once all are ready, failing if one ends first or takes
        :data:`START_TIMEOUT`."""
        n = worker_count(generation.config)
        if self.fork and forking_available():
            forks = ForkServer(self.reactor, "generation {}".format(generation.number),
                               fork_server_command(generation.config))
            if forks.start():
                generation.forks = forks
                self._fork_servers.append(forks)
                forks.ended.addCallback(lambda _: self._fork_servers.remove(forks))
        ds = [self._spawn(i, generation).ready for i in range(n)]
        d = DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure)
        d.addTimeout(START_TIMEOUT, self.reactor)
        d.addCallback(lambda _: log.info(
            "{n} worker(s) ready (pids {pids})", n=n,
            pids=" ".join(str(h.pid) for h in generation.workers)))
        return d

    def _spawn(self, index, generation, restarts=0):
        """Start worker ``index`` of ``generation``: forked by the
        generation's fork server, or spawned (a new Python) when there is
        none; its pid is logged once known."""
        handle = WorkerHandle(index, generation)
        handle.restarts = restarts
        generation.workers.append(handle)
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        log_end, child_log_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        for end in (parent_end, child_end, log_end, child_log_end):
            end.setblocking(False)
        child_fds = {0: 0, 1: 1, 2: 2, 3: child_end.fileno()}
        handle.fds = {}
        for i, (key, port) in enumerate(sorted(generation.ports.items())):
            child_fds[4 + i] = port.fileno()
            handle.fds[key] = (4 + i, int(port.socket.family))
        handle.log_fd = 4 + len(generation.ports)
        child_fds[handle.log_fd] = child_log_end.fileno()
        channel = ParentChannel(self, handle)
        protocol = WorkerProcess(self, handle)

        def spawn():
            try:
                return self.reactor.spawnProcess(
                    protocol, self.argv[0], self.argv + ["--control", "3"],
                    env=dict(os.environ), childFDs=child_fds)
            finally:
                child_end.close()
                child_log_end.close()

        def started(process):
            child_end.close()
            child_log_end.close()
            handle.pid = process.pid
            log.info("worker {index} started (pid {pid})", index=index, pid=handle.pid)

        class _Factory(Factory):
            def buildProtocol(self, addr):
                return ControlProtocol(channel)

        class _LogFactory(Factory):
            def buildProtocol(self, addr):
                handle.log = RelayedLog(handle)
                return handle.log
        nonblocking(self.reactor.adoptStreamConnection, parent_end.fileno(), socket.AF_UNIX,
                    _Factory())
        nonblocking(self.reactor.adoptStreamConnection, log_end.fileno(), socket.AF_UNIX,
                    _LogFactory())
        parent_end.close()
        log_end.close()
        forks = generation.forks
        if forks is not None and forks.usable:
            handle.process = forks.fork(protocol, [child_fds[fd] for fd in sorted(child_fds)
                                                   if fd > 2], spawn, started)
        else:
            handle.process = spawn()
            started(handle.process)
        return handle

    # -- a worker ended -------------------------------------------------------------

    def _ended(self, handle, reason):
        if handle.log is not None:
            handle.log.read_now()     # (its last lines before its end)
        was = handle.state
        handle.state = "ended"
        how = how_it_ended(reason)
        if not handle.ready.called:
            handle.ready.errback(RuntimeError(
                "worker {} (pid {}) ended before it was ready ({})".format(
                    handle.index, handle.pid, how)))
        gen = handle.generation
        if gen is not self.generation or self.stopping or was == "stopping":
            if handle in gen.workers:
                gen.workers.remove(handle)
            log.info("worker {index} (pid {pid}) ended ({how})", index=handle.index,
                     pid=handle.pid, how=how)
            handle.ended.callback(None)
            self._forget_old(gen)
            if not gen.workers and gen is not self.generation and gen.forks is not None:
                gen.forks.close()    # a refused reload's, an old one's
            return
        handle.ended.callback(None)
        gen.workers.remove(handle)
        if was != "ready" and not handle.restarts:
            return    # a first start that failed: _start_workers' Deferred says so
        lived = (0 if handle.started_at is None
                 else self.reactor.seconds() - handle.started_at)
        young = 0 if lived >= STABLE_AFTER else handle.restarts
        delay = restart_delay(young)
        if delay:
            log.warn("worker {index} (pid {pid}) died ({how}); starting another in "
                     "{delay} s", index=handle.index, pid=handle.pid, how=how, delay=delay)
        else:
            log.warn("worker {index} (pid {pid}) died ({how}); starting another",
                     index=handle.index, pid=handle.pid, how=how)

        def restart():
            self._restarts.pop(handle.index, None)
            if self.stopping or gen is not self.generation:
                return
            new = self._spawn(handle.index, gen, young + 1)
            new.ready.addErrback(lambda f: log.error("{message}", message=f.getErrorMessage()))
        self._restarts[handle.index] = self.reactor.callLater(delay, restart)

    def _forget_old(self, gen):
        """A previous generation whose last worker ended: forget it."""
        if gen in self.old and not gen.workers:
            self.old.remove(gen)

    def _close_ports(self, gen, keep):
        """Close the parent's copies of ``gen``'s listening sockets but those
        in ``keep`` (as nginx's master): once ``gen``'s workers, told to stop,
        stop accepting, a connection is refused, not queued for no one."""
        kept = set(id(p) for p in keep)
        for port in gen.ports.values():
            if id(port) not in kept and port.connected and not port.disconnecting:
                port.stopListening()

    # -- stop -----------------------------------------------------------------------

    def stopService(self):
        """Have every worker drain and exit (killed after ``shutdown_timeout``
        + :data:`KILL_GRACE`); close the parent's listening sockets at once
        (:meth:`_close_ports`)."""
        Service.stopService(self)
        self.stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts = {}
        handles = self.live_workers()
        if self.starting is not None:
            # a reload's workers, starting: they stop too (and the reload
            # gives up: see reload)
            handles += [h for h in self.starting.workers
                        if h.state != "ended" and h not in handles]
        for h in handles:
            h.state = "stopping" if h.state != "ended" else h.state
            h.signal("TERM")
        for gen in [self.generation, self.starting] + self.old:
            if gen is not None:
                self._close_ports(gen, keep=())
        timeout = self.service.gateway.config.get("shutdown_timeout", 10) + KILL_GRACE

        def kill():
            for h in handles:
                if h.state != "ended":
                    log.warn("worker {index} (pid {pid}) still running after {timeout} s: "
                             "killed", index=h.index, pid=h.pid, timeout=timeout)
                    h.signal("KILL")
        timer = self.reactor.callLater(timeout, kill)
        d = DeferredList([h.ended for h in handles], consumeErrors=True)

        def done(_):
            if timer.active():
                timer.cancel()
            log.info("every worker stopped")
            # (the fork servers end at once: they have no worker left)
            return DeferredList([f.stop(KILL_GRACE) for f in list(self._fork_servers)])
        return d.addCallback(done)

    def live_workers(self):
        """The handles of the workers not ended (of every generation, the
        current one first), by index: in that order on the status page."""
        gens = ([self.generation] if self.generation else []) + self.old
        return [h for g in gens for h in sorted(g.workers, key=lambda h: h.index)
                if h.state != "ended"]

    # -- reload ---------------------------------------------------------------------

    def reload(self, config, plugin_manager, text, source, reload_parent):
        """
        Replace the workers by a set running ``config`` (see the module
        docstring); ``reload_parent()`` reloads the parent's gateway once
        they are ready (a Deferred firing ``True`` or ``False``).

        :return: a Deferred firing ``True`` (reloaded) or ``False``.
        """
        from tproxy.gateway_service import one_line
        try:
            gen = self._new_generation(config, text, source, self.generation.ports)
        except Exception as e:
            log.error("reload refused, the running configuration is kept: {error}",
                      error=str(e))
            return succeed(False)
        old = self.generation
        self.starting = gen

        def abandon():
            if self.stopping:
                return    # (stopService stops its workers and closes its ports)
            for h in list(gen.workers):
                h.state = "stopping"
                h.signal("KILL")
            self._close_ports(gen, keep=old.ports.values())

        def refused(f):
            abandon()
            if self.stopping:
                log.info("reload abandoned: tproxy is stopping")
            else:
                log.error("reload refused, the running configuration is kept: {error}",
                          error=one_line(f, "the new configuration"))
            return False

        def parent(_):
            return maybeDeferred(reload_parent).addCallback(swap)

        def swap(ok):
            if not ok:
                abandon()
                return False
            self.generation = gen
            self.box.instrument(self.service.gateway)
            self.old.append(old)
            for h in old.workers:
                if h.state != "ended":
                    h.state = "stopping"
                    h.signal("TERM")
            self._close_ports(old, keep=gen.ports.values())
            log.info("reloaded: {n} new worker(s) serve; {m} previous worker(s) finish "
                     "their requests", n=len(gen.workers), m=len(old.workers))
            self._forget_old(old)
            return True
        def settled(result):
            self.starting = None
            return result
        d = self._start_workers(gen)
        d.addCallbacks(parent, refused)
        return d.addBoth(settled)
