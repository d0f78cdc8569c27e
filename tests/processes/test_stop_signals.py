"""
A second ``SIGTERM`` while tproxy stops (what ``timeout`` does when it
signals the process and its group) is one info line, never a traceback: a
real ``twistd -n tproxy``, its drain held open by a client that sent half a
request head.  With 2 workers: in
:class:`tests.processes.test_worker_logs.LogfileTests` (the same process
as the workers' log lines).  The handlers' parts:
:mod:`tests.test_stop_signals`.
"""

import http.client
import os
import re
import signal

from twisted.trial.unittest import TestCase

from tests.processes.test_workers import BOUND
from tests.test_tap import TwistdProcess, local, write_json


def half_a_head(case, port):
    """A client connection that was answered once (tproxy accepted it: its
    reactor runs) and then sent half a request head (a stopping tproxy
    waits for the rest, for up to ``shutdown_timeout``)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    case.addCleanup(conn.close)
    conn.request("GET", "/x")
    response = conn.getresponse()
    response.read()
    case.assertFalse(response.will_close)
    conn.sock.sendall(b"GET / HTTP/1.1\r\n")
    return conn


def assertNoTraceback(case, output):
    """No traceback nor critical event in a process's log ``output``."""
    case.assertNotIn("Traceback", output)
    case.assertNotIn("ReactorNotRunning", output)
    case.assertNotIn("#critical]", output)


class SecondSignalTests(TestCase):
    """A repeated ``SIGTERM`` during the drain: no traceback, one line."""

    def test_singleProcess(self):
        cwd = os.path.abspath(self.mktemp())
        os.makedirs(cwd)
        conf = write_json(self, local(shutdown_timeout=BOUND))
        proc = TwistdProcess(self, conf, cwd)
        line = proc.read_until("proxy listening on ")
        port = int(re.search(r":(\d+)\s*$", line).group(1))
        proc.read_until("admin API listening on ")
        client = half_a_head(self, port)
        proc.send_signal(signal.SIGTERM)
        proc.read_until("stopping: draining 1 HTTP connection(s)")
        proc.send_signal(signal.SIGTERM)
        proc.read_until("Received SIGTERM again: tproxy is stopping already.")
        client.close()
        proc.read_until("Server Shut Down")
        self.assertIn(proc.proc.wait(BOUND), (0, -signal.SIGTERM), "".join(proc.output))
        output = "".join(proc.output)
        assertNoTraceback(self, output)
        self.assertEqual(output.count("Received SIGTERM, shutting down."), 1, output)
