"""
A plugin that implements every per-request phase and does nothing, to measure what the
hook dispatch costs by itself. The ``plugins`` scenario of ``bench/run.sh`` lists it 5 or
20 times in the configuration::

    "plugins": ["registry", "router", "least_conn",
                {"name": "bench.noop_plugins", "settings": {}}, ...]

(``bench/`` must be importable: run.sh puts the repository root on ``PYTHONPATH``.)
Being listed after ``least_conn``, its ``balancer`` (a first-result phase) is normally
never reached: a dispatch that still pays for it shows up in the numbers.
"""

from tproxy import hookimpl


class Plugin(object):
    def __init__(self, settings):
        self.settings = settings

    @hookimpl
    def rewrite(self, ctx):
        return None

    @hookimpl
    def access(self, ctx):
        return None

    @hookimpl
    def balancer(self, ctx, tried):
        return None

    @hookimpl
    def header_filter(self, ctx, response):
        return None

    @hookimpl
    def body_filter(self, ctx, chunk, eof):
        return None

    @hookimpl
    def log(self, ctx):
        return None
