# -*- test-case-name: tests.test_proxy -*-
"""
The request target of a request line (RFC 9112 3.2): its path, query and,
in absolute-form, authority (:func:`request_target`), the path's dot
segments resolved (:func:`normalize_path`), and the method token that tells
a request line to answer with a 501 from bytes that are not HTTP
(:data:`METHOD_TOKEN`).  Pure functions, as :mod:`tproxy.http.wire`, which
has the errors they raise and the Host check.
"""

import re

from tproxy.http.wire import BadRequest, check_host

#: a request line starting with a method token (what a 501 is for), or
#: bytes ending within one
METHOD_TOKEN = re.compile(rb"[A-Z][A-Z0-9_-]*(?: |\Z)")


def normalize_path(path):
    """
    Resolve ``.`` and ``..`` segments (also percent-encoded) as nginx does
    before routing, so that ``/api/../admin`` cannot pass for ``/api``; a path
    climbing above the root is a bad request.
    """
    segments = path.split("/")
    out = []
    changed = False
    for seg in segments[1:]:
        low = seg.lower()
        if low in (".", "%2e"):
            changed = True
            continue
        if low in ("..", "%2e.", ".%2e", "%2e%2e"):
            changed = True
            if len(out) == 0:
                raise BadRequest(400, "path climbs above the root")
            out.pop()
            continue
        out.append(seg)
    if not changed:
        return path
    last = segments[-1].lower()
    trailing = last in (".", "..", "%2e", "%2e.", ".%2e", "%2e%2e")
    return "/" + "/".join(out) + ("/" if trailing and out else "")


#: a ``%`` that does not start an escape (RFC 3986 2.1)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

#: where the authority of an absolute-form target ends (RFC 3986 3.2)
_AUTHORITY_END = re.compile(r"[/?#]")


def request_target(url, method):
    """
    ``(path, query, authority)`` of a request target (``str``): origin-form,
    absolute-form (whose authority replaces the Host field, RFC 9112 3.2.2,
    and must be a valid one: no userinfo, as nginx; else ``authority`` is
    ``None``) or ``*`` for ``OPTIONS``; the path's dot segments resolved.
    Raises :class:`BadRequest` (also for ``%00`` in the path, and a ``%``
    there that starts no escape).
    """
    authority = None
    if not url.startswith("/"):
        if url == "*" and method == "OPTIONS":
            pass
        elif "://" in url:
            rest = url.split("://", 1)[1]
            # the authority ends at the path, the query or the fragment
            # (``http://h?q=1`` has the path "/" and the query "q=1")
            m = _AUTHORITY_END.search(rest)
            end = m.start() if m else len(rest)
            authority, rest = rest[:end], rest[end:]
            check_host(authority.encode("latin-1"))
            url = rest if rest[:1] == "/" else "/" + rest
        else:
            raise BadRequest(400, "invalid request target")
    path, _, query = url.partition("?")
    if "%" in path:
        if "%00" in path:
            # (as nginx, which decodes the path: a NUL ends a C string, so a
            # server behind may read a shorter path than the one routed)
            raise BadRequest(400, "encoded NUL in the path")
        if _BAD_ESCAPE.search(path):
            # (as nginx: not a request-target (RFC 9112 3.2), and a server
            # behind may decode it as it was not routed: ``%u0061`` is ``a``
            # to IIS)
            raise BadRequest(400, "invalid percent-encoding in the path")
    if "/." in path or "%2" in path:
        path = normalize_path(path)
    return path, query, authority
