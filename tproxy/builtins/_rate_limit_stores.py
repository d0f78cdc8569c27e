# -*- test-case-name: tests.test_rate_limit,tests.test_rate_limit_redis -*-
"""
Where the ``rate_limit`` plugin's records live (:mod:`tproxy.builtins.rate_limit`):
this process (:class:`LocalStore`, ``policy: local``) or Redis
(:class:`RedisStore`, ``policy: redis``: one Lua script per decision, Redis
away, known from its connections, handled at once as the plugin's
``on_redis_error`` says).
"""

import collections
import hashlib

from twisted.internet.defer import CancelledError, TimeoutError as DeferredTimeoutError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tproxy.redis_connections import ReportingEndpoint, endpoint, watched_pool

__all__ = ["LocalStore", "RedisStore"]

#: the plugin's namespace: its log lines are the plugin's
log = Logger(namespace="tproxy.builtins.rate_limit")


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

    Whether Redis can answer is known from the pool itself, not learnt from
    a request that waited: txredisapi queues a command while it has no
    connection, until it reconnects, so a request sent then would wait the
    whole ``timeout``.  A refused or failed connection attempt, or the loss
    of the pool's last connection, marks Redis down at once; decisions are
    then ``None`` without asking it (and those waiting for the first
    connection are answered).  A new connection, or the ``retry_interval``
    probe while a connected Redis is silent, is followed by a ``PING``: up
    again when it answers.

    :ivar up: whether decisions ask Redis (``False``: they do not, until a
        ``PING`` is answered).
    :ivar connected: whether the pool holds a connection.
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
        self.connected = False
        self.clock = None
        self.client = None
        self.factory = None
        self.probe = None
        self._probing = False
        self._stopping = False
        #: decisions sent before the first connection: answered (``None``)
        #: as soon as it fails
        self._waiting = set()

    def start(self, reactor):
        """Make the connection pool (it connects in the background)."""
        s = self.settings
        self.clock = reactor
        # database 0 is every connection's: no SELECT to wait for
        factory = watched_pool(self._pool_changed, self.address, s["db"] or None,
                               s["pool_size"], s["password"])
        # reconnect no slower than the plugin probes
        factory.initialDelay = min(factory.initialDelay, s["retry_interval"])
        factory.maxDelay = max(s["retry_interval"], factory.initialDelay)
        factory.startConnecting(ReportingEndpoint(
            endpoint(reactor, s["host"], s["port"], s["connect_timeout"]),
            self._connect_failed, "rate_limit's Redis at " + self.address))
        self.factory = factory
        self.client = factory.handler
        self.probe = LoopingCall(self._probe)
        self.probe.clock = reactor

    def stop(self):
        """Stop probing and close the connections; a Deferred."""
        self._stopping = True
        if self.probe is not None and self.probe.running:
            self.probe.stop()
        self._answer_waiting()
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
        ``None`` when Redis failed; ``None`` at once while it is known to be
        down.
        """
        if not self.up:
            return None
        d = self._eval([self.prefix + key])
        if not self.connected:
            # waits for the first connection: answered as soon as it fails
            self._waiting.add(d)
            d.addBoth(self._settled, d)
        d.addTimeout(self.timeout, self.clock)
        return d.addCallbacks(self._answered, self._failed)

    def _settled(self, result, d):
        self._waiting.discard(d)
        return result

    #: the store cancels what waits for the first connection (answered as
    #: Redis failing); a cancellation from elsewhere is the request's end
    _answering = False

    def _answer_waiting(self):
        waiting, self._waiting = self._waiting, set()
        self._answering = True
        try:
            for d in waiting:
                d.cancel()
        finally:
            self._answering = False

    def _answered(self, reply):
        return self.algorithm.from_redis(reply)

    def _failed(self, failure):
        if failure.check(CancelledError) and not self._answering:
            # the request ended first (tproxy cancels what it awaited): not
            # a failure of Redis, and nothing more to decide
            return failure
        self._down(failure)
        return None

    def _down(self, failure=None, reason=None):
        if not self.up or self._stopping:
            return
        self.up = False
        if reason is None:
            reason = ("no answer within {} s".format(self.timeout)
                      if failure.check(DeferredTimeoutError) else failure.getErrorMessage())
        log.warn("rate_limit: Redis at {address} failed ({reason}); requests are "
                 "{mode} until it answers again",
                 address=self.address, reason=reason, mode=self.mode_text)
        if not self.probe.running:
            self.probe.start(self.settings["retry_interval"], now=False)
        # last: what waited goes on at once, and may stop the store
        self._answer_waiting()

    mode_text = "allowed"

    # -- what the pool says ------------------------------------------------------

    def _connect_failed(self, failure):
        """A connection attempt failed (refused, timed out, unresolvable)."""
        if not self.connected:
            self._down(reason="cannot connect: {}".format(failure.getErrorMessage()))

    def _pool_changed(self, size):
        """The pool gained or lost a connection; ``size``: how many it holds."""
        was, self.connected = self.connected, size > 0
        if was and not self.connected:
            self._down(reason="connection lost")
        elif self.connected and not was and not self.up:
            self._probe()

    def _probe(self):
        """Ask Redis for a PING (bounded by the timeout) if a connection is
        open (a new one probes at once); never raises."""
        if self._probing or self.up or not self.connected:
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
            if not self.up and not self._stopping:
                self.up = True
                log.info("rate_limit: Redis at {address} answers again",
                         address=self.address)
                if self.probe.running:
                    self.probe.stop()

        def failed(_):
            self._probing = False
        d.addCallbacks(answered, failed)
