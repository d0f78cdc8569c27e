# -*- test-case-name: tests.test_registry_redis -*-
"""
How what Redis says reaches an instance's replica of the shared registry
(:mod:`tproxy.registry_redis`): :class:`ReplicaUpdater` applies the full
snapshots, the published changes and the replies of the instance's own
scripts to the :class:`~tproxy.registry_redis.RedisRegistry` (a
:class:`~tproxy.registry.MemoryRegistry`) and to its
:class:`~tproxy.shared_routes.SharedRoutes`.

Every change carries the version Redis stamped it with; a change is applied
only if it is newer than what the replica holds for its key, so snapshots,
published changes and replies converge in whatever order they arrive.  A
snapshot also removes what the replica holds that Redis no longer has
(unless it changed after the snapshot's version).  Versions start again
when Redis's epoch changes (it lost its data).
"""

import json

from tproxy.registry import Peer

__all__ = ["ReplicaUpdater", "member", "unmember"]


def member(group, host, port):
    """The Redis name of a registration: ``"group host port"``."""
    return "{} {} {}".format(group, host, port)


def unmember(name):
    """``(group, host, port)`` of a :func:`member` name."""
    group, host, port = name.split(" ")
    return group, host, int(port)


def _record(peer):
    """The Redis record of a dynamic peer of the replica."""
    return {"g": peer.group.name, "h": peer.host, "p": peer.port, "w": peer.weight,
            "m": peer.max_conns, "c": peer.created_time, "hb": peer.last_heartbeat,
            "x": peer.expires_at}


class ReplicaUpdater(object):
    """
    Applies what Redis says to ``registry``'s replica (see the module
    docstring).

    :ivar epoch: Redis's epoch the versions are of (``None``: none seen yet).
    :ivar shadow: ``(group, host, port)`` -> the Redis record of a
        registration hidden by a static peer of this instance (it comes back
        when the static peer goes).
    """

    def __init__(self, registry):
        self.registry = registry
        self.epoch = None
        self.version = 0            # of the last snapshot
        self.shadow = {}
        self._versions = {}         # ("p"|"g"|"r", key) -> version of the last change
        self._remote_routable = {}  # group -> routable set through Redis

    def epoch_is(self, epoch):
        """Redis has another epoch (it lost its data): its versions started
        again, so the replica's versions of the old one mean nothing."""
        if epoch != self.epoch:
            self._versions = {}
            self.epoch = epoch

    def snapshot(self, version, epoch, peers, groups, routes):
        """
        Apply a full snapshot taken at ``version``: ``peers``, ``groups`` and
        ``routes`` are Redis's hashes as flat ``[name, JSON, ...]`` lists.
        """
        registry = self.registry
        self.epoch_is(epoch)
        seen = set()
        for name, raw in zip(peers[::2], peers[1::2]):
            rec = json.loads(raw)
            seen.add(("p", name))
            self.change("p", name, rec, rec.get("v", 0))
        for name, raw in zip(groups[::2], groups[1::2]):
            rec = json.loads(raw)
            if "r" in rec:
                seen.add(("g", name))
                self.change("g", name, {"r": rec["r"]}, rec.get("v", 0))
        for name, raw in zip(routes[::2], routes[1::2]):
            rec = json.loads(raw)
            seen.add(("r", name))
            self.change("r", name, rec, rec.get("v", 0))
        # what the replica has that Redis no longer does, unless it changed later
        for group in list(registry._groups.values()):
            for peer in list(group.peers.values()):
                name = member(group.name, peer.host, peer.port)
                if not peer.static and ("p", name) not in seen:
                    self.change("p", name, False, version, absent=True)
        for key in list(self.shadow):
            if ("p", member(*key)) not in seen:
                self.change("p", member(*key), False, version, absent=True)
        for name in list(self._remote_routable):
            if ("g", name) not in seen:
                self.change("g", name, False, version, absent=True)
        for name in list(registry.shared_routes.records):
            if ("r", name) not in seen:
                self.change("r", name, False, version, absent=True)
        self._versions = dict((k, v) for k, v in self._versions.items() if v > version)
        self.version = max(self.version, version)
        registry.shared_routes.changed()

    def export(self):
        """
        What the replica holds, as a snapshot of Redis's (the arguments of
        :meth:`snapshot`, JSON-ready), each record with the version the
        replica has of it; ``None`` if it never had one.  A worker started
        while Redis is away begins from its parent's (see
        :meth:`tproxy.registry_redis.RedisRegistry.seed`).
        """
        if self.epoch is None:
            return None
        versions = self._versions
        top = max([self.version] + list(versions.values()))

        def flat(kind, items):
            out = []
            for name, rec in items:
                out.extend([name, json.dumps(dict(rec, v=versions.get((kind, name),
                                                                       self.version)))])
            return out
        peers = [(member(g.name, p.host, p.port), _record(p))
                 for g in self.registry._groups.values() for p in g.peers.values()
                 if not p.static]
        peers.extend((member(*key), rec) for key, rec in self.shadow.items())
        groups = [(name, {"r": r}) for name, r in self._remote_routable.items()]
        routes = [(name, {"s": json.dumps(spec, sort_keys=True), "q": seq})
                  for name, (seq, spec) in self.registry.shared_routes.records.items()]
        return [top, self.epoch, flat("p", peers), flat("g", groups), flat("r", routes)]

    def apply(self, message):
        """
        Apply a published change (the JSON text a script publishes) to the
        replica; return the peers it removed.
        """
        if not message:
            return []
        msg = json.loads(message)
        removed = []
        routes = False
        for kind, key, rec, version in msg["c"]:
            gone = self.change(kind, key, rec, version)
            if gone is not None:
                removed.append(gone)
            routes = routes or kind == "r"
        if routes:
            self.registry.shared_routes.changed()
        return removed

    def change(self, kind, key, rec, version, absent=False):
        """One change (``kind``: ``"p"`` a registration, ``"g"`` a group's
        ``routable``, ``"r"`` a route; ``rec`` false: removed), if newer than
        what the replica holds for ``key`` (``absent``: the key is missing
        from a snapshot at ``version``).  Returns the peer it removed, if
        any."""
        held = self._versions.get((kind, key), 0)
        if version <= held if not absent else version < held:
            return None
        if not absent:
            self._versions[(kind, key)] = version
        if kind == "p":
            return self._peer(key, rec)
        if kind == "g":
            self._routable(key, rec)
        elif kind == "r":
            self.registry.shared_routes.apply(key, rec)
        return None

    def _peer(self, name, rec):
        registry = self.registry
        group, host, port = unmember(name)
        g = registry._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if peer is not None and peer.static:
            if rec:
                self.shadow[(group, host, port)] = rec
            else:
                self.shadow.pop((group, host, port), None)
            return None
        if not rec:
            if peer is not None:
                registry._remove(peer)
            return peer
        if peer is not None and peer.created_time != rec["c"]:
            # a new registration in the place of an expired one
            registry._remove(peer)
            peer = None
        if peer is None:
            self.add_record(rec)
            return None
        lower = rec["x"] < peer.expires_at
        peer.last_heartbeat = rec["hb"]
        peer.expires_at = rec["x"]
        if lower:
            peer.group._removed(peer)  # recomputes the group's latest expiry
        else:
            peer.group._added(peer)
        registry._set_weight(peer, rec["w"], rec["m"])
        return None

    def add_record(self, rec):
        """Add the registration of a Redis record to the replica; the new
        :class:`~tproxy.registry.Peer`."""
        registry = self.registry
        g = registry._group(rec["g"])
        self._remote_routable_of(g)
        peer = Peer(g, rec["h"], int(rec["p"]), rec["w"], now=rec["c"], ttl=registry.ttl,
                    notify=registry._load_listeners)
        peer.max_conns = rec["m"] or 0
        peer.last_heartbeat = rec["hb"]
        peer.expires_at = rec["x"]
        g._put(peer)
        for listener in registry._listeners:
            listener.peer_added(peer)
        return peer

    def _routable(self, name, rec):
        if rec:
            self._remote_routable[name] = rec["r"]
        else:
            self._remote_routable.pop(name, None)
        group = self.registry._groups.get(name)
        if group is not None:
            self._remote_routable_of(group)

    def _remote_routable_of(self, group):
        # when the shared value goes (the group has no registration left in
        # Redis) a group this instance keeps (static peers) keeps its value,
        # as in memory, until a reload sets the configuration's again
        remote = self._remote_routable.get(group.name)
        if remote is not None:
            group.routable = remote
