"""
Property-based tests of the admin API's parameters and requests, with and
without ``admin.token``: the properties, the generators and the model are in
:mod:`tests.fuzz_admin` (read its docstring), imported when a test runs.
Long mode, random::

    TPROXY_FUZZ_EXAMPLES=5000 python -m twisted.trial tests.test_fuzz_admin
"""

from twisted.trial.unittest import SynchronousTestCase


class _FuzzTestCase(SynchronousTestCase):
    """Runs a property of :mod:`tests.fuzz_admin` on a fresh gateway
    (``gw``), with ``admin.token`` set when :attr:`token` is."""

    token = False

    def setUp(self):
        from tests import fuzz_admin
        self.fuzz = fuzz_admin
        self.gw = fuzz_admin.Gateway(self.token)


class RegistryFuzzTests(_FuzzTestCase):
    """Random add/remove requests against a model of the registry."""

    def test_registry(self):
        """Whatever the request, a JSON 2xx/4xx answer; the registry changes
        exactly as the model says."""
        self.fuzz.registry(self)


class RegistryTokenFuzzTests(RegistryFuzzTests):
    """The same with ``admin.token`` set: without it, nothing is served."""

    token = True


class RoutesFuzzTests(_FuzzTestCase):
    """Random route changes and matches against a model of the route table."""

    def test_routes(self):
        """Whatever the request, a JSON 2xx/4xx answer; the table changes
        only when a change is accepted, as the answer says."""
        self.fuzz.routes(self)


class RoutesTokenFuzzTests(RoutesFuzzTests):
    """The same with ``admin.token`` set."""

    token = True


class RawFuzzTests(_FuzzTestCase):
    """Random request bytes on the admin listener (``h.admin_raw``)."""

    def test_raw(self):
        """Always one complete answer, at once or at the idle timeout (408):
        a JSON 2xx/4xx (or the 501/505 of a transfer coding or a version
        tproxy does not implement); a refused request changes nothing."""
        self.fuzz.raw(self)


class RawTokenFuzzTests(RawFuzzTests):
    """The same with ``admin.token`` set."""

    token = True
