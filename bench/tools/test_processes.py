#!/usr/bin/env python3
"""The CPU of every process a command starts (a test run: trial's manager
and workers, the tests' fork server and its twistd processes, each
generation's worker fork server, Chromium, redis-server, orphans included),
each with its command line, and the sums by kind.

Usage (as root: BSD process accounting and a PID namespace)::

    python3 bench/tools/test_processes.py [-n 25] [COMMAND..., default: python -m twisted.trial -j2 tests]

The command runs in a PID namespace of its own (``unshare --pid --fork
--mount-proc``) with BSD process accounting on (``acct(2)``, which Linux
keeps per PID namespace: the other processes of the machine are not
counted, and no other accounting is disturbed).  The kernel writes a record
(user and system CPU, elapsed time, pid, parent's pid) for each process as
it ends; the first process of the namespace, this script, waits for every
one, and reads the command lines from ``/proc`` every 10 ms meanwhile (the
last one read is a process's: a forked child's is its parent's until it
execs; a process that lives less than that is named by its ``comm`` only).  CPU is in
1/100 s.  On a shared machine compare CPU, not wall, between runs, and give
the load average with any wall time.  Linux and the standard library only.
"""

import collections
import ctypes
import os
import struct
import subprocess
import sys
import time

#: the kinds of processes the sums are by: (kind, a test on the command line
#: and the ``comm``), the first that holds
KINDS = (
    ("chromium", lambda cmd, comm: "chrom" in cmd or "chrom" in comm.lower()),
    ("trial worker", lambda cmd, comm: "workertrial" in cmd),
    ("trial manager", lambda cmd, comm: "-m twisted.trial" in cmd or "bin/trial " in cmd),
    ("worker fork server (and the workers it forked)",
     lambda cmd, comm: "-m tproxy.worker_forks" in cmd),
    ("tproxy worker, spawned", lambda cmd, comm: "-m tproxy.worker " in cmd + " "),
    ("tests' fork server (and the twistd it forked)",
     lambda cmd, comm: "tests/zygote.py" in cmd),
    ("redis-server", lambda cmd, comm: "redis" in cmd or comm.startswith("redis")),
    ("python, started by a test", lambda cmd, comm: comm.startswith("python")),
)

#: ``struct acct_v3`` (linux/acct.h) up to ``ac_stime``; ``ac_comm`` at 48
_RECORD = struct.Struct("=BBHIIIIIIfHH")


def _comp(value):
    """A ``comp_t``: 13 bits of mantissa, 3 of base-8 exponent."""
    return (value & 0x1fff) << (3 * (value >> 13))


def records(path):
    """``(pid, ppid, user, system, elapsed, comm)`` of each record in
    ``path`` (seconds)."""
    with open(path, "rb") as f:
        data = f.read()
    for offset in range(0, len(data) - 63, 64):
        record = data[offset:offset + 64]
        fields = _RECORD.unpack(record[:_RECORD.size])
        pid, ppid, etime, utime, stime = fields[6], fields[7], fields[9], fields[10], fields[11]
        comm = record[48:64].split(b"\0")[0].decode("utf-8", "replace")
        yield pid, ppid, _comp(utime) / 100.0, _comp(stime) / 100.0, etime / 100.0, comm


def kind(cmd, comm):
    for name, test in KINDS:
        if test(cmd, comm):
            return name
    return comm


def inner(command, top):
    """In the namespace: run ``command`` with accounting on, report."""
    libc = ctypes.CDLL(None, use_errno=True)
    path = "/tmp/test_processes.%d.acct" % os.getppid()
    open(path, "wb").close()
    if libc.acct(path.encode()) != 0:
        sys.exit("acct: " + os.strerror(ctypes.get_errno()))
    try:
        start = time.monotonic()
        child = subprocess.Popen(command)
        commands, status, wall = {}, None, None
        while True:
            try:
                pid, code = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == child.pid:
                status, wall = os.waitstatus_to_exitcode(code), time.monotonic() - start
            if pid == 0:
                for name in os.listdir("/proc"):
                    if name.isdigit():
                        try:
                            with open("/proc/%s/cmdline" % name, "rb") as f:
                                text = f.read().replace(b"\0", b" ").strip()
                        except OSError:
                            continue
                        if text:
                            commands[int(name)] = text.decode("utf-8", "replace")
                time.sleep(0.01)
    finally:
        libc.acct(None)
    rows = [(user + system, system, elapsed, pid, ppid, comm, commands.get(pid, comm))
            for pid, ppid, user, system, elapsed, comm in records(path)
            if pid != os.getpid()]
    os.unlink(path)
    out = sys.stdout
    out.write("\n    cpu    sys   wall    pid   ppid  command\n")
    for cpu, system, elapsed, pid, ppid, comm, cmd in sorted(rows, reverse=True)[:top]:
        out.write("%7.2f %6.2f %6.2f %6d %6d  %s\n" % (cpu, system, elapsed, pid, ppid, cmd[:110]))
    sums = collections.OrderedDict()
    for cpu, system, elapsed, pid, ppid, comm, cmd in rows:
        entry = sums.setdefault(kind(cmd, comm), [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += cpu
        entry[2] += system
    out.write("\n    cpu    sys  processes  kind\n")
    for name, (count, cpu, system) in sorted(sums.items(), key=lambda kv: -kv[1][1]):
        out.write("%7.2f %6.2f %10d  %s\n" % (cpu, system, count, name))
    out.write("%7.2f %6.2f %10d  in all; wall %.2f s, exit status %s; load average %s\n" % (
        sum(r[0] for r in rows), sum(r[1] for r in rows), len(rows), wall or 0, status,
        " ".join("%.2f" % x for x in os.getloadavg())))
    return status or 0


def main(argv):
    top = 25
    if argv[:1] == ["-n"]:
        top, argv = int(argv[1]), argv[2:]
    command = argv or [sys.executable, "-m", "twisted.trial", "-j2", "tests"]
    if os.environ.get("_TEST_PROCESSES_INNER") == "1":
        del os.environ["_TEST_PROCESSES_INNER"]
        return inner(command, top)
    env = dict(os.environ, _TEST_PROCESSES_INNER="1")
    return subprocess.call(["unshare", "--pid", "--fork", "--mount-proc", sys.executable,
                            os.path.abspath(__file__), "-n", str(top)] + command, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
