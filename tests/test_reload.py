"""
Tests of the reload (:mod:`tproxy.reload`): ``GatewayService.reload`` called
directly on a service built by :func:`tproxy.tap.makeService`, with real
loopback sockets (listeners kept open or rebound are the subject), and one
real ``twistd`` process sent ``SIGHUP``.
"""

import json
import os
import signal
from types import SimpleNamespace

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from tproxy.admin import AdminRequest
from tproxy.config import ConfigError, load_config
from tproxy.plugins import build_plugin_manager
from tproxy.reload import RETIRE_POLL, describe_changes
from tproxy.tap import makeService
from tproxy.testing import Harness

from tests.helpers import (LOG_RECORDER, ClockedReactor, Held, capture_log, request, temp_path,
                           until)
from tests.proxy_plugins import Generation
from tests.test_shutdown import LOCAL, ShutdownTestCase
from tests.test_tap import TwistdProcess, local, write_json

GENERATION = "tests.proxy_plugins:Generation"


class ReloadTestCase(ShutdownTestCase):
    """A service started from a file that the test rewrites, then reloads."""

    def setUp(self):
        ShutdownTestCase.setUp(self)
        self.events = capture_log(self)
        del Generation.EVENTS[:]
        self.path = os.path.abspath(temp_path(self, ".json"))

    def config(self, tag, upstreams=None, plugins=(), **changes):
        """A configuration whose ``Generation`` plugin says ``tag``."""
        cfg = {"listen": LOCAL, "admin": {"listen": LOCAL},
               "upstreams": {name: {"peers": [s.address for s in servers]}
                             for name, servers in (upstreams or {}).items()},
               "plugins": list(plugins) + ["router", "least_conn", LOG_RECORDER,
                                           {"name": GENERATION, "settings": {"tag": tag}}]}
        cfg.update(changes)
        return cfg

    def write(self, cfg):
        with open(self.path, "w") as f:
            json.dump(cfg, f)

    async def start_file(self, cfg, clock=None):
        """Start the service from ``cfg`` (written to the file); ``clock``: a
        :class:`~tests.helpers.ClockedReactor` for its timers (default: the
        real reactor's)."""
        self.write(cfg)
        config = load_config(self.path)
        options = SimpleNamespace(config=config, source=self.path,
                                  plugin_manager=build_plugin_manager(config, entry_points=[]))
        self.service = makeService(options, reactor=clock if clock is not None else reactor)
        self.service.reloader.entry_points = []
        self.service.startService()
        self.addCleanup(self._stop_service)
        await until(lambda: len(self.service.ports) == 2)
        self.http = self.service.listeners[0][2]
        self.streams = []
        self.proxy_port = self.port_of(self.http)

    def port_of(self, factory):
        return [p for p in self.service.ports if p.factory is factory][0].getHost().port

    async def _stop_service(self):
        if self.stopping is None:
            self.stopping = self.service.stopService()
        for f in [name_f[2] for name_f in self.service.listeners] + self.service.reloader.leaving:
            if hasattr(f, "abort"):
                f.abort()
        await self.stopping

    def reload_messages(self):
        """The log messages of tproxy.reload."""
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == "tproxy.reload"]

    async def reload(self, cfg):
        self.write(cfg)
        return await self.service.reload()

    async def get(self, client, n, path="/"):
        client.send(request("GET", path))
        responses = await client.wait_responses(n)
        return responses[-1]


class GenerationTests(ReloadTestCase):
    """New requests get the new configuration; requests in flight finish on the old."""

    async def test_inFlightFinishesOnOld(self):
        held = Held()
        up = self.upstream(held)
        clock = ClockedReactor()
        await self.start_file(self.config("one", {"default": [up]}), clock)
        old = self.service.gateway
        port = self.service.ports[:]
        client = await self.client()
        client.send(request("GET", "/slow"))
        await until(lambda: up.heads)
        self.assertTrue(await self.reload(self.config("two", {"default": [up]})))
        self.assertIsNot(self.service.gateway, old)
        # init_worker of the new plugins ran before the swap; the old
        # generation's on_stop waits for its request
        self.assertEqual(Generation.EVENTS, [("start", "one"), ("start", "two")])
        held.release()
        (resp,) = await client.wait_responses(1)
        self.assertEqual(resp.header("X-Generation"), "one")
        self.assertNotEqual(resp.header("Connection"), "close")
        # the old generation is looked at RETIRE_POLL after the reload
        self.assertNotIn(("stop", "one"), Generation.EVENTS)
        clock.advance(RETIRE_POLL)
        self.assertIn(("stop", "one"), Generation.EVENTS)
        # the same keep-alive connection: its next request is on the new one
        resp = await self.get(client, 2)
        self.assertEqual(resp.header("X-Generation"), "two")
        self.assertFalse(client.closed)
        # the listener was kept: the same port objects
        self.assertEqual(self.service.ports, port)
        self.assertIn("reloaded: plugin settings; 1 request(s) and session(s) in flight "
                      "finish on the previous configuration",
                      [m for m in self.reload_messages()])

    async def test_nothingInFlight(self):
        """With no request in flight, the old generation stops at once."""
        up = self.upstream()
        await self.start_file(self.config("one", {"default": [up]}))
        self.assertTrue(await self.reload(self.config("one", {"default": [up]})))
        self.assertEqual(Generation.EVENTS, [("start", "one"), ("start", "one"),
                                             ("stop", "one")])
        self.assertIn("reloaded: nothing changed; 0 request(s) and session(s) in flight "
                      "finish on the previous configuration", self.reload_messages())
        client = await self.client()
        self.assertEqual((await self.get(client, 1)).status, 200)

    async def test_logLevel(self):
        """A changed ``log_level`` applies at the reload: to twistd's log
        filter and to the listener's per-client lines."""
        from twisted.logger import LogLevel
        from tproxy import log_levels
        self.addCleanup(log_levels.set_log_level, "info")
        up = self.upstream()
        await self.start_file(self.config("one", {"default": [up]}))
        self.assertFalse(self.http.log_client_errors)
        self.assertTrue(await self.reload(self.config("one", {"default": [up]},
                                                      log_level="debug")))
        self.assertTrue(self.http.log_client_errors)
        self.assertIs(log_levels.predicate.logLevelForNamespace(""), LogLevel.debug)
        self.assertIn("reloaded: changed log_level; 0 request(s) and session(s) in flight "
                      "finish on the previous configuration", self.reload_messages())
        # a refused reload changes nothing
        self.assertFalse(await self.reload(self.config("one", {"default": [up]},
                                                       log_level="loud")))
        self.assertIs(log_levels.predicate.logLevelForNamespace(""), LogLevel.debug)
        self.assertTrue(self.http.log_client_errors)

    async def test_refusedWhileStopping(self):
        """A ``SIGHUP`` during a graceful stop is refused, and says so."""
        up = self.upstream()
        await self.start_file(self.config("one", {"default": [up]}))
        self.stopping = self.service.stopService()
        self.assertFalse(await self.reload(self.config("two", {"default": [up]})))
        self.assertEqual(self.reload_messages(), [
            "reload refused: tproxy is stopping"])
        await self.stopping

    async def test_invalidRefused(self):
        """An invalid file: refused with its JSON path, the old one serves."""
        up = self.upstream()
        await self.start_file(self.config("one", {"default": [up]}))
        old = self.service.gateway
        bad = self.config("two", {"default": [up]})
        bad["proxy"] = {"tries": "many"}
        self.assertFalse(await self.reload(bad))
        self.assertIs(self.service.gateway, old)
        (message,) = self.reload_messages()
        self.assertIn("reload refused, the running configuration is kept: "
                      + self.path + ": proxy.tries: expected an integer", message)
        client = await self.client()
        self.assertEqual((await self.get(client, 1)).header("X-Generation"), "one")
        self.assertEqual(Generation.EVENTS, [("start", "one")])

    async def test_initWorkerFails(self):
        """A new plugin whose ``init_worker`` fails: refused, saying the new
        configuration (not "tproxy") failed to start; the old one serves."""
        up = self.upstream()
        await self.start_file(self.config("one", {"default": [up]}))
        old = self.service.gateway
        self.assertFalse(await self.reload(self.config(
            "two", {"default": [up]}, plugins=["tests.plugins_for_tests:FailsToStart"])))
        self.assertIs(self.service.gateway, old)
        self.assertEqual(self.reload_messages(), [
            "reload refused, the running configuration is kept: the new configuration "
            "failed to start: RuntimeError: the licence server is unreachable"])

    async def test_notJson(self):
        await self.start_file(self.config("one"))
        with open(self.path, "w") as f:
            f.write("{")
        self.assertFalse(await self.service.reload())
        (message,) = self.reload_messages()
        self.assertIn(self.path + ":", message)


class ListenerTests(ReloadTestCase):
    """Listeners added, removed, kept."""

    async def test_proxyRebound(self):
        """A changed endpoint: the new port opens, the old one closes after
        answering its request in flight; static peers change."""
        held = Held()
        up1, up2 = self.upstream(held), self.upstream()
        await self.start_file(self.config("one", {"default": [up1]}))
        old_port = self.proxy_port
        admin_port = self.port_of(self.service.listeners[1][2])
        client = await self.client()
        client.send(request("GET", "/slow"))
        await until(lambda: up1.heads)
        cfg = self.config("two", {"default": [up2]})
        cfg["listen"] = LOCAL + ":backlog=49"
        self.assertTrue(await self.reload(cfg))
        new_port = self.port_of(self.service.listeners[0][2])
        self.assertNotEqual(new_port, old_port)
        # the admin listener was kept
        self.assertEqual(self.port_of(self.service.listeners[1][2]), admin_port)
        held.release()
        (resp,) = await client.wait_responses(1)
        self.assertEqual(resp.header("X-Generation"), "one")
        self.assertEqual(resp.header("Connection"), "close")
        await client.wait_closed()
        with self.assertRaises(ConnectionRefusedError):
            await self.client(old_port)
        fresh = await self.client(new_port)
        resp = await self.get(fresh, 1)
        self.assertEqual(resp.header("X-Generation"), "two")
        peers = self.service.gateway.registry.group("default").peers
        self.assertEqual(sorted(p.address for p in peers.values()), [up2.address])
        (message,) = [m for m in self.reload_messages() if m.startswith("reloaded")]
        self.assertIn("listeners +{}:backlog=49 (proxy) -{} (proxy)".format(LOCAL, LOCAL),
                      message)
        self.assertIn("changed upstreams", message)

    async def test_portInUse(self):
        """A new listener that cannot listen: refused, nothing changed."""
        up1, up2 = self.upstream(), self.upstream()
        await self.start_file(self.config("one", {"default": [up1]}))
        registry = self.service.gateway.registry
        blocker = reactor.listenTCP(0, up1, interface="127.0.0.1")
        self.addCleanup(blocker.stopListening)
        busy = blocker.getHost().port
        cfg = self.config("two", {"default": [up2]})
        cfg["listen"] = "tcp:{}:interface=127.0.0.1".format(busy)
        self.assertFalse(await self.reload(cfg))
        (message,) = self.reload_messages()
        self.assertIn("reload refused, the running configuration is kept: cannot listen "
                      "for the proxy on tcp:{}".format(busy), message)
        peers = registry.group("default").peers
        self.assertEqual([p.address for p in peers.values()], [up1.address])
        # the new generation was stopped, the old one serves
        self.assertEqual(Generation.EVENTS, [("start", "one"), ("start", "two"),
                                             ("stop", "two")])
        client = await self.client()
        self.assertEqual((await self.get(client, 1)).header("X-Generation"), "one")


class RegistryTests(ReloadTestCase):
    """Registrations made through the admin API survive a reload."""

    async def test_registrationSurvives(self):
        up = self.upstream()
        await self.start_file(self.config("one", plugins=["registry"]))
        old = self.service.gateway
        status, body = await old.admin.handle(AdminRequest(
            "POST", "/upstream/add",
            args={"prefix": "default", "host": "127.0.0.1", "port": str(up.port)}))
        self.assertEqual(status, 200)
        old_plugins = [old.plugins.get_plugin(n) for n in ("registry", "router", "least_conn")]
        self.assertTrue(await self.reload(self.config("two", plugins=["registry"])))
        new = self.service.gateway
        self.assertIs(new.registry, old.registry)
        status, body = await new.admin.handle(AdminRequest("GET", "/upstream/status"))
        self.assertEqual(status, 200)
        (group,) = body["groups"]
        self.assertEqual([(s["host"], s["port"], s["static"]) for s in group["servers"]],
                         [("127.0.0.1", up.port, False)])
        client = await self.client()
        resp = await self.get(client, 1)
        self.assertEqual((resp.status, resp.header("X-Generation")), (200, "two"))
        # the old plugins' timers stopped and they hear no more of the registry
        self.assertFalse(old_plugins[0]._loop.running)
        self.assertTrue(new.plugins.get_plugin("registry")._loop.running)
        subscribers = new.registry.subscribers()
        for p in old_plugins:
            self.assertNotIn(p, subscribers)
        self.assertIn(new.plugins.get_plugin("least_conn"), subscribers)
        # nor of the health state the generations share (one listener each)
        self.assertIs(new.health, old.health)
        self.assertEqual(new.health.subscribers(), [new.plugins.get_plugin("least_conn")])

    async def test_adminRoutesSwapped(self):
        """The admin listener (kept) answers with the new generation's routes."""
        await self.start_file(self.config("one"))
        self.assertTrue(await self.reload(self.config("two", plugins=["registry"])))
        self.assertEqual(self.service.listeners[1][2].routes,
                         self.service.gateway.admin)
        self.assertIn(("GET", "/upstream/status"), self.service.gateway.admin.routes)


class DescribeTests(TestCase):
    """The "reloaded: ..." text."""

    def test_changes(self):
        from tproxy.config import validate_config
        a = validate_config({"plugins": ["router"]})
        b = validate_config({"plugins": ["registry", "router"], "listen": "tcp:8081",
                             "upstreams": {"x": {"peers": ["127.0.0.1:1"]}}})
        self.assertEqual(describe_changes(a, a), "nothing changed")
        self.assertEqual(describe_changes(a, b),
                         "listeners +tcp:8081 (proxy) -tcp:8080 (proxy); "
                         "plugins router -> registry, router; changed upstreams")


class SighupTests(TestCase):
    """A real ``twistd``: ``SIGUSR1`` reopens the access log's file (for
    logrotate); ``SIGHUP`` reloads instead of ending the process (one process
    for both: each costs a Python start)."""

    def test_sighup(self):
        if not hasattr(signal, "SIGHUP") or not hasattr(signal, "SIGUSR1"):
            raise self.skipTest("no SIGHUP or SIGUSR1 here")
        cwd = os.path.abspath(temp_path(self))
        os.makedirs(cwd)
        path = os.path.join(cwd, "access.log")
        access_log = {"name": "access_log", "settings": {"path": path}}
        conf = write_json(self, local(plugins=["router", access_log]))
        proc = TwistdProcess(self, conf, cwd)
        proc.read_until("admin API listening")
        self.assertTrue(os.path.exists(path))
        os.rename(path, path + ".1")
        proc.send_signal(signal.SIGUSR1)
        proc.read_until("access_log: reopened")
        self.assertTrue(os.path.exists(path), "SIGUSR1 reopens the access log")
        with open(conf, "w") as f:
            json.dump(local(plugins=["registry", "router", access_log]), f)
        proc.send_signal(signal.SIGHUP)
        proc.read_until("reloaded: plugins router, access_log -> registry, router, "
                        "access_log")
        with open(conf, "w") as f:
            f.write('{"listen": 1}')
        proc.send_signal(signal.SIGHUP)
        line = proc.read_until("reload refused, the running configuration is kept")
        self.assertIn(": listen: expected a string", line)
        self.assertTrue(proc.running())
        proc.assertStopsCleanly()


class HarnessReloadTests(TestCase):
    """:meth:`tproxy.testing.Harness.reload`, on the fake clock."""

    def setUp(self):
        del Generation.EVENTS[:]
        self.answers = []

        def slow(request):
            d = Deferred()
            self.answers.append(d)
            return d
        self.h = Harness(
            {"upstreams": {"api": {"peers": ["10.0.0.1:80"]}}},
            plugins=self.plugins("one"),
            servers={"10.0.0.1:80": slow, "10.0.0.2:80": lambda r: (200, {}, b"two")},
            entry_points=[])

    def plugins(self, tag):
        return ["registry", "router", "least_conn", {"name": Generation, "settings": {"tag": tag}}]

    def test_onStopAfterLastRequest(self):
        h = self.h
        pending = h.request("GET", "/api/x", wait=False)
        self.assertEqual(h.reload({"upstreams": {"api": {"peers": ["10.0.0.2:80"]}}},
                                  plugins=self.plugins("two"), entry_points=[]), 1)
        self.assertEqual(Generation.EVENTS, [("start", "one"), ("start", "two")])
        # a new request: the new generation, the new static peer
        resp = h.request("GET", "/api/y")
        self.assertEqual((resp.body, resp.headers.get("X-Generation")), (b"two", "two"))
        # the old static peer is gone from the registry; its request goes on
        self.assertEqual([p.address for p in h.registry.group("api").peers.values()],
                         ["10.0.0.2:80"])
        self.answers[0].callback((200, {}, b"one"))
        h.flush()
        resp = pending.result()
        self.assertEqual((resp.body, resp.headers.get("X-Generation")), (b"one", "one"))
        self.assertNotIn(("stop", "one"), Generation.EVENTS)
        h.clock.advance(0.1)
        self.assertEqual(Generation.EVENTS[-1], ("stop", "one"))

    def test_registrationAndCountsCarryOver(self):
        h = self.h
        self.assertEqual(h.admin("POST", "/upstream/add?prefix=web&host=10.0.0.2&port=80")
                         .status, 200)
        pending = h.request("GET", "/api/x", wait=False)
        peer = h.registry.group("api").peers[("10.0.0.1", 80)]
        self.assertEqual(peer.active, 1)
        h.reload({"upstreams": {"api": {"peers": ["10.0.0.1:80"]}}},
                 plugins=self.plugins("two"), entry_points=[])
        # the same peer object: the count in flight is still seen
        self.assertIs(h.registry.group("api").peers[("10.0.0.1", 80)], peer)
        self.assertEqual(peer.active, 1)
        self.assertEqual(h.request("GET", "/web/").body, b"two")
        self.answers[0].callback((200, {}, b"one"))
        h.flush()
        self.assertEqual(pending.result().status, 200)
        self.assertEqual(peer.active, 0)

    def test_workersNeedRestart(self):
        """A single process reloaded with ``"workers": 2`` stays one process
        (only a restart makes the parent of workers) and warns so, instead of
        saying only ``changed workers``."""
        events = capture_log(self)
        self.h.reload({"upstreams": {"api": {"peers": ["10.0.0.1:80"]}}, "workers": 2},
                      plugins=self.plugins("two"), entry_points=[])
        self.assertEqual(self.h.gateway.role, "single")
        self.assertIn('workers changed to 2: a process started with "workers": 1 starts '
                      'workers at the next restart (a reload keeps it one process)',
                      [formatEvent(e) for e in events])

    def test_invalidKeepsOld(self):
        h = self.h
        old = h.gateway
        with self.assertRaises(ConfigError):
            h.reload({"upstreams": {"api": {"peers": ["nowhere"]}}}, plugins=self.plugins("x"),
                     entry_points=[])
        self.assertIs(h.gateway, old)
        self.assertEqual(Generation.EVENTS, [("start", "one")])

    def test_healthAndStaticSettingsCarryOver(self):
        """The peers' health state goes on with the new settings; a static
        peer's max_conns and its group's routable follow the file."""
        h = self.h
        health = h.gateway.health
        peer = h.registry.group("api").peers[("10.0.0.1", 80)]
        h.reload({"upstreams": {"api": {"routable": False, "peers": [
                     {"host": "10.0.0.1", "port": 80, "max_conns": 3}]}},
                  "health": {"passive": {"max_fails": 7}}},
                 plugins=self.plugins("two"), entry_points=[])
        self.assertIs(h.gateway.health, health)
        self.assertEqual(health.max_fails, 7)
        self.assertIs(h.registry.group("api").peers[("10.0.0.1", 80)], peer)
        self.assertEqual(peer.max_conns, 3)
        self.assertFalse(h.registry.group("api").routable)
