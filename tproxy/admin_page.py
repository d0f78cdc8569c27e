# -*- test-case-name: tests.test_admin_page -*-
"""
The status page of the admin listener, and the JSON endpoints it reads.

``GET /``
    One HTML page (``tproxy/static/status.html``, inline CSS and script, no
    external asset): the process, the upstream groups and their peers, the
    routes, the plugins of each phase and the stream listeners, polled every
    two seconds.  It holds no data, so it is served without the token; every
    endpoint it reads needs the token when ``admin.token`` is set (the page
    asks for it and sends ``Authorization: Bearer``; the token stays in the
    tab's ``sessionStorage``, never in a URL).  It is sent with
    ``X-Frame-Options: DENY`` and a Content-Security-Policy that allows no
    framing and only the page's own script and style (by their SHA-256).

``GET /status/overview``
    ``{"uptime", "started", "timestamp", "pid", "version", "python",
    "requests_total", "requests_per_second", "connections", "in_flight",
    "groups", "peers", "live", "listeners": [...], "plugins": [{"phase",
    "plugins"}], "streams": [{"listen", "group", "sessions", "total",
    "recent": [...]}]}``.  ``requests_per_second`` is measured between the
    calls of the last ten seconds or so (since the start on the first call).

``GET /status/groups[?offset=N][&limit=N][&q=TEXT]``
    A page of the groups sorted by name (``q``: those whose name contains
    it): ``{"groups": [{"prefix", "total", "live", "healthy", "static",
    "in_flight", "requests", "weight"}], "offset", "limit", "matched",
    "total_groups"}`` (``healthy``: live peers the health checks do not
    hold down; with workers, those not down in every worker, and
    ``down_in_some_workers`` the others down in some: :mod:`tproxy.box_status`).

``GET /status/peers?group=G[&offset=N][&limit=N][&q=TEXT]``
    A page of the peers of group ``G`` sorted by host and port (``q``: those
    whose ``host:port`` contains it): ``{"group", "peers": [...], "offset",
    "limit", "matched", "total", "timestamp"}``; each peer is its
    ``/upstream/status`` view (whatever fields the registry gives it, and
    ``health`` when the gateway keeps a health state) plus ``address``,
    ``live``, ``heartbeat_age`` and ``expires_in`` (seconds; ``null`` for a
    static peer).  ``404`` for an unknown group.

``limit`` is 1 to 500 (default 50): with 10,000 peers a poll still carries a
few kilobytes.  Nothing here runs per proxied request: the counts are read
when the page asks (O(peers) per overview, O(group) per peer page).
"""

import base64
import json
import functools
import hashlib
import os
import pkgutil
import platform
import re
from collections import deque

import tproxy
from tproxy.admin import AdminResponse
from tproxy.http.server import ProxyFactory
from tproxy.plugins import describe_phases
from tproxy.stream import StreamFactory

__all__ = ["StatusPage", "install", "page_headers"]

#: The largest page of groups or peers a request may ask for.
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
#: How many stream sessions per listener the overview lists.
MAX_SESSIONS = 20
#: Seconds of overview calls over which requests/s is measured.
RATE_WINDOW = 10.0

_DIGITS = re.compile(r"[0-9]{1,10}")


def _sha256(text):
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-{}'".format(base64.b64encode(digest).decode("ascii"))


def page_headers(html):
    """
    The security headers of the page ``html``: its Content-Security-Policy
    allows the inline ``<script>`` and ``<style>`` elements of ``html`` by
    their hashes (no ``'unsafe-inline'``), fetches from the admin listener
    only, and no framing.

    :return: a list of ``(name, value)``.
    """
    return list(_page_headers(html))


@functools.lru_cache(maxsize=1)
def _page():
    # a file of the package, read once per process (not at every reload or
    # test harness)
    html = pkgutil.get_data("tproxy", "static/status.html").decode("utf-8")
    return html, html.encode("utf-8")


@functools.lru_cache(maxsize=4)
def _page_headers(html):
    # the same page for every gateway of the process: hashed once
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    csp = "; ".join([
        "default-src 'self'",
        "script-src " + " ".join(_sha256(s) for s in scripts),
        "style-src " + " ".join(_sha256(s) for s in styles),
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ])
    return (
        ("Content-Security-Policy", csp),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    )


class _BadArgument(ValueError):
    def __init__(self, field, message, value):
        ValueError.__init__(self, field, message, value)
        self.answer = (400, {"error": message, "field": field, "value": value})


def _int_arg(args, name, default, low, high):
    value = args.get(name)
    if value is None or value == "":
        return default
    if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
        raise _BadArgument(name, "{} must be an integer from {} to {}".format(
            name, low, high), value)
    return int(value)


def _paging(args):
    """``(offset, limit, q)`` of a request's query."""
    offset = _int_arg(args, "offset", 0, 0, 10 ** 9)
    limit = _int_arg(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    return offset, limit, args.get("q") or ""


def _rounded(value):
    return None if value is None else round(value, 3)


class StatusPage(object):
    """
    The status page and its endpoints for one gateway (see the module
    docstring).

    :param gateway: the :class:`tproxy.gateway.Gateway`.
    :param listeners: ``[(name, endpoint description, factory)]``: the
        listeners to report (a :class:`tproxy.http.server.ProxyFactory` counts
        requests and connections, a :class:`tproxy.stream.StreamFactory`
        sessions; others are listed by name).
    """

    def __init__(self, gateway, listeners=()):
        self.gateway = gateway
        self.clock = gateway.reactor
        self.listeners = list(listeners)
        self.started = self.clock.seconds()
        self._samples = deque()   # (time, requests_total) of recent overviews
        self._box_samples = deque()   # the same for the box, with "workers"
        self.html, self.body = _page()
        self.headers = page_headers(self.html) + [
            ("Content-Type", "text/html; charset=utf-8")]

    def install(self):
        """
        Add the page and its endpoints to the gateway's admin routes (the
        page unless a plugin already serves ``GET /``).
        """
        admin = self.gateway.admin
        if ("GET", "/") not in admin.routes:   # a plugin's own "/" wins
            admin.route("GET", "/", self.page, public=True)
        admin.route("GET", "/status/overview", self.overview, gather=self.gather_overview)
        admin.route("GET", "/status/groups", self.groups)
        admin.route("GET", "/status/peers", self.peers)
        return self

    # -- handlers -----------------------------------------------------------------

    def page(self, request):
        """``GET /``: the HTML page."""
        return AdminResponse(200, None, self.headers, self.body)

    def overview(self, request):
        """``GET /status/overview``: the process, listeners, plugins, streams."""
        now = self.clock.seconds()
        requests = connections = 0
        listeners = []
        streams = []
        for name, description, factory in self.listeners:
            entry = {"name": name, "listen": description}
            if isinstance(factory, ProxyFactory):
                entry["connections"] = factory.open_connections
                entry["requests"] = factory.requests
                requests += factory.requests
                connections += factory.open_connections
            elif isinstance(factory, StreamFactory):
                entry["sessions"] = factory.open_connections
                streams.append(self._stream(description, factory, now))
            listeners.append(entry)
        groups = self.gateway.registry.groups()
        peers = live = in_flight = 0
        for group in groups:
            for peer in group.peers.values():
                peers += 1
                live += peer.is_live(now)
                in_flight += peer.active
        return 200, {
            "uptime": _rounded(now - self.started), "started": self.started,
            "timestamp": now, "pid": os.getpid(),
            "version": tproxy.__version__,
            "python": "{} {}".format(platform.python_implementation(),
                                     platform.python_version()),
            "requests_total": requests,
            "requests_per_second": _rounded(self._rate(self._samples, now, requests)),
            "connections": connections, "in_flight": in_flight,
            "groups": len(groups), "peers": peers, "live": live,
            "listeners": listeners,
            "plugins": [{"phase": phase, "plugins": names}
                        for phase, names in describe_phases(self.gateway.plugins)],
            "streams": streams,
        }

    def gather_overview(self, request, answer, workers):
        """
        ``GET /status/overview`` of a box with ``"workers"`` (the parent's
        ``gather``): the parent's view of the registry, plugins and uptime,
        with the workers' requests, connections, requests in flight,
        listeners and stream sessions summed in, and a row per worker.
        """
        if answer.status != 200:
            return answer
        obj = answer.obj
        obj["requests_total"] = obj["connections"] = obj["in_flight"] = 0
        listeners = {entry["name"]: entry for entry in obj["listeners"]}
        streams = {}
        rows = []
        for index, response in workers:
            if response.status != 200:
                continue
            theirs = json.loads(response.body.decode("utf-8"))
            rows.append({"worker": index, "pid": theirs["pid"],
                         "requests_total": theirs["requests_total"],
                         "connections": theirs["connections"],
                         "in_flight": theirs["in_flight"]})
            for key in ("requests_total", "connections", "in_flight"):
                obj[key] += theirs[key]
            for entry in theirs["listeners"]:
                mine = listeners.setdefault(entry["name"], {"name": entry["name"],
                                                            "listen": entry["listen"]})
                for key in ("connections", "requests", "sessions"):
                    if key in entry:
                        mine[key] = mine.get(key, 0) + entry[key]
            for stream in theirs["streams"]:
                mine = streams.setdefault(stream["listen"], dict(
                    stream, sessions=0, total=0, recent=[]))
                mine["sessions"] += stream["sessions"]
                mine["total"] += stream["total"]
                mine["recent"].extend(dict(r, worker=index) for r in stream["recent"])
        for stream in streams.values():
            stream["recent"] = stream["recent"][-MAX_SESSIONS:]
        obj["listeners"] = list(listeners.values())
        obj["streams"] = list(streams.values())
        obj["workers"] = rows
        obj["requests_per_second"] = _rounded(self._rate(
            self._box_samples, obj["timestamp"], obj["requests_total"]))
        return 200, obj

    def groups(self, request):
        """``GET /status/groups``: a page of group summaries."""
        try:
            offset, limit, q = _paging(request.args)
        except _BadArgument as e:
            return e.answer
        now = self.clock.seconds()
        groups = self.gateway.registry.groups()
        total = len(groups)
        if q:
            groups = [g for g in groups if q in g.name]
        page = []
        for group in groups[offset:offset + limit]:
            summary = {"prefix": group.name, "total": 0, "live": 0, "healthy": 0,
                       "static": 0, "in_flight": 0, "requests": 0, "weight": 0}
            for peer in group.peers.values():
                live = peer.is_live(now)
                summary["total"] += 1
                summary["live"] += live
                summary["healthy"] += live and getattr(peer, "healthy", True)
                summary["static"] += peer.static
                summary["in_flight"] += peer.active
                summary["requests"] += peer.total
                summary["weight"] += peer.weight
            page.append(summary)
        return 200, {"groups": page, "offset": offset, "limit": limit,
                     "matched": len(groups), "total_groups": total,
                     "timestamp": now}

    def peers(self, request):
        """``GET /status/peers?group=G``: a page of one group's peers."""
        name = request.args.get("group")
        if not name:
            return 400, {"error": "group is required", "field": "group",
                         "value": name}
        try:
            offset, limit, q = _paging(request.args)
        except _BadArgument as e:
            return e.answer
        group = self.gateway.registry.group(name)
        if group is None:
            return 404, {"error": "no such group", "group": name}
        now = self.clock.seconds()
        health = getattr(self.gateway, "health", None)
        if not hasattr(health, "as_dict"):
            health = None
        peers = sorted(group.peers.values(), key=lambda p: (p.host, p.port))
        if q:
            peers = [p for p in peers if q in p.address]
        page = []
        for peer in peers[offset:offset + limit]:
            view = peer.as_dict()
            view["address"] = peer.address
            view["live"] = peer.is_live(now)
            view["heartbeat_age"] = None if peer.static else _rounded(
                now - peer.last_heartbeat)
            view["expires_in"] = None if peer.static else _rounded(
                peer.expires_at - now)
            if health is not None:   # as /upstream/status has it
                view["health"] = health.as_dict(peer)
            page.append(view)
        return 200, {"group": name, "peers": page, "offset": offset,
                     "limit": limit, "matched": len(peers),
                     "total": len(group.peers), "timestamp": now}

    # -- helpers ------------------------------------------------------------------

    def _rate(self, samples, now, requests):
        """
        Requests per second since the latest of ``samples`` at least
        :data:`RATE_WINDOW` seconds old (or the oldest, or the start when
        there is none), and record this sample (at most two a second).
        """
        while len(samples) > 1 and now - samples[1][0] >= RATE_WINDOW:
            samples.popleft()
        if samples:
            then, before = samples[0]
        else:
            then, before = self.started, 0
        if not samples or now - samples[-1][0] >= 0.5:
            samples.append((now, requests))
        if now - then <= 0:
            return 0.0
        return max(0, requests - before) / (now - then)

    def _stream(self, description, factory, now):
        sessions = sorted(factory.sessions,
                          key=lambda s: getattr(getattr(s, "ctx", None),
                                                "connection_id", 0))
        recent = []
        for session in sessions[-MAX_SESSIONS:]:
            ctx = getattr(session, "ctx", None)
            if ctx is None:
                continue
            recent.append({
                "id": ctx.connection_id, "client": ctx.client,
                "upstream": ctx.upstream_addr, "age": _rounded(now - ctx.start),
                "bytes_received": ctx.bytes_received, "bytes_sent": ctx.bytes_sent,
            })
        return {"listen": description, "group": factory.group,
                "sessions": factory.open_connections,
                "total": factory.accepted,
                "recent": recent}


def install(gateway, listeners=()):
    """
    Serve the status page and its endpoints on ``gateway``'s admin listener.

    :param gateway: the :class:`tproxy.gateway.Gateway`.
    :param listeners: ``[(name, endpoint description, factory)]`` (see
        :class:`StatusPage`).
    :return: the :class:`StatusPage`.
    """
    return StatusPage(gateway, listeners).install()
