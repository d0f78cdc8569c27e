"""
Plugins for the end-to-end proxy tests (tests.test_proxy*, tests.test_phases).

They are listed in a test's configuration as ``"tests.proxy_plugins:Name"``;
the test then takes the instance from the plugin manager and tells it what to
do, by setting functions in its ``fns`` dict (plain, Deferred-returning or
``async def``).
"""

from tproxy import hookimpl


class LogRecorder(object):
    """
    Records every ``log`` call: ``logged`` is the list of contexts, so that a
    test can assert that ``log`` ran exactly once per request.
    """

    def __init__(self, settings):
        self.logged = []

    @hookimpl
    def log(self, ctx):
        """Record ``ctx``."""
        self.logged.append(ctx)


class Hooks(object):
    """
    ``rewrite``, ``access`` and ``balancer`` that call ``fns[phase]`` when a
    test set one (and do nothing otherwise).
    """

    def __init__(self, settings):
        self.fns = {}
        self.calls = []

    def _call(self, phase, *args):
        self.calls.append(phase)
        fn = self.fns.get(phase)
        return None if fn is None else fn(*args)

    @hookimpl
    def rewrite(self, ctx):
        """Calls ``fns["rewrite"](ctx)``."""
        return self._call("rewrite", ctx)

    @hookimpl
    def access(self, ctx):
        """Calls ``fns["access"](ctx)``."""
        return self._call("access", ctx)

    @hookimpl
    def balancer(self, ctx, tried):
        """Calls ``fns["balancer"](ctx, tried)``."""
        return self._call("balancer", ctx, tried)


class Filters(object):
    """
    ``header_filter`` and ``body_filter`` that call ``fns[phase]`` when a test
    set one; ``chunks`` records what ``body_filter`` saw.
    """

    def __init__(self, settings):
        self.fns = {}
        self.chunks = []

    @hookimpl
    def header_filter(self, ctx, response):
        """Calls ``fns["header_filter"](ctx, response)``."""
        fn = self.fns.get("header_filter")
        return None if fn is None else fn(ctx, response)

    @hookimpl
    def body_filter(self, ctx, chunk, eof):
        """Calls ``fns["body_filter"](ctx, chunk, eof)``."""
        self.chunks.append((chunk, eof))
        fn = self.fns.get("body_filter")
        return None if fn is None else fn(ctx, chunk, eof)


class BadLog(object):
    """A ``log`` hook that raises (tests.test_phases)."""

    def __init__(self, settings):
        pass

    @hookimpl
    def log(self, ctx):
        """Raises."""
        from tests.test_phases import Boom
        raise Boom("log failed")


class HeadFilter(object):
    """Only ``header_filter`` (calls ``fns["header_filter"]``), so that the
    body takes the path without a body filter."""

    def __init__(self, settings):
        self.fns = {}

    @hookimpl
    def header_filter(self, ctx, response):
        """Calls ``fns["header_filter"](ctx, response)``."""
        fn = self.fns.get("header_filter")
        return None if fn is None else fn(ctx, response)


class Generation(object):
    """
    Tells which configuration served a request (tests.test_reload): the
    response header ``X-Generation: <settings["tag"]>``; ``EVENTS`` records
    ``("start", tag)`` at ``init_worker`` and ``("stop", tag)`` when the
    gateway's ``on_stop`` callbacks run.
    """

    EVENTS = []

    def __init__(self, settings):
        self.tag = (settings or {}).get("tag", "-")

    @hookimpl
    def init_worker(self, gateway):
        """Record the start; register the stop."""
        self.EVENTS.append(("start", self.tag))
        gateway.on_stop(lambda: self.EVENTS.append(("stop", self.tag)))

    @hookimpl
    def header_filter(self, ctx, response):
        """Add ``X-Generation``."""
        response.headers.raw.append((b"X-Generation", self.tag.encode("ascii")))
