# -*- test-case-name: tests.processes.test_workers_forked -*-
"""
The fork server of a generation of workers: ``python -m tproxy.worker_forks``,
spawned by the parent (:mod:`tproxy.supervisor`, through
:mod:`tproxy.fork_handles`), never by hand.  The workers of its generation
are forked from it instead of each starting a new Python (as nginx's master
forks its workers): a worker (re)start costs a ``fork()``, not the ~0.25 s
of CPU (more on PyPy) of importing Python's, Twisted's and tproxy's
modules, and the pages of those modules stay shared, copy-on-write.

Its life:

1. The parent spawns it as it spawned a worker (the same standard streams,
   environment and working directory), with file descriptor 3 its end of a
   UNIX socket pair to the parent.
2. It imports what a worker needs (:data:`PRELOAD`, every module of
   :data:`PRELOAD_PACKAGES`: the HTTP and stream proxies, the routing, and
   the built-in plugins its generation's configuration names, which the
   parent lists after ``--builtins``: :func:`command`), installs no reactor
   and starts no thread (each child installs
   its own reactor, as ``python -m tproxy.worker`` does), freezes the
   objects it has (``gc.freeze``: the children's collections leave their
   pages shared), and says ``{"op": "ready", "pid": P}``.
3. For each ``{"op": "fork", "id": N, "fds": K}`` the parent sends, with K
   descriptors attached (``SCM_RIGHTS``: the worker's end of its control
   channel, then its listening sockets in order), it forks.  The child puts
   them at the numbers the worker expects (3, then 4, 5...: the numbers the
   parent's ``hello`` answer names), closes everything else of the fork
   server's, restores the default signal handlers and runs
   ``tproxy.worker.main(["--control", "3"])``, then ``os._exit`` with its
   status.  The fork server closes its copies and answers ``{"id": N,
   "pid": P}`` at once (``{"id": N, "error": TEXT}`` if it could not fork:
   the parent spawns that worker instead).
4. When a child ends (``SIGCHLD``, ``waitpid``), it sends ``{"id": N, "pid":
   P, "status": S}``, the raw wait status (the parent makes Twisted's
   ``ProcessDone`` / ``ProcessTerminated`` of it:
   :func:`tproxy.fork_handles.exit_reason`).
5. When the parent closes the socket (its generation is retired by a reload
   or a stop, or the parent is gone, even ``kill -9``), it forks no more and
   exits once its last child has ended (the children stop on their own when
   their control channels close).

Messages both ways are JSON objects in 32-bit big-endian length-prefixed
frames, as on the control channel (:mod:`tproxy.control`).  The fork
server blocks ``SIGTERM``, ``SIGINT``, ``SIGQUIT`` and ``SIGHUP``: a signal
sent to the whole process group (a terminal's ``Ctrl-C``, ``systemctl
stop``'s ``SIGTERM`` to every process of the unit) is the parent's to act
on, and the fork server ends by step 5 (``SIGKILL`` ends it; the parent
then spawns its generation's workers with ``spawnProcess``).  Its children
get the default handlers back, and then the signals unblocked: one the
parent sent a child as it was being forked (tproxy stopping as a worker
starts) is delivered then, not lost.
"""

import gc
import json
import os
import select
import signal
import socket
import struct
import sys

__all__ = ["Frames", "command", "encode", "main", "preload", "PRELOAD", "PRELOAD_PACKAGES"]

#: the fork server's end of its socket to the parent
CHANNEL = 3

#: where a worker finds its control channel (its listening sockets follow)
CONTROL = 3

#: the most descriptors one fork request may carry
MAX_FDS = 253

#: the longest message accepted (bytes)
MAX_MESSAGE = 1 << 20

#: the modules a worker imports (no reactor: :mod:`tproxy.reactor` defines
#: it, the child installs it)
PRELOAD = (
    "tproxy.worker", "tproxy.tap", "tproxy.reactor", "tproxy.gateway",
    "tproxy.gateway_service", "tproxy.plugins", "tproxy.reload", "tproxy.replica",
    "tproxy.admin_page", "tproxy.config", "tproxy.control", "tproxy.redis_connections",
    "twisted.internet.epollreactor", "twisted.internet.endpoints", "twisted.internet.ssl",
    "twisted.protocols.tls", "twisted.logger", "jsonschema", "argparse",
)

#: the packages whose every module is preloaded (a module that fails to
#: import is left out: the worker that needs it imports it and says why);
#: of ``tproxy.builtins``, only the plugins named by ``--builtins`` when given
PRELOAD_PACKAGES = ("tproxy.builtins", "tproxy.http", "tproxy.stream", "tproxy.routing")

#: the package of the built-in plugins
BUILTINS_PACKAGE = "tproxy.builtins"

_HEAD = struct.Struct("!I")


def encode(obj):
    """``obj`` as one frame: its JSON text's length, then the text."""
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return _HEAD.pack(len(data)) + data


class Frames(object):
    """The frames of a byte stream, decoded: :meth:`feed` bytes as they
    come, get the JSON objects completed (``ValueError`` for a frame above
    :data:`MAX_MESSAGE` bytes or not a JSON object)."""

    def __init__(self):
        self._buffer = b""

    def feed(self, data):
        """The objects whose last byte is in ``data``."""
        self._buffer += data
        objects = []
        while len(self._buffer) >= _HEAD.size:
            size = _HEAD.unpack_from(self._buffer)[0]
            if size > MAX_MESSAGE:
                raise ValueError("a frame of {} bytes".format(size))
            end = _HEAD.size + size
            if len(self._buffer) < end:
                break
            obj = json.loads(self._buffer[_HEAD.size:end].decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("a frame that is not a JSON object")
            objects.append(obj)
            self._buffer = self._buffer[end:]
        return objects


def command(config):
    """The fork server's command for a generation of workers on ``config``
    (a validated configuration): ``python -m tproxy.worker_forks
    --builtins NAMES``, the built-in plugins it names (the others are not
    imported: ~6 % of the fork server's start, for the default plugins)."""
    from tproxy.plugins import BUILTINS
    names = sorted({entry["name"] for entry in config["plugins"]
                    if entry["name"] in BUILTINS})
    return [sys.executable, "-m", "tproxy.worker_forks", "--builtins", ",".join(names)]


def preload_names(builtins=None):
    """The modules :func:`preload` imports: of the built-in plugins, those
    named in ``builtins`` (names of :data:`tproxy.plugins.BUILTINS`), or
    every module of their package (``None``)."""
    import importlib
    import pkgutil
    names = list(PRELOAD)
    for package in PRELOAD_PACKAGES:
        if package == BUILTINS_PACKAGE and builtins is not None:
            from tproxy.plugins import BUILTINS
            names.extend(BUILTINS[name] for name in builtins if name in BUILTINS)
            continue
        path = importlib.import_module(package).__path__
        names.extend(package + "." + info.name for info in pkgutil.iter_modules(path))
    return names


def preload(builtins=None):
    """Import what a worker needs (:func:`preload_names`); the names that
    failed to import."""
    import importlib
    names = preload_names(builtins)
    failed = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            failed.append(name)
    return failed


def _send(channel, obj):
    """Send ``obj`` to the parent (gone: nothing to tell)."""
    try:
        channel.sendall(encode(obj))
    except OSError:
        pass


def _receive(channel):
    """``(bytes, descriptors)`` read from the parent (``b""``: closed)."""
    try:
        data, ancillary, _, _ = channel.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * 4))
    except (ConnectionError, OSError):
        return b"", []
    fds = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            count = len(payload) // 4
            fds.extend(struct.unpack("%di" % count, payload[:count * 4]))
    return data, fds


def serve(channel):
    """
    Serve the parent's fork requests on ``channel`` until it is closed and
    every child has ended: ``None`` then.  In a forked child, return
    ``(channel, own descriptors, the worker's descriptors)`` (to
    :func:`_become`).
    """
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    # a handler (not SIG_IGN, which would have the kernel reap the children
    # and lose their statuses): the wake-up descriptor says when to waitpid
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    frames = Frames()
    received = []           # descriptors not yet claimed by a request
    children = {}           # pid: the request's id
    connected = True
    while connected or children:
        watched = [wake_r] + ([channel] if connected else [])
        try:
            readable = select.select(watched, [], [])[0]
        except InterruptedError:
            continue
        if wake_r in readable:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
            _reap(channel, children)
        if channel not in readable:
            continue
        data, fds = _receive(channel)
        received.extend(fds)
        try:
            requests = frames.feed(data) if data else None
        except ValueError:
            requests = None
        if requests is None:
            connected = False       # the parent closed (or talks nonsense)
            for fd in received:
                os.close(fd)
            received = []
            continue
        for request in requests:
            count = request.get("fds", 0)
            fds, received = received[:count], received[count:]
            if request.get("op") != "fork" or len(fds) != count or not fds:
                for fd in fds:
                    os.close(fd)
                _send(channel, {"id": request.get("id"), "error": "a bad fork request"})
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as e:
                for fd in fds:
                    os.close(fd)
                _send(channel, {"id": request["id"], "error": str(e)})
                continue
            if pid == 0:
                return channel, [wake_r, wake_w] + received, fds
            for fd in fds:
                os.close(fd)
            children[pid] = request["id"]
            _send(channel, {"id": request["id"], "pid": pid})
    return None


def _reap(channel, children):
    """Tell the parent of each child ended (its wait status)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        number = children.pop(pid, None)
        if number is not None:
            _send(channel, {"id": number, "pid": pid, "status": status})


def _become(channel, own, fds):
    """In a forked child: the worker's descriptors at its numbers, nothing
    else of the fork server's, the default signal handlers; run the worker
    and exit with its status."""
    signal.set_wakeup_fd(-1)
    for name in ("SIGCHLD", "SIGHUP", "SIGTERM", "SIGQUIT", "SIGUSR1"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # (a stop signal sent since the fork waited, blocked: it is delivered now)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _stop_signals())
    channel.close()
    for fd in own:
        os.close(fd)
    # above every number in use first, then in place (a received number may
    # be one of the targets)
    above = max(fds + [CONTROL + len(fds)]) + 1
    import fcntl
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, above) for fd in fds]
    for fd in fds:
        os.close(fd)
    _close_all_but(set(moved))
    for target, fd in enumerate(moved, CONTROL):
        os.dup2(fd, target)
        os.close(fd)
    status = 0
    try:
        from tproxy.worker import main as worker
        sys.argv = [sys.argv[0], "--control", str(CONTROL)]
        worker(["--control", str(CONTROL)])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback
        traceback.print_exc()
        status = 1
    try:
        import atexit
        atexit._run_exitfuncs()     # as at an interpreter's exit (a status set there wins)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _close_all_but(keep):
    """Close every descriptor above 2 but ``keep``."""
    try:
        numbers = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        numbers = range(3, max(keep) + 1)
        os.closerange(max(keep) + 1, 65536)
    for fd in numbers:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass    # (the listing's own descriptor, closed already)


def _builtins(argv):
    """The built-in plugins named by ``--builtins A,B`` in ``argv``
    (``None``: no such option, every one)."""
    if "--builtins" not in argv[:-1]:
        return None
    return [name for name in argv[argv.index("--builtins") + 1].split(",") if name]


def _stop_signals():
    """The signals the fork server leaves to the parent (``SIGTERM``,
    ``SIGINT``, ``SIGQUIT``, ``SIGHUP``)."""
    return [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP]


def hold_stop_signals():
    """
    Block the :func:`_stop_signals` (with their default actions): the fork
    server leaves them to the parent.  Blocked, not ignored: one sent to a
    worker just forked (the parent stopping as it starts) waits in the
    child until :func:`_become` unblocks it, where an ignored one would be
    discarded and leave the worker serving.
    """
    for number in _stop_signals():
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, _stop_signals())


def main(argv=None):
    """Run the fork server (see the module docstring): its exit status."""
    hold_stop_signals()
    # (what the preload makes lives on: no collection while it runs, one
    # before the freeze; the children collect as usual)
    gc.disable()
    failed = preload(_builtins(sys.argv[1:] if argv is None else argv))
    if "twisted.internet.reactor" in sys.modules:
        print("tproxy.worker_forks: a preloaded module installed a reactor", file=sys.stderr)
        return 1
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=CHANNEL)
    channel.setblocking(True)
    if hasattr(gc, "freeze"):
        gc.collect()
        gc.freeze()
    gc.enable()
    _send(channel, {"op": "ready", "pid": os.getpid(), "failed": failed})
    forked = serve(channel)
    if forked is not None:
        _become(*forked)
    return 0


if __name__ == "__main__":
    # this module's names, not __main__'s
    from tproxy.worker_forks import main as _main
    sys.exit(_main())
