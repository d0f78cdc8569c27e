"""A plugin module with a ``Plugin`` class (for tests.test_plugins)."""

from tproxy import hookimpl


class Plugin(object):
    """Counts nothing; keeps its validated settings."""

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"greeting": {"type": "string", "default": "hello"}},
    }

    def __init__(self, settings):
        self.settings = settings

    @hookimpl
    def access(self, ctx):
        """An access hook."""

    @hookimpl
    def log(self, ctx):
        """A log hook."""
