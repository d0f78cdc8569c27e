# -*- test-case-name: tests.test_request_bodies,tests.test_admin_security -*-
"""
A chunked request body's limits: its size lines, read back from the bytes
received, and its trailer section (:class:`Trailers`).

Neither request parser reports a chunk's size: httptools reads sizes up to
2**64 - 1, and both parsers wait for the chunk's bytes.  A listener with a
body limit (the proxy's, the admin API's) reads the size line back at the
end of the read in which a chunk began, so that a client announcing a
4 GiB chunk gets its ``413`` at once, not after sending the limit's worth,
and one announcing more than 2**63 - 1 bytes a ``400``, as nginx answers
both.  A size line may come over several reads: the start of the line a
read leaves unfinished is kept (:func:`unfinished_line`).
"""

import re

from tproxy.http.pygrammar import _MAX_SIZE, MAX_TRAILERS
from tproxy.http.wire import BadRequest

__all__ = ["Trailers", "unfinished_line", "chunk_refusal"]

#: the size at the start of a chunk-size line
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
#: how much of a line left unfinished by a read is kept (its size digits
#: come first)
_KEPT = 64


def unfinished_line(data, kept):
    """
    The start (up to 64 bytes) of the line a chunked body's read ``data``
    leaves unfinished; ``kept`` is what was kept of the line unfinished
    before ``data``.
    """
    nl = data.rfind(b"\n")
    if nl >= 0:
        return data[nl + 1:nl + 1 + _KEPT]
    if len(kept) < _KEPT:
        return kept + data[:_KEPT]
    return kept


def chunk_refusal(data, end, kept, before, limit):
    """
    ``(status, reason)`` refusing the chunk whose size line ends at
    ``data[end - 1]`` (its LF; ``kept``: the start of that line, if it began
    in an earlier read), with ``before`` body bytes ahead of it and a body
    limit of ``limit`` bytes (``None``: none), or ``None`` when its size is
    acceptable or ``end`` is not where a size line ends.
    """
    if end < 1 or data[end - 1] != 10:
        return None
    start = data.rfind(b"\n", 0, end - 1) + 1
    m = _CHUNK_SIZE.match(data[start:end] if start else kept + data[:end])
    if m is None:
        return None
    size = int(m.group(), 16)
    if size > _MAX_SIZE:
        return 400, "malformed request"
    if limit is not None and before + size > limit:
        return 413, "request body too large"
    return None


class Trailers(object):
    """
    Where the trailer fields of a chunked request go (the parsers report
    them through ``on_header``): dropped (they are not forwarded), and
    counted, so that a client cannot stream trailers for ever into memory:
    past :data:`~tproxy.http.pygrammar.MAX_TRAILERS` bytes, a ``400`` (as
    tproxy's own parser; httptools has no limit).
    """

    __slots__ = ("size",)

    def __init__(self):
        self.size = 0

    def __iter__(self):
        return iter(())

    def append(self, pair):
        self.size += len(pair[0]) + len(pair[1]) + 4
        if self.size > MAX_TRAILERS:
            raise BadRequest(400, "trailer section too large")
