"""
Tests for :mod:`tproxy.builtins.prometheus`: what ``GET /metrics`` says
after traffic through :mod:`tproxy.testing` on the fake clock, and once over
real sockets (the admin listener over HTTP).
"""

import platform

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from tproxy.builtins.prometheus import Histogram
from tproxy.config import ConfigError
from tproxy.testing import Harness, StreamHarness, StreamServer, echo

from tests.helpers import ProxyTestCase

CONFIG = {"upstreams": {"api": {"peers": ["127.0.0.1:9001", "127.0.0.1:9002"]},
                        "default": {"peers": ["127.0.0.1:9003"]}}}


def harness(servers=None, routes=None, **settings):
    settings.setdefault("process_metrics", False)
    entry = {"name": "prometheus", "settings": settings}
    if routes is not None:
        entry["routes"] = routes
    return Harness(config=CONFIG, plugins=["router", "least_conn", entry],
                   servers=servers or {"127.0.0.1:9001": echo, "127.0.0.1:9002": echo,
                                       "127.0.0.1:9003": echo})


def samples(text):
    """``{(name, sorted label pairs): value}`` of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(h, path="/metrics"):
    response = h.admin("GET", path)
    assert response.status == 200, response
    return samples(response.body.decode("utf-8"))


def value(metrics, name, **labels):
    return metrics.get((name, tuple(sorted(labels.items()))))


class RequestMetricsTests(SynchronousTestCase):
    """What the ``log`` phase counts."""

    def test_requestsAndBytes(self):
        h = harness()
        for _ in range(3):
            h.request("GET", "/api/x")
        h.request("GET", "/other")
        m = scrape(h)
        self.assertEqual(value(m, "tproxy_http_requests_total", group="api", route="",
                               status_class="2xx"), 3)
        self.assertEqual(value(m, "tproxy_http_requests_total", group="default", route="",
                               status_class="2xx"), 1)
        sent = sum(ctx.bytes_sent for ctx in h.contexts if ctx.route == "api")
        self.assertEqual(value(m, "tproxy_http_response_bytes_total", group="api",
                               route="", status_class="2xx"), sent)

    def test_refusedRequest(self):
        """A request refused before any plugin saw it (a malformed head) is
        counted: group and route ``""``, its status class and error."""
        h = harness()
        conn = h.connect()
        conn.send(b"GARBAGE\r\n\r\n")
        self.assertTrue(conn.closed)
        m = scrape(h)
        self.assertEqual(value(m, "tproxy_http_requests_total", group="", route="",
                               status_class="4xx"), 1)
        self.assertEqual(value(m, "tproxy_http_request_errors_total", group="",
                               error="bad_request"), 1)
        self.assertEqual(value(m, "tproxy_http_response_bytes_total", group="", route="",
                               status_class="4xx"), len(conn.received))

    def test_contentType(self):
        """The text format's content type (not the admin API's JSON)."""
        h = harness()
        response = h.admin("GET", "/metrics")
        self.assertIn(("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                      response.headers)

    def test_latencyHistograms(self):
        """Request and upstream times on the reactor's clock, in the buckets."""
        answers = []

        def later(request):
            answers.append(Deferred())
            return answers[-1]
        h = harness(servers={"127.0.0.1:9001": later, "127.0.0.1:9002": later},
                    buckets=[0.1, 1, 10])
        pending = h.request("GET", "/api/x", wait=False)
        h.advance(0.5)
        answers[0].callback((200, {}, b"ok"))
        self.assertEqual(pending.result().status, 200)
        m = scrape(h)
        for name in ("tproxy_http_request_duration_seconds",
                     "tproxy_http_upstream_duration_seconds"):
            self.assertEqual([value(m, name + "_bucket", group="api", le=le)
                              for le in ("0.1", "1.0", "10.0", "+Inf")], [0, 1, 1, 1])
            self.assertEqual(value(m, name + "_sum", group="api"), 0.5)
            self.assertEqual(value(m, name + "_count", group="api"), 1)

    def test_errorsAndStatusClass(self):
        """A failed request counts by its status class and its error."""
        h = harness(servers={"127.0.0.1:9003": echo})     # api's peers refuse
        self.assertEqual(h.request("GET", "/api/x").status, 502)
        m = scrape(h)
        self.assertEqual(value(m, "tproxy_http_requests_total", group="api", route="",
                               status_class="5xx"), 1)
        self.assertEqual(value(m, "tproxy_http_request_errors_total", group="api",
                               error="upstream_connect"), 1)
        # no upstream answered: no upstream time... but one was tried
        self.assertEqual(value(m, "tproxy_http_request_duration_seconds_count",
                               group="api"), 1)

    def test_routeName(self):
        """The ``routes`` plugin's route name is a label."""
        h = Harness(config=CONFIG, plugins=[
            {"name": "routes", "settings": {"routes": [
                {"name": "users", "group": "api", "match": {"path": "/users"}}]}},
            "router", "least_conn",
            {"name": "prometheus", "settings": {"process_metrics": False}}],
            servers={"127.0.0.1:9001": echo, "127.0.0.1:9002": echo})
        h.request("GET", "/users/1")
        self.assertEqual(value(scrape(h), "tproxy_http_requests_total", group="api",
                               route="users", status_class="2xx"), 1)

    def test_perRoute(self):
        """Enabled for some routes, it counts only their requests."""
        h = harness(routes=["api"])
        h.request("GET", "/api/x")
        h.request("GET", "/other")
        m = scrape(h)
        self.assertEqual(value(m, "tproxy_http_requests_total", group="api", route="",
                               status_class="2xx"), 1)
        self.assertIsNone(value(m, "tproxy_http_requests_total", group="default",
                                route="", status_class="2xx"))

    def test_isolatedRegistries(self):
        """Each instance has its own registry."""
        a, b = harness(), harness()
        a.request("GET", "/api/x")
        self.assertIsNone(value(scrape(b), "tproxy_http_requests_total", group="api",
                                route="", status_class="2xx"))

    def test_path(self):
        h = harness(path="/prom")
        self.assertEqual(h.admin("GET", "/metrics").status, 404)
        self.assertEqual(h.admin("GET", "/prom").status, 200)

    def test_processMetrics(self):
        """``process_metrics`` (the default) adds prometheus_client's own:
        the process and the platform, and on CPython the collector's
        (prometheus_client has none for PyPy's)."""
        h = Harness(config=CONFIG, plugins=["router", "least_conn", "prometheus"],
                    servers={})
        names = {name for name, _ in scrape(h)}
        self.assertIn("python_info", names)
        self.assertIn("process_open_fds", names)
        gc_names = {name for name in names if name.startswith("python_gc_")}
        if platform.python_implementation() == "CPython":
            self.assertIn("python_gc_collections_total", gc_names)
        else:
            self.assertEqual(gc_names, set())

    def test_badSettings(self):
        with self.assertRaises(ConfigError) as e:
            harness(buckets=[])
        self.assertIn("plugins[2].settings.buckets", str(e.exception))


class ScrapeTimeTests(SynchronousTestCase):
    """What is read from the gateway when scraped."""

    def test_peersInFlight(self):
        """In-flight requests per peer (the registry's conn_count) and the
        registry's sizes; nothing counted per request for them."""
        h = harness(servers={"127.0.0.1:9001": lambda r: Deferred(),
                             "127.0.0.1:9002": lambda r: Deferred()})
        pending = h.request("GET", "/api/x", wait=False)
        m = scrape(h)
        self.assertEqual(value(m, "tproxy_registry_groups"), 2)
        self.assertEqual(value(m, "tproxy_registry_peers", group="api"), 2)
        flying = {labels: v for (name, labels), v in m.items()
                  if name == "tproxy_upstream_peer_in_flight"}
        self.assertEqual(sorted(flying.values()), [0, 0, 1])
        self.assertEqual(value(m, "tproxy_http_connections_open"), 1)
        self.assertEqual(value(m, "tproxy_http_requests_read_total"), 1)
        self.assertEqual(value(m, "tproxy_upstream_peer_live", group="default",
                               peer="127.0.0.1:9003"), 1)
        pending.abort()
        m = scrape(h)
        self.assertEqual(sum(v for (name, _), v in m.items()
                             if name == "tproxy_upstream_peer_in_flight"), 0)
        self.assertEqual(sum(v for (name, _), v in m.items()
                             if name == "tproxy_upstream_peer_requests_total"), 1)

    def test_streamSessions(self):
        """Ended sessions by status, their bytes, and the open ones."""
        h = StreamHarness(
            config={"upstreams": {"redis": {"peers": ["127.0.0.1:6379"]}}},
            stream={"group": "redis"},
            plugins=["least_conn", {"name": "prometheus",
                                    "settings": {"process_metrics": False}}],
            servers={"127.0.0.1:6379": StreamServer(echo=True)})
        client = h.connect()
        client.send(b"PING\r\n")
        m = samples(h.gateway.plugins.get_plugin("prometheus").scrape(None).body.decode())
        self.assertEqual(value(m, "tproxy_stream_sessions_open", group="redis"), 1)
        client.close()
        h.connect(client="192.0.2.1").close()
        m = samples(h.gateway.plugins.get_plugin("prometheus").scrape(None).body.decode())
        self.assertEqual(value(m, "tproxy_stream_sessions_open", group="redis"), 0)
        self.assertEqual(value(m, "tproxy_stream_sessions_total", group="redis",
                               status="200"), 2)
        self.assertEqual(value(m, "tproxy_stream_bytes_total", group="redis",
                               direction="received"), 6)
        self.assertEqual(value(m, "tproxy_stream_bytes_total", group="redis",
                               direction="sent"), 6)


class HistogramTests(SynchronousTestCase):

    def test_buckets(self):
        """Upper bounds are inclusive, as Prometheus's ``le``."""
        hist = Histogram((0.1, 1.0))
        for v in (0.05, 0.1, 0.5, 1.0, 3):
            hist.observe(v)
        self.assertEqual(hist.buckets(), [("0.1", 2), ("1.0", 4), ("+Inf", 5)])
        self.assertEqual(hist.sum, 4.65)


class WorkersTests(SynchronousTestCase):
    """``/metrics`` of a box with ``"workers"``: the parent's plugin gathers
    the workers' expositions (here: two harnesses' own ``/metrics``)."""

    def test_gather(self):
        parent = harness(process_metrics=True)
        workers = [harness(process_metrics=True), harness(process_metrics=True)]
        for n, w in enumerate(workers):
            for _ in range(n + 1):
                w.request("GET", "/api/x")
        answers = [(i, w.admin("GET", "/metrics")) for i, w in enumerate(workers)]
        plugin = parent.plugin("prometheus")
        own = parent.admin("GET", "/metrics")
        response = plugin.gather(None, own, answers)
        self.assertIn(("Content-Type", "text/plain; version=0.0.4; charset=utf-8"),
                      response.headers)
        m = samples(response.body.decode("utf-8"))
        for worker, n in (("0", 1), ("1", 2)):
            self.assertEqual(value(m, "tproxy_http_requests_total", group="api", route="",
                                   status_class="2xx", worker=worker), n)
            self.assertEqual(value(m, "tproxy_http_request_duration_seconds_count",
                                   group="api", worker=worker), n)
            self.assertIn(("process_open_fds", (("worker", worker),)), m)
        # the parent serves no requests: none of its own request series
        self.assertIsNone(value(m, "tproxy_http_requests_read_total"))
        self.assertEqual(value(m, "tproxy_http_requests_read_total", worker="1"), 2)
        # the registry's view once, the parent's; the parent's process unlabelled
        self.assertEqual(value(m, "tproxy_registry_groups"), 2)
        self.assertIsNone(value(m, "tproxy_registry_groups", worker="0"))
        self.assertIn(("process_open_fds", ()), m)

    def test_workerFailed(self):
        """A worker that answered an error is left out."""
        parent, worker = harness(), harness()
        worker.request("GET", "/api/x")
        from tproxy.admin import AdminResponse
        answers = [(0, worker.admin("GET", "/metrics")), (1, AdminResponse(500, {}))]
        response = parent.plugin("prometheus").gather(None, parent.admin("GET", "/metrics"),
                                                      answers)
        m = samples(response.body.decode("utf-8"))
        self.assertEqual(value(m, "tproxy_http_requests_total", group="api", route="",
                               status_class="2xx", worker="0"), 1)
        self.assertFalse([k for k in m if ("worker", "1") in k[1]])


class EndToEndTests(ProxyTestCase):
    """``GET /metrics`` over HTTP on a real admin listener."""

    async def test_scrape(self):
        up = self.upstream()
        proxy = await self.proxy({"api": [up]}, plugins=[
            "router", "least_conn", "prometheus"])
        self.assertEqual((await self.get(proxy, "/api/x")).status, 200)
        admin = self.admin(proxy)
        response = await treq.get(admin + "/metrics", pool=self.pool)
        text = (await treq.content(response)).decode("utf-8")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("Content-Type"),
                         ["text/plain; version=0.0.4; charset=utf-8"])
        m = samples(text)
        self.assertEqual(value(m, "tproxy_http_requests_total", group="api", route="",
                               status_class="2xx"), 1)
        self.assertEqual(value(m, "tproxy_upstream_peer_requests_total", group="api",
                               peer=up.address), 1)
        self.assertIn(("process_open_fds", ()), m)
