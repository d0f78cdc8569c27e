"""
Workers forked from a fork server (:mod:`tproxy.worker_forks`,
:mod:`tproxy.fork_handles`): the framing, the exit statuses, what the parent
does with the fork server's messages, without a box.  The fork server in a
real box (:class:`tests.processes.test_workers.WorkersTests`): the workers
its children, a replacement forked, a reload's new fork server and the old
one's end, the fork server killed (the workers spawned) and the next
reload's; the parent killed: :class:`tests.processes.test_workers.SharedRegistryTests`.
What it preloads (no reactor, no thread; a module that installs a reactor
refused) is checked in the fresh Python of
:meth:`tests.test_public.ExportsTests.test_noReactor`.
"""

import json
import os
import signal
import subprocess
import sys

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial.unittest import TestCase

from tests.processes.test_workers import BOUND
from tproxy.fork_handles import ForkedProcess, exit_reason, how_it_ended
from tproxy.worker_forks import (MAX_MESSAGE, Frames, _builtins, command, encode,
                                 preload_names)


class FramesTests(TestCase):
    """The fork server's frames are the control channel's
    (``Int32StringReceiver``'s: a 32-bit big-endian length, then JSON)."""

    def test_fromTwisted(self):
        """What the parent's Twisted side sends, the fork server decodes,
        however the bytes arrive."""
        sender = Int32StringReceiver()
        transport = StringTransport()
        sender.makeConnection(transport)
        sender.sendString(json.dumps({"op": "fork", "id": 1, "fds": 3}).encode("utf-8"))
        sender.sendString(b'{"op": "fork", "id": 2, "fds": 1}')
        data = transport.value()
        frames = Frames()
        got = []
        for i in range(len(data)):
            got.extend(frames.feed(data[i:i + 1]))
        self.assertEqual(got, [{"op": "fork", "id": 1, "fds": 3},
                               {"op": "fork", "id": 2, "fds": 1}])

    def test_toTwisted(self):
        """What the fork server sends, the parent's Twisted side decodes."""
        received = []
        receiver = Int32StringReceiver()
        receiver.stringReceived = lambda s: received.append(json.loads(s.decode("utf-8")))
        receiver.makeConnection(StringTransport())
        receiver.dataReceived(encode({"id": 1, "pid": 42}) + encode({"id": 1, "status": 9}))
        self.assertEqual(received, [{"id": 1, "pid": 42}, {"id": 1, "status": 9}])

    def test_refused(self):
        """A frame too long, or not a JSON object: ``ValueError`` (the fork
        server then stops forking, as if the parent had closed)."""
        self.assertRaises(ValueError, Frames().feed, (MAX_MESSAGE + 1).to_bytes(4, "big"))
        self.assertRaises(ValueError, Frames().feed, encode([1, 2]))
        self.assertRaises(ValueError, Frames().feed, b"\0\0\0\x02{x")


class ExitReasonTests(TestCase):
    """``waitpid``'s status as the reason Twisted gives a spawned process's
    ``processEnded``, and as the supervisor's log says it."""

    def test_statuses(self):
        done = exit_reason(0)
        self.assertIsInstance(done.value, ProcessDone)
        self.assertEqual((done.value.exitCode, done.value.signal), (0, None))
        failed = exit_reason(3 << 8)
        self.assertIsInstance(failed.value, ProcessTerminated)
        self.assertEqual((failed.value.exitCode, failed.value.signal), (3, None))
        killed = exit_reason(signal.SIGKILL)
        self.assertIsInstance(killed.value, ProcessTerminated)
        self.assertEqual((killed.value.exitCode, killed.value.signal), (None, 9))
        self.assertEqual([how_it_ended(r) for r in (done, failed, killed)],
                         ["exit status 0", "exit status 3", "signal 9"])

    def test_realStatus(self):
        """A real child's status (the encoding is the kernel's)."""
        child = subprocess.Popen([sys.executable, "-c", "import os; os._exit(7)"])
        pid, status = os.waitpid(child.pid, 0)
        child.returncode = 7
        self.assertEqual(how_it_ended(exit_reason(status)), "exit status 7")


class _Ended(object):
    """A process protocol recording ``processEnded``."""

    def __init__(self):
        self.reasons = []

    def processEnded(self, reason):
        self.reasons.append(reason)


class ForkedProcessTests(TestCase):
    """:class:`ForkedProcess`: what the supervisor gets instead of a spawned
    process."""

    def process(self, spawn=None):
        self.ended = _Ended()
        self.started = []
        return ForkedProcess(self.ended, spawn, self.started.append)

    def child(self):
        """A real process that runs until signalled (``cat`` of an open pipe)."""
        child = subprocess.Popen(["cat"], stdin=subprocess.PIPE)
        self.addCleanup(child.wait)
        self.addCleanup(child.stdin.close)
        return child

    def test_signalBeforeThePid(self):
        """A signal sent before the fork server answered is sent once it
        has; after the end, ``ProcessExitedAlready``."""
        p = self.process()
        child = self.child()
        p.signalProcess("TERM")
        self.assertIsNone(child.poll())
        p.forked(child.pid)
        self.assertEqual(self.started, [p])
        self.assertEqual(child.wait(BOUND), -signal.SIGTERM)
        p._end(exit_reason(signal.SIGTERM))
        self.assertRaises(ProcessExitedAlready, p.signalProcess, "KILL")
        p._end(exit_reason(0))
        self.assertEqual(len(self.ended.reasons), 1, "processEnded once")
        self.assertEqual(self.ended.reasons[0].value.signal, signal.SIGTERM)

    def test_spawnedInstead(self):
        """The fork server gone before it forked: the worker is spawned, and
        what was asked of the process goes to the spawned one."""
        class Spawned(object):
            pid = 12345
            signals = []

            def signalProcess(self, name):
                self.signals.append(name)
        spawned = Spawned()
        p = self.process(spawn=lambda: spawned)
        p.signalProcess("TERM")
        p.server_gone()
        self.assertEqual((p.pid, p.spawned, self.started), (12345, spawned, [p]))
        p.signalProcess("KILL")
        self.assertEqual(spawned.signals, [signal.SIGTERM, "KILL"])
        p.channel_lost()
        self.assertEqual(self.ended.reasons, [], "Twisted reports a spawned one's end")

    def test_orphan(self):
        """The fork server gone after it forked: the worker's end is its
        control channel's, its status unknown (either order)."""
        for first in ("server", "channel"):
            p = self.process()
            p.forked(12345)
            if first == "server":
                p.server_gone()
                self.assertEqual(self.ended.reasons, [])
                p.channel_lost()
            else:
                p.channel_lost()
                self.assertEqual(self.ended.reasons, [], "the fork server will say")
                p.server_gone()
            [reason] = self.ended.reasons
            self.assertIsInstance(reason.value, ProcessTerminated)
            self.assertEqual(how_it_ended(reason),
                             "status unknown: its fork server ended first")

    def test_channelFirst(self):
        """A worker's control channel may close before the fork server
        reports its status: the status is what is reported."""
        p = self.process()
        p.forked(12345)
        p.channel_lost()
        p._end(exit_reason(0))
        self.assertEqual([type(r.value) for r in self.ended.reasons], [ProcessDone])


class _NoSpawn(object):
    """A reactor whose ``spawnProcess`` fails (as with too many processes)."""

    def spawnProcess(self, *args, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")


class ForkServerStartTests(TestCase):
    """A fork server that cannot be spawned: one line, and no fork server
    (the supervisor spawns the generation's workers)."""

    def test_cannotStart(self):
        from twisted.logger import capturedLogs
        from tproxy.fork_handles import ForkServer
        server = ForkServer(_NoSpawn(), "generation 1")
        with capturedLogs() as events:
            self.assertFalse(server.start())
        self.assertFalse(server.usable)
        self.assertTrue(server.ended.called)
        [event] = events
        self.assertEqual(event["log_format"].split(" (")[0],
                         "could not start the worker fork server of {name}")
        self.assertEqual((event["name"], event["error"]),
                         ("generation 1", "[Errno 11] Resource temporarily unavailable"))


class ForkServerMessagesTests(TestCase):
    """What the parent does with the fork server's messages."""

    def test_preloadFailures(self):
        """Modules the fork server could not import are named once (the
        workers import them, and fail there if they must)."""
        from twisted.logger import capturedLogs
        from tproxy.fork_handles import ForkServer
        server = ForkServer(_NoSpawn(), "generation 3")
        with capturedLogs() as events:
            server.received({"op": "ready", "pid": 42, "failed": []})
            server.received({"op": "ready", "pid": 42, "failed": ["a.b", "c"]})
        self.assertEqual([(e["name"], e["modules"]) for e in events],
                         [("generation 3", "a.b, c")])


class PreloadNamesTests(TestCase):
    """What a generation's fork server imports: the built-in plugins its
    configuration names, and every module of the other packages (that
    importing them installs no reactor and starts no thread:
    :meth:`tests.test_public.ExportsTests.test_noReactor`)."""

    def test_command(self):
        """The parent names the configuration's built-ins on the fork
        server's command line; the fork server reads them back."""
        from tproxy.config import validate_config
        config = validate_config({"plugins": [
            "router", "registry", "least_conn", "tests.plugins_for_tests",
            {"name": "router", "settings": {}, "routes": ["a"]}]})
        argv = command(config)
        self.assertEqual(argv[:3], [sys.executable, "-m", "tproxy.worker_forks"])
        self.assertEqual(argv[3:], ["--builtins", "least_conn,registry,router"])
        self.assertEqual(_builtins(argv[3:]), ["least_conn", "registry", "router"])
        self.assertEqual(_builtins(command(validate_config({"plugins": []}))[3:]), [])
        self.assertIsNone(_builtins([]), "no option: every built-in")

    def test_named(self):
        """The built-ins named, and their helpers through them, not the
        others; the other packages whole."""
        names = preload_names(["router", "registry"])
        self.assertIn("tproxy.builtins.router", names)
        self.assertIn("tproxy.builtins.registry", names)
        for other in ("tproxy.builtins.jwt_auth", "tproxy.builtins._jwt_keys",
                      "tproxy.builtins.prometheus"):
            self.assertNotIn(other, names)
        for module in ("tproxy.worker", "tproxy.http.server", "tproxy.http.pyparser",
                       "tproxy.stream.session", "tproxy.routing.table"):
            self.assertIn(module, names)
        self.assertEqual(preload_names([]), [n for n in names if not n.startswith(
            "tproxy.builtins.")], "none named: none preloaded")

    def test_every(self):
        """Without names: every module of the built-ins' package."""
        names = preload_names()
        for module in ("tproxy.builtins.jwt_auth", "tproxy.builtins._jwt_keys",
                       "tproxy.builtins.prometheus", "tproxy.builtins.router"):
            self.assertIn(module, names)
