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


def query_values(query, names):
    """The values (percent-decoded) of the query arguments called one of
    ``names``, in order."""
    values = []
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if unquote(name.replace("+", " ")) in names:
            values.append(unquote(value.replace("+", " ")))
    return values


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


def invalid_request(challenge, reason):
    """``400`` with ``WWW-Authenticate: challenge, error="invalid_request",
    error_description="reason"`` (RFC 6750 3.1) and ``{"error": "invalid
    request", "reason": reason}``."""
    response = Response.error(400, "invalid request", reason=reason)
    response.headers.set("WWW-Authenticate", '{}, error="invalid_request", '
                         'error_description="{}"'.format(challenge, reason))
    return response
