"""The real `warrant serve` with its keys in the database: two replicas sharing them (PostgreSQL
and SQLite), and the KMS store against moto's KMS server. Tokens are verified with PyJWT's
PyJWKClient against the JWKS each replica serves."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import jwt
import pytest

from keys.kms_custody import ALIAS_PREFIX
from tests.e2e import RunningWarrant, cli, running_warrant

# Both replicas must put the same `iss` in their tokens; dev mode allows a loopback http URL.
ISSUER = "http://127.0.0.1"
AUDIENCE = "acme-oidc-service"
REGION = "us-east-1"
# Replicas notice a change within the reload interval; allow for a loaded machine.
SPREAD_TIMEOUT = 20.0
MOTO_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAKMSE2E0000000000", "AWS_SECRET_ACCESS_KEY": "kms-e2e"}


def add_tenant(server: RunningWarrant, admin: dict[str, str]) -> None:
    response = httpx.post(
        server.internal_url + "/v1/tenants", json={"slug": "acme"}, headers=admin, timeout=10
    )
    assert response.status_code == 201, response.text


def mint(server: RunningWarrant, agent: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(
        server.internal_url + "/v1/tokens",
        json={"tenant": "acme", "subject": "sbx-1"},
        headers=agent,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def verify(token: str, server: RunningWarrant) -> dict[str, Any]:
    """PyJWT, fetching the JWKS `server` publishes."""
    client = jwt.PyJWKClient(server.public_url + "/.well-known/jwks.json", cache_keys=False)
    key = client.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256", "ES256"], audience=AUDIENCE, issuer=ISSUER
    )
    return claims


def jwks_kids(server: RunningWarrant) -> set[str]:
    response = httpx.get(server.public_url + "/.well-known/jwks.json", timeout=10)
    return {key["kid"] for key in response.json()["keys"]}


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + SPREAD_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {SPREAD_TIMEOUT} s: {what}")
        time.sleep(0.2)


def signs_with(server: RunningWarrant, agent: dict[str, str], kid: str) -> Callable[[], bool]:
    return lambda: mint(server, agent)["kid"] == kid


def no_secrets_logged(server: RunningWarrant, *secrets: str) -> None:
    logs = server.logs()
    for secret in secrets:
        assert secret not in logs


@pytest.mark.slow
def test_two_replicas_share_keys_in_the_database(tmp_path: Path, database_url: str) -> None:
    """Two `warrant serve` replicas on one database (WARRANT_KEY_STORE=database) serve the same
    JWKS; a token minted by either verifies against the other's; a rotation made with the CLI
    reaches both, and each then signs with the new key."""
    kek = base64.b64encode(os.urandom(32)).decode()
    settings = {
        "WARRANT_ISSUER_URL": ISSUER,
        "WARRANT_DATABASE_URL": database_url,
        "WARRANT_KEY_STORE": "database",
        "WARRANT_KEY_ENCRYPTION_KEY": kek,
        "WARRANT_KEY_RELOAD_INTERVAL": "1",
    }
    with running_warrant(tmp_path / "a", **settings) as first:
        admin, agent = first.key("admin"), first.key("agent")
        add_tenant(first, admin)
        with running_warrant(tmp_path / "b", **settings) as second:
            assert jwks_kids(first) == jwks_kids(second)
            assert len(jwks_kids(first)) == 2
            from_first, from_second = mint(first, agent), mint(second, agent)
            assert from_first["kid"] == from_second["kid"]
            assert verify(from_first["token"], second)["sub"] == "tenant:acme:sbx-1"
            assert verify(from_second["token"], first)["sub"] == "tenant:acme:sbx-1"

            rotated = cli(first.env, "keys", "rotate", "--force")
            assert "is now active" in rotated.stdout
            listed = cli(second.env, "keys", "list").stdout
            new_kid = next(
                line.split()[0] for line in listed.splitlines() if " active " in f" {line} "
            )
            assert new_kid != from_first["kid"]
            for server in (first, second):
                eventually(signs_with(server, agent, new_kid), f"{server.public_url} rotates")
                token = mint(server, agent)["token"]
                assert verify(token, first)["sub"] == verify(token, second)["sub"]
            assert not (tmp_path / "a" / "keys").exists()
            assert not (tmp_path / "b" / "keys").exists()
        no_secrets_logged(second, kek)
    no_secrets_logged(first, kek)


@pytest.mark.slow
def test_serving_with_keys_in_kms(tmp_path: Path, moto_url: str) -> None:
    """`warrant serve` with WARRANT_KEY_STORE=kms creates its keys in KMS (tagged, aliased by
    kid), mints tokens KMS signs that verify against the served JWKS, and a CLI rotation
    creates the next KMS key, disables the retired one, and reaches the server."""
    settings = {
        "WARRANT_ISSUER_URL": ISSUER,
        "WARRANT_KEY_STORE": "kms",
        "WARRANT_KMS_REGION": REGION,
        "WARRANT_KMS_ENDPOINT": moto_url,
        "WARRANT_KEY_RELOAD_INTERVAL": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
        **MOTO_KEYS,
    }
    kms = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id=MOTO_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=MOTO_KEYS["AWS_SECRET_ACCESS_KEY"],
    )

    def alias_targets() -> dict[str, str]:
        aliases = kms.list_aliases()["Aliases"]
        return {
            a["AliasName"].removeprefix(ALIAS_PREFIX): a["TargetKeyId"]
            for a in aliases
            if a["AliasName"].startswith(ALIAS_PREFIX)
        }

    with running_warrant(tmp_path / "kms", **settings) as server:
        add_tenant(server, server.key("admin"))
        agent = server.key("agent")
        minted = mint(server, agent)
        assert verify(minted["token"], server)["aud"] == AUDIENCE
        published = jwks_kids(server)
        targets = alias_targets()
        assert published <= set(targets)
        for kid in published:
            tags = kms.list_resource_tags(KeyId=targets[kid])["Tags"]
            assert {"TagKey": "warrant:managed-by", "TagValue": "warrant"} in tags
            assert {"TagKey": "warrant:kid", "TagValue": kid} in tags

        assert minted["kid"] in cli(server.env, "keys", "list").stdout
        cli(server.env, "keys", "rotate", "--force")
        eventually(lambda: mint(server, agent)["kid"] != minted["kid"], "the rotation spreads")
        after = mint(server, agent)
        assert verify(after["token"], server)["sub"] == "tenant:acme:sbx-1"
        assert after["kid"] in alias_targets()
        state = kms.describe_key(KeyId=alias_targets()[minted["kid"]])["KeyMetadata"]["KeyState"]
        assert state == "Disabled"
        no_secrets_logged(server, MOTO_KEYS["AWS_SECRET_ACCESS_KEY"])
