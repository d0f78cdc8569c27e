# -*- test-case-name: tests.test_health -*-
"""
One health state per upstream peer, fed by real traffic (passive checks) and
by probes (active checks), read by every balancer.

What a peer's state is
----------------------
A peer is *healthy* (``peer.healthy`` is ``True``) unless:

- **passive checks** ejected it: ``health.passive.max_fails`` consecutive
  failures of real requests (a refused or timed-out connect, a read timeout,
  an invalid response, a connection lost before the response, or a status
  listed in ``health.passive.statuses``) eject it for
  ``health.passive.fail_timeout`` seconds, doubled at each ejection that
  follows another without a success in between, up to
  ``health.passive.max_ejection`` (Envoy's outlier detection; nginx's
  ``max_fails=1 fail_timeout=10s`` are the defaults).  When the time is up the
  peer is a candidate again, *on probation*: its first outcome decides, a
  success ends the probation (``up``), a failure ejects it again at once
  (the half-open probe of a circuit breaker, made by real requests, or by an
  active check's success); a success of an ejected peer (tried because all
  were down, or a request from before the ejection) re-admits it at once;
- **active checks** (the ``health_check`` plugin) saw it fail ``fall`` probes
  in a row; ``rise`` successes in a row make it healthy again.

A peer never checked nor failed is healthy.  The state is forgotten with the
peer (removed or expired).

Who reads it
------------
Balancers: ``peer.healthy`` is one attribute, read in O(1); a balancer that
keeps an index follows the changes as an :class:`IHealthListener`
(``gateway.health.subscribe(listener)``) so that an ejected peer leaves its
candidates and a re-admitted one comes back without a scan.  When no
candidate of a group is healthy, ``health.when_all_down`` says what to do:
``"try_all"`` (the default, as nginx) chooses among the unhealthy ones anyway;
``"503"`` answers ``503 {"error": "no healthy upstream"}``
(:meth:`HealthState.try_unhealthy`).

Who feeds it
------------
tproxy itself reports the outcome of every attempt (HTTP exchanges and
stream sessions): :meth:`HealthState.failed` and
:meth:`HealthState.succeeded`, the public API a third-party transport or
probe uses too.  A success of a peer that never failed costs one attribute
read (``peer.health is None``).

With ``"workers"``, the active checks run in the parent only: it relays
every result to the workers (:meth:`HealthState.observe_checks`), whose
states take them as their own (:meth:`HealthState.check_result`), and a new
worker starts from the parent's (:meth:`HealthState.restore_checks`).
Passive checks are each worker's: it sees its own requests.

The contract (:class:`IHealth`, :class:`IHealthListener`,
:data:`FAILURE_KINDS`) is in :mod:`tproxy.health_interfaces`, and importable
from here.

Logging: one line per change of state (``down`` with the failure count and
the last error, ``up``), never one per request.
"""

from twisted.logger import Logger
from zope.interface import implementer

from tproxy.health_active import ActiveChecks
from tproxy.health_interfaces import FAILURE_KINDS, IHealth, IHealthListener
from tproxy.peer_health import PeerHealth, state_of
from tproxy.slow_start import SlowStart

__all__ = ["IHealth", "IHealthListener", "HealthState", "PeerHealth",
           "FAILURE_KINDS", "PASSIVE_DEFAULTS"]

log = Logger()

#: ``health.passive`` in the configuration, its defaults (nginx's).
PASSIVE_DEFAULTS = {"max_fails": 1, "fail_timeout": 10, "max_ejection": 300,
                    "statuses": []}


@implementer(IHealth)
class HealthState(ActiveChecks):
    """
    The health of every peer of a registry (see the module docstring).

    :param clock: an ``IReactorTime`` (a ``Clock`` in tests).
    :param registry: the :class:`tproxy.registry.IRegistry` whose peers it
        follows (to forget removed ones).
    :param settings: the ``health`` configuration (``passive``,
        ``when_all_down``); absent keys take their defaults.
    """

    def __init__(self, clock, registry=None, settings=None):
        self.clock = clock
        #: the warm-ups of the peers that join or come back
        self.warm = SlowStart(clock)
        self.configure(settings)
        self._listeners = []
        self._timed = set()    # the PeerHealth with a re-admission timer
        self._check_observers = []
        self._checked = {}     # peer -> active checkers checking it (checks_cover)
        if registry is not None:
            registry.subscribe(self)

    def configure(self, settings):
        """Apply the ``health`` configuration ``settings`` (at start, and on a
        reload: the peers' states go on)."""
        settings = settings or {}
        passive = dict(PASSIVE_DEFAULTS, **settings.get("passive", {}))
        self.max_fails = passive["max_fails"]
        self.fail_timeout = passive["fail_timeout"]
        self.max_ejection = passive["max_ejection"]
        self.statuses = frozenset(passive["statuses"])
        self.when_all_down = settings.get("when_all_down", "try_all")
        self.slow_start = self.warm.seconds = settings.get("slow_start", 0)
        self._try_all = self.when_all_down == "try_all"

    # -- the registry's changes (IRegistryListener) ---------------------------

    def peer_added(self, peer):
        """A new peer is healthy; a registered one warms up (``slow_start``)."""
        if self.slow_start and not peer.static:
            self.warm.warm_up(peer)

    def peer_removed(self, peer):
        """Forget a removed peer's state and its timer."""
        h = peer.health
        if h is not None:
            self._cancel(h)
        self._checked.pop(peer, None)
        self.warm.forget(peer)

    peer_changed = None   # counts do not matter: not called per request

    # -- public API -----------------------------------------------------------

    def subscribe(self, listener):
        self._listeners.append(listener)

    def unsubscribe(self, listener):
        self._listeners = [l for l in self._listeners if l is not listener]

    def subscribers(self):
        return list(self._listeners)

    def stop(self):
        """Cancel the re-admission timers (the gateway stops)."""
        for h in list(self._timed):
            self._cancel(h)
        self.warm.stop()

    def try_unhealthy(self):
        return self._try_all

    def is_failure_status(self, status):
        """Whether a response ``status`` counts as a passive failure."""
        return status in self.statuses

    def succeeded(self, peer):
        h = peer.health
        if h is None:
            return
        h.fails = 0
        h.ejections = 0
        if h.probation or h.ejected_until:
            # the half-open probe passed (or, all peers down, an ejected peer
            # was tried and answered): it is back
            h.probation = False
            if h.ejected_until:
                self._cancel(h)
                h.ejected_until = 0.0
            if not h.active_down:   # (else the active checks still say down)
                log.info("upstream {peer} of {group} is up again after "
                         "{ejections} ejection(s)", peer=peer.address,
                         group=peer.group.name, ejections=h.ejection_count)
                self._set(peer, True)

    def failed(self, peer, kind, detail=None):
        h = state_of(peer)
        now = self.clock.seconds()
        h.fails += 1
        h.total_fails += 1
        h.last_error = (now, kind, detail)
        if not self.max_fails or not peer.member:
            return   # passive checks off, or a peer no longer in its group
        if h.ejected_until > now:
            return   # already ejected (requests in flight when it was)
        if h.probation or h.fails >= self.max_fails:
            self._eject(peer, h, now, kind, detail)

    def restore_ejection(self, peer, health, ejections):
        """
        Take a passive ejection of ``peer`` from another process: at a
        reload with ``"workers"``, a new worker goes on from the worker it
        replaces, as one process keeps its peers' health.  ``health`` is
        that worker's :meth:`as_dict` of the peer (ejected for
        ``ejected_for`` more seconds), ``ejections`` its ejections in a row
        (the next one lasts twice as long).  Not logged: the other process
        said it.
        """
        seconds = health["ejected_for"]
        if seconds <= 0 or not self.max_fails:
            return
        h = state_of(peer)
        now = self.clock.seconds()
        h.fails = health["fails"]
        h.total_fails = health["total_fails"]
        h.ejections = ejections
        h.ejection_count = health["ejections"]
        error = health["last_error"]
        if error is not None:
            h.last_error = (error["time"], error["kind"], error["detail"])
        h.probation = False
        h.ejected_until = now + seconds
        self._cancel(h)
        h.timer = self.clock.callLater(seconds, self._readmit, peer)
        self._timed.add(h)
        if peer.healthy:
            self._set(peer, False)

    def as_dict(self, peer):
        h = peer.health
        if h is None:
            return {"healthy": peer.healthy, "ejections": 0, "ejected_for": 0,
                    "probation": False, "active_down": False, "fails": 0,
                    "total_fails": 0, "last_error": None, "last_check": None}
        now = self.clock.seconds()
        return {
            "healthy": peer.healthy,
            "ejections": h.ejection_count,
            "ejected_for": round(max(0.0, h.ejected_until - now), 3),
            "probation": h.probation,
            "active_down": h.active_down,
            "fails": h.fails,
            "total_fails": h.total_fails,
            "last_error": None if h.last_error is None else {
                "time": h.last_error[0], "kind": h.last_error[1],
                "detail": h.last_error[2]},
            "last_check": None if h.last_check is None else {
                "time": h.last_check[0], "ok": h.last_check[1],
                "detail": h.last_check[2]},
        }

    # -- ejection and re-admission --------------------------------------------

    def _eject(self, peer, h, now, kind, detail):
        seconds = min(self.fail_timeout * (2 ** min(h.ejections, 30)), self.max_ejection)
        again = h.probation
        h.probation = False
        h.ejections += 1
        h.ejection_count += 1
        h.ejected_until = now + seconds
        self._cancel(h)
        h.timer = self.clock.callLater(seconds, self._readmit, peer)
        self._timed.add(h)
        if again or not peer.healthy:
            # still down (or down already by active checks): not a change of
            # state worth a line at warn
            log.debug("upstream {peer} of {group} still failing ({kind}: {detail}): "
                      "ejected again for {seconds} s", peer=peer.address,
                      group=peer.group.name, kind=kind, detail=detail, seconds=seconds)
        else:
            log.warn("upstream {peer} of {group} is down: {fails} failure(s) in a row "
                     "({kind}: {detail}), ejected for {seconds} s",
                     peer=peer.address, group=peer.group.name, fails=h.fails,
                     kind=kind, detail=detail, seconds=seconds)
        if peer.healthy:
            self._set(peer, False)

    def _readmit(self, peer):
        h = peer.health
        h.timer = None
        self._timed.discard(h)
        h.ejected_until = 0.0
        h.fails = 0
        if not peer.member:
            return
        h.probation = True
        if not h.active_down:
            self._set(peer, True)

    def _cancel(self, h):
        if h.timer is not None:
            if h.timer.active():
                h.timer.cancel()
            h.timer = None
            self._timed.discard(h)

    def _set(self, peer, healthy):
        if peer.healthy is healthy:
            return
        if healthy and self.slow_start:
            self.warm.warm_up(peer)   # re-admitted: warm up again
        peer.healthy = healthy
        for listener in self._listeners:
            try:
                listener.peer_health_changed(peer)
            except Exception:
                log.failure("health listener {listener} failed", listener=listener)
