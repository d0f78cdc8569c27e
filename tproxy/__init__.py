"""
tproxy: a programmable reverse proxy and API gateway on Twisted, whose request
phases are pluggy hooks.

Plugins write::

    from tproxy import hookimpl, Response

    @hookimpl
    def access(ctx):
        if ctx.request.headers.get("x-api-key") != "secret":
            return Response.error(401, "missing or bad API key")

What a plugin handles is importable from here: :data:`hookimpl`, the
contexts (:class:`RequestContext`, :class:`Request`, :class:`StreamContext`),
what a phase may return or change (:class:`Response`, :class:`ResponseHead`,
:class:`Headers`, the :class:`Peer` a ``balancer`` returns), the
:class:`Gateway` handed to ``init_worker`` and the :class:`ConfigError` a
plugin's settings check raises.  Importing :mod:`tproxy` does not import (nor
install) a reactor.  Plugin tests use :mod:`tproxy.testing`.

The distribution is named ``tproxy-gateway``; the import package, the
``twistd tproxy`` subcommand and the entry-point group are ``tproxy``.
"""

from pluggy import HookimplMarker

from tproxy.config import ConfigError
from tproxy.context import Request, RequestContext, Response, ResponseHead
from tproxy.gateway import Gateway
from tproxy.http.headers import Headers
from tproxy.registry import Peer
from tproxy.stream.context import StreamContext

hookimpl = HookimplMarker("tproxy")

#: The version of tproxy; the distribution's metadata reads it from here.
__version__ = "0.1.0"

__all__ = ["hookimpl", "ConfigError", "Gateway", "Headers", "Peer", "Request",
           "RequestContext", "Response", "ResponseHead", "StreamContext",
           "__version__"]
