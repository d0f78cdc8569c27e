"""
A real ``redis-server`` for the tests that need one: started on a free
loopback port without persistence, stopped by its PID in the test's cleanup
(never skipped in CI: ``.ci/run`` installs it).  The tests that neither stop
it nor change its configuration share one per test process
(:func:`shared_redis`), emptied for each.
"""

import atexit
import os
import select
import shutil
import signal
import subprocess
import sys

import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SkipTest

from tests.helpers import temp_path, until

__all__ = ["RedisServer", "logged", "run_redis", "shared_redis", "start_redis",
           "redis_command"]


class _Ended(ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.output = b""

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


class RedisServer(object):
    """A running ``redis-server``: its ``port``; :meth:`stop` ends it."""

    def __init__(self, process, proto, port):
        self.process = process
        self.proto = proto
        self.port = port

    async def stop(self):
        """SIGTERM to its PID; wait until it has ended."""
        if not self.proto.ended.called and self.process.pid is not None:
            self.process.signalProcess("TERM")
        await self.proto.ended


async def run_redis(case, port=None, bind="127.0.0.1"):
    """
    Start ``redis-server`` on ``bind:port`` (``127.0.0.1`` and a free port by default),
    without persistence, stopped (SIGTERM to its PID) in ``case``'s cleanup;
    returns the :class:`RedisServer` once it is ready.  A free port found by
    the test may be taken by another process before the server binds it:
    when the server ends at once, it tries again on another port (twice at
    most).
    """
    server = _redis_server(case)
    for attempt in range(3):
        chosen = case.closed_port() if port is None else port
        proto = _Ended()
        # a directory of its own: a replica writes the data it received
        # there, and a server loads what it finds at start; its periodic
        # tasks run 100 times a second (--hz; 10 by default): what the tests
        # wait for from it comes sooner (the 21 tests that start one: 3.8 ->
        # 2.4 s of wall time, under load)
        directory = os.path.abspath(temp_path(case))
        os.makedirs(directory)
        process = reactor.spawnProcess(proto, server, [
            server, "--port", str(chosen), "--bind", bind, "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", directory,
            "--repl-diskless-sync-delay", "0", "--hz", "100"], env=dict(os.environ))
        running = RedisServer(process, proto, chosen)
        case.addCleanup(running.stop)
        await until(lambda: (b"Ready to accept connections" in proto.output
                             or proto.ended.called), 30,
                    message="redis-server to start")
        if not proto.ended.called:
            return running
        if port is not None:
            break
    case.fail("redis-server did not start:\n" + proto.output.decode("utf-8", "replace"))


async def start_redis(case, port=None):
    """:func:`run_redis`; returns its port."""
    return (await run_redis(case, port)).port


#: [the shared server's ``subprocess.Popen``, its port]
_SHARED = []


def _redis_server(case):
    """The path of ``redis-server`` (not installed: the test is skipped,
    or fails in CI, whose script installs it)."""
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("CI"):
            case.fail("redis-server is not installed (.ci/run installs it)")
        raise SkipTest("redis-server is not installed")
    return server


def _die_with_parent():
    """(In the child, before ``exec``.)  Ended by the kernel when the test
    process that started it ends, whatever way it ends (Linux)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except Exception:
        pass


@atexit.register
def _stop_shared():
    if _SHARED:
        process = _SHARED[0]
        del _SHARED[:]
        if process.poll() is None:
            process.terminate()
            process.wait()


async def shared_redis(case):
    """
    The ``redis-server`` of this test process shared by the tests that
    neither stop it nor change its configuration (a :class:`RedisServer`
    whose :meth:`~RedisServer.stop` is not to be called): started at the
    first test's need (outside the reactor: a process of the test process,
    ended when it exits), emptied for each test (``FLUSHALL``, ``SCRIPT
    FLUSH``: what a new server holds).  A server started for each test cost
    ~10 ms of wall time and ~15 ms of CPU.
    """
    if _SHARED and _SHARED[0].poll() is not None:
        _SHARED.clear()
    if not _SHARED:
        server = _redis_server(case)
        for attempt in range(3):
            port = case.closed_port()
            directory = temp_path(case)
            os.makedirs(directory)
            # (--hz 100: the SIGTERM that ends it at the test process's exit,
            # which the run's end waits for, is acted on within 10 ms, not
            # up to 100 ms)
            process = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--dir", directory,
                 "--hz", "100"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            output = b""
            while b"Ready to accept connections" not in output:
                if not select.select([process.stdout], [], [], 30)[0]:
                    break
                data = os.read(process.stdout.fileno(), 65536)
                if not data:
                    break
                output += data
            # (nothing is read from it any more; redis-server ignores SIGPIPE)
            process.stdout.close()
            if b"Ready to accept connections" in output:
                _SHARED[:] = [process, port]
                break
            if process.poll() is None:
                process.kill()
            process.wait()
        else:
            case.fail("redis-server did not start:\n" + output.decode("utf-8", "replace"))
    process, port = _SHARED
    await redis_command(port, "FLUSHALL")
    await redis_command(port, "SCRIPT", "FLUSH")
    return RedisServer(None, None, port)


async def redis_command(port, *command):
    """Run one command on a connection of its own."""
    conn = await txredisapi.Connection("127.0.0.1", port, reconnect=False)
    try:
        return await conn.execute_command(*command)
    finally:
        await conn.disconnect()


def logged(case, namespace, text):
    """
    A Deferred of the first message of ``namespace`` containing ``text``
    logged from now on (fired in the next reactor turn, not from inside the
    code that logs).
    """
    d = defer.Deferred()
    seen = []

    def observe(event):
        if event.get("log_namespace") == namespace and not seen:
            message = formatEvent(event)
            if text in message:
                seen.append(message)
                reactor.callLater(0, d.callback, message)
    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return d
