# -*- test-case-name: tests.processes.test_workers_forked -*-
"""
The parent's side of its fork servers (:mod:`tproxy.worker_forks`): a
:class:`ForkServer` per generation of workers, which the supervisor
(:mod:`tproxy.supervisor`) asks for each worker of that generation, and
the :class:`ForkedProcess` it gets back, which stands for the worker as
Twisted's process object did for a spawned one: its ``pid`` (known once the
fork server has answered), ``signalProcess(name)``, and its protocol's
``processEnded(reason)`` with Twisted's ``ProcessDone`` /
``ProcessTerminated`` (:func:`exit_reason`).

When the fork server cannot start or ends before the parent closed it, the
parent says so in one line and spawns workers itself (``spawnProcess``, a
new Python): a fork request not yet answered is spawned instead, and a
worker forked already, whose status nobody will report now, is known to have
ended when its control channel closes (:meth:`ForkedProcess.channel_lost`:
its status unknown).
"""

import json
import os
import signal
import socket
import sys

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from tproxy.control import nonblocking

__all__ = ["ForkServer", "ForkedProcess", "exit_reason", "forking_available"]

#: (the supervisor's namespace: one place in the logs for the parent)
log = Logger(namespace="tproxy.supervisor")


def forking_available():
    """Whether workers can be forked here: ``os.fork``, UNIX sockets and
    descriptor passing (``SCM_RIGHTS``) for Twisted's UNIX transports."""
    if not (hasattr(os, "fork") and hasattr(socket, "AF_UNIX")
            and hasattr(socket, "SCM_RIGHTS") and hasattr(socket.socket, "recvmsg")):
        return False
    try:
        from twisted.python import sendmsg   # noqa: F401 (what sendFileDescriptor uses)
    except ImportError:
        return False
    return True


def exit_reason(status):
    """
    ``waitpid``'s ``status`` as Twisted's ``processEnded`` reason (as
    ``spawnProcess``'s processes give it): a Failure of ``ProcessDone`` for
    exit status 0, else of ``ProcessTerminated`` with ``exitCode`` or
    ``signal``.
    """
    if os.WIFEXITED(status):
        code, sig = os.WEXITSTATUS(status), None
    else:
        code, sig = None, os.WTERMSIG(status)
    if code or sig:
        return Failure(ProcessTerminated(code, sig, status))
    return Failure(ProcessDone(status))


def how_it_ended(reason):
    """``"exit status N"``, ``"signal N"``, or ``"status unknown"`` (a
    worker whose fork server ended before it)."""
    status = getattr(reason.value, "exitCode", None)
    sig = getattr(reason.value, "signal", None)
    if sig:
        return "signal {}".format(sig)
    if status is None and not isinstance(reason.value, ProcessDone):
        return "status unknown: its fork server ended first"
    return "exit status {}".format(status or 0)


class ForkedProcess(object):
    """
    A worker asked of a :class:`ForkServer`: what ``spawnProcess`` returned
    for a spawned one, as the supervisor uses it.  ``pid`` is ``None`` until
    the fork server has forked it; then ``started(self)`` is called.  Its
    ``protocol``'s ``processEnded`` is called once, when it ends.

    :param spawn: a function spawning the worker instead (``spawnProcess``),
        for when the fork server cannot fork it: it returns Twisted's
        process, which then reports the end itself.
    """

    def __init__(self, protocol, spawn, started):
        self.protocol = protocol
        self.pid = None
        #: Twisted's process, when the worker was spawned instead
        self.spawned = None
        self.ended = False
        self._spawn = spawn
        self._started = started
        self._signals = []
        self._orphan = False
        self._channel_closed = False

    def signalProcess(self, name):
        """Send the signal ``name`` (``"TERM"``, ``"KILL"``...) or number
        (before the fork server answered: once it has); raise
        ``ProcessExitedAlready`` once the worker has ended."""
        if self.spawned is not None:
            return self.spawned.signalProcess(name)
        if self.ended:
            raise ProcessExitedAlready()
        sig = name if isinstance(name, int) else getattr(signal, "SIG" + name)
        if self.pid is None:
            self._signals.append(sig)
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            raise ProcessExitedAlready()

    def channel_lost(self):
        """The worker's control channel closed: a worker whose fork server
        ended before it has ended too (its status unknown)."""
        self._channel_closed = True
        if self._orphan:
            self._end(Failure(ProcessTerminated(None, None, None)))

    # -- what the fork server says ---------------------------------------------------

    def forked(self, pid):
        """The worker has its ``pid``: say it started, send the signals
        asked for meanwhile."""
        self.pid = pid
        self._started(self)
        signals, self._signals = self._signals, []
        for sig in signals:
            try:
                self.signalProcess(sig)
            except ProcessExitedAlready:
                pass

    def _end(self, reason):
        """The worker ended (``reason``: its processEnded reason), once."""
        if not self.ended:
            self.ended = True
            self.protocol.processEnded(reason)

    def spawn_instead(self):
        """Spawn the worker (the fork server could not fork it)."""
        try:
            self.spawned = self._spawn()
        except Exception:
            log.failure("could not spawn a worker")
            self._end(Failure(ProcessTerminated(None, None, None)))
            return
        self.forked(self.spawned.pid)

    def server_gone(self):
        """The fork server ended: spawn this worker if it was not forked yet;
        else its control channel tells when it ends."""
        if self.ended:
            return
        if self.pid is None:
            self.spawn_instead()
        elif self._channel_closed:
            self._end(Failure(ProcessTerminated(None, None, None)))
        else:
            self._orphan = True


class ForkServer(object):
    """
    One generation's fork server (:mod:`tproxy.worker_forks`), as the parent
    sees it: :meth:`start` spawns it, :meth:`fork` asks it for a worker,
    :meth:`close` retires it (it ends once its last worker has ended).
    ``ended`` fires when its process has ended.

    :param reactor: the reactor.
    :param name: what the log calls it (``"generation 2"``).
    :param argv: the command (default ``python -m tproxy.worker_forks``,
        with this interpreter).
    """

    def __init__(self, reactor, name, argv=None):
        self.reactor = reactor
        self.name = name
        self.argv = argv or [sys.executable, "-m", "tproxy.worker_forks"]
        self.pid = None
        self.process = None
        self.channel = None
        self.closed = False
        self.ended = Deferred()
        self._next = 0
        self._asked = {}         # request id: ForkedProcess not ended

    @property
    def usable(self):
        """Whether :meth:`fork` may be asked (started, not closed nor gone)."""
        return self.channel is not None and not self.channel.closed and not self.closed

    def start(self):
        """Spawn the fork server; ``False`` (logged) if it cannot be."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent_end.setblocking(False)
        try:
            self.process = self.reactor.spawnProcess(
                _ServerProcess(self), self.argv[0], self.argv, env=dict(os.environ),
                childFDs={0: 0, 1: 1, 2: 2, 3: child_end.fileno()})
        except Exception as e:
            parent_end.close()
            log.error("could not start the worker fork server of {name} ({error}): its "
                      "workers are spawned", name=self.name, error=str(e))
            self.ended.callback(None)
            return False
        finally:
            child_end.close()
        self.pid = self.process.pid
        server = self

        class _Factory(Factory):
            def buildProtocol(self, addr):
                server.channel = _ForkChannel(server)
                return server.channel
        nonblocking(self.reactor.adoptStreamConnection, parent_end.fileno(), socket.AF_UNIX,
                    _Factory())
        parent_end.close()
        log.info("worker fork server of {name} started (pid {pid})", name=self.name,
                 pid=self.pid)
        return True

    def fork(self, protocol, fds, spawn, started):
        """
        Ask for a worker whose descriptors are ``fds`` (its control
        channel's end, then its listening sockets: kept open by the caller
        until ``started`` is called).

        :return: its :class:`ForkedProcess`.
        """
        process = ForkedProcess(protocol, spawn, started)
        self._next += 1
        self._asked[self._next] = process
        transport = self.channel.transport
        for fd in fds:
            transport.sendFileDescriptor(fd)
        self.channel.sendString(json.dumps(
            {"op": "fork", "id": self._next, "fds": len(fds)}).encode("utf-8"))
        return process

    def close(self):
        """Fork no more: close the socket (the fork server ends once its
        last worker has ended)."""
        self.closed = True
        if self.channel is not None and not self.channel.closed:
            self.channel.transport.loseConnection()

    def stop(self, grace):
        """:meth:`close`, and kill the fork server if it has not ended
        ``grace`` seconds later: a Deferred firing once it has ended."""
        self.close()
        if not self.ended.called and self.process is not None:
            def kill():
                try:
                    self.process.signalProcess("KILL")
                except ProcessExitedAlready:
                    pass
            timer = self.reactor.callLater(grace, kill)
            self.ended.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return self.ended

    # -- from the fork server ------------------------------------------------------------

    def received(self, message):
        """A message of the fork server: it is ready, a worker's pid, its
        end, or a fork that failed (spawned instead)."""
        if message.get("op") == "ready" and message.get("failed"):
            log.warn("the worker fork server of {name} could not import {modules}: each "
                     "worker imports them itself", name=self.name,
                     modules=", ".join(message["failed"]))
        process = self._asked.get(message.get("id"))
        if process is None:
            return
        if "status" in message:
            del self._asked[message["id"]]
            process._end(exit_reason(message["status"]))
        elif "pid" in message:
            process.forked(message["pid"])
        elif "error" in message:
            del self._asked[message["id"]]
            log.warn("the worker fork server of {name} could not fork ({error}): a worker "
                     "is spawned", name=self.name, error=message["error"])
            process.spawn_instead()

    def channel_lost(self):
        """The socket to the fork server closed: it ended, or the parent
        closed it; either way it forks no more."""
        if not self.closed:
            log.error("the worker fork server of {name} (pid {pid}) is gone: its workers "
                      "are spawned from now on (the ones it forked serve on)",
                      name=self.name, pid=self.pid)
        self.closed = True
        asked, self._asked = self._asked, {}
        for process in asked.values():
            process.server_gone()

    def server_ended(self, reason):
        """The fork server's process ended (Twisted reaped it)."""
        log.info("worker fork server of {name} (pid {pid}) ended ({how})", name=self.name,
                 pid=self.pid, how=how_it_ended(reason))
        self.ended.callback(None)


class _ForkChannel(Int32StringReceiver):
    """The parent's end of the socket to a fork server."""

    MAX_LENGTH = 1 << 20

    def __init__(self, server):
        self.server = server
        self.closed = False

    def stringReceived(self, data):
        try:
            message = json.loads(data.decode("utf-8"))
        except ValueError:
            return
        if isinstance(message, dict):
            self.server.received(message)

    def connectionLost(self, reason):
        self.closed = True
        self.server.channel_lost()


class _ServerProcess(ProcessProtocol):
    """The fork server's process: its end is logged."""

    def __init__(self, server):
        self.server = server

    def processEnded(self, reason):
        self.server.server_ended(reason)
