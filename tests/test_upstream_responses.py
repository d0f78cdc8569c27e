"""
What tproxy makes of what an upstream sends, from an outside-in audit of the
response side against nginx (``bench/tools/h1_response_differential.py``):
reason phrases, a ``204`` with a length, responses to ``HEAD`` without one
or with bytes after them.  The upstream is scripted byte for byte
(:mod:`tests.upstreams`); the fake clock throughout.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy.http.response_reader import WHOLE_HEAD_MIN
from tests.test_proxy_connections import UP, raw_answer, scripted
from tests.upstreams import ABORT, CLOSE, Scripted

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def by_method(head_answer):
    """A :class:`Scripted` answer: ``head_answer`` to ``HEAD``, else ``OK``."""
    return lambda request: head_answer if request.method == "HEAD" else OK


class ReasonPhraseTests(SynchronousTestCase):
    """A reason phrase is passed on as received, unless it holds a control
    character (RFC 9112 4: HTAB, SP, VCHAR and obs-text only): then the
    response is invalid, 502, with either parser (llhttp takes NUL there)."""

    def answer(self, status_line, fields=b""):
        up = Scripted(raw_answer(status_line + b"\r\n" + fields + b"Content-Length: 2\r\n\r\nok"))
        h = scripted({"default": {UP: up}})
        return h.request("GET", "/"), up

    def test_controlCharacters(self):
        for reason in (b"O\x00k", b"O\x01k", b"O\x7fk", b"O\x1bk"):
            # (a head of WHOLE_HEAD_MIN bytes or more is read whole with httptools)
            for fields in (b"", b"X-Pad: " + b"p" * WHOLE_HEAD_MIN + b"\r\n"):
                resp, up = self.answer(b"HTTP/1.1 200 " + reason, fields)
                self.assertEqual(resp.status, 502, reason)
                self.assertEqual(resp.json()["error"], "invalid response from upstream")
                self.assertEqual(up.open, 0)

    def test_passedOn(self):
        """HTAB, obs-text and an empty reason are fine (an empty one: tproxy's own)."""
        resp, _ = self.answer(b"HTTP/1.1 200 O\xffk\tx")
        self.assertEqual((resp.status, resp.reason, resp.body), (200, "O\xffk\tx", b"ok"))
        resp, _ = self.answer(b"HTTP/1.1 201 ")
        self.assertEqual((resp.status, resp.reason), (201, "Created"))


class NoContentTests(SynchronousTestCase):
    """A ``204`` has no body and no Content-Length (RFC 9110 8.6: "a server
    MUST NOT send" one): an upstream's is not passed on, so that a client
    that believes it does not wait for (or take) bytes of the next response."""

    def test_lengthDropped(self):
        no_content = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n"
        up = Scripted(lambda request: no_content if request.method == "DELETE" else OK)
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        resp = conn.request("DELETE", "/x")
        self.assertEqual((resp.status, resp.body), (204, b""))
        self.assertEqual(resp.headers.get("X-A"), "1")
        self.assertNotIn(b"content-length", conn.received.lower())
        # the exchange is clean: both connections go on
        conn.request("GET", "/again")
        self.assertEqual([r.status for r in conn.responses], [204, 200])
        self.assertEqual(up.connections, 1)

    def test_notModifiedKeepsLength(self):
        """A ``304``'s Content-Length is the representation's: passed on."""
        up = Scripted(raw_answer(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"))
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        resp = conn.request("GET", "/x")
        self.assertEqual(resp.status, 304)
        self.assertIn(b"Content-Length: 10\r\n", conn.received)


class HeadResponseTests(SynchronousTestCase):
    """A response to ``HEAD`` ends with its head, whatever its fields say."""

    def test_noLengthConnectionUsedAgain(self):
        """Without Content-Length or Transfer-Encoding it is complete all the
        same: the upstream connection goes back to the pool, as nginx's
        (the parser alone would wait for a body until the close)."""
        up = Scripted(by_method(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\n"))
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        resp = conn.request("HEAD", "/")
        self.assertEqual((resp.status, resp.headers.get("X-A")), (200, "1"))
        conn.request("GET", "/next")
        self.assertEqual([(r.status, r.body) for r in conn.responses],
                         [(200, b""), (200, b"ok")])
        self.assertEqual(up.connections, 1)

    def test_noLengthConnectionCloseNotUsedAgain(self):
        """... unless it says ``Connection: close``, or is HTTP/1.0."""
        for head in (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
                     b"HTTP/1.0 200 OK\r\n\r\n"):
            up = Scripted(by_method(head))
            h = scripted({"default": {UP: up}})
            conn = h.connect()
            conn.request("HEAD", "/")
            conn.request("GET", "/next")
            self.assertEqual([r.status for r in conn.responses], [200, 200])
            self.assertEqual(up.connections, 2, head)

    def test_bytesAfterNotUsedAgain(self):
        """Bytes after the head (a body an upstream sends to ``HEAD`` all the
        same) go nowhere, and the connection is not used again: the rest of
        such a body could come in a later read, and be taken for the answer
        to the next request."""
        for head in (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL",
                     b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\nEVIL",
                     b"HTTP/1.1 200 OK\r\n\r\nEVIL",
                     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nEVIL"):
            up = Scripted(by_method(head))
            h = scripted({"default": {UP: up}})
            conn = h.connect()
            resp = conn.request("HEAD", "/")
            self.assertEqual((resp.status, resp.body), (200, b""))
            conn.request("GET", "/next")
            self.assertEqual([(r.status, r.body) for r in conn.responses],
                             [(200, b""), (200, b"ok")])
            self.assertNotIn(b"EVIL", conn.received)
            self.assertEqual(up.connections, 2, head)
            self.assertEqual(up.open, 1, head)
            [warn] = [e for e in h.events if e.get("log_namespace") == "tproxy.http.upstream"]
            self.assertEqual(warn["peer"], UP)

    def test_pipelinedBehindBytesAfter(self):
        """The same with the next request already waiting (pipelined): it
        goes on a new connection, and the bytes go nowhere (not into its
        answer)."""
        up = Scripted(by_method(b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\nEVIL"))
        h = scripted({"default": {UP: up}})
        conn = h.connect()
        conn.send_request("HEAD", "/", flush=False)
        conn.send_request("GET", "/next", flush=False)
        h.flush()
        self.assertEqual([(r.status, r.body) for r in conn.responses],
                         [(200, b""), (200, b"ok")])
        self.assertNotIn(b"EVIL", conn.received)
        self.assertEqual([(r.uri, r.conn) for r in up.requests], [("/", 0), ("/next", 1)])
        self.assertEqual(up.open, 1)


class CloseDelimitedTests(SynchronousTestCase):
    """A body without Content-Length or chunked framing runs until the
    upstream closes (RFC 9112 6.3): re-chunked to an HTTP/1.1 client."""

    def answer(self, end, plugin=None):
        up = Scripted(raw_answer([b"HTTP/1.1 200 OK\r\n\r\npart", b"ial", end]))
        plugins = ("router", "least_conn") + ((plugin,) if plugin else ())
        self.h = h = scripted({"default": {UP: up}}, plugins=plugins)
        self.waiting = []
        if plugin:
            h.plugin(plugin).fns["header_filter"] = lambda ctx, head: self.wait()
        conn = h.connect()
        conn.send_request("GET", "/")
        h.advance(1)
        return conn

    def wait(self):
        self.waiting.append(Deferred())
        return self.waiting[-1]

    def test_closeEndsIt(self):
        """A close (FIN) ends the body: the client's response is complete."""
        conn = self.answer(CLOSE)
        [resp] = conn.responses
        self.assertEqual((resp.status, resp.body), (200, b"partial"))
        self.assertTrue(conn.received.endswith(b"0\r\n\r\n"))
        self.assertFalse(conn.closed)

    def test_resetCutsIt(self):
        """A reset is no end of the body but a failure: the client's
        connection is cut without the last chunk (as nginx's), so that it
        cannot take what it got for the whole response."""
        conn = self.answer(ABORT)
        self.assertEqual(conn.responses, [])
        self.assertTrue(conn.closed)
        self.assertIn(b"partial", conn.received.replace(b"\r\n3\r\n", b""))
        self.assertFalse(conn.received.endswith(b"0\r\n\r\n"))

    def test_closeWhileHeaderFilterWaits(self):
        """The close comes while a ``header_filter`` still holds the head:
        it ends the body all the same, once the filter is done (with a
        ``body_filter`` or without)."""
        for plugin in ("tests.proxy_plugins:HeadFilter", "tests.proxy_plugins:Filters"):
            conn = self.answer(CLOSE, plugin)
            self.assertEqual(conn.received, b"")
            [waiting] = self.waiting
            waiting.callback(None)
            self.h.advance(1)
            [resp] = conn.responses
            self.assertEqual((resp.status, resp.body), (200, b"partial"), plugin)
            self.assertFalse(conn.closed)
            self.assertEqual([c.error for c in self.h.contexts], [None])
