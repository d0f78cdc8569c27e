"""
Helpers shared by the authentication built-ins (``key_auth``, ``jwt_auth``):
reading a credential from the query and removing it from what goes upstream
(and from what the access log writes).  Private: plugins outside tproxy
should not import it.
"""

from urllib.parse import unquote

from tproxy import Response

#: the consumer's name sent upstream (as Kong)
CONSUMER_HEADER = "X-Consumer-Username"


def query_value(query, names):
    """
    ``(name, value)`` of the first query argument called one of ``names``
    (percent-decoded), or ``None``.
    """
    if not query:
        return None
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        name = unquote(name.replace("+", " "))
        if name in names:
            return name, unquote(value.replace("+", " "))
    return None


def strip_query(target, names):
    """``target`` (a path with an optional query) without the arguments called
    one of ``names``; the other arguments are kept byte for byte."""
    path, q, query = target.partition("?")
    if not q:
        return target
    kept = [part for part in query.split("&")
            if unquote(part.partition("=")[0].replace("+", " ")) not in names]
    return path + "?" + "&".join(kept) if kept else path


def remove_from_query(ctx, names):
    """Remove the arguments ``names`` from the upstream target and from the
    request's query (so that the access log does not write the credential)."""
    ctx.upstream_path = strip_query(ctx.upstream_path, names)
    request = ctx.request
    request.query = strip_query("?" + request.query, names)[1:]


def unauthorized(challenge, message, **fields):
    """``401`` with ``WWW-Authenticate: challenge`` and ``{"error": message}``."""
    response = Response.error(401, message, **fields)
    response.headers.set("WWW-Authenticate", challenge)
    return response
