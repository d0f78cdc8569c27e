# -*- test-case-name: tests.test_cache -*-
"""
The built-in ``cache`` plugin: a shared response cache in memory, as a
caching reverse proxy (nginx's ``proxy_cache``, Kong's ``proxy-cache``).

- ``access``: a fresh stored response for the request's key is sent at once
  (``X-Cache: HIT``, with ``Age``), as a :class:`tproxy.Response` -- the way
  any plugin answers a request itself; a ``304`` when the request's
  ``If-None-Match`` / ``If-Modified-Since`` says the client has it, a
  ``412`` when its ``If-Match`` / ``If-Unmodified-Since`` fails.
  Otherwise the request goes upstream (``MISS``), without its condition and
  range fields when its response is to be stored (``CONDITIONS`` in
  :mod:`tproxy.builtins._cache_store`, as nginx's ``proxy_cache``): the
  condition is answered from the ``200`` in ``header_filter`` (``304`` or
  ``412``, its body dropped by ``body_filter`` after its copy); while one
  request of a key is upstream, the others of that key wait for it (single
  flight, at most ``lock_timeout`` seconds) and are then answered from what
  it stored.  A request the cache must not answer (another method, ``Cache-Control:
  no-cache`` / ``no-store`` or ``Pragma: no-cache``, an ``Authorization`` or
  ``Range`` header) goes upstream with ``BYPASS``, its fields kept (a
  ``no-cache`` ``GET`` still refreshes the stored copy, as a ``MISS``).
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
with ``?prefix=/api/`` the entries whose path starts with it
(:mod:`tproxy.builtins._cache_purge`).
"""

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeoutError
from twisted.logger import Logger

from tproxy import Response, hookimpl
from tproxy.builtins._cache_purge import purge
from tproxy.builtins._cache_store import (
    NOT_MODIFIED, Entry, ResponseStore, condition, expires_ttl, take_conditions)
from tproxy.builtins._cache_store import directives as _directives, seconds as _seconds
from tproxy.schema_checks import ADMIN_PATH, HEADER_NAME

__all__ = ["Plugin", "Entry"]

log = Logger()

_KEY_PART = r"^(scheme|host|uri|path|query|consumer|route|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"

#: fields of a response never stored (framing and per-connection)
_NOT_STORED = frozenset(["content-length", "transfer-encoding", "connection",
                         "keep-alive", "age"])


class _State(object):
    """What the cache knows of one request (``ctx.vars["cache"]``)."""

    __slots__ = ("status", "key", "primary", "leader", "store", "chunks", "size",
                 "ttl", "age", "head", "vary", "conditions", "answer")

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
        self.conditions = None          # {field: value} cleared on the request
        self.answer = None              # (status, body) sent instead of the 200


def _precondition_failed():
    """The ``412`` of a condition the response does not meet."""
    return Response.error(412, "precondition failed: the resource does not match "
                               "If-Match / If-Unmodified-Since")


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
        gateway.admin.route("DELETE", self.admin_path,
                            lambda request: purge(self.responses, self.admin_path, request))

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
                if request.method == "GET":       # refresh it
                    state.store = True
                    state.conditions = take_conditions(headers)
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
            state.conditions = take_conditions(ctx.request.headers)
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
        answer = condition(ctx.request.headers, entry.headers) if entry.status == 200 \
            else None
        if answer == 304:
            headers = [(n, v) for n, v in entry.headers if n.lower() in NOT_MODIFIED]
            headers.append(age)
            return Response(304, b"", headers)
        if answer == 412:
            return _precondition_failed()
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
        self._keep(state, response)
        if state.conditions is not None and response.status == 200:
            self._answer_condition(state, response)

    def _answer_condition(self, state, response):
        """The client's condition, cleared on the request, answered from the
        upstream's ``200``: its head made a ``304`` or ``412`` (the body is
        dropped by ``body_filter``, after its copy)."""
        answer = condition(state.conditions, response.headers.items())
        if answer is None:
            return
        headers = response.headers
        if answer == 304:
            keep = NOT_MODIFIED if self.header is None else NOT_MODIFIED | {
                self.header.lower()}
            headers.raw = [(n, v) for n, v in headers.raw
                           if n.decode("latin-1").lower() in keep]
            body = b""
        else:
            headers.raw = [(n, v) for n, v in headers.raw if n.lower() == b"date"]
            failed = _precondition_failed()
            for name, value in failed.headers.items():
                headers.set(name, value)
            body = failed.body
            headers.set("Content-Length", str(len(body)))
            if self.header is not None:
                headers.set(self.header, state.status)
        response.status = answer
        response.reason = b""
        state.answer = (answer, body)

    def _keep(self, state, response):
        """Whether (and how long) the upstream's response may be stored:
        ``state.store``, ``state.head`` and the rest set when it may."""
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
            ttl = expires_ttl(headers, self.clock.seconds())
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

    @hookimpl
    def body_filter(self, ctx, chunk, eof):
        """Copy the body, up to ``max_object_size``; drop it when a ``304``
        or ``412`` is sent instead."""
        state = ctx.vars.get("cache")
        if state is None:
            return None
        if state.chunks is not None:
            state.size += len(chunk)
            if state.size > self.max_object_size:
                state.chunks = None      # too big: the rest streams uncached
                state.store = False
            elif chunk:
                state.chunks.append(chunk)
        if state.answer is not None:
            return state.answer[1] if eof else b""
        return None

    @hookimpl
    def log(self, ctx):
        """Store a complete copy; wake the requests waiting for this key."""
        state = ctx.vars.get("cache")
        if state is None:
            return
        if state.store and state.chunks is not None and ctx.error is None \
                and ctx.status == (state.head[0] if state.answer is None
                                   else state.answer[0]):
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
