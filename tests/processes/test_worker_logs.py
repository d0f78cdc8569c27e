"""
The workers' log events in twistd's ``--logfile`` (the process model and
twistd's log are the subject): a real ``twistd -n --logfile=FILE tproxy``
with 2 workers, a request through the proxy, the lines read from the file;
the same process, stopped by ``SIGTERM`` twice during its drain, is the
stop-signal check with workers (one process for both: a start of twistd
with workers is the costliest step of either).  The relay's parts:
:mod:`tests.test_worker_logs`.
"""

import ctypes
import os
import re
import select
import signal
import time

from twisted.trial.unittest import TestCase

from tests.processes.test_stop_signals import assertNoTraceback, half_a_head
from tests.processes.test_workers import BOUND, get, get_json
from tests.test_tap import TwistdProcess, local, write_json


#: inotify's events of a directory's files: written to, created, renamed into it
_WRITTEN = 0x2 | 0x100 | 0x80


class _Writes(object):
    """
    Waits for a write to a file of a directory: Linux's inotify (through
    ctypes), whose descriptor is readable once there was one, so that a
    test waiting for another process's line takes no core from it; where
    there is no inotify, each wait gives the core away once
    (``sched_yield``) and the test looks again.
    """

    def __init__(self, directory):
        self.fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(directory), _WRITTEN) < 0:
                os.close(fd)
                fd = -1
            self.fd = fd
        except (OSError, AttributeError):
            pass

    def wait(self, timeout):
        """Return once a file was written since the last wait (or after
        ``timeout`` seconds)."""
        if self.fd < 0:
            os.sched_yield()
        elif select.select([self.fd], [], [], max(0, timeout))[0]:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LogFile(object):
    """The lines of a file another process appends to, read as they come."""

    def __init__(self, path):
        self.path = path
        self.lines = []
        self._file = None
        self._partial = ""
        # (watched before the first look: no write between a look and the
        # wait that follows it goes unseen)
        self._writes = _Writes(os.path.dirname(path))

    def _read(self):
        if self._file is None:
            if not os.path.exists(self.path):
                return False
            self._file = open(self.path, encoding="utf-8", errors="replace")
        data = self._file.read()
        if not data:
            return False
        lines = (self._partial + data).split("\n")
        self._partial = lines.pop()
        self.lines.extend(lines)
        return True

    def read_until(self, pattern, since=0):
        """The first line from index ``since`` on that matches ``pattern``
        (a regular expression), waiting for it (at most BOUND seconds)."""
        deadline = time.monotonic() + BOUND
        while True:
            self._read()
            for line in self.lines[since:]:
                if re.search(pattern, line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError("gave up waiting for %r in %s" % (pattern, self.path))
            self._writes.wait(deadline - time.monotonic())

    def close(self):
        self._writes.close()
        if self._file is not None:
            self._file.close()


class LogfileTests(TestCase):
    """With ``--logfile``, the workers' events are in the file, tagged with
    their worker, and nothing goes to standard output; a second ``SIGTERM``
    during the drain is one line in each process."""

    def test_workersLines(self):
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        path = os.path.join(cwd, "twistd.log")
        config = local(workers=2, shutdown_timeout=BOUND, plugins=[
            "registry", "router", "least_conn",
            {"name": "access_log", "settings": {"target": "logger"}}])
        proc = TwistdProcess(self, write_json(self, config), cwd,
                             twistd_args=["--logfile", path])
        logfile = LogFile(path)
        self.addCleanup(logfile.close)
        proxy = int(re.search(r":(\d+) \(accepted by the workers\)", logfile.read_until(
            r"proxy listening on .* \(accepted by the workers\)")).group(1))
        admin = int(re.search(r":(\d+)$", logfile.read_until(
            r"admin API listening on")).group(1))
        ready = logfile.read_until(r"2 worker\(s\) ready")
        status, obj = get_json(admin, "/upstream/status")
        self.assertEqual(status, 200, obj)
        pids = sorted(w["pid"] for w in obj["workers"])
        for pid in pids:
            # (each worker's own line, before the parent's "ready": in order)
            line = logfile.read_until(r"\[worker %d tproxy.worker#info\] worker \d \(pid %d\) "
                                      r"ready" % (pid, pid))
            self.assertLess(logfile.lines.index(line), logfile.lines.index(ready))

        self.assertEqual(get(proxy, "/nowhere")[0], 503)
        line = logfile.read_until(r'"uri":"/nowhere"')
        found = re.search(r"\[worker (\d+) tproxy.builtins.access_log#info\] \{.*\"status\":503",
                          line)
        self.assertIsNotNone(found, line)
        self.assertIn(int(found.group(1)), pids)

        # a second SIGTERM while a worker drains a connection (the parent's
        # own to its workers, and the group's, as ``timeout`` sends): one
        # info line in each process, no traceback
        # (:mod:`tests.processes.test_stop_signals`: without workers)
        client = half_a_head(self, proxy)
        start = len(logfile.lines)
        proc.send_signal(signal.SIGTERM)
        line = logfile.read_until(r"stopping: draining 1 HTTP connection\(s\)", since=start)
        draining = int(re.search(r"\[worker (\d+) ", line).group(1))
        self.assertIn(draining, pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:     # (the other worker ended already)
                pass
        proc.send_signal(signal.SIGTERM)
        logfile.read_until(r"\[worker %d twisted.internet.base#info\] Received SIGTERM again: "
                           r"tproxy is stopping already\." % draining, since=start)
        logfile.read_until(r"\d \[twisted.internet.base#info\] Received SIGTERM again: ",
                           since=start)
        client.close()

        # the workers' last lines, after their reactor stopped, are there too
        self.assertIn(proc.proc.wait(BOUND), (0, -signal.SIGTERM))
        for pid in pids:
            logfile.read_until(r"\[worker %d twisted.internet.base#info\] Main loop terminated"
                               % pid, since=start)
        logfile.read_until(r"Server Shut Down", since=start)
        self.assertEqual(proc.proc.stdout.read(), b"", "nothing on standard output")
        assertNoTraceback(self, "\n".join(logfile.lines))
