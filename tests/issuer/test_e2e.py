"""End to end: the real `warrant serve` on 127.0.0.1, driven by the real CLI and checked by
independent verifiers (pyjwt's PyJWKClient, openid-client)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.e2e import RunningWarrant, base_env, cli, running_warrant
from tests.services import in_ci

pytestmark = pytest.mark.slow

INTEROP = Path(__file__).resolve().parent.parent / "interop"


def mint(server: RunningWarrant, tenant: str, **extra: object) -> dict[str, str]:
    response = httpx.post(
        server.internal_url + "/v1/tokens",
        json={"tenant": tenant, **extra},
        headers=server.key("agent"),
        timeout=5,
    )
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


def verify(server: RunningWarrant, token: str, tenant: str) -> dict[str, object]:
    """What a relying party does: discovery -> jwks_uri -> verify iss/aud/exp/kid."""
    discovery = httpx.get(server.issuer_url + "/.well-known/openid-configuration", timeout=5)
    metadata = discovery.json()
    assert metadata["issuer"] == server.issuer_url
    client = jwt.PyJWKClient(metadata["jwks_uri"], cache_jwk_set=False)
    signing_key = client.get_signing_key_from_jwt(token)
    claims: dict[str, object] = jwt.decode(
        token,
        signing_key.key,
        algorithms=metadata["id_token_signing_alg_values_supported"],
        audience=f"{tenant}-oidc-service",
        issuer=metadata["issuer"],
        options={"require": ["iss", "aud", "exp", "iat", "sub"]},
    )
    return claims


def published_kids(server: RunningWarrant) -> set[str]:
    keys = httpx.get(server.public_url + "/.well-known/jwks.json", timeout=5).json()["keys"]
    return {k["kid"] for k in keys}


def wait_for(condition: object, timeout: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_serve_mint_verify_rotate_revoke(tmp_path: Path) -> None:
    """Through the real server and CLI: tokens verify with PyJWKClient, and CLI rotations and
    revocations reach the running service without a restart."""
    with running_warrant(tmp_path / "var") as server:
        added = cli(server.env, "tenants", "add", "acme", "--name", "Acme Corp")
        assert "acme-oidc-service" in added.stdout
        first = mint(server, "acme", subject="sbx-1")
        claims = verify(server, first["token"], "acme")
        assert claims["sub"] == "tenant:acme:sbx-1"
        assert claims["iss"] == server.issuer_url

        refused = cli(server.env, "keys", "rotate", check=False)
        assert refused.returncode == 1
        assert "safe" in refused.stderr
        forced = cli(server.env, "keys", "rotate", "--force")
        assert "WARNING" in forced.stderr
        # The running service notices the CLI's change (it polls the store's revision).
        wait_for(lambda: mint(server, "acme")["kid"] != first["kid"])
        assert verify(server, first["token"], "acme")["sub"] == "tenant:acme:sbx-1"

        listing = cli(server.env, "keys", "list").stdout
        assert "retired" in listing
        assert first["kid"] in listing

        revoked = cli(server.env, "keys", "revoke", first["kid"])
        assert "invalid" in revoked.stdout
        wait_for(lambda: first["kid"] not in published_kids(server))
        with pytest.raises(jwt.PyJWKClientError):
            verify(server, first["token"], "acme")
        fresh = mint(server, "acme")
        assert verify(server, fresh["token"], "acme")["sub"] == "tenant:acme"

        cli(server.env, "tenants", "remove", "acme")
        # The service caches tenants for at most 5 s.
        wait_for(
            lambda: (
                httpx.post(
                    server.internal_url + "/v1/tokens",
                    json={"tenant": "acme"},
                    headers=server.key("agent"),
                    timeout=5,
                ).status_code
                == 404
            )
        )


def test_openid_client_discovery_accepts_the_issuer(tmp_path: Path) -> None:
    """panva's openid-client (Node) discovers the running issuer without complaint."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if in_ci():
            pytest.fail("node and npm are needed for the openid-client interop test")
        pytest.skip("node/npm not installed; the openid-client interop test needs them")
    if not (INTEROP / "node_modules" / "openid-client").exists():
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=INTEROP,
            check=True,
            capture_output=True,
            timeout=300,
        )
    with running_warrant(tmp_path / "var") as server:
        result = subprocess.run(
            [node, str(INTEROP / "discover.mjs"), server.issuer_url, "acme-oidc-service"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        metadata = json.loads(result.stdout)
        assert metadata["issuer"] == server.issuer_url
        assert metadata["jwks_uri"] == server.issuer_url + "/.well-known/jwks.json"


def test_cli_errors_are_one_clean_line(tmp_path: Path) -> None:
    """Bad input to the CLI is one 'error:' line naming the fix, with exit status 1."""
    env = base_env(tmp_path / "var")
    result = cli(env, "tenants", "add", "Not_A_Slug", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    result = cli(env, "serve", check=False)
    assert result.returncode == 1
    assert "WARRANT_ISSUER_URL is required" in result.stderr
    assert "Traceback" not in result.stderr
    result = cli(env, "keys", "revoke", "nosuchkid", check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_corrupt_key_store_stops_startup(tmp_path: Path) -> None:
    """A corrupt manifest stops `warrant serve` with a message naming the file; nothing is
    regenerated."""
    data = tmp_path / "var"
    (data / "keys").mkdir(parents=True)
    manifest = data / "keys" / "manifest.json"
    manifest.write_text("{not json")
    env = base_env(data, WARRANT_DEV="1")
    result = cli(env, "serve", check=False)
    assert result.returncode == 1
    assert "manifest.json" in result.stderr
    assert "Traceback" not in result.stderr
    assert manifest.read_text() == "{not json"


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    """A listener address already in use fails startup naming the setting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = base_env(tmp_path / "var", WARRANT_DEV="1", WARRANT_PUBLIC_ADDR=f"127.0.0.1:{port}")
        result = cli(env, "serve", check=False)
    assert result.returncode == 1
    assert "WARRANT_PUBLIC_ADDR" in result.stderr


def test_an_unparseable_aws_config_stops_a_kms_startup_with_one_line(tmp_path: Path) -> None:
    """With the KMS key store, `warrant serve` needs the AWS SDK at once: a malformed
    AWS_CONFIG_FILE is one 'error:' line naming the file and what to fix, never a traceback."""
    config = tmp_path / "aws-config"
    config.write_text("[default\nregion = us-east-1\n")
    env = base_env(
        tmp_path / "var",
        WARRANT_DEV="1",
        WARRANT_ISSUER_URL="http://127.0.0.1:9",
        WARRANT_KEY_STORE="kms",
        WARRANT_KMS_REGION="us-east-1",
        WARRANT_KMS_ENDPOINT="http://127.0.0.1:9",
        AWS_CONFIG_FILE=str(config),
    )
    result = cli(env, "serve", check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: the AWS SDK could not be set up to call KMS (ConfigParseError: Unable to parse "
        f"config file: {config}); fix the server's AWS configuration (AWS_CONFIG_FILE, "
        "AWS_PROFILE and the other AWS_* variables)"
    ]
    assert "Traceback" not in result.stderr
