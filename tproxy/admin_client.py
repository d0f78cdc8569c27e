# -*- test-case-name: tests.test_ctl -*-
"""
A blocking client of tproxy's admin API (standard library only: no reactor),
for ``tproxyctl`` and for a backend's own start or deploy scripts::

    from tproxy.admin_client import AdminClient
    client = AdminClient("http://127.0.0.1:9180", token="s3cret")
    client.call("GET", "/upstream/add", {"port": "8080", "prefix": "api"})

``call`` returns the decoded JSON answer or raises :class:`AdminError` (the
API answered 400 or more: status and body), :class:`NotAdmin` (an error
answer came from another server: the proxy's own port, a backend) or
:class:`Unreachable` (no HTTP answer came).
"""

import http.client
import json
import socket
from urllib.parse import urlencode, urlsplit

__all__ = ["AdminClient", "AdminError", "NotAdmin", "Unreachable", "describe_error",
           "DEFAULT_ADMIN"]

#: The admin API's address when neither ``--admin`` nor ``TPROXY_ADMIN`` says.
DEFAULT_ADMIN = "http://127.0.0.1:9180"


class Unreachable(Exception):
    """The admin API could not be reached (refused, timed out, not HTTP)."""


class NotAdmin(Exception):
    """The answer is not one tproxy's admin API gives (the address names
    another server: the proxy's own port, a backend)."""


class AdminError(Exception):
    """
    The admin API answered with an error status.

    :ivar status: the HTTP status.
    :ivar obj: the JSON body (``None`` if it was not JSON).
    :ivar text: what to say (default: :func:`describe_error`), for a
        command that says it in its own terms.
    """

    def __init__(self, status, obj, text=None):
        Exception.__init__(self, status, obj)
        self.status = status
        self.obj = obj
        self.text = text

    def __str__(self):
        return self.text or describe_error(self.status, self.obj)


def not_admin_message(method, path, base, why):
    """What to say when the answer of ``method path`` at ``base`` is not the
    admin API's (``why``: what gave it away)."""
    return ("the answer of {} {} at {} is not tproxy's admin API's ({}): --admin / "
            "TPROXY_ADMIN must name the admin listener (admin.listen, default {}), "
            "not the proxy or a backend".format(method, path, base, why, DEFAULT_ADMIN))


def describe_error(status, obj):
    """One line for an error answer: ``400 port is required (field port)``."""
    if not isinstance(obj, dict):
        return "{} {}".format(status, "(no JSON body)" if obj is None else obj)
    text = "{} {}".format(status, obj.get("error", json.dumps(obj, sort_keys=True)))
    details = []
    if obj.get("field"):
        details.append("field {}".format(obj["field"]))
    if "value" in obj and obj["value"] is not None:
        details.append("value {!r}".format(obj["value"]))
    for extra in obj.get("errors", ())[1:] if isinstance(obj.get("errors"), list) else ():
        if isinstance(extra, dict):
            details.append("{}: {}".format(extra.get("field"), extra.get("error")))
    if obj.get("hint"):
        details.append(obj["hint"])
    if details:
        text += " ({})".format("; ".join(details))
    if status == 401:
        text += " (set --token or TPROXY_TOKEN)"
    return text


class AdminClient(object):
    """
    A blocking client of the admin API.

    :param base: ``http://host:port`` (``https://`` too; ``host:port`` means
        ``http://host:port``).
    :param token: the bearer token, or ``None``.
    :param timeout: seconds for connecting and for each answer.
    """

    def __init__(self, base=DEFAULT_ADMIN, token=None, timeout=10.0):
        if "://" not in base:
            base = "http://" + base
        parts = urlsplit(base)
        try:
            port = parts.port   # (a ValueError for a port out of range or not a number)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(base)
        except ValueError:
            raise ValueError("the admin address must look like http://host:port, "
                             "not {!r}".format(base))
        self.base = base.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token or None
        self.timeout = timeout

    def request(self, method, path, query=None, body=None, content_type=None):
        """
        ``(status, obj)`` of one request; ``obj`` is the decoded JSON body
        (``None`` if there was none or it was not JSON).

        :raises NotAdmin: for an error answer (status 400 or more) that is
            not the admin API's: every one of those is a JSON object sent
            with ``X-Content-Type-Options: nosniff``, which neither the
            proxy's own errors (``503 no live upstream``) nor a backend's
            HTML ``404`` have.
        :raises Unreachable: when no HTTP answer came.
        """
        target = self.prefix + path
        if query:
            target += "?" + urlencode([(k, v) for k, v in query.items() if v is not None])
        headers = {"Accept": "application/json", "User-Agent": "tproxyctl"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable("cannot reach the admin API at {}: {}".format(
                self.base, _reason(e)))
        finally:
            conn.close()
        try:
            obj = json.loads(data.decode("utf-8")) if data else None
        except ValueError:
            obj = None
        if response.status >= 400 and not (
                isinstance(obj, dict) and
                (response.getheader("X-Content-Type-Options") or "").lower() == "nosniff"):
            raise NotAdmin(not_admin_message(
                method, path, self.base, "it answered " + describe_error(response.status, obj)))
        return response.status, obj

    def call(self, method, path, query=None, body=None):
        """The JSON answer of a successful request.

        :raises AdminError: for an answer of status 400 or more.
        :raises Unreachable: when no HTTP answer came."""
        status, obj = self.request(method, path, query, body)
        if status >= 400:
            raise AdminError(status, obj)
        return obj


def _reason(e):
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is tproxy running? see --admin / TPROXY_ADMIN)"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
