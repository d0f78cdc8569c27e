# -*- test-case-name: tests.test_registry -*-
"""
The upstream registry: groups of peers, static ones from the configuration and
dynamic ones that register and heartbeat at run time and expire ``ttl``
seconds after their last heartbeat.

:class:`IRegistry` is the contract a backend fulfils (a shared Redis store can
replace :class:`MemoryRegistry`); :class:`IRegistryListener` is how a balancer
keeps its own index of peers up to date without scanning them per request.
They, :class:`IRegistryReplica` and :class:`RegistryUnavailable` are in
:mod:`tproxy.registry_interfaces`, and importable from here.
"""

from collections import OrderedDict

from zope.interface import implementer

from tproxy.registry_interfaces import (  # noqa: F401 (importable from here)
    IRegistry, IRegistryListener, IRegistryReplica, RegistryUnavailable)

INFINITY = float("inf")


class Peer(object):
    """
    One upstream server of one group: what a ``balancer`` returns (also
    ``tproxy.Peer``).  Read its attributes; only the registry changes them,
    and tproxy itself counts ``active`` (``acquire`` / ``release``): a
    balancer only reads it.  ``is_live(now)`` (``now`` being
    ``ctx.gateway.registry.now()``) says whether it may be chosen: ``False``
    once its registration expired, even before the next sweep removes it
    (``expires_at`` is ``inf`` for a static peer).

    :ivar address: ``"host:port"``, an IPv6 host in brackets
        (``"[::1]:8080"``): ``ctx.upstream_addr`` and the access log's
        ``upstream_addr``.
    :ivar key: ``(host, port)``, unique within the group.
    :ivar total: requests (or connections) sent to it since it was
        registered.
    :ivar last_heartbeat: clock time of its last registration or heartbeat.
    :ivar created_time: clock time of its first registration.
    :ivar group: the :class:`Group` it belongs to (``group.name`` is the
        route, e.g. ``"api"``).
    :ivar host: host name or address as registered (``str``, IPv6 without
        brackets).
    :ivar port: ``int``.
    :ivar weight: ``int``, 1 to 1000 (1 unless configured or registered
        with ``weight``).
    :ivar active: requests (or connections) in flight to it now.
    :ivar static: ``True`` for peers from the configuration (never expire).
    :ivar expires_at: clock time after which it is never selected.
    :ivar healthy: ``False`` while the health checks say it is down (see
        :mod:`tproxy.health`); balancers prefer healthy peers.
    :ivar health: its :class:`tproxy.health.PeerHealth`, or ``None`` (never
        failed nor checked).
    :ivar max_conns: requests (or connections) in flight it may take at
        most; ``0``: no limit.  Balancers skip a full peer.
    :ivar ramp: the share of its weight it takes now, ``0 < ramp <= 1``
        (below 1 while it warms up: ``health.slow_start``); balancers weigh
        it ``weight * ramp``.
    :ivar member: ``True`` while the peer is in its group's ``peers`` (the
        registry added it and has not removed it: deregistered, expired or
        replaced; a peer registered again is a new ``Peer``).
    :ivar balancer_record: a balancer's own record of the peer, kept with
        it (``least_conn``'s: see :mod:`tproxy.builtins._least_conn_index`),
        or ``None``.
    :param notify: the ``peer_changed(peer)`` callables to call when
        ``acquire``/``release`` change the count (a list the registry keeps
        up to date), or ``None``.
    """

    __slots__ = ("group", "host", "port", "weight", "active", "member", "static",
                 "expires_at", "last_heartbeat", "created_time", "address",
                 "key", "total", "_notify", "healthy", "health", "max_conns", "ramp",
                 "balancer_record", "__weakref__")

    def __init__(self, group, host, port, weight=1, now=0.0, ttl=None,
                 notify=None):
        self.group = group
        self.host = host
        self.port = port
        self.weight = weight
        self.active = 0
        self.total = 0
        self.static = ttl is None
        self.created_time = now
        self.last_heartbeat = now
        self.expires_at = INFINITY if ttl is None else now + ttl
        self.address = "%s:%d" % (("[%s]" % host) if ":" in host else host, port)
        self.key = (host, port)
        self.healthy = True
        self.health = None
        self.max_conns = 0
        self.ramp = 1.0
        self.balancer_record = None
        self.member = False   # (Group._put and MemoryRegistry._remove set it)
        #: the ``peer_changed`` callables to tell of a count change: a list
        #: the registry owns and may extend (no indirection per request)
        self._notify = notify if notify is not None else ()

    def acquire(self):
        """Count one more request in flight (called by tproxy when it uses the peer)."""
        self.active += 1
        self.total += 1
        notify = self._notify
        if notify:   # (none: least_conn's small groups, on CPython)
            if len(notify) == 1:
                # (no loop, which PyPy's JIT would compile apart and enter,
                # with a frame, on every call)
                notify[0](self)
            else:
                for peer_changed in notify:
                    peer_changed(self)

    def release(self):
        """Count one request fewer in flight (exactly once per ``acquire``)."""
        self.active -= 1
        notify = self._notify
        if notify:
            if len(notify) == 1:
                notify[0](self)
            else:
                for peer_changed in notify:
                    peer_changed(self)

    def notify_changed(self):
        """Tell the balancers that follow the registry (``peer_changed``)
        that its score changed (``weight``, ``ramp``)."""
        for peer_changed in self._notify:
            peer_changed(self)

    def is_live(self, now):
        """Whether the peer may be selected at clock time ``now``."""
        return self.expires_at > now

    def as_dict(self):
        """The JSON view of ``/upstream/status``."""
        return {
            "host": self.host, "port": self.port, "prefix": self.group.name,
            "weight": self.weight, "conn_count": self.active,
            "max_conns": self.max_conns,
            "total_requests": self.total, "static": self.static,
            "last_heartbeat": self.last_heartbeat,
            "created_time": self.created_time,
            "expires_at": None if self.static else self.expires_at,
        }

    def __repr__(self):
        return "<Peer %s/%s active=%d weight=%d>" % (
            self.group.name, self.address, self.active, self.weight)


class Group(object):
    """
    A named set of peers; the name is also the path prefix the router matches.

    :ivar name: the group name (``"api"``, ``"api/v2"``, ``"default"``).
    :ivar peers: ``{(host, port): Peer}``.
    :ivar state: a ``dict`` where a balancer keeps its index of this group.
    :ivar routable: whether a request's path may choose the group (the
        ``router``); ``False`` for a group only a plugin or a route picks
        (``upstreams.NAME.routable``, ``/upstream/add?routable=false``).
    :ivar live_until: the latest ``expires_at`` of its peers (``inf`` with a
        static one, ``-inf`` with none): :meth:`has_live` in one comparison
        (``live_until > now``), for the request path.
    """

    __slots__ = ("name", "peers", "state", "routable", "live_until")

    def __init__(self, name):
        self.name = name
        self.peers = {}
        self.state = {}
        self.routable = True
        self.live_until = -INFINITY

    def has_live(self, now):
        """Whether at least one peer may be selected at ``now`` (O(1))."""
        # live_until is kept equal to the latest expires_at of the peers
        # (expiry times only grow, and removal recomputes it), so it is exact.
        return self.live_until > now

    def _put(self, peer):
        """``peer`` joins ``peers`` (no other peer of the group has its key)."""
        self.peers[peer.key] = peer
        peer.member = True
        self._added(peer)

    def _added(self, peer):
        """``peer`` joined, or its ``expires_at`` grew."""
        if peer.expires_at > self.live_until:
            self.live_until = peer.expires_at

    def _removed(self, peer):
        """``peer`` left ``peers``."""
        if peer.expires_at >= self.live_until:
            # it may have been the latest: recompute (only then, so that
            # expiring k peers of a group costs O(k), not O(k * n))
            self.live_until = max([p.expires_at for p in self.peers.values()] or [-INFINITY])

    def __repr__(self):
        return "<Group %s peers=%d>" % (self.name, len(self.peers))


@implementer(IRegistry)
class MemoryRegistry(object):
    """
    The embedded registry: one process's memory.

    Dynamic peers are kept in heartbeat order (the TTL is the same for all),
    so expiry looks only at the oldest entries and a heartbeat costs O(1).

    :param clock: an ``IReactorTime`` (a ``Clock`` in tests).
    :param ttl: seconds a registration lives after its last heartbeat.
    """

    def __init__(self, clock, ttl=60):
        self.clock = clock
        self.ttl = ttl
        self._groups = {}
        self._by_age = OrderedDict()  # (group, host, port) -> Peer, oldest heartbeat first
        self._listeners = []
        self._load_listeners = []   # their bound peer_changed, if not None
        # The two lookups of every routed request (the router's and the
        # balancer's): the clock's and the dict's own callables, called
        # without a Python frame of ours (the methods below say the same).
        self.now = clock.seconds
        self.group = self._groups.get

    def now(self):
        """The clock's time (an instance attribute: ``clock.seconds``)."""
        return self.clock.seconds()

    def subscribe(self, listener):
        self._listeners.append(listener)
        if getattr(listener, "peer_changed", None) is not None:
            self._load_listeners.append(listener.peer_changed)

    def unsubscribe(self, listener):
        if listener in self._listeners:
            self._listeners.remove(listener)
            changed = getattr(listener, "peer_changed", None)
            if changed is not None and changed in self._load_listeners:
                # in place: every Peer holds this very list
                self._load_listeners.remove(changed)

    def subscribers(self):
        return list(self._listeners)

    def _notify_changed(self, peer):
        for peer_changed in self._load_listeners:
            peer_changed(peer)

    def group(self, name):
        """The group called ``name``, or ``None`` (an instance attribute:
        the groups' ``dict.get``)."""
        return self._groups.get(name)

    def groups(self):
        return [self._groups[k] for k in sorted(self._groups)]

    def _group(self, name):
        g = self._groups.get(name)
        if g is None:
            g = self._groups[name] = Group(name)
        return g

    def _add(self, group, host, port, weight, ttl, max_conns=0):
        g = self._group(group)
        peer = Peer(g, host, port, weight, now=self.now(), ttl=ttl,
                    notify=self._load_listeners)
        peer.max_conns = max_conns or 0
        g._put(peer)
        for listener in self._listeners:
            listener.peer_added(peer)
        return peer

    def add_static(self, group, host, port, weight=1, max_conns=0):
        g = self._groups.get(group)
        old = g.peers.get((host, port)) if g is not None else None
        if old is not None:
            self._remove(old)
        return self._add(group, host, port, weight, None, max_conns)

    #: writes are answered at once (a shared backend answers with Deferreds)
    shared = False

    def register(self, group, host, port, weight=None, max_conns=None, routable=None):
        peer, created = self._register(group, host, port, weight, max_conns)
        if routable is not None:
            peer.group.routable = routable
        return peer, created

    def _register(self, group, host, port, weight, max_conns):
        g = self._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if peer is not None and peer.static:
            # a static peer heartbeating: nothing expires, only the weight
            # and max_conns may change
            self._set_weight(peer, weight, max_conns)
            return peer, False
        now = self.now()
        key = (group, host, port)
        if peer is not None and not peer.is_live(now):
            # expired but not cleaned up yet: the registration is over, so
            # this is a new one, exactly as if expire() had run first
            self._remove(peer)
            peer = None
        if peer is None:
            peer = self._add(group, host, port, 1 if weight is None else weight, self.ttl,
                             max_conns)
            self._by_age[key] = peer
            return peer, True
        peer.last_heartbeat = now
        peer.expires_at = now + self.ttl
        peer.group._added(peer)
        self._by_age.move_to_end(key)
        self._set_weight(peer, weight, max_conns)
        return peer, False

    def _set_weight(self, peer, weight, max_conns=None):
        changed = False
        if max_conns is not None and peer.max_conns != max_conns:
            peer.max_conns = max_conns
            changed = True
        if weight is not None and peer.weight != weight:
            peer.weight = weight
            changed = True
        if changed:
            self._notify_changed(peer)

    def _remove(self, peer):
        g = peer.group
        del g.peers[peer.key]
        peer.member = False
        self._by_age.pop((g.name, peer.host, peer.port), None)
        g._removed(peer)
        if not g.peers:
            del self._groups[g.name]
        for listener in self._listeners:
            listener.peer_removed(peer)

    def remove_static(self, group, host, port):
        g = self._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if peer is None or not peer.static:
            return None
        self._remove(peer)
        return peer

    def deregister(self, group, host, port):
        g = self._groups.get(group)
        peer = g.peers.get((host, port)) if g is not None else None
        if peer is None or peer.static:
            return None
        self._remove(peer)
        return peer

    def expire(self):
        now = self.now()
        gone = []
        while self._by_age:
            peer = next(iter(self._by_age.values()))
            if peer.expires_at > now:
                break
            self._remove(peer)
            gone.append(peer)
        return gone
