"""The soak's token verifier: PyJWT against the served JWKS, cached exactly as long as its
`Cache-Control: max-age` allows, as a careful relying party (AWS STS among them) caches it.

A token whose `kid` is missing from a cached copy that is still fresh means the key signed before
every verifier could have seen it (the publish-ahead was too short): that is an error even though
the verifier then refetches once (as STS does) and may find the key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from broker.standin.idp import cache_lifetime

__all__ = ["JwksCache", "TokenRejected", "verify_token"]

# Warrant's tokens carry every one of these (README, "Tokens").
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti")


class TokenRejected(Exception):
    """A minted token failed verification; `reason` is a short, countable cause."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class _Copy:
    keys: Mapping[str, Mapping[str, Any]] = field(repr=False)  # kid -> JWK
    fetched_at: float
    fresh_until: float


class JwksCache:
    """The issuer's JWKS, refetched only when the cached copy's max-age has passed, or once when
    a token names a kid the copy lacks. Thread-safe; `fetches` and `kid_misses` count."""

    def __init__(
        self, client: httpx.Client, jwks_url: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._url = jwks_url
        self._clock = clock
        self._lock = threading.Lock()
        self._copy: _Copy | None = None
        self.fetches = 0
        self.kid_misses = 0

    def key(self, kid: str) -> Mapping[str, Any]:
        """The JWK for `kid`; raises TokenRejected when it is not published, or when a fresh
        cached copy lacked it (published too late for cached verifiers)."""
        with self._lock:
            now = self._clock()
            copy = self._copy
            if copy is None or now >= copy.fresh_until:
                copy = self._fetch(now)
            jwk = copy.keys.get(kid)
            if jwk is not None:
                return jwk
            self.kid_misses += 1
            age = now - copy.fetched_at
            refetched = self._fetch(now)
            if kid in refetched.keys:
                raise TokenRejected(
                    "kid not in fresh cached JWKS",
                    f"kid {kid} signed a token while a JWKS copy fetched {age:.1f}s ago (within "
                    "its max-age) lacked it: the key was not published ahead long enough",
                )
            raise TokenRejected("unknown kid", f"kid {kid} is not in the served JWKS")

    def _fetch(self, now: float) -> _Copy:
        try:
            response = self._client.get(self._url)
        except httpx.HTTPError as exc:
            raise TokenRejected("JWKS fetch failed", f"GET {self._url}: {exc!r}") from exc
        if response.status_code != 200:
            raise TokenRejected(
                "JWKS fetch failed", f"GET {self._url} answered {response.status_code}"
            )
        try:
            keys = {str(k["kid"]): k for k in response.json()["keys"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenRejected("JWKS malformed", f"{exc!r}: {response.text[:200]}") from exc
        self.fetches += 1
        lifetime = cache_lifetime(response.headers).total_seconds()
        self._copy = _Copy(keys, now, now + lifetime)
        return self._copy


def verify_token(
    token: str,
    jwks: JwksCache,
    *,
    issuer: str,
    audience: str,
    subject: str,
    kid: str | None = None,
) -> dict[str, Any]:
    """The verified claims of `token`, or TokenRejected: signature by a published key with the
    algorithm its JWK names, `iss`/`aud`/`sub` exact, every claim present, within its lifetime,
    and the `kid` the minting API reported."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenRejected("malformed token", repr(exc)) from exc
    token_kid = header.get("kid")
    if not isinstance(token_kid, str):
        raise TokenRejected("no kid", f"header {header}")
    if header.get("typ") != "JWT":
        raise TokenRejected("bad typ", f"header {header}")
    if kid is not None and kid != token_kid:
        raise TokenRejected("kid mismatch", f"the API said {kid}, the header says {token_kid}")
    jwk = jwks.key(token_kid)
    alg = str(jwk.get("alg", ""))
    if header.get("alg") != alg:
        raise TokenRejected("alg mismatch", f"header {header.get('alg')}, JWK {alg}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=jwt.PyJWK(dict(jwk)).key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.PyJWTError as exc:
        raise TokenRejected(f"invalid: {type(exc).__name__}", str(exc)) from exc
    if claims["sub"] != subject:
        raise TokenRejected("wrong sub", f"{claims['sub']!r}, expected {subject!r}")
    return claims
