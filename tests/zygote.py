"""
A fork server for the ``twistd tproxy`` processes the tests start.

Each ``twistd`` a test starts would spend ~0.25 s of CPU importing Python's,
Twisted's and tproxy's modules before it does anything the test looks at.
The fork server (a "zygote", as Android's and Chromium's) is a Python
process that imports them once, installs no reactor, and forks a child for
each start: the child takes the test's standard streams, working directory,
environment and arguments, and runs twistd's ``run()`` as ``python -c
TWISTD`` would (:data:`tests.test_tap.TWISTD`); from there on it is a
``twistd`` process of its own, with its own reactor, signals, workers
(``python -m tproxy.worker``, started by it as by any twistd) and exit
status, which the fork server reports to the test.

Not forked (a real ``python`` started instead, :func:`start`): a start
whose environment differs from the fork server's in anything but
``TPROXY_REACTOR`` (which tproxy reads when it starts, not when its modules
are imported, as ``TPROXY_PARSER`` is), and any start when the fork server
cannot run.  ``tests.test_tap.CommandLineTests.test_check`` starts a real
one (the command as a user types it).

One fork server per test run (the workers of a ``trial -jN`` share it: see
:class:`_Server`), started at the run's first fork, on a UNIX
``SOCK_SEQPACKET`` socket in ``$TMPDIR/tproxy-zygote-UID/``.  A test process
joins it with a connection that says ``{"member": true}`` and stays open;
for a start it sends, on a connection of its own, one JSON message
(``argv``, ``env``, ``cwd``) with the child's standard input, output and
error (``SCM_RIGHTS``); the server answers ``{"pid": N}`` once forked,
then ``{"status": S}`` (``waitpid``'s) when the child has ended.
"""

import atexit
import fcntl
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: what the fork server imports before it forks (no reactor: the child
#: installs its own, as ``twistd`` does)
PRELOAD = (
    "twisted.scripts.twistd", "twisted.scripts._twistd_unix", "twisted.application.app",
    "twisted.internet.endpoints", "twisted.plugin", "twisted.web.server",
    "tproxy.tap", "tproxy.gateway", "tproxy.supervisor", "tproxy.worker", "tproxy.box_admin",
    "tproxy.admin", "tproxy.admin_http", "tproxy.admin_page", "tproxy.reload",
    "tproxy.health", "tproxy.phases", "tproxy.registry", "tproxy.replica",
    "tproxy.registry_redis", "tproxy.reactor", "tproxy.fastio", "tproxy.stream",
    "tproxy.control", "tproxy.tls", "tproxy.http.server", "tproxy.http.upstream",
    "tproxy.builtins.registry", "tproxy.builtins.router", "tproxy.builtins.least_conn",
    "tproxy.builtins.access_log", "tproxy.builtins.routes", "tproxy.builtins.health_check",
    "tproxy.builtins.prometheus",
)

#: environment variables read when tproxy starts, not when it is imported:
#: a start may set them otherwise than the fork server's environment
RUNTIME_VARIABLES = ("TPROXY_REACTOR",)

#: how long a test waits for the fork server to answer (a bound for a
#: failure, never a measurement)
BOUND = 60.0


# -- the fork server ---------------------------------------------------------

def serve(path):
    """The fork server's loop, listening on the UNIX socket ``path``; ends
    once its standard input is closed (the test process that started it is
    gone) and no test process is a member any more.  A forked child returns
    from here to run ``twistd`` (:func:`_become`)."""
    import gc
    import importlib
    gc.disable()    # (what is imported lives on: one collection, before the freeze)
    for name in PRELOAD:
        importlib.import_module(name)
    # twistd's scan of its plugins, which imports the drop-ins and the
    # interfaces of their service makers (each child scans again, reading
    # the caches only)
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    list(getPlugins(IServiceMaker))
    if "twisted.internet.reactor" in sys.modules or threading.active_count() != 1:
        sys.exit("the fork server's imports installed a reactor or started a thread")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    inode = os.stat(path).st_ino
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    if hasattr(gc, "freeze"):
        gc.collect()
        gc.freeze()
    gc.enable()
    os.write(1, b"ready\n")
    children = {}
    members = set()
    started_by = [0]
    while started_by or members:
        try:
            ready = select.select([listener, wake_r] + started_by + list(members), [], [])[0]
        except InterruptedError:
            continue
        if 0 in ready and not os.read(0, 4096):
            started_by = []
        for member in members.intersection(ready):
            members.discard(member)
            member.close()
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(children)
        if listener in ready:
            conn = listener.accept()[0]
            request, fds = _receive(conn)
            if request is None or (not request.get("member") and len(fds) != 3):
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            if request.get("member"):
                members.add(conn)
                _send(conn, {"member": True})
                continue
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for sock in [listener, conn] + list(children.values()) + list(members):
                    sock.close()
                os.close(wake_r)
                os.close(wake_w)
                return request, fds
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            _send(conn, {"pid": pid})
    # (a test process that finds the path gone, or this socket closed,
    # starts another fork server)
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass
    return None


def _receive(conn):
    try:
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    except OSError:
        return None, []
    try:
        return json.loads(message.decode("utf-8")), fds
    except ValueError:
        return None, fds


def _send(conn, obj):
    try:
        conn.send(json.dumps(obj).encode("utf-8"))
    except OSError:
        pass


def _reap(children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            _send(conn, {"status": status})
            conn.close()


def _become(request, fds):
    """In the forked child: take the test's streams, directory, environment
    and arguments, and run twistd (``python -c TWISTD ARGS``)."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path_importer_cache.pop("", None)   # (the current directory: now cwd)
    sys.argv = list(request["argv"])
    from twisted.scripts.twistd import run
    run()


def main():
    forked = serve(sys.argv[1])
    if forked is not None:
        _become(*forked)
    else:
        # (the end of the run waits for this process: nothing to flush or
        # close, so no interpreter teardown of the preloaded modules, ~10-25 ms)
        os._exit(0)


# -- the tests' side ---------------------------------------------------------

class ForkedProcess(object):
    """
    A ``twistd`` forked by the fork server, as much of a
    ``subprocess.Popen`` as the tests use: ``pid``, ``stdout`` (output and
    error, a pipe), ``returncode``, ``poll``, ``wait``, ``communicate``,
    ``send_signal``, ``terminate``, ``kill``.
    """

    def __init__(self, conn, pid, stdout):
        self._conn = conn
        self.pid = pid
        self.stdout = stdout
        self.returncode = None
        self._lock = threading.Lock()

    def _status(self, timeout):
        with self._lock:
            if self.returncode is None:
                if not select.select([self._conn], [], [], timeout)[0]:
                    return None
                message = self._conn.recv(4096)
                self._conn.close()
                if not message:
                    raise RuntimeError("the fork server ended before its child %d" % self.pid)
                self.returncode = os.waitstatus_to_exitcode(json.loads(message)["status"])
            return self.returncode

    def poll(self):
        return self._status(0)

    def wait(self, timeout=None):
        if self._status(timeout) is None:
            raise subprocess.TimeoutExpired(["twistd"], timeout)
        return self.returncode

    def communicate(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        output = []
        fd = self.stdout.fileno()
        while True:
            left = None if deadline is None else max(0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                raise subprocess.TimeoutExpired(["twistd"], timeout)
            data = self.stdout.read1(65536)
            if not data:
                break
            output.append(data)
        self.stdout.close()
        self.wait(None if deadline is None else max(0, deadline - time.monotonic()))
        return b"".join(output), None

    def send_signal(self, signum):
        if self.poll() is None:
            os.kill(self.pid, signum)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class _Server(object):
    """
    The fork server of this test run (started by :func:`_server`): the
    workers of one ``trial -jN`` share one (its socket is named after the
    run's manager, trial's command, the source tree and the environment);
    the first to need it starts it, under a lock, and waits for it to end
    when it ends itself (its other members gone), so that its CPU counts
    in the run's.  A member holds a connection to it for as long as it
    lives.
    """

    def __init__(self, env):
        self.env = env
        self.proc = None
        self.member = None
        run = os.getppid() if "workertrial" in os.path.basename(sys.argv[0]) else os.getpid()
        key = hashlib.sha1(repr((run, sys.executable, ROOT, sorted(
            (k, v) for k, v in env.items() if k not in RUNTIME_VARIABLES))).encode(
            "utf-8")).hexdigest()[:16]
        directory = os.path.join(tempfile.gettempdir(), "tproxy-zygote-%d" % os.getuid())
        os.makedirs(directory, mode=0o700, exist_ok=True)
        mode = os.stat(directory)
        if mode.st_uid != os.getuid() or mode.st_mode & 0o077:
            raise RuntimeError("%s is not this user's alone" % directory)
        self.path = os.path.join(directory, key)
        atexit.register(self.stop)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.member = self._join()
            if self.member is None:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
                self.proc = subprocess.Popen(
                    [sys.executable, "-c", "import runpy; runpy.run_path(%r, run_name="
                     "'__main__')" % os.path.abspath(__file__), self.path],
                    cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                if self.proc.stdout.readline() == b"ready\n":
                    self.member = self._join()
                if self.member is None:
                    self.stop()
                    raise RuntimeError("the fork server did not start")

    def _join(self):
        """A member's connection to the fork server at :attr:`path`, or
        ``None`` (none there)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self.path)
            sock.send(json.dumps({"member": True}).encode("utf-8"))
            if select.select([sock], [], [], BOUND)[0] and sock.recv(4096):
                return sock
        except OSError:
            pass
        sock.close()
        return None

    def alive(self):
        """Whether the fork server is there (its member connection has
        nothing to read: no end)."""
        return self.member is not None and not select.select([self.member], [], [], 0)[0]

    def stop(self):
        if self.member is not None:
            self.member.close()
            self.member = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                self.proc.wait()
            self.proc = None
            try:
                os.unlink(self.path + ".lock")   # (the run's other members are gone)
            except OSError:
                pass

    def fork(self, argv, cwd, env):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conn.connect(self.path)
        read, write = os.pipe()
        with open(os.devnull, "rb") as devnull:
            socket.send_fds(conn, [json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode(
                "utf-8")], [devnull.fileno(), write, write])
        os.close(write)
        stdout = os.fdopen(read, "rb")
        if not select.select([conn], [], [], BOUND)[0]:
            raise RuntimeError("the fork server did not answer")
        answer = conn.recv(4096)
        if not answer:
            raise RuntimeError("the fork server refused the start")
        return ForkedProcess(conn, json.loads(answer)["pid"], stdout)


_SERVER = []
_SERVER_LOCK = threading.Lock()


def _server(env):
    """The fork server for the environment ``env`` (``None``: none)."""
    with _SERVER_LOCK:
        if not _SERVER:
            try:
                _SERVER.append(_Server(env))
            except Exception:
                _SERVER.append(None)
        server = _SERVER[0]
    if server is None or not server.alive():
        return None
    ignored = set(RUNTIME_VARIABLES)
    if ({k: v for k, v in env.items() if k not in ignored}
            != {k: v for k, v in server.env.items() if k not in ignored}):
        return None
    return server


def start(args, cwd, env):
    """
    ``twistd ARGS`` in ``cwd`` with the environment ``env``, its output and
    error on one pipe (``.stdout``): forked by the fork server when it can,
    else a real ``python -c TWISTD ARGS`` (a ``subprocess.Popen``).
    """
    from tests.test_tap import TWISTD, python_environ
    server = _server(python_environ())
    if server is not None:
        try:
            return server.fork(["twistd"] + list(args), cwd, env)
        except (OSError, RuntimeError):
            pass
    return subprocess.Popen(
        [sys.executable, "-c", TWISTD] + list(args), cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


if __name__ == "__main__":
    main()
