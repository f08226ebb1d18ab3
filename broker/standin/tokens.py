"""The web identity token as STS reads it (aws-facts §1.2-1.3): the unverified header and `iss`
first (to find the provider), then the signature, checked with PyJWT so that our own signing
library (joserfc) is never the one vouching for itself, then the claims.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jwt

from broker.standin.errors import expired_web_identity_token, invalid_identity_token
from broker.standin.model import OidcProvider

__all__ = [
    "ALLOWED_ALGORITHMS",
    "CLOCK_SKEW",
    "UnverifiedToken",
    "WebIdentity",
    "check_claims",
    "read_unverified",
    "verify_signature",
]

log = logging.getLogger(__name__)

# IAM accepts a token up to 5 minutes after `exp` (IAM user guide, id_roles_providers_oidc); the
# same allowance is applied to `nbf` in the other direction.
CLOCK_SKEW = timedelta(minutes=5)
# RSA and ECDSA only (STS model, WebIdentityToken); PS*, EdDSA and HS* are refused.
ALLOWED_ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}


@dataclass(frozen=True)
class UnverifiedToken:
    issuer: str
    kid: str | None
    alg: str
    claims: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class WebIdentity:
    """The verified claims that matter to STS; the trust-policy condition keys come from these."""

    issuer: str
    audience: str
    subject: str
    azp: str | None
    amr: tuple[str, ...]
    has_session_tags: bool
    source_identity: str | None


def read_unverified(token: str) -> UnverifiedToken:
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise invalid_identity_token("The ID Token provided is not a valid JWT.") from exc
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise invalid_identity_token("Missing a required claim: iss")
    kid = header.get("kid")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise invalid_identity_token("The ID Token provided is not a valid JWT.")
    return UnverifiedToken(issuer, kid if isinstance(kid, str) else None, alg, claims)


def verify_signature(token: str, unverified: UnverifiedToken, jwk: Mapping[str, Any]) -> None:
    """The key must suit the header's algorithm (RSA for RS*, the matching curve for ES*) and, if
    it names an algorithm, name the same one."""
    expected = ALLOWED_ALGORITHMS.get(unverified.alg)
    if expected is None:
        log.info("alg %s from %s is not one STS accepts", unverified.alg, unverified.issuer)
        raise invalid_identity_token(
            f"The signing algorithm {unverified.alg} is not supported; use RS256, RS384, RS512, "
            "ES256, ES384 or ES512"
        )
    kty, crv = expected
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise invalid_identity_token()
    if jwk.get("alg", unverified.alg) != unverified.alg or jwk.get("use", "sig") != "sig":
        raise invalid_identity_token()
    try:
        key = jwt.PyJWK(dict(jwk), algorithm=unverified.alg)
        jwt.PyJWS().decode_complete(token, key=key, algorithms=[unverified.alg])
    except jwt.PyJWTError as exc:
        log.info("signature check failed for kid %r from %s", unverified.kid, unverified.issuer)
        raise invalid_identity_token("The token signature could not be verified") from exc


def _integer(claims: Mapping[str, Any], name: str) -> int | None:
    """STS requires integer NumericDates: a float such as Python's time.time() is refused."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_identity_token(
            f"The {name} claim must be an integer number of seconds since the epoch"
        )
    return value


def check_claims(claims: Mapping[str, Any], provider: OidcProvider, now: datetime) -> WebIdentity:
    audience = _audience(claims.get("aud"))
    if audience not in provider.client_ids:
        raise invalid_identity_token("Incorrect token audience")
    _integer(claims, "iat")
    exp = _integer(claims, "exp")
    nbf = _integer(claims, "nbf")
    if exp is None:
        raise invalid_identity_token("Missing a required claim: exp")
    current = int(now.timestamp())
    if current > exp + int(CLOCK_SKEW.total_seconds()):
        raise expired_web_identity_token(current, exp)
    if nbf is not None and nbf > current + int(CLOCK_SKEW.total_seconds()):
        raise invalid_identity_token("The token is not yet valid (nbf is in the future)")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise invalid_identity_token("Missing a required claim: sub")
    azp = claims.get("azp")
    return WebIdentity(
        issuer=str(claims["iss"]),
        audience=audience,
        subject=subject,
        azp=azp if isinstance(azp, str) else None,
        amr=_strings(claims.get("amr")),
        has_session_tags="https://aws.amazon.com/tags" in claims,
        source_identity=_source_identity(claims),
    )


def _audience(aud: object) -> str:
    """A string, or a one-element array (Kubernetes tokens). Several audiences are refused: how
    STS treats them is unconfirmed, so the stand-in fails safe."""
    if aud is None or aud in ("", []):
        raise invalid_identity_token("Missing a required claim: aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str):
        raise invalid_identity_token("Incorrect token audience")
    return aud


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _source_identity(claims: Mapping[str, Any]) -> str | None:
    value = claims.get("https://aws.amazon.com/source_identity")
    return value if isinstance(value, str) else None
