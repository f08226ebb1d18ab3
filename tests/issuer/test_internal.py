"""The internal listener: auth, tenants, minting, key admin, readiness and metrics."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from issuer.apikeys import Role
from issuer.runtime import IssuerRuntime
from issuer.settings import Settings
from tests.conftest import ISSUER, FakeClock, bearer, issuer_env


def decode_segment(token: str, index: int) -> dict[str, Any]:
    segment = token.split(".")[index]
    value: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return value


def jwks_key(runtime: IssuerRuntime, kid: str) -> jwt.PyJWK:
    jwks = json.loads(runtime.keyring.jwks.body)
    return jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))


async def add_tenant(client: httpx.AsyncClient, admin: dict[str, str], slug: str) -> None:
    response = await client.post("/v1/tenants", json={"slug": slug}, headers=admin)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/tokens"),
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("GET", "/v1/tenants/acme"),
        ("DELETE", "/v1/tenants/acme"),
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys/rotate"),
        ("POST", "/v1/keys/prune"),
        ("POST", "/v1/keys/x/revoke"),
    ],
)
async def test_every_endpoint_needs_a_key(
    internal: httpx.AsyncClient, method: str, path: str
) -> None:
    """Without a key, or with a wrong one, every API endpoint answers 401 with WWW-Authenticate."""
    for headers in ({}, {"Authorization": "Bearer wrn_agent_nope"}, {"Authorization": "Basic x"}):
        response = await internal.request(method, path, headers=headers)
        assert response.status_code == 401, (path, headers)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthenticated"


async def test_roles_are_enforced(
    internal: httpx.AsyncClient, admin: dict[str, str], agent: dict[str, str]
) -> None:
    """An agent key cannot administer and an admin key cannot mint: 403 naming the role."""
    response = await internal.get("/v1/tenants", headers=agent)
    assert response.status_code == 403
    assert "'admin' role" in response.json()["message"]
    response = await internal.post("/v1/tokens", json={"tenant": "acme"}, headers=admin)
    assert response.status_code == 403
    assert "'agent' role" in response.json()["message"]


async def test_minted_token_verifies_with_pyjwt(
    internal: httpx.AsyncClient,
    admin: dict[str, str],
    agent: dict[str, str],
    runtime: IssuerRuntime,
) -> None:
    """A minted token carries exact iss, per-tenant aud, integer times and verifies with pyjwt."""
    await add_tenant(internal, admin, "acme")
    response = await internal.post(
        "/v1/tokens", json={"tenant": "acme", "subject": "sbx-1"}, headers=agent
    )
    assert response.status_code == 200, response.text
    body = response.json()
    header = decode_segment(body["token"], 0)
    assert header == {"alg": "RS256", "kid": body["kid"], "typ": "JWT"}
    active = runtime.keyring.snapshot.active()
    assert active is not None
    assert body["kid"] == active.kid
    claims = jwt.decode(
        body["token"],
        jwks_key(runtime, body["kid"]),
        algorithms=["RS256"],
        audience="acme-oidc-service",
        issuer=ISSUER,
    )
    assert claims["sub"] == "tenant:acme:sbx-1"
    for name in ("iat", "nbf", "exp"):
        assert type(claims[name]) is int
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] <= claims["iat"]
    assert len(claims["jti"]) >= 16
    assert body["expires_at"].endswith("Z")


async def test_subject_defaults_to_the_tenant(
    internal: httpx.AsyncClient,
    admin: dict[str, str],
    agent: dict[str, str],
) -> None:
    """Without a subject the token's sub is tenant:<slug>."""
    await add_tenant(internal, admin, "acme")
    response = await internal.post(
        "/v1/tokens", json={"tenant": "acme", "ttl_seconds": 3600}, headers=agent
    )
    claims = decode_segment(response.json()["token"], 1)
    assert claims["sub"] == "tenant:acme"
    assert claims["exp"] - claims["iat"] == 3600


async def test_es256_tokens_verify_with_pyjwt(data_dir: Path, clock: FakeClock) -> None:
    """With WARRANT_KEY_ALG=ES256 tokens are ES256 with raw r||s signatures pyjwt accepts."""
    settings = Settings.from_env(issuer_env(data_dir, WARRANT_KEY_ALG="ES256"))
    rt = await IssuerRuntime.open(settings, clock)
    try:
        transport = httpx.ASGITransport(app=rt.internal_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://i") as client:
            await add_tenant(client, bearer(rt, Role.ADMIN), "acme")
            response = await client.post(
                "/v1/tokens", json={"tenant": "acme"}, headers=bearer(rt, Role.AGENT)
            )
        token = response.json()["token"]
        assert decode_segment(token, 0)["alg"] == "ES256"
        claims = jwt.decode(
            token,
            jwks_key(rt, response.json()["kid"]),
            algorithms=["ES256"],
            audience="acme-oidc-service",
            issuer=ISSUER,
        )
        assert claims["sub"] == "tenant:acme"
        discovery = json.loads(rt.keyring.discovery.body)
        assert discovery["id_token_signing_alg_values_supported"] == ["ES256"]
    finally:
        await rt.close()


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"tenant": "ghost"}, 404, "no tenant 'ghost'"),
        ({"tenant": "Bad_Slug"}, 400, "lowercase"),
        ({"tenant": "acme", "ttl_seconds": 5}, 400, "allowed: 60 to 3600"),
        ({"tenant": "acme", "ttl_seconds": 3601}, 400, "allowed: 60 to 3600"),
        ({"tenant": "acme", "ttl_seconds": "300"}, 400, "ttl_seconds must be an integer"),
        ({"tenant": "acme", "ttl_seconds": True}, 400, "ttl_seconds must be an integer"),
        ({"tenant": "acme", "subject": "has space"}, 400, "subject must be"),
        ({"tenant": "acme", "subject": "x" * 250}, 400, "subject must be"),
        ({"tenant": "acme", "extra": 1}, 400, "unknown field(s) 'extra'"),
        ({}, 400, "tenant is required"),
        ({"tenant": 7}, 400, "tenant must be a string"),
    ],
)
async def test_bad_mint_requests_say_what_to_fix(
    internal: httpx.AsyncClient,
    admin: dict[str, str],
    agent: dict[str, str],
    body: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    """Every malformed mint request gets a 4xx whose message states the rule."""
    await add_tenant(internal, admin, "acme")
    response = await internal.post("/v1/tokens", json=body, headers=agent)
    assert response.status_code == status, response.text
    assert fragment in response.json()["message"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b"x" * 70_000, "at most 65536 bytes"),
    ],
)
async def test_malformed_bodies_are_400(
    internal: httpx.AsyncClient, agent: dict[str, str], content: bytes, fragment: str
) -> None:
    """Malformed or oversized JSON is a 400 that says so, never a 500."""
    response = await internal.post("/v1/tokens", content=content, headers=agent)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


async def test_tenant_admin_round_trip(
    internal: httpx.AsyncClient, admin: dict[str, str], agent: dict[str, str]
) -> None:
    """Tenants are created, listed, shown and removed; a removed tenant can no longer mint."""
    response = await internal.post(
        "/v1/tenants", json={"slug": "acme", "name": "Acme Corp"}, headers=admin
    )
    assert response.status_code == 201
    assert response.json()["audience"] == "acme-oidc-service"
    assert (
        await internal.post("/v1/tenants", json={"slug": "acme"}, headers=admin)
    ).status_code == 409
    listed = (await internal.get("/v1/tenants", headers=admin)).json()["tenants"]
    assert [t["slug"] for t in listed] == ["acme"]
    shown = await internal.get("/v1/tenants/acme", headers=admin)
    assert shown.json()["name"] == "Acme Corp"
    assert (await internal.delete("/v1/tenants/acme", headers=admin)).status_code == 204
    assert (await internal.get("/v1/tenants/acme", headers=admin)).status_code == 404
    minted = await internal.post("/v1/tokens", json={"tenant": "acme"}, headers=agent)
    assert minted.status_code == 404


async def test_bad_tenant_slug_states_the_rule(
    internal: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """A bad slug is a 400 that states the slug rule."""
    response = await internal.post("/v1/tenants", json={"slug": "-Nope"}, headers=admin)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_slug"


async def test_key_admin_over_http(
    internal: httpx.AsyncClient, admin: dict[str, str], runtime: IssuerRuntime, clock: FakeClock
) -> None:
    """Keys are listed, rotation is refused until safe (409 with safe_at), forced, and revoked."""
    keys = (await internal.get("/v1/keys", headers=admin)).json()["keys"]
    assert sorted(k["state"] for k in keys) == ["active", "pending"]
    refused = await internal.post("/v1/keys/rotate", headers=admin)
    assert refused.status_code == 409
    assert refused.json()["safe_at"].endswith("Z")
    old_active = runtime.keyring.signer().kid
    forced = await internal.post("/v1/keys/rotate", json={"force": True}, headers=admin)
    assert forced.status_code == 200
    assert forced.json()["retired_kid"] == old_active
    assert forced.json()["warning"]
    assert runtime.keyring.signer().kid != old_active
    revoked = await internal.post(f"/v1/keys/{old_active}/revoke", headers=admin)
    assert revoked.status_code == 200
    assert "invalid" in revoked.json()["message"]
    published = [k["kid"] for k in json.loads(runtime.keyring.jwks.body)["keys"]]
    assert old_active not in published
    missing = await internal.post("/v1/keys/nosuchkid/revoke", headers=admin)
    assert missing.status_code == 404
    pruned = await internal.post("/v1/keys/prune", headers=admin)
    assert pruned.status_code == 200
    assert old_active in pruned.json()["removed"]  # revoked records are pruned at once


async def test_readyz_and_metrics(internal: httpx.AsyncClient, admin: dict[str, str]) -> None:
    """Readiness checks the database and the signing key; metrics count requests by route."""
    ready = await internal.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"database": True, "signing_key": True}}
    await internal.get("/v1/tenants", headers=admin)
    text = (await internal.get("/metrics")).text
    assert (
        'warrant_http_requests_total{listener="internal",method="GET",route="/v1/tenants",'
        'status="200"} 1.0' in text
    )
    assert "warrant_active_key_age_seconds" in text
    assert 'warrant_signing_keys{state="pending"} 1.0' in text


async def test_unknown_route_is_json_404(internal: httpx.AsyncClient) -> None:
    """Unknown paths and methods are JSON errors naming the request."""
    response = await internal.get("/v2/nothing")
    assert response.status_code == 404
    assert "GET /v2/nothing" in response.json()["message"]
    response = await internal.put("/v1/tokens")
    assert response.status_code == 405
