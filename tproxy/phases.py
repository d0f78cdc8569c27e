# -*- test-case-name: tests.test_phases -*-
"""
The phase driver: runs the hook implementations of each phase in order and
waits for the ones that return a Deferred or a coroutine.

pluggy calls implementations synchronously and treats an awaitable as a plain
value, so tproxy walks each phase's implementations itself.  The lists are
resolved once (and again after :meth:`Phases.refresh`), never per request, and
a phase nobody implements costs one ``if``.  Each call is synchronous until an
implementation actually returns an awaitable; only then is a Deferred made.
"""

from types import CoroutineType

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from tproxy.context import Response

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


#: types known to be neither Deferreds nor coroutines: ``isinstance(x,
#: Deferred)`` goes through ``ABCMeta.__instancecheck__`` (Deferred is a
#: typing.Awaitable), which costs more than a plugin call, so each result type
#: is checked once
_PLAIN_TYPES = PLAIN_TYPES = set()


def is_deferred(obj):
    """Whether ``obj`` is a Deferred (cheap for the usual non-Deferred types)."""
    t = type(obj)
    if t is Deferred:
        return True
    if t in _PLAIN_TYPES:
        return False
    if isinstance(obj, Deferred):
        return True
    if t is not CoroutineType:
        _PLAIN_TYPES.add(t)
    return False


def _awaitable(result):
    """``result`` as a Deferred if it is awaitable, else ``None``."""
    if is_deferred(result):
        return result
    if type(result) is CoroutineType:
        return Deferred.fromCoroutine(result)
    return None


class PhaseSet(object):
    """
    The implementations that run for the requests of one route (or of every
    route without route-scoped plugins), phase by phase, in execution order.
    """

    __slots__ = ("after_rewrite", "balancer", "header_filter", "body_filter",
                 "log", "has_header_filter", "has_body_filter")

    def __init__(self, after_rewrite, balancer, header_filter, body_filter, log):
        self.after_rewrite = after_rewrite
        self.balancer = balancer
        self.header_filter = header_filter
        self.body_filter = body_filter
        self.log = log
        self.has_header_filter = bool(header_filter)
        self.has_body_filter = bool(body_filter)


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
    """

    def __init__(self, plugin_manager):
        self.plugin_manager = plugin_manager
        self.refresh()

    def refresh(self):
        """Resolve the implementation lists again (after plugins changed)."""
        hooks = self.plugin_manager.hook
        scopes = getattr(self.plugin_manager, "_tproxy_scopes", {}) or {}
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
                            pick("body_filter", route), pick("log", route))

        self._rewrite = [f for f, _, scope in self.impls["rewrite"] if scope is None]
        self._init_worker = [f for f, _, _ in self.impls["init_worker"]]
        self.default = phase_set(None)
        self.by_route = {route: phase_set(route) for route in routes}

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
    # Each phase is one loop over a flat list of callables, in the method the
    # exchange calls: per implementation, one call and one ``r is None`` test
    # (all that a hook returning nothing costs; no frame of tproxy's own).
    # A result that is not None is looked at further; an awaitable hands the
    # rest of the walk to the resume functions below, which find where to go
    # on with ``impls.index(fn)`` (an implementation appears once in a list).

    def rewrite_access(self, ctx):
        """
        Run ``rewrite`` then ``access`` until one returns a :class:`Response`;
        sets ``ctx.plugins`` to the route's :class:`PhaseSet` once the
        every-route ``rewrite`` implementations have run.

        :return: ``None`` (proceed), a :class:`Response`, or a Deferred of
            either.  Exceptions propagate (synchronously or as a failure).
        """
        for fn in self._rewrite:
            r = fn(ctx)
            if r is not None:
                if isinstance(r, Response):
                    return r
                d = _awaitable(r)
                if d is not None:
                    impls = self._rewrite
                    d.addCallback(_resume_until_response, impls, ctx,
                                  impls.index(fn) + 1, _is_response)
                    return d.addCallback(self._resume_after_rewrite, ctx)
        if self.by_route:
            ctx.plugins = self.by_route.get(ctx.route, self.default)
        impls = ctx.plugins.after_rewrite
        for fn in impls:
            r = fn(ctx)
            if r is not None:
                if isinstance(r, Response):
                    return r
                d = _awaitable(r)
                if d is not None:
                    return d.addCallback(_resume_until_response, impls, ctx,
                                         impls.index(fn) + 1, _is_response)
        return None

    def _resume_after_rewrite(self, r, ctx):
        if r is not None:
            return r      # (a Response)
        if self.by_route:
            ctx.plugins = self.by_route.get(ctx.route, self.default)
        return _until_response(ctx.plugins.after_rewrite, ctx, 0)

    def balancer(self, ctx, tried):
        """
        Ask the ``balancer`` implementations for a peer; the first non-None
        result wins (the implementations after it are not called).

        :return: a Peer, a :class:`Response`, ``None``, or a Deferred of one.
        """
        impls = ctx.plugins.balancer
        for fn in impls:
            r = fn(ctx, tried)
            if r is not None:
                if type(r) in _PLAIN_TYPES:
                    return r        # (the usual Peer)
                d = _awaitable(r)
                if d is None:
                    return r
                return d.addCallback(_resume_first_result, impls, ctx, tried,
                                     impls.index(fn) + 1)
        return None

    def header_filter(self, ctx, head):
        """Run every ``header_filter``; ``None`` or a Deferred."""
        impls = ctx.plugins.header_filter
        for fn in impls:
            r = fn(ctx, head)
            if r is not None and type(r) not in _PLAIN_TYPES:
                d = _awaitable(r)
                if d is not None:
                    return d.addCallback(_resume_run_all, impls, ctx, head,
                                         impls.index(fn) + 1)
        return None

    def body_filter(self, ctx, chunk, eof):
        """
        Pass ``chunk`` through every ``body_filter``.

        :return: the bytes to send, or a Deferred of them.
        """
        impls = ctx.plugins.body_filter
        for fn in impls:
            r = fn(ctx, chunk, eof)
            if r is not None:
                if type(r) is not bytes:
                    d = _awaitable(r)
                    if d is not None:
                        return d.addCallback(_resume_filter_chunk, impls, ctx, chunk,
                                             eof, impls.index(fn) + 1)
                    r = bytes(r)
                chunk = r
        return chunk

    def log(self, ctx):
        """Run every ``log`` implementation; errors are logged, never raised."""
        for fn in ctx.plugins.log:
            try:
                r = fn(ctx)
            except Exception:
                log.failure("log phase failed for {uri}", uri=ctx.request.uri)
                continue
            if r is not None and type(r) not in _PLAIN_TYPES:
                d = _awaitable(r)
                if d is not None:
                    d.addErrback(lambda f: log.failure(
                        "log phase failed for {uri}", f, uri=ctx.request.uri))


def _is_response(r):
    return isinstance(r, Response)


# The walks resumed after an awaitable (and the stream phases' walks).

def _until_response(impls, ctx, i, final=_is_response):
    """
    Call ``impls[i:]`` with ``ctx`` until one returns a value that ``final``
    accepts (a :class:`Response` here; a refusal for ``stream_access``);
    awaitables are awaited on the way.  ``None``, that value, or a Deferred.
    """
    for fn in impls[i:] if i else impls:
        r = fn(ctx)
        if r is None:
            continue
        if final(r):
            return r
        d = _awaitable(r)
        if d is not None:
            return d.addCallback(_resume_until_response, impls, ctx,
                                 impls.index(fn) + 1, final)
    return None


def _resume_until_response(r, impls, ctx, i, final):
    if r is not None and final(r):
        return r
    return _until_response(impls, ctx, i, final)


def _first_result(impls, ctx, tried, i):
    for fn in impls[i:] if i else impls:
        r = fn(ctx, tried)
        if r is None:
            continue
        d = _awaitable(r)
        if d is None:
            return r
        return d.addCallback(_resume_first_result, impls, ctx, tried, impls.index(fn) + 1)
    return None


def _resume_first_result(r, impls, ctx, tried, i):
    if r is not None:
        return r
    return _first_result(impls, ctx, tried, i)


def _run_all(impls, ctx, arg, i):
    for fn in impls[i:] if i else impls:
        r = fn(ctx, arg)
        if r is not None:
            d = _awaitable(r)
            if d is not None:
                return d.addCallback(_resume_run_all, impls, ctx, arg,
                                     impls.index(fn) + 1)
    return None


def _resume_run_all(_, impls, ctx, arg, i):
    return _run_all(impls, ctx, arg, i)


def _filter_chunk(impls, ctx, chunk, eof, i):
    for fn in impls[i:] if i else impls:
        r = fn(ctx, chunk, eof)
        if r is None:
            continue
        d = _awaitable(r)
        if d is None:
            chunk = bytes(r)
        else:
            return d.addCallback(_resume_filter_chunk, impls, ctx, chunk, eof,
                                 impls.index(fn) + 1)
    return chunk


def _resume_filter_chunk(r, impls, ctx, chunk, eof, i):
    return _filter_chunk(impls, ctx, chunk if r is None else bytes(r), eof, i)


__all__ = ["Phases", "PHASES"]
