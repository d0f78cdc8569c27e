"""
Retries as nginx's ``proxy_next_upstream`` (:mod:`tproxy.http.retry`): the
conditions, ``tries``, ``next_upstream_timeout``, non-idempotent methods, and
the keep-alive race (a reused connection the peer closed).
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tests.upstreams import CLOSE, Scripted
from tproxy.testing import Harness, echo

A = "127.0.0.1:9001"
B = "127.0.0.1:9002"


def _harness(peers, servers, **config):
    config = dict(config, upstreams={"default": {"peers": list(peers)}})
    return Harness(config=config, plugins=["router", "least_conn"], servers=servers)


class ConditionTests(SynchronousTestCase):
    """Which failures go on to the next peer."""

    def test_off(self):
        """``off``: a refused connect is final."""
        h = _harness(["127.0.0.1:9100", A], {A: echo}, proxy={"next_upstream": ["off"]})
        self.assertEqual(h.request("GET", "/").status, 502)
        self.assertEqual(len(h.contexts[0].tried), 1)

    def test_tries(self):
        """``tries`` 2: two refused peers, then the answer is 502."""
        h = _harness(["127.0.0.1:9100", "127.0.0.1:9101", A], {A: echo},
                     proxy={"tries": 2})
        self.assertEqual(h.request("GET", "/").status, 502)
        self.assertEqual(len(h.contexts[0].tried), 2)

    def test_statusRetried(self):
        """``http_503``: the 503 is dropped and the next peer answers."""
        h = _harness([A, B], {A: lambda r: (503, {}, b"busy"), B: echo},
                     proxy={"next_upstream": ["error", "http_503"]})
        for _ in range(2):
            self.assertEqual(h.request("GET", "/").status, 200)

    def test_lastStatusPassedOn(self):
        """The last try's 503 reaches the client as it is."""
        busy = lambda r: (503, {}, b"busy")
        h = _harness([A, B], {A: busy, B: busy},
                     proxy={"next_upstream": ["error", "http_503"]})
        r = h.request("GET", "/")
        self.assertEqual((r.status, r.body), (503, b"busy"))
        self.assertEqual(len(h.contexts[0].tried), 2)

    def test_statusNotRetriedForPost(self):
        """A POST that was sent is not retried without ``non_idempotent``."""
        h = _harness([A, B], {A: lambda r: (503, {}, b"busy"), B: echo},
                     proxy={"next_upstream": ["error", "http_503"]})
        r = h.request("POST", "/", body=b"x")
        self.assertEqual(r.status, 503)

    def test_statusRetriedForPostNonIdempotent(self):
        """With ``non_idempotent`` the POST goes on, its body with it."""
        h = _harness([A, B], {A: lambda r: (503, {}, b"busy"), B: echo},
                     proxy={"next_upstream": ["error", "http_503", "non_idempotent"]})
        r = h.request("POST", "/", body=b"payload")
        self.assertEqual(r.status, 200)
        self.assertEqual([u.body for u in h.upstream_requests], [b"payload"] * 2)

    def test_postRetriedWhenNotSent(self):
        """A refused connect sent nothing: a POST goes to the next peer."""
        h = _harness(["127.0.0.1:9100", A], {A: echo})
        self.assertEqual(h.request("POST", "/", body=b"x").status, 200)

    def test_timeoutRetried(self):
        """``timeout``: a peer silent past ``timeouts.read``; the GET goes on."""
        h = _harness([A, B], {A: lambda r: Deferred(), B: echo}, timeouts={"read": 3})
        p = h.request("GET", "/", wait=False)
        h.advance(3)
        self.assertEqual(p.result().status, 200)
        self.assertEqual([x.address for x in h.contexts[0].tried], [A, B])

    def test_timeoutNotRetried(self):
        """Without ``timeout``: 504."""
        h = _harness([A, B], {A: lambda r: Deferred(), B: echo}, timeouts={"read": 3},
                     proxy={"next_upstream": ["error"]})
        p = h.request("GET", "/", wait=False)
        h.advance(3)
        self.assertEqual(p.result().status, 504)

    def test_nextUpstreamTimeout(self):
        """No new attempt after ``next_upstream_timeout`` seconds."""
        h = _harness([A, B], {A: lambda r: Deferred(), B: echo}, timeouts={"read": 3},
                     proxy={"next_upstream_timeout": 2})
        p = h.request("GET", "/", wait=False)
        h.advance(3)
        self.assertEqual(p.result().status, 504)

    def test_invalidHeader(self):
        """``invalid_header``: a response that is not HTTP goes on to the next peer."""
        from twisted.internet.protocol import Factory, Protocol

        class Garbage(Protocol):
            def dataReceived(self, data):
                self.transport.write(b"NOT HTTP\r\n\r\n")
        h = _harness([A, B], {A: Factory.forProtocol(Garbage), B: echo},
                     proxy={"next_upstream": ["error", "invalid_header"]})
        self.assertEqual(h.request("GET", "/").status, 200)
        h2 = _harness([A, B], {A: Factory.forProtocol(Garbage), B: echo})
        self.assertEqual(h2.request("GET", "/").status, 502)


class KeepAliveRaceTests(SynchronousTestCase):
    """A reused upstream connection the peer closes without answering."""

    def _after_warmup(self, method, body, **proxy_config):
        """An upstream that answers the first request of each connection and
        closes the connection, unanswered, on the second; a warm-up request
        leaves a pooled connection, then ``method`` is sent."""
        served = {}

        def racy(req):
            served[req.conn] = served.get(req.conn, 0) + 1
            if served[req.conn] == 1:
                body = b"got:" + req.body
                return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            return [CLOSE]
        up = Scripted(racy)
        h = _harness([A], {A: up}, **({"proxy": proxy_config} if proxy_config else {}))
        up.clock = h.clock
        self.assertEqual(h.request("GET", "/warm").status, 200)
        self.assertEqual(len(h.factory.pool.idle), 1)
        return up, h.request(method, "/x", body=body)

    def test_putWithBody(self):
        """An idempotent request with a body is sent again on a fresh
        connection, body and all."""
        up, resp = self._after_warmup("PUT", b"hello")
        self.assertEqual((resp.status, resp.body), (200, b"got:hello"))
        self.assertEqual(up.connections, 2)
        self.assertEqual([(r.conn, r.body) for r in up.requests[1:]],
                         [(0, b"hello"), (1, b"hello")])

    def test_postNotResent(self):
        """A POST is not sent twice: 502."""
        up, resp = self._after_warmup("POST", b"hello")
        self.assertEqual(resp.status, 502)
        self.assertEqual(up.connections, 1)

    def test_postResentNonIdempotent(self):
        """With ``non_idempotent`` the POST is sent again."""
        up, resp = self._after_warmup(
            "POST", b"hello", next_upstream=["error", "timeout", "non_idempotent"])
        self.assertEqual((resp.status, resp.body), (200, b"got:hello"))

    def test_bodyBeyondBuffer(self):
        """A body larger than ``retry_body_buffer`` was not kept: 502."""
        up, resp = self._after_warmup("PUT", b"0123456789", retry_body_buffer=4)
        self.assertEqual(resp.status, 502)
