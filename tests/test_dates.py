"""
The ``Date`` field (RFC 9110 6.6.1, :mod:`tproxy.http.dates`): tproxy's own
responses carry the clock's now, a forwarded response keeps the upstream's
Date or gets the clock's now when it has none.  The harness clock starts at
0 (``Thu, 01 Jan 1970 00:00:00 GMT``).
"""

import email.utils

from twisted.trial.unittest import SynchronousTestCase

from tproxy import Response, hookimpl
from tproxy.http import dates, response_reader
from tproxy.testing import Harness

from tests.test_proxy import spy_on_cut_heads
from tests.test_testing import ROUTING, UP, one_group

EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
UPSTREAM_DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
#: fields that make a response head of 256+ bytes (read whole, cut from
#: the read's bytes with httptools: tproxy.http.response_reader)
LONG = [("X-Padding-%d" % i, "p" * 40) for i in range(6)]


def fields_of(raw, name):
    """The values of the fields ``name`` (any case) in a response's head."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return [line.partition(b":")[2].strip() for line in head
            if line.partition(b":")[0].lower() == name.lower()]


class FormatTests(SynchronousTestCase):
    """:func:`~tproxy.http.dates.imf_fixdate` and the cached line."""

    def test_imfFixdate(self):
        """RFC 9110's own example, and as the standard library formats it."""
        self.assertEqual(dates.imf_fixdate(784111777), b"Sun, 06 Nov 1994 08:49:37 GMT")
        for t in (0, 951782400, 1709164799.9, 4102444800, 2 ** 31 + 7):
            self.assertEqual(dates.imf_fixdate(t).decode("ascii"),
                             email.utils.formatdate(int(t), usegmt=True))

    def test_oncePerSecond(self):
        """Within one second the same line is given back; the next second
        makes another."""
        line = dates.date_line(784111777.1)
        self.assertEqual(line, b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n")
        self.assertIs(dates.date_line(784111777.9), line)
        self.assertEqual(dates.date_line(784111778.0),
                         b"Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n")

    def test_hasDate(self):
        self.assertTrue(dates.has_date([(b"X", b"1"), (b"dAtE", b"x")]))
        self.assertFalse(dates.has_date([(b"X-Date", b"1"), (b"Dates", b"x")]))
        self.assertFalse(dates.has_date([]))


class Answer(object):
    """A plugin whose ``access`` answers ``Response(403)`` with ``headers``."""

    def __init__(self, headers):
        self.headers = headers

    @hookimpl
    def access(self, ctx):
        return Response(403, b"no", self.headers)


class Filter(object):
    """A ``header_filter`` calling ``fn(headers)``."""

    def __init__(self, fn):
        self.fn = fn

    @hookimpl
    def header_filter(self, ctx, response):
        self.fn(response.headers)


class ForwardedTests(SynchronousTestCase):
    """A response from an upstream: its Date kept, or the clock's added."""

    def setUp(self):
        #: the heads read whole (httptools): cut from the read's bytes
        self.cut = spy_on_cut_heads(self)

    def assertCut(self, extra):
        """The heads with ``extra`` fields were cut (httptools), the others not."""
        self.assertEqual(bool(self.cut), bool(extra) and response_reader._WHOLE_HEADS)
        del self.cut[:]

    def harness(self, headers, status=200, plugins=()):
        return Harness(one_group(), ROUTING + list(plugins),
                       {UP: lambda request: (status, headers, "" if status == 304 else "hello")})

    def test_added(self):
        """No Date from the upstream: the time tproxy received the head, to
        the second (a short head, and one read whole)."""
        for extra in ([], LONG):
            h = self.harness(list(extra))
            self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"), [EPOCH])
            h.advance(61.7)
            self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"),
                             ["Thu, 01 Jan 1970 00:01:01 GMT"])
            self.assertCut(extra)

    def test_kept(self):
        """The upstream's Date is passed on, exactly once, whatever its
        spelling (a short head, and one read whole)."""
        for extra in ([], LONG):
            for name in ("Date", "date", "DATE"):
                h = self.harness([(name, UPSTREAM_DATE)] + extra)
                response = h.request("GET", "/api/x")
                self.assertEqual(response.headers.get_all("date"), [UPSTREAM_DATE])
                self.assertEqual(response.body, b"hello")
                self.assertCut(extra)

    def test_notDate(self):
        """Fields whose names only contain "date" are not a Date."""
        h = self.harness([("X-Date", "1"), ("Dates", "2")])
        self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"), [EPOCH])

    def test_connectionNamesDate(self):
        """A Date the upstream's Connection names is hop-by-hop: dropped,
        and the clock's added."""
        for extra in ([], LONG):
            h = self.harness([("Connection", "date"), ("Date", UPSTREAM_DATE)] + extra)
            self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"), [EPOCH])

    def test_head(self):
        """A response to HEAD gets a Date, or keeps the upstream's."""
        h = self.harness([])
        self.assertEqual(h.request("HEAD", "/api/x").headers.get_all("date"), [EPOCH])
        h = self.harness([("Date", UPSTREAM_DATE)])
        self.assertEqual(h.request("HEAD", "/api/x").headers.get_all("date"),
                         [UPSTREAM_DATE])

    def test_notModified(self):
        """A 304 gets a Date, or keeps the upstream's."""
        h = self.harness([("ETag", '"1"')], status=304)
        response = h.request("GET", "/api/x")
        self.assertEqual((response.status, response.headers.get_all("date")), (304, [EPOCH]))
        h = self.harness([("Date", UPSTREAM_DATE)], status=304)
        self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"),
                         [UPSTREAM_DATE])

    def test_headerFilter(self):
        """A ``header_filter`` sees the upstream's fields (no Date added
        yet); a Date it removes is replaced by the clock's, one it sets is
        kept."""
        seen = []
        h = self.harness([], plugins=[Filter(lambda headers: seen.append(headers.get("date")))])
        self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"), [EPOCH])
        self.assertEqual(seen, [None])
        h = self.harness([("Date", UPSTREAM_DATE)],
                         plugins=[Filter(lambda headers: headers.remove("date"))])
        self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"), [EPOCH])
        h = self.harness([], plugins=[Filter(lambda headers: headers.set("Date", UPSTREAM_DATE))])
        self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"),
                         [UPSTREAM_DATE])


class OwnResponseTests(SynchronousTestCase):
    """The responses tproxy or a plugin makes carry the clock's now."""

    def test_badGateway(self):
        """502: the upstream refuses connections (no stub at its address)."""
        h = Harness(one_group(), ROUTING, {})
        h.advance(37.2)
        response = h.request("GET", "/api/x")
        self.assertEqual(response.status, 502)
        self.assertEqual(response.headers.get_all("date"), ["Thu, 01 Jan 1970 00:00:37 GMT"])

    def test_noRoute(self):
        """An error answered before any upstream (no route: 503)."""
        h = Harness(one_group(), ROUTING, {UP: lambda request: (200, [], "")})
        response = h.request("GET", "/nowhere/x")
        self.assertEqual(response.status, 503)
        self.assertEqual(response.headers.get_all("date"), [EPOCH])

    def test_badRequest(self):
        """400 to bytes that cannot be parsed, alone on the connection, and
        queued behind a request read before them."""
        h = Harness(one_group(), ROUTING, {UP: lambda request: (200, [], "ok")})
        h.advance(1)
        c = h.connect()
        c.send(b"GET /api/x HTTP/1.1\r\nHost: a b\r\n\r\n")
        self.assertTrue(c.received.startswith(b"HTTP/1.1 400 "), c.received)
        self.assertEqual(fields_of(c.received, b"date"), [b"Thu, 01 Jan 1970 00:00:01 GMT"])
        c = h.connect()
        c.send(b"GET /api/x HTTP/1.1\r\nHost: a\r\n\r\nBAD\x00 / HTTP/1.1\r\n\r\n")
        first, second = c.received.split(b"HTTP/1.1 400 ")
        self.assertEqual(fields_of(first, b"date"), [b"Thu, 01 Jan 1970 00:00:01 GMT"])
        self.assertEqual(fields_of(b"HTTP/1.1 400 " + second, b"date"),
                         [b"Thu, 01 Jan 1970 00:00:01 GMT"])

    def test_pluginResponse(self):
        """A plugin's :class:`~tproxy.Response`: the clock's Date, or the
        plugin's own if it set one."""
        h = Harness(one_group(), ROUTING + [Answer(None)], {})
        response = h.request("GET", "/api/x")
        self.assertEqual((response.status, response.headers.get_all("date")), (403, [EPOCH]))
        h = Harness(one_group(), ROUTING + [Answer([("date", UPSTREAM_DATE)])], {})
        self.assertEqual(h.request("GET", "/api/x").headers.get_all("date"),
                         [UPSTREAM_DATE])
        h = Harness(one_group(), ROUTING + [Answer(None)], {})
        self.assertEqual(h.request("HEAD", "/api/x").headers.get_all("date"), [EPOCH])

    def test_admin(self):
        """The admin API's answers, errors included; not its 100 Continue."""
        h = Harness(config={"upstreams": {}}, plugins=["registry"])
        h.advance(2)
        answer = h.admin("GET", "/upstream/status")
        self.assertEqual(answer.status, 200)
        self.assertEqual([v for n, v in answer.headers if n.lower() == "date"],
                         ["Thu, 01 Jan 1970 00:00:02 GMT"])
        answer = h.admin("GET", "/no/such/thing")
        self.assertEqual(answer.status, 404)
        self.assertEqual([v for n, v in answer.headers if n.lower() == "date"],
                         ["Thu, 01 Jan 1970 00:00:02 GMT"])
