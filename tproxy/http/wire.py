# -*- test-case-name: tests.test_proxy -*-
"""
The bytes of HTTP/1.1 as tproxy reads and writes them: pure functions, no
connection, no state.

- the request side: what each received field is (:func:`scan_request_fields`),
  the Host value's check (:func:`check_host`), the errors parsing raises
  (:class:`BadRequest`, :class:`Closing`) and the JSON answer written for
  them (:func:`error_response`); the request target is
  :mod:`tproxy.http.target`'s;
- the head sent upstream (:func:`upstream_request_head`, from
  :mod:`tproxy.http.upstream_head`);
- the response side: the head written to the client (:func:`response_head`)
  and the reason phrases (:func:`reason_for`); the upstream's fields cleaned
  of hop-by-hop ones are :mod:`tproxy.http.response_fields`'.
"""

import platform
import re
from http import HTTPStatus

from tproxy.context import Response
from tproxy.http.headers import HOP_BY_HOP
# (importable from here as before)
from tproxy.http.upstream_head import upstream_request_head  # noqa: F401

# -- errors of parsing --------------------------------------------------------


class Closing(Exception):
    """Stops parsing: the connection closes after what was answered."""


class BadRequest(Exception):
    """A request refused while parsing: answered ``status`` with the JSON
    error ``message``, then the connection closes."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status
        self.message = message


# -- reason phrases ---------------------------------------------------------------

_REASONS = {
    200: b"OK", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout",
    413: b"Payload Too Large", 414: b"URI Too Long", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
}
# the other registered codes (201, 204, 301 ... a plugin's own responses)
for _status in HTTPStatus:
    _REASONS.setdefault(_status.value, _status.phrase.encode("ascii"))


def reason_for(status):
    """The reason phrase tproxy writes for ``status``."""
    return _REASONS.get(status, b"Unknown")


def error_response(status, message, date):
    """The bytes of the JSON error answering a request that cannot be parsed;
    the connection closes after it.  ``date``: its Date line
    (:func:`tproxy.http.dates.date_line`)."""
    body = Response.error(status, message).body
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%sConnection: close\r\n\r\n%s"
            % (status, reason_for(status), len(body), date, body))


# -- the request's fields ---------------------------------------------------------

#: a Host value (RFC 9110 7.2, RFC 3986 3.2.2): an IP literal or a reg-name
#: (unreserved, pct-encoded, sub-delims), then an optional port; trailing
#: whitespace is the field's (the parsers keep it)
_HOST_VALUE = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]*)?[ \t]*")
#: Host values checked already (clients send the same few): bounded, past
#: that a value is checked anew each time
_HOSTS = {}


def check_host(value):
    """
    Raise :class:`BadRequest` (``400``) unless ``value`` (``bytes``) is a
    valid Host: not empty, no whitespace, ``/``, ``@``, ``\\`` or control
    characters, no ``..``, not the dot of a fully qualified name alone
    (``.``, ``.:80``: no name once the dot is dropped), as nginx's host
    validation (RFC 9112 3.2: an invalid Host is a 400).  What goes
    upstream as the request's Host is therefore one authority that every
    server reads the same way.
    """
    if value in _HOSTS:
        return
    if not value.strip(b" \t"):
        # (both parsers drop the value's leading whitespace) an empty
        # authority cannot go upstream, as nginx
        raise BadRequest(400, "empty Host")
    if (_HOST_VALUE.fullmatch(value) is None or b".." in value
            or value.partition(b":")[0].rstrip(b" \t") == b"."):
        raise BadRequest(400, "invalid Host")
    if len(_HOSTS) < _KINDS_MAX:
        _HOSTS[value] = True


#: a comma, as the byte value: ``b"," in value`` first tries the needle as
#: an integer, fails, formats the error and clears it (CPython: ~2,000
#: instructions, ten times an integer's test)
_COMMA = ord(",")

# what scan_request_fields does with a field, by lower-case name
_HOP, _HOST, _LENGTH, _XFF, _REAL_IP, _EXPECT, _PROTO = range(7)
_SPECIAL = dict.fromkeys(HOP_BY_HOP, _HOP)
_SPECIAL.update({b"host": _HOST, b"content-length": _LENGTH,
                 b"x-forwarded-for": _XFF, b"x-real-ip": _REAL_IP,
                 b"expect": _EXPECT, b"x-forwarded-proto": _PROTO})
_UNDERSCORE = -1     # an ordinary field whose name has an underscore
_WATCHED = -2        # an ordinary field whose presence is noted (watch_field)
#: the lower-case names of the watched fields (watch_field)
_WATCHED_NAMES = set()
#: the largest Content-Length accepted (a signed 64-bit integer, as nginx's
#: off_t and tproxy's own parser)
_MAX_LENGTH = int("9223372036854775807")   # 2 ** 63 - 1 (a machine int on PyPy: see pygrammar)

#: the kind of a field by its name as received (clients send the same few
#: names on every request: no lower-casing per field); bounded, past that
#: a name is classified anew each time
_KINDS = {}
_KINDS_MAX = 1024
#: those of _KINDS forwarded as they are (most): a set looked in without a
#: call (``name in set``, where ``dict.get`` is a method call per field);
#: CPython only (PyPy's JIT makes the lookup no dearer: its path unchanged,
#: the set empty)
_ORDINARY = set()


def _field_kind(name):
    """What scan_request_fields does with a field named ``name`` (as received)."""
    n = name.lower()
    kind = _SPECIAL.get(n)
    if kind is None:
        if b"_" in n:
            kind = _UNDERSCORE
        elif n in _WATCHED_NAMES:
            kind = _WATCHED
    if len(_KINDS) < _KINDS_MAX:
        _KINDS[name] = kind
        if kind is None and not _PYPY:
            _ORDINARY.add(name)
    return kind


def watch_field(name):
    """
    Have the scan of every request head note whether the client sent a
    field ``name`` (``str`` or ``bytes``, any case): its lower-case name is
    then in ``ctx.request.watched`` (:class:`tproxy.context.Request`) for a
    request that carried it.  A plugin that must act on a rare field (the
    ``router`` drops a client's ``X-Route-Prefix``) reads that tuple instead
    of looking through every field of every request.  Call it when the
    plugin's module is imported; watching costs nothing for the requests
    without the field.

    Raises :class:`ValueError` for a name the scan handles itself (the
    hop-by-hop fields, ``Host``, ``Content-Length``, ``Expect``, the
    forwarding fields) or one with an underscore.
    """
    n = (name if isinstance(name, bytes) else name.encode("latin-1")).lower()
    if n in _SPECIAL or b"_" in n or not n:
        raise ValueError("cannot be watched (a field tproxy handles itself, or a name "
                         "with an underscore): %r" % (name,))
    if n not in _WATCHED_NAMES:
        _WATCHED_NAMES.add(n)
        # the names classified so far: anew, with this one
        _KINDS.clear()
        _ORDINARY.clear()


def scan_request_fields(fields, version, underscores, authority=None):
    """
    Sort a request's ``(name, value)`` pairs in one pass: the ones forwarded
    as they are, and the ones tproxy frames or sets itself (hop-by-hop,
    Content-Length, forwarding fields, Expect).  ``underscores``: forward
    names with ``_`` (nginx's ``underscores_in_headers``); ``authority``:
    that of an absolute-form target (``str``), the request's Host.

    :return: ``(forward, hosts, chunked, length, expect, xff, real_ip,
        upgrade, connection, watched)``: the pairs that go upstream as they are, how
        many Host fields there were, ``Transfer-Encoding: chunked``, the
        Content-Length (``int``) or ``None``, ``Expect: 100-continue``, the
        X-Forwarded-For values joined (``bytes``) or ``None``, the X-Real-IP
        value or ``None``, the Upgrade values joined or ``None``, the
        Connection tokens (lower case) or ``None``, the lower-case names
        of the watched fields present (:func:`watch_field`; a tuple, usually
        empty).  Raises :class:`BadRequest`.
    """
    forward = []
    conn_tokens = None
    xff = None
    real_ip = None
    upgrade = None
    hosts = 0
    chunked = False
    length = None
    expect = False
    watched = ()
    kinds = _KINDS
    ordinary = _ORDINARY
    for pair in fields:
        if pair[0] in ordinary:   # most fields: forwarded as they are
            forward.append(pair)
            continue
        kind = kinds.get(pair[0], _field_kind)
        if kind is _field_kind:   # (not seen yet)
            kind = _field_kind(pair[0])
        if kind is None:          # most fields: forwarded as they are
            forward.append(pair)
        elif kind == _UNDERSCORE:
            if underscores:       # else dropped, as nginx
                forward.append(pair)
        elif kind == _WATCHED:
            forward.append(pair)
            watched += (pair[0].lower(),)
        elif kind == _HOP:
            n = pair[0].lower()
            if n == b"connection":
                v = pair[1]
                if _COMMA not in v:   # (one token, "close" or "keep-alive": no comprehension)
                    tokens = [v.strip().lower()]
                else:
                    tokens = [t.strip().lower() for t in v.split(b",")]
                conn_tokens = tokens if conn_tokens is None else conn_tokens + tokens
            elif n == b"transfer-encoding":
                if version == "1.0":
                    # faulty framing (RFC 9112 6.1): answer, then close
                    raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
                if pair[1].strip(b" \t").lower() != b"chunked":
                    # (gzip, chunked): codings tproxy would have to pass
                    # on and cannot re-frame, as nginx (RFC 9112 6.1)
                    raise BadRequest(501, "transfer coding not implemented")
                chunked = True
            elif n == b"upgrade":
                upgrade = pair[1] if upgrade is None else upgrade + b", " + pair[1]
        elif kind == _HOST:
            if pair[1] not in _HOSTS:   # (a value seen before is valid)
                check_host(pair[1])
            hosts += 1
            forward.append(pair)
        elif kind == _LENGTH:
            length = int(pair[1])
            if length > _MAX_LENGTH:
                # httptools takes up to 2**64 - 1; sent upstream, such a
                # length overflows a signed 64-bit one (nginx: 400 too)
                raise BadRequest(400, "Content-Length too large")
        elif kind == _XFF:
            xff = pair[1] if xff is None else xff + b", " + pair[1]
        elif kind == _REAL_IP:
            real_ip = pair[1]
        elif kind == _EXPECT:
            if pair[1].lower() == b"100-continue":
                # HTTP/1.0: ignored, and not forwarded (RFC 9110 10.1.1: no
                # 1xx to an HTTP/1.0 client)
                expect = version != "1.0"
            else:
                forward.append(pair)
        # _PROTO: replaced by tproxy's own
    if hosts > 1 or (hosts == 0 and version == "1.1"):
        raise BadRequest(400, "exactly one Host header is required")
    if authority is not None:
        host = authority.encode("latin-1")
        if hosts:
            forward = [(n, host) if n.lower() == b"host" else (n, v) for n, v in forward]
        else:
            forward.append((b"Host", host))
            hosts = 1
    if conn_tokens:
        # (never Host: the upstream request must have one)
        drop = set(conn_tokens) - {b"close", b"keep-alive", b"host"}
        if drop:
            forward = [q for q in forward if q[0].lower() not in drop]
    return forward, hosts, chunked, length, expect, xff, real_ip, upgrade, conn_tokens, watched


def forwarding_fields(client, remote, xff, scheme):
    """The X-Real-IP, X-Forwarded-For and X-Forwarded-Proto lines (``bytes``
    arguments) sent upstream: the client's address, and the peer's appended
    to the X-Forwarded-For received."""
    return b"X-Real-IP: %s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\n" % (
        client, (xff + b", " + remote) if xff else remote, scheme)


# -- the response ---------------------------------------------------------------

_JOIN_FIELD = b": ".join
#: on PyPy the header lines are joined from a list comprehension of
#: concatenations (~90 ns less per head than ``join(map(...))``, whose
#: iteration PyPy runs as a loop of its own); CPython keeps ``map`` (as
#: :mod:`tproxy.http.upstream_head`, which has its own)
_PYPY = platform.python_implementation() == "PyPy"

def content_length(raw):
    """The Content-Length value of ``(name, value)`` pairs, or ``None``."""
    for n, v in raw:
        if len(n) == 14 and n.lower() == b"content-length":
            return v
    return None


#: the framing lines of a response head, by (chunked, close, HTTP/1.0 keep-alive)
_FRAMING = {
    (False, False, False): b"\r\n",
    (False, False, True): b"Connection: keep-alive\r\n\r\n",
    (False, True, False): b"Connection: close\r\n\r\n",
    (False, True, True): b"Connection: close\r\n\r\n",
    (True, False, False): b"Transfer-Encoding: chunked\r\n\r\n",
    (True, False, True): b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
    (True, True, False): b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    (True, True, True): b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
}


#: status -> b"HTTP/1.1 <status> " (response_head on PyPy; three digits: bounded)
_STATUS_STARTS = {}
_STATUS_START = _STATUS_STARTS.get   # (see upstream_head._EXTRA_GET)


def _status_start(status):
    start = b"HTTP/1.1 %d " % status
    if 100 <= status <= 999:
        _STATUS_STARTS[status] = start
    return start


def response_head(status, reason, raw, chunked, close, http10, lines=None, date=b""):
    """
    The status line and fields of a response to the client, and its framing
    lines (``Transfer-Encoding: chunked``, ``Connection``), through the empty
    line.  ``reason`` ``b""``: tproxy's phrase of ``status``; ``http10``: the
    request was HTTP/1.0 (a kept connection says so); ``lines``: ``raw``'s
    lines joined already (:func:`clean_response_fields`), or ``None``;
    ``date``: a Date line to add (:mod:`tproxy.http.dates`), or ``b""``.
    """
    tail = _FRAMING[chunked, close, http10]
    if lines is not None:
        # (clean_response_fields made the lines)
        start = _STATUS_START(status)
        if start is None:
            start = _status_start(status)
        if _PYPY:
            # concatenated, not ``%``: PyPy formats bytes through a string
            # builder, a call per piece (~150 ns more per head)
            return (start + (reason or reason_for(status)) + b"\r\n" + lines + b"\r\n"
                    + date + tail)
        # (CPython: one join of the pieces, ~1,000 instructions fewer than
        # the concatenations, ~500 fewer than ``%``)
        return b"".join((start, reason or reason_for(status), b"\r\n", lines, b"\r\n",
                         date, tail))
    if date:
        tail = date + tail
    if raw:
        return b"HTTP/1.1 %d %s\r\n%s\r\n%s" % (
            status, reason or reason_for(status),
            b"\r\n".join([n + b": " + v for n, v in raw]) if _PYPY
            else b"\r\n".join(map(_JOIN_FIELD, raw)), tail)
    return b"HTTP/1.1 %d %s\r\n%s" % (status, reason or reason_for(status), tail)


def local_response_head(status, reason, raw, body, close, http10, date=b""):
    """:func:`response_head` of a response whose whole ``body`` is known
    (made by tproxy or a plugin), with its Content-Length (none in a ``204``
    or a ``304``: RFC 9110 8.6 allows a 304 only the length of the 200 it
    stands for, which only the upstream knows)."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_for(status))]
    if raw:
        lines.append(b"\r\n".join(map(_JOIN_FIELD, raw)))
        lines.append(b"\r\n")
    if status != 204 and status != 304:   # (no body either: response.py)
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(date)
    lines.append(_FRAMING[False, close, http10])
    return b"".join(lines)
