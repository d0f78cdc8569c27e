# -*- test-case-name: tests.test_registry -*-
"""
The contract of the upstream registry (``gateway.registry``, implemented by
:class:`tproxy.registry.MemoryRegistry`, whose module tells what the registry
is, and by :class:`tproxy.registry_redis.RedisRegistry`):
:class:`IRegistry`, what a backend fulfils; :class:`IRegistryListener`, how a
balancer keeps its own index of peers up to date without scanning them per
request; :class:`IRegistryReplica`, a registry that another sweeps; and
:class:`RegistryUnavailable`, a shared registry's answer when its store
cannot take a write.
"""

from zope.interface import Attribute, Interface

__all__ = ["IRegistry", "IRegistryListener", "IRegistryReplica", "RegistryUnavailable"]


class RegistryUnavailable(Exception):
    """
    A shared registry (:mod:`tproxy.registry_redis`) cannot take a write now
    (its store is unreachable): the admin API answers ``503``.  ``str()``
    says why.
    """


class IRegistryListener(Interface):
    """Told of every change of the registry's peers (see ``IRegistry.subscribe``)."""

    def peer_added(peer):
        """``peer`` joined ``peer.group``."""

    def peer_removed(peer):
        """``peer`` left its group (deregistered or expired)."""

    def peer_changed(peer):
        """
        ``peer.active`` or ``peer.weight`` changed.  This is called twice per
        request: a listener that does not care sets ``peer_changed = None``
        and is not called.
        """


class IRegistry(Interface):
    """A store of upstream groups and their peers."""

    ttl = Attribute("Seconds a dynamic registration lives after its last heartbeat.")
    shared = Attribute("Whether writes go to a store shared by several instances "
                       "(``register``, ``deregister``, ``expire`` return Deferreds).")

    def register(group, host, port, weight=None, max_conns=None, routable=None):
        """
        Register ``host:port`` in ``group``, or heartbeat it if present and
        not expired.  ``weight`` (``None``: 1 for a new peer, unchanged for
        an existing one) is updated, and so is ``max_conns`` (``None``: 0, no
        limit, for a new peer, unchanged for an existing one); ``routable``
        (``None``: unchanged) is set on the group.  Return ``(peer, created)``; ``created``
        is ``True`` for a new registration, including one whose previous
        registration had expired but was not cleaned up yet.  A shared
        registry (``shared = True``) returns a Deferred of it, which fails
        with :class:`RegistryUnavailable` when its store cannot be reached;
        its ``deregister`` and ``expire`` return Deferreds too.
        """

    def add_static(group, host, port, weight=1, max_conns=0):
        """Add a peer that never expires (from the configuration); return it."""

    def deregister(group, host, port):
        """Remove a dynamic peer; return the :class:`Peer`, or ``None`` if absent."""

    def expire():
        """Remove every dynamic peer whose TTL has passed; return them."""

    def group(name):
        """The :class:`Group` called ``name``, or ``None``."""

    def groups():
        """Every :class:`Group` (a list, sorted by name)."""

    def subscribe(listener):
        """Send every later change to ``listener`` (an :class:`IRegistryListener`)."""

    def now():
        """The registry clock's current time (seconds)."""

    def unsubscribe(listener):
        """Send no more changes to ``listener`` (no error if it never subscribed)."""

    def subscribers():
        """The listeners subscribed now (a new list)."""

    def remove_static(group, host, port):
        """Remove a static peer (a reload dropped it from the configuration);
        return the :class:`Peer`, or ``None`` if there is no such static peer."""


class IRegistryReplica(IRegistry):
    """
    A registry whose dynamic peers are another registry's, sent to it (a
    worker's :class:`tproxy.replica.ReplicaRegistry`, the replica of its
    parent's): it expires nothing itself (the registry it follows sweeps,
    and the removals reach it as changes), so the registry plugin starts no
    cleanup timer on it.  Declared with ``@implementer(IRegistryReplica)``;
    nothing else (an attribute's name, a class's) makes a registry one.
    """
