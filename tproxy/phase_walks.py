# -*- test-case-name: tests.test_phases -*-
"""
The walks over one phase's implementations (:mod:`tproxy.phases` makes them
once per phase and route): per implementation, one call and one ``r is
None`` test; a result that is not ``None`` is looked at further; an
awaitable hands the rest of the walk to the resume functions of
:mod:`tproxy.phase_resume`.

Each walk is a function made from the list (:func:`_walker`).  On CPython it
is straight-line code, one block per implementation (a loop's step costs ~65
instructions beside the ~440 of a call there); on PyPy, whose JIT inlines
the loop, a loop (straight-line code measured slower there), but for a walk
of one implementation.  Both do the same, step for step.
"""

import sys

from twisted.logger import Logger

from tproxy.context import Response
from tproxy.phase_resume import (
    _PLAIN_TYPES, _awaitable, _chosen, _is_response, _not_a_response, _note_awaited,
    _resume_filter_chunk, _resume_first_result, _resume_run_all, _resume_until_response,
    _until_response)
from tproxy.registry import Peer

#: the phase driver's namespace (``tproxy.phases``): a failed ``log`` phase is
#: reported under it, with the driver's other lines, wherever the walk runs
log = Logger(namespace="tproxy.phases")


#: Whether the walks are straight-line code (CPython) or loops (PyPy and the
#: others); :class:`Phases` takes ``unroll`` to choose (the tests run both).
#: A walk of one implementation is straight-line either way: on PyPy a loop
#: in a walk is compiled apart and entered with a frame of its own per call.
UNROLL = sys.implementation.name == "cpython"


# -- the walks ---------------------------------------------------------------
#
# Per implementation: one call and one ``r is None`` test (all that a hook
# returning nothing costs).  The loops below define each walk; the
# straight-line code (_BLOCKS) does the same with the position of each
# implementation written in.

def _loop_until_response(impls):
    def walk(ctx):
        for fn in impls:
            r = fn(ctx)
            if r is not None:
                if isinstance(r, Response):
                    return r
                d = _awaitable(r)
                if d is not None:
                    _note_awaited(ctx, fn)
                    return d.addCallback(_resume_until_response, impls, ctx,
                                         impls.index(fn) + 1, _is_response)
                raise _not_a_response(fn, r)
        return None
    return walk


def _loop_first_result(impls):
    def walk(ctx, tried):
        for fn in impls:
            r = fn(ctx, tried)
            if r is not None:
                if type(r) is Peer:
                    return r        # (the usual Peer)
                d = _awaitable(r)
                if d is None:
                    return _chosen(fn, r)
                _note_awaited(ctx, fn)
                return d.addCallback(_resume_first_result, impls, ctx, tried,
                                     impls.index(fn) + 1)
        return None
    return walk


def _loop_run_all(impls):
    def walk(ctx, head):
        for fn in impls:
            r = fn(ctx, head)
            if r is not None and type(r) not in _PLAIN_TYPES:
                d = _awaitable(r)
                if d is not None:
                    _note_awaited(ctx, fn)
                    return d.addCallback(_resume_run_all, impls, ctx, head,
                                         impls.index(fn) + 1)
        return None
    return walk


def _loop_filter(impls):
    def walk(ctx, chunk, eof):
        for fn in impls:
            r = fn(ctx, chunk, eof)
            if r is not None:
                if type(r) is not bytes:
                    d = _awaitable(r)
                    if d is not None:
                        _note_awaited(ctx, fn)
                        return d.addCallback(_resume_filter_chunk, impls, ctx, chunk,
                                             eof, impls.index(fn) + 1)
                    r = bytes(r)
                chunk = r
        return chunk
    return walk


def _loop_log(impls):
    def walk(ctx):
        for fn in impls:
            try:
                r = fn(ctx)
            except Exception:
                _log_failed(ctx)
                continue
            if r is not None and type(r) not in _PLAIN_TYPES:
                _log_awaited(r, ctx)
    return walk


def _log_failed(ctx):
    log.failure("log phase failed for {uri}", uri=ctx.request.uri)


def _log_awaited(r, ctx):
    d = _awaitable(r)
    if d is not None:
        d.addErrback(lambda f: log.failure("log phase failed for {uri}", f,
                                           uri=ctx.request.uri))


_LOOPS = {"until_response": _loop_until_response, "first_result": _loop_first_result,
          "run_all": _loop_run_all, "filter": _loop_filter, "log": _loop_log}

#: The straight-line walks: (arguments, one implementation's block, the
#: end); ``{f}`` is the implementation, ``{i}`` the position after it,
#: ``{then}`` what follows the resumed walk (``rewrite_access``).
_BLOCKS = {
    "until_response": ("ctx", """\
r = {f}(ctx)
if r is not None:
    if isinstance(r, Response):
        return r
    d = _awaitable(r)
    if d is not None:
        _note_awaited(ctx, {f})
        return d.addCallback(_resume_until_response, impls, ctx, {i}, _is_response){then}
    raise _not_a_response({f}, r)
""", "return None"),
    "first_result": ("ctx, tried", """\
r = {f}(ctx, tried)
if r is not None:
    if type(r) is Peer:
        return r
    d = _awaitable(r)
    if d is None:
        return _chosen({f}, r)
    _note_awaited(ctx, {f})
    return d.addCallback(_resume_first_result, impls, ctx, tried, {i})
""", "return None"),
    "run_all": ("ctx, head", """\
r = {f}(ctx, head)
if r is not None and type(r) not in _PLAIN_TYPES:
    d = _awaitable(r)
    if d is not None:
        _note_awaited(ctx, {f})
        return d.addCallback(_resume_run_all, impls, ctx, head, {i})
""", "return None"),
    "filter": ("ctx, chunk, eof", """\
r = {f}(ctx, chunk, eof)
if r is not None:
    if type(r) is not bytes:
        d = _awaitable(r)
        if d is not None:
            _note_awaited(ctx, {f})
            return d.addCallback(_resume_filter_chunk, impls, ctx, chunk, eof, {i})
        r = bytes(r)
    chunk = r
""", "return chunk"),
    "log": ("ctx", """\
try:
    r = {f}(ctx)
except Exception:
    _log_failed(ctx)
else:
    if r is not None and type(r) not in _PLAIN_TYPES:
        _log_awaited(r, ctx)
""", "return None"),
}


def _straight(kind, count, names=(), then="", end=None):
    """The source of ``def make(impls, *names, f0, f1, ...)`` returning
    ``kind``'s walk over ``count`` implementations as straight-line code."""
    args, block, default_end = _BLOCKS[kind]
    fs = tuple("f%d" % i for i in range(count))
    lines = ["def make(%s):" % ", ".join(("impls",) + tuple(names) + fs),
             "    def walk(%s):" % args]
    for i, f in enumerate(fs):
        lines += ["        " + line
                  for line in block.format(f=f, i=i + 1, then=then).splitlines()]
    lines += ["        " + line for line in (end or default_end).splitlines()]
    lines.append("    return walk")
    return "\n".join(lines) + "\n"


def _compile(source, kind, impls, *names):
    """Run ``source`` (from :func:`_straight`) and make its walk.

    The ``make`` function of each distinct source is compiled once per
    process (:data:`_MAKERS`): the walks differ by their implementations,
    which ``make`` takes as arguments, and a gateway built again (a reload,
    a test's harness) mostly asks for the sources made before.
    """
    make = _MAKERS.get((kind, source))
    if make is None:
        make = _make_maker(source, kind)
        if len(_MAKERS) < 1024:
            _MAKERS[kind, source] = make
    return make(impls, *(names + tuple(impls)))


#: ``{(kind, source): its make function}`` (see :func:`_compile`)
_MAKERS = {}


def _make_maker(source, kind):
    """Compile ``source`` and return its ``make`` function."""
    namespace = {"Response": Response, "Peer": Peer, "_chosen": _chosen,
                 "_awaitable": _awaitable, "_note_awaited": _note_awaited,
                 "_PLAIN_TYPES": _PLAIN_TYPES, "_is_response": _is_response,
                 "_log_failed": _log_failed, "_log_awaited": _log_awaited,
                 "_not_a_response": _not_a_response,
                 "_resume_until_response": _resume_until_response,
                 "_resume_first_result": _resume_first_result,
                 "_resume_run_all": _resume_run_all,
                 "_resume_filter_chunk": _resume_filter_chunk,
                 "_resume_after_rewrite": _resume_after_rewrite}
    exec(compile(source, "<tproxy.phases: %s walk>" % kind, "exec"), namespace)
    return namespace["make"]


def direct(function):
    """
    Mark a hook implementation (``tproxy.direct``, under ``@hookimpl``) as
    one that returns what its phase takes, never an awaitable: ``None`` or a
    :class:`Response` (``rewrite``, ``access``), or also a :class:`Peer`
    (``balancer``).  When it is the only implementation of an ``access`` or
    ``balancer`` walk, or the only ``rewrite`` of a configuration without
    route-scoped plugins nor ``access`` implementations, the walk *is* the
    implementation: the exchange calls it with no frame between, and checks
    its result itself (anything else, an awaitable too, fails the request as
    a plugin exception does: a 500, the TypeError logged).  Elsewhere the
    mark changes nothing.
    """
    function.tproxy_direct = True
    return function


def unchecked_source(walk, ctx):
    """
    The implementation whose result ``walk``, :attr:`Phases.rewrite_access`,
    returned unchecked, for the error naming it: ``walk`` itself when it is a
    :func:`direct` ``rewrite``, else the route's :func:`direct` ``access``
    (``ctx.plugins``), else ``walk``.
    """
    if not getattr(walk, "tproxy_direct", False):
        after = getattr(ctx.plugins, "run_after_rewrite", None)
        if getattr(after, "tproxy_direct", False):
            return after
    return walk


def _direct(kind, impls):
    """The one implementation of ``impls`` if it may be its walk."""
    if (kind in ("until_response", "first_result") and len(impls) == 1
            and getattr(impls[0], "tproxy_direct", False)):
        return impls[0]
    return None


def _walker(kind, impls, unroll):
    """The walk of ``kind`` over ``impls`` (see :class:`PhaseSet`); one
    implementation is called directly, without a loop, on PyPy too (and
    without a walk at all when it is :func:`direct`)."""
    fn = _direct(kind, impls)
    if fn is not None:
        return fn
    if not unroll and len(impls) != 1:
        return _LOOPS[kind](impls)
    return _compile(_straight(kind, len(impls)), kind, impls)


_AFTER_REWRITE = """\
if by_route:
    ctx.plugins = by_route.get(ctx.route, default)
plugins = ctx.plugins
if plugins.after_rewrite:
    return plugins.run_after_rewrite(ctx)
return None"""


def _rewrite_access(rewrite, by_route, default, unroll):
    """:attr:`Phases.rewrite_access`: the every-route ``rewrite``
    implementations ``rewrite``, then the walk of the route's
    :class:`PhaseSet` (``by_route``, else ``default``)."""
    after = default.after_rewrite
    if not by_route and _direct("until_response", after) is None:
        # one set of phases, ctx.plugins already: the rewrite and access
        # implementations are one walk (one frame entered from the exchange,
        # not two; a tproxy.direct rewrite alone is the walk, a direct
        # access alone stays the access walk)
        return _walker("until_response", rewrite + after, unroll)
    if unroll or len(rewrite) == 1:
        return _compile(_straight(
            "until_response", len(rewrite), ("by_route", "default"),
            ".addCallback(_resume_after_rewrite, ctx, by_route, default)",
            _AFTER_REWRITE), "rewrite", rewrite, by_route, default)
    rewrite_walk = _loop_until_response(rewrite)

    def rewrite_access(ctx):
        r = rewrite_walk(ctx)
        if r is not None:
            if isinstance(r, Response):
                return r
            return r.addCallback(_resume_after_rewrite, ctx, by_route, default)
        if by_route:
            ctx.plugins = by_route.get(ctx.route, default)
        plugins = ctx.plugins
        if plugins.after_rewrite:
            return plugins.run_after_rewrite(ctx)
        return None
    return rewrite_access


def _resume_after_rewrite(r, ctx, by_route, default):
    if r is not None:
        return r      # (a Response)
    if by_route:
        ctx.plugins = by_route.get(ctx.route, default)
    return _until_response(ctx.plugins.after_rewrite, ctx, 0)
