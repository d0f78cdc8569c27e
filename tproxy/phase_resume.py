# -*- test-case-name: tests.test_phases -*-
"""
A hook's result that may be awaitable (:func:`is_deferred`,
:func:`_awaitable`), and the walks over a phase's implementations resumed
after one (the straight-line and loop walks of :mod:`tproxy.phase_walks`
hand the rest of their list to these), which are also the stream phases'
walks; and the errors of an implementation that returns what its phase
does not take.
"""

from types import CoroutineType

from twisted.internet.defer import Deferred

from tproxy.context import Response
from tproxy.registry import Peer

__all__ = ["PLAIN_TYPES", "is_deferred"]


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


def _is_response(r):
    return isinstance(r, Response)


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
            _note_awaited(ctx, fn)
            return d.addCallback(_resume_until_response, impls, ctx,
                                 impls.index(fn) + 1, final)
        raise _not_a_response(fn, r, final)
    return None


def _resume_until_response(r, impls, ctx, i, final):
    if r is not None:
        if final(r):
            return r
        raise _not_a_response(impls[i - 1], r, final)
    return _until_response(impls, ctx, i, final)


def _not_a_response(fn, r, final=_is_response):
    """The error of a ``rewrite`` or ``access`` implementation ``fn`` that
    returned ``r``, neither ``None`` nor a :class:`Response` (nor an
    awaitable): ``return 403`` or ``return (403, {}, b"no")`` would
    otherwise let the request through.  It fails the request as a plugin
    exception does (``500``, the error logged).  Likewise for a
    ``stream_access`` implementation (``final`` not :func:`_is_response`)
    returning neither ``None``, ``False`` nor bytes (``"-ERR denied"``, a
    ``str``): the connection is closed as for a plugin exception."""
    name = _impl_name(fn)
    if final is _is_response:
        expected = "a rewrite or access implementation returns None, a tproxy.Response"
    else:
        expected = "a stream_access implementation returns None, False, bytes to send"
    return TypeError("{} returned {!r}: {}, or an awaitable of one".format(name, r, expected))


def _first_result(impls, ctx, tried, i):
    for fn in impls[i:] if i else impls:
        r = fn(ctx, tried)
        if r is None:
            continue
        d = _awaitable(r)
        if d is None:
            return _chosen(fn, r)
        _note_awaited(ctx, fn)
        return d.addCallback(_resume_first_result, impls, ctx, tried, impls.index(fn) + 1)
    return None


def _resume_first_result(r, impls, ctx, tried, i):
    if r is not None:
        return _chosen(impls[i - 1], r)
    return _first_result(impls, ctx, tried, i)


def _chosen(fn, r):
    """``r``, what the ``balancer`` implementation ``fn`` chose, when it is a
    :class:`Peer` (or a subclass) or a :class:`Response`.

    :raises TypeError: naming ``fn``, for anything else (``"10.0.0.5:80"``,
        a tuple): the request fails as on a plugin exception (``500``)
        instead of an ``AttributeError`` deep in the proxy."""
    if isinstance(r, (Peer, Response)):
        return r
    name = _impl_name(fn)
    raise TypeError("{} returned {!r}: a balancer implementation returns a tproxy.Peer "
                    "of the registry, None, a tproxy.Response, or an awaitable of "
                    "one".format(name, r))


def _run_all(impls, ctx, arg, i):
    for fn in impls[i:] if i else impls:
        r = fn(ctx, arg)
        if r is not None:
            d = _awaitable(r)
            if d is not None:
                _note_awaited(ctx, fn)
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
            _note_awaited(ctx, fn)
            return d.addCallback(_resume_filter_chunk, impls, ctx, chunk, eof,
                                 impls.index(fn) + 1)
    return chunk


def _resume_filter_chunk(r, impls, ctx, chunk, eof, i):
    return _filter_chunk(impls, ctx, chunk if r is None else bytes(r), eof, i)


def _note_awaited(ctx, fn):
    """Note on ``ctx`` the implementation ``fn`` it waits for (one that
    does not answer in time is named by it: :mod:`tproxy.http.filters`,
    :mod:`tproxy.stream.session`)."""
    try:
        ctx._awaited = fn
    except AttributeError:      # (a context of a plugin's own tests)
        pass


def _impl_name(fn):
    """``module.qualname`` of a hook implementation, for an error."""
    return "{}.{}".format(getattr(fn, "__module__", "?"),
                          getattr(fn, "__qualname__", getattr(fn, "__name__", fn)))
