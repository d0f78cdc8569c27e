"""
tproxy: a programmable reverse proxy and API gateway on Twisted, whose request
phases are pluggy hooks.

Plugins write::

    from tproxy import hookimpl, Response

    @hookimpl
    def access(ctx):
        if ctx.request.headers.get("x-api-key") != "secret":
            return Response.error(401, "missing or bad API key")
"""

from pluggy import HookimplMarker

from tproxy.context import Request, RequestContext, Response, ResponseHead
from tproxy.stream.context import StreamContext

hookimpl = HookimplMarker("tproxy")

__version__ = "0.1.0"

__all__ = ["hookimpl", "Request", "RequestContext", "Response", "ResponseHead",
           "StreamContext", "__version__"]
