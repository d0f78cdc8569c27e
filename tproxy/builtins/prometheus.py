# -*- test-case-name: tests.test_prometheus -*-
"""
The built-in ``prometheus`` plugin: ``GET /metrics`` on the admin listener,
in the Prometheus text format, made by ``prometheus_client`` from a registry
of the plugin's own (so two gateways in one process, or two tests, never mix
their numbers).

Per request, the ``log`` phase adds to a few plain counters, found by one
dictionary lookup: no lock, no label resolution, no metric object.
Everything else is read when Prometheus scrapes (a
``prometheus_client`` collector): the peers of the registry, the listeners'
open connections, the stream sessions open.

The metrics (``group`` is the upstream group, ``route`` the name the
``routes`` plugin gave the request's route, ``""`` without)::

    tproxy_http_requests_total{group,route,status_class}    counter
    tproxy_http_response_bytes_total{group,route,status_class}
    tproxy_http_request_errors_total{group,error}           counter (ctx.error)
    tproxy_http_request_duration_seconds{group}             histogram
    tproxy_http_upstream_duration_seconds{group}            histogram
    tproxy_http_requests_read_total                         counter (listeners)
    tproxy_http_connections_open                            gauge (listeners)
    tproxy_upstream_peer_in_flight{group,peer}              gauge (conn_count)
    tproxy_upstream_peer_requests_total{group,peer}         counter
    tproxy_upstream_peer_live{group,peer}                   gauge (1 or 0)
    tproxy_registry_groups                                  gauge
    tproxy_registry_peers{group}                            gauge
    tproxy_stream_sessions_total{group,status}              counter
    tproxy_stream_bytes_total{group,direction}              counter
    tproxy_stream_sessions_open{group}                      gauge (listeners)

and, with ``process_metrics``, ``prometheus_client``'s ``process_*``,
``python_info`` and (on CPython: it has no collector for PyPy's)
``python_gc_*``.

With ``"workers"``, the parent's ``/metrics`` is every worker's series with
a ``worker`` label, and the registry's once (:meth:`Plugin.gather`).
"""

from bisect import bisect_left

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

#: the format generate_latest writes (prometheus_client's CONTENT_TYPE_LATEST
#: says 1.0.0 since 0.22, which Prometheus 2 servers do not all take)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

from tproxy import hookimpl
from tproxy.admin import AdminResponse
from tproxy.schema_checks import ADMIN_PATH

__all__ = ["Plugin", "Histogram"]

#: the status classes, by ``status // 100`` (0: no response, as a client
#: abort before any status)
_CLASSES = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram(object):
    """
    Plain histogram counts: ``counts[i]`` observations ``<= bounds[i]`` and
    above the bound before it (the last: above every bound), and their sum.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value):
        """Count ``value``."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self):
        """``[(le, cumulative count)]`` as ``prometheus_client`` takes them."""
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts):
            total += n
            out.append((_float_text(bound), total))
        out.append(("+Inf", total + self.counts[-1]))
        return out


def _float_text(x):
    return repr(float(x))


#: the families that describe the registry, the same in every process of a
#: box: with ``"workers"``, ``/metrics`` has the parent's only
PARENT_ONLY = frozenset(["tproxy_upstream_peer_live", "tproxy_registry_groups",
                         "tproxy_registry_peers"])


def _families(text):
    """``[(name, header lines, sample lines)]`` of an exposition in the text
    format, one per metric family (as ``generate_latest`` writes them: a
    ``# HELP`` line first)."""
    families = []
    header = lines = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            header, lines = [line], []
            families.append((line.split(" ", 3)[2], header, lines))
        elif header is None or not line:
            continue
        elif line.startswith("#"):
            header.append(line)
        else:
            lines.append(line)
    return families


def _labelled(line, label):
    """The sample ``line`` with the label ``label`` (``name="value"``) added."""
    end = line.rfind("}")   # the value after the labels has no brace
    if end < 0:
        name, _, value = line.partition(" ")
        return "%s{%s} %s" % (name, label, value)
    return "%s,%s%s" % (line[:end], label, line[end:])


class Plugin(object):
    """
    Request metrics (``log``, ``stream_log``) and the ``GET /metrics`` admin
    endpoint (``init_worker``).

    :ivar registry: the plugin's ``prometheus_client.CollectorRegistry``.
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "path": dict(ADMIN_PATH, default="/metrics"),
            "buckets": {
                "type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"type": "number", "exclusiveMinimum": 0},
                "default": list(DEFAULT_BUCKETS),
                "description": "the latency histograms' bucket bounds, seconds",
            },
            "process_metrics": {"type": "boolean", "default": True},
        },
    }

    def __init__(self, settings):
        self.path = settings["path"]
        self.bounds = tuple(sorted(float(b) for b in settings["buckets"]))
        self.gateway = None
        # (group, route, status class) -> [requests, bytes, the group's
        # request and upstream Histograms]
        self.requests = {}
        # (group, error) -> count
        self.errors = {}
        # group -> Histogram
        self.request_time = {}
        self.upstream_time = {}
        # (group, status) -> [sessions, bytes from clients, bytes to clients]
        self.streams = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)
        if settings["process_metrics"]:
            from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    # -- phases ---------------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Serve ``GET /metrics`` (``path``) on the admin listener."""
        self.gateway = gateway
        gateway.admin.route("GET", self.path, self.scrape, gather=self.gather)

    def _series(self, key):
        """The ``[requests, bytes, request Histogram, upstream Histogram]`` of
        ``(group, route, status class)``, made on first use; the histograms
        are the group's, shared by its series."""
        group = key[0]
        hist = self.request_time.get(group)
        if hist is None:
            hist = self.request_time[group] = Histogram(self.bounds)
            self.upstream_time[group] = Histogram(self.bounds)
        series = self.requests[key] = [0, 0, hist, self.upstream_time[group]]
        return series

    @hookimpl
    def log(self, ctx):
        """Count the finished request (written for speed: it runs for every
        request; ``ctx.request_time()`` and ``upstream_time()`` inlined)."""
        group = ctx.route or ""
        status = ctx.status
        key = (group, ctx.vars.get("route") or "",
               _CLASSES[status // 100] if 0 <= status < 600 else "other")
        series = self.requests.get(key)
        if series is None:
            series = self._series(key)
        series[0] += 1
        series[1] += ctx.bytes_sent
        start, end = ctx.start, ctx.end
        if end is None:
            end = start
        hist = series[2]
        elapsed = end - start
        hist.counts[bisect_left(hist.bounds, elapsed)] += 1
        hist.sum += elapsed
        upstream = ctx.upstream_start
        if upstream is not None:
            upstream_end = ctx.upstream_end
            elapsed = (end if upstream_end is None else upstream_end) - upstream
            hist = series[3]
            hist.counts[bisect_left(hist.bounds, elapsed)] += 1
            hist.sum += elapsed
        if ctx.error is not None:
            key = (group, ctx.error)
            self.errors[key] = self.errors.get(key, 0) + 1

    @hookimpl
    def stream_log(self, ctx):
        """Count the finished TCP session."""
        key = (ctx.route or "", str(ctx.status))
        counts = self.streams.get(key)
        if counts is None:
            counts = self.streams[key] = [0, 0, 0]
        counts[0] += 1
        counts[1] += ctx.bytes_received
        counts[2] += ctx.bytes_sent

    # -- scraping -----------------------------------------------------------------

    def scrape(self, request):
        """The admin handler: the registry in the text format."""
        return AdminResponse(200, None, [("Content-Type", CONTENT_TYPE)],
                             body=generate_latest(self.registry))

    def gather(self, request, answer, workers):
        """
        ``/metrics`` of a box with ``"workers"``: each worker's series with a
        ``worker`` label (its index: a restarted worker's counters start
        again from 0 under the same label, which Prometheus' ``rate()``
        takes as a counter reset), the registry's own (``PARENT_ONLY``)
        from the parent, and the parent's process series without the label.
        The expositions are merged as text (a line per series, no parsing:
        10,000 peers make 20,000 lines per worker).
        """
        families = {}
        for name, header, lines in _families(answer.body.decode("utf-8")):
            if name in PARENT_ONLY or not name.startswith("tproxy_"):
                families[name] = (header, lines)
        for index, response in workers:
            if response.status != 200:
                continue
            label = 'worker="%d"' % (index,)
            for name, header, lines in _families(response.body.decode("utf-8")):
                if name not in PARENT_ONLY:
                    merged = families.setdefault(name, (header, []))[1]
                    merged.extend(_labelled(line, label) for line in lines)
        text = "".join("\n".join(header + lines) + "\n" for header, lines in families.values())
        return AdminResponse(200, None, [("Content-Type", CONTENT_TYPE)],
                             body=text.encode("utf-8"))

    def collect(self):
        """The ``prometheus_client`` collector: every metric, made now."""
        requests = CounterMetricFamily(
            "tproxy_http_requests", "HTTP requests finished",
            labels=["group", "route", "status_class"])
        sent = CounterMetricFamily(
            "tproxy_http_response_bytes", "bytes sent to HTTP clients (heads included)",
            labels=["group", "route", "status_class"])
        for labels, series in sorted(self.requests.items(), key=lambda kv: kv[0]):
            requests.add_metric(labels, series[0])
            sent.add_metric(labels, series[1])
        yield requests
        yield sent
        errors = CounterMetricFamily(
            "tproxy_http_request_errors", "HTTP requests that did not end normally, "
            "by reason (client_abort, upstream_timeout, ...)", labels=["group", "error"])
        for labels, n in sorted(self.errors.items()):
            errors.add_metric(labels, n)
        yield errors
        for name, doc, table in (
                ("tproxy_http_request_duration_seconds",
                 "seconds from the request head to the end of the response",
                 self.request_time),
                ("tproxy_http_upstream_duration_seconds",
                 "seconds spent with the upstream", self.upstream_time)):
            family = HistogramMetricFamily(name, doc, labels=["group"])
            for group, hist in sorted(table.items()):
                if hist.sum or any(hist.counts):
                    family.add_metric([group], hist.buckets(), hist.sum)
            yield family
        for metric in self._collect_gateway():
            yield metric

    def _collect_gateway(self):
        gateway = self.gateway
        if gateway is None:
            return
        http = [f for f in gateway.listeners if getattr(f, "kind", None) == "http"]
        streams = [f for f in gateway.listeners if getattr(f, "kind", None) == "stream"]
        read = CounterMetricFamily("tproxy_http_requests_read",
                                   "HTTP requests read by the listeners")
        read.add_metric([], sum(f.requests for f in http))
        yield read
        yield GaugeMetricFamily("tproxy_http_connections_open",
                                "HTTP client connections open",
                                value=sum(f.open_connections for f in http))
        registry = gateway.registry
        now = registry.now()
        in_flight = GaugeMetricFamily(
            "tproxy_upstream_peer_in_flight",
            "requests (and stream sessions) in flight to the peer (conn_count)",
            labels=["group", "peer"])
        total = CounterMetricFamily(
            "tproxy_upstream_peer_requests", "requests sent to the peer",
            labels=["group", "peer"])
        live = GaugeMetricFamily("tproxy_upstream_peer_live",
                                 "whether the peer is live (1) or expired (0)",
                                 labels=["group", "peer"])
        sizes = GaugeMetricFamily("tproxy_registry_peers", "peers of the group",
                                  labels=["group"])
        groups = 0
        for group in registry.groups():
            groups += 1
            sizes.add_metric([group.name], len(group.peers))
            for peer in group.peers.values():
                labels = [group.name, peer.address]
                in_flight.add_metric(labels, peer.active)
                total.add_metric(labels, peer.total)
                live.add_metric(labels, 1 if peer.is_live(now) else 0)
        yield in_flight
        yield total
        yield live
        yield GaugeMetricFamily("tproxy_registry_groups", "upstream groups", value=groups)
        yield sizes
        sessions = CounterMetricFamily("tproxy_stream_sessions",
                                       "TCP sessions of streams listeners ended",
                                       labels=["group", "status"])
        nbytes = CounterMetricFamily("tproxy_stream_bytes",
                                     "bytes of stream sessions (from / to clients)",
                                     labels=["group", "direction"])
        received, sent = {}, {}
        for (group, status), (n, rx, tx) in sorted(self.streams.items()):
            sessions.add_metric([group, status], n)
            received[group] = received.get(group, 0) + rx
            sent[group] = sent.get(group, 0) + tx
        for group in sorted(received):
            nbytes.add_metric([group, "received"], received[group])
            nbytes.add_metric([group, "sent"], sent[group])
        yield sessions
        yield nbytes
        open_sessions = GaugeMetricFamily("tproxy_stream_sessions_open",
                                          "TCP sessions of streams listeners open",
                                          labels=["group"])
        by_group = {}
        for f in streams:
            by_group[f.group] = by_group.get(f.group, 0) + f.open_connections
        for group, n in sorted(by_group.items()):
            open_sessions.add_metric([group], n)
        yield open_sessions
