# -*- test-case-name: tests.test_probes -*-
"""
Health endpoints for orchestrators' probes, on the admin listener, with every
configuration (no plugin to enable):

- ``GET /healthz`` (liveness): ``200 {"status": "ok"}`` whenever the process
  answers at all.
- ``GET /readyz`` (readiness): ``200 {"status": "ready"}`` once every
  ``init_worker`` ran and while every static group (``upstreams`` of the
  configuration) has at least one live peer; else ``503 {"status":
  "not_ready", "reason": ..., "groups": [the groups without a live peer]}``.
  ``/readyz?group=api,web`` checks those groups instead (registered at
  run time or static), for deployments whose backends register themselves.
  A stopping tproxy (draining after ``SIGTERM``) is not ready, so a load
  balancer stops sending it new connections.

Both are *public*: served without ``admin.token`` (Kubernetes' and most load
balancers' HTTP probes cannot send a bearer token), and they tell nothing but
the above.  Each probe costs O(number of static groups); requests pay nothing.
"""

__all__ = ["install"]


def install(gateway):
    """Serve ``/healthz`` and ``/readyz`` on ``gateway.admin``."""

    def healthz(request):
        return 200, {"status": "ok"}

    def readyz(request):
        if not gateway.serving:
            reason = "stopping" if gateway.started else "starting"
            return 503, {"status": "not_ready", "reason": reason, "groups": []}
        registry = gateway.registry
        now = registry.now()
        asked = request.args.get("group")
        if asked:
            names = [name for name in asked.split(",") if name]
        else:
            names = sorted(gateway.config.get("upstreams", {}))
        down = [name for name in names if not _has_live(registry.group(name), now)]
        if down:
            return 503, {"status": "not_ready", "reason": "no live peer", "groups": down}
        return 200, {"status": "ready"}

    gateway.admin.route("GET", "/healthz", healthz, public=True)
    gateway.admin.route("GET", "/readyz", readyz, public=True)


def _has_live(group, now):
    if group is None:
        return False
    # every peer's is_live (not the group's cached summary): a probe is rare,
    # and is_live is what the balancers believe
    return any(peer.is_live(now) for peer in group.peers.values())
