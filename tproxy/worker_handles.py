# -*- test-case-name: tests.processes.test_workers -*-
"""
The parent's view of its worker processes (:mod:`tproxy.supervisor`): a
:class:`WorkerHandle` per process (its state, its signals, the Deferreds of
its readiness and end), the :class:`Generation` of workers it belongs to
(one configuration, the listening ports they accept on, the plugins' admin
changes to replay, its fork server), the :class:`WorkerProcess` that
reports its end (Twisted's for a spawned worker, the fork server's for a
forked one: :mod:`tproxy.fork_handles`), and the
:class:`ParentChannel` that answers its control channel
(:mod:`tproxy.control`): the configuration, the listening sockets, the
registry and health state to start from; and :func:`open_ports`, the
listening ports a generation's workers accept on, which the parent holds.
"""

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger

from tproxy.box_admin import COUNTS_TIMEOUT, _checks_state
from tproxy.replica import snapshot

__all__ = ["WorkerHandle", "Generation", "WorkerProcess", "ParentChannel", "open_ports"]

#: (the supervisor's namespace: one place in the logs for the parent)
log = Logger(namespace="tproxy.supervisor")


class WorkerHandle(object):
    """One worker process, as the parent sees it."""

    def __init__(self, index, generation):
        self.index = index
        self.generation = generation
        self.pid = None
        self.process = None
        self.channel = None
        #: the :class:`tproxy.worker_logs.RelayedLog` of its log events
        self.log = None
        #: the descriptor of their socket, in the worker
        self.log_fd = None
        self.state = "starting"     # ready, stopping, ended
        self.started_at = None
        self.ready = Deferred()
        self.ended = Deferred()
        self.restarts = 0

    def signal(self, name):
        """Send ``name`` (``"TERM"``, ``"KILL"`` or a signal number)."""
        if self.process is not None and self.state != "ended":
            try:
                self.process.signalProcess(name)
            except ProcessExitedAlready:
                pass

    def as_dict(self):
        """The worker as the box's admin API shows it."""
        return {"worker": self.index, "pid": self.pid, "state": self.state,
                "generation": self.generation.number}


class Generation(object):
    """A configuration the workers run: its text, its listening ports, and
    the plugins' admin changes made since it started (replayed to a worker
    started later)."""

    def __init__(self, number, config, text, source, ports):
        self.number = number
        self.config = config
        self.text = text
        self.source = source
        self.ports = ports    # {listener key text: port}
        self.workers = []
        self.journal = []
        #: its :class:`tproxy.fork_handles.ForkServer` (``None``: workers spawned)
        self.forks = None


class WorkerProcess(ProcessProtocol):
    """A worker's process: its end is told to the supervisor."""

    def __init__(self, supervisor, handle):
        self.supervisor = supervisor
        self.handle = handle

    def processEnded(self, reason):
        self.supervisor._ended(self.handle, reason)


class ParentChannel(object):
    """The parent's handler of one worker's control channel."""

    def __init__(self, supervisor, handle):
        self.supervisor = supervisor
        self.handle = handle
        self.protocol = None

    def control_connected(self, protocol):
        self.protocol = protocol

    def control_hello(self, message):
        handle = self.handle
        handle.pid = message.get("pid")
        handle.channel = self.protocol
        gen = handle.generation
        publisher = self.supervisor.publisher
        publisher.channels.append(self.protocol)
        package = {"worker": handle.index, "config": gen.text, "source": gen.source,
                   "fds": dict(handle.fds), "log": handle.log_fd,
                   "registry": snapshot(publisher.backend) if publisher.replicates else None,
                   # a shared registry that Redis does not answer: what it holds
                   "held": None if publisher.replicates else publisher.backend.held_state(),
                   "health": _checks_state(self.supervisor.service.gateway.registry),
                   "admin": list(gen.journal), "ejected": []}
        before = self._predecessor()
        if before is None:
            return package
        # a reload's worker: the passive ejections of the worker it replaces
        # (of the same index), as one process keeps them across a reload
        d = before.channel.call("counts", health=True)
        d.addTimeout(COUNTS_TIMEOUT, self.supervisor.reactor)

        def ejected(rows):
            package["ejected"] = [row[:3] + row[6:8] for row in rows
                                  if len(row) > 7 and row[6]["ejected_for"] > 0]
            return package
        return d.addCallbacks(ejected, lambda f: package)

    def _predecessor(self):
        """The serving worker of the current generation that this one, of a
        reload's generation, replaces (the same index), or ``None``."""
        current = self.supervisor.generation
        if current is None or current is self.handle.generation:
            return None
        for h in current.workers:
            if (h.index == self.handle.index and h.state == "ready"
                    and h.channel is not None and not h.channel.closed):
                return h
        return None

    def control_ready(self, message):
        handle = self.handle
        if handle.log is not None:
            handle.log.read_now()     # (the lines it logged before: first)
        if handle.state == "starting":
            handle.state = "ready"
            handle.started_at = self.supervisor.reactor.seconds()
            handle.ready.callback(handle)

    def control_lost(self, reason):
        channels = self.supervisor.publisher.channels
        if self.protocol in channels:
            channels.remove(self.protocol)
        # (a forked worker whose fork server is gone: the sign of its end)
        lost = getattr(self.handle.process, "channel_lost", None)
        if lost is not None:
            lost()


def open_ports(reactor, config, keep):
    """
    The listening ports of ``config``'s listeners but the admin API's,
    ``{listener key text: port}``, held for the workers (not accepting): the
    ports in ``keep`` (same key) reused, the others opened.

    :raises tproxy.gateway_service.StartupError: one cannot be opened (those
        opened are closed again).
    """
    from tproxy.gateway_service import StartupError
    from tproxy.listeners import listener_key, listener_specs, server_endpoint
    ports = {}
    opened = []
    for kind, name, description, stream, tls in listener_specs(config):
        if kind == "admin":
            continue
        key = " ".join(listener_key(kind, description, tls))
        if key in keep:
            ports[key] = keep[key]
            continue
        try:
            port = _listen_now(server_endpoint(reactor, description))
        except Exception as e:
            for p in opened:
                p.stopListening()
            raise StartupError("cannot listen for the {} on {}: {}".format(
                name, description, e))
        address = port.getHost()
        log.info("{name} listening on {address} (accepted by the workers)", name=name,
                 address="{}:{}".format(address.host, address.port)
                 if hasattr(address, "port") else address)
        ports[key] = port
        opened.append(port)
    return ports


class _Held(Factory):
    """The factory of a port the parent holds open for its workers."""

    noisy = False

    def logPrefix(self):
        """(Twisted's line when the port opens: ``... starting on PORT``.)"""
        return "the workers' listener"


def _listen_now(endpoint):
    """Listen on ``endpoint`` at once (TCP, UNIX: their ``listen`` is
    synchronous) without accepting: the workers accept."""
    from twisted.python.failure import Failure
    found = []
    endpoint.listen(_Held()).addBoth(found.append)
    if not found:
        raise RuntimeError("the endpoint did not listen at once")
    if isinstance(found[0], Failure):
        raise found[0].value
    port = found[0]
    port.stopReading()
    return port
