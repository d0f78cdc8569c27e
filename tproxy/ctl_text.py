# -*- test-case-name: tests.test_ctl -*-
"""
What ``tproxyctl`` prints: the admin API's JSON answers as aligned text
(``status``, ``routes list``, ``routes match``, a registration).
"""

import json

__all__ = ["table", "format_status", "format_routes", "format_match",
           "format_registration", "STATUS_HEADER"]


def _age(seconds):
    """``3s``, ``4m10s``, ``2h05m``."""
    seconds = int(round(seconds))
    if seconds < 0:
        seconds = 0
    if seconds < 60:
        return "{}s".format(seconds)
    if seconds < 3600:
        return "{}m{:02d}s".format(seconds // 60, seconds % 60)
    return "{}h{:02d}m".format(seconds // 3600, seconds % 3600 // 60)


def _address(host, port):
    return "[{}]:{}".format(host, port) if ":" in host else "{}:{}".format(host, port)


def table(header, rows):
    """Rows of strings as aligned columns (numbers right-aligned)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    numeric = [bool(rows) and all(r[i].isdigit() for r in rows) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if n else c.ljust(w)
                         for c, w, n in zip(cells, widths, numeric)).rstrip()
    return "\n".join([line(header)] + [line(r) for r in rows]) + "\n"


STATUS_HEADER = ("GROUP", "SERVER", "WEIGHT", "CONNS", "REQUESTS", "LIVE",
                 "HEARTBEAT", "EXPIRES", "HEALTH")


def _health(server):
    """``up``, ``down``; with workers ``up (1/2 down)`` for a server down in
    some workers but not all; ``-`` without a health state."""
    health = server.get("health")
    if not isinstance(health, dict) or "healthy" not in health:
        return "-"
    if not health["healthy"]:
        return "down"
    down, workers = health.get("down_in_workers"), health.get("workers")
    if down:
        return "up ({}/{} down)".format(down, workers)
    return "up"


def format_status(status):
    """The text of ``tproxyctl status``: one row per server, then totals."""
    now = status.get("timestamp") or 0
    rows = []
    live = 0
    for group in status.get("groups", ()):
        for s in group.get("servers", ()):
            live += bool(s.get("live"))
            if s.get("static"):
                beat, expires = "static", "never"
            else:
                beat = _age(now - s["last_heartbeat"]) + " ago"
                expires = ("in " + _age(s["expires_at"] - now)) if s.get("live") else "expired"
            rows.append((group["prefix"], _address(s["host"], s["port"]), str(s["weight"]),
                         str(s["conn_count"]), str(s["total_requests"]),
                         "yes" if s.get("live") else "no", beat, expires, _health(s)))
    if not rows:
        return "no servers registered\n"
    total = status.get("total_servers", len(rows))
    return table(STATUS_HEADER, rows) + "{} group{}, {} server{} ({} live)\n".format(
        status.get("total_groups", 0), "" if status.get("total_groups") == 1 else "s",
        total, "" if total == 1 else "s", live)


def format_routes(answer):
    """The text of ``tproxyctl routes list``."""
    routes = answer.get("routes", [])
    if not routes:
        return "no routes (match_mode {})\n".format(answer.get("match_mode"))
    rows = []
    for r in routes:
        match = r.get("match", {})
        conditions = []
        path = match.get("path")
        if isinstance(path, dict):
            conditions.append("path {} {}".format(path.get("mode"), path.get("value")))
        elif path:
            conditions.append("path {}".format(path))
        for key in sorted(match):
            if key != "path" and match[key] not in ({}, [], None):
                conditions.append("{} {}".format(key, json.dumps(match[key], sort_keys=True)))
        rows.append((r.get("name", ""), r.get("group", ""), r.get("peer") or "-",
                     ", ".join(conditions) or "-"))
    return table(("NAME", "GROUP", "PEER", "MATCH"), rows) + \
        "{} route{} (match_mode {})\n".format(len(routes), "" if len(routes) == 1 else "s",
                                              answer.get("match_mode"))


def format_match(answer):
    """The text of ``tproxyctl routes match``."""
    lines = []
    request = answer.get("request", {})
    lines.append("request:  {} {}{}{}".format(
        request.get("method"), request.get("host") or "", request.get("path"),
        "?" + request["query"] if request.get("query") else ""))
    lines.append("route:    {}".format(answer.get("route") or "-"))
    lines.append("by:       {}".format(answer.get("decided_by") or "-"))
    lines.append("rule:     {}".format(answer.get("rule")))
    if "group" in answer:
        lines.append("group:    {}".format(answer.get("group") or "-"))
    if answer.get("upstream_path") is not None:
        lines.append("upstream: {}".format(answer["upstream_path"]))
    peer = answer.get("peer")
    if isinstance(peer, dict):
        lines.append("peer:     {}".format(peer.get("address")))
    elif "peer" in answer:
        lines.append("peer:     -")
    if answer.get("response"):
        lines.append("answer:   {} {}".format(answer["response"].get("status"),
                                              json.dumps(answer["response"].get("body"))))
    return "\n".join(lines) + "\n"


def format_registration(obj, verb=None):
    """One line for an ``add`` answer."""
    verb = verb or ("registered" if obj.get("created") else "heartbeat of")
    expires = obj.get("expires_in")
    extra = ""
    if obj.get("max_conns"):
        extra += ", max_conns {}".format(obj["max_conns"])
    if obj.get("routable") is False:
        extra += ", not routable"
    return "{} {} (weight {}{}, {})\n".format(
        verb, obj.get("server"), obj.get("weight"), extra,
        "static" if obj.get("static") else "expires in {} s".format(expires))
