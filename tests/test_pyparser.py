# -*- test-case-name: tests.test_pyparser -*-
"""
Tests for tproxy.http.pyparser, the pure-Python replacement of httptools.

Every vector runs through both parsers: ``ParserTestsMixin`` holds the
tests, ``PyParserTests`` and ``HttptoolsTests`` bind them to each module, so
both must produce the same (expected) callbacks and reject the same
malformed input.  ``PyParserStrictnessTests`` covers where pyparser is
deliberately stricter than httptools, and ``DifferentialTests`` compares the
two on random mutations of valid messages.

Callbacks are recorded as tuples.  ``on_url``, ``on_status`` and ``on_body``
may legitimately be split into several calls (httptools calls ``on_url``
and ``on_status`` once per ``feed_data`` call the value spans, sometimes
with ``b""``; pyparser calls them once): ``normalize`` joins consecutive
pieces and drops empty bodies.
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from tproxy.http import pyparser

try:
    import httptools
except ImportError:  # pragma: no cover (depends on the interpreter)
    httptools = None

HTTPTOOLS_SKIP = (
    None if httptools is not None else
    "httptools is not importable here (e.g. PyPy): nothing to compare with")

BEGIN = ("begin",)
CHUNK = ("chunk_header",)
CHUNK_END = ("chunk_complete",)
URL = "url"
STATUS = "status"
HEADER = "header"
BODY = "body"
# (HEADERS | COMPLETE, version, keep-alive, upgrade, method or status code):
# the parser's state as seen from on_headers_complete / on_message_complete.
HEADERS = "headers_complete"
COMPLETE = "message_complete"


class Recorder(object):
    """A protocol recording every callback, and the parser's state."""

    def __init__(self):
        self.events = []
        self.parser = None

    def _state(self, what):
        p = self.parser
        last = p.get_method() if hasattr(p, "get_method") else p.get_status_code()
        return (what, p.get_http_version(), p.should_keep_alive(),
                p.should_upgrade(), last)

    def on_message_begin(self):
        self.events.append(BEGIN)

    def on_url(self, url):
        self.events.append((URL, url))

    def on_status(self, status):
        self.events.append((STATUS, status))

    def on_header(self, name, value):
        self.events.append((HEADER, name, value))

    def on_headers_complete(self):
        self.events.append(self._state(HEADERS))

    def on_body(self, body):
        self.events.append((BODY, body))

    def on_message_complete(self):
        self.events.append(self._state(COMPLETE))

    def on_chunk_header(self):
        self.events.append(CHUNK)

    def on_chunk_complete(self):
        self.events.append(CHUNK_END)


def normalize(events):
    """Join split url/status/body pieces; drop empty bodies."""
    out = []
    for event in events:
        if event[0] in (URL, STATUS, BODY):
            if out and out[-1][0] == event[0]:
                out[-1] = (event[0], out[-1][1] + event[1])
                continue
            event = (event[0], bytes(event[1]))
        out.append(event)
    return [e for e in out if e != (BODY, b"")]


def split_points(length, how, seed=0):
    """Where to cut a message of ``length`` bytes: whole, bytewise, random."""
    if how == "whole":
        return []
    if how == "bytewise":
        return list(range(1, length))
    rnd = random.Random("%s-%s" % (length, seed))
    return sorted(rnd.sample(range(1, length), min(length - 1, rnd.randint(1, 6))))



# -- valid messages and their callbacks (checked against httptools 0.9.0) ----

REQUESTS = [
    ('simple_get',
     b'GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n',
     [
         BEGIN,
         (URL, b'/index.html?q=1'),
         (HEADER, b'Host', b'example.com'),
         (HEADER, b'Accept', b'*/*'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
     ]),
    ('header_whitespace',
     b'GET / HTTP/1.1\r\nA:b\r\nB: \t c d \t\r\nEmpty:\r\nBlank: \t \r\nObs: \x80\xff\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'A', b'b'),
         (HEADER, b'B', b'c d \t'),
         (HEADER, b'Empty', b''),
         (HEADER, b'Blank', b''),
         (HEADER, b'Obs', b'\x80\xff'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
     ]),
    ('post_content_length',
     b'POST /submit HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world',
     [
         BEGIN,
         (URL, b'/submit'),
         (HEADER, b'Host', b'h'),
         (HEADER, b'Content-Length', b'11'),
         (HEADERS, '1.1', True, False, b'POST'),
         (BODY, b'hello world'),
         (COMPLETE, '1.1', True, False, b'POST'),
     ]),
    ('content_length_zero_padded',
     b'PUT /x HTTP/1.1\r\nContent-Length: 003 \t\r\n\r\nabc',
     [
         BEGIN,
         (URL, b'/x'),
         (HEADER, b'Content-Length', b'003 \t'),
         (HEADERS, '1.1', True, False, b'PUT'),
         (BODY, b'abc'),
         (COMPLETE, '1.1', True, False, b'PUT'),
     ]),
    ('chunked_extensions_trailers',
     b'POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;q="quo\\"ted;x"\r\nhello\r\nA;ext\r\n0123456789\r\n0;last\r\nChecksum: abc\r\nX-Trailer: 1\r\n\r\n',
     [
         BEGIN,
         (URL, b'/up'),
         (HEADER, b'Transfer-Encoding', b'chunked'),
         (HEADERS, '1.1', True, False, b'POST'),
         CHUNK,
         (BODY, b'hello'),
         CHUNK_END,
         CHUNK,
         (BODY, b'0123456789'),
         CHUNK_END,
         CHUNK,
         (HEADER, b'Checksum', b'abc'),
         (HEADER, b'X-Trailer', b'1'),
         CHUNK_END,
         (COMPLETE, '1.1', True, False, b'POST'),
     ]),
    ('chunked_uppercase_hex',
     b'POST / HTTP/1.1\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n00000000000000000000000000B\r\nhello world\r\n0\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'Transfer-Encoding', b'gzip, CHUNKED'),
         (HEADERS, '1.1', True, False, b'POST'),
         CHUNK,
         (BODY, b'hello world'),
         CHUNK_END,
         CHUNK,
         CHUNK_END,
         (COMPLETE, '1.1', True, False, b'POST'),
     ]),
    ('pipelined',
     b'GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\nGET /4 HTTP/1.1\r\n\r\n',
     [
         BEGIN,
         (URL, b'/1'),
         (HEADER, b'Host', b'h'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
         BEGIN,
         (URL, b'/2'),
         (HEADER, b'Content-Length', b'3'),
         (HEADERS, '1.1', True, False, b'POST'),
         (BODY, b'abc'),
         (COMPLETE, '1.1', True, False, b'POST'),
         BEGIN,
         (URL, b'/3'),
         (HEADER, b'Transfer-Encoding', b'chunked'),
         (HEADERS, '1.1', True, False, b'POST'),
         CHUNK,
         (BODY, b'xy'),
         CHUNK_END,
         CHUNK,
         CHUNK_END,
         (COMPLETE, '1.1', True, False, b'POST'),
         BEGIN,
         (URL, b'/4'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
     ]),
    ('crlf_before_request',
     b'\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
         BEGIN,
         (URL, b'/2'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
     ]),
    ('http10_default_close',
     b'GET / HTTP/1.0\r\nHost: h\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'Host', b'h'),
         (HEADERS, '1.0', False, False, b'GET'),
         (COMPLETE, '1.0', False, False, b'GET'),
     ]),
    ('http10_keep_alive',
     b'GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n',
     [
         BEGIN,
         (URL, b'/a'),
         (HEADER, b'Connection', b'Keep-Alive'),
         (HEADERS, '1.0', True, False, b'GET'),
         (COMPLETE, '1.0', True, False, b'GET'),
         BEGIN,
         (URL, b'/b'),
         (HEADERS, '1.0', False, False, b'GET'),
         (COMPLETE, '1.0', False, False, b'GET'),
     ]),
    ('http11_close',
     b'GET / HTTP/1.1\r\nConnection: close\r\n\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'Connection', b'close'),
         (HEADERS, '1.1', False, False, b'GET'),
         (COMPLETE, '1.1', False, False, b'GET'),
     ]),
    ('connection_list',
     b'GET / HTTP/1.1\r\nConnection: keep-alive, foo,  Close \t\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'Connection', b'keep-alive, foo,  Close \t'),
         (HEADERS, '1.1', False, False, b'GET'),
         (COMPLETE, '1.1', False, False, b'GET'),
     ]),
    ('connection_not_close',
     b'GET / HTTP/1.1\r\nConnection: closed, close-ish\r\nProxy-Connection: x\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'Connection', b'closed, close-ish'),
         (HEADER, b'Proxy-Connection', b'x'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
     ]),
    ('proxy_connection_keep_alive',
     b'GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'Proxy-Connection', b'keep-alive'),
         (HEADERS, '1.0', True, False, b'GET'),
         (COMPLETE, '1.0', True, False, b'GET'),
     ]),
    ('request_targets',
     b'OPTIONS * HTTP/1.1\r\n\r\nGET http://user@example.com:8080/p?q#f HTTP/1.1\r\n\r\nGET /a"b{|}^`\\?x?y#z#?w HTTP/1.1\r\n\r\nM-SEARCH * HTTP/1.1\r\n\r\nDELETE //x HTTP/1.1\r\n\r\n',
     [
         BEGIN,
         (URL, b'*'),
         (HEADERS, '1.1', True, False, b'OPTIONS'),
         (COMPLETE, '1.1', True, False, b'OPTIONS'),
         BEGIN,
         (URL, b'http://user@example.com:8080/p?q#f'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
         BEGIN,
         (URL, b'/a"b{|}^`\\?x?y#z#?w'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
         BEGIN,
         (URL, b'*'),
         (HEADERS, '1.1', True, False, b'M-SEARCH'),
         (COMPLETE, '1.1', True, False, b'M-SEARCH'),
         BEGIN,
         (URL, b'//x'),
         (HEADERS, '1.1', True, False, b'DELETE'),
         (COMPLETE, '1.1', True, False, b'DELETE'),
     ]),
    ('many_spaces',
     b'GET   /x   HTTP/1.1\r\n\r\n',
     [
         BEGIN,
         (URL, b'/x'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
     ]),
    ('upgrade_header_without_connection',
     b'GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n',
     [
         BEGIN,
         (URL, b'/'),
         (HEADER, b'Upgrade', b'websocket'),
         (HEADERS, '1.1', True, False, b'GET'),
         (COMPLETE, '1.1', True, False, b'GET'),
     ]),
]
RESPONSES = [
    ('response_content_length',
     b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello',
     [
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Content-Length', b'5'),
         (HEADER, b'Content-Type', b'text/plain'),
         (HEADERS, '1.1', True, False, 200),
         (BODY, b'hello'),
         (COMPLETE, '1.1', True, False, 200),
     ]),
    ('response_chunked_trailers',
     b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nExpires: never\r\n\r\n',
     [
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Transfer-Encoding', b'chunked'),
         (HEADERS, '1.1', True, False, 200),
         CHUNK,
         (BODY, b'abc'),
         CHUNK_END,
         CHUNK,
         (HEADER, b'Expires', b'never'),
         CHUNK_END,
         (COMPLETE, '1.1', True, False, 200),
     ]),
    ('response_204_304',
     b'HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\nETag: "x"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n',
     [
         BEGIN,
         (STATUS, b'No Content'),
         (HEADERS, '1.1', True, False, 204),
         (COMPLETE, '1.1', True, False, 204),
         BEGIN,
         (STATUS, b'Not Modified'),
         (HEADER, b'Content-Length', b'42'),
         (HEADER, b'ETag', b'"x"'),
         (HEADERS, '1.1', True, False, 304),
         (COMPLETE, '1.1', True, False, 304),
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Content-Length', b'0'),
         (HEADERS, '1.1', True, False, 200),
         (COMPLETE, '1.1', True, False, 200),
     ]),
    ('response_1xx',
     b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx',
     [
         BEGIN,
         (STATUS, b'Continue'),
         (HEADERS, '1.1', True, False, 100),
         (COMPLETE, '1.1', True, False, 100),
         BEGIN,
         (STATUS, b'Early Hints'),
         (HEADER, b'Link', b'</s.css>'),
         (HEADERS, '1.1', True, False, 103),
         (COMPLETE, '1.1', True, False, 103),
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Content-Length', b'1'),
         (HEADERS, '1.1', True, False, 200),
         (BODY, b'x'),
         (COMPLETE, '1.1', True, False, 200),
     ]),
    ('response_until_eof',
     b'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this is body\r\nHTTP/1.1 200 OK\r\n\r\n',
     [
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Content-Type', b'text/plain'),
         (HEADERS, '1.1', False, False, 200),
         (BODY, b'all of this is body\r\nHTTP/1.1 200 OK\r\n\r\n'),
     ]),
    ('response_te_not_chunked',
     b'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nbody',
     [
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Transfer-Encoding', b'gzip'),
         (HEADERS, '1.1', False, False, 200),
         (BODY, b'body'),
     ]),
    ('response_http10',
     b'HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nokHTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n',
     [
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Content-Length', b'2'),
         (HEADER, b'Connection', b'keep-alive'),
         (HEADERS, '1.0', True, False, 200),
         (BODY, b'ok'),
         (COMPLETE, '1.0', True, False, 200),
         BEGIN,
         (STATUS, b'Not Found'),
         (HEADER, b'Content-Length', b'0'),
         (HEADERS, '1.0', False, False, 404),
         (COMPLETE, '1.0', False, False, 404),
     ]),
    ('response_reason_phrases',
     b'HTTP/1.1 200\r\nContent-Length: 0\r\n\r\nHTTP/1.1 201 \r\nContent-Length: 0\r\n\r\nHTTP/1.1 202  spaced\tout \x80\r\nContent-Length: 0\r\n\r\nHTTP/1.1 999 Whatever\r\nContent-Length: 0\r\n\r\n',
     [
         BEGIN,
         (HEADER, b'Content-Length', b'0'),
         (HEADERS, '1.1', True, False, 200),
         (COMPLETE, '1.1', True, False, 200),
         BEGIN,
         (STATUS, b''),
         (HEADER, b'Content-Length', b'0'),
         (HEADERS, '1.1', True, False, 201),
         (COMPLETE, '1.1', True, False, 201),
         BEGIN,
         (STATUS, b' spaced\tout \x80'),
         (HEADER, b'Content-Length', b'0'),
         (HEADERS, '1.1', True, False, 202),
         (COMPLETE, '1.1', True, False, 202),
         BEGIN,
         (STATUS, b'Whatever'),
         (HEADER, b'Content-Length', b'0'),
         (HEADERS, '1.1', True, False, 999),
         (COMPLETE, '1.1', True, False, 999),
     ]),
    ('response_close',
     b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
     [
         BEGIN,
         (STATUS, b'OK'),
         (HEADER, b'Content-Length', b'0'),
         (HEADER, b'Connection', b'close'),
         (HEADERS, '1.1', False, False, 200),
         (COMPLETE, '1.1', False, False, 200),
     ]),
]


# -- malformed messages: both parsers must raise HttpParserError ----------------

CHUNKED = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
BAD_REQUESTS = [
    # framing: Content-Length and Transfer-Encoding
    ("cl_and_te", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te_and_cl", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n"),
    ("duplicate_cl_same", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("duplicate_cl_different", b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    ("cl_list", b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc"),
    ("cl_plus", b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc"),
    ("cl_minus", b"POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\nabc"),
    ("cl_hex", b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc"),
    ("cl_underscore", b"POST / HTTP/1.1\r\nContent-Length: 1_0\r\n\r\nabc"),
    ("cl_inner_space", b"POST / HTTP/1.1\r\nContent-Length: 1 0\r\n\r\nabc"),
    ("cl_empty", b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\nabc"),
    ("cl_non_ascii_digit", b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa3\r\n\r\nabc"),
    ("cl_overflow", b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n"),
    ("te_identity", b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"),
    ("te_gzip_only", b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("te_chunked_not_last", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("te_chunked_twice", b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te_empty", b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\nContent-Length: 3\r\n\r\nabc"),
    ("te_xchunked", b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    # chunks
    ("chunk_size_not_hex", CHUNKED + b"g\r\nx\r\n0\r\n\r\n"),
    ("chunk_size_0x", CHUNKED + b"0x1\r\nx\r\n0\r\n\r\n"),
    ("chunk_size_signed", CHUNKED + b"-1\r\nx\r\n0\r\n\r\n"),
    ("chunk_size_plus", CHUNKED + b"+1\r\nx\r\n0\r\n\r\n"),
    ("chunk_size_empty", CHUNKED + b"\r\nx\r\n0\r\n\r\n"),
    ("chunk_size_space", CHUNKED + b"1 \r\nx\r\n0\r\n\r\n"),
    ("chunk_size_overflow", CHUNKED + b"10000000000000000\r\n"),
    ("chunk_size_bare_lf", CHUNKED + b"1\nx\r\n0\r\n\r\n"),
    ("chunk_size_bare_cr", CHUNKED + b"1\rx\r\n0\r\n\r\n"),
    ("chunk_data_too_long", CHUNKED + b"1\r\nxx\r\n0\r\n\r\n"),
    ("chunk_data_bare_lf", CHUNKED + b"1\r\nx\n0\r\n\r\n"),
    ("chunk_data_no_crlf", CHUNKED + b"1\r\nx0\r\n\r\n"),
    ("chunk_ext_empty", CHUNKED + b"1;\r\nx\r\n0\r\n\r\n"),
    ("chunk_ext_space", CHUNKED + b"1; a=b\r\nx\r\n0\r\n\r\n"),
    ("chunk_ext_space_before_eq", CHUNKED + b"1;a =b\r\nx\r\n0\r\n\r\n"),
    ("chunk_ext_bad_value", CHUNKED + b"1;a=b=c\r\nx\r\n0\r\n\r\n"),
    ("chunk_ext_ctl_in_quotes", CHUNKED + b'1;a="\x00"\r\nx\r\n0\r\n\r\n'),
    ("chunk_ext_unterminated_quote", CHUNKED + b'1;a="b\r\nx\r\n0\r\n\r\n'),
    ("last_chunk_bare_lf", CHUNKED + b"0\r\n\n"),
    ("trailer_content_length", CHUNKED + b"0\r\nContent-Length: 1\r\n\r\n"),
    ("trailer_obs_fold", CHUNKED + b"0\r\nA: b\r\n c\r\n\r\n"),
    ("trailer_nul", CHUNKED + b"0\r\nA: \x00\r\n\r\n"),
    # header syntax
    ("obs_fold_space", b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
    ("obs_fold_tab", b"GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"),
    ("obs_fold_transfer_encoding", b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"),
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n"),
    ("tab_before_colon", b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"),
    ("space_before_first_header", b"GET / HTTP/1.1\r\n Host: h\r\n\r\n"),
    ("header_without_colon", b"GET / HTTP/1.1\r\nHost\r\n\r\n"),
    ("empty_header_name", b"GET / HTTP/1.1\r\n: h\r\n\r\n"),
    ("separator_in_name", b"GET / HTTP/1.1\r\nA(b): c\r\n\r\n"),
    ("ctl_in_name", b"GET / HTTP/1.1\r\nA\x01: c\r\n\r\n"),
    ("non_ascii_name", b"GET / HTTP/1.1\r\nX-\xff: c\r\n\r\n"),
    ("nul_in_value", b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n"),
    ("ctl_in_value", b"GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n"),
    ("del_in_value", b"GET / HTTP/1.1\r\nA: b\x7fc\r\n\r\n"),
    ("cr_in_value", b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"),
    ("bare_lf_after_header", b"GET / HTTP/1.1\r\nA: b\nC: d\r\n\r\n"),
    ("bare_lf_end_of_head", b"GET / HTTP/1.1\r\nA: b\r\n\n"),
    ("bare_lf_request_line", b"GET / HTTP/1.1\nA: b\r\n\r\n"),
    ("bare_lf_only", b"GET / HTTP/1.1\n\n"),
    ("bare_cr_request_line", b"GET / HTTP/1.1\rA: b\r\n\r\n"),
    # request line
    ("lowercase_method", b"get / HTTP/1.1\r\n\r\n"),
    ("unknown_method", b"FOO / HTTP/1.1\r\n\r\n"),
    ("method_prefix", b"GETX / HTTP/1.1\r\n\r\n"),
    ("no_space_after_method", b"GET\r\n\r\n"),
    ("tls_client_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
    ("version_1_2", b"GET / HTTP/1.2\r\n\r\n"),
    ("version_3", b"GET / HTTP/3.0\r\n\r\n"),
    ("version_two_digits", b"GET / HTTP/1.10\r\n\r\n"),
    ("version_lowercase", b"GET / http/1.1\r\n\r\n"),
    ("version_no_dot", b"GET / HTTP/11\r\n\r\n"),
    ("space_after_version", b"GET / HTTP/1.1 \r\n\r\n"),
    ("space_in_target", b"GET /a b HTTP/1.1\r\n\r\n"),
    ("tab_in_target", b"GET /a\tb HTTP/1.1\r\n\r\n"),
    ("nul_in_target", b"GET /a\x00b HTTP/1.1\r\n\r\n"),
    ("del_in_target", b"GET /a\x7fb HTTP/1.1\r\n\r\n"),
    ("non_ascii_target", b"GET /a\x80b HTTP/1.1\r\n\r\n"),
    ("missing_target", b"GET  HTTP/1.1\r\n\r\n"),
    ("relative_target", b"GET a/b HTTP/1.1\r\n\r\n"),
    ("bad_scheme", b"GET h1tp://h/ HTTP/1.1\r\n\r\n"),
    ("scheme_single_slash", b"GET http:/h/ HTTP/1.1\r\n\r\n"),
    ("double_at_in_host", b"GET http://u@@h/ HTTP/1.1\r\n\r\n"),
    ("bad_char_in_host", b"GET http://h<x/ HTTP/1.1\r\n\r\n"),
    ("connect_fragment", b"CONNECT h#:1 HTTP/1.1\r\n\r\n"),
    # connection management
    ("data_after_close", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
    ("data_after_http10", b"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"),
]
BAD_RESPONSES = [
    ("status_two_digits", b"HTTP/1.1 20 OK\r\n\r\n"),
    ("status_four_digits", b"HTTP/1.1 2000 OK\r\n\r\n"),
    ("status_not_digits", b"HTTP/1.1 2x0 OK\r\n\r\n"),
    ("status_missing", b"HTTP/1.1 \r\n\r\n"),
    ("status_two_spaces", b"HTTP/1.1  200 OK\r\n\r\n"),
    ("status_no_reason_separator", b"HTTP/1.1 200OK\r\n\r\n"),
    ("not_http", b"HTX/1.1 200 OK\r\n\r\n"),
    ("version_1_2", b"HTTP/1.2 200 OK\r\n\r\n"),
    ("bare_lf_status_line", b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"),
    ("cl_and_te", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("duplicate_cl", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"),
    ("cl_negative", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
    ("nul_in_value", b"HTTP/1.1 200 OK\r\nA: \x00\r\n\r\n"),
    ("obs_fold", b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\nContent-Length: 0\r\n\r\n"),
    ("chunk_size_not_hex", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nz\r\n"),
    ("switching_protocols_without_upgrade", b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
    ("data_after_close", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
]


def feed(module, data, response=False, cuts=(), protocol=None):
    """
    Feed ``data``, cut at ``cuts``, to a parser of ``module``; return
    (normalized events, the exception raised or None, the parser).
    """
    protocol = protocol if protocol is not None else Recorder()
    cls = module.HttpResponseParser if response else module.HttpRequestParser
    parser = protocol.parser = cls(protocol)
    error = None
    previous = 0
    try:
        for cut in list(cuts) + [len(data)]:
            parser.feed_data(data[previous:cut])
            previous = cut
    except Exception as e:
        error = e
    return normalize(protocol.events), error, parser


class ParserTestsMixin(object):
    """Tests run against ``self.module``: pyparser or httptools."""

    module = None

    def feed(self, data, response=False, cuts=(), protocol=None):
        return feed(self.module, data, response, cuts, protocol)

    def assertParses(self, data, expected, response=False):
        """Whole, byte by byte and in random pieces: the same callbacks."""
        for how, seed in [("whole", 0), ("bytewise", 0), ("random", 1),
                          ("random", 2), ("random", 3)]:
            cuts = split_points(len(data), how, seed)
            events, error, _ = self.feed(data, response, cuts)
            self.assertIsNone(error, "%s, cut at %s" % (how, cuts))
            self.assertEqual(events, expected, "%s, cut at %s" % (how, cuts))

    def assertRejects(self, data, response=False):
        """Whole and byte by byte: HttpParserError (or a subclass)."""
        for how in ("whole", "bytewise"):
            events, error, parser = self.feed(
                data, response, split_points(len(data), how))
            self.assertIsInstance(error, self.module.HttpParserError, how)
            self.assertNotIsInstance(error, self.module.HttpParserCallbackError)
            # The parser is dead now.
            self.assertRaises(self.module.HttpParserError, parser.feed_data,
                              b"GET / HTTP/1.1\r\n\r\n")
        return error

    # -- framing of large bodies ------------------------------------------

    def test_large_content_length_body_in_64k_pieces(self):
        """
        10 MiB fed in 64 KiB memoryview pieces arrive whole, in one message
        (no quadratic behaviour: this would take minutes otherwise).
        """
        size = 10 * 1024 * 1024
        data = (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % size
                + b"x" * size)
        self._count_body(data, size)

    def test_large_chunked_body_in_64k_pieces(self):
        chunk = b"y" * 100000
        data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (b"%x;n=1\r\n%s\r\n" % (len(chunk), chunk)) * 105
                + b"0\r\nT: 1\r\n\r\n")
        self._count_body(data, 105 * len(chunk))

    def _count_body(self, data, size):
        received = []
        done = []
        parser = self.module.HttpRequestParser(
            type("P", (), {"on_body": lambda s, b: received.append(len(b)),
                           "on_message_complete": lambda s: done.append(1)})())
        view = memoryview(data)
        for i in range(0, len(data), 65536):
            parser.feed_data(view[i:i + 65536])
        self.assertEqual((sum(received), done), (size, [1]))

    # -- API details ---------------------------------------------------------

    def test_input_types(self):
        """bytes, bytearray and memoryview are accepted."""
        data = b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nab"
        for wrap in (bytes, bytearray, memoryview):
            protocol = Recorder()
            parser = protocol.parser = self.module.HttpRequestParser(protocol)
            parser.feed_data(wrap(data))
            self.assertEqual(normalize(protocol.events)[-2:], [
                (BODY, b"ab"), (COMPLETE, "1.1", True, False, b"POST")])

    def test_callbacks_are_optional(self):
        """A protocol without callbacks is fine."""
        parser = self.module.HttpRequestParser(object())
        parser.feed_data(REQUESTS[2][1])
        self.assertEqual(parser.get_method(), b"POST")
        parser = self.module.HttpResponseParser(object())
        parser.feed_data(RESPONSES[1][1])
        self.assertEqual(parser.get_status_code(), 200)

    def test_set_dangerous_leniencies(self):
        """Accepted (pyparser ignores it), and the parser stays strict: a NUL
        in a header value is refused after the call."""
        protocol = Recorder()
        parser = protocol.parser = self.module.HttpRequestParser(protocol)
        self.assertIsNone(parser.set_dangerous_leniencies(lenient_headers=False))
        self.assertRaises(self.module.HttpParserError, parser.feed_data,
                          b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n")

    def test_keep_alive_is_reset_after_the_message(self):
        """
        should_keep_alive() is only meaningful inside the callbacks: once
        the message is complete its flags are reset (llhttp behaviour).
        """
        events, error, parser = self.feed(
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        self.assertEqual(events[-1], (COMPLETE, "1.1", False, False, b"GET"))
        self.assertTrue(parser.should_keep_alive())

    def test_response_until_eof_never_completes(self):
        """
        Without Content-Length or chunked coding, a response ends with the
        connection: there is no end-of-input call, so no
        on_message_complete; the caller ends the message on connection
        close (should_keep_alive() is False at on_headers_complete).
        """
        protocol = Recorder()
        events, error, parser = self.feed(
            b"HTTP/1.1 200 OK\r\n\r\npart 1", True, protocol=protocol)
        parser.feed_data(b"")
        parser.feed_data(b"part 2")
        self.assertIsNone(error)
        self.assertEqual(normalize(protocol.events), [
            BEGIN, (STATUS, b"OK"), (HEADERS, "1.1", False, False, 200),
            (BODY, b"part 1part 2")])

    def test_response_to_head_waits_for_body(self):
        """
        The parser cannot know a response answers HEAD: it waits for the
        body announced.  The caller must end the message itself at
        on_headers_complete and not reuse this parser.
        """
        events, error, parser = self.feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", response=True)
        self.assertEqual(events[-1], (HEADERS, "1.1", True, False, 200))

    # -- early errors -------------------------------------------------------

    def test_early_error_on_garbage(self):
        """A TLS handshake (no line end) fails at once, not at a limit."""
        parser = self.module.HttpRequestParser(object())
        self.assertRaises(self.module.HttpParserInvalidMethodError,
                          parser.feed_data, b"\x16\x03\x01\x02\x00\x01\x00")

    def test_early_error_on_bare_lf(self):
        """A bare LF fails at once, even if the head never completes."""
        parser = self.module.HttpRequestParser(object())
        parser.feed_data(b"GET / HTTP/1.1\r\nHost: x")
        self.assertRaises(self.module.HttpParserError,
                          parser.feed_data, b"\nA: b")

    def test_early_error_on_bare_cr(self):
        parser = self.module.HttpRequestParser(object())
        parser.feed_data(b"GET / HTTP/1.1\r\nHost: x\r")
        self.assertRaises(self.module.HttpParserError,
                          parser.feed_data, b"A: b")

    def test_early_error_on_response(self):
        parser = self.module.HttpResponseParser(object())
        self.assertRaises(self.module.HttpParserError,
                          parser.feed_data, b"SSH-2.0-OpenSSH")

    # -- upgrades -------------------------------------------------------------

    def assertUpgrade(self, pieces, response=False):
        """
        Feed ``pieces``; the last must raise HttpParserUpgrade.  Return the
        events and the offset.
        """
        protocol = Recorder()
        cls = (self.module.HttpResponseParser if response
               else self.module.HttpRequestParser)
        parser = protocol.parser = cls(protocol)
        for piece in pieces[:-1]:
            parser.feed_data(piece)
        e = self.assertRaises(self.module.HttpParserUpgrade,
                              parser.feed_data, pieces[-1])
        return protocol, e.args[0], parser

    def test_websocket_upgrade(self):
        head = (b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n")
        for cut in (0, 10, len(head) - 1):
            pieces = [head[:cut], head[cut:] + b"\x81\x05hello"]
            protocol, offset, _ = self.assertUpgrade(pieces)
            self.assertEqual(pieces[-1][offset:], b"\x81\x05hello")
            self.assertEqual(normalize(protocol.events)[-2:], [
                (HEADERS, "1.1", True, True, b"GET"),
                (COMPLETE, "1.1", True, True, b"GET")])

    def test_upgrade_skips_announced_body(self):
        """With an upgrade, what follows the head is the other protocol."""
        data = (b"POST / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: x\r\n"
                b"Content-Length: 3\r\n\r\nabcdef")
        protocol, offset, _ = self.assertUpgrade([data])
        self.assertEqual(data[offset:], b"abcdef")
        self.assertNotIn(BODY, [e[0] for e in protocol.events])

    def test_connect(self):
        data = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n\x16\x03"
        protocol, offset, parser = self.assertUpgrade([data])
        self.assertEqual(data[offset:], b"\x16\x03")
        events = normalize(protocol.events)
        self.assertEqual(events[1], (URL, b"example.com:443"))
        self.assertEqual(events[-1], (COMPLETE, "1.1", True, True, b"CONNECT"))

    def test_http_after_upgrade(self):
        """Feeding on after HttpParserUpgrade parses HTTP again."""
        protocol, offset, parser = self.assertUpgrade(
            [b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n"])
        del protocol.events[:]
        parser.feed_data(b"GET /next HTTP/1.1\r\n\r\n")
        self.assertEqual(normalize(protocol.events), [
            BEGIN, (URL, b"/next"), (HEADERS, "1.1", True, False, b"GET"),
            (COMPLETE, "1.1", True, False, b"GET")])

    def test_response_101(self):
        data = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n\x81\x00")
        protocol, offset, _ = self.assertUpgrade([data], response=True)
        self.assertEqual(data[offset:], b"\x81\x00")
        self.assertEqual(protocol.events[-1], (COMPLETE, "1.1", True, True, 101))

    def test_upgrade_headers_in_200_response(self):
        """Upgrade in a non-101 response is informational."""
        data = (b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
                b"Content-Length: 2\r\n\r\nok")
        self.assertParses(data, [
            BEGIN, (STATUS, b"OK"), (HEADER, b"Connection", b"upgrade"),
            (HEADER, b"Upgrade", b"h2c"), (HEADER, b"Content-Length", b"2"),
            (HEADERS, "1.1", True, False, 200), (BODY, b"ok"),
            (COMPLETE, "1.1", True, False, 200)], response=True)

    # -- callback errors ----------------------------------------------------

    def test_callback_errors(self):
        """
        An exception in a callback leaves feed_data as
        HttpParserCallbackError, whose __context__ is the original; the
        parser is dead afterwards.
        """
        data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nA: b\r\n\r\n"
                b"1\r\nx\r\n0\r\n\r\n")
        for name in ["on_message_begin", "on_url", "on_header",
                     "on_headers_complete", "on_body", "on_chunk_header",
                     "on_chunk_complete", "on_message_complete"]:
            boom = ValueError(name)

            def fail(*args):
                raise boom
            protocol = Recorder()
            setattr(protocol, name, fail)
            parser = protocol.parser = self.module.HttpRequestParser(protocol)
            e = self.assertRaises(self.module.HttpParserCallbackError,
                                  parser.feed_data, data)
            self.assertIs(e.__context__, boom, name)
            self.assertIsNone(e.__cause__)
            self.assertRaises(self.module.HttpParserCallbackError,
                              parser.feed_data, b"GET / HTTP/1.1\r\n\r\n")

    def test_callback_error_in_response(self):
        protocol = Recorder()
        protocol.on_status = lambda status: 1 / 0
        parser = self.module.HttpResponseParser(protocol)
        e = self.assertRaises(self.module.HttpParserCallbackError,
                              parser.feed_data, b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertIsInstance(e.__context__, ZeroDivisionError)

    def test_exception_hierarchy(self):
        m = self.module
        for cls in (m.HttpParserCallbackError, m.HttpParserInvalidStatusError,
                    m.HttpParserInvalidMethodError, m.HttpParserInvalidURLError):
            self.assertTrue(issubclass(cls, m.HttpParserError))
        self.assertFalse(issubclass(m.HttpParserUpgrade, m.HttpParserError))

    def test_error_classes(self):
        m = self.module
        e = self.assertRejects(b"FOO / HTTP/1.1\r\n\r\n")
        self.assertIsInstance(e, m.HttpParserInvalidMethodError)
        e = self.assertRejects(b"GET /\x7f HTTP/1.1\r\n\r\n")
        self.assertIsInstance(e, m.HttpParserInvalidURLError)
        e = self.assertRejects(b"HTTP/1.1 20 OK\r\n\r\n", response=True)
        self.assertIsInstance(e, m.HttpParserInvalidStatusError)


def _add_vector_tests():
    """One test method per vector, on the mixin."""
    def parses(data, expected, response):
        return lambda self: self.assertParses(data, expected, response)

    def rejects(data, response):
        return lambda self: self.assertRejects(data, response) and None

    for name, data, expected in REQUESTS:
        setattr(ParserTestsMixin, "test_request_" + name,
                parses(data, expected, False))
    for name, data, expected in RESPONSES:
        setattr(ParserTestsMixin, "test_" + name, parses(data, expected, True))
    for name, data in BAD_REQUESTS:
        setattr(ParserTestsMixin, "test_reject_request_" + name,
                rejects(data, False))
    for name, data in BAD_RESPONSES:
        setattr(ParserTestsMixin, "test_reject_response_" + name,
                rejects(data, True))


_add_vector_tests()


class PyParserTests(ParserTestsMixin, SynchronousTestCase):
    module = pyparser


class HttptoolsTests(ParserTestsMixin, SynchronousTestCase):
    module = httptools
    skip = HTTPTOOLS_SKIP


# -- where pyparser is deliberately stricter than httptools -------------------

STRICTER_REQUESTS = [
    # HTTP/0.9-style request lines: llhttp parses headers and a body after
    # them, and reads "/pHTTP/1.1" below as the target of a 0.9 request.
    ("http09", b"GET /\r\n\r\n"),
    ("http09_hides_version", b"POST /pHTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
    ("http09_connect", b"CONNECT  HTTP/1.1\r\n\r\n"),
    # Other protocols llhttp knows.
    ("rtsp", b"DESCRIBE / RTSP/1.0\r\n\r\n"),
    ("rtsp_get", b"GET / RTSP/1.0\r\n\r\n"),
    ("icecast", b"SOURCE / ICE/1.0\r\n\r\n"),
    # Sizes that do not fit a signed 64-bit integer.
    ("cl_2_63", b"POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n"),
    ("chunk_2_63", CHUNKED + b"8000000000000000\r\n"),
]

STRICTER_RESPONSES = [
    ("status_000", b"HTTP/1.1 000 Zero\r\n\r\n"),
    ("status_099", b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n"),
    ("nul_in_reason", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"),
    ("ctl_in_reason", b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n"),
    ("del_in_reason", b"HTTP/1.1 200 O\x7fK\r\nContent-Length: 0\r\n\r\n"),
    ("icecast", b"ICE/1.0 200 OK\r\n\r\n"),
]


class PyParserStrictnessTests(SynchronousTestCase):
    """pyparser-only behaviour (httptools differs: see the module doc)."""

    module = pyparser
    feed = ParserTestsMixin.feed
    assertRejects = ParserTestsMixin.assertRejects

    def test_stricter(self):
        for name, data in STRICTER_REQUESTS:
            self.assertRejects(data)
        for name, data in STRICTER_RESPONSES:
            self.assertRejects(data, response=True)

    def test_largest_sizes(self):
        """2**63 - 1 is still accepted (as a declaration)."""
        events, error, _ = self.feed(
            b"POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n")
        self.assertEqual(events[-1][0], HEADERS)
        events, error, _ = self.feed(CHUNKED + b"7fffffffffffffff\r\n")
        self.assertEqual((events[-1], error), (CHUNK, None))

    def test_invalid_request_transfer_encoding_before_headers_complete(self):
        """
        httptools calls on_headers_complete, then fails; pyparser fails
        first, so the server never starts on such a request.
        """
        events, error, _ = self.feed(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n")
        self.assertIsInstance(error, pyparser.HttpParserError)
        self.assertNotIn(HEADERS, [e[0] for e in events])

    def test_url_not_split(self):
        """on_url is called once, however the request line is fed."""
        protocol = Recorder()
        self.feed(b"GET /some/long/path?q=1 HTTP/1.1\r\n\r\n",
                  cuts=range(1, 30), protocol=protocol)
        self.assertEqual([e for e in protocol.events if e[0] == URL],
                         [(URL, b"/some/long/path?q=1")])

    def test_request_line_before_head_end(self):
        """
        A head that has not ended: its request line is reported as soon as
        it is complete (``on_url``, the method and version known), however
        it is cut (what the server logs for a ``408`` or a ``431``); the
        rest of the head is parsed when it comes.
        """
        data = b"GET /slow?a=1 HTTP/1.1\r\nHost: x\r\nX-A: b\r\n"
        whole, _, _ = self.feed(data + b"\r\n")
        for cuts in ([], [3], [22], [23], [24], range(1, len(data))):
            protocol = Recorder()
            events, error, parser = self.feed(data, cuts=cuts, protocol=protocol)
            self.assertIsNone(error, cuts)
            self.assertEqual(events[:2], [BEGIN, (URL, b"/slow?a=1")], cuts)
            self.assertEqual((parser.get_method(), parser.get_http_version()),
                             (b"GET", "1.1"), cuts)
            parser.feed_data(b"\r\n")
            self.assertEqual(normalize(protocol.events), whole, cuts)

    def test_invalid_request_line_before_head_end(self):
        """An invalid request line fails once it is complete, before the
        end of its head."""
        for line in (b"GET /a HTTP/1.1x", b"GET /a b HTTP/1.1", b"GET /\x7f HTTP/1.1",
                     b"GET /a HTTP/3.0", b"GET  HTTP/1.1", b"GET http://a@@b/ HTTP/1.1"):
            for cuts in ([], [len(line) + 1]):
                events, error, _ = self.feed(line + b"\r\nHost: x\r\n", cuts=cuts)
                self.assertIsInstance(error, self.module.HttpParserError, (line, cuts))
                self.assertNotIn(HEADER, [e[0] for e in events], (line, cuts))

    def test_no_empty_body_calls(self):
        protocol = Recorder()
        events, error, parser = self.feed(
            b"HTTP/1.1 200 OK\r\n\r\n", True, protocol=protocol)
        parser.feed_data(b"")
        self.assertNotIn(BODY, [e[0] for e in protocol.events])

    def test_chunk_line_limit(self):
        """A chunk-size line cannot grow without bound."""
        ext = b";a=" + b"b" * pyparser.MAX_CHUNK_LINE
        events, error, _ = self.feed(CHUNKED + ext)
        self.assertIsInstance(error, pyparser.HttpParserError)
        events, error, _ = self.feed(CHUNKED + b"1" + ext + b"\r\nx\r\n")
        self.assertIsInstance(error, pyparser.HttpParserError)
        # Just under the limit is fine, however it is cut.
        ext = ext[:pyparser.MAX_CHUNK_LINE - 10]
        data = CHUNKED + b"1" + ext + b"\r\nx\r\n0\r\n\r\n"
        for cuts in ([], range(len(CHUNKED), len(data), 1000)):
            events, error, _ = self.feed(data, cuts=cuts)
            self.assertEqual((events[-1][0], error), (COMPLETE, None))

    def test_trailers_limit(self):
        trailer = b"T: " + b"v" * 1000 + b"\r\n"
        many = trailer * (pyparser.MAX_TRAILERS // len(trailer) + 1)
        events, error, _ = self.feed(CHUNKED + b"0\r\n" + many)
        self.assertIsInstance(error, pyparser.HttpParserError)
        events, error, _ = self.feed(CHUNKED + b"0\r\n" + many + b"\r\n")
        self.assertIsInstance(error, pyparser.HttpParserError)
        events, error, _ = self.feed(CHUNKED + b"0\r\n" + trailer * 10 + b"\r\n",
                                     cuts=[60, 500, 5000])
        self.assertEqual((events[-1][0], error), (COMPLETE, None))

    def test_large_head_fed_bytewise(self):
        """A 25 KB head fed a byte at a time: linear, not quadratic.  After
        each feed the buffered part of the head has been searched for its
        end and checked for bad line ends up to its last byte, so the next
        feed looks at its own byte (and the three before it), not at the
        whole head again.  (What is asserted holds at every byte, whatever
        the head's size: 500 header lines are enough, 4000 cost 0.2 s of
        CPU for the same assertions.)"""
        head = (b"GET / HTTP/1.1\r\n"
                + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(500))
                + b"\r\n")
        headers = []
        parser = pyparser.HttpRequestParser(
            type("P", (), {"on_header": lambda s, n, v: headers.append(n)})())
        behind = []
        for i in range(len(head) - 1):
            parser.feed_data(head[i:i + 1])
            buffered = len(parser._buf)
            if parser._scan != buffered or parser._checked < buffered - 1:
                behind.append((i, buffered, parser._scan, parser._checked))
        parser.feed_data(head[-1:])
        self.assertEqual(behind, [])
        self.assertEqual(len(headers), 500)

    def test_dead_parser_repeats_error(self):
        parser = pyparser.HttpRequestParser(object())
        e1 = self.assertRaises(pyparser.HttpParserInvalidMethodError,
                               parser.feed_data, b"get / HTTP/1.1\r\n\r\n")
        e2 = self.assertRaises(pyparser.HttpParserInvalidMethodError,
                               parser.feed_data, b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(e1.args, e2.args)


class StartLineFastPathTests(SynchronousTestCase):
    """
    The usual request and status lines are checked without the expressions
    (``tproxy.http.pyhead``): every line, valid or not, gives the same
    callbacks and the same error as through the expressions alone.
    """

    REQUEST_LINES = [
        b"GET / HTTP/1.1", b"GET /a/b?c=d HTTP/1.0", b"M-SEARCH * HTTP/1.1",
        b"OPTIONS * HTTP/1.1", b"CONNECT a.b:443 HTTP/1.1", b"GET http://h/x HTTP/1.1",
        b"GET /x HTTP/2.0", b"GET /x HTTP/0.9", b"GET /x HTTP/1.2", b"GET /x HTTP/a.1",
        b"GET /x HTTP/1.", b"GET /x http/1.1", b"GET  /x HTTP/1.1", b"GET /x  HTTP/1.1",
        b"GET /x HTTP/1.1 ", b"GET\t/x HTTP/1.1", b"get /x HTTP/1.1", b"GE_T /x HTTP/1.1",
        b"PRI * HTTP/1.1", b"GET /\x00 HTTP/1.1", b"GET /\x7f HTTP/1.1",
        b"GET /\x80 HTTP/1.1", b"GET /a b HTTP/1.1", b"GET / HTTP/1.1x",
        b"GET HTTP/1.1", b" HTTP/1.1", b"GET /!~%2e HTTP/1.1", b"GET h:1 HTTP/1.1",
    ]
    STATUS_LINES = [
        b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found", b"HTTP/1.1 200", b"HTTP/1.1 200 ",
        b"HTTP/1.1 200  OK", b"HTTP/1.1 200 \tx", b"HTTP/1.1 200 \x00", b"HTTP/1.1 200 \x7f",
        b"HTTP/1.1 200 \x80\xff", b"HTTP/1.1 099 X", b"HTTP/1.1 2000 X", b"HTTP/1.1 20 X",
        b"HTTP/1.1 abc X", b"HTTP/2.0 200 OK", b"HTTP/3.0 200 OK", b"HTTP/1.a 200 OK",
        b"HTTP/11 200 OK", b"HTTP/1.1  200 OK", b"HTTP/1.1 200OK", b"http/1.1 200 OK",
        b"HTTP/1.1 999 Odd", b"HTTP/1.1 204 No Content",
    ]

    def _both(self, data, response):
        from tproxy.http import pyhead
        fast = feed(pyparser, data, response)
        self.patch(pyhead, "_FAST_LINES", False)
        slow = feed(pyparser, data, response)
        self.patch(pyhead, "_FAST_LINES", True)
        return fast, slow

    def _check(self, lines, response):
        for line in lines:
            data = line + b"\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
            fast, slow = self._both(data, response)
            self.assertEqual(fast[0], slow[0], line)
            self.assertEqual(type(fast[1]), type(slow[1]), line)
            self.assertEqual(fast[1] and fast[1].args, slow[1] and slow[1].args, line)
            if fast[1] is None:
                p, q = fast[2], slow[2]
                self.assertEqual(p.get_http_version(), q.get_http_version(), line)
                if response:
                    self.assertEqual(p.get_status_code(), q.get_status_code(), line)
                else:
                    self.assertEqual(p.get_method(), q.get_method(), line)

    def test_requestLines(self):
        self._check(self.REQUEST_LINES, False)

    def test_statusLines(self):
        self._check(self.STATUS_LINES, True)

    def test_fastLinesAccepted(self):
        """The usual lines do take the fast path: with the expressions
        broken, they still parse."""
        from tproxy.http import pyhead

        class Broken(object):
            def fullmatch(self, line):
                raise AssertionError("the expression was used for %r" % (line,))
        self.patch(pyhead, "_REQUEST_LINE", Broken())
        self.patch(pyhead, "_STATUS_LINE", Broken())
        for line in (b"GET /a?b HTTP/1.1", b"M-SEARCH * HTTP/1.0"):
            events, error, _ = feed(pyparser, line + b"\r\nHost: a\r\n\r\n")
            self.assertIsNone(error, line)
        for line in (b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found", b"HTTP/1.1 204"):
            events, error, _ = feed(pyparser, line + b"\r\nContent-Length: 0\r\n\r\n", True)
            self.assertIsNone(error, line)


# -- random mutations compared between the two parsers --------------------------

SEEDS_REQUESTS = [data for name, data, _ in REQUESTS]
SEEDS_RESPONSES = [data for name, data, _ in RESPONSES]
MUTATION_BYTES = b"\r\n :;,=\t\"\\\x00\x7f\x80aA0f9-/?#@"
MUTATION_WORDS = [b"\r\n", b"chunked", b"Content-Length: 1\r\n",
                  b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n",
                  b"HTTP/1.1", b" ", b"Connection: close\r\n", b"\r\n\r\n"]


def mutate(data, rnd):
    data = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.random()
        i = rnd.randrange(len(data) + 1)
        if op < 0.3 and len(data) > 1:
            del data[min(i, len(data) - 1)]
        elif op < 0.6:
            data[i:i] = bytes([rnd.choice(MUTATION_BYTES)])
        elif op < 0.8 and i < len(data):
            data[i] = rnd.choice(MUTATION_BYTES)
        else:
            data[i:i] = rnd.choice(MUTATION_WORDS)
    return bytes(data)


def deliberately_different(data, response, py_error):
    """The cases documented as differences (see the module doc)."""
    if py_error is None:
        return False
    message = str(py_error)
    if "HTTP/0.9" in message or "reason phrase" in message or "below 100" in message:
        return True
    if not response:
        return b" RTSP/" in data or b" ICE/" in data
    return b"ICE/" in data


class DifferentialTests(SynchronousTestCase):
    """pyparser and httptools agree on mutated messages, however cut."""

    skip = HTTPTOOLS_SKIP

    def test_mutations(self):
        rnd = random.Random(20240611)
        counts = dict.fromkeys(
            ["same", "both rejected", "upgrade", "deliberate", "later error",
             "early callbacks", "early line"], 0)
        for _ in range(1500):
            response = rnd.random() < 0.4
            data = mutate(rnd.choice(SEEDS_RESPONSES if response else SEEDS_REQUESTS), rnd)
            cuts = split_points(len(data), "random", rnd.random()) if len(data) > 1 else []
            ht_events, ht_error, _ = feed(httptools, data, response)
            py_events, py_error, py_parser = feed(pyparser, data, response, cuts)
            if ht_error is not None and py_error is not None:
                if isinstance(ht_error, httptools.HttpParserUpgrade):
                    self.assertIsInstance(py_error, pyparser.HttpParserUpgrade)
                    self.assertEqual(py_events, ht_events, repr(data))
                    counts["upgrade"] += 1
                    continue
                # Both reject it; the callbacks before the error may differ.
                self.assertIsInstance(ht_error, httptools.HttpParserError, repr(data))
                self.assertIsInstance(py_error, pyparser.HttpParserError, repr(data))
                counts["both rejected"] += 1
                continue
            if deliberately_different(data, response, py_error):
                counts["deliberate"] += 1
                continue
            line_parsed = not response and py_parser._state == pyparser._FIELDS
            if ht_error is not None and py_error is None:
                # pyparser reports errors in a head's fields when it is
                # complete (and in a request line when the line is).
                self.assertRaises(pyparser.HttpParserError,
                                  py_parser.feed_data, b"\r\n\r\n" * 3)
                counts["later error"] += 1
                continue
            self.assertIsNone(py_error, repr(data))
            counts["early line"] += line_parsed
            if py_events != ht_events:
                # httptools reports the start of an incomplete head early;
                # pyparser its request line once complete, not its fields.
                self.assertEqual(ht_events[:len(py_events)], py_events, repr(data))
                early = ((HEADER,) if line_parsed else ("begin", URL, STATUS, HEADER))
                for event in ht_events[len(py_events):]:
                    self.assertIn(event[0], early, repr(data))
                counts["early callbacks"] += 1
            else:
                counts["same"] += 1
        self.assertGreater(counts["same"], 200, counts)
        self.assertGreater(counts["both rejected"], 750, counts)
        self.assertGreater(counts["early line"], 2, counts)
        self.assertGreater(counts["later error"], 2, counts)
        self.assertGreater(counts["early callbacks"], 0, counts)
