"""
tproxy: a programmable reverse proxy and API gateway on Twisted, whose request
phases are pluggy hooks.

Plugins write::

    from tproxy import hookimpl, Response

    @hookimpl
    def access(ctx):
        if ctx.request.headers.get("x-api-key") != "secret":
            return Response.error(401, "missing or bad API key")

What a plugin handles is importable from here: :data:`hookimpl` (and
:func:`direct`, for an implementation whose results need no checking), the
contexts (:class:`RequestContext`, :class:`Request`, :class:`StreamContext`),
what a phase may return or change (:class:`Response`, :class:`ResponseHead`,
:class:`Headers`, the :class:`Peer` a ``balancer`` returns), the
:class:`Gateway` handed to ``init_worker``, the :class:`ConfigError` a
plugin's settings check raises, and :func:`watch_field` (a rare request
field noted by the reader: ``ctx.request.watched``).  Importing
:mod:`tproxy` does not import (nor install) a reactor.  Plugin tests use
:mod:`tproxy.testing`.

The distribution is named ``tproxy-gateway``; the import package, the
``twistd tproxy`` subcommand and the entry-point group are ``tproxy``.
"""

import importlib

from tproxy import compiled as _compiled

# the compiled hot modules, or their pure-Python source (tproxy.compiled)
_compiled.choose()

#: The version of tproxy; the distribution's metadata reads it from here.
__version__ = "0.1.0"

#: where each re-exported name lives: imported on first use (PEP 562), so
#: that what needs little starts fast (``tproxy-ctl`` uses the standard
#: library only; ``twistd tproxy --help`` needs no gateway)
_LAZY = {
    "hookimpl": "pluggy",
    "direct": "tproxy.phase_walks",
    "ConfigError": "tproxy.config",
    "Gateway": "tproxy.gateway",
    "Headers": "tproxy.http.headers",
    "Peer": "tproxy.registry",
    "Request": "tproxy.context",
    "RequestContext": "tproxy.context",
    "Response": "tproxy.context",
    "ResponseHead": "tproxy.context",
    "StreamContext": "tproxy.stream.context",
    "watch_field": "tproxy.http.wire",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'tproxy' has no attribute {!r}".format(name))
    if name == "hookimpl":
        value = importlib.import_module(module).HookimplMarker("tproxy")
    else:
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["hookimpl", "direct", "ConfigError", "Gateway", "Headers", "Peer", "Request",
           "RequestContext", "Response", "ResponseHead", "StreamContext",
           "watch_field", "__version__"]
