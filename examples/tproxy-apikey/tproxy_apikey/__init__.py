# -*- test-case-name: tests.test_apikey -*-
"""
API-key authentication for tproxy.

Every request must carry one of the configured keys in a header
(``X-API-Key`` by default), else it is answered ``401`` with a JSON error and
no upstream is contacted.  The key names a *consumer*; its name is

- put in ``ctx.consumer`` for the plugins that run after this one
  (a rate limiter, the access log);
- sent upstream in a header (``X-Consumer``), replacing whatever the client
  sent under that name;
- returned to the client in a response header (``X-Consumer``; ``null`` in
  the settings for none).

The key itself is removed from the request before it goes upstream (setting
``hide_key``).  A consumer may have several keys, so that a key can be
replaced without downtime: add the new one, move the clients, remove the old.

Configuration (``conf.json``)::

    "plugins": [
        "registry", "router",
        {"name": "apikey", "settings": {
            "consumers": {"alice": ["k-9f3a0c"], "bob": ["k-77d2e1", "k-old-1b"]}
        }},
        "least_conn", "access_log"
    ]

Keys are kept as SHA-256 digests and looked up by digest, so the time a
lookup takes says nothing about how much of a guessed key was right.
"""

import hashlib

from tproxy import Response, hookimpl

__version__ = "0.1.0"

__all__ = ["Plugin"]

#: An HTTP field name (RFC 9110 ``token``).
_FIELD_NAME = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


def _digest(key):
    return hashlib.sha256(key.encode("utf-8")).digest()


class Plugin(object):
    """
    The ``apikey`` plugin (``access`` and ``header_filter`` phases).

    :param settings: validated against :attr:`settings_schema`, defaults
        filled in.
    :raises ValueError: if a key is given to two consumers.
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["consumers"],
        "properties": {
            "consumers": {
                "description": "consumer name -> the API keys it may use",
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[A-Za-z0-9._~@-]{1,64}$"},
                "additionalProperties": {
                    "type": "array", "minItems": 1, "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1},
                },
            },
            "header": {
                "description": "the request header carrying the key",
                "type": "string", "pattern": _FIELD_NAME, "default": "X-API-Key",
            },
            "consumer_header": {
                "description": "the header telling the upstream who called",
                "type": "string", "pattern": _FIELD_NAME, "default": "X-Consumer",
            },
            "response_header": {
                "description": "the response header naming the consumer (null: none)",
                "type": ["string", "null"], "pattern": _FIELD_NAME,
                "default": "X-Consumer",
            },
            "hide_key": {
                "description": "remove the key from the request sent upstream",
                "type": "boolean", "default": True,
            },
        },
    }

    def __init__(self, settings):
        self.header = settings["header"]
        self.consumer_header = settings["consumer_header"]
        self.response_header = settings["response_header"]
        self.hide_key = settings["hide_key"]
        self.challenge = 'ApiKey header="{}"'.format(self.header)
        self.consumers = {}
        for consumer, keys in sorted(settings["consumers"].items()):
            for key in keys:
                other = self.consumers.setdefault(_digest(key), consumer)
                if other != consumer:
                    raise ValueError("a key of consumer {!r} is also a key of "
                                     "{!r}".format(consumer, other))

    def _deny(self, message):
        response = Response.error(401, message)
        response.headers.set("WWW-Authenticate", self.challenge)
        return response

    @hookimpl
    def access(self, ctx):
        """
        Find the consumer of the request's key, or answer ``401``.

        :return: ``None`` (authenticated), or the ``401`` :class:`Response`.
        """
        headers = ctx.request.headers
        # whatever the client says about who it is, is not believed
        headers.remove(self.consumer_header)
        keys = headers.get_all(self.header)
        if not keys:
            return self._deny("missing API key")
        consumer = self.consumers.get(_digest(keys[0].strip())) if len(keys) == 1 else None
        if consumer is None:
            return self._deny("invalid API key")
        if self.hide_key:
            headers.remove(self.header)
        headers.set(self.consumer_header, consumer)
        ctx.consumer = consumer
        return None

    @hookimpl
    def header_filter(self, ctx, response):
        """Name the consumer in the response."""
        if self.response_header is not None:
            consumer = ctx.consumer
            if consumer is not None:
                response.headers.set(self.response_header, consumer)
