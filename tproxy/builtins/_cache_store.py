# -*- test-case-name: tests.test_cache -*-
"""
Where the ``cache`` plugin (:mod:`tproxy.builtins.cache`) keeps its
responses: an LRU of :class:`Entry` by key, at most ``max_size`` bytes
(storing past it drops the least recently used entries; an expired entry is
dropped when met), with the ``Vary`` record of each primary key (the request
headers whose values are part of its variants' keys), dropped with its last
variant so that it is bounded by the entries; and whether a conditional
request is answered ``304`` by a stored response (:func:`not_modified`).
"""

import collections
import re

__all__ = ["Entry", "NOT_MODIFIED", "ResponseStore", "not_modified"]

#: fields of a stored ``200`` a ``304`` carries (RFC 9110 15.4.5)
NOT_MODIFIED = frozenset(["cache-control", "content-location", "date", "etag",
                           "expires", "last-modified", "vary"])

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


def not_modified(request_headers, stored):
    """
    Whether a conditional request is answered ``304`` by a stored ``200``
    whose headers are ``stored`` (RFC 9110 13.2.2): ``If-None-Match``
    naming its ``ETag`` (weak comparison) or ``*``; else, without
    ``If-None-Match``, an ``If-Modified-Since`` not before its
    ``Last-Modified``.  A field that cannot be read is ignored.
    """
    match = request_headers.get("if-none-match")
    since = request_headers.get("if-modified-since") if match is None else None
    if match is None and since is None:
        return False
    fields = dict((n.lower(), v) for n, v in stored)
    if match is not None:
        if match.strip() == "*":
            return True
        etag = _ETAG.fullmatch(fields.get("etag", "").strip() + ",")
        if etag is None:
            return False
        tags, pos = [], 0
        while pos < len(match):
            m = _ETAG.match(match, pos)
            if m is None:
                return False
            tags.append(m.group(2))
            pos = m.end()
        return etag.group(2) in tags
    from tproxy.builtins.hmac_auth import _timestamp
    try:
        return _timestamp(fields["last-modified"]) <= _timestamp(since)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError):
        return False
