"""
Small plugins for the loader's tests (tests.test_plugins, tests.test_tap).

The module itself is a plugin without a ``Plugin`` class (module-level
hooks); the classes are named as ``"tests.plugins_for_tests:AddHeader"``.
"""

from twisted.internet.defer import Deferred

from tproxy import Response, hookimpl


@hookimpl
def rewrite(ctx):
    """A module-level hook."""


@hookimpl
def log(ctx):
    """A module-level hook."""


class AddHeader(object):
    """Takes validated settings: a header to add in ``header_filter``."""

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["header"],
        "properties": {
            "header": {"type": "string", "minLength": 1},
            "value": {"type": "string", "default": "yes"},
            "limits": {"type": "object", "default": {},
                       "properties": {"burst": {"type": "integer", "default": 5}}},
        },
    }

    def __init__(self, settings):
        self.settings = settings

    @hookimpl
    def header_filter(self, ctx, response):
        """Adds the header."""

    @hookimpl
    def rewrite(self, ctx):
        """Runs in rewrite too."""


class NoSchema(object):
    """A class without ``settings_schema``: gets the settings as they are."""

    def __init__(self, settings):
        self.settings = settings

    @hookimpl
    def access(self, ctx):
        """An access hook."""


class First(object):
    """Asks pluggy to run first, whatever the config order."""

    def __init__(self, settings):
        pass

    @hookimpl(tryfirst=True)
    def rewrite(self, ctx):
        """Runs first."""


class Misspelt(object):
    """Implements a hook that does not exist (caught by check_pending)."""

    def __init__(self, settings):
        pass

    @hookimpl
    def rewite(self, ctx):
        """A typo of rewrite."""


class BadArgument(object):
    """Asks for an argument the hook does not have (caught by register)."""

    def __init__(self, settings):
        pass

    @hookimpl
    def access(self, ctx, nonsense):
        """Not a valid access hook."""


class BadSchema(object):
    """Declares a settings schema that is not a JSON Schema."""

    settings_schema = {"type": "no-such-type"}

    def __init__(self, settings):
        pass


class Wrapper(object):
    """An ``access`` wrapper in pluggy's new style, which tproxy refuses."""

    def __init__(self, settings):
        pass

    @hookimpl(wrapper=True)
    def access(self, ctx):
        """Would deny every request, if it ran."""
        yield
        return Response.error(403, "wrapped")

    @hookimpl
    def log(self, ctx):
        """A plain implementation beside it."""


class OldWrappers(object):
    """Two old-style hook wrappers (``hookwrapper=True``)."""

    def __init__(self, settings):
        pass

    @hookimpl(hookwrapper=True)
    def rewrite(self, ctx):
        """Would run around the other rewrite implementations."""
        yield

    @hookimpl(hookwrapper=True)
    def access(self, ctx):
        """Would run around the other access implementations."""
        yield


class Exploding(object):
    """Raises while being made."""

    def __init__(self, settings):
        raise ValueError("no way")


class SlowStart(object):
    """``init_worker`` waits for ``self.ready`` (a Deferred the test fires)."""

    def __init__(self, settings):
        self.ready = Deferred()
        self.gateway = None

    @hookimpl
    def init_worker(self, gateway):
        """Waits for the test."""
        self.gateway = gateway
        return self.ready


instance = NoSchema({})


class FailsInWorkers(object):
    """``init_worker`` fails in a worker process whose index is in
    ``settings["workers"]`` (all of them by default), and nowhere else
    (tests.processes.test_workers)."""

    settings_schema = {"type": "object", "properties": {
        "workers": {"type": ["array", "null"], "default": None}}}

    def __init__(self, settings):
        self.settings = settings

    @hookimpl
    def init_worker(self, gateway):
        """Fails in the workers named."""
        wanted = self.settings.get("workers")
        if gateway.role == "worker" and (wanted is None or gateway.worker_index in wanted):
            raise RuntimeError("this worker will not start")


class Unmarked(object):
    """Hook functions without ``@hookimpl``: pluggy would skip them."""

    def __init__(self, settings):
        pass

    def access(self, ctx):
        """Would refuse every request, if it ran."""
        return 403

    def log(self, ctx):
        """Not marked either."""


class FailsToStart(object):
    """``init_worker`` fails wherever it runs."""

    def __init__(self, settings):
        pass

    @hookimpl
    def init_worker(self, gateway):
        """Fails."""
        raise RuntimeError("the licence server is unreachable")
