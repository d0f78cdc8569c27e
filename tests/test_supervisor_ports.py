"""
Tests of the listening sockets the parent of workers holds
(:class:`tproxy.supervisor.Supervisor`): when it stops, and when a reload
drops a listener, a new connection is refused at once while the workers
still drain, as with nginx, instead of waiting in an accept queue nobody
takes from (and being reset when the drain ends).

The sockets are real (whether the kernel refuses a connection is the
subject); the workers are stand-ins on a fake clock (their processes are
not: ``tests/processes/test_workers.py`` runs real ones).
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.helpers import capture_log, log_messages
from tproxy.config import validate_config
from tproxy.supervisor import KILL_GRACE, Supervisor
from tproxy.worker_handles import Generation, WorkerHandle, open_ports


class _Gateway(object):
    def __init__(self, config):
        self.config = config


class _Service(object):
    def __init__(self, config):
        self.gateway = _Gateway(config)


class _BoxAdmin(object):
    """The box's admin API's stand-in: instrumenting a gateway does nothing."""

    def instrument(self, gateway):
        pass


class _Reactor(Clock):
    """A fake clock that listens for real (the sockets are the subject)."""

    def listenTCP(self, *args, **kwargs):
        return reactor.listenTCP(*args, **kwargs)


class _Process(object):
    """A worker process's stand-in: records the signals it is sent."""

    def __init__(self, signals):
        self.signals = signals

    def signalProcess(self, name):
        self.signals.append(name)


def connects(port):
    """Whether a TCP connection to ``127.0.0.1:port`` is accepted by the
    kernel (queued on a listening socket), rather than refused."""
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return False
    finally:
        s.close()
    return True


class SupervisorPortsTests(TestCase):
    """The parent's copies of the listening sockets close when no new
    connection should be accepted there any more."""

    def setUp(self):
        self.clock = _Reactor()
        self.signals = []
        self.closing = []

    def generation(self, number, listen, keep=None):
        config = validate_config({"listen": listen, "workers": 2, "shutdown_timeout": 10},
                                 source="test")
        ports = open_ports(reactor, config, keep or {})
        for port in ports.values():
            self.track(port)
        gen = Generation(number, config, "", "test", ports)
        for index in range(2):
            handle = WorkerHandle(index, gen)
            handle.state = "ready"
            handle.ready.callback(handle)
            handle.pid = 1000 + 10 * number + index
            handle.process = _Process(self.signals)
            gen.workers.append(handle)
        return gen

    def track(self, port):
        """Keep the Deferred of ``port``'s ``stopListening`` (the socket is
        closed when it fires) in ``self.closing``; close it in the cleanup."""
        stop = port.stopListening

        def stopping():
            d = stop()
            self.closing.append(d)
            return d
        port.stopListening = stopping
        def cleanup():
            if port.connected and not port.disconnecting:
                stopping()
            return self.closed()
        self.addCleanup(cleanup)

    def closed(self):
        """A Deferred firing once every port being closed is."""
        return DeferredList(self.closing)

    def supervisor(self, gen):
        sup = Supervisor(_Service(gen.config), publisher=None, text="", source="test",
                         reactor=self.clock, fork=False)
        sup.generation = gen
        sup.box = _BoxAdmin()
        return sup

    def port_number(self, gen):
        (port,) = gen.ports.values()
        return port.getHost().port

    def test_backlog(self):
        """The listening sockets the workers share queue 511 connections (as
        nginx's), or what the endpoint string names: the ``listen()`` of each
        (a TCP port's ``backlog``)."""
        config = validate_config({
            "listen": "tcp:0:interface=127.0.0.1", "workers": 2,
            "upstreams": {"redis": {"peers": ["127.0.0.1:6379"]}}, "plugins": ["least_conn"],
            "streams": [{"listen": "tcp:0:interface=127.0.0.1:backlog=64", "group": "redis"}]},
            source="test")
        ports = open_ports(reactor, config, {})
        for port in ports.values():
            self.track(port)
        self.assertEqual(sorted(port.backlog for port in ports.values()), [64, 511])

    async def test_stopRefusesNewConnections(self):
        """``SIGTERM``: the workers are told to stop, and a connection made
        while they drain is refused (the parent's socket is closed at
        once), not queued until the last worker has ended."""
        gen = self.generation(1, "tcp:0:interface=127.0.0.1")
        number = self.port_number(gen)
        sup = self.supervisor(gen)
        self.assertTrue(connects(number), "queued while the parent holds the socket")
        stopped = sup.stopService()
        self.assertEqual(self.signals, ["TERM", "TERM"])
        await self.closed()
        self.assertFalse(connects(number), "refused while the workers drain")
        self.assertNoResult(stopped)
        for handle in list(gen.workers):
            sup._ended(handle, Failure(ProcessDone(0)))
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [], "the kill timer cancelled")

    def test_stopKillsLateWorkers(self):
        """A worker still there ``shutdown_timeout`` + :data:`KILL_GRACE`
        seconds after the stop began is killed."""
        gen = self.generation(1, "tcp:0:interface=127.0.0.1")
        sup = self.supervisor(gen)
        stopped = sup.stopService()
        first, second = gen.workers
        sup._ended(first, Failure(ProcessDone(0)))
        self.clock.advance(10 + KILL_GRACE)
        self.assertEqual(self.signals, ["TERM", "TERM", "KILL"])
        sup._ended(second, Failure(ProcessDone(0)))
        self.successResultOf(stopped)

    async def test_reloadClosesARemovedListener(self):
        """A reload that moves the proxy to another port: once the new
        workers serve, a connection to the old port is refused at once,
        while the old workers still finish their requests; the new port
        takes connections."""
        old = self.generation(1, "tcp:0:interface=127.0.0.1")
        sup = self.supervisor(old)
        new = {}

        def start_workers(gen):
            new["gen"] = gen
            return succeed(None)
        sup._start_workers = start_workers
        # (another endpoint string: another listener)
        config = validate_config({"listen": "tcp:0:interface=127.0.0.1:backlog=50",
                                  "workers": 2}, source="test")
        number = self.port_number(old)
        done = sup.reload(config, None, "", "test", lambda: True)
        self.assertTrue(self.successResultOf(done))
        for port in new["gen"].ports.values():
            self.track(port)
        self.assertEqual(self.signals, ["TERM", "TERM"], "the old workers drain")
        self.assertEqual([h.state for h in old.workers], ["stopping", "stopping"])
        await self.closed()
        self.assertFalse(connects(number), "the removed listener refuses")
        self.assertTrue(connects(self.port_number(new["gen"])))

    async def test_stopDuringAReload(self):
        """``SIGTERM`` while a reload's workers start: they are told to stop
        too (the parent waits for them), their new listener is closed, and
        the reload gives up with one line, not an error."""
        old = self.generation(1, "tcp:0:interface=127.0.0.1")
        sup = self.supervisor(old)
        new = {}

        def start_workers(gen):
            new["gen"] = gen
            for index in range(2):
                handle = WorkerHandle(index, gen)    # (not ready yet)
                handle.process = _Process(self.signals)
                gen.workers.append(handle)
            return DeferredList([h.ready for h in gen.workers], fireOnOneErrback=True,
                                consumeErrors=True)
        sup._start_workers = start_workers
        config = validate_config({"listen": "tcp:0:interface=127.0.0.1:backlog=50",
                                  "workers": 2}, source="test")
        events = capture_log(self)
        done = sup.reload(config, None, "", "test", lambda: True)
        gen = new["gen"]
        for port in gen.ports.values():
            self.track(port)
        number = self.port_number(gen)
        stopped = sup.stopService()
        self.assertEqual(self.signals, ["TERM"] * 4, "the old workers and the new")
        await self.closed()
        self.assertFalse(connects(number), "the reload's new listener is closed")
        for handle in list(old.workers):
            sup._ended(handle, Failure(ProcessDone(0)))
        self.assertNoResult(stopped)
        for handle in list(gen.workers):
            sup._ended(handle, Failure(ProcessTerminated(signal=15)))
        self.assertFalse(self.successResultOf(done))
        self.successResultOf(stopped)
        self.assertEqual(self.signals, ["TERM"] * 4, "nothing killed")
        self.assertIsNone(sup.starting)
        text = log_messages(events, "tproxy.supervisor")
        self.assertIn("reload abandoned: tproxy is stopping", text)
        self.assertEqual([t for t in text if "refused" in t], [])

    async def test_reloadKeepsASharedListener(self):
        """A listener both configurations have stays open through the
        reload and after the old workers ended."""
        old = self.generation(1, "tcp:0:interface=127.0.0.1")
        sup = self.supervisor(old)
        number = self.port_number(old)
        (key,) = old.ports
        config = validate_config({"listen": "tcp:0:interface=127.0.0.1", "workers": 2,
                                  "shutdown_timeout": 5}, source="test")
        sup._start_workers = lambda gen: succeed(None)
        self.assertTrue(self.successResultOf(
            sup.reload(config, None, "", "test", lambda: True)))
        self.assertIs(sup.generation.ports[key], old.ports[key])
        for handle in list(old.workers):
            sup._ended(handle, Failure(ProcessDone(0)))
        self.assertEqual(sup.old, [], "the old generation is gone")
        await self.closed()
        self.assertTrue(connects(number))


class LiveWorkersTests(TestCase):
    """The workers as the status page and ``/upstream/status`` list them."""

    def test_byIndex(self):
        """By index within a generation (a replacement, appended last, takes
        its index's place), the current generation first."""
        config = validate_config({"workers": 2}, source="test")
        old, gen = Generation(1, config, "", "test", {}), Generation(2, config, "", "test", {})
        for g, indexes in ((old, (0, 1)), (gen, (1, 0))):
            for index in indexes:
                g.workers.append(WorkerHandle(index, g))
        sup = Supervisor(_Service(config), publisher=None, text="", source="test",
                         reactor=Clock(), fork=False)
        sup.generation, sup.old = gen, [old]
        gen.workers[0].state = "ended"
        self.assertEqual([(h.generation.number, h.index) for h in sup.live_workers()],
                         [(2, 0), (1, 0), (1, 1)])
