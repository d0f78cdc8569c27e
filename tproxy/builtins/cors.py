# -*- test-case-name: tests.test_cors -*-
"""
The built-in ``cors`` plugin: Cross-Origin Resource Sharing answered by the
gateway.

- A **preflight** (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``) is answered by tproxy in ``rewrite``,
  before any ``access`` plugin (a preflight carries no credentials, so an
  auth plugin would refuse it): ``204`` with ``Access-Control-Allow-Origin``,
  ``-Methods``, ``-Headers``, ``-Credentials`` and ``-Max-Age``; ``403
  {"error": "CORS origin not allowed"}`` (or method / header) when it may not
  pass.  The upstream never sees a preflight.
- An **actual request** from an allowed ``Origin`` gets
  ``Access-Control-Allow-Origin`` (``*``, or the origin itself when
  ``credentials`` is on or the list is not ``*``), ``-Credentials`` and
  ``-Expose-Headers`` in ``header_filter``; headers of those names the
  upstream sent are replaced.  ``Vary: Origin`` is added whenever the answer
  depends on the origin, so caches keep one response per origin.
- ``origins`` lists origins (compared case-insensitively), patterns
  ``"https://*.example.com"`` (any subdomain, at any depth, not
  ``example.com`` itself), or ``"*"``.
- A request without ``Origin`` costs one header lookup.
"""

import re

from tproxy import Response, hookimpl
from tproxy.config import ConfigError

__all__ = ["Plugin"]

_TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
#: what "*" of "https://*.example.com" may stand for: one or more DNS labels
_HOST_LABELS = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\Z").match
#: the response fields this plugin owns (lower-case bytes, as Headers.raw)
_CORS_FIELDS = frozenset([
    b"access-control-allow-origin", b"access-control-allow-credentials",
    b"access-control-expose-headers", b"access-control-allow-methods",
    b"access-control-allow-headers", b"access-control-max-age"])


class Plugin(object):
    """
    CORS (``rewrite`` for preflights, ``header_filter`` for responses).

    :param settings: see :attr:`settings_schema`.
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "origins": {"type": "array", "minItems": 1, "items": {"type": "string"},
                        "default": ["*"],
                        "description": "allowed origins ('https://app.example.com', "
                                       "'https://*.example.com' for the subdomains), "
                                       "or '*' for any"},
            "methods": {"type": "array", "items": {"type": "string", "pattern": _TOKEN},
                        "default": ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]},
            "headers": {"type": ["array", "null"],
                        "items": {"type": "string", "pattern": _TOKEN},
                        "default": None,
                        "description": "request headers allowed; null: any the "
                                       "preflight asks for"},
            "expose_headers": {"type": "array", "default": [],
                               "items": {"type": "string", "pattern": _TOKEN}},
            "credentials": {"type": "boolean", "default": False},
            "max_age": {"type": ["integer", "null"], "minimum": 0, "default": 600},
        },
    }

    def __init__(self, settings):
        origins = settings["origins"]
        self.any_origin = "*" in origins
        errors = []
        for i, origin in enumerate(origins):
            if origin != "*" and ("://" not in origin or origin.endswith("/")
                                  or any(c in origin for c in " ,\r\n")
                                  or origin.count("*") > (1 if "://*." in origin else 0)):
                errors.append(("origins[{}]".format(i), "{!r} is not an origin "
                               "('https://host[:port]', no path; "
                               "'https://*.example.com' for its subdomains) "
                               "or '*'".format(origin)))
        if errors:
            raise ConfigError(errors)
        exact = [o.lower() for o in origins if o != "*" and "://*." not in o]
        self.origins = frozenset(exact)
        #: ("https://", ".example.com") of each "https://*.example.com"
        self.wildcards = tuple((o.lower().split("*", 1)[0], o.lower().split("*", 1)[1])
                               for o in origins if "://*." in o)
        self.methods = frozenset(m.upper() for m in settings["methods"])
        self.methods_text = ", ".join(settings["methods"])
        headers = settings["headers"]
        self.headers = None if headers is None else frozenset(h.lower() for h in headers)
        self.headers_text = None if headers is None else ", ".join(headers)
        self.expose = ", ".join(settings["expose_headers"])
        self.expose_b = self.expose.encode("ascii")
        self.credentials = settings["credentials"]
        self.max_age = settings["max_age"]
        #: whether Access-Control-Allow-Origin depends on the origin
        self.varies = self.credentials or not self.any_origin

    def _allowed(self, origin):
        if self.any_origin:
            return True
        origin = origin.lower()
        if origin in self.origins:
            return True
        for scheme, suffix in self.wildcards:
            if origin.startswith(scheme) and origin.endswith(suffix):
                label = origin[len(scheme):-len(suffix)]
                if label and _HOST_LABELS(label):
                    return True
        return False

    def _allow_origin(self, origin):
        return origin if self.varies else "*"

    @hookimpl
    def rewrite(self, ctx):
        """Answer a preflight."""
        request = ctx.request
        if request.method != "OPTIONS":
            return None
        headers = request.headers
        origin = headers.get("Origin")
        method = headers.get("Access-Control-Request-Method")
        if origin is None or method is None:
            return None              # a plain OPTIONS: for the upstream
        ctx.vars["cors_preflight"] = True     # header_filter: leave it alone
        if not self._allowed(origin):
            return self._refuse("CORS origin not allowed", origin=origin)
        if method.strip().upper() not in self.methods:
            return self._refuse("CORS method not allowed", method=method)
        asked = headers.get("Access-Control-Request-Headers") or ""
        asked_list = [h.strip() for h in asked.split(",") if h.strip()]
        if self.headers is not None:
            bad = [h for h in asked_list if h.lower() not in self.headers]
            if bad:
                return self._refuse("CORS header not allowed", headers=bad)
            allow_headers = self.headers_text
        else:
            allow_headers = ", ".join(asked_list)
        response = Response(204)
        out = response.headers
        out.set("Access-Control-Allow-Origin", self._allow_origin(origin))
        if self.credentials:
            out.set("Access-Control-Allow-Credentials", "true")
        out.set("Access-Control-Allow-Methods", self.methods_text)
        if allow_headers:
            out.set("Access-Control-Allow-Headers", allow_headers)
        if self.max_age is not None:
            out.set("Access-Control-Max-Age", str(self.max_age))
        vary = ["Origin"] if self.varies else []
        if self.headers is None:
            vary.append("Access-Control-Request-Headers")
        if vary:
            out.set("Vary", ", ".join(vary))
        return response

    def _refuse(self, message, **fields):
        response = Response.error(403, message, **fields)
        if self.varies:
            response.headers.set("Vary", "Origin")
        return response

    @hookimpl
    def header_filter(self, ctx, response):
        """Add the CORS headers to the response of an allowed origin."""
        if ctx.vars.get("cors_preflight"):
            return
        origin = None
        for n, v in ctx.request.headers.raw:
            if n.lower() == b"origin":
                origin = v
                break
        allowed = origin is not None and self._allowed(origin.decode("latin-1"))
        if not allowed and not self.varies:
            return
        # one pass over the response's fields: the upstream's CORS fields go
        # (when we set ours), its Vary fields are kept aside to be merged
        out = response.headers
        kept, vary = [], []
        for pair in out.raw:
            name = pair[0].lower()
            if name == b"vary":
                vary.append(pair[1])
            elif not (allowed and name in _CORS_FIELDS):
                kept.append(pair)
        if self.varies:
            kept.append((b"Vary", _vary_with_origin(vary)))
        elif vary:
            kept.append((b"Vary", b", ".join(vary)))
        if allowed:
            kept.append((b"Access-Control-Allow-Origin",
                         origin if self.varies else b"*"))
            if self.credentials:
                kept.append((b"Access-Control-Allow-Credentials", b"true"))
            if self.expose:
                kept.append((b"Access-Control-Expose-Headers", self.expose_b))
        out.raw = kept


def _vary_with_origin(values):
    """The ``Vary`` value of the fields ``values`` (bytes) with ``Origin``
    added, unless it is there (or ``*``)."""
    if not values:
        return b"Origin"
    joined = b", ".join(values)
    tokens = [t.strip().lower() for t in joined.split(b",")]
    if b"*" in tokens or b"origin" in tokens:
        return joined
    return joined + b", Origin"
