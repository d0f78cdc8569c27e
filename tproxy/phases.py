# -*- test-case-name: tests.test_phases -*-
"""
The phase driver: runs the hook implementations of each phase in order and
waits for the ones that return a Deferred or a coroutine.

pluggy calls implementations synchronously and treats an awaitable as a plain
value, so tproxy walks each phase's implementations itself.  The lists are
resolved once (and again after :meth:`Phases.refresh`), never per request, and
a phase nobody implements costs one ``if``.  Each call is synchronous until an
implementation actually returns an awaitable; only then is a Deferred made.

Each walk is a function made once per phase and route from the list: see
:mod:`tproxy.phase_walks` (straight-line code on CPython, loops on PyPy).
"""

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

from tproxy.phase_resume import _awaitable
from tproxy.phase_walks import UNROLL, _rewrite_access, _walker

log = Logger()

#: The HTTP phases and their arguments, in the order a request meets them.
PHASES = (
    ("init_worker", ("gateway",)),
    ("rewrite", ("ctx",)),
    ("access", ("ctx",)),
    ("balancer", ("ctx", "tried")),
    ("header_filter", ("ctx", "response")),
    ("body_filter", ("ctx", "chunk", "eof")),
    ("log", ("ctx",)),
)


def _adapt(impl, argnames):
    """A callable taking the hook's arguments positionally for ``impl``,
    which may accept any subset of them."""
    fn = impl.function
    wanted = tuple(impl.argnames)
    if wanted == argnames:
        return fn
    index = [argnames.index(a) for a in wanted]
    if not index:
        return lambda *args: fn()
    if len(index) == 1:
        i = index[0]
        return lambda *args: fn(args[i])
    return lambda *args: fn(*[args[i] for i in index])


class PhaseSet(object):
    """
    The implementations that run for the requests of one route (or of every
    route without route-scoped plugins), phase by phase, in execution order,
    and the walks over them (the ``run_*`` functions, which the exchange
    calls).

    :ivar after_rewrite: the route-scoped ``rewrite``, then the ``access``
        implementations (a list; so are the next four).
    :ivar run_after_rewrite: ``run_after_rewrite(ctx)``: walk them until one
        returns a :class:`Response`; ``None``, it or a Deferred.
    :ivar run_balancer: ``run_balancer(ctx, tried)``: the first result that
        is not ``None`` (a Peer, a :class:`Response`), ``None`` or a Deferred.
    :ivar run_header_filter: ``run_header_filter(ctx, head)``: every one;
        ``None`` or a Deferred.
    :ivar run_body_filter: ``run_body_filter(ctx, chunk, eof)``: the chunk
        through every one; bytes or a Deferred of them.
    :ivar run_log: ``run_log(ctx)``: every one, errors logged, never raised.
    """

    __slots__ = ("after_rewrite", "balancer", "header_filter", "body_filter",
                 "log", "has_header_filter", "has_body_filter",
                 "run_after_rewrite", "run_balancer", "run_header_filter",
                 "run_body_filter", "run_log")

    def __init__(self, after_rewrite, balancer, header_filter, body_filter, log,
                 unroll=UNROLL):
        self.after_rewrite = after_rewrite
        self.balancer = balancer
        self.header_filter = header_filter
        self.body_filter = body_filter
        self.log = log
        self.has_header_filter = bool(header_filter)
        self.has_body_filter = bool(body_filter)
        self.run_after_rewrite = _walker("until_response", after_rewrite, unroll)
        self.run_balancer = _walker("first_result", balancer, unroll)
        self.run_header_filter = _walker("run_all", header_filter, unroll)
        self.run_body_filter = _walker("filter", body_filter, unroll)
        self.run_log = _walker("log", log, unroll)


class Phases(object):
    """
    The implementations of every phase, resolved from a plugin manager.

    Plugins may be enabled for some routes only (``"routes": [...]`` in their
    configuration entry; the loader records them in the plugin manager's
    ``_tproxy_scopes``).  ``rewrite`` implementations of every-route plugins run
    first (they choose the route); after them, the route's :class:`PhaseSet`
    -- its route-scoped ``rewrite`` implementations, then ``access``,
    ``balancer`` ... -- is found with one dictionary lookup and kept in
    ``ctx.plugins``.

    :ivar default: the :class:`PhaseSet` of routes without scoped plugins.
    :ivar rewrite_access: ``rewrite_access(ctx)``: run ``rewrite`` then
        ``access`` until one returns a :class:`Response`, and set
        ``ctx.plugins`` to the route's :class:`PhaseSet` once the every-route
        ``rewrite`` implementations have run.  It returns ``None`` (proceed),
        a :class:`Response`, or a Deferred of either; exceptions propagate
        (synchronously or as a failure).
    :param unroll: straight-line walks (default :data:`UNROLL`: on CPython).
    """

    def __init__(self, plugin_manager, unroll=None):
        self.plugin_manager = plugin_manager
        self.unroll = UNROLL if unroll is None else unroll
        self.refresh()

    def refresh(self):
        """Resolve the implementation lists again (after plugins changed)."""
        hooks = self.plugin_manager.hook
        scopes = getattr(self.plugin_manager, "_tproxy_scopes", {}) or {}
        unroll = self.unroll
        self.impls = {}
        for name, argnames in PHASES:
            caller = getattr(hooks, name, None)
            impls = reversed(caller.get_hookimpls()) if caller is not None else ()
            # pluggy calls the last registered first; the loader registers in
            # reverse config order, so this is config order.
            self.impls[name] = [(_adapt(i, argnames), i.plugin_name,
                                 scopes.get(i.plugin_name)) for i in impls]
        routes = set()
        for scope in scopes.values():
            routes.update(scope or ())

        def pick(phase, route, scoped_only=False):
            return [f for f, _, scope in self.impls[phase]
                    if (scope is None and not scoped_only)
                    or (scope is not None and route in scope)]

        def phase_set(route):
            return PhaseSet(pick("rewrite", route, True) + pick("access", route),
                            pick("balancer", route), pick("header_filter", route),
                            pick("body_filter", route), pick("log", route), unroll)

        self._rewrite = [f for f, _, scope in self.impls["rewrite"] if scope is None]
        self._init_worker = [f for f, _, _ in self.impls["init_worker"]]
        self.default = phase_set(None)
        self.by_route = {route: phase_set(route) for route in routes}
        self.rewrite_access = _rewrite_access(
            self._rewrite, self.by_route, self.default, unroll)

    def names(self, phase):
        """The plugin names implementing ``phase``, in execution order."""
        return [n for _, n, _ in self.impls[phase]]

    # -- startup ------------------------------------------------------------

    def init_worker(self, gateway):
        """Run every ``init_worker`` in order, each awaited; a Deferred."""
        impls = self._init_worker
        names = self.names("init_worker")
        admin = getattr(gateway, "admin", None)

        def step(_, i):
            while i < len(impls):
                if admin is not None:
                    # the owner of the admin routes it adds (duplicates are
                    # refused naming both plugins)
                    admin.registering = names[i]
                d = _awaitable(impls[i](gateway))
                i += 1
                if d is not None:
                    return d.addCallback(step, i)
            return None

        def done(result):
            if admin is not None:
                admin.registering = None
            return result

        return maybeDeferred(step, None, 0).addBoth(done)

    # -- per request ----------------------------------------------------------
    #
    # The exchange calls ``rewrite_access`` and the ``run_*`` walks of
    # ``ctx.plugins`` itself (no frame of this class's between it and the
    # implementations); these methods are the same walks for other callers.

    def balancer(self, ctx, tried):
        """
        Ask the ``balancer`` implementations for a peer; the first non-None
        result wins (the implementations after it are not called).

        :return: a Peer, a :class:`Response`, ``None``, or a Deferred of one.
        """
        return ctx.plugins.run_balancer(ctx, tried)

    def header_filter(self, ctx, head):
        """Run every ``header_filter``; ``None`` or a Deferred."""
        return ctx.plugins.run_header_filter(ctx, head)

    def body_filter(self, ctx, chunk, eof):
        """
        Pass ``chunk`` through every ``body_filter``.

        :return: the bytes to send, or a Deferred of them.
        """
        return ctx.plugins.run_body_filter(ctx, chunk, eof)

    def log(self, ctx):
        """Run every ``log`` implementation; errors are logged, never raised."""
        ctx.plugins.run_log(ctx)


__all__ = ["Phases", "PHASES"]
