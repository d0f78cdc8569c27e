# -*- test-case-name: tests.test_cache -*-
"""
The built-in ``cache`` plugin: a shared response cache in memory, as a
caching reverse proxy (nginx's ``proxy_cache``, Kong's ``proxy-cache``).

- ``access``: a fresh stored response for the request's key is sent at once
  (``X-Cache: HIT``, with ``Age``), as a :class:`tproxy.Response` -- the way
  any plugin answers a request itself; a ``304`` when the request's
  ``If-None-Match`` / ``If-Modified-Since`` says the client has it.
  Otherwise the request goes upstream (``MISS``); while one request of a key
  is upstream, the others of that key wait for it (single flight, at most
  ``lock_timeout`` seconds) and are then answered from what it stored.  A
  request the cache must not answer (another method, ``Cache-Control:
  no-cache`` / ``no-store`` or ``Pragma: no-cache``, an ``Authorization`` or
  ``Range`` header) goes upstream with ``BYPASS`` (a ``no-cache`` one still
  refreshes the stored copy).
- ``header_filter``: decides whether the upstream's response may be stored:
  a status of ``statuses``; no ``no-store``, ``private`` or ``no-cache``
  in its ``Cache-Control``; no ``Set-Cookie``; no ``Vary: *``; a lifetime
  from ``s-maxage``, ``max-age`` or ``Expires`` (else ``default_ttl``; ``0``:
  not stored), less the ``Age`` it came with.
- ``body_filter``: copies the body as it streams by, up to
  ``max_object_size`` bytes; a longer body stops being copied (what was
  copied is dropped) and streams on uncached.  Nothing waits for the copy.
- ``log``: stores a complete copy, and wakes the requests waiting for it.

The store is an LRU of at most ``max_size`` bytes (bodies and headers):
storing past it drops the least recently used entries; an expired entry is
dropped when met.  ``Vary`` is honoured: the request headers it names are
part of the key of the stored variant.

The store is :class:`tproxy.builtins._cache_store.ResponseStore`.

Admin API (``admin_path``, ``/cache`` by default): ``GET`` gives the counts
(entries, bytes, hits, misses, bypasses), ``DELETE`` purges everything, or
with ``?prefix=/api/`` the entries whose path starts with it.
"""

import re

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeoutError
from twisted.logger import Logger

from tproxy import Response, hookimpl
from tproxy.builtins._cache_store import NOT_MODIFIED, Entry, ResponseStore, not_modified
from tproxy.schema_checks import ADMIN_PATH, HEADER_NAME

__all__ = ["Plugin", "Entry"]

log = Logger()

_KEY_PART = r"^(scheme|host|uri|path|query|consumer|route|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"

_DIRECTIVE = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*("[^"]*"|[^,]*))?\s*(?:,|$)')

#: fields of a response never stored (framing and per-connection)
_NOT_STORED = frozenset(["content-length", "transfer-encoding", "connection",
                         "keep-alive", "age"])

#: request directives that keep the cache from answering
_REQUEST_BYPASS = ("no-cache", "no-store", "max-age=0")


def _directives(values):
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


def _seconds(value):
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n >= 0 else None


class _State(object):
    """What the cache knows of one request (``ctx.vars["cache"]``)."""

    __slots__ = ("status", "key", "primary", "leader", "store", "chunks", "size",
                 "ttl", "age", "head", "vary")

    def __init__(self, status, primary=None, key=None):
        self.status = status            # "HIT", "MISS", "BYPASS"
        self.primary = primary
        self.key = key
        self.leader = False
        self.store = False              # refresh the entry even on BYPASS
        self.chunks = None
        self.size = 0
        self.ttl = None
        self.age = 0
        self.head = None
        self.vary = ()


class Plugin(object):
    """
    A response cache in memory (``access``, ``header_filter``,
    ``body_filter``, ``log``) and its admin endpoints (``init_worker``).
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "max_size": {"type": "integer", "minimum": 1, "default": 64 * 1024 * 1024,
                         "description": "bytes of the whole store"},
            "max_object_size": {"type": "integer", "minimum": 0, "default": 1024 * 1024,
                                "description": "bytes of the largest body stored"},
            "methods": {"type": "array", "minItems": 1, "uniqueItems": True,
                        "items": {"enum": ["GET", "HEAD"]}, "default": ["GET", "HEAD"]},
            "statuses": {"type": "array", "minItems": 1, "uniqueItems": True,
                         "items": {"type": "integer", "minimum": 200, "maximum": 599},
                         "default": [200, 203, 300, 301, 308, 404, 410]},
            "default_ttl": {"type": "number", "minimum": 0, "default": 0,
                            "description": "seconds for a response without "
                                           "max-age / s-maxage / Expires (0: not stored)"},
            "max_ttl": {"type": "number", "exclusiveMinimum": 0, "default": 86400},
            "key": {"type": "array", "minItems": 1, "uniqueItems": True,
                    "items": {"type": "string", "pattern": _KEY_PART},
                    "default": ["scheme", "host", "uri"]},
            "lock_timeout": {"type": "number", "minimum": 0, "default": 5,
                             "description": "seconds a request waits for the same "
                                            "key's request upstream (0: no single flight)"},
            "admin_path": dict(ADMIN_PATH, default="/cache"),
            "header": dict(HEADER_NAME, type=["string", "null"], default="X-Cache"),
        },
    }

    def __init__(self, settings):
        self.max_size = settings["max_size"]
        self.max_object_size = min(settings["max_object_size"], self.max_size)
        self.methods = frozenset(settings["methods"])
        self.statuses = frozenset(settings["statuses"])
        self.default_ttl = settings["default_ttl"]
        self.max_ttl = settings["max_ttl"]
        self.key_parts = [(p[len("header:"):] if p.startswith("header:") else None, p)
                          for p in settings["key"]]
        self.per_consumer = "consumer" in settings["key"]
        self.lock_timeout = settings["lock_timeout"]
        self.admin_path = settings["admin_path"]
        self.header = settings["header"]
        #: the stored responses
        self.responses = ResponseStore(self.max_size, len(self.key_parts))
        self.inflight = {}          # key -> [waiting Deferreds]
        self.hits = self.misses = self.bypasses = 0
        self.clock = None

    # -- the key and the counts -----------------------------------------------------

    def primary_key(self, ctx):
        """The request's key from the ``key`` parts (a tuple)."""
        request = ctx.request
        out = []
        for header, part in self.key_parts:
            if header is not None:
                out.append(request.headers.get(header))
            elif part == "uri":
                out.append(request.uri)
            elif part == "host":
                out.append(request.host)
            elif part == "scheme":
                out.append(request.scheme)
            elif part == "path":
                out.append(request.path)
            elif part == "query":
                out.append(request.query)
            elif part == "consumer":
                out.append(ctx.consumer)
            else:
                out.append(ctx.route)
        return tuple(out)

    def stats(self):
        """The counts the admin API shows."""
        responses = self.responses
        return {"entries": len(responses.entries), "bytes": responses.size,
                "max_size": self.max_size, "hits": self.hits, "misses": self.misses,
                "bypasses": self.bypasses, "waiting": sum(map(len, self.inflight.values()))}

    # -- phases ---------------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Take the clock; serve ``GET`` / ``DELETE`` on ``admin_path``."""
        self.clock = gateway.reactor
        gateway.admin.route("GET", self.admin_path, lambda request: (200, self.stats()))

        def purge(request):
            if request.body:
                # a JSON {"prefix": ...} would otherwise purge everything
                return 400, {"error": "DELETE {} takes no body: give the prefix in "
                                      "the query (?prefix=/api/)".format(self.admin_path),
                             "field": "body", "value": None}
            for name in sorted(request.args):
                if name != "prefix":   # a typo would purge everything
                    return 400, {"error": "unknown parameter {!r} (known: prefix)".format(name),
                                 "field": name, "value": request.args[name]}
            prefix = request.args.get("prefix")
            if prefix is not None and not prefix.startswith("/"):
                # a key's path starts with "/": "static/" would purge
                # nothing and say so with a 200
                return 400, {"error": "prefix must be a path prefix starting with "
                                      "'/' (/static/)", "field": "prefix", "value": prefix}
            return 200, {"purged": self.responses.purge(prefix)}
        gateway.admin.route("DELETE", self.admin_path, purge)

    @hookimpl
    def access(self, ctx):
        """Answer from the store, wait for the same key's request, or go on."""
        request = ctx.request
        if request.method not in self.methods or (
                ctx.consumer is not None and not self.per_consumer):
            # (a consumer's request: an authentication plugin took its
            # credentials away; as with Authorization, no shared entry)
            ctx.vars["cache"] = _State("BYPASS")
            self.bypasses += 1
            return None
        headers = request.headers
        primary = self.primary_key(ctx)
        directives = headers.get_all("cache-control")
        if directives or "authorization" in headers or "pragma" in headers \
                or "range" in headers:
            cc = _directives(directives)
            if "authorization" in headers or "no-store" in cc or "range" in headers:
                ctx.vars["cache"] = _State("BYPASS")
                self.bypasses += 1
                return None
            if "no-cache" in cc or cc.get("max-age") == "0" or (
                    not directives and "no-cache" in headers.get("pragma", "").lower()):
                state = ctx.vars["cache"] = _State("BYPASS", primary)
                state.store = request.method == "GET"      # refresh it
                self.bypasses += 1
                return None
        return self._lookup(ctx, primary, True)

    def _lookup(self, ctx, primary, may_wait):
        key = self.responses.key(primary, ctx.request.headers)
        entry = self.responses.lookup(key, self.clock.seconds())
        if entry is not None:
            return self._hit(ctx, entry)
        waiting = self.inflight.get(key)
        if waiting is not None and may_wait and self.lock_timeout:
            d = Deferred()
            waiting.append(d)
            d.addTimeout(self.lock_timeout, self.clock)
            return d.addBoth(self._woken, ctx, primary)
        state = ctx.vars["cache"] = _State("MISS", primary, key)
        self.misses += 1
        if ctx.request.method == "GET":
            state.store = True
            if waiting is None:
                state.leader = True
                self.inflight[key] = []
        return None

    def _woken(self, result, ctx, primary):
        if not isinstance(result, bool):
            # the lock timed out (or was cancelled): go upstream, uncached
            if hasattr(result, "trap"):
                result.trap(DeferredTimeoutError)
            ctx.vars["cache"] = _State("MISS", primary)
            self.misses += 1
            return None
        return self._lookup(ctx, primary, False)

    def _hit(self, ctx, entry):
        self.hits += 1
        ctx.vars["cache"] = _State("HIT")
        age = ("Age", str(int(self.clock.seconds() - entry.stored)))
        if entry.status == 200 and not_modified(ctx.request.headers, entry.headers):
            headers = [(n, v) for n, v in entry.headers if n.lower() in NOT_MODIFIED]
            headers.append(age)
            return Response(304, b"", headers)
        headers = list(entry.headers)
        headers.append(age)
        return Response(entry.status, entry.body, headers)

    @hookimpl
    def header_filter(self, ctx, response):
        """Mark the response; decide whether to keep a copy of it."""
        state = ctx.vars.get("cache")
        if state is None:
            return
        if self.header is not None:
            response.headers.set(self.header, state.status)
        if not state.store or ctx.peer is None:
            return
        state.store = False
        if response.status not in self.statuses:
            return
        headers = response.headers
        if "set-cookie" in headers:
            return
        cc = _directives(headers.get_all("cache-control"))
        if "no-store" in cc or "private" in cc or "no-cache" in cc:
            return
        ttl = _seconds(cc.get("s-maxage")) if "s-maxage" in cc else None
        if ttl is None and "max-age" in cc:
            ttl = _seconds(cc.get("max-age"))
        if ttl is None and "expires" in headers:
            ttl = self._expires_ttl(headers)
        if ttl is None:
            ttl = self.default_ttl
        # the time it spent in caches upstream counts (RFC 9111 4.2.3)
        age = _seconds(headers.get("age")) or 0
        ttl = min(ttl, self.max_ttl) - age
        if ttl <= 0:
            return
        vary = tuple(sorted(set(
            n.strip().lower() for v in headers.get_all("vary") for n in v.split(",")
            if n.strip())))
        if "*" in vary:
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_object_size:
            return          # streams uncached, never copied
        state.store = True
        state.ttl = ttl
        state.age = age
        state.vary = vary
        state.chunks = []
        state.head = (response.status, [(n, v) for n, v in headers.items()
                                        if n.lower() not in _NOT_STORED])

    def _expires_ttl(self, headers):
        from tproxy.builtins.hmac_auth import _timestamp
        try:
            expires = _timestamp(headers.get("expires"))
        except (TypeError, ValueError, IndexError, OverflowError):
            return 0        # an invalid Expires means "already expired"
        date = headers.get("date")
        try:
            now = _timestamp(date) if date else self.clock.seconds()
        except (TypeError, ValueError, IndexError, OverflowError):
            now = self.clock.seconds()
        return max(0, expires - now)

    @hookimpl
    def body_filter(self, ctx, chunk, eof):
        """Copy the body, up to ``max_object_size``."""
        state = ctx.vars.get("cache")
        if state is None or state.chunks is None:
            return None
        state.size += len(chunk)
        if state.size > self.max_object_size:
            state.chunks = None      # too big: the rest streams uncached
            state.store = False
            return None
        if chunk:
            state.chunks.append(chunk)
        return None

    @hookimpl
    def log(self, ctx):
        """Store a complete copy; wake the requests waiting for this key."""
        state = ctx.vars.get("cache")
        if state is None:
            return
        if state.store and state.chunks is not None and ctx.error is None \
                and ctx.status == state.head[0]:
            now = self.clock.seconds()
            primary = state.primary
            responses = self.responses
            responses.set_vary(primary, state.vary)
            key = responses.key(primary, ctx.request.headers, state.vary)
            responses.store(key, Entry(state.head[0], state.head[1], b"".join(state.chunks),
                                       now - state.age, now + state.ttl, ctx.request.path))
        state.chunks = None
        if state.leader:
            for d in self.inflight.pop(state.key, ()):
                if not d.called:
                    d.callback(True)
