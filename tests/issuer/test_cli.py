"""Operator commands through the real `warrant` executable: tenants and API keys."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e import base_env, cli, running_warrant

pytestmark = pytest.mark.slow


def test_tenants_list_shows_audiences(tmp_path: Path) -> None:
    """`tenants list` shows each tenant with its token audience; an empty store says how to add."""
    env = base_env(tmp_path / "var")
    assert "warrant tenants add" in cli(env, "tenants", "list").stdout
    cli(env, "tenants", "add", "acme", "--name", "Acme Corp")
    listing = cli(env, "tenants", "list").stdout
    assert "acme-oidc-service" in listing
    assert "Acme Corp" in listing
    missing = cli(env, "tenants", "remove", "ghost", check=False)
    assert missing.returncode == 1
    assert "no tenant 'ghost'" in missing.stderr


def test_api_keys_are_created_listed_and_revoked_for_a_running_service(tmp_path: Path) -> None:
    """A key created by the CLI is printed once and works against the running service; after
    `apikeys revoke` the service refuses it within its 5-second cache."""
    with running_warrant(tmp_path / "var") as server:
        created = cli(server.env, "apikeys", "create", "--role", "admin")
        secret = created.stdout.strip()
        assert secret.startswith("wrn_admin_")
        key_id = created.stderr.split()[-1]
        listing = cli(server.env, "apikeys", "list").stdout
        assert key_id in listing
        assert secret not in listing
        headers = {"Authorization": f"Bearer {secret}"}
        url = server.internal_url + "/v1/tenants"
        assert httpx.get(url, headers=headers, timeout=5).status_code == 200
        cli(server.env, "apikeys", "revoke", key_id)
        assert key_id not in cli(server.env, "apikeys", "list").stdout
        deadline = 6.0
        start = time.monotonic()
        while httpx.get(url, headers=headers, timeout=5).status_code != 401:
            assert time.monotonic() - start < deadline, "revoked key still accepted"
            time.sleep(0.2)
    bad = cli(server.env, "apikeys", "create", "--role", "root", check=False)
    assert bad.returncode == 2  # click's usage error, naming the allowed roles
    assert "admin" in bad.stderr
