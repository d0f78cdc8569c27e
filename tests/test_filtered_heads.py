"""
An upstream response's head through ``header_filter``, on the wire
(:class:`tproxy.context._UpstreamResponseHead`, :mod:`tproxy.http.response`):
a filter that does not read ``response.headers`` leaves the fields as tproxy
forwards them without a filter, byte for byte (the spelling of names, the
spacing tproxy keeps); fields read and left as they were too; fields
changed or replaced go out as the filter left them.
"""

from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tproxy import Headers
from tproxy.http import response_reader
from tproxy.testing import Harness
from tests.upstreams import Scripted

UP = "127.0.0.1:9001"
FILTER = "tests.proxy_plugins:HeadFilter"

#: fields as an upstream may spell them: names in odd case, a value after
#: several spaces, one after none
ODD = (b"x-lower-CASE: a\r\n"
       b"X-Spaced:    b\r\n"
       b"SERVER:up\r\n"
       b"Date: Mon, 30 Nov 2026 06:00:00 GMT\r\n")
#: enough fields to make the head one that is read whole and cut from the
#: read (response_reader.WHOLE_HEAD_MIN), not reported field by field
PADDING = b"".join(b"X-Pad-%d:  %s\r\n" % (i, b"p" * 30) for i in range(8))
SMALL = b"HTTP/1.1 200 OK\r\n" + ODD + b"Content-Length: 2\r\n\r\nok"
BIG = b"HTTP/1.1 200 OK\r\n" + ODD + PADDING + b"Content-Length: 2\r\n\r\nok"


def received(answer, header_filter=None):
    """The bytes a client gets for ``GET /`` answered by ``answer``, through
    ``header_filter(h, response)`` if given (else no filter plugin)."""
    up = Scripted(lambda request: answer)
    plugins = ["router", "least_conn"] + ([FILTER] if header_filter else [])
    h = Harness(config={"upstreams": {"default": {"peers": [UP]}}}, plugins=plugins,
                servers={UP: up})
    up.clock = h.clock
    if header_filter:
        h.plugin(FILTER).fns["header_filter"] = lambda ctx, r: header_filter(h, r)
    conn = h.connect()
    conn.send_request("GET", "/")
    h.advance(1)
    [resp] = conn.responses
    assert resp.body == b"ok", conn.received
    return conn.received


class FilteredHeadTests(SynchronousTestCase):
    """Both kinds of head: reported field by field (SMALL) and read whole
    (BIG, with httptools)."""

    def assertAsWithout(self, header_filter, after_status_line=False):
        for answer in (SMALL, BIG):
            plain = received(answer)
            got = received(answer, header_filter)
            if after_status_line:
                plain, got = plain.split(b"\r\n", 1)[1], got.split(b"\r\n", 1)[1]
            self.assertEqual(got, plain)
            # (what tproxy keeps without a filter: the names as spelled)
            self.assertIn(b"x-lower-CASE: a\r\n", got)
        if response_reader._WHOLE_HEADS:
            # a head read whole goes on as received, spacing included
            self.assertIn(b"\r\nX-Spaced:    b\r\nSERVER:up\r\n", received(BIG, header_filter))

    def test_statusRead(self):
        """A filter that reads only the status: the head's bytes are those
        sent without a filter."""
        seen = []
        self.assertAsWithout(lambda h, response: seen.append(
            (response.status, response.reason, response.from_upstream)))
        self.assertEqual(set(seen), {(200, b"OK", True)})

    def test_statusChanged(self):
        """A filter that changes the status: the new status line, the
        fields as without a filter."""
        def header_filter(h, response):
            response.status = 203
        self.assertAsWithout(header_filter, after_status_line=True)
        self.assertTrue(received(BIG, header_filter).startswith(b"HTTP/1.1 203 OK\r\n"))

    def test_awaited(self):
        """A filter that answers later, having read only the status: the
        same bytes as without a filter."""
        self.assertAsWithout(lambda h, response: deferLater(h.clock, 0.5, lambda: None))

    def test_headersReadNotChanged(self):
        """A filter that reads the fields (as pairs, values without their
        leading spaces) and leaves them: the head as without a filter."""
        seen = []

        def header_filter(h, response):
            seen.append((response.headers.get("x-spaced"), response.headers.get("Server"),
                         "x-lower-case" in response.headers))
        self.assertAsWithout(header_filter)
        self.assertEqual(set(seen), {("b", "up", True)})

    def test_headersChanged(self):
        """Fields changed in place go out as the filter left them (each as
        ``name: value``), the others with them."""
        def header_filter(h, response):
            response.headers.set("X-Filtered", "1")
            response.headers.remove("x-spaced")
        for answer in (SMALL, BIG):
            got = received(answer, header_filter)
            self.assertIn(b"\r\nx-lower-CASE: a\r\nSERVER: up\r\n", got)
            self.assertIn(b"\r\nX-Filtered: 1\r\n", got)
            self.assertNotIn(b"X-Spaced", got)
            self.assertIn(b"\r\nContent-Length: 2\r\n", got)

    def test_headersReplaced(self):
        """A new Headers given to the head: those fields (the response then
        chunked, having no Content-Length; a Date added), none of the
        received ones."""
        def header_filter(h, response):
            response.headers = Headers([(b"X-New", b"1")])
        for answer in (SMALL, BIG):
            got = received(answer, header_filter)
            head = got.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            self.assertEqual([line.split(b":")[0] for line in head[1:]],
                             [b"X-New", b"Date", b"Transfer-Encoding"])
            self.assertTrue(got.endswith(b"\r\n\r\n2\r\nok\r\n0\r\n\r\n"), got)
