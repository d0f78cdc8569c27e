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
The answer is awaited at most ``redis.timeout`` seconds; when Redis cannot be
reached, times out or fails, the request is let through
(``on_redis_error: "allow"``) or refused with ``503``
(``"deny"``), the plugin logs it once, probes Redis every
``redis.retry_interval`` seconds without delaying requests, and logs once
more when it answers again.
"""

import collections
import hashlib
import json
import math

from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tproxy import Response, hookimpl

__all__ = ["Plugin", "Decision"]

log = Logger()

_KEY_PART = r"^(client_addr|consumer|route|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"

#: an identifier longer than this is replaced by its SHA-1 (memory per key
#: stays bounded whatever a client puts in a header)
_MAX_IDENT = 64


class Decision(object):
    """
    The outcome of one request's check.

    :ivar allowed: whether the request may proceed.
    :ivar limit: the ``RateLimit-Limit`` value.
    :ivar remaining: requests left now (``RateLimit-Remaining``).
    :ivar reset: seconds until the quota is whole again (``RateLimit-Reset``).
    :ivar retry_after: seconds until a refused request may succeed (``0`` when
        allowed).
    """

    __slots__ = ("allowed", "limit", "remaining", "reset", "retry_after")

    def __init__(self, allowed, limit, remaining, reset, retry_after=0):
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset = reset
        self.retry_after = retry_after

    def headers(self):
        """The ``RateLimit-*`` fields, as ``(name, value)`` pairs."""
        return [("RateLimit-Limit", str(self.limit)),
                ("RateLimit-Remaining", str(self.remaining)),
                ("RateLimit-Reset", str(self.reset))]

    def __repr__(self):
        return "<Decision allowed=%r remaining=%r reset=%r retry_after=%r>" % (
            self.allowed, self.remaining, self.reset, self.retry_after)


def _ceil(x):
    return max(0, int(math.ceil(x - 1e-9)))


# -- the algorithms: pure arithmetic, shared by the local and the Redis policy --


class TokenBucket(object):
    """``burst`` tokens, refilled at ``rate / period`` per second."""

    #: the Lua script of the Redis policy: KEYS[1] the record; ARGV rate per
    #: second, burst, expiry (ms).  Returns {allowed, tokens left}.
    LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1])
local ts = tonumber(s[2])
if tokens == nil or ts == nil then tokens = burst; ts = now end
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'ts', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {allowed, string.format('%.17g', tokens)}
"""

    def __init__(self, rate, period, burst):
        self.per_second = float(rate) / period
        self.burst = burst
        #: seconds after which an untouched record equals a fresh one
        self.idle = burst / self.per_second

    def fresh(self, now):
        """A new key's record."""
        return [float(self.burst), now]

    def decide(self, state, now):
        """Take a token from ``state`` (changed in place) at time ``now``."""
        tokens, ts = state
        if now > ts:
            tokens += (now - ts) * self.per_second
            if tokens > self.burst:
                tokens = self.burst
            state[1] = now
        if tokens >= 1:
            tokens -= 1
            state[0] = tokens
            return Decision(True, self.burst, int(tokens),
                            _ceil((self.burst - tokens) / self.per_second))
        state[0] = tokens
        return self.decision(False, tokens)

    def decision(self, allowed, tokens):
        """The :class:`Decision` for ``tokens`` left."""
        reset = _ceil((self.burst - tokens) / self.per_second)
        retry = 0 if allowed else max(1, _ceil((1 - tokens) / self.per_second))
        return Decision(allowed, self.burst, int(tokens), reset, retry)

    def redis_args(self):
        """``ARGV`` of :data:`LUA` (the expiry last)."""
        return [repr(self.per_second), str(self.burst)]

    def from_redis(self, reply):
        """The :class:`Decision` of the script's reply."""
        return self.decision(int(reply[0]) == 1, float(reply[1]))


class SlidingWindow(object):
    """At most ``rate`` requests in any ``period`` seconds (two-window estimate)."""

    #: KEYS[1] the record; ARGV limit, window (s), expiry (ms).  Returns
    #: {allowed, current count, previous count, elapsed fraction}.
    LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cur = math.floor(now / window)
local s = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(s[1])
local c = tonumber(s[2]) or 0
local p = tonumber(s[3]) or 0
if w == nil then c = 0; p = 0
elseif w == cur - 1 then p = c; c = 0
elseif w ~= cur then p = 0; c = 0 end
local elapsed = (now - cur * window) / window
local allowed = 0
if p * (1 - elapsed) + c + 1 <= limit then c = c + 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'w', cur, 'c', c, 'p', p)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {allowed, c, p, string.format('%.17g', elapsed)}
"""

    def __init__(self, rate, period):
        self.limit = int(rate)
        self.window = float(period)
        self.idle = 2 * self.window

    def fresh(self, now):
        """A new key's record: ``[window number, current count, previous count]``."""
        return [math.floor(now / self.window), 0, 0]

    def decide(self, state, now):
        """Count a request in ``state`` (changed in place) at time ``now``."""
        cur = math.floor(now / self.window)
        w, c, p = state
        if w == cur - 1:
            p, c = c, 0
        elif w != cur:
            p, c = 0, 0
        elapsed = (now - cur * self.window) / self.window
        allowed = p * (1 - elapsed) + c + 1 <= self.limit
        if allowed:
            c += 1
        state[0], state[1], state[2] = cur, c, p
        return self.decision(allowed, c, p, elapsed)

    def decision(self, allowed, c, p, elapsed):
        """The :class:`Decision` after the counts ``c`` (current window) and
        ``p`` (previous), ``elapsed`` (a fraction) into the current window."""
        used = p * (1 - elapsed) + c
        remaining = max(0, int(math.floor(self.limit - used + 1e-9)))
        reset = max(1, _ceil((1 - elapsed) * self.window))
        retry = 0
        if not allowed:
            if c + 1 <= self.limit and p > 0:
                # the previous window's weight must fall far enough
                wait = (1 - (self.limit - c - 1) / float(p)) - elapsed
            else:
                # the next window, where this one's count weighs as ``p``
                nxt = max(0.0, 1 - (self.limit - 1) / float(c)) if c else 0.0
                wait = (1 - elapsed) + nxt
            retry = max(1, _ceil(wait * self.window))
        return Decision(allowed, self.limit, remaining, reset, retry)

    def redis_args(self):
        """``ARGV`` of :data:`LUA` (the expiry last)."""
        return [str(self.limit), repr(self.window)]

    def from_redis(self, reply):
        """The :class:`Decision` of the script's reply."""
        return self.decision(int(reply[0]) == 1, int(reply[1]), int(reply[2]),
                             float(reply[3]))


# -- where the records live ---------------------------------------------------------


class LocalStore(object):
    """
    The records of one plugin instance in this process: an LRU-ordered dict of
    at most ``max_keys`` records, idle ones dropped lazily.
    """

    def __init__(self, algorithm, max_keys):
        self.algorithm = algorithm
        self.max_keys = max_keys
        self.records = collections.OrderedDict()

    def decide(self, key, now):
        """The :class:`Decision` for one request of ``key`` at ``now``."""
        records = self.records
        entry = records.get(key)
        if entry is not None:
            records.move_to_end(key)
            entry[1] = now
            return self.algorithm.decide(entry[0], now)
        # a new key: first drop up to two records untouched for longer than
        # ``idle`` (the oldest are first), so that only active keys stay
        idle = self.algorithm.idle
        for _ in (0, 1):
            if not records:
                break
            oldest = next(iter(records))
            if now - records[oldest][1] < idle:
                break
            del records[oldest]
        if len(records) >= self.max_keys:
            records.popitem(last=False)
        entry = records[key] = [self.algorithm.fresh(now), now]
        return self.algorithm.decide(entry[0], now)


class RedisStore(object):
    """
    The records in Redis, one hash per key, updated by one Lua script per
    decision; the connection pool is txredisapi's, made at ``start``.

    :ivar up: whether Redis answered last time (``False``: decisions do not
        wait for it until a probe succeeds).
    """

    def __init__(self, algorithm, settings, prefix):
        self.algorithm = algorithm
        self.settings = settings
        self.prefix = prefix
        self.script = algorithm.LUA.encode("utf-8")
        self.sha = hashlib.sha1(self.script).hexdigest()
        self.args = algorithm.redis_args() + [str(int(algorithm.idle * 1000) + 1000)]
        self.timeout = settings["timeout"]
        self.address = "{}:{}".format(settings["host"], settings["port"])
        self.up = True
        self.clock = None
        self.client = None
        self.factory = None
        self.probe = None
        self._probing = False

    def start(self, reactor):
        """Make the connection pool (it connects in the background)."""
        import txredisapi
        s = self.settings
        self.clock = reactor
        factory = txredisapi.RedisFactory(
            # database 0 is every connection's: no SELECT to wait for
            self.address, s["db"] or None, s["pool_size"], True, txredisapi.ConnectionHandler,
            "utf-8", s["password"], None, True)
        # reconnect no slower than the plugin probes
        factory.initialDelay = min(factory.initialDelay, s["retry_interval"])
        factory.maxDelay = max(s["retry_interval"], factory.initialDelay)
        factory.startConnecting(HostnameEndpoint(
            reactor, s["host"], s["port"], timeout=s["connect_timeout"]))
        self.factory = factory
        self.client = factory.handler
        self.probe = LoopingCall(self._probe)
        self.probe.clock = reactor

    def stop(self):
        """Stop probing and close the connections; a Deferred."""
        if self.probe is not None and self.probe.running:
            self.probe.stop()
        if self.factory is not None:
            return self.factory.disconnect()
        return None

    def _eval(self, keys):
        import txredisapi
        d = self.client.evalsha(self.sha, keys, self.args)

        def noscript(failure):
            failure.trap(txredisapi.ScriptDoesNotExist)
            return self.client.eval(self.script, keys, self.args)
        return d.addErrback(noscript)

    def decide(self, key, now=None):
        """
        A Deferred of the :class:`Decision` for one request of ``key``, or of
        ``None`` when Redis failed (and, while it is known to be down, ``None``
        at once).
        """
        if not self.up:
            return None
        d = self._eval([self.prefix + key])
        d.addTimeout(self.timeout, self.clock)
        return d.addCallbacks(self._answered, self._failed)

    def _answered(self, reply):
        return self.algorithm.from_redis(reply)

    def _failed(self, failure):
        self._down(failure)
        return None

    def _down(self, failure):
        if not self.up:
            return
        self.up = False
        reason = ("no answer within {} s".format(self.timeout)
                  if failure.check(DeferredTimeoutError) else failure.getErrorMessage())
        log.warn("rate_limit: Redis at {address} failed ({reason}); requests are "
                 "{mode} until it answers again",
                 address=self.address, reason=reason, mode=self.mode_text)
        if not self.probe.running:
            self.probe.start(self.settings["retry_interval"], now=False)

    mode_text = "allowed"

    def _probe(self):
        """Ask Redis for a PING (bounded by the timeout); never raises."""
        if self._probing or self.up:
            return
        self._probing = True
        try:
            d = self.client.ping()
            d.addTimeout(self.timeout, self.clock)
        except Exception:
            self._probing = False
            return

        def answered(_):
            self._probing = False
            if not self.up:
                self.up = True
                log.info("rate_limit: Redis at {address} answers again",
                         address=self.address)
                if self.probe.running:
                    self.probe.stop()

        def failed(_):
            self._probing = False
        d.addCallbacks(answered, failed)


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
            "period": {"type": "number", "exclusiveMinimum": 0, "default": 1,
                       "description": "seconds"},
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
            if value is None:       # no header, no consumer: the client's address
                value = request.client_addr
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
