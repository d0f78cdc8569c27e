# -*- test-case-name: tests.test_registry_redis -*-
"""
The routes created through ``/routes``, shared by a fleet through the Redis
registry (:class:`tproxy.registry_redis.RedisRegistry`, which keeps one
:class:`SharedRoutes` as its ``shared_routes``; the ``routes`` plugin
listens to it and rebuilds its table).  Written by the registry's scripts,
replicated by its snapshots and published changes.
"""

import json

from twisted.internet.defer import fail
from twisted.logger import Logger

from tproxy.registry import RegistryUnavailable

__all__ = ["SharedRoutes"]

#: (the registry's namespace: one place in the logs for the fleet's state)
log = Logger(namespace="tproxy.registry_redis")


class SharedRoutes(object):
    """
    The routes created through ``/routes``, shared through Redis: a replica
    (``records``), writes that answer once Redis has them, and listeners told
    of every change (the ``routes`` plugin rebuilds its table).
    """

    def __init__(self, registry):
        self.registry = registry
        self.records = {}       # name -> (seq, spec)
        self._listeners = []

    def listen(self, fn):
        """Call ``fn()`` after every change."""
        self._listeners.append(fn)

    def unlisten(self, fn):
        if fn in self._listeners:
            self._listeners.remove(fn)

    def specs(self):
        """The shared route documents, in the order they were created."""
        return [spec for _, spec in sorted(self.records.values(), key=lambda r: r[0])]

    def apply(self, name, rec):
        if rec:
            try:
                spec = json.loads(rec["s"])
            except ValueError:
                log.warn("registry: route {name} in Redis is not JSON; ignored", name=name)
                return
            self.records[name] = (rec["q"], spec)
        else:
            self.records.pop(name, None)

    def changed(self):
        for fn in list(self._listeners):
            try:
                fn()
            except Exception:
                log.failure("registry: a shared routes listener failed")

    def put(self, name, spec, create_only=False):
        """
        Store route ``name``; a Deferred of ``"exists"`` (``create_only``
        and it exists), ``"created"`` or ``"replaced"``.
        """
        registry = self.registry
        if not registry.up:
            return fail(RegistryUnavailable(
                "the shared routes (Redis at {}) are unavailable".format(registry.address)))
        d = registry._call("put_route", [name, json.dumps(spec, sort_keys=True),
                                         "1" if create_only else "0"], "a route change")

        def done(reply):
            message, outcome = reply
            registry.apply(message)
            return {0: "exists", 1: "created", 2: "replaced"}[int(outcome)]
        return d.addCallback(done)

    def delete(self, name):
        """Remove route ``name``; a Deferred of whether it existed."""
        registry = self.registry
        if not registry.up:
            return fail(RegistryUnavailable(
                "the shared routes (Redis at {}) are unavailable".format(registry.address)))
        d = registry._call("delete_route", [name], "a route removal")

        def done(reply):
            message, outcome = reply
            registry.apply(message)
            return bool(int(outcome))
        return d.addCallback(done)
