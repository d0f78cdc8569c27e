# -*- test-case-name: tests.test_stream -*-
"""
The stream phases of a listener: which hook implementations run for its
connections (:func:`stream_phases`, :class:`StreamPhaseSet`), and the
helpers the session drives them with.
"""

from twisted.logger import Logger

from tproxy.phase_resume import _awaitable
from tproxy.phases import _adapt

# one namespace for the stream proxy's modules (what a log filter selects)
log = Logger(namespace="tproxy.stream")

#: The stream phases and their arguments, in the order a connection meets them.
STREAM_PHASES = (
    ("stream_access", ("ctx",)),
    ("balancer", ("ctx", "tried")),
    ("stream_log", ("ctx",)),
)


class StreamPhaseSet(object):
    """
    The implementations that run for the connections of one stream listener,
    phase by phase, in execution order.
    """

    __slots__ = ("access", "balancer", "log", "names")

    def __init__(self, access, balancer, log, names=None):
        self.access = access
        self.balancer = balancer
        self.log = log
        #: ``{implementation: plugin name}`` (one that does not answer in
        #: time is named by it)
        self.names = names or {}


def stream_phases(plugin_manager, group):
    """
    Resolve the :class:`StreamPhaseSet` of connections to ``group``.

    The order is the HTTP phases' (:meth:`tproxy.phases.Phases.refresh`):
    pluggy calls the last registered implementation first and the loader
    registers plugins in reverse config order, so the reversed
    ``get_hookimpls()`` is config order.  A plugin enabled for some routes
    only (``"routes"`` in its entry) runs for the streams whose group is one
    of them.
    """
    hooks = plugin_manager.hook
    scopes = getattr(plugin_manager, "_tproxy_scopes", {}) or {}

    def pick(name, argnames):
        caller = getattr(hooks, name, None)
        if caller is None:
            return []
        out = []
        for impl in reversed(caller.get_hookimpls()):
            scope = scopes.get(impl.plugin_name)
            if scope is None or group in scope:
                fn = _adapt(impl, argnames)
                names[fn] = impl.plugin_name
                out.append(fn)
        return out

    names = {}
    lists = dict((name, pick(name, argnames)) for name, argnames in STREAM_PHASES)
    return StreamPhaseSet(lists["stream_access"], lists["balancer"], lists["stream_log"],
                          names)


def _is_refusal(r):
    """A ``stream_access`` result that refuses: ``False`` or bytes to send."""
    return r is False or isinstance(r, (bytes, bytearray))


def _run_log(impls, ctx):
    for fn in impls:
        try:
            d = _awaitable(fn(ctx))
        except Exception:
            log.failure("stream_log failed for {client} -> {group}",
                        client=ctx.client, group=ctx.route)
            continue
        if d is not None:
            d.addErrback(lambda f: log.failure(
                "stream_log failed for {client} -> {group}", f,
                client=ctx.client, group=ctx.route))


def _log_timeout(ctx, phase, timeout):
    """The error line of a ``phase`` implementation that did not answer
    within ``timeout`` seconds (``timeouts.idle``)."""
    plugin = ctx.plugins.names.get(getattr(ctx, "_awaited", None), "?")
    log.error("{phase} of plugin {plugin} did not answer within {timeout} s "
              "(timeouts.idle): stream {group} from {client}", phase=phase,
              plugin=plugin, timeout=timeout, group=ctx.route, client=ctx.client)
