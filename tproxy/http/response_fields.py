# -*- test-case-name: tests.test_wire_heads,tests.test_proxy -*-
"""
An upstream response's fields cleaned of the hop-by-hop ones (and those its
Connection names) before they are passed on: as ``(name, value)`` pairs
(:func:`clean_response_fields`), or, for a head read whole, by cutting its
lines from the bytes as received (:func:`clean_response_block`, with
:data:`RARE_HOP_FIELDS` saying when it cannot, and :func:`block_fields` for
the pairs of such lines).  Pure functions, as :mod:`tproxy.http.wire`.
"""

import platform
import re

from tproxy.http.headers import HOP_BY_HOP

#: on PyPy the kept pairs are joined into header lines in the same pass
#: (see :func:`clean_response_fields`)
_PYPY = platform.python_implementation() == "PyPy"
#: a field's line from its pair (CPython: one C call, ~400 instructions
#: fewer than the two concatenations PyPy prefers)
_JOIN_FIELD = b": ".join
#: the most names each kind cache keeps (as :mod:`tproxy.http.wire`'s)
_KINDS_MAX = 1024

#: what clean_response_fields does with a field, by its name as received
#: (upstreams send the same few names: no lower-casing per field); bounded
_OTHER, _RESP_HOP, _RESP_LENGTH, _RESP_CONNECTION, _RESP_DATE = 0, 1, 2, 3, 4
_RESP_KINDS = {}
#: those of _RESP_KINDS passed on as they are (see _ORDINARY)
_RESP_ORDINARY = set()
#: Connection values that name no field (the usual ones: no split, no loop)
_PLAIN_CONNECTION = frozenset([b"keep-alive", b"close", b"Keep-Alive", b"Close"])


def _response_kind(name):
    n = name.lower()
    kind = (_RESP_CONNECTION if n == b"connection" else _RESP_HOP if n in HOP_BY_HOP
            else _RESP_LENGTH if n == b"content-length"
            else _RESP_DATE if n == b"date" else _OTHER)
    if len(_RESP_KINDS) < _KINDS_MAX:
        _RESP_KINDS[name] = kind
        if kind == _OTHER and not _PYPY:
            _RESP_ORDINARY.add(name)
    return kind


def clean_response_fields(fields):
    """
    An upstream response's fields without the hop-by-hop ones (and those
    its Connection names), in one pass.

    :return: ``(kept, length, framed, lines, dated)``: the pairs passed on, the
        Content-Length value (``bytes``) or ``None``, whether the body is
        framed (Content-Length or chunked), and the kept pairs as header
        lines joined by CRLF (for :func:`response_head`: made in this pass;
        on PyPy each loop of a function called per request is compiled apart
        and entered with a frame; on CPython ``join(map(...))`` of the pairs
        later costs ~200 instructions a field more), or ``None``; and
        whether there is a Date field (:mod:`tproxy.http.dates`).
    :raise ValueError: a Transfer-Encoding tproxy cannot pass on.
    """
    kept = []
    lines = []
    named = None
    length = None
    framed = False
    dated = False
    kinds = _RESP_KINDS
    ordinary = _RESP_ORDINARY
    for pair in fields:
        if pair[0] in ordinary:   # most fields: passed on as they are
            kept.append(pair)
            lines.append(_JOIN_FIELD(pair))
            continue
        try:    # (a subscript: no method call; a try costs nothing on 3.11)
            kind = kinds[pair[0]]
        except KeyError:
            kind = _response_kind(pair[0])
        if kind:
            if kind == _RESP_CONNECTION:
                if pair[1] not in _PLAIN_CONNECTION:
                    for t in pair[1].split(b","):
                        t = t.strip().lower()
                        if t not in HOP_BY_HOP and t != b"close":
                            named = (named or set()) | {t}
                continue
            if kind == _RESP_HOP:
                if pair[0].lower() == b"transfer-encoding":
                    if framed or pair[1].strip(b" \t").lower() != b"chunked":
                        # codings tproxy would have to pass on and cannot
                        # re-frame (gzip, chunked), or TE twice: as nginx
                        raise ValueError("unknown Transfer-Encoding")
                    framed = True
                continue
            if kind == _RESP_DATE:
                dated = True
            else:
                length = pair[1]    # _RESP_LENGTH
                framed = True
        kept.append(pair)
        if _PYPY:
            lines.append(pair[0] + b": " + pair[1])
        else:
            lines.append(_JOIN_FIELD(pair))
    if named:
        # the fields Connection names are hop-by-hop too (RFC 9110 7.6.1)
        kept = [p for p in kept if p[0].lower() not in named]
        if b"content-length" in named:
            length = None
        if b"date" in named:
            dated = False
        lines = None
    return kept, length, framed, b"\r\n".join(lines) if lines else None, dated


#: Connection values (lower case) that name no field
_PLAIN_CONNECTION_LOW = frozenset(["keep-alive", "close"])
#: the response fields :func:`clean_response_block` cannot cut, found in a
#: lower-cased head (``str``) by one search: Transfer-Encoding and the
#: hop-by-hop fields other than Connection and Keep-Alive (one expression
#: with a literal start costs about a quarter of the five substring tests)
RARE_HOP_FIELDS = re.compile(r"\r\n(?:transfer-encoding:|proxy-|te:|trailer:|upgrade:)")


def clean_response_block(data, start, end, low):
    """
    :func:`clean_response_fields` of a response head read whole, from its
    bytes: ``data[start:end]`` are its field lines as received, each after
    its CRLF (``start``: the status line's CRLF; ``end``: the empty line's),
    ``low`` is ``data[:end]`` decoded as latin-1 and lower-cased (``str``:
    CPython looks for a ``bytes`` in a ``bytes`` through a failed integer
    conversion, ~3 times the cost).  The head was parsed by httptools
    (llhttp), which refuses bare LF, obs-fold and whitespace before a colon:
    each field line is ``CRLF name ":" value``, and the head ends at the
    first empty line.  The caller found none of :data:`RARE_HOP_FIELDS` in
    it; of the hop-by-hop fields only ``Connection: keep-alive`` or
    ``close`` and ``Keep-Alive``, once each, are cut by slicing, the other
    lines passed on as received.

    :return: ``(length, lines, dated)``: the Content-Length value (``bytes``) or
        ``None``, the lines passed on joined by CRLF (``b""``: none), and
        whether there is a Date field;
        or ``None`` when the head holds another hop-by-hop field, or one of
        those twice (its pairs then go through :func:`clean_response_fields`,
        see :func:`block_fields`).
    """
    i = low.find("\r\nconnection:")
    if i >= 0:
        j = low.find("\r\n", i + 13)
        if j < 0:
            j = end
        if (low[i + 13:j].strip(" \t") not in _PLAIN_CONNECTION_LOW
                or low.find("\r\nconnection:", j) >= 0):
            return None     # tokens naming fields, or Connection twice
    k = low.find("\r\nkeep-alive:")
    if k < 0:
        if i < 0:
            lines = data[start + 2:end]
        else:       # (the usual case: Connection cut)
            lines = data[start + 2:i] + data[j:end] if i > start else data[j + 2:end]
    else:
        m = low.find("\r\n", k + 13)
        if m < 0:
            m = end
        if low.find("\r\nkeep-alive:", m) >= 0:
            return None
        cuts = [(k, m)] if i < 0 else sorted([(i, j), (k, m)])
        parts = []
        pos = start
        for i, j in cuts:
            parts.append(data[pos:i])
            pos = j
        parts.append(data[pos:end])
        lines = b"".join(parts)[2:]   # (each part begins with CRLF, or is empty)
    dated = low.find("\r\ndate:") >= 0
    i = low.find("\r\ncontent-length:")
    if i < 0:
        return None, lines, dated
    j = low.find("\r\n", i + 17)
    return data[i + 17:j if j >= 0 else end].lstrip(b" \t"), lines, dated


#: reason phrases seen to hold only HTAB, SP, VCHAR and obs-text (RFC 9112
#: 4), so that the usual ones are checked by a lookup (``OK`` by a
#: comparison first: ~300 instructions fewer than hashing it); bounded
_GOOD_REASONS = {b"OK"}
#: a translate table changing every byte a reason phrase may not hold (a
#: control character other than HTAB) to SP and no other
_REASON_ONLY = bytes(c if c == 9 or 0x20 <= c <= 0x7e or c >= 0x80 else 0x20
                     for c in range(256))


def check_reason(reason):
    """
    Raise ``ValueError`` if a response's reason phrase holds a control
    character other than HTAB (RFC 9112 4): llhttp takes them (NUL, ESC,
    DEL ...), tproxy's own parser does not, and they would go to the client.
    """
    if reason in _GOOD_REASONS:
        return
    if reason.translate(_REASON_ONLY) != reason:
        raise ValueError("control character in the reason phrase")
    if len(_GOOD_REASONS) < _KINDS_MAX:
        _GOOD_REASONS.add(reason)


def block_fields(block):
    """The ``(name, value)`` pairs of field lines joined by CRLF (as the
    parser reports them: the value without its leading whitespace)."""
    pairs = []
    for line in block.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            pairs.append((name, value.lstrip(b" \t")))
    return pairs
