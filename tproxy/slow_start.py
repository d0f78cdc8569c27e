# -*- test-case-name: tests.test_health -*-
"""
Slow start (``health.slow_start``, as nginx's): a peer that joins (a
registration) or comes back (re-admitted after it was unhealthy) does not
take its whole share at once.  Its ``peer.ramp`` goes 1/10, 2/10 ... 1 in
:attr:`SlowStart.RAMP_STEPS` steps over ``slow_start`` seconds, and the
balancers weigh ``peer.weight * peer.ramp``.  One timer steps every peer
warming up; there is none when no peer is.  Run by the health state
(:class:`tproxy.health.HealthState`), which says when a peer warms up.
"""

from twisted.logger import Logger

__all__ = ["SlowStart"]

#: (the health state's namespace: one place in the logs for peers' health)
log = Logger(namespace="tproxy.health")


class SlowStart(object):
    """
    The warm-ups of the peers of one gateway.

    :param clock: an ``IReactorTime`` (a ``Clock`` in tests).
    :ivar seconds: how long a warm-up lasts (``health.slow_start``; 0: no
        warm-up).
    """

    #: steps of a warm-up: the ramp goes 1/10, 2/10 ... 1
    RAMP_STEPS = 10

    def __init__(self, clock, seconds=0):
        self.clock = clock
        self.seconds = seconds
        self._ramping = {}     # peer -> time its warm-up started
        self._ramp_timer = None

    def warm_up(self, peer):
        """Start ``peer``'s warm-up: it takes a tenth of its weight, more at
        each of ``RAMP_STEPS`` steps over ``seconds``."""
        peer.ramp = 1.0 / self.RAMP_STEPS
        self._ramping[peer] = self.clock.seconds()
        if self._ramp_timer is None:
            self._ramp_timer = self.clock.callLater(
                float(self.seconds) / self.RAMP_STEPS, self._ramp_up)

    def forget(self, peer):
        """``peer`` left its group: no more steps for it."""
        self._ramping.pop(peer, None)

    def stop(self):
        """Cancel the timer (the gateway stops)."""
        self._ramping.clear()
        timer, self._ramp_timer = self._ramp_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _ramp_up(self):
        """One step of every warm-up (never raises: it is a timer)."""
        self._ramp_timer = None
        try:
            now = self.clock.seconds()
            steps = self.RAMP_STEPS
            for peer, start in list(self._ramping.items()):
                done = (now - start) / self.seconds
                if done >= 1 - 1e-9:
                    ramp = 1.0
                    del self._ramping[peer]
                else:
                    ramp = max(1, int(done * steps + 1e-9)) / float(steps)
                if ramp != peer.ramp:
                    peer.ramp = ramp
                    peer.notify_changed()
        except Exception:
            log.failure("slow start timer failed")
        if self._ramping:
            self._ramp_timer = self.clock.callLater(
                float(self.seconds) / self.RAMP_STEPS, self._ramp_up)
