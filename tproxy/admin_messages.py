# -*- test-case-name: tests.test_admin,tests.test_admin_security -*-
"""
The admin API's requests and answers (:mod:`tproxy.admin` routes them):
:class:`AdminRequest` (the query, form and JSON body decoded on demand)
and :class:`AdminResponse` (a JSON document, or a body of its own), as a
handler sees them, and the ``404`` of an unknown path (:func:`not_found`:
with a hint naming the built-in plugin that serves it).  The two classes are
public as ``tproxy.admin.AdminRequest`` and ``tproxy.admin.AdminResponse``.
"""

import json
from urllib.parse import parse_qsl

from twisted.logger import Logger

__all__ = ["AdminRequest", "AdminResponse", "as_response", "audit_log", "not_found"]

#: The audit log: one event per change made through the admin API, in the
#: namespace ``tproxy.audit`` (fields ``action``, ``who``, ``client``, and
#: those of the change).
audit_log = Logger(namespace="tproxy.audit")

_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"


class AdminRequest(object):
    """
    What an admin handler receives.

    :ivar method: ``"GET"``, ...
    :ivar path: the request path (``"/upstream/add"``), without the query.
    :ivar args: ``{name: str}``: the query arguments (and, for a body of
        type ``application/x-www-form-urlencoded``, the form fields); a name
        given twice (``?port=9001&port=9002``, or in the query and the form)
        is a ``400`` naming it, as a key given twice in a JSON body.
    :ivar json: the decoded body when its type is ``application/json``
        (any JSON value), else ``None``.
    :ivar headers: ``{lower-case name: str}`` (repeated fields joined with
        ``", "``).
    :ivar body: the request body (``bytes``; at most :data:`MAX_BODY_SIZE`).
    :ivar client_addr: the TCP peer's address (``str``), or ``None`` when the
        transport has none (a UNIX socket).
    :ivar local_addr: the address the connection came in on (``str`` or
        ``None``).
    :ivar params: ``{name: str}``: the path parameters of the route that
        matched (``{}`` for a route without).
    :ivar authenticated: ``True`` when the request carried the configured
        token (``False`` when the admin API has none).
    """

    __slots__ = ("method", "path", "args", "json", "headers", "body",
                 "client_addr", "local_addr", "params", "authenticated", "_query")

    def __init__(self, method, path, args=None, headers=None, body=b"",
                 client_addr=None, local_addr=None):
        self.method = method.upper()
        self.path = path
        self.args = dict(args or {})
        self.json = None
        self.headers = dict((k.lower(), v) for k, v in (headers or {}).items())
        self.body = body
        self.client_addr = client_addr
        self.local_addr = local_addr
        self.params = {}
        self.authenticated = False
        self._query = None

    @classmethod
    def from_uri(cls, method, uri, headers=None, body=b"", client_addr=None,
                 local_addr=None):
        """
        Build a request from a request target (``"/upstream/add?port=80"``).
        The query string and the body are decoded by :meth:`decode` (which
        :meth:`AdminRoutes.dispatch` calls once the token is checked).
        """
        path, _, query = uri.partition("?")
        request = cls(method, path, None, headers, body, client_addr, local_addr)
        request._query = query
        return request

    def decode(self):
        """
        Decode the query string and the body into :attr:`args` and
        :attr:`json` (once; a request built with ``args`` keeps them).

        :raises ValueError: with a message for the user, if the query or a
            form body is not valid UTF-8 after percent-decoding or gives a
            parameter twice, or a JSON body is not JSON.
        """
        query, self._query = self._query, None
        if query is not None:
            try:
                self.args = _parse_args(query, "query")
            except UnicodeDecodeError:
                raise ValueError("query string is not valid UTF-8")
        if not self.body:
            return
        ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == _FORM:
            if self.body.lstrip()[:1] == b"{":
                # a JSON object sent with curl -d's default type: no form
                # (no form field's name starts with "{"); a handler reading
                # the body itself (PUT /routes/NAME) reads it as JSON
                return
            try:
                form = _parse_args(self.body.decode("latin-1"), "form body")
            except UnicodeDecodeError:
                raise ValueError("form body is not valid UTF-8")
            for name, value in form.items():
                if name in self.args:
                    raise ValueError("parameter {} given twice (in the query and "
                                     "in the form body)".format(json.dumps(name)))
                self.args[name] = value
        elif ctype == _JSON or ctype.endswith("+json"):
            from tproxy.config import json_error, loads_strict
            try:
                self.json = loads_strict(self.body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ValueError("body is not valid JSON ({})".format(json_error(e)))

    def audit(self, action, **fields):
        """
        Log a change this request made, in the audit log (namespace
        ``tproxy.audit``): ``action`` (``"upstream.add"``), who made it
        (``who``: ``"token"`` or ``"anonymous"``), from where (``client``,
        ``user_agent``) and ``fields`` (what changed).
        """
        audit_log.info(
            "admin change {action} by {who} from {client}: {change}",
            action=action, who="token" if self.authenticated else "anonymous",
            client=self.client_addr, method=self.method, path=self.path,
            user_agent=self.headers.get("user-agent", "")[:200],
            change=", ".join("{}={}".format(k, fields[k]) for k in sorted(fields)),
            audit=True, **fields)

    def __repr__(self):
        return "<AdminRequest %s %s>" % (self.method, self.path)


#: the longest parameter name accepted (every name the API reads is short;
#: a longer one, such as a JSON document sent as a form, is refused without
#: being echoed back in an "unknown parameter" error)
MAX_NAME = 100


def _parse_args(query, where):
    """``{name: value}`` of a query string (blank values kept).

    :raises ValueError: naming a parameter given twice (in the ``where``:
        ``"query"``, ``"form body"``): which one was meant cannot be told;
        for a name longer than :data:`MAX_NAME` characters."""
    args = {}
    for name, value in parse_qsl(query, keep_blank_values=True,
                                 encoding="utf-8", errors="strict"):
        if len(name) > MAX_NAME:
            raise ValueError("a parameter name of {} characters in the {} (at most {}: "
                             "is a JSON body sent without Content-Type: "
                             "application/json?)".format(len(name), where, MAX_NAME))
        if name in args:
            raise ValueError("parameter {} given twice in the {}".format(
                json.dumps(name), where))
        args[name] = value
    return args


class AdminResponse(object):
    """
    The answer to one admin request.

    :ivar status: the status code.
    :ivar obj: the JSON-able document.
    :ivar headers: extra ``(name, value)`` pairs (``Allow``,
        ``WWW-Authenticate``); ``Content-Type`` is added when sent.
    :ivar body: ``obj`` encoded as JSON (``bytes``).
    """

    __slots__ = ("status", "obj", "headers", "body")

    def __init__(self, status, obj, headers=(), body=None):
        self.status = status
        self.obj = obj
        self.headers = list(headers)
        self.body = body if body is not None else _encode(obj)

    def __repr__(self):
        return "<AdminResponse %d %r>" % (self.status, self.body[:60])


def as_response(result):
    """A handler's result (an :class:`AdminResponse`, or ``(status, obj)``)
    as an :class:`AdminResponse`.

    :raises ValueError: for a status out of range."""
    if isinstance(result, AdminResponse):
        return result
    status, obj = result
    status = int(status)
    if not 100 <= status <= 599:
        raise ValueError("status %r out of range" % (status,))
    return AdminResponse(status, obj)


def _encode(obj):
    return (json.dumps(obj, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _raw(text):
    """The bytes of a header value decoded as latin-1 (or given as text)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _error(status, message, headers=(), **fields):
    obj = {"error": message}
    obj.update(fields)
    return AdminResponse(status, obj, headers)


#: The admin paths of built-in plugins (``registry``'s too: a configuration
#: may leave it out), and the plugin serving each: a ``404`` under one of
#: them says which plugin it needs (``curl .../routes`` on the default
#: configuration is the usual case).
PLUGIN_PATHS = (("/routes", "routes"), ("/cache", "cache"), ("/metrics", "prometheus"),
                ("/upstream", "registry"))


def not_found(path, served):
    """The ``404`` of ``path``, with a ``hint`` naming the plugin that
    serves it by default when it is under one of :data:`PLUGIN_PATHS` and
    nothing is served there (``served``: the paths of the admin routes)."""
    for prefix, plugin in PLUGIN_PATHS:
        if ((path == prefix or path.startswith(prefix + "/"))
                and not any(p == prefix or p.startswith(prefix + "/") for p in served)):
            return _error(404, "not found", path=path, hint=(
                "{} is served by the {} plugin (at that path by default): add "
                "\"{}\" to plugins".format(prefix, plugin, plugin)))
    return _error(404, "not found", path=path)
