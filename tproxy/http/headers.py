# -*- test-case-name: tests.test_headers -*-
"""
Header lists shared by the client side and the upstream side.

Headers are kept as received, an ordered list of ``(name, value)`` byte
pairs, so that forwarding them costs nothing; the accessors take and return
``str`` (latin-1) and compare names case-insensitively.
"""

# Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones a proxy sets itself.
HOP_BY_HOP = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate",
    b"proxy-authorization",
])


def _b(s):
    return s if isinstance(s, bytes) else s.encode("latin-1")


class Headers(object):
    """
    An ordered, case-insensitive multi-map of HTTP header fields.

    ``raw`` is the list of ``(name, value)`` byte pairs in wire order; the
    methods accept ``str`` or ``bytes`` and return ``str``.
    """

    __slots__ = ("raw",)

    def __init__(self, raw=None):
        self.raw = raw if raw is not None else []

    def get(self, name, default=None):
        """The first value of ``name``, or ``default``."""
        key = _b(name).lower()
        for n, v in self.raw:
            if n.lower() == key:
                return v.decode("latin-1")
        return default

    def get_all(self, name):
        """Every value of ``name``, in order."""
        key = _b(name).lower()
        return [v.decode("latin-1") for n, v in self.raw if n.lower() == key]

    def set(self, name, value):
        """Replace every field called ``name`` by one with ``value``."""
        name = _b(name)
        key = name.lower()
        self.raw = [p for p in self.raw if p[0].lower() != key]
        self.raw.append((name, _b(value)))

    def add(self, name, value):
        """Append a field, keeping the ones already present."""
        self.raw.append((_b(name), _b(value)))

    def remove(self, name):
        """Remove every field called ``name``; return how many there were."""
        key = _b(name).lower()
        before = len(self.raw)
        self.raw = [p for p in self.raw if p[0].lower() != key]
        return before - len(self.raw)

    def __contains__(self, name):
        key = _b(name).lower()
        for n, _ in self.raw:
            if n.lower() == key:
                return True
        return False

    def items(self):
        """``(name, value)`` pairs as ``str``, in order."""
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw]

    __iter__ = lambda self: iter(self.items())

    def __len__(self):
        return len(self.raw)

    def __repr__(self):
        return "Headers(%r)" % (self.items(),)
