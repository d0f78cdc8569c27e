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


def _awaitable(result):
    """``result`` as a Deferred if it is awaitable, else ``None``."""
    if isinstance(result, Deferred):
        return result
    if isinstance(result, CoroutineType):
        return Deferred.fromCoroutine(result)
    return None


class Phases(object):
    """
    The implementations of every phase, resolved from a plugin manager.

    :ivar rewrite_access: the ``rewrite`` then the ``access`` implementations.
    :ivar has_header_filter: / ``has_body_filter``: whether anyone listens.
    """

    def __init__(self, plugin_manager):
        self.plugin_manager = plugin_manager
        self.refresh()

    def refresh(self):
        """Resolve the implementation lists again (after plugins changed)."""
        hooks = self.plugin_manager.hook
        self.impls = {}
        for name, argnames in PHASES:
            caller = getattr(hooks, name, None)
            impls = reversed(caller.get_hookimpls()) if caller is not None else ()
            # pluggy calls the last registered first; the loader registers in
            # reverse config order, so this is config order.
            self.impls[name] = [(_adapt(i, argnames), i.plugin_name) for i in impls]
        fns = lambda name: [f for f, _ in self.impls[name]]
        self._rewrite_access = fns("rewrite") + fns("access")
        self._balancer = fns("balancer")
        self._header_filter = fns("header_filter")
        self._body_filter = fns("body_filter")
        self._log = fns("log")
        self.has_header_filter = bool(self._header_filter)
        self.has_body_filter = bool(self._body_filter)

    def names(self, phase):
        """The plugin names implementing ``phase``, in execution order."""
        return [n for _, n in self.impls[phase]]

    # -- startup ------------------------------------------------------------

    def init_worker(self, gateway):
        """Run every ``init_worker`` in order, each awaited; a Deferred."""
        impls = [f for f, _ in self.impls["init_worker"]]

        def step(_, i):
            while i < len(impls):
                d = _awaitable(impls[i](gateway))
                i += 1
                if d is not None:
                    return d.addCallback(step, i)
            return None

        return maybeDeferred(step, None, 0)

    # -- per request ----------------------------------------------------------

    def rewrite_access(self, ctx):
        """
        Run ``rewrite`` then ``access`` until one returns a :class:`Response`.

        :return: ``None`` (proceed), a :class:`Response`, or a Deferred of
            either.  Exceptions propagate (synchronously or as a failure).
        """
        return _until_response(self._rewrite_access, ctx, 0)

    def balancer(self, ctx, tried):
        """
        Ask the ``balancer`` implementations for a peer; the first non-None
        result wins.

        :return: a Peer, a :class:`Response`, ``None``, or a Deferred of one.
        """
        return _first_result(self._balancer, ctx, tried, 0)

    def header_filter(self, ctx, head):
        """Run every ``header_filter``; ``None`` or a Deferred."""
        return _run_all(self._header_filter, (ctx, head), 0)

    def body_filter(self, ctx, chunk, eof):
        """
        Pass ``chunk`` through every ``body_filter``.

        :return: the bytes to send, or a Deferred of them.
        """
        return _filter_chunk(self._body_filter, ctx, chunk, eof, 0)

    def log(self, ctx):
        """Run every ``log`` implementation; errors are logged, never raised."""
        for fn in self._log:
            try:
                d = _awaitable(fn(ctx))
            except Exception:
                log.failure("log phase failed for {uri}", uri=ctx.request.uri)
                continue
            if d is not None:
                d.addErrback(lambda f: log.failure(
                    "log phase failed for {uri}", f, uri=ctx.request.uri))


def _until_response(impls, ctx, i):
    n = len(impls)
    while i < n:
        r = impls[i](ctx)
        i += 1
        if r is None:
            continue
        if isinstance(r, Response):
            return r
        d = _awaitable(r)
        if d is not None:
            return d.addCallback(_resume_until_response, impls, ctx, i)
    return None


def _resume_until_response(r, impls, ctx, i):
    if isinstance(r, Response):
        return r
    return _until_response(impls, ctx, i)


def _first_result(impls, ctx, tried, i):
    n = len(impls)
    while i < n:
        r = impls[i](ctx, tried)
        i += 1
        if r is None:
            continue
        d = _awaitable(r)
        if d is None:
            return r
        return d.addCallback(_resume_first_result, impls, ctx, tried, i)
    return None


def _resume_first_result(r, impls, ctx, tried, i):
    if r is not None:
        return r
    return _first_result(impls, ctx, tried, i)


def _run_all(impls, args, i):
    n = len(impls)
    while i < n:
        r = impls[i](*args)
        i += 1
        if r is not None:
            d = _awaitable(r)
            if d is not None:
                return d.addCallback(lambda _: _run_all(impls, args, i))
    return None


def _filter_chunk(impls, ctx, chunk, eof, i):
    n = len(impls)
    while i < n:
        r = impls[i](ctx, chunk, eof)
        i += 1
        if r is None:
            continue
        d = _awaitable(r)
        if d is None:
            chunk = bytes(r)
        else:
            return d.addCallback(_resume_filter_chunk, impls, ctx, chunk, eof, i)
    return chunk


def _resume_filter_chunk(r, impls, ctx, chunk, eof, i):
    return _filter_chunk(impls, ctx, chunk if r is None else bytes(r), eof, i)


__all__ = ["Phases", "PHASES"]
