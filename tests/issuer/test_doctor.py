"""`warrant doctor` checks the public side as STS sees it, and names what to fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from issuer.doctor import run_checks
from keys.jwk import generate_key, public_jwk
from keys.model import Algorithm
from tests.e2e import base_env, cli, running_warrant

BAD_ISSUER = "https://bad.example.test"


def broken_issuer(key: dict[str, Any]) -> Starlette:
    """Everything a misconfigured issuer gets wrong at once."""

    def discovery(_: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": BAD_ISSUER + "/",
                "jwks_uri": BAD_ISSUER + "/keys",
                "id_token_signing_alg_values_supported": ["HS256"],
            },
            headers={"cache-control": "no-cache"},
        )

    def keys(_: Request) -> JSONResponse:
        tampered = {**key, "kid": "not-the-thumbprint", "d": "private"}
        return JSONResponse({"keys": [tampered, tampered]}, headers={"cache-control": "max-age=0"})

    return Starlette(
        routes=[Route("/.well-known/openid-configuration", discovery), Route("/keys", keys)]
    )


async def test_a_broken_issuer_fails_each_check_with_the_fix() -> None:
    """Trailing-slash issuer, no-cache, HS256, duplicate/mismatched kids and private members are
    each reported."""
    key = public_jwk(generate_key(Algorithm.RS256), Algorithm.RS256)
    transport = httpx.ASGITransport(app=broken_issuer(key))
    async with httpx.AsyncClient(transport=transport) as client:
        checks = {c.name: c for c in await run_checks(BAD_ISSUER, client)}
    assert not checks["discovery issuer"].ok
    assert "must be exactly" in checks["discovery issuer"].detail
    assert not checks["discovery cache headers"].ok
    assert "never no-cache" in checks["discovery cache headers"].detail
    assert not checks["jwks cache headers"].ok
    assert not checks["signing algorithms"].ok
    keys = checks["published keys"]
    assert not keys.ok
    assert "appears twice" in keys.detail
    assert "non-public members ['d']" in keys.detail
    assert "thumbprint" in keys.detail
    assert checks["discovery reachable"].ok


async def test_an_unreachable_issuer_is_reported() -> None:
    """A discovery URL that cannot be fetched fails the first check and stops there."""
    async with httpx.AsyncClient() as client:
        checks = await run_checks("http://127.0.0.1:9", client)
    assert [c.name for c in checks] == ["discovery reachable"]
    assert not checks[0].ok
    assert "STS must reach it" in checks[0].detail


@pytest.mark.slow
def test_doctor_passes_against_the_real_server(tmp_path: Path) -> None:
    """Against a running Warrant every check passes and the command exits 0."""
    with running_warrant(tmp_path / "var") as server:
        result = cli(server.env, "doctor")
    assert "FAIL" not in result.stdout
    assert "all 11 checks passed" in result.stdout
    failed = cli(
        base_env(tmp_path / "other"), "doctor", "--issuer-url", "http://127.0.0.1:9", check=False
    )
    assert failed.returncode == 1
    assert "FAIL  discovery reachable" in failed.stdout
