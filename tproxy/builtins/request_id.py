# -*- test-case-name: tests.test_request_id -*-
"""
The built-in ``request_id`` plugin: every request gets an id, sent upstream
and back to the client in ``X-Request-ID`` (the header is configurable), and
written by the access log (its ``request_id`` field).

The id is ``ctx.request_id``: tproxy numbers each request and makes the
number a string (this process's random 8 hex digits, then the number in hex)
when first read, so this plugin adds no id of its own; with ``"generator":
"uuid4"`` it is a random UUID instead.  An id arriving in the header is kept
only from a trusted proxy (``trusted_proxies``, ``"accept": "trusted"``, the
default), from anyone (``"any"``), or never (``"none"``); an untrusted or
malformed one is replaced, so the upstream never sees an id the client made up.
An accepted id is 1 to 200 visible ASCII characters, in one header field
(two: which one the request is cannot be told).

List it first (or early) in ``plugins``: its ``rewrite`` sets the id, and the
plugins after it see the final one.
"""

import re
import uuid

from tproxy import hookimpl
from tproxy.schema_checks import HEADER_NAME

__all__ = ["Plugin"]

#: what an incoming id may be: visible ASCII, no spaces, bounded
_VALID = re.compile(r"[\x21-\x7e]{1,200}\Z").match


class Plugin(object):
    """
    ``X-Request-ID`` (``rewrite`` and ``header_filter``).

    :param settings: see :attr:`settings_schema`.
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "header": dict(HEADER_NAME, default="X-Request-ID",
                           description="the header carrying the id, both ways"),
            "accept": {
                "enum": ["trusted", "any", "none"], "default": "trusted",
                "description": "whose incoming id to keep: a trusted proxy's "
                               "(trusted_proxies), anyone's, or nobody's",
            },
            "generator": {
                "enum": ["counter", "uuid4"], "default": "counter",
                "description": "counter: tproxy's per-process numbering "
                               "(cheapest); uuid4: a random UUID",
            },
            "response_header": {
                "type": "boolean", "default": True,
                "description": "return the id to the client",
            },
        },
    }

    def __init__(self, settings):
        self.header = settings["header"]
        self.name = self.header.encode("ascii")
        self.key = self.name.lower()
        self.accept = settings["accept"]
        self.uuid = settings["generator"] == "uuid4"
        self.response_header = settings["response_header"]
        self.trusted = None

    @hookimpl
    def init_worker(self, gateway):
        """Remember which peers are trusted proxies."""
        self.trusted = gateway.trusted_proxies

    @hookimpl
    def rewrite(self, ctx):
        """Choose the id: the trusted incoming one, or a new one; send it upstream."""
        request = ctx.request
        headers = request.headers
        key = self.key
        incoming = None
        count = 0
        for n, v in headers.raw:      # (Headers.get, without its per-call encoding)
            if n.lower() == key:
                incoming = v.decode("latin-1")
                count += 1
        if incoming is not None:
            if (self.accept != "none" and count == 1 and _VALID(incoming)
                    and (self.accept == "any" or request.remote_addr in self.trusted)):
                ctx.request_id = incoming
                return
            headers.remove(self.header)
        if self.uuid:
            ctx.request_id = str(uuid.uuid4())
        headers.raw.append((self.name, ctx.request_id.encode("latin-1")))

    @hookimpl
    def header_filter(self, ctx, response):
        """Return the id to the client (replacing the upstream's, if any)."""
        if self.response_header:
            headers = response.headers
            key = self.key
            for n, _ in headers.raw:
                if n.lower() == key:
                    headers.remove(self.name)      # (makes a new raw list)
                    break
            headers.raw.append((self.name, ctx.request_id.encode("latin-1")))
