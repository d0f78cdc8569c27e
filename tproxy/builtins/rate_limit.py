# -*- test-case-name: tests.test_rate_limit,tests.test_rate_limit_redis -*-
"""
The built-in ``rate_limit`` plugin: requests per key (the client address, a
header, the consumer, the route, or a combination), as a token bucket (a rate
and a burst) or a sliding window, counted in this process (``policy:
local``) or in Redis, shared by every worker and instance (``policy:
redis``).

A request over the limit gets ``429`` with a JSON body, ``Retry-After`` and
the ``RateLimit-Limit`` / ``RateLimit-Remaining`` / ``RateLimit-Reset``
fields (the separate fields of the IETF draft
*draft-ietf-httpapi-ratelimit-headers*); with ``"headers": true`` (the
default) the allowed responses carry the three ``RateLimit-*`` fields too.

The algorithms, both O(1) in time and memory per key:

- ``token_bucket``: a bucket of ``burst`` tokens refilled at ``rate`` tokens
  per ``period`` seconds; a request takes one token or is refused.
  ``RateLimit-Limit`` is ``burst``, ``RateLimit-Reset`` the seconds until the
  bucket is full again.
- ``sliding_window``: at most ``rate`` requests in any ``period`` seconds,
  estimated from the counts of the current and the previous fixed window (the
  previous one weighted by how much of it the sliding window still covers,
  as Cloudflare and Kong do).  ``RateLimit-Reset`` is the seconds until the
  current window ends.

``policy: local`` keeps one small record per active key in an LRU-ordered
dict of at most ``max_keys`` entries (the least recently seen key is
forgotten first); a key idle long enough that its record equals a fresh one
is dropped lazily, two at most each time a new key comes, so there is no
timer and no scan.  The clock is the gateway reactor's.

``policy: redis`` runs one Lua script per decision (``EVALSHA``, ``EVAL``
when Redis answers ``NOSCRIPT``) that reads, updates and expires the key's
record atomically, with Redis's own clock (``TIME``) so every instance agrees.
The answer is awaited at most ``redis.timeout`` seconds, and not at all
while Redis is known to be away (a connection refused or lost is seen as it
happens: :class:`~tproxy.builtins._rate_limit_stores.RedisStore`); when
Redis cannot be reached, times out or fails, the request is let through
(``on_redis_error: "allow"``) or refused with ``503`` (``"deny"``) at once,
the plugin logs it once, reconnects and probes Redis every
``redis.retry_interval`` seconds without delaying requests, and logs once
more when it answers again.
"""

import hashlib
import json
import math

from twisted.logger import Logger

from tproxy import Response, hookimpl
from tproxy.builtins._rate_limit_algorithms import Decision, SlidingWindow, TokenBucket, _ceil
from tproxy.builtins._rate_limit_stores import LocalStore, RedisStore

__all__ = ["Plugin", "Decision"]

log = Logger()

_KEY_PART = r"^(client_addr|consumer|route|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"

#: an identifier longer than this is replaced by its SHA-1 (memory per key
#: stays bounded whatever a client puts in a header)
_MAX_IDENT = 64

#: seconds in a year: the longest period, the slowest rate
_YEAR = 365 * 24 * 3600


class Plugin(object):
    """
    Rate limits per key (``access``), the ``RateLimit-*`` fields on allowed
    responses (``header_filter``).
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["rate"],
        "properties": {
            "algorithm": {"enum": ["token_bucket", "sliding_window"],
                          "default": "token_bucket"},
            "rate": {"type": "number", "exclusiveMinimum": 0,
                     "description": "requests per period (token_bucket: the "
                                    "refill rate; sliding_window: the limit, "
                                    "an integer)"},
            "period": {"type": "number", "exclusiveMinimum": 0, "maximum": _YEAR,
                       "default": 1, "description": "seconds (a year at most)"},
            "burst": {"type": "integer", "minimum": 1,
                      "description": "token_bucket: the bucket's size "
                                     "(default: rate, at least 1)"},
            "key": {
                "default": "client_addr",
                "anyOf": [
                    {"type": "string", "pattern": _KEY_PART},
                    {"type": "array", "minItems": 1, "uniqueItems": True,
                     "items": {"type": "string", "pattern": _KEY_PART}},
                ],
            },
            "policy": {"enum": ["local", "redis"], "default": "local"},
            "max_keys": {"type": "integer", "minimum": 1, "default": 100000},
            "headers": {"type": "boolean", "default": True},
            "on_redis_error": {"enum": ["allow", "deny"], "default": "allow"},
            "redis": {
                "type": "object",
                "additionalProperties": False,
                "default": {},
                "properties": {
                    "host": {"type": "string", "minLength": 1, "default": "127.0.0.1"},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                             "default": 6379},
                    "db": {"type": "integer", "minimum": 0, "default": 0},
                    "password": {"type": ["string", "null"], "default": None},
                    "pool_size": {"type": "integer", "minimum": 1, "default": 2},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "default": 0.1},
                    "connect_timeout": {"type": "number", "exclusiveMinimum": 0,
                                        "default": 1},
                    "retry_interval": {"type": "number", "exclusiveMinimum": 0,
                                       "default": 1},
                    "prefix": {"type": "string", "default": "tproxy:rl:"},
                },
            },
        },
    }

    def __init__(self, settings):
        from tproxy.config import ConfigError
        rate, period = settings["rate"], settings["period"]
        if not 1.0 / _YEAR <= float(rate) / period < float("inf"):
            raise ConfigError(("rate", "rate / period is {!r} requests a second: from "
                               "one a year to a finite number".format(float(rate) / period)))
        if settings["algorithm"] == "token_bucket":
            burst = settings.get("burst") or max(1, int(math.ceil(rate)))
            self.algorithm = TokenBucket(rate, period, burst)
        else:
            if "burst" in settings:
                raise ConfigError(("burst", "only the token_bucket algorithm has a burst"))
            if rate != int(rate):
                raise ConfigError(("rate", "a sliding_window's rate is a whole number "
                                   "of requests, got {!r}".format(rate)))
            self.algorithm = SlidingWindow(rate, period)
        key = settings["key"]
        parts = [key] if isinstance(key, str) else list(key)
        self.key_parts = [(p[len("header:"):] if p.startswith("header:") else None, p)
                          for p in parts]
        self.headers = settings["headers"]
        if not self.headers:
            # an instance attribute hides the hook from pluggy: no per-request
            # call for a feature that is off
            self.header_filter = None
        self.deny_on_error = settings["on_redis_error"] == "deny"
        self.clock = None
        if settings["policy"] == "local":
            self.store = LocalStore(self.algorithm, settings["max_keys"])
            self.redis = None
        else:
            # every process and instance with the same limits shares the records
            limits = {k: settings.get(k) for k in ("algorithm", "rate", "period",
                                                   "burst", "key")}
            ident = hashlib.sha1(json.dumps(limits, sort_keys=True).encode()).hexdigest()[:12]
            self.redis = self.store = RedisStore(
                self.algorithm, settings["redis"],
                settings["redis"]["prefix"] + ident + ":")
            self.redis.mode_text = "refused (503)" if self.deny_on_error else "allowed"

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Take the gateway's clock; connect to Redis (``policy: redis``)."""
        self.clock = gateway.reactor
        if self.redis is not None:
            self.redis.start(gateway.reactor)
            gateway.on_stop(self.redis.stop)

    def key(self, ctx):
        """The request's key: its parts joined by newlines (which no part holds)."""
        request = ctx.request
        out = []
        for header, part in self.key_parts:
            if header is not None:
                value = request.headers.get(header)
            elif part == "client_addr":
                value = request.client_addr
            elif part == "consumer":
                value = ctx.consumer
            else:
                value = ctx.route if ctx.route is not None else "-"
            if value is None:
                # no header, no consumer: the client's address, apart from
                # the same text in a header (NUL: in no header value)
                value = "\x00" + request.client_addr
            out.append(value)
        ident = "\n".join(out)
        if len(ident) > _MAX_IDENT:
            ident = hashlib.sha1(ident.encode("utf-8", "surrogateescape")).hexdigest()
        return ident

    @hookimpl
    def access(self, ctx):
        """Count the request; refuse it with ``429`` over the limit."""
        key = self.key(ctx)
        if self.redis is None:
            return self._apply(self.store.decide(key, self.clock.seconds()), ctx)
        d = self.redis.decide(key)
        if d is None:
            return self._apply(None, ctx)
        return d.addCallback(self._apply, ctx)

    def _apply(self, decision, ctx):
        if decision is None:    # Redis failed
            if self.deny_on_error:
                response = Response.error(503, "rate limit unavailable")
                response.headers.set(
                    "Retry-After", str(_ceil(self.redis.settings["retry_interval"]) or 1))
                return response
            return None
        if not decision.allowed:
            response = Response.error(429, "rate limit exceeded",
                                      retry_after=decision.retry_after)
            response.headers.set("Retry-After", str(decision.retry_after))
            for name, value in decision.headers():
                response.headers.set(name, value)
            return response
        if self.headers:
            held = ctx.vars.get("rate_limit")
            # with several limits, the client is told about the tightest
            if held is None or decision.remaining < held.remaining:
                ctx.vars["rate_limit"] = decision
        return None

    @hookimpl
    def header_filter(self, ctx, response):
        """Add the ``RateLimit-*`` fields of an allowed request."""
        decision = ctx.vars.get("rate_limit")
        if decision is not None and decision.allowed:
            for name, value in decision.headers():
                response.headers.set(name, value)
