# -*- test-case-name: tests.test_wire_heads -*-
"""
The request head sent upstream (:func:`upstream_request_head`): the
request's fields as received, those a plugin set in ``ctx.upstream_headers``
replacing any of the same name, a Host if none is left, and tproxy's own
lines (forwarding fields, framing).  A pure function, as those of
:mod:`tproxy.http.wire` (which exports it too).
"""

import platform

_JOIN_FIELD = b": ".join
#: on PyPy the header lines are joined from a list comprehension of
#: concatenations (~90 ns less per head than ``join(map(...))``, whose
#: iteration PyPy runs as a loop of its own); CPython keeps ``map``
_PYPY = platform.python_implementation() == "PyPy"

#: ``ctx.upstream_headers`` names and str values as bytes: a plugin adds the
#: same few on every request (bounded: what does not fit is converted anew)
_NAMES = {}
_VALUES = {}
_CACHE_MAX = 1024


def _name(n):
    """``(bytes, lower-case bytes)`` of a header name given as str or bytes."""
    r = _NAMES.get(n) if type(n) in (str, bytes) else None
    if r is None:
        b = n if type(n) is bytes else str(n).encode("latin-1")
        r = (b, b.lower())
        if len(_NAMES) < _CACHE_MAX and type(n) in (str, bytes):
            _NAMES[n] = r
    return r


def _value(v):
    """A header value given as str or bytes, as bytes."""
    if type(v) is bytes:
        return v
    if type(v) is not str:
        return str(v).encode("latin-1")
    b = _VALUES.get(v)
    if b is None:
        b = str(v).encode("latin-1")
        if len(_VALUES) < _CACHE_MAX:
            _VALUES[v] = b
    return b


#: one ``ctx.upstream_headers`` pair as given -> ``((name, value) as
#: bytes, lower-case name, CRLF + lower-case name + ":", its header line)``;
#: bounded
_EXTRA = {}
#: (its ``get``, looked up once: the compiled module reads a global's method by name)
_EXTRA_GET = _EXTRA.get


def _extra_field(pair):
    n, v = pair
    name, low = _name(n)
    value = _value(v)
    r = ((name, value), low, b"\r\n" + low + b":", name + b": " + value)
    if len(_EXTRA) < _CACHE_MAX and type(n) in (str, bytes) and type(v) in (str, bytes):
        _EXTRA[pair] = r
    return r


def upstream_request_head(method, target, raw, extra, host, tail):
    """
    The request head sent upstream (``bytes``).

    :param method: ``bytes``.
    :param target: the path and query (``str``, latin-1).
    :param raw: the request's ``(name, value)`` pairs (bytes).
    :param extra: ``ctx.upstream_headers``: pairs (str or bytes) replacing
        any field of the same name.
    :param host: a Host value to add if none is left (``bytes``), or ``None``.
    :param tail: the lines tproxy adds (forwarding fields, framing), CRLF
        terminated.
    """
    if extra:
        if len(extra) == 1:    # the usual case: the router's X-Route-Prefix
            pair = extra[0]
            r = _EXTRA_GET(pair) if type(pair) is tuple else None
            if r is None:
                r = _extra_field(pair)
            low = r[1]
            if host is None and not _PYPY:
                # the lines joined first, and the name looked for in them
                # (lower-cased at once: no call per field; a field line
                # begins after CRLF, a value holds no CRLF)
                block = b"\r\n".join(map(_JOIN_FIELD, raw))
                if (b"\r\n" + block).lower().find(r[2]) < 0:   # (the usual case: not there)
                    # (one join of the pieces: ~1,000 instructions fewer
                    # than ``%`` formatting and the concatenations)
                    if block:
                        return b"".join((method, b" ", target.encode("latin-1"), b" HTTP/1.1\r\n",
                                         block, b"\r\n", r[3], b"\r\n", tail, b"\r\n"))
                    return b"".join((method, b" ", target.encode("latin-1"), b" HTTP/1.1\r\n",
                                     r[3], b"\r\n", tail, b"\r\n"))
            elif _PYPY and host is None:
                # one pass filtering and joining (on PyPy each loop of a
                # function called per request is compiled apart and entered
                # with a frame): the lines straight away
                lines = []
                for p in raw:
                    if p[0].lower() != low:
                        lines.append(p[0] + b": " + p[1])
                p = r[0]
                lines.append(p[0] + b": " + p[1])
                # concatenated, not ``%``: PyPy formats bytes through a
                # string builder, a call per piece (~150 ns more per head)
                return (method + b" " + target.encode("latin-1") + b" HTTP/1.1\r\n"
                        + b"\r\n".join(lines) + b"\r\n" + tail + b"\r\n")
            kept = []
            for p in raw:      # (a loop, not a comprehension: no frame)
                if p[0].lower() != low:
                    kept.append(p)
            kept.append(r[0])
            raw = kept
        else:
            names = [_name(n)[1] for n, _ in extra]   # a few: a list is quickest
            raw = [p for p in raw if p[0].lower() not in names]
            raw.extend([(_name(n)[0], _value(v)) for n, v in extra])
    if host is not None and not any(p[0].lower() == b"host" for p in raw):
        raw = raw + [(b"Host", host)]
    if raw:
        return b"%s %s HTTP/1.1\r\n%s\r\n%s\r\n" % (
            method, target.encode("latin-1"),
            b"\r\n".join([n + b": " + v for n, v in raw]) if _PYPY
            else b"\r\n".join(map(_JOIN_FIELD, raw)), tail)
    return b"%s %s HTTP/1.1\r\n%s\r\n" % (method, target.encode("latin-1"), tail)
