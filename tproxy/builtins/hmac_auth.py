# -*- test-case-name: tests.test_hmac_auth -*-
"""
The built-in ``hmac_auth`` plugin: requests signed with a consumer's shared
secret, as Kong's ``hmac-auth`` (the HTTP Signatures draft of Cavage et al.).

The client sends::

    Date: Tue, 14 Nov 2023 22:13:20 GMT
    Digest: SHA-256=<base64 of the body's SHA-256>
    Authorization: hmac username="alice", algorithm="hmac-sha256",
        headers="@request-target date digest", signature="<base64>"

where the signature is the HMAC, with alice's secret, of the *signing
string*: one line per name of ``headers``, joined with ``\\n``:

- ``@request-target`` (or ``(request-target)``): ``@request-target: get
  /path?query`` (the method in lower case, the target as sent);
- ``request-line``: ``GET /path?query HTTP/1.1``;
- any other name: ``<name>: <value>`` of that request header (name in lower
  case).

The plugin checks, in ``access``: the scheme and the fields; the algorithm
(one of ``algorithms``); that every name of ``enforce_headers`` is signed; the
``X-Date`` or ``Date`` header (signed) within ``clock_skew`` seconds of the
gateway's clock (the replay window); the signature, compared in constant
time; and, with ``validate_request_body``, the body: a request with a body
must sign a ``Digest`` (``SHA-256=...`` / ``SHA-512=...``, RFC 3230) or
``Content-Digest`` (``sha-256=:...:``, RFC 9530) header that matches it.  The
body is read before the request goes upstream (bounded by ``max_body_size``:
a longer one is refused with ``413``, at once when its ``Content-Length``
says so, before ``100 Continue`` and without reading it), since an upstream that has the body
cannot be told to forget it.  Anything wrong is ``401`` with
``WWW-Authenticate`` and a JSON body saying what.

A valid request is forwarded without the ``Authorization`` header
(``hide_credentials``), ``ctx.consumer`` is the consumer's name, and the
upstream gets it in ``consumer_header`` (a client's own value of that header
is always removed).
"""

import base64
import binascii
import hashlib
import hmac
import re
from datetime import timezone
from email.utils import parsedate_to_datetime

from tproxy import Response, hookimpl
from tproxy.schema_checks import HEADER_NAME

__all__ = ["Plugin", "signing_string"]

_ALGORITHMS = {"hmac-sha1": hashlib.sha1, "hmac-sha256": hashlib.sha256,
               "hmac-sha384": hashlib.sha384, "hmac-sha512": hashlib.sha512}

_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}

_PARAM = re.compile(r'\s*([A-Za-z]+)\s*=\s*"([^"]*)"\s*(?:,|$)')

_TARGET = ("@request-target", "(request-target)")

#: a name ``enforce_headers`` may hold (what a client's ``headers`` lists)
_SIGNED_NAME = r"^(@request-target|\(request-target\)|[!#$%&'*+.^_`|~0-9A-Za-z-]+)\Z"


def _parse(value):
    """``{name: value}`` of ``hmac k="v", ...``, or ``None`` if malformed
    (a parameter given twice too: which one was meant cannot be told)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "hmac":
        return None
    params, pos, rest = {}, 0, rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None:
            return None
        name = m.group(1).lower()
        if name in params:
            return None
        params[name] = m.group(2)
        pos = m.end()
    return params


def signing_string(request, names):
    """
    The string a client signs: one line per header name of ``names``.

    :param request: a :class:`tproxy.Request`.
    :param names: lower-case names (``"@request-target"``, ``"date"``, ...).
    :raises KeyError: naming a header the request lacks.
    """
    lines = []
    for name in names:
        if name in _TARGET:
            lines.append("%s: %s %s" % (name, request.method.lower(), request.uri))
        elif name == "request-line":
            lines.append("%s %s HTTP/%s" % (request.method, request.uri, request.version))
        else:
            values = request.headers.get_all(name)
            if not values:
                raise KeyError(name)
            lines.append("%s: %s" % (name, ", ".join(values)))
    return "\n".join(lines)


def _digests(request):
    """``[(algorithm, expected digest bytes)]`` of the Digest / Content-Digest
    headers (``None`` if one is malformed)."""
    found = []
    for header, sf in (("digest", False), ("content-digest", True)):
        for value in request.headers.get_all(header):
            for item in value.split(","):
                alg, eq, b64 = item.strip().partition("=")
                if not eq:
                    return None
                alg = alg.strip().lower()
                b64 = b64.strip()
                if sf:
                    if not (len(b64) >= 2 and b64[0] == b64[-1] == ":"):
                        return None
                    b64 = b64[1:-1]
                if alg not in _DIGESTS:
                    continue          # an algorithm we do not check
                try:
                    found.append((alg, base64.b64decode(b64, validate=True)))
                except (binascii.Error, ValueError):
                    return None
    return found


def _timestamp(value):
    """Epoch seconds of an HTTP date (a zone-less one, ``-0000``, taken as UTC)."""
    when = parsedate_to_datetime(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


class Plugin(object):
    """
    HMAC request signatures (``access``).
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["consumers"],
        "properties": {
            "consumers": {
                "type": "object", "minProperties": 1,
                "description": "{username: {\"secret\": ...}}: the username "
                               "is the consumer's name",
                "additionalProperties": {
                    "type": "object", "additionalProperties": False,
                    "required": ["secret"],
                    "properties": {"secret": {"type": "string", "minLength": 16}},
                },
            },
            "algorithms": {
                "type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"enum": sorted(_ALGORITHMS)},
                "default": ["hmac-sha256", "hmac-sha384", "hmac-sha512"],
            },
            "enforce_headers": {
                "type": "array", "uniqueItems": True,
                "items": {"type": "string", "pattern": _SIGNED_NAME,
                          "x-messages": {"pattern": "bad name {instance!r} (a header "
                                                    "name, @request-target or "
                                                    "request-line)"}},
                "default": ["@request-target", "date"],
                "description": "names that must be signed (\"date\" is met by "
                               "x-date too)",
            },
            "clock_skew": {"type": "number", "minimum": 1, "default": 300},
            "validate_request_body": {"type": "boolean", "default": True},
            "max_body_size": {"type": "integer", "minimum": 0, "default": 1048576},
            "hide_credentials": {"type": "boolean", "default": True},
            "consumer_header": dict(HEADER_NAME, default="X-Consumer-Username"),
            "realm": {"type": "string", "default": "tproxy",
                      "pattern": "^[^\"\\\\]*$"},
        },
    }

    def __init__(self, settings):
        self.consumers = {name: c["secret"].encode("utf-8")
                          for name, c in settings["consumers"].items()}
        self.algorithms = frozenset(settings["algorithms"])
        self.enforce = [n.lower() for n in settings["enforce_headers"]]
        self.clock_skew = settings["clock_skew"]
        self.validate_body = settings["validate_request_body"]
        self.max_body_size = settings["max_body_size"]
        self.hide_credentials = settings["hide_credentials"]
        self.consumer_header = settings["consumer_header"]
        self.challenge = 'hmac realm="%s", headers="%s"' % (
            settings["realm"], " ".join(self.enforce))
        self.clock = None
        # a secret for unknown usernames, so that they take as long as known ones
        self._decoy = hashlib.sha256(b"tproxy hmac_auth decoy").digest()

    @hookimpl
    def init_worker(self, gateway):
        """Take the gateway's clock (the replay window's)."""
        self.clock = gateway.reactor

    def deny(self, message, **fields):
        """The ``401`` for ``message``."""
        response = Response.error(401, message, **fields)
        response.headers.set("WWW-Authenticate", self.challenge)
        return response

    @hookimpl
    def access(self, ctx):
        """Check the request's signature (and body digest)."""
        request = ctx.request
        headers = request.headers
        headers.remove(self.consumer_header)       # never believe the client's
        values = headers.get_all("authorization")
        if not values:
            return self.deny("missing HMAC signature")
        if len(values) > 1:
            return self.deny("Authorization given more than once")
        value = values[0]
        params = _parse(value)
        if params is None or not all(k in params for k in ("username", "signature")):
            return self.deny("malformed HMAC Authorization header")
        algorithm = params.get("algorithm", "hmac-sha256").lower()
        if algorithm not in self.algorithms:
            return self.deny("HMAC algorithm not allowed", algorithm=algorithm,
                             allowed=sorted(self.algorithms))
        names = params.get("headers", "date").lower().split()
        signed = set(names)
        for name in self.enforce:
            if name not in signed and not (name == "date" and "x-date" in signed) \
                    and not (name in _TARGET and signed.intersection(_TARGET)):
                return self.deny("header not signed", header=name)
        date_name = "x-date" if "x-date" in signed else "date"
        if date_name in signed:
            problem = self._check_date(headers.get(date_name))
            if problem is not None:
                return self.deny(problem)
        try:
            text = signing_string(request, names)
        except KeyError as e:
            return self.deny("signed header missing", header=e.args[0])
        try:
            given = base64.b64decode(params["signature"], validate=True)
        except (binascii.Error, ValueError):
            return self.deny("malformed HMAC signature")
        username = params["username"]
        secret = self.consumers.get(username)
        expected = hmac.new(secret if secret is not None else self._decoy,
                            text.encode("latin-1", "replace"),
                            _ALGORITHMS[algorithm]).digest()
        if not hmac.compare_digest(expected, given) or secret is None:
            return self.deny("HMAC signature does not match")
        if self.validate_body:
            has_digest = "digest" in signed or "content-digest" in signed
            return self._check_body(ctx, username, has_digest)
        return self._accept(ctx, username)

    def _check_date(self, value):
        if value is None:
            return "signed date header missing"
        try:
            when = _timestamp(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return "malformed date"
        if abs(self.clock.seconds() - when) > self.clock_skew:
            return "date outside the clock skew (%s s): a replay, or a wrong clock" % (
                self.clock_skew,)
        return None

    def _check_body(self, ctx, username, has_digest):
        length = ctx.request.content_length
        if length is not None and length > self.max_body_size:
            # refused before 100 Continue, the body unread
            return self._too_large()
        # (a chunked body: the first max_body_size + 1 bytes tell whether it
        # is too long)
        d = ctx.read_body_prefix(self.max_body_size + 1)
        return d.addCallback(self._body_read, ctx, username, has_digest)

    def _too_large(self):
        return Response.error(413, "request body too large to check its digest",
                              limit=self.max_body_size)

    def _body_read(self, body, ctx, username, has_digest):
        if len(body) > self.max_body_size:
            return self._too_large()
        digests = _digests(ctx.request) if has_digest else []
        if digests is None:
            return self.deny("malformed digest header")
        if not digests:
            if body:
                return self.deny("a request body needs a signed Digest or "
                                 "Content-Digest header (SHA-256 or SHA-512)")
            return self._accept(ctx, username)
        for alg, expected in digests:
            if not hmac.compare_digest(_DIGESTS[alg](body).digest(), expected):
                return self.deny("body digest does not match", algorithm=alg)
        return self._accept(ctx, username)

    def _accept(self, ctx, username):
        ctx.consumer = username
        headers = ctx.request.headers
        if self.hide_credentials:
            headers.remove("authorization")
        headers.set(self.consumer_header, username)
        return None
