# -*- test-case-name: tests.test_jwt_auth -*-
"""
The built-in ``jwt_auth`` plugin: every request must carry a JSON Web Token
signed by one of the configured keys (HS256, RS256, ES256 ...; verified with
PyJWT), or it is answered ``401`` with ``WWW-Authenticate: Bearer ...`` and a
JSON body.

- **Keys** come from the settings (``keys``: a shared ``secret`` or a PEM
  ``public_key``, each with its ``algorithm``) and/or a JWKS file
  (``jwks_file``, read at start).  A token whose header names a ``kid`` is
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
  names sent by the client are removed.  ``ctx.vars["consumer"]`` and
  ``ctx.vars["jwt_claims"]`` are set for the plugins after this one.
- Verified tokens are remembered (at most ``cache_size`` of up to 4 KiB, their
  ``exp``/``nbf`` checked again at each use), so a client sending the same
  token again costs a dictionary lookup, not a signature check.
"""

import json
from urllib.parse import quote

import jwt
from jwt.algorithms import get_default_algorithms

from tproxy import hookimpl
from tproxy.builtins._credentials import (
    CONSUMER_HEADER, query_value, remove_from_query, unauthorized)
from tproxy.config import ConfigError

__all__ = ["Plugin"]

_TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
               "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7f))

#: PyJWT's options: signature, aud and iss by PyJWT; exp, nbf by the
#: gateway's clock (see _check_times); iat not checked
_OPTIONS = {"verify_signature": True, "verify_exp": False, "verify_nbf": False,
            "verify_iat": False}


class _Key(object):
    """One verification key: its prepared key object and its one algorithm."""

    __slots__ = ("kid", "algorithm", "key", "consumer")

    def __init__(self, kid, algorithm, key, consumer):
        self.kid = kid
        self.algorithm = algorithm
        self.key = key
        self.consumer = consumer


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
                        "algorithm": {"enum": _ALGORITHMS},
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
            "consumer_header": {"type": ["string", "null"], "pattern": _TOKEN,
                                "default": CONSUMER_HEADER},
            "claims_to_headers": {
                "type": "object", "default": {},
                "additionalProperties": {"type": "string", "pattern": _TOKEN},
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
        self.by_kid = {}
        self.without_kid = []
        self.clock = None
        errors = []
        for i, spec in enumerate(settings["keys"]):
            try:
                path = "keys[{}]".format(i)
                self._add(self._from_settings(spec, path), path)
            except ConfigError as e:
                errors.extend(e.errors)
        if settings["jwks_file"]:
            try:
                for key in _read_jwks(settings["jwks_file"]):
                    self._add(key, "jwks_file")
            except ConfigError as e:
                errors.extend(e.errors)
        if not errors and not self.by_kid and not self.without_kid:
            errors.append(("", "no key: give keys or jwks_file"))
        if errors:
            raise ConfigError(errors)
        self.challenge = 'Bearer realm="{}"'.format(self.realm)

    # -- keys -----------------------------------------------------------------

    def _add(self, key, path):
        if key.kid is None:
            self.without_kid.append(key)
        elif key.kid in self.by_kid:
            raise ConfigError((path, "kid {!r} is used twice".format(key.kid)))
        else:
            self.by_kid[key.kid] = key

    @staticmethod
    def _from_settings(spec, path):
        algorithm = spec["algorithm"]
        if algorithm.startswith("HS"):
            material = spec.get("secret")
            if material is None or "public_key" in spec:
                raise ConfigError((path, "algorithm {} needs a secret (and no "
                                   "public_key)".format(algorithm)))
            material = material.encode("utf-8")
        else:
            material = spec.get("public_key")
            if material is None or "secret" in spec:
                raise ConfigError((path, "algorithm {} needs a public_key (and no "
                                   "secret)".format(algorithm)))
        try:
            prepared = get_default_algorithms()[algorithm].prepare_key(material)
        except Exception as e:
            raise ConfigError((path, "not a key for {}: {}".format(algorithm, e)))
        if not algorithm.startswith("HS") and hasattr(prepared, "private_bytes"):
            raise ConfigError((path, "public_key is a private key: give the "
                               "public key only"))
        return _Key(spec.get("kid"), algorithm, prepared, spec.get("consumer"))

    # -- per request ----------------------------------------------------------

    @hookimpl
    def init_worker(self, gateway):
        """Use the gateway's clock for ``exp`` and ``nbf``."""
        self.clock = gateway.reactor

    def _token(self, request):
        """``(token or None, where it came from or None)``."""
        value = request.headers.get(self.header)
        if value is not None:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip(), "header"
            return "", "header"
        if self.query_names is not None and request.query:
            found = query_value(request.query, self.query_names)
            if found is not None:
                return found[1], "query"
        return None, None

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
        now = self.clock.seconds() if self.clock is not None else _wall()
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
        """``(consumer or None, [(header, value)])`` of a verified token."""
        consumer = key.consumer
        if consumer is None:
            claimed = claims.get(self.consumer_claim)
            if isinstance(claimed, str) and claimed:
                consumer = _header_value(claimed)
        headers = []
        for claim, name in self.claim_headers:
            value = claims.get(claim)
            if value is not None:
                headers.append((name, _header_value(value)))
        return consumer, headers

    @hookimpl
    def access(self, ctx):
        """Check the token; hide it; send the consumer and claims upstream."""
        request = ctx.request
        headers = request.headers
        token, where = self._token(request)
        if where == "header":
            headers.remove(self.header)
        if self.query_names is not None and request.query:
            remove_from_query(ctx, self.query_names)
        if self.consumer_header is not None:
            headers.remove(self.consumer_header)
        for _, name in self.claim_headers:
            headers.remove(name)
        if token is None:
            return unauthorized(self.challenge, "missing bearer token")
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
            claims, consumer, claim_headers = cached
            self._check_times(claims)
        except _Invalid as e:
            return unauthorized(
                '{}, error="invalid_token", error_description="{}"'.format(
                    self.challenge, e), "invalid token", reason=str(e))
        ctx.vars["jwt_claims"] = claims
        if consumer is not None:
            ctx.vars["consumer"] = consumer
            if self.consumer_header is not None:
                headers.set(self.consumer_header, consumer)
        for name, value in claim_headers:
            headers.set(name, value)
        return None


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _wall():
    import time
    return time.time()


def _safe(text):
    """``text`` fit for a quoted header parameter."""
    return quote(str(text), safe=_PRINTABLE.replace('"', "").replace("\\", ""))


def _header_value(value):
    """A claim's value as a header value."""
    if not isinstance(value, str):
        value = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return quote(value, safe=_PRINTABLE)


def _read_jwks(path):
    """The :class:`_Key` of each key of the JWKS file ``path``."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(("jwks_file", "cannot read {}: {}".format(path, e)))
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ConfigError(("jwks_file", "{} is not a JWKS (an object with "
                           "\"keys\": [...])".format(path)))
    keys = []
    for i, jwk in enumerate(data["keys"]):
        where = "jwks_file"
        if not isinstance(jwk, dict):
            raise ConfigError((where, "{}: keys[{}] is not an object".format(path, i)))
        if jwk.get("use", "sig") != "sig":
            continue
        if "d" in jwk:
            raise ConfigError((where, "{}: keys[{}] is a private key".format(path, i)))
        try:
            parsed = jwt.PyJWK.from_dict(jwk)
        except Exception as e:
            raise ConfigError((where, "{}: keys[{}]: {}".format(path, i, e)))
        algorithm = getattr(parsed, "algorithm_name", None) or jwk.get("alg")
        if algorithm not in _ALGORITHMS:
            raise ConfigError((where, "{}: keys[{}]: algorithm {!r} is not "
                               "allowed".format(path, i, algorithm)))
        keys.append(_Key(jwk.get("kid"), algorithm, parsed.key, None))
    return keys
