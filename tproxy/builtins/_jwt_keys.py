# -*- test-case-name: tests.test_jwt_auth -*-
"""
The verification keys of the ``jwt_auth`` plugin
(:mod:`tproxy.builtins.jwt_auth`): from its ``keys`` setting and from a JWKS
file, each a :class:`Key` with its one algorithm; indexed by ``kid``.
"""

import json

import jwt
from jwt.algorithms import get_default_algorithms

from tproxy.config import ConfigError, json_error

__all__ = ["ALGORITHMS", "Key", "index_keys", "key_from_settings", "parse_jwks",
           "read_jwks"]

#: the algorithms a key may have (never the token's own ``alg``)
ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
              "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class Key(object):
    """One verification key: its prepared key object and its one algorithm."""

    __slots__ = ("kid", "algorithm", "key", "consumer", "from_jwks")

    def __init__(self, kid, algorithm, key, consumer, from_jwks=False):
        self.kid = kid
        self.algorithm = algorithm
        self.key = key
        self.consumer = consumer
        self.from_jwks = from_jwks


def index_keys(keys):
    """
    ``(by_kid, without_kid)``: the keys with a ``kid`` by it, and the list of
    those without (a token names the one it was signed with, or none).

    :raises ConfigError: for a ``kid`` used twice.
    """
    by_kid, without_kid = {}, []
    for key in keys:
        if key.kid is None:
            without_kid.append(key)
        elif key.kid in by_kid:
            raise ConfigError(("jwks_file" if key.from_jwks else "keys",
                               "kid {!r} is used twice".format(key.kid)))
        else:
            by_kid[key.kid] = key
    return by_kid, without_kid


def key_from_settings(spec, path):
    """
    The :class:`Key` of an entry of the ``keys`` setting (``spec``; ``path``
    names it in errors): a ``secret`` for HS*, a PEM ``public_key``
    otherwise.

    :raises ConfigError: for a missing or wrong kind of material, or a
        private key.
    """
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
    return Key(spec.get("kid"), algorithm, prepared, spec.get("consumer"))


def read_jwks(path):
    """The bytes of the file ``path``."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(("jwks_file", "cannot read {}: {}".format(path, e)))


def parse_jwks(path, data):
    """The :class:`Key` of each key of the JWKS ``data`` (read from ``path``)."""
    try:
        data = json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise ConfigError(("jwks_file", "cannot read {}: {}".format(path, json_error(e))))
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
        kid = jwk.get("kid")
        if kid is not None and not (isinstance(kid, str) and kid):
            # (a token's kid is a string: any other would match none)
            raise ConfigError((where, "{}: keys[{}]: kid must be a non-empty string, "
                               "not {}".format(path, i, json.dumps(kid))))
        if jwk.get("alg", ALGORITHMS[0]) not in ALGORITHMS:
            raise ConfigError((where, "{}: keys[{}]: algorithm {} is not allowed".format(
                path, i, json.dumps(jwk["alg"]))))
        try:
            parsed = jwt.PyJWK.from_dict(jwk)
        except KeyError as e:
            raise ConfigError((where, "{}: keys[{}]: member {} is missing".format(path, i, e)))
        except Exception as e:
            raise ConfigError((where, "{}: keys[{}]: {}".format(
                path, i, e or type(e).__name__)))
        algorithm = getattr(parsed, "algorithm_name", None) or jwk.get("alg")
        if algorithm not in ALGORITHMS:
            raise ConfigError((where, "{}: keys[{}]: algorithm {} is not "
                               "allowed".format(path, i, json.dumps(algorithm))))
        keys.append(Key(kid, algorithm, parsed.key, None, True))
    return keys
