# -*- test-case-name: tests.test_jwt_auth -*-
"""
The built-in ``jwt_auth`` plugin: every request must carry a JSON Web Token
signed by one of the configured keys (HS256, RS256, ES256 ...; verified with
PyJWT), or it is answered ``401`` with ``WWW-Authenticate: Bearer ...`` and a
JSON body.

- **Keys** come from the settings (``keys``: a shared ``secret`` or a PEM
  ``public_key``, each with its ``algorithm``) and/or a JWKS file
  (``jwks_file``, read at start and, with ``jwks_refresh``, every so many
  seconds: a provider's key rotation needs no restart; a file that cannot be
  read leaves the keys in use, and says so once in the log).  A token whose header names a ``kid`` is
  checked with that key only; one without, with the keys that have no
  ``kid``.
- **The token's** ``alg`` **is never trusted**: each key has one algorithm,
  fixed in the configuration (or by the JWK), and a token is verified with
  that algorithm only (``alg: none``, or HS256 signed with an RSA public key
  as its secret, are refused).
- **Claims**: ``exp`` and ``nbf`` are checked against the gateway's clock
  (not the system's: tests move a fake one), with ``leeway`` seconds of
  tolerance for clock skew; ``aud`` and ``iss`` when ``audience`` /
  ``issuer`` are set; the claims of ``required_claims`` (``["exp"]``) must be
  present.
- **What goes upstream**: not the token (the header is removed, the query
  argument stripped); the consumer (the key's ``consumer``, else the claim
  ``consumer_claim``, ``sub``) as ``X-Consumer-Username``; the claims of
  ``claims_to_headers`` as headers (strings as they are if printable ASCII,
  else percent-encoded; other JSON values as compact JSON); headers of those
  names sent by the client are removed.  ``ctx.consumer`` and
  ``ctx.vars["jwt_claims"]`` are set for the plugins after this one.
- **One token**: two or more (the header and the query argument, either
  twice) are a ``400`` with ``error="invalid_request"`` (RFC 6750 2 and
  3.1: a client uses one method, once).
- Verified tokens are remembered (at most ``cache_size`` of up to 4 KiB, their
  ``exp``/``nbf`` checked again at each use), so a client sending the same
  token again costs a dictionary lookup, not a signature check.

The keys are read and checked by :mod:`tproxy.builtins._jwt_keys`.
"""

import json
import time
from urllib.parse import quote

import jwt
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from tproxy import hookimpl
from tproxy.builtins._credentials import (
    CONSUMER_HEADER, invalid_request, query_values, remove_from_query, unauthorized)
from tproxy.builtins._jwt_keys import (
    ALGORITHMS, index_keys, key_from_settings, parse_jwks, read_jwks)
from tproxy.config import ConfigError
from tproxy.schema_checks import HEADER_NAME

__all__ = ["Plugin"]

log = Logger()

_TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7f))

#: PyJWT's options: signature, aud and iss by PyJWT; exp, nbf by the
#: gateway's clock (see _check_times); iat not checked
_OPTIONS = {"verify_signature": True, "verify_exp": False, "verify_nbf": False,
            "verify_iat": False}


class _Invalid(Exception):
    """A token refused; ``str()`` is the fixed description sent to the client."""


class Plugin(object):
    """
    JWT bearer tokens (``access``).

    :param settings: see :attr:`settings_schema`.
    """

    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "keys": {
                "type": "array", "default": [],
                "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["algorithm"],
                    "properties": {
                        "kid": {"type": "string", "minLength": 1},
                        "algorithm": {"enum": ALGORITHMS},
                        "secret": {"type": "string", "minLength": 32,
                                   "description": "HS*: the shared secret (32+ characters)"},
                        "public_key": {"type": "string", "minLength": 1,
                                       "description": "RS*/PS*/ES*/EdDSA: a PEM public key"},
                        "consumer": {"type": "string", "minLength": 1,
                                     "description": "the consumer of every token "
                                                    "this key signs"},
                    },
                },
            },
            "jwks_file": {"type": ["string", "null"], "default": None,
                          "description": "a JWKS (JSON Web Key Set) file, read at start"},
            "jwks_refresh": {"type": ["number", "null"], "exclusiveMinimum": 0,
                             "default": None,
                             "description": "seconds between reloads of jwks_file "
                                            "(null: read once)"},
            "header": {"type": "string", "pattern": _TOKEN, "default": "Authorization",
                       "description": "where the token is: 'Bearer <token>'"},
            "query_param": {"type": ["string", "null"], "default": None,
                            "description": "also read the token from this query argument"},
            "audience": {"type": ["string", "array", "null"], "items": {"type": "string"},
                         "default": None},
            "issuer": {"type": ["string", "array", "null"], "items": {"type": "string"},
                       "default": None},
            "leeway": {"type": "number", "minimum": 0, "maximum": 3600, "default": 30,
                       "description": "seconds of clock skew tolerated for exp and nbf"},
            "required_claims": {"type": "array", "items": {"type": "string"},
                                "default": ["exp"]},
            "consumer_claim": {"type": "string", "default": "sub"},
            "consumer_header": dict(HEADER_NAME, type=["string", "null"],
                                    default=CONSUMER_HEADER),
            "claims_to_headers": {
                "type": "object", "default": {},
                "additionalProperties": dict(HEADER_NAME),
                "description": "{claim: header}: claims sent upstream",
            },
            "realm": {"type": "string", "pattern": "^[^\"\\\\]*$", "default": "tproxy"},
            "cache_size": {"type": "integer", "minimum": 0, "default": 1024},
        },
    }

    def __init__(self, settings):
        self.header = settings["header"]
        self.query_names = (frozenset([settings["query_param"]])
                            if settings["query_param"] else None)
        self.audience = settings["audience"]
        self.issuer = settings["issuer"]
        self.leeway = settings["leeway"]
        self.required = list(settings["required_claims"])
        self.consumer_claim = settings["consumer_claim"]
        self.consumer_header = settings["consumer_header"]
        self.claim_headers = sorted(settings["claims_to_headers"].items())
        self.realm = settings["realm"]
        self.cache_size = settings["cache_size"]
        self.cache = {}
        self.options = dict(_OPTIONS, require=self.required,
                            verify_aud=self.audience is not None,
                            verify_iss=self.issuer is not None)
        self.clock = None
        self.jwks_file = settings["jwks_file"]
        self.jwks_refresh = settings["jwks_refresh"]
        self._loop = None
        self._failing = False     # the last JWKS reload failed (said once)
        errors = []
        self.configured = []
        for i, spec in enumerate(settings["keys"]):
            try:
                self.configured.append(key_from_settings(spec, "keys[{}]".format(i)))
            except ConfigError as e:
                errors.extend(e.errors)
        self._jwks_data = None    # the file's bytes the keys come from
        if not errors:
            try:
                jwks = []
                if self.jwks_file:
                    self._jwks_data = read_jwks(self.jwks_file)
                    jwks = parse_jwks(self.jwks_file, self._jwks_data)
                self._install(self.configured + jwks)
            except ConfigError as e:
                errors.extend(e.errors)
        if not errors and not self.by_kid and not self.without_kid:
            errors.append(("", "no key: give keys or jwks_file"))
        if errors:
            raise ConfigError(errors)
        self.challenge = 'Bearer realm="{}"'.format(self.realm)
        self.header_key = self.header.lower().encode("ascii")
        self.consumer_name = (self.consumer_header.encode("ascii")
                              if self.consumer_header is not None else None)
        #: the request fields removed: the token's header, and those this
        #: plugin sets (never the client's own)
        self.drop = frozenset(
            [self.header_key] + [n.lower().encode("ascii") for _, n in self.claim_headers]
            + ([self.consumer_name.lower()] if self.consumer_name is not None else []))

    # -- keys -----------------------------------------------------------------

    def _install(self, keys):
        """Use ``keys`` (all of them, replacing the current ones) from now on;
        forget the tokens verified with the previous keys."""
        self.by_kid, self.without_kid = index_keys(keys)
        self.cache = {}

    def reload_jwks(self):
        """
        Read ``jwks_file`` again and use its keys (with those of ``keys``);
        on failure keep the current keys and log it (once until a reload
        succeeds).  Never raises (it runs in a ``LoopingCall``).
        """
        try:
            with open(self.jwks_file, "rb") as f:
                data = f.read()
            if data == self._jwks_data:
                keys = None       # unchanged: keep the keys and the cache
            else:
                keys = self.configured + parse_jwks(self.jwks_file, data)
                if not keys:
                    raise ConfigError(("jwks_file", "no key left"))
            if keys is not None:
                self._install(keys)
                self._jwks_data = data
        except Exception as e:
            problem = e.errors[0][1] if isinstance(e, ConfigError) else repr(e)
            if not self._failing:
                log.warn("jwt_auth: cannot reload {path}, keeping the keys in use: "
                         "{problem}", path=self.jwks_file, problem=problem)
            self._failing = True
        else:
            if self._failing:
                log.info("jwt_auth: {path} reloaded", path=self.jwks_file)
            self._failing = False

    # -- per request ----------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Use the gateway's clock for ``exp`` and ``nbf``; start reloading
        ``jwks_file`` every ``jwks_refresh`` seconds (if set)."""
        self.clock = gateway.reactor
        if self.jwks_file and self.jwks_refresh and self._loop is None:
            self._loop = LoopingCall(self.reload_jwks)
            self._loop.clock = gateway.reactor
            self._loop.start(self.jwks_refresh, now=False).addErrback(
                lambda f: log.failure("jwt_auth: the JWKS reload timer stopped", f))
            gateway.on_stop(self._stop)

    def _stop(self):
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _token(self, request):
        """
        The token: from the header (removed, in the same pass as the client's
        consumer and claim headers), else from the query argument; ``None``
        when there is none (a header of another scheme, ``Basic ...``, is
        not a bearer credential), ``""`` when the header is ``Bearer``
        without a token, ``False`` when there are two or more (RFC 6750 2:
        one method, once).
        """
        headers = request.headers
        key, drop = self.header_key, self.drop
        token = None
        tokens = 0
        kept = []
        for pair in headers.raw:
            name = pair[0].lower()
            if name in drop:
                if name == key:
                    scheme, _, value = pair[1].decode("latin-1").strip().partition(" ")
                    if scheme.lower() == "bearer":
                        token = value.strip()
                        tokens += 1
            else:
                kept.append(pair)
        if len(kept) != len(headers.raw):
            headers.raw = kept
        if self.query_names is not None and request.query:
            found = query_values(request.query, self.query_names)
            if found:
                token = found[0]
                tokens += len(found)
        return token if tokens < 2 else False

    def _verify(self, token):
        """The claims of a valid token and its key, or raise :class:`_Invalid`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _Invalid("malformed token")
        kid = header.get("kid")
        if kid is not None:
            key = self.by_kid.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise _Invalid("unknown key id")
            candidates = (key,)
        else:
            candidates = self.without_kid
            if not candidates:
                raise _Invalid("token has no key id")
        reason = "invalid signature"
        for key in candidates:
            try:
                claims = jwt.decode(token, key.key, algorithms=[key.algorithm],
                                    options=self.options, audience=self.audience,
                                    issuer=self.issuer)
            except jwt.InvalidAlgorithmError:
                reason = "algorithm not allowed for this key"
            except jwt.InvalidSignatureError:
                reason = "invalid signature"
            except jwt.MissingRequiredClaimError as e:
                raise _Invalid("missing claim {}".format(_safe(e.claim)))
            except jwt.InvalidAudienceError:
                raise _Invalid("invalid audience")
            except jwt.InvalidIssuerError:
                raise _Invalid("invalid issuer")
            except jwt.PyJWTError:
                raise _Invalid("malformed token")
            else:
                if not isinstance(claims, dict):
                    raise _Invalid("malformed token")
                return claims, key
        raise _Invalid(reason)

    def _check_times(self, claims):
        now = self.clock.seconds() if self.clock is not None else time.time()
        exp = claims.get("exp")
        if exp is not None:
            if not _number(exp):
                raise _Invalid("exp is not a number")
            if exp <= now - self.leeway:
                raise _Invalid("token expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _number(nbf):
                raise _Invalid("nbf is not a number")
            if nbf > now + self.leeway:
                raise _Invalid("token not valid yet")

    def _identity(self, claims, key):
        """``(consumer or None, its header value or None, [(header, value)])``
        of a verified token (header names and values as bytes)."""
        consumer = key.consumer
        if consumer is None:
            claimed = claims.get(self.consumer_claim)
            if isinstance(claimed, str) and claimed:
                consumer = claimed
        headers = []
        for claim, name in self.claim_headers:
            value = claims.get(claim)
            if value is not None:
                headers.append((name.encode("ascii"), _header_value(value).encode("ascii")))
        value = _header_value(consumer).encode("ascii") if consumer is not None else None
        return consumer, value, headers

    @hookimpl
    def access(self, ctx):
        """Check the token; hide it; send the consumer and claims upstream."""
        request = ctx.request
        token = self._token(request)
        if self.query_names is not None and request.query:
            remove_from_query(ctx, self.query_names)
        if token is None:
            return unauthorized(self.challenge, "missing bearer token")
        if token is False:
            # which one was meant cannot be told (RFC 6750 3.1: 400)
            return invalid_request(self.challenge, "more than one token")
        try:
            if not token:
                raise _Invalid("malformed authorization header")
            cached = self.cache.get(token)
            if cached is None:
                claims, key = self._verify(token)
                cached = (claims,) + self._identity(claims, key)
                if self.cache_size and len(token) <= 4096:
                    if len(self.cache) >= self.cache_size:
                        self.cache.clear()
                    self.cache[token] = cached
            claims, consumer, consumer_value, claim_headers = cached
            self._check_times(claims)
        except _Invalid as e:
            return unauthorized(
                '{}, error="invalid_token", error_description="{}"'.format(
                    self.challenge, e), "invalid token", reason=str(e))
        ctx.vars["jwt_claims"] = claims
        raw = request.headers.raw      # (the fields of these names are gone)
        if consumer is not None:
            ctx.consumer = consumer
            if self.consumer_name is not None:
                raw.append((self.consumer_name, consumer_value))
        raw.extend(claim_headers)
        return None


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _safe(text):
    """``text`` fit for a quoted header parameter."""
    return quote(str(text), safe=_PRINTABLE.replace('"', "").replace("\\", ""))


def _header_value(value):
    """A claim's value as a header value."""
    if not isinstance(value, str):
        value = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return quote(value, safe=_PRINTABLE)
