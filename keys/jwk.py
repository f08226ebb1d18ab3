"""Public JWKs, RFC 7638 thumbprints and the JWKS document, built from an allow-list.

Every JWK that leaves this module is rebuilt from `PUBLIC_MEMBERS`, never copied from a key's
own dict, so a private member (`d`, `p`, `q`, `dp`, `dq`, `qi`, `oth`, `k`, or anything else)
cannot reach the JWKS even when a private key or a tampered record is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from keys.errors import KeysError
from keys.model import PUBLISHED_STATES, Algorithm, KeyRecord

__all__ = [
    "PUBLIC_MEMBERS",
    "JoseKey",
    "check_key_matches_alg",
    "generate_key",
    "import_jwk",
    "import_pem",
    "jwks_document",
    "private_pem",
    "public_jwk",
    "thumbprint",
]

JoseKey = RSAKey | ECKey

# The only members a published JWK may carry.
PUBLIC_MEMBERS = ("kty", "kid", "use", "alg", "n", "e", "crv", "x", "y")

# RSA-2048 is what EKS and AWS's own self-hosted IRSA recipe use; larger keys only cost time.
RSA_KEY_BITS = 2048
EC_CURVE = "P-256"


def generate_key(alg: Algorithm) -> JoseKey:
    """A fresh private key for `alg`: RSA-2048 for RS256, P-256 for ES256."""
    if alg is Algorithm.RS256:
        return RSAKey.generate_key(RSA_KEY_BITS, private=True)
    return ECKey.generate_key(EC_CURVE, private=True)


def import_jwk(jwk: Mapping[str, Any]) -> JoseKey:
    """Parse a JWK dict (public or private) into a joserfc key; KeysError if it is not RSA/EC."""
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            return RSAKey.import_key(dict(jwk))
        if kty == "EC":
            return ECKey.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise KeysError(f"JWK of type {kty!r} cannot be parsed: {type(exc).__name__}") from exc
    raise KeysError(f"JWK type {kty!r} is not supported; expected RSA or EC")


def import_pem(pem: bytes, alg: Algorithm) -> JoseKey:
    """Parse a PEM private key for `alg`; KeysError (never the key bytes) if it is not one."""
    key_class = RSAKey if alg is Algorithm.RS256 else ECKey
    try:
        key: JoseKey = key_class.import_key(pem)
    except (JoseError, ValueError, TypeError) as exc:
        raise KeysError(f"not a readable {alg.value} PEM key: {type(exc).__name__}") from exc
    if not key.is_private:
        raise KeysError("the PEM holds a public key where a private key was expected")
    check_key_matches_alg(key, alg)
    return key


def private_pem(key: JoseKey) -> bytes:
    """PKCS#8 PEM of a private key, unencrypted: the file's 0600 mode is its protection."""
    return key.as_pem(private=True)


def thumbprint(key: JoseKey | Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint (base64url SHA-256) of the key's public part: our kid."""
    jose_key = key if isinstance(key, RSAKey | ECKey) else import_jwk(key)
    return jose_key.thumbprint()


def check_key_matches_alg(key: JoseKey, alg: Algorithm) -> None:
    """Raise KeysError unless `key` is the kind of key `alg` signs with."""
    if alg is Algorithm.RS256:
        if not isinstance(key, RSAKey):
            raise KeysError("RS256 needs an RSA key")
        return
    if not isinstance(key, ECKey) or key.curve_name != EC_CURVE:
        raise KeysError(f"ES256 needs an EC key on {EC_CURVE}")


def public_jwk(key: JoseKey | Mapping[str, Any], alg: Algorithm) -> dict[str, str]:
    """The published form of `key`: allowed public members, kid = thumbprint, use=sig, alg."""
    jose_key = key if isinstance(key, RSAKey | ECKey) else import_jwk(key)
    check_key_matches_alg(jose_key, alg)
    members = jose_key.as_dict(private=False)
    jwk = {name: value for name, value in members.items() if isinstance(value, str)}
    jwk.update(kid=jose_key.thumbprint(), use="sig", alg=alg.value)
    return _allowed(jwk)


def jwks_document(records: Iterable[KeyRecord]) -> bytes:
    """Compact, deterministic JWKS JSON of the published records, oldest first."""
    published = sorted(
        (r for r in records if r.state in PUBLISHED_STATES),
        key=lambda r: (r.created_at, r.kid),
    )
    document = {"keys": [_allowed(r.public_jwk) for r in published]}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _allowed(jwk: Mapping[str, object]) -> dict[str, str]:
    return {name: value for name in PUBLIC_MEMBERS if isinstance(value := jwk.get(name), str)}
