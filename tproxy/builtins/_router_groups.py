# -*- test-case-name: tests.test_router -*-
"""
The ``router`` plugin's view of the registry's groups: :class:`GroupNames`,
the plugin's base class, keeps the names of the groups and every
segment-prefix of them (a flattened trie) current as an
:class:`tproxy.registry.IRegistryListener`, so that the walk of a request's
path (:mod:`tproxy.builtins.router`) stops at the first candidate that leads
to no group.  Nothing here runs per request: a registry change, or a new
registry, updates the names.
"""


def _prefixes(name):
    """``"a/b/c"`` -> ``["a", "a/b", "a/b/c"]``."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


class GroupNames(object):
    """
    The group names of the registry a router follows (the base of
    :class:`tproxy.builtins.router.Plugin`).

    :ivar _names: the group names known to exist.
    :ivar _prefix_count: every segment-prefix of those names with the number
        of names it is a prefix of.
    :ivar _leaves: the names no other name starts with, but the fallback
        group's (``default_group``, the router's setting): a path whose first
        segment is one of them is routed in one step.
    """

    def _attach(self, registry):
        """Follow ``registry``'s groups from now on."""
        self._registry = registry
        self._names = set()
        self._prefix_count = {}
        self._leaves = set()
        registry.subscribe(self)
        for group in registry.groups():
            self._add_name(group.name)

    def _add_name(self, name):
        if name in self._names:
            return
        self._names.add(name)
        counts = self._prefix_count
        for p in _prefixes(name):
            n = counts[p] = counts.get(p, 0) + 1
            if n == 2:
                self._leaves.discard(p)   # (a name that another one extends now)
        if counts[name] == 1 and name != self.default_group:
            self._leaves.add(name)

    def _remove_name(self, name):
        if name not in self._names:
            return
        self._names.discard(name)
        self._leaves.discard(name)
        counts = self._prefix_count
        for p in _prefixes(name):
            n = counts[p] - 1
            if n:
                counts[p] = n
                if n == 1 and p in self._names and p != self.default_group:
                    self._leaves.add(p)   # (no longer extended)
            else:
                del counts[p]

    def peer_added(self, peer):
        """A peer joined: its group may be new."""
        self._add_name(peer.group.name)

    def peer_removed(self, peer):
        """A peer left: its group is gone if the registry no longer has it."""
        name = peer.group.name
        if self._registry is not None and self._registry.group(name) is None:
            self._remove_name(name)

    #: counts and weights do not matter to routing: not called per request
    peer_changed = None


__all__ = ["GroupNames"]
