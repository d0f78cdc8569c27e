"""
Tests for :mod:`tproxy.probes`: ``/healthz`` and ``/readyz`` on the admin
API with the default configuration, without the admin token.
"""

from twisted.trial.unittest import SynchronousTestCase

from tproxy.testing import Harness


class HealthTests(SynchronousTestCase):

    def test_defaultConfiguration(self):
        h = Harness()
        self.assertEqual(h.admin("GET", "/healthz").obj, {"status": "ok"})
        response = h.admin("GET", "/readyz")
        self.assertEqual((response.status, response.obj), (200, {"status": "ready"}))
        self.assertEqual(h.admin("HEAD", "/readyz").status, 200)

    def test_noTokenNeeded(self):
        """Probes cannot send the admin token; the rest of the API still needs it."""
        h = Harness(config={"admin": {"token": "s3cret"}})
        self.assertEqual(h.admin("GET", "/healthz").status, 200)
        self.assertEqual(h.admin("GET", "/readyz").status, 200)
        self.assertEqual(h.admin("GET", "/upstream/status").status, 401)
        self.assertEqual(h.admin("GET", "/upstream/status", headers={
            "Authorization": "Bearer s3cret"}).status, 200)

    def test_staticGroups(self):
        h = Harness(config={"upstreams": {"api": {"peers": ["127.0.0.1:9001"]}}})
        self.assertEqual(h.admin("GET", "/readyz").status, 200)
        response = h.admin("GET", "/readyz?group=api,web")
        self.assertEqual((response.status, response.obj), (503, {
            "status": "not_ready", "reason": "no live peer", "groups": ["web"]}))

    def test_registeredGroup(self):
        """A group of registered peers is ready while one of them lives."""
        h = Harness(config={"registry": {"ttl": 30}})
        self.assertEqual(h.admin("GET", "/readyz?group=web").status, 503)
        h.admin("GET", "/upstream/add?port=9002&prefix=web")
        self.assertEqual(h.admin("GET", "/readyz?group=web").status, 200)
        h.advance(31)
        self.assertEqual(h.admin("GET", "/readyz?group=web").status, 503)
        self.assertEqual(h.admin("GET", "/healthz").status, 200)

    def test_stopping(self):
        h = Harness()
        h.stop()
        response = h.admin("GET", "/readyz")
        self.assertEqual((response.status, response.obj["reason"]), (503, "stopping"))
        self.assertEqual(h.admin("GET", "/healthz").status, 200)

    def test_publicRoutesHaveNoParameters(self):
        h = Harness()
        self.assertRaises(ValueError, h.gateway.admin.route, "GET", "/h/{x}",
                          lambda r: (200, {}), public=True)


class LifecycleTests(SynchronousTestCase):
    """Not ready before startup finished, nor once stopping began."""

    def gateway(self):
        from twisted.internet.task import Clock

        from tproxy.config import validate_config
        from tproxy.gateway import Gateway
        from tproxy.plugins import build_plugin_manager
        config = validate_config({})
        return Gateway(config, Clock(), build_plugin_manager(config, entry_points=[]))

    def readyz(self, gateway):
        from tproxy.admin import AdminRequest
        return self.successResultOf(gateway.admin.handle(AdminRequest("GET", "/readyz")))

    def test_starting(self):
        gateway = self.gateway()
        self.assertEqual(self.readyz(gateway), (503, {
            "status": "not_ready", "reason": "starting", "groups": []}))
        self.successResultOf(gateway.start())
        self.assertEqual(self.readyz(gateway), (200, {"status": "ready"}))

    def test_drainingService(self):
        """GatewayService.stopService: not ready from its first moment (drain)."""
        from twisted.application.service import Service
        from twisted.internet.defer import Deferred

        from tproxy.tap import GatewayService

        class Slow(Service):
            """A child that stops when the test says: the gateway's own stop
            (its on_stop callbacks) comes after it."""
            stopped = Deferred()

            def stopService(self):
                Service.stopService(self)
                return self.stopped

        gateway = self.gateway()
        service = GatewayService(gateway, [])
        Slow().setServiceParent(service)
        service.startService()
        self.assertEqual(self.readyz(gateway)[0], 200)
        done = service.stopService()
        self.assertNoResult(done)
        self.assertEqual(self.readyz(gateway)[1]["reason"], "stopping")
        Slow.stopped.callback(None)
        self.successResultOf(done)
