"""
Property-based tests (hypothesis) of request parsing and framing, end to
end: random request heads, Content-Length and chunked bodies (sizes,
extensions, trailers), pipelines, one defect here and there, sent whole and
split at random places.  Whatever the bytes, tproxy either refuses a request
with an error status (4xx, or the 501/505 of an unknown method or version)
or forwards exactly the request that a small reference parser (RFC 9112,
below) reads in the same bytes; and the answers do not depend on where the
bytes were split.  A second property compares the two parsers (httptools and
tproxy's pure-Python one) directly on the same inputs.

The parser under test is the one tproxy uses here: httptools on CPython,
the pure-Python one on PyPy or with ``TPROXY_PARSER=python`` (``.ci/run``
runs the suite both ways).

Short by default (a few seconds, derandomized so that CI is repeatable).
Long mode, random and with every single split point checked::

    TPROXY_FUZZ_EXAMPLES=5000 python -m twisted.trial tests.test_fuzz

The test cases are :mod:`tests.test_fuzz`'s: they import this module when
they run (hypothesis and the strategies cost every process that lists the
suite ~0.3 s of CPU otherwise).
"""

import os
import re

from tests.helpers import parse_responses, prepare_hypothesis

EXAMPLES = int(os.environ.get("TPROXY_FUZZ_EXAMPLES", "0") or 0)
LONG = EXAMPLES > 0
prepare_hypothesis(derandomized=not LONG)

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from tproxy.http import pyparser  # noqa: E402
from tproxy.testing import Harness, echo  # noqa: E402
from tests.test_pyparser import feed  # noqa: E402

try:
    import httptools
except ImportError:  # pragma: no cover (PyPy)
    httptools = None

FUZZ = settings(
    max_examples=EXAMPLES or 30, deadline=None, derandomize=not LONG,
    database=None, suppress_health_check=list(HealthCheck))

PEER = "127.0.0.1:9001"
LIMIT = 64            # proxy.max_body_size of these tests
BUFFER = 24           # proxy.client_body_buffer_size: some bodies stream
REFUSALS = {400, 408, 413, 414, 431, 501, 505}


# -- a reference parser (RFC 9112, strict) ---------------------------------------

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.([01])")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*"
                    rb"[\x21-\x7e\x80-\xff])?)?[ \t]*")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})((?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN
                         + rb'|"[\t !#-\[\]-~]*"))?)*)\r\n')
_METHODS = {b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"}
_ABSOLUTE = re.compile(rb"http://([A-Za-z0-9._~-]+)(/[\x21-\x7e]*)")


class Invalid(Exception):
    pass


class Incomplete(Exception):
    pass


def reference(data):
    """
    The requests in ``data``, as a strict reader of RFC 9112 sees them:
    ``(requests, end)``, each request ``(method, uri, fields, body)`` as it
    should reach the upstream (``fields``: sorted end-to-end ``(lower-case
    name, value)``, Host first), and ``end`` ``"invalid"``, ``"incomplete"``
    or ``None`` for what follows them.
    """
    out = []
    pos = 0
    while True:
        while data[pos:pos + 2] == b"\r\n" or data[pos:pos + 1] == b"\n":
            pos += 2 if data[pos:pos + 2] == b"\r\n" else 1   # empty lines, as nginx
        if data[pos:pos + 1] == b"\r" and pos + 1 < len(data):
            return out, "invalid"   # a bare CR (nginx skips it)
        if pos >= len(data):
            return out, None
        try:
            request, pos = _one(data, pos)
        except Invalid:
            return out, "invalid"
        except Incomplete:
            return out, "incomplete"
        out.append(request)


def _one(data, pos):
    end = data.find(b"\r\n\r\n", pos)
    if end < 0:
        if re.search(rb"\r(?!\n)|(?<!\r)\n", data[pos:]):
            raise Invalid()
        raise Incomplete()
    lines = data[pos:end].split(b"\r\n")
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None or m.group(1) not in _METHODS:
        raise Invalid()
    method, target, minor = m.groups()
    fields = []
    for line in lines[1:]:
        f = _FIELD.fullmatch(line)
        if f is None:
            raise Invalid()
        fields.append((f.group(1).lower(), f.group(2) or b""))
    hosts = [v for n, v in fields if n == b"host"]
    if len(hosts) > 1 or (minor == b"1" and not hosts) or b"" in hosts:
        raise Invalid()
    a = _ABSOLUTE.fullmatch(target)
    if a is not None:
        uri = a.group(2)
        hosts = [a.group(1)]
    elif target.startswith(b"/"):
        uri = target
    else:
        raise Invalid()
    pos = end + 4
    te = [v for n, v in fields if n == b"transfer-encoding"]
    cl = [v for n, v in fields if n == b"content-length"]
    if te and (cl or minor == b"0" or len(te) > 1 or te[0].lower() != b"chunked"):
        raise Invalid()
    if len(cl) > 1 or (cl and not cl[0].isdigit()):
        raise Invalid()
    if te:
        body, pos = _chunked(data, pos)
    elif cl:
        n = int(cl[0])
        if len(data) - pos < n:
            raise Incomplete()
        body, pos = data[pos:pos + n], pos + n
    else:
        body = b""
    e2e = sorted((n, v) for n, v in fields
                 if n not in (b"host", b"content-length", b"transfer-encoding"))
    return (method, uri, [(b"host", hosts[0] if hosts else None)] + e2e, body), pos


def _chunked(data, pos):
    body = []
    while True:
        m = _CHUNK_LINE.match(data, pos)
        if m is None:
            rest = data[pos:]
            if b"\n" in rest or len(rest) > 100:
                raise Invalid()
            raise Incomplete()
        size = int(m.group(1), 16)
        pos = m.end()
        if size == 0:
            break
        if len(data) < pos + size + 2:
            if len(data) > pos + size and data[pos + size:pos + size + 1] != b"\r":
                raise Invalid()
            raise Incomplete()
        body.append(data[pos:pos + size])
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise Invalid()
        pos += size + 2
    while True:     # trailer fields, then an empty line
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            raise Incomplete()
        line = data[pos:eol]
        pos = eol + 2
        if not line:
            return b"".join(body), pos
        if _FIELD.fullmatch(line) is None:
            raise Invalid()


# -- generated requests ----------------------------------------------------------

_NAMES = [b"Accept", b"User-Agent", b"X-A", b"x-trace", b"Cookie", b"X-Long-Name-Here"]
_VALUE = st.binary(max_size=30).map(
    lambda b: bytes(c for c in b if c == 9 or 32 <= c < 127 or c >= 128).strip(b" \t"))
#: (bytes from a list of letters: ``st.text`` would have hypothesis build its
#: Unicode tables, ~0.35 s of CPU in each test process of a fresh clone)
_SEGMENT = st.lists(st.sampled_from(b"abcxyz019-~"), min_size=1, max_size=6).map(bytes)

#: the defects one request may carry (each makes it invalid for the reference)
DEFECTS = [
    "bare_lf", "bare_cr_in_value", "nul_in_value", "space_before_colon", "obs_fold",
    "two_lengths", "length_and_chunked", "gzip_chunked", "bad_chunk_size",
    "bad_chunk_end", "chunk_overflow", "no_host", "two_hosts", "empty_host",
    "long_line", "bad_target_char", "unknown_method", "bad_extension", "bad_trailer",
]


@st.composite
def requests(draw):
    """``(bytes, defect or None, body length)`` of one request."""
    method = draw(st.sampled_from(sorted(_METHODS)))
    path = b"/" + b"/".join(draw(st.lists(_SEGMENT, max_size=3)))
    if draw(st.booleans()):
        path += b"?" + draw(_SEGMENT) + b"=" + draw(_SEGMENT)
    target = path
    if draw(st.integers(0, 9)) == 0:
        target = b"http://" + draw(_SEGMENT).lower() + b".example" + path
    fields = [(draw(st.sampled_from(_NAMES)), draw(_VALUE))
              for _ in range(draw(st.integers(0, 4)))]
    host = draw(_SEGMENT) + b".test"
    fields.insert(draw(st.integers(0, len(fields))), (b"Host", host))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    body = draw(st.binary(max_size=100)) if framing != "none" else b""
    defect = draw(st.sampled_from(DEFECTS)) if draw(st.integers(0, 3)) == 0 else None
    if defect in ("bad_chunk_size", "bad_chunk_end", "chunk_overflow", "bad_extension",
                  "bad_trailer", "length_and_chunked", "gzip_chunked"):
        framing = "chunked"
        body = body or b"abc"
    elif defect == "two_lengths":
        framing = "length"
        body = draw(st.binary(max_size=100))
    encoded = body
    if framing == "length":
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", b"chunked"))
        encoded = _chunks(draw, body, defect)
    if defect == "two_lengths":
        fields.append((b"Content-Length", b"%d" % (len(body) + 1)))
    elif defect == "length_and_chunked":
        fields.append((b"Content-Length", b"%d" % len(encoded)))
    elif defect == "gzip_chunked":
        fields[-1] = (b"Transfer-Encoding", b"gzip, chunked")
    elif defect == "no_host":
        fields = [f for f in fields if f[0] != b"Host"]
        target = path
    elif defect == "two_hosts":
        fields.append((b"Host", b"other.test"))
    elif defect == "empty_host":
        fields = [(n, b"" if n == b"Host" else v) for n, v in fields]
    elif defect == "long_line":
        fields.append((b"X-Big", b"v" * 9000))
    elif defect == "bad_target_char":
        target += b"\x7f"
    elif defect == "unknown_method":
        method = b"FROB"
    lines = [b"%s %s HTTP/1.1" % (method, target)] + [n + b": " + v for n, v in fields]
    if defect in ("bare_cr_in_value", "nul_in_value", "space_before_colon", "obs_fold"):
        i = draw(st.integers(1, len(lines) - 1)) if len(lines) > 1 else 1
        bad = {"bare_cr_in_value": b"X-A: a\rb", "nul_in_value": b"X-A: a\x00b",
               "space_before_colon": b"X-A : b", "obs_fold": b" folded"}[defect]
        lines.insert(i, bad)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if defect == "bare_lf":
        i = head.find(b"\r\n")
        head = head[:i] + head[i + 1:]
    lead = draw(st.sampled_from([b"", b"", b"", b"\r\n", b"\n"]))
    return lead + head + encoded, defect, len(body)


def _chunks(draw, body, defect):
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body))), max_size=4))))
    pieces = [body[i:j] for i, j in zip([0] + cuts, cuts + [len(body)]) if body[i:j]]
    out = []
    for k, piece in enumerate(pieces):
        ext = draw(st.sampled_from([b"", b"", b";a", b";a=b", b';n="q v"']))
        size = b"%x" % len(piece)
        if draw(st.booleans()):
            size = size.upper()
        if k == 0 and defect == "bad_chunk_size":
            size = b"z" + size
        elif k == 0 and defect == "chunk_overflow":
            size = b"1" + b"0" * 17
        elif k == 0 and defect == "bad_extension":
            ext = b";a=\x01"
        end = b"XY" if k == 0 and defect == "bad_chunk_end" else b"\r\n"
        out.append(size + ext + b"\r\n" + piece + end)
    trailers = draw(st.sampled_from([b"", b"", b"X-T: 1\r\n"]))
    if defect == "bad_trailer":
        trailers = b"X T: 1\r\n"
    out.append(b"0\r\n" + trailers + b"\r\n")
    return b"".join(out)


# -- tproxy's side -----------------------------------------------------------------


def _bytes(s):
    return s if isinstance(s, bytes) else s.encode("latin-1")


_ADDED = {b"x-real-ip", b"x-forwarded-for", b"x-forwarded-proto", b"x-route-prefix",
          b"content-length", b"transfer-encoding", b"connection"}


def as_forwarded(request):
    """An upstream request in the reference's terms."""
    fields = [(_bytes(n).lower(), _bytes(v).strip(b" \t")) for n, v in request.headers.raw]
    host = [v for n, v in fields if n == b"host"]
    e2e = sorted((n, v) for n, v in fields if n not in _ADDED and n != b"host")
    return (request.method.encode("ascii"), _bytes(request.uri),
            [(b"host", host[0] if host else None)] + e2e, request.body)


class Gateway(object):
    """One harness for a test's examples, a fresh connection for each."""

    def __init__(self):
        self.h = Harness(config={"upstreams": {"default": {"peers": [PEER]}},
                                 "proxy": {"max_body_size": LIMIT,
                                           "client_body_buffer_size": BUFFER}},
                         plugins=["router", "least_conn"], servers={PEER: echo})

    def outcome(self, data, cuts=()):
        """``(statuses, forwarded requests, closed)`` for ``data`` cut at ``cuts``."""
        h = self.h
        seen = len(h.upstream_requests)
        conn = h.connect()
        last = 0
        for cut in list(cuts) + [len(data)]:
            if cut > last:
                conn.send(data[last:cut])
                last = cut
        statuses = tuple(r.status for r in
                         parse_responses(conn.received, closed=conn.closed)[0])
        forwarded = tuple(as_forwarded(r) for r in h.upstream_requests[seen:])
        closed = conn.closed
        if not closed:
            conn.close()
        return statuses, forwarded, closed


# -- the properties (run by tests.test_fuzz; ``self`` is its test case) ------------

def check(self, data, outcome, defects):
    """``outcome`` (of :meth:`Gateway.outcome`) is what the reference
    parser reads in ``data``; ``defects``: what the generator meant."""
    statuses, forwarded, closed = outcome
    expected, end = reference(data)
    # every forwarded request is exactly the reference's, in order
    self.assertEqual(list(forwarded), expected[:len(forwarded)], data)
    ok = [s for s in statuses if s == 200]
    self.assertEqual(len(ok), len(forwarded), (statuses, data))
    self.assertEqual(statuses[:len(ok)], tuple(ok), (statuses, data))
    refused = statuses[len(ok):]
    self.assertLessEqual(len(refused), 1, (statuses, data))
    if refused:
        self.assertIn(refused[0], REFUSALS, data)
        self.assertTrue(closed, data)
    if end == "incomplete" and not refused:
        self.assertEqual(len(forwarded), len(expected), data)
    # what the generator meant: valid requests pass, unless too large
    for i, (defect, size) in enumerate(defects):
        if defect is not None or size > LIMIT:
            self.assertEqual(len(forwarded), i, (statuses, data))
            self.assertEqual(refused and refused[0] in REFUSALS, True, (statuses, data))
            break
        self.assertGreater(len(forwarded), i, (statuses, data))


@FUZZ
@given(st.lists(requests(), min_size=1, max_size=3),
       st.lists(st.integers(min_value=0), max_size=5))
def pipelines(self, pipeline, cuts):
    """Whole and cut at random places: the same answers, each a refusal
    or the reference's request (``self.gateway``: a :class:`Gateway`)."""
    data = b"".join(d for d, _, _ in pipeline)
    defects = [(defect, size) for _, defect, size in pipeline]
    whole = self.gateway.outcome(data)
    check(self, data, whole, defects)
    cut = sorted(set(c % len(data) for c in cuts))
    assert_same(self, self.gateway.outcome(data, cut), whole, (data, cut))
    if LONG:
        for i in range(1, len(data)):
            assert_same(self, self.gateway.outcome(data, [i]), whole, (data, i))


def assert_same(self, outcome, whole, msg):
    """The same outcome, except which refusal status: an unknown method
    is a 501 when it starts the read that fails, else a 400 (the parser
    does not say where the failing request began)."""
    if outcome != whole:
        self.assertEqual(outcome[1:], whole[1:], msg)
        self.assertEqual(len(outcome[0]), len(whole[0]), msg)
        self.assertEqual(outcome[0][:-1], whole[0][:-1], msg)
        self.assertEqual({outcome[0][-1], whole[0][-1]}, {400, 501}, msg)


@FUZZ
@given(st.lists(requests(), min_size=1, max_size=3),
       st.lists(st.integers(min_value=0), max_size=5))
def same_callbacks(self, pipeline, cuts):
    """httptools and the pure-Python parser, on the same generated bytes:
    the same callbacks, or both reject."""
    data = b"".join(d for d, _, _ in pipeline)
    cut = sorted(set(c % len(data) for c in cuts if c % len(data)))
    ht_events, ht_error, _ = feed(httptools, data)
    py_events, py_error, py_parser = feed(pyparser, data, cuts=cut)
    if ht_error is not None or py_error is not None:
        self.assertIsNotNone(ht_error, (data, py_error))
        if py_error is None:
            # pyparser reports an error in a head once the head is complete
            self.assertRaises(pyparser.HttpParserError, py_parser.feed_data,
                              b"\r\n\r\n" * 3)
        # both reject: the callbacks before the error may differ
        return
    if py_events != ht_events:
        # httptools reports the start of an incomplete head early
        self.assertEqual(ht_events[:len(py_events)], py_events, data)
        for event in ht_events[len(py_events):]:
            self.assertIn(event[0], ("begin", "url", "header"), data)
