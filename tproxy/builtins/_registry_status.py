# -*- test-case-name: tests.test_admin -*-
"""
The answer of ``GET /upstream/status`` (:mod:`tproxy.builtins.registry`):
every group and its servers, with their health.
"""

__all__ = ["upstream_status"]


def upstream_status(registry, health, wanted=None):
    """
    ``(200, obj)``: the groups of ``registry`` (only ``wanted``, a prefix,
    if given) with their servers, each with its ``live`` state and, when
    ``health`` (an :class:`~tproxy.health.IHealth`) is given, its health
    object; groups without servers are left out.
    """
    now = registry.now()
    groups = []
    total = 0
    for group in registry.groups():
        if wanted and group.name != wanted:
            continue
        servers = []
        live = healthy = 0
        for peer in sorted(group.peers.values(), key=lambda p: (p.host, p.port)):
            view = peer.as_dict()
            view["live"] = peer.is_live(now)
            live += view["live"]
            if health is not None:
                view["health"] = health.as_dict(peer)
            healthy += view["live"] and peer.healthy
            servers.append(view)
        if not servers:
            continue
        groups.append({"prefix": group.name, "servers": servers,
                       "live": live, "healthy": healthy, "total": len(servers),
                       "routable": group.routable})
        total += len(servers)
    return 200, {"groups": groups, "total_groups": len(groups),
                 "total_servers": total, "timestamp": now}
