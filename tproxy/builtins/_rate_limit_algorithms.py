# -*- test-case-name: tests.test_rate_limit,tests.test_rate_limit_redis -*-
"""
The ``rate_limit`` plugin's algorithms (:mod:`tproxy.builtins.rate_limit`):
pure arithmetic on a small record per key, shared by the local store and
the Redis one (each class also carries its Lua script, the same arithmetic
run in Redis): :class:`TokenBucket`, :class:`SlidingWindow`, and the
:class:`Decision` of one request.
"""

import math

__all__ = ["Decision", "TokenBucket", "SlidingWindow"]


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
            # the quota is still spent when this window ends
            reset = max(reset, retry)
        return Decision(allowed, self.limit, remaining, reset, retry)

    def redis_args(self):
        """``ARGV`` of :data:`LUA` (the expiry last)."""
        return [str(self.limit), repr(self.window)]

    def from_redis(self, reply):
        """The :class:`Decision` of the script's reply."""
        return self.decision(int(reply[0]) == 1, int(reply[1]), int(reply[2]),
                             float(reply[3]))
