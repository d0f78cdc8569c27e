# -*- test-case-name: tests.processes.test_workers -*-
"""
The box's status with workers: the parent's ``/upstream/status`` and status
page answers (:mod:`tproxy.admin_page`) with the counts the workers report
(:meth:`tproxy.supervisor.Supervisor.counts`) summed in, and each worker's
own figures beside them.

``per`` is ``{(group, host, port): {worker handle: (active, total, healthy)}}``.
"""

from tproxy.admin import AdminResponse

__all__ = ["add_counts", "STATUS_PAGE"]


def add_counts(result, workers, per):
    """``/upstream/status``'s answer with the workers' counts."""
    if isinstance(result, AdminResponse):
        return result
    status, obj = result
    if status != 200 or not isinstance(obj, dict) or "groups" not in obj:
        return result
    for group in obj["groups"]:
        for server in group.get("servers", ()):
            found = per.get((group["prefix"], server["host"], server["port"]), {})
            rows = []
            active = total = 0
            for h in workers:
                a, t, healthy = found.get(h, (0, 0, True))
                active += a
                total += t
                rows.append({"worker": h.index, "pid": h.pid, "conn_count": a,
                             "total_requests": t, "healthy": healthy})
            server["conn_count"] = active
            server["total_requests"] = total
            server["workers"] = rows
    obj["workers"] = [h.as_dict() for h in workers]
    return status, obj


def _page_answer(add):
    """``add(obj, workers, per)`` applied to a 200 answer of the status page."""
    def apply(result, workers, per):
        if isinstance(result, AdminResponse):
            return result
        status, obj = result
        if status == 200 and isinstance(obj, dict):
            add(obj, workers, per)
            obj["workers"] = [h.as_dict() for h in workers]
        return status, obj
    return apply


def _sums(per):
    """``{(group, host, port): (active, total)}`` summed over the workers."""
    return {key: (sum(v[0] for v in found.values()), sum(v[1] for v in found.values()))
            for key, found in per.items()}


def _groups(obj, workers, per):
    by_group = {}
    for (group, _, _), (active, total) in _sums(per).items():
        a, t = by_group.get(group, (0, 0))
        by_group[group] = (a + active, t + total)
    for summary in obj.get("groups", ()):
        summary["in_flight"], summary["requests"] = by_group.get(summary["prefix"], (0, 0))


def _peers(obj, workers, per):
    sums = _sums(per)
    for view in obj.get("peers", ()):
        view["conn_count"], view["total_requests"] = sums.get(
            (obj["group"], view["host"], view["port"]), (0, 0))


#: the status page's endpoints, and how the workers' counts go into them
#: (``/status/overview`` gathers the workers' own overviews:
#: :meth:`tproxy.admin_page.StatusPage.gather_overview`)
STATUS_PAGE = {("GET", "/status/groups"): _page_answer(_groups),
                ("GET", "/status/peers"): _page_answer(_peers)}
