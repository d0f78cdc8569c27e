# -*- test-case-name: tests.test_health -*-
"""
What is known of one peer's health (``peer.health``): the record that the
passive checks (:mod:`tproxy.health`) and the active checks' verdicts
(:mod:`tproxy.health_active`) keep.
"""

__all__ = ["PeerHealth", "state_of"]


class PeerHealth(object):
    """
    What is known of one peer's health (``peer.health``; ``None`` until the
    first failure or check).

    :ivar fails: consecutive failures of real requests.
    :ivar ejections: ejections in a row (reset by a success); the next one
        lasts ``fail_timeout * 2 ** ejections``.
    :ivar ejection_count: every ejection since the peer joined.
    :ivar ejected_until: clock time the current ejection ends (0: none).
    :ivar probation: re-admitted after an ejection, no outcome yet.
    :ivar active_down: active checks found it down.
    :ivar check_ok: consecutive results of active checks (positive: passes,
        negative: failures).
    :ivar last_check: ``(time, ok, detail)`` of the last active check.
    :ivar last_error: ``(time, kind, detail)`` of the last failure.
    """

    __slots__ = ("fails", "ejections", "ejection_count", "ejected_until",
                 "probation", "active_down", "check_ok", "last_check",
                 "last_error", "timer", "total_fails")

    def __init__(self):
        self.fails = 0
        self.total_fails = 0
        self.ejections = 0
        self.ejection_count = 0
        self.ejected_until = 0.0
        self.probation = False
        self.active_down = False
        self.check_ok = 0
        self.last_check = None
        self.last_error = None
        self.timer = None


def state_of(peer):
    """``peer.health``, made on first use."""
    h = peer.health
    if h is None:
        h = peer.health = PeerHealth()
    return h
