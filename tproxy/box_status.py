# -*- test-case-name: tests.processes.test_workers -*-
"""
The box's status with workers: the parent's ``/upstream/status`` and status
page answers (:mod:`tproxy.admin_page`) with the counts the workers report
(:meth:`tproxy.box_admin.BoxAdmin.counts`) summed in, and each worker's
own figures beside them.

Health is each worker's (passive checks count each worker's own requests):
the parent sends no request, so its own view of a peer is only the active
checks'.  The box's answer is the workers' (:func:`box_health`): a server is
``healthy`` while at least one worker that answered still sends it requests,
and says in how many of them it is down (``down_in_workers`` of
``workers``); a group's ``healthy`` counts its live servers healthy for the
box, and ``down_in_some_workers`` the live ones down in some workers but not
all.  When no worker answers, the parent's view stays.

A worker that holds a server down, or has seen it fail, also sends its
health object: it is that worker's row's ``health``.  The server's
``health`` adds them up: ``ejections`` and ``total_fails`` are the sums of
the parent's and the workers', ``fails`` and ``ejected_for`` the largest, and
``last_error`` the newest.

``per`` is ``{(group, host, port): {worker handle: (active, total, healthy[,
health])}}``.
"""

from tproxy.admin import AdminResponse

__all__ = ["add_counts", "box_health", "STATUS_PAGE"]

_UNREPORTED = (0, 0, True, None)   # a worker lists only the peers it served or holds down


def box_health(workers, found):
    """
    A server's health for the box, from the workers' views.

    :param workers: the worker handles that answered.
    :param found: ``{handle: (active, total, healthy)}`` of the workers that
        reported the server (one that did not holds it healthy).
    :return: ``(healthy, down_in_workers)``: ``healthy`` is ``False`` when
        the server is down in every worker of ``workers``, ``None`` when
        there is none (the parent's view then stands).
    """
    if not workers:
        return None, 0
    down = sum(1 for h in workers if not found.get(h, _UNREPORTED)[2])
    return down < len(workers), down


def _set_health(view, workers, found):
    """Put the box's health of one server into its ``health`` object;
    return ``(healthy, down in some workers but not all)``."""
    health = view.get("health")
    parent = True if health is None else health.get("healthy", True)
    healthy, down = box_health(workers, found)
    if healthy is None:
        return parent, False
    if health is not None:
        health["healthy"] = healthy
        health["down_in_workers"] = down
        health["workers"] = len(workers)
        details = [d for d in (_detail(found.get(h)) for h in workers) if d]
        for key, combine in _COMBINED:
            if key in health:
                health[key] = combine([health[key]] + [d.get(key, 0) for d in details])
        for d in details:
            if _newer(d.get("last_error"), health.get("last_error")):
                health["last_error"] = d["last_error"]
    return healthy, healthy and down > 0


#: how the workers' figures of a server's health add up to the box's
_COMBINED = (("ejections", sum), ("total_fails", sum), ("fails", max), ("ejected_for", max))


def _detail(entry):
    """A worker's health object of a server, if it sent one."""
    return entry[3] if entry is not None and len(entry) > 3 else None


def _newer(error, than):
    if not isinstance(error, dict):
        return False
    return not isinstance(than, dict) or (error.get("time") or 0) > (than.get("time") or 0)


def add_counts(result, workers, per):
    """``/upstream/status``'s answer with the workers' counts."""
    if isinstance(result, AdminResponse):
        return result
    status, obj = result
    if status != 200 or not isinstance(obj, dict) or "groups" not in obj:
        return result
    for group in obj["groups"]:
        group_healthy = partly_down = 0
        for server in group.get("servers", ()):
            found = per.get((group["prefix"], server["host"], server["port"]), {})
            rows = []
            active = total = 0
            for h in workers:
                entry = found.get(h, _UNREPORTED)
                a, t, healthy = entry[:3]
                active += a
                total += t
                row = {"worker": h.index, "pid": h.pid, "conn_count": a,
                       "total_requests": t, "healthy": healthy}
                if _detail(entry) is not None:
                    row["health"] = _detail(entry)
                rows.append(row)
            server["conn_count"] = active
            server["total_requests"] = total
            server["workers"] = rows
            healthy, partly = _set_health(server, workers, found)
            if server.get("live", True):
                group_healthy += healthy
                partly_down += partly
        if workers:
            group["healthy"] = group_healthy
            group["down_in_some_workers"] = partly_down
    obj["workers"] = [h.as_dict() for h in workers]
    return status, obj


def _page_answer(add):
    """``add(obj, workers, per, gateway)`` applied to a 200 answer of the
    status page."""
    def apply(result, workers, per, gateway=None):
        if isinstance(result, AdminResponse):
            return result
        status, obj = result
        if status == 200 and isinstance(obj, dict):
            add(obj, workers, per, gateway)
            obj["workers"] = [h.as_dict() for h in workers]
        return status, obj
    return apply


def _sums(per):
    """``{(group, host, port): (active, total)}`` summed over the workers."""
    return {key: (sum(v[0] for v in found.values()), sum(v[1] for v in found.values()))
            for key, found in per.items()}


def _groups(obj, workers, per, gateway):
    by_group = {}
    for (group, _, _), (active, total) in _sums(per).items():
        a, t = by_group.get(group, (0, 0))
        by_group[group] = (a + active, t + total)
    # the parent counted its own view of each live peer's health: correct it
    # where the workers' differs (only the peers some worker reports can)
    health = {}
    registry = getattr(gateway, "registry", None)
    now = obj.get("timestamp")
    for (group, host, port), found in per.items():
        peer = None if registry is None else _peer(registry, group, host, port)
        if peer is None or now is None or not peer.is_live(now):
            continue
        healthy, down = box_health(workers, found)
        if healthy is None:
            continue
        fix, partly = health.get(group, (0, 0))
        health[group] = (fix + healthy - bool(getattr(peer, "healthy", True)),
                         partly + (healthy and down > 0))
    for summary in obj.get("groups", ()):
        summary["in_flight"], summary["requests"] = by_group.get(summary["prefix"], (0, 0))
        if workers:
            fix, partly = health.get(summary["prefix"], (0, 0))
            summary["healthy"] += fix
            summary["down_in_some_workers"] = partly


def _peer(registry, group, host, port):
    g = registry.group(group)
    return None if g is None else g.peers.get((host, port))


def _peers(obj, workers, per, gateway):
    sums = _sums(per)
    for view in obj.get("peers", ()):
        key = (obj["group"], view["host"], view["port"])
        view["conn_count"], view["total_requests"] = sums.get(key, (0, 0))
        _set_health(view, workers, per.get(key, {}))


#: the status page's endpoints, and how the workers' counts go into them
#: (``/status/overview`` gathers the workers' own overviews:
#: :meth:`tproxy.admin_page.StatusPage.gather_overview`)
STATUS_PAGE = {("GET", "/status/groups"): _page_answer(_groups),
                ("GET", "/status/peers"): _page_answer(_peers)}
