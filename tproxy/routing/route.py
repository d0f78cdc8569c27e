# -*- test-case-name: tests.test_routes -*-
"""
One compiled route (:class:`Route`) and the parts of a request its
conditions read (:class:`RequestView`).

A :class:`Route` is built by :func:`tproxy.routing.spec.compile_route` and
indexed by :class:`tproxy.routing.table.RouteTable`; it answers the
conditions the index does not cover (:meth:`Route.accepts`), its place in
the precedence order (:meth:`Route.rank`) and the path it sends upstream
(:meth:`Route.upstream_path`).
"""

import re
from urllib.parse import parse_qsl

from tproxy.routing.hosts import literal_host

__all__ = ["Route", "RequestView", "NEED_BODY", "match_path"]

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"//+")
#: RFC 3986 2.3: decoding these does not change what a path means
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _unescape(m):
    char = chr(int(m.group(1), 16))
    return char if char in _UNRESERVED else "%" + m.group(1).upper()


def match_path(path):
    """
    The spelling of ``path`` that routes are matched on (RFC 3986 6.2.2):
    percent-encoded unreserved characters decoded (``/%61dmin`` is
    ``/admin``), the hex digits of the other escapes upper-cased
    (``%2f`` is ``%2F``, never ``/``), and runs of ``/`` merged (as nginx's
    ``merge_slashes``), so that no other spelling of a path passes by its
    route.  Dot segments are resolved before (:mod:`tproxy.http.target`).
    """
    if "%" in path:
        path = _ESCAPE.sub(_unescape, path)
    if "//" in path:
        path = _SLASHES.sub("/", path)
    return path

#: What :meth:`Route.accepts` (and :meth:`RouteTable.match
#: <tproxy.routing.table.RouteTable.match>`) answers when a route needs the
#: request body to decide.
NEED_BODY = object()

#: Path tiers, in precedence order: exact, prefix, regex, no path condition.
EXACT, PREFIX, REGEX, ANY = 0, 1, 2, 3
TIER_NAMES = {EXACT: "exact", PREFIX: "prefix", REGEX: "regex", ANY: "any"}

#: Host tiers, in precedence order: exact host, wildcard, no host condition.
HOST_EXACT, HOST_WILD, HOST_ANY = 0, 1, 2
HOST_NAMES = {HOST_EXACT: "exact", HOST_WILD: "wildcard", HOST_ANY: "any"}


class RequestView(object):
    """The parts of a request the conditions look at: ``path`` is the
    :func:`match_path` of the request's, ``raw_path`` the path as received;
    cookies and arguments are parsed once, when a route first asks."""

    __slots__ = ("method", "host", "path", "raw_path", "query", "headers", "body",
                 "_cookies", "_args")

    def __init__(self, method, host, path, query, headers, body=None):
        self.method = method
        self.host = host
        self.raw_path = path
        self.path = match_path(path) if "%" in path or "//" in path else path
        self.query = query
        self.headers = headers
        self.body = body
        self._cookies = None
        self._args = None

    @classmethod
    def of(cls, request, body=None):
        """The view of a :class:`tproxy.Request` (the host without the
        trailing dot of a fully qualified name, as nginx takes it; an IPv6
        literal in its short form,
        :func:`~tproxy.routing.hosts.literal_host`)."""
        host = request.host
        if host[-1:] == ".":
            host = host[:-1]
        elif host[:1] == "[":
            host = literal_host(host)
        return cls(request.method, host, request.path, request.query,
                   request.headers, body)

    def cookie(self, name):
        """The first value of cookie ``name`` (``None`` if absent)."""
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = {}
            for field in self.headers.get_all("cookie"):
                for pair in field.split(";"):
                    key, eq, value = pair.strip().partition("=")
                    if eq and key not in cookies:
                        cookies[key] = value
        return cookies.get(name)

    def arg(self, name):
        """The first value of query argument ``name``, percent-decoded."""
        args = self._args
        if args is None:
            args = self._args = {}
            for key, value in parse_qsl(self.query, keep_blank_values=True,
                                        errors="replace"):
                args.setdefault(key, value)
        return args.get(name)


class Route(object):
    """
    One compiled route: immutable once built, so that a request keeps the
    route it started with when the table changes.

    :ivar name: its name.
    :ivar spec: the route as configured (defaults filled in).
    :ivar group: the target group.
    :ivar peer: the pinned peer ``"host:port"``, or ``None``.
    :ivar peer_key: ``(host, port)`` of the pinned peer, or ``None``.
    :ivar tier: the path tier (:data:`EXACT`, :data:`PREFIX`, :data:`REGEX`,
        :data:`ANY`).
    :ivar key: the index key of an exact or prefix route (fake prefix
        included).
    :ivar host_tier: :data:`HOST_EXACT`, :data:`HOST_WILD` or
        :data:`HOST_ANY`.
    :ivar host: the exact host, or the wildcard's suffix (``".example.com"``).
    :ivar has_max_body: the route sets the body limit (``max_body_size``).
    :ivar max_body: that limit (bytes, or ``None`` for none).
    """

    __slots__ = ("name", "spec", "group", "peer", "peer_key", "priority",
                 "position", "tier", "key", "mode", "value", "regex", "fake",
                 "strip", "rewrite", "host_tier", "host", "methods", "headers",
                 "cookies", "args", "body", "extra_headers", "has_max_body",
                 "max_body")

    def accepts(self, view):
        """
        Whether the conditions the index does not cover hold for ``view``:
        methods, headers, cookies, arguments, a regex path, the body.

        :return: ``None`` (no), ``True`` or the regex match (yes), or
            :data:`NEED_BODY`.
        """
        if self.methods is not None and view.method not in self.methods:
            return None
        if self.headers:
            get = view.headers.get
            for name, value in self.headers:
                if get(name) != value:
                    return None
        for name, value in self.cookies:
            if view.cookie(name) != value:
                return None
        for name, value in self.args:
            if view.arg(name) != value:
                return None
        found = True
        if self.regex is not None:
            path = view.path
            fake = self.fake
            if fake:
                if not (path == fake or path.startswith(fake + "/")):
                    return None
                path = path[len(fake):] or "/"
            found = self.regex.search(path)
            if found is None:
                return None
        if self.body is not None:
            if view.body is None:
                return NEED_BODY
            if self.body not in view.body:
                return None
        return found

    def covers(self, view):
        """Whether the host and the exact/prefix path hold (what the index
        checks); with :meth:`accepts`, the whole match, route by route."""
        host = view.host
        if self.host_tier == HOST_EXACT and host != self.host:
            return False
        if self.host_tier == HOST_WILD and not host.endswith(self.host):
            return False
        path = view.path
        if self.tier == EXACT:
            return path == self.key
        if self.tier == PREFIX:
            key = self.key
            if key == "/":
                return path.startswith("/")
            return path == key or path.startswith(key + "/")
        return True

    def rank(self, host_first=True):
        """The route's place in the precedence order (smaller first)."""
        host = (self.host_tier, -len(self.host) if self.host_tier == HOST_WILD else 0)
        path = (self.tier, -len(self.key) if self.tier == PREFIX else 0)
        if host_first:
            return (host, path, -self.priority, self.position)
        return (path, host, -self.priority, self.position)

    def upstream_path(self, path, query, found):
        """
        The path (and query) sent upstream for a request to ``path`` that
        this route took (``found``: what :meth:`accepts` returned).
        """
        if self.fake:
            path = path[len(self.fake):] or "/"
        if self.rewrite is not None:
            path = found.expand(self.rewrite) if self.regex is not None else self.rewrite
        elif self.strip:
            value = self.value
            if value != "/":
                path = path[len(value):] or "/"
        return path + "?" + query if query else path

    def forwarded(self, view, found):
        """
        The path (and query) sent upstream for ``view``, a request this route
        took: as received without path transforms (as nginx's ``proxy_pass``
        without a URI), else :meth:`upstream_path` of the path it matched.
        """
        if self.fake or self.strip or self.rewrite is not None:
            return self.upstream_path(view.path, view.query, found)
        path, query = view.raw_path, view.query
        return path + "?" + query if query else path

    def describe(self):
        """A JSON view of how the route matches (for ``/routes/match``)."""
        out = {"path_tier": TIER_NAMES[self.tier], "host_tier": HOST_NAMES[self.host_tier],
               "priority": self.priority, "position": self.position}
        if self.tier in (EXACT, PREFIX):
            out["path_key"] = self.key
        return out

    def moved(self, position):
        """This route at another ``position`` in the list (``self`` if it is
        there already): its compiled conditions are shared."""
        if position == self.position:
            return self
        other = Route()
        for slot in Route.__slots__:
            setattr(other, slot, getattr(self, slot))
        other.position = position
        return other

    def __repr__(self):
        return "<Route %s -> %s>" % (self.name, self.group)
