# -*- test-case-name: tests.test_health -*-
"""
The contract of the peers' health state (``gateway.health``, implemented by
:class:`tproxy.health.HealthState`, whose docstring tells what the state
is): :class:`IHealth`, what a transport, a probe or a balancer calls, and
:class:`IHealthListener`, what a balancer that keeps an index implements to
hear of every change.
"""

from zope.interface import Attribute, Interface

__all__ = ["IHealth", "IHealthListener", "FAILURE_KINDS"]

#: The kinds of failure :meth:`IHealth.failed` takes.
FAILURE_KINDS = ("connect", "timeout", "invalid", "error", "status")


class IHealthListener(Interface):
    """Told when a peer becomes healthy or unhealthy (see ``IHealth.subscribe``)."""

    def peer_health_changed(peer):
        """``peer.healthy`` changed (the peer is still in its group)."""


class IHealth(Interface):
    """The health state of the peers of a gateway (``gateway.health``)."""

    when_all_down = Attribute('"try_all" or "503": what a balancer does when no '
                              'candidate is healthy.')

    def failed(peer, kind, detail=None):
        """
        An attempt on ``peer`` failed.

        :param kind: one of :data:`FAILURE_KINDS`.
        :param detail: a short text for ``/upstream/status`` (the error, the
            status), or ``None``.
        """

    def succeeded(peer):
        """An attempt on ``peer`` succeeded (a response head came, a stream connected)."""

    def check_result(peer, ok, detail=None, rise=2, fall=3):
        """
        An active check of ``peer`` ended (``ok``: it passed); ``rise``
        passes in a row make it healthy, ``fall`` failures unhealthy.
        """

    def checks_cover(peer):
        """An active checker checks ``peer`` from now on (its verdicts,
        reported with :meth:`check_result`, last while some checker does)."""

    def checks_end(peer):
        """A checker no longer checks ``peer``; when none does, the
        verdict of the active checks is forgotten (a peer they held down is
        healthy again, unless passive checks eject it)."""

    def subscribe(listener):
        """Tell ``listener`` (an :class:`IHealthListener`) of every change."""

    def unsubscribe(listener):
        """Tell ``listener`` of no more changes (no error if it never subscribed)."""

    def subscribers():
        """The listeners subscribed now (a new list)."""

    def try_unhealthy():
        """Whether a balancer with no healthy candidate may choose an unhealthy one."""

    def is_failure_status(status):
        """Whether a response ``status`` counts as a failure of the peer
        (``health.passive.statuses``): report it with ``failed(peer,
        "status", status)``, else ``succeeded(peer)``."""

    def as_dict(peer):
        """The health fields of ``peer`` for ``/upstream/status``."""
