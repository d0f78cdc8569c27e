"""
The request vectors of :mod:`tests.h1_vectors` (an audit's corpus against
nginx: smuggling mutations of Transfer-Encoding and Content-Length, heads
and bodies that parsers read differently) through :mod:`tproxy.testing`,
on the parser in use (httptools, or tproxy's own with
``TPROXY_PARSER=python`` and on PyPy).

Whatever the bytes: every answer is tproxy's (a status it sends), each
request that reached the upstream got its one response, what reached the
upstream is unambiguous (:func:`tests.h1_vectors.forwarded_problems`: one
framing per request, one valid Host, no CTL, no bare CR or LF), nothing is
logged as an error, every vector that is complete gets an answer at once,
and a connection left waiting for bytes the client announced is closed by
the timeouts.  ``bench/tools/h1_differential.py`` runs the same vectors
against tproxy and nginx over real sockets.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.testing import Harness
from tests import h1_vectors
from tests.upstreams import Scripted, _ScriptedProtocol

UP = "127.0.0.1:9001"
#: the statuses tproxy may answer a vector with (the upstream's is 200)
STATUSES = {100, 200, 400, 405, 408, 413, 414, 431, 501, 505}


class _Recording(Scripted):
    """A :class:`Scripted` upstream that keeps each connection's bytes."""

    def __init__(self):
        Scripted.__init__(self)
        self.streams = []

    def buildProtocol(self, addr):
        self.connections += 1
        proto = _RecordingProtocol(self, self.connections - 1)
        self.streams.append(proto)
        return proto


class _RecordingProtocol(_ScriptedProtocol):
    data = b""
    checked = 0     # where the last whole request checked ends

    def dataReceived(self, data):
        self.data += data
        _ScriptedProtocol.dataReceived(self, data)


class VectorTests(SynchronousTestCase):

    def run_vectors(self, vectors):
        up = _Recording()
        h = Harness(config={"upstreams": {"default": {"peers": [UP]}}},
                    plugins=["router", "least_conn"], servers={UP: up})
        up.clock = h.clock
        waiting = []
        for vector in vectors:
            name, data = vector[:2]
            parts = vector[2] if len(vector) > 2 else [data]
            before = len(up.requests)
            conn = h.connect()
            for part in parts:
                if part:
                    conn.send(part)
            statuses = [r.status for r in conn.responses]
            self.assertLessEqual(set(statuses), STATUSES, name)
            if not data.startswith(b"HEAD "):   # (its response is not read here)
                self.assertEqual(len(up.requests) - before, statuses.count(200),
                                 (name, statuses))
            for stream in up.streams:
                problems, end = h1_vectors.forwarded_problems(stream.data[stream.checked:])
                self.assertEqual(problems, [], (name, stream.data[stream.checked:][:300]))
                stream.checked += end
            if name not in h1_vectors.WAITING:
                # (the upstream answers at once: nothing to wait for)
                self.assertTrue(conn.received or conn.closed, name)
            if not conn.closed:
                waiting.append((name, conn))
        # the header, body and keep-alive timeouts end every connection left
        h.advance(61)
        h.advance(61)
        self.assertEqual([name for name, conn in waiting if not conn.closed], [])

    def test_own(self):
        """The hand-written vectors."""
        self.run_vectors(h1_vectors.own())

    def test_contentLength(self):
        """Content-Length values a lax parser reads as a number."""
        self.run_vectors(h1_vectors.cl_mutations())

    def test_transferEncoding(self):
        """Transfer-Encoding disguised, as CL.TE and TE.CL probes: never
        forwarded two ways."""
        self.run_vectors(h1_vectors.te_mutations())
