"""
Tests for :mod:`tproxy.redis_connections`: what of a reconnecting Redis
pool's logging stays out of the log (with a real ``redis-server`` address
that refuses, and the events Twisted and txredisapi really emit).
"""

import io
import sys
import types
import warnings

from twisted.internet import defer, reactor
from twisted.logger import (LogBeginner, LogLevel, LogPublisher, Logger,
                            globalLogPublisher)
from twisted.python import log as legacy_log

from tests.helpers import ProxyTestCase, capture_log
from tproxy.redis_connections import is_reconnection_noise, quiet, quiet_the_log
from tproxy.registry_redis import RedisRegistry


class QuietTests(ProxyTestCase):
    """The reconnection chatter is filtered out; real errors are not."""

    async def test_outageLogsOnce(self):
        """A registry whose Redis refuses: ClientService logs a line per
        attempt per connection; through :func:`quiet` only tproxy's warning
        is left."""
        everything, kept = [], []
        filtered = quiet(kept.append)
        retries = defer.Deferred()
        scheduled = []

        def observe(event):
            everything.append(event)
            filtered(event)
            # (once: more attempts may be logged before the call runs)
            if (len([e for e in everything if is_reconnection_noise(e)]) >= 6
                    and not scheduled):
                scheduled.append(reactor.callLater(0, retries.callback, None))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        registry = RedisRegistry(reactor, {
            "url": "redis://127.0.0.1:%d/0" % self.closed_port(), "retry_interval": 0.01,
            "timeout": 3600})
        self.addCleanup(registry.stop)
        await registry.start()
        await retries       # several attempts of each connection
        noise = [e for e in everything if is_reconnection_noise(e)]
        self.assertTrue(all("Scheduling retry" in e["log_format"] for e in noise))
        self.assertEqual([e for e in kept if is_reconnection_noise(e)], [])
        mine = [e for e in kept if e.get("log_namespace") == "tproxy.registry_redis"]
        self.assertEqual(len(mine), 1)
        self.assertIn("unreachable", mine[0]["log_format"])

    def test_whatIsNoise(self):
        """txredisapi's "Discarding dead connection." is; a warning or an
        error from the same places, or a ClientService line about another
        endpoint, is not."""
        events = capture_log(self)
        legacy_log.msg("Discarding dead connection.")
        legacy_log.msg("Discarding dead connection.", isError=1)
        legacy_log.msg("Could not remove connection from pool: x")
        self.assertEqual([is_reconnection_noise(e) for e in events], [True, False, False])
        Logger(namespace="twisted.application._client_service.ClientService",
               observer=events.append).warn("Duplicate ClientService.startService")
        Logger(namespace="twisted.application._client_service.ClientService",
               observer=events.append).info(
            "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.",
            attempt=1, endpoint="<HostnameEndpoint example.com:80>", delay=1)
        self.assertEqual([is_reconnection_noise(e) for e in events[3:]], [False, False])
        self.assertEqual(events[3]["log_level"], LogLevel.warn)

    def test_quietTheLog(self):
        """The observers a beginner begins logging to are wrapped; wrapping
        twice is once."""
        publisher = LogPublisher()
        beginner = LogBeginner(publisher, io.StringIO(), sys,
                               types.SimpleNamespace(showwarning=warnings.showwarning))
        quiet_the_log(beginner)
        quiet_the_log(beginner)
        written = []
        beginner.beginLoggingTo([written.append], discardBuffer=True,
                                redirectStandardIO=False)
        registry = RedisRegistry(reactor, {"url": "redis://127.0.0.1:1/0"})
        endpoint = registry._endpoint(None)
        Logger(namespace="twisted.application._client_service.ClientService",
               observer=publisher).info(
            "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.",
            attempt=1, endpoint=endpoint, delay=1)
        Logger(namespace="tproxy.registry_redis", observer=publisher).warn("kept")
        self.assertEqual([e["log_format"] for e in written], ["kept"])
