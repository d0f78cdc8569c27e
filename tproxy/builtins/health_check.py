# -*- test-case-name: tests.test_health_check -*-
"""
The built-in ``health_check`` plugin: active health checks of upstream peers,
reported to the gateway's health state (:mod:`tproxy.health`) through its
public API, ``gateway.health.check_result``.

What is checked, and how, comes from the configuration: a static group's
``upstreams.<group>.health_check``, else ``health.active`` (the default, for
the groups of registered peers; ``null``: those are not checked)::

    {"upstreams": {"api": {"peers": ["10.0.0.5:8000"],
                           "health_check": {"type": "http", "path": "/healthz",
                                            "statuses": [200, 204],
                                            "interval": 5, "timeout": 2,
                                            "rise": 2, "fall": 3}}},
     "health": {"active": {"type": "tcp", "interval": 10}},
     "plugins": ["registry", "router", "least_conn", "health_check", "access_log"]}

- ``type`` ``"http"``: ``method`` ``path`` ``HTTP/1.1`` with ``Host`` (the
  ``host`` setting, else the peer's address) and ``Connection: close``;
  passes when the status is one of ``statuses`` (the body is not read).
  ``"tcp"``: passes when the connection is made.
- A check not done in ``timeout`` seconds fails.
- ``fall`` failures in a row make a peer unhealthy, ``rise`` passes in a row
  healthy again (HAProxy's 3 and 2 by default); a pass also re-admits a peer
  that passive checks ejected (the half-open probe).

Scheduling: each peer is checked every ``interval`` seconds, its first check
at an offset within the interval (so 10,000 peers added at once are spread
over it, not checked in one burst); one timer, armed for the next check due,
runs them, at most ``concurrency`` at a time per check configuration (the
others wait for the next free slot).  The timer catches and logs its own
exceptions.  A peer removed from the registry is no longer checked.

A reload: the previous configuration's instance stops checking within an
interval of the switch (its requests in flight may keep that configuration
alive for hours); the verdicts of its checks end with them unless the new
instance checks the peer too (:meth:`tproxy.health.HealthState.checks_end`).

With ``"workers"``, the parent alone probes (once per peer and interval for
the box, not once per process); every result reaches every worker's health
state (:mod:`tproxy.health`).
"""

import heapq
import itertools
import zlib
from collections import deque

from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger

from tproxy import hookimpl

__all__ = ["Plugin"]

log = Logger()

_USER_AGENT = b"tproxy-health-check"


class _Spec(object):
    """One check configuration, and how many of its checks run now."""

    def __init__(self, spec):
        self.type = spec.get("type", "http")
        self.method = spec.get("method", "GET")
        self.path = spec.get("path", "/")
        self.host = spec.get("host")
        self.statuses = frozenset(spec.get("statuses", (200,)))
        self.interval = spec.get("interval", 5)
        self.timeout = spec.get("timeout", 2)
        self.rise = spec.get("rise", 2)
        self.fall = spec.get("fall", 3)
        self.concurrency = spec.get("concurrency", 10)
        self.running = 0


class _Probe(Protocol):
    """One check's connection: TCP (made: passed) or HTTP (status line read)."""

    def __init__(self, check):
        self.check = check
        self.buffer = b""

    def connectionMade(self):
        check = self.check
        if check.spec.type == "tcp":
            check.done(True, "connected")
            self.transport.loseConnection()
            return
        spec = check.spec
        host = spec.host or check.peer.address
        self.transport.write(b"%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n"
                             b"Connection: close\r\n\r\n" % (
                                 spec.method.encode("ascii"), spec.path.encode("ascii"),
                                 host.encode("idna"), _USER_AGENT))

    def dataReceived(self, data):
        self.buffer += data
        end = self.buffer.find(b"\r\n")
        if end < 0:
            if len(self.buffer) > 4096:
                self.check.done(False, "status line too long")
                self.transport.abortConnection()
            return
        parts = self.buffer[:end].split(b" ", 2)
        status = int(parts[1]) if (len(parts) >= 2 and parts[0].startswith(b"HTTP/")
                                   and parts[1].isdigit()) else None
        if status is None:
            self.check.done(False, "not an HTTP response")
        else:
            self.check.done(status in self.check.spec.statuses, "status %d" % status)
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.check.done(False, "closed before a response: %s" % reason.getErrorMessage())


class _Check(ClientFactory):
    """One check of one peer: connects, reports once, times out."""

    noisy = False

    def __init__(self, plugin, peer, spec):
        self.plugin = plugin
        self.peer = peer
        self.spec = spec
        self.finished = False
        self.protocol_instance = None
        self.connector = None
        self.timer = plugin.clock.callLater(spec.timeout, self._timed_out)

    def buildProtocol(self, addr):
        p = self.protocol_instance = _Probe(self)
        return p

    def clientConnectionFailed(self, connector, reason):
        self.done(False, reason.getErrorMessage())

    def _timed_out(self):
        self.timer = None
        if self.finished:
            return
        self.done(False, "timed out after %s s" % self.spec.timeout)
        p = self.protocol_instance
        if p is not None and p.transport is not None:
            p.transport.abortConnection()
        elif self.connector is not None:
            try:
                self.connector.stopConnecting()
            except Exception:
                pass

    def done(self, ok, detail):
        if self.finished:
            return
        self.finished = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.plugin._finished(self, ok, detail)


class Plugin(object):
    """
    Active health checks (``init_worker``; see the module docstring).

    :param settings: none (the checks are configured per group in
        ``upstreams.<group>.health_check`` and by ``health.active``).
    """

    settings_schema = {"type": "object", "properties": {},
                       "additionalProperties": False}

    def __init__(self, settings=None):
        self.gateway = None
        self.clock = None
        self._specs = {}      # group name -> _Spec (static groups)
        self._default = None  # _Spec of health.active, or None
        self._peers = {}      # peer -> _Spec, the peers checked
        self._due = []        # heap of (time, seq, peer)
        self._seq = itertools.count()
        self._waiting = deque()   # peers due whose spec had no free slot
        self._timer = None
        self._running = set()
        self._stopped = False
        self._current = False   # its gateway has been the current one

    # -- wiring ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Start checking the peers of the groups that have checks (with
        ``"workers"``, in the parent only: it relays the results to the
        workers' health states)."""
        if gateway.role == "worker":
            return
        self.gateway = gateway
        self.clock = gateway.reactor
        config = gateway.config
        for name, group in config.get("upstreams", {}).items():
            if group.get("health_check") is not None:
                self._specs[name] = _Spec(group["health_check"])
        active = config.get("health", {}).get("active")
        if active is not None:
            self._default = _Spec(active)
        registry = gateway.registry
        registry.subscribe(self)
        for group in registry.groups():
            for peer in group.peers.values():
                self.peer_added(peer)
        gateway.on_stop(self._stop)

    def _spec_of(self, peer):
        return self._specs.get(peer.group.name, self._default)

    def peer_added(self, peer):
        """Check a new peer of a checked group, first at an offset in the interval."""
        spec = self._spec_of(peer)
        if spec is None or self.clock is None or self._stopped:
            return
        if peer not in self._peers:
            self.gateway.health.checks_cover(peer)
        self._peers[peer] = spec
        # the same peer gets the same offset: spread, and reproducible
        offset = (zlib.crc32(("%s/%s" % (peer.group.name, peer.address)).encode())
                  % 1000) / 1000.0 * spec.interval
        self._schedule(peer, self.clock.seconds() + offset)

    def peer_removed(self, peer):
        """Stop checking a removed peer (its heap entry is skipped when due)."""
        self._peers.pop(peer, None)

    peer_changed = None

    def _stop(self):
        """Stop checking (the gateway stops, or a reload superseded it: see
        :meth:`_superseded`); again: nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for check in list(self._running):
            check.finished = True
            if check.timer is not None and check.timer.active():
                check.timer.cancel()
            p = check.protocol_instance
            if p is not None and p.transport is not None:
                p.transport.abortConnection()
            elif check.connector is not None:
                try:
                    check.connector.stopConnecting()
                except Exception:
                    pass
        self._running.clear()
        peers, self._peers = self._peers, {}
        if self.gateway.owns_health:
            return   # tproxy stops: the health state ends with this gateway
        # a reload replaced the configuration: the verdicts of its checks end
        # with them, unless the next configuration's instance checks the peer
        # too (tproxy.health.HealthState.checks_end)
        health = self.gateway.health
        for peer in peers:
            health.checks_end(peer)

    # -- the timer ------------------------------------------------------------

    def _schedule(self, peer, when):
        heapq.heappush(self._due, (when, next(self._seq), peer))
        self._arm()

    def _arm(self):
        if self._stopped or not self._due:
            return
        delay = max(0.0, self._due[0][0] - self.clock.seconds())
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= self._due[0][0]:
                return
            timer.cancel()
        self._timer = self.clock.callLater(delay, self._run)

    def _superseded(self):
        """Whether a reload replaced this instance's configuration (whose
        requests in flight may keep it alive for hours: its checks stop now,
        the next configuration's decide)."""
        if self.gateway.owns_health:
            self._current = True
            return False
        return self._current

    def _run(self):
        """Start the checks due (never raises: it is the only timer)."""
        self._timer = None
        try:
            if self._superseded():
                self._stop()
                return
            now = self.clock.seconds()
            due = self._due
            while due and due[0][0] <= now:
                _, _, peer = heapq.heappop(due)
                spec = self._peers.get(peer)
                if spec is None:
                    continue   # removed meanwhile
                if spec.running >= spec.concurrency:
                    self._waiting.append(peer)
                    continue
                self._start(peer, spec)
        except Exception:
            log.failure("health check timer failed")
        self._arm()

    def _start(self, peer, spec):
        spec.running += 1
        check = _Check(self, peer, spec)
        self._running.add(check)
        try:
            check.connector = self.clock.connectTCP(peer.host, peer.port, check,
                                                    timeout=spec.timeout)
        except Exception as e:
            check.done(False, "cannot connect: %s" % (e,))

    def _finished(self, check, ok, detail):
        self._running.discard(check)
        spec = check.spec
        spec.running -= 1
        peer = check.peer
        if self._stopped:
            return
        if self._superseded():
            self._stop()
            return
        try:
            self.gateway.health.check_result(peer, ok, detail, rise=spec.rise,
                                             fall=spec.fall)
        except Exception:
            log.failure("health check result of {peer} failed", peer=peer.address)
        if self._peers.get(peer) is spec:
            self._schedule(peer, self.clock.seconds() + spec.interval)
        # a slot is free: a peer that waited for one goes now
        while self._waiting and spec.running < spec.concurrency:
            waiting = self._waiting.popleft()
            wspec = self._peers.get(waiting)
            if wspec is None:
                continue
            if wspec.running >= wspec.concurrency:
                self._waiting.append(waiting)
                break
            self._start(waiting, wspec)
