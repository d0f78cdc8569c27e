# -*- test-case-name: tests.test_cache -*-
"""
Where the ``cache`` plugin (:mod:`tproxy.builtins.cache`) keeps its
responses: an LRU of :class:`Entry` by key, at most ``max_size`` bytes
(storing past it drops the least recently used entries; an expired entry is
dropped when met), with the ``Vary`` record of each primary key (the request
headers whose values are part of its variants' keys), dropped with its last
variant so that it is bounded by the entries; the reading of a response's
caching fields (:func:`directives`, :func:`seconds`, :func:`expires_ttl`);
and how a conditional request is answered by a ``200`` (:func:`condition`:
``304`` or ``412``; :func:`take_conditions`).
"""

import collections
import re

__all__ = ["CONDITIONS", "Entry", "NOT_MODIFIED", "ResponseStore", "condition",
           "directives", "expires_ttl", "seconds", "take_conditions"]

#: the request fields of a condition or a range, cleared on a request whose
#: response the cache stores (nginx's ``proxy_cache`` does the same): the
#: client's condition is then answered from the ``200`` (:func:`condition`)
CONDITIONS = ("if-none-match", "if-modified-since", "if-match",
              "if-unmodified-since", "if-range")

#: fields of a stored ``200`` a ``304`` carries (RFC 9110 15.4.5)
NOT_MODIFIED = frozenset(["cache-control", "content-location", "date", "etag",
                           "expires", "last-modified", "vary"])

_DIRECTIVE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*("[^"]*"|[^,]*))?\s*(?:,|$)')

_ETAG = re.compile(r'\s*(W/)?("[^"]*")\s*(?:,|$)')


class Entry(object):
    """
    One stored response.

    :ivar status: the status code.
    :ivar headers: ``[(name, value)]`` (``str``), framing fields removed.
    :ivar body: ``bytes``.
    :ivar stored: the clock's time when stored.
    :ivar expires: the clock's time it stops being fresh.
    :ivar size: what it counts against ``max_size``.
    :ivar path: the request's path (for purges by prefix).
    """

    __slots__ = ("status", "headers", "body", "stored", "expires", "size", "path")

    def __init__(self, status, headers, body, stored, expires, path):
        self.status = status
        self.headers = headers
        self.body = body
        self.stored = stored
        self.expires = expires
        self.path = path
        self.size = len(body) + sum(len(n) + len(v) + 4 for n, v in headers) + 64


class ResponseStore(object):
    """
    The stored responses of one ``cache`` plugin instance.

    :param max_size: bytes of the whole store.
    :param nparts: how many parts a primary key has (a variant's key has
        one more: the values of the headers its ``Vary`` names).
    :ivar entries: ``{key: Entry}``, least recently used first.
    :ivar vary: ``{primary key: [(lower-case header names), variants
        stored]}``.
    :ivar size: bytes stored.
    """

    def __init__(self, max_size, nparts):
        self.max_size = max_size
        self.entries = collections.OrderedDict()
        self.vary = {}
        self.size = 0
        self._nparts = nparts

    def key(self, primary, headers, names=None):
        """The key of the variant ``headers`` ask for: ``primary``, plus the
        values of the headers ``names`` (default: the ``Vary`` recorded for
        ``primary``)."""
        if names is None:
            vary = self.vary.get(primary)
            names = vary[0] if vary is not None else ()
        if not names:
            return primary
        return primary + (tuple(", ".join(headers.get_all(n)) for n in names),)

    def set_vary(self, primary, names):
        """Record the headers a response of ``primary`` varies on (``()``:
        none)."""
        if names:
            self.vary.setdefault(primary, [(), 0])[0] = names
        elif primary in self.vary:
            self.vary[primary][0] = ()

    def lookup(self, key, now):
        """The fresh :class:`Entry` of ``key`` (moved to the LRU's end), or ``None``."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            self._drop(key)
            return None
        self.entries.move_to_end(key)
        return entry

    def _drop(self, key):
        entry = self.entries.pop(key)
        self.size -= entry.size
        self._forget_variant(key)

    def _forget_variant(self, key):
        if len(key) > self._nparts:      # a variant: one less for its primary
            primary = key[:self._nparts]
            vary = self.vary.get(primary)
            if vary is not None:
                vary[1] -= 1
                if vary[1] <= 0:
                    del self.vary[primary]

    def store(self, key, entry):
        """Keep ``entry`` under ``key``, dropping the least recently used
        entries past ``max_size``."""
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= old.size
        if entry.size > self.max_size:
            if old is not None:
                self._forget_variant(key)
            return
        self.entries[key] = entry
        self.size += entry.size
        if old is None and len(key) > self._nparts:
            self.vary.setdefault(key[:self._nparts], [(), 0])[1] += 1
        while self.size > self.max_size:
            self._drop(next(iter(self.entries)))

    def purge(self, prefix=None):
        """Drop every entry (or those whose path starts with ``prefix``); how many."""
        keys = [k for k, e in self.entries.items()
                if prefix is None or e.path.startswith(prefix)]
        for k in keys:
            self._drop(k)
        return len(keys)


def _tags(value):
    """``[(weak, tag)]`` of an entity-tag list, or ``None`` if it cannot be read."""
    tags, pos = [], 0
    while pos < len(value):
        m = _ETAG.match(value, pos)
        if m is None:
            return None
        tags.append((m.group(1) is not None, m.group(2)))
        pos = m.end()
    return tags


def _not_after(stored_date, date):
    """Whether the HTTP-date ``stored_date`` is not after ``date`` (``None``:
    one of them is missing or cannot be read)."""
    from tproxy.builtins.hmac_auth import _timestamp
    try:
        return _timestamp(stored_date) <= _timestamp(date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def condition(request_headers, stored):
    """
    The status a conditional ``GET`` / ``HEAD`` gets from a ``200`` whose
    headers are ``stored`` (RFC 9110 13.2.2), ``None`` for the ``200``
    itself: ``412`` when ``If-Match`` names none of its ``ETag`` (strong
    comparison; ``*`` matches) or, without ``If-Match``, when it was
    modified after ``If-Unmodified-Since``; else ``304`` when
    ``If-None-Match`` names its ``ETag`` (weak comparison) or is ``*``, or,
    without ``If-None-Match``, when ``If-Modified-Since`` is not before its
    ``Last-Modified``.  A field that cannot be read is ignored (an
    ``If-Match`` that cannot be read matches nothing).
    """
    match = request_headers.get("if-match")
    unmodified = request_headers.get("if-unmodified-since") if match is None else None
    none_match = request_headers.get("if-none-match")
    since = request_headers.get("if-modified-since") if none_match is None else None
    if match is None and unmodified is None and none_match is None and since is None:
        return None
    fields = dict((n.lower(), v) for n, v in stored)
    etag = _ETAG.fullmatch(fields.get("etag", "").strip() + ",")
    if match is not None and match.strip() != "*":
        tags = _tags(match)
        if etag is None or etag.group(1) or not tags or (False, etag.group(2)) not in tags:
            return 412
    elif unmodified is not None and _not_after(fields.get("last-modified"), unmodified) is False:
        return 412
    if none_match is not None:
        if none_match.strip() == "*":
            return 304
        tags = _tags(none_match)
        if etag is not None and tags and etag.group(2) in [t for _, t in tags]:
            return 304
        return None
    if since is not None and _not_after(fields.get("last-modified"), since):
        return 304
    return None


def directives(values):
    """``{directive: value or None}`` of ``Cache-Control`` values (lower case)."""
    out = {}
    for value in values:
        for m in _DIRECTIVE.finditer(value):
            if m.group(1):
                arg = m.group(2)
                if arg is not None:
                    arg = arg.strip().strip('"')
                out[m.group(1).lower()] = arg
    return out


def seconds(value):
    """A delta-seconds value (``int`` >= 0), or ``None`` if it cannot be read."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


def expires_ttl(headers, now):
    """Seconds from a response's ``Date`` (else ``now``) to its ``Expires``,
    at least ``0`` (an ``Expires`` that cannot be read: already expired)."""
    from tproxy.builtins.hmac_auth import _timestamp
    try:
        expires = _timestamp(headers.get("expires"))
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0
    date = headers.get("date")
    if date:
        try:
            now = _timestamp(date)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return max(0, expires - now)


def take_conditions(headers):
    """Remove the request's condition and range fields (:data:`CONDITIONS`)
    from ``headers``: ``{name: value}`` of those it had, or ``None``."""
    taken = None
    for name in CONDITIONS:
        if name in headers:
            if taken is None:
                taken = {}
            taken[name] = ", ".join(headers.get_all(name))
            headers.remove(name)
    return taken
