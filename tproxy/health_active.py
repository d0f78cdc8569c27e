# -*- test-case-name: tests.test_health,tests.test_health_check -*-
"""
The active checks' side of :class:`tproxy.health.HealthState` (a mixin):
their results (:meth:`ActiveChecks.check_result`, reported by the
``health_check`` plugin), the verdict they hold (``active_down`` after
``fall`` failures in a row, healthy again after ``rise`` passes), which
lasts while some checker checks the peer (:meth:`ActiveChecks.checks_cover`,
:meth:`ActiveChecks.checks_end`: a reload that drops the checks forgets
it), and the observers that relay results to a box's workers.
"""

from twisted.logger import Logger

from tproxy.peer_health import state_of

__all__ = ["ActiveChecks"]

log = Logger(namespace="tproxy.health")


class ActiveChecks(object):
    """
    The active checks' verdicts, mixed into :class:`tproxy.health.HealthState`
    (which provides ``clock``, ``_checked``, ``_check_observers``,
    ``_cancel`` and ``_set``).

    :ivar relayed: the results come from another process that logs each
        change of state itself (a box's worker takes the parent's): the
        lines saying so are ``debug`` here, so that the box logs a change
        once, not once per process.
    """

    relayed = False

    def _said(self, level):
        """The logger method of a change of state at ``level``."""
        return log.debug if self.relayed else getattr(log, level)

    def observe_checks(self, observer):
        """
        Call ``observer(peer, ok, detail, rise, fall)`` after each active
        check result of a peer of the registry (the parent of a box of
        workers relays them to the workers, which do not probe); ``ok`` is
        ``None`` when the checks' verdict is forgotten (:meth:`forget_checks`).
        """
        self._check_observers.append(observer)

    def restore_checks(self, peer, check_ok, active_down, last_check):
        """
        Take the active checks' state of ``peer`` from another process (a
        worker starting, from the parent): ``check_ok`` the results in a row
        (positive: passes, negative: failures), ``active_down`` whether they
        hold it down, ``last_check`` ``[time, ok, detail]`` or ``None``.
        """
        h = state_of(peer)
        h.check_ok = check_ok
        h.last_check = tuple(last_check) if last_check else None
        if active_down and not h.active_down:
            h.active_down = True
            self._set(peer, False)

    def checks_cover(self, peer):
        """
        An active checker (an instance of the ``health_check`` plugin) checks
        ``peer`` from now on.  Its verdicts last only while some checker
        does: see :meth:`checks_end`.
        """
        self._checked[peer] = self._checked.get(peer, 0) + 1

    def checks_end(self, peer):
        """
        A checker that called :meth:`checks_cover` no longer checks ``peer``
        (it stopped: a reload without it, or without checks for the peer's
        group).  When no other checker does, the active checks' verdict is
        forgotten (:meth:`forget_checks`): no check would ever make a peer
        they hold down healthy again.
        """
        n = self._checked.get(peer, 0) - 1
        if n > 0:
            self._checked[peer] = n
            return
        self._checked.pop(peer, None)
        self.forget_checks(peer)

    def forget_checks(self, peer):
        """
        Forget the active checks' verdict of ``peer`` (no check runs for it
        any more): a peer they held down is healthy again, unless passive
        checks eject it.  The check observers are told (``ok`` ``None``).
        """
        h = peer.health
        if h is None or not (h.active_down or h.check_ok):
            return
        down = h.active_down
        h.active_down = False
        h.check_ok = 0
        if not peer.member:
            return
        if down and h.ejected_until == 0.0:
            self._said("info")("upstream {peer} of {group} is no longer checked (its "
                               "active checks ended): healthy again", peer=peer.address,
                               group=peer.group.name)
            self._set(peer, True)
        self._tell_observers(peer, None, None, 0, 0)

    def check_result(self, peer, ok, detail=None, rise=2, fall=3):
        """
        An active check of ``peer`` ended.  ``rise`` passes in a row make an
        active-down peer healthy (and end a passive ejection whose time is up
        or not: the probe is the half-open request), ``fall`` failures in a
        row make it unhealthy.
        """
        h = state_of(peer)
        now = self.clock.seconds()
        h.last_check = (now, ok, detail)
        if not peer.member:
            return
        if ok:
            h.check_ok = h.check_ok + 1 if h.check_ok > 0 else 1
            if h.active_down and h.check_ok >= rise:
                h.active_down = False
                h.fails = 0
                h.ejections = 0
                self._cancel(h)
                h.ejected_until = 0.0
                h.probation = False
                self._said("info")("upstream {peer} of {group} is up: {n} check(s) passed",
                                   peer=peer.address, group=peer.group.name, n=h.check_ok)
                self._set(peer, True)
            elif h.probation or (not h.active_down and h.ejected_until > now
                                 and h.check_ok >= rise):
                # a passive ejection: a passing probe is the half-open request
                self._cancel(h)
                h.ejected_until = 0.0
                h.probation = False
                h.ejections = 0
                h.fails = 0
                if not peer.healthy:
                    self._said("info")("upstream {peer} of {group} is up: check passed",
                                       peer=peer.address, group=peer.group.name)
                    self._set(peer, True)
        else:
            h.check_ok = h.check_ok - 1 if h.check_ok < 0 else -1
            if not h.active_down and -h.check_ok >= fall:
                h.active_down = True
                # a line at warn only if this is the change (not when passive
                # checks had ejected it already)
                self._said("warn" if peer.healthy else "debug")(
                    "upstream {peer} of {group} is down: {n} check(s) failed "
                    "({detail})", peer=peer.address, group=peer.group.name,
                    n=-h.check_ok, detail=detail)
                self._set(peer, False)
        self._tell_observers(peer, ok, detail, rise, fall)

    def _tell_observers(self, peer, ok, detail, rise, fall):
        for observer in self._check_observers:
            try:
                observer(peer, ok, detail, rise, fall)
            except Exception:
                log.failure("health check observer {observer} failed", observer=observer)
