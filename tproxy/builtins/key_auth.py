# -*- test-case-name: tests.test_key_auth -*-
"""
The built-in ``key_auth`` plugin (Kong's key-auth): every request must carry
an API key of a known consumer, in a header or a query argument (both named
``apikey`` by default), or it is answered ``401`` with ``WWW-Authenticate``
and a JSON body.

- With several ``key_names``, the first listed that the request carries
  is read (in the headers, else in the query); the same one given twice
  (two ``apikey`` headers, ``?apikey=a&apikey=b``) is a ``401`` saying so:
  which key was meant cannot be told.
- The key never goes upstream: the headers are removed, the query arguments
  stripped from the upstream target (and from ``ctx.request.query``, so the
  access log does not write it either).
- The consumer's name goes upstream as ``X-Consumer-Username`` (a value the
  client sent in that header is always replaced or removed), and is
  ``ctx.consumer`` for the plugins after this one (``rate_limit``
  keyed by consumer, say).
- Keys are looked up by their SHA-256 digest: the time a lookup takes
  depends on the digest of the guess, not on how much of a real key it
  matches (what ``hmac.compare_digest`` gives for one key, for any number of
  keys in O(1)).
"""

import hashlib
from urllib.parse import unquote

from tproxy import hookimpl
from tproxy.builtins._credentials import CONSUMER_HEADER, remove_from_query, unauthorized
from tproxy.config import ConfigError
from tproxy.schema_checks import HEADER_NAME

__all__ = ["Plugin"]

_TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"


def _digest(key):
    return hashlib.sha256(key.encode("utf-8")).digest()


class Plugin(object):
    """
    API keys of consumers (``access``).

    :param settings: see :attr:`settings_schema`.
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["consumers"],
        "properties": {
            "consumers": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["username", "keys"],
                    "properties": {
                        "username": {"type": "string", "minLength": 1,
                                     "pattern": "^[\\x21-\\x7e]+$"},
                        "keys": {"type": "array", "minItems": 1,
                                 "items": {"type": "string", "minLength": 8}},
                    },
                },
                "description": "who may call: a username and its keys",
            },
            "key_names": {
                "type": "array", "minItems": 1,
                "items": {"type": "string", "pattern": _TOKEN},
                "default": ["apikey"],
                "description": "the header and query argument names a key is read from",
            },
            "key_in_header": {"type": "boolean", "default": True},
            "key_in_query": {"type": "boolean", "default": True},
            "consumer_header": {
                **HEADER_NAME, "type": ["string", "null"],
                "default": CONSUMER_HEADER,
                "description": "the header telling the upstream who called "
                               "(null: none)",
            },
            "realm": {"type": "string", "pattern": "^[^\"\\\\]*$", "default": "tproxy"},
        },
    }

    def __init__(self, settings):
        self.names = list(settings["key_names"])
        self.name_set = frozenset(self.names)
        #: {name: rank} of the key query arguments (the first listed wins)
        self.query_keys = {n: i for i, n in enumerate(self.names)}
        self.in_header = settings["key_in_header"]
        self.in_query = settings["key_in_query"]
        self.consumer_header = settings["consumer_header"]
        self.challenge = 'Key realm="{}"'.format(settings["realm"])
        #: {lower-case name: rank} of the key headers (the first listed wins)
        self.header_keys = ({n.lower().encode("ascii"): i for i, n in enumerate(self.names)}
                            if self.in_header else {})
        self.consumer_name = (self.consumer_header.encode("ascii")
                              if self.consumer_header is not None else None)
        #: the request fields removed: the key headers, the client's consumer header
        self.drop = frozenset(self.header_keys) | (
            frozenset([self.consumer_name.lower()]) if self.consumer_name else frozenset())
        self.consumers = {}
        errors = []
        for i, consumer in enumerate(settings["consumers"]):
            for j, key in enumerate(consumer["keys"]):
                digest = _digest(key)
                other = self.consumers.get(digest)
                if other is not None:
                    errors.append(("consumers[{}].keys[{}]".format(i, j),
                                   "this key is also {!r}'s: a key names one "
                                   "consumer".format(other)))
                self.consumers[digest] = consumer["username"]
        if errors:
            raise ConfigError(errors)

    def _take_headers(self, request):
        """
        Remove the key headers and the client's consumer header from the
        request, in one pass; return the key they carried: ``None`` (none),
        ``False`` (sent twice), or the key.
        """
        headers = request.headers
        drop, names = self.drop, self.header_keys
        found = None
        kept = []
        for pair in headers.raw:
            name = pair[0].lower()
            if name in drop:
                if name in names:
                    rank = names[name]
                    if found is None or rank < found[0]:
                        found = (rank, pair[1], False)
                    elif rank == found[0]:
                        found = (rank, pair[1], True)    # the same header twice
            else:
                kept.append(pair)
        if len(kept) != len(headers.raw):
            headers.raw = kept
        if found is None:
            return None
        return False if found[2] else found[1].decode("latin-1")

    def _query_key(self, query):
        """The key the query carries, read as :meth:`_take_headers` reads
        the headers: ``None`` (none), ``False`` (sent twice), or the key."""
        ranks = self.query_keys
        found = None
        for part in query.split("&"):
            name, _, value = part.partition("=")
            rank = ranks.get(unquote(name.replace("+", " ")))
            if rank is not None:
                if found is None or rank < found[0]:
                    found = (rank, value, False)
                elif rank == found[0]:
                    found = (rank, value, True)     # the same argument twice
        if found is None:
            return None
        return False if found[2] else unquote(found[1].replace("+", " "))

    @hookimpl
    def access(self, ctx):
        """Check the key; hide it; name the consumer."""
        request = ctx.request
        key = self._take_headers(request) if self.drop else None
        if self.in_query and request.query:
            if key is None:
                key = self._query_key(request.query)
            remove_from_query(ctx, self.name_set)
        if key is None:
            return unauthorized(self.challenge, "no API key found in request")
        if key is False:
            return unauthorized(self.challenge, "API key given more than once "
                                "(which one was meant cannot be told)")
        consumer = self.consumers.get(_digest(key))
        if consumer is None:
            return unauthorized(self.challenge, "invalid API key")
        ctx.consumer = consumer
        if self.consumer_header is not None:
            request.headers.raw.append((self.consumer_name, consumer.encode("latin-1")))
        return None
