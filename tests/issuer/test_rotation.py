"""Scheduled rotation seen by verifiers that cache our JWKS: zero failed verifications."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt

from issuer.apikeys import Role
from issuer.runtime import IssuerRuntime
from issuer.settings import Settings
from keys.model import KeyState
from tests.conftest import ISSUER, FakeClock, bearer, issuer_env

# jose's createRemoteJWKSet keeps a JWKS for 10 minutes; we assume the worst of STS too: it
# ignores our max-age and never refetches on an unknown kid.
VERIFIER_CACHE = timedelta(minutes=10)
STEP = timedelta(minutes=5)


@dataclass
class CachingVerifier:
    """Fetches the JWKS through the public app and keeps it for VERIFIER_CACHE; never refetches
    early, so an unknown kid is a failure, not a retry."""

    client: httpx.AsyncClient
    clock: FakeClock
    fetched_at: datetime | None = None
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    unknown_kid_failures: int = 0

    async def verify(self, token: str, tenant: str) -> dict[str, Any]:
        now = self.clock()
        if self.fetched_at is None or now - self.fetched_at >= VERIFIER_CACHE:
            body = (await self.client.get("/.well-known/jwks.json")).json()
            self.keys = {k["kid"]: k for k in body["keys"]}
            self.fetched_at = now
        kid = jwt.get_unverified_header(token)["kid"]
        if kid not in self.keys:
            self.unknown_kid_failures += 1
            raise AssertionError(f"unknown kid {kid} at {now}")
        # pyjwt reads the wall clock; time claims are checked against the injected clock below.
        claims: dict[str, Any] = jwt.decode(
            token,
            jwt.PyJWK(self.keys[kid]),
            algorithms=["RS256", "ES256"],
            audience=f"{tenant}-oidc-service",
            issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["nbf"] <= now.timestamp() < claims["exp"], "token not valid now"
        return claims


async def test_three_rotation_cycles_never_meet_an_unknown_kid(
    data_dir: Path, clock: FakeClock
) -> None:
    """Over 3+ scheduled rotations, a 10-minute-caching verifier verifies every fresh token and
    every outstanding token until it expires; retired keys are pruned afterwards."""
    settings = Settings.from_env(issuer_env(data_dir, WARRANT_KEY_ROTATION_PERIOD="3h"))
    runtime = await IssuerRuntime.open(settings, clock)
    public = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=runtime.public_app), base_url=ISSUER
    )
    internal = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=runtime.internal_app), base_url="http://internal"
    )
    try:
        agent = bearer(runtime, Role.AGENT)
        await internal.post(
            "/v1/tenants", json={"slug": "acme"}, headers=bearer(runtime, Role.ADMIN)
        )
        verifiers = [CachingVerifier(public, clock) for _ in range(3)]
        outstanding: list[tuple[str, int]] = []
        active_kids: list[str] = []
        max_published = 0
        for step in range(int(timedelta(hours=13) / STEP)):
            clock.advance(STEP)
            await runtime.maintain_keys()
            response = await internal.post(
                "/v1/tokens", json={"tenant": "acme", "ttl_seconds": 3600}, headers=agent
            )
            assert response.status_code == 200, response.text
            token = response.json()["token"]
            kid = response.json()["kid"]
            if not active_kids or active_kids[-1] != kid:
                active_kids.append(kid)
            outstanding.append(
                (token, jwt.decode(token, options={"verify_signature": False})["exp"])
            )
            outstanding = [(t, exp) for t, exp in outstanding if exp > clock().timestamp()]
            for verifier in verifiers[: 1 + step % len(verifiers)]:
                for outstanding_token, _ in outstanding:
                    await verifier.verify(outstanding_token, "acme")
            published = json.loads(runtime.keyring.jwks.body)["keys"]
            max_published = max(max_published, len(published))
        assert len(active_kids) >= 4, "expected at least three rotations"
        assert all(v.unknown_kid_failures == 0 for v in verifiers)
        assert max_published <= 3
        states = [r.state for r in runtime.keyring.snapshot.records]
        assert states.count(KeyState.ACTIVE) == 1
        # Keys retired more than max token ttl + max-age + 5 min ago are gone.
        assert all(
            kid not in {r.kid for r in runtime.keyring.snapshot.records} for kid in active_kids[:-2]
        )
    finally:
        await public.aclose()
        await internal.aclose()
        await runtime.close()


async def test_token_minted_just_before_rotation_verifies_until_it_expires(
    data_dir: Path, clock: FakeClock
) -> None:
    """A max-lifetime token signed a second before its key retires still verifies against a
    freshly fetched JWKS one second before it expires."""
    settings = Settings.from_env(issuer_env(data_dir, WARRANT_KEY_ROTATION_PERIOD="2h"))
    runtime = await IssuerRuntime.open(settings, clock)
    public = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=runtime.public_app), base_url=ISSUER
    )
    internal = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=runtime.internal_app), base_url="http://internal"
    )
    try:
        await internal.post(
            "/v1/tenants", json={"slug": "acme"}, headers=bearer(runtime, Role.ADMIN)
        )
        clock.advance(timedelta(hours=2) - timedelta(seconds=1))
        response = await internal.post(
            "/v1/tokens",
            json={"tenant": "acme", "ttl_seconds": 3600},
            headers=bearer(runtime, Role.AGENT),
        )
        token, old_kid = response.json()["token"], response.json()["kid"]
        clock.advance(timedelta(seconds=1))
        await runtime.maintain_keys()
        assert runtime.keyring.signer().kid != old_kid
        clock.advance(timedelta(seconds=3600 - 2))
        await runtime.maintain_keys()
        fresh = CachingVerifier(public, clock)
        assert (await fresh.verify(token, "acme"))["sub"] == "tenant:acme"
    finally:
        await public.aclose()
        await internal.aclose()
        await runtime.close()
