"""
A second ``SIGTERM`` while tproxy stops (what ``timeout`` does when it
signals the process and its group) is one info line, never a traceback: a
real ``twistd -n tproxy``, alone and with 2 workers, its drain held open by
a client that sent half a request head.  The handlers' parts:
:mod:`tests.test_stop_signals`.
"""

import http.client
import os
import re
import signal

from twisted.trial.unittest import TestCase

from tests.processes.test_workers import BOUND, Box
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


class SecondSignalTests(TestCase):
    """A repeated ``SIGTERM`` during the drain: no traceback, one line."""

    def assertNoTraceback(self, output):
        self.assertNotIn("Traceback", output)
        self.assertNotIn("ReactorNotRunning", output)
        self.assertNotIn("#critical]", output)

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
        self.assertNoTraceback(output)
        self.assertEqual(output.count("Received SIGTERM, shutting down."), 1, output)

    def test_workers(self):
        """The parent and the worker draining get a second ``SIGTERM`` each
        (the parent's own to its workers, and the group's)."""
        box = Box(self, shutdown_timeout=BOUND)
        pids = box.pids()
        client = half_a_head(self, box.proxy)
        start = len(box.proc.output)
        box.proc.send_signal(signal.SIGTERM)
        line = box.proc.read_until("stopping: draining 1 HTTP connection(s)")
        draining = int(re.search(r"\[worker (\d+) ", line).group(1))
        self.assertIn(draining, pids)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:     # (the other worker ended already)
                pass
        box.proc.send_signal(signal.SIGTERM)
        box.proc.read_until("[worker %d twisted.internet.base#info] Received SIGTERM again: "
                            "tproxy is stopping already." % draining)
        box.proc.read_until("[twisted.internet.base#info] Received SIGTERM again", since=start)
        client.close()
        box.proc.read_until("Server Shut Down")
        self.assertIn(box.proc.proc.wait(BOUND), (0, -signal.SIGTERM),
                      "".join(box.proc.output))
        self.assertNoTraceback("".join(box.proc.output))
