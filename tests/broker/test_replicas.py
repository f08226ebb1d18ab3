"""Scale-out: three `warrant serve` replicas sharing the real PostgreSQL and the database key
store, as they run behind a load balancer. Any replica serves any sandbox, every replica serves
the same JWKS, a rotation made with the CLI reaches all of them within the documented bound, and a
replica killed with SIGKILL mid-load loses nothing it acknowledged."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import jwt
import pytest

from broker.standin import StandIn
from tests.conftest import _admin
from tests.e2e import RunningWarrant, cli, free_port, running_warrant
from tests.services import POSTGRES_HOST, POSTGRES_PORT, require_service

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ACCOUNT = "123456789012"
ROLE = "replicas-reader"  # moto's IAM is shared by every test in this process: our own role
MOVING = "replicas-moving"  # the role of an integration removed and re-added under its name
SETUP_KEYS = {"aws_access_key_id": "AKIASETUP0000000TEST", "aws_secret_access_key": "setup"}
RELOAD_SECONDS = 1  # WARRANT_KEY_RELOAD_INTERVAL for the replicas
# README: a change to the key store is served by every replica within one reload interval
# (plus the reload itself); a second of slack for a loaded CI machine.
ROTATION_BOUND = RELOAD_SECONDS + 2.0
KEK = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    name = f"warrant_r_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+asyncpg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def bearer(replica: RunningWarrant, role: str = "agent") -> dict[str, str]:
    return replica.key(role)


def jwks(replica: RunningWarrant) -> httpx.Response:
    response = httpx.get(replica.public_url + "/.well-known/jwks.json", timeout=5)
    assert response.status_code == 200
    return response


def mint(replica: RunningWarrant, admin_of: RunningWarrant) -> str:
    response = httpx.post(
        replica.internal_url + "/v1/tokens",
        json={"tenant": "acme", "subject": "replica-test"},
        headers=bearer(admin_of),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def verify(token: str, replica: RunningWarrant, issuer: str) -> dict[str, Any]:
    keys = jwt.PyJWKClient(replica.public_url + "/.well-known/jwks.json", cache_keys=False)
    claims: dict[str, Any] = jwt.decode(
        token,
        keys.get_signing_key_from_jwt(token).key,
        algorithms=["RS256", "ES256"],
        audience="acme-oidc-service",
        issuer=issuer,
    )
    return claims


def test_three_replicas_share_everything(tmp_path: Path, postgres_url: str) -> None:
    issuer_addr = f"127.0.0.1:{free_port()}"
    issuer = f"http://{issuer_addr}"
    with StandIn(allow_http_issuers=True) as standin, ExitStack() as stack:
        common = {
            "WARRANT_DATABASE_URL": postgres_url,
            "WARRANT_KEY_STORE": "database",
            "WARRANT_KEY_ENCRYPTION_KEY": KEK,
            "WARRANT_ISSUER_URL": issuer,
            "WARRANT_KEY_RELOAD_INTERVAL": str(RELOAD_SECONDS),
            "WARRANT_STS_ENDPOINT": standin.endpoint_url,
        }
        # Replica 0 answers at the issuer URL (the load balancer's address in production).
        replicas = [
            stack.enter_context(
                running_warrant(
                    tmp_path / f"replica{i}",
                    **common,
                    **({"WARRANT_PUBLIC_ADDR": issuer_addr} if i == 0 else {}),
                )
            )
            for i in range(3)
        ]
        first, second, third = replicas
        admin = bearer(first, "admin")

        # Shared state: a tenant made on one replica, an integration on another.
        response = httpx.post(
            first.internal_url + "/v1/tenants", json={"slug": "acme"}, headers=admin, timeout=10
        )
        assert response.status_code == 201, response.text
        response = httpx.post(
            second.internal_url + "/v1/tenants/acme/integrations",
            json={
                "name": "prod",
                "account_id": ACCOUNT,
                "role_arn": f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
            },
            headers=admin,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        integration = response.json()["id"]
        seen = httpx.get(
            third.internal_url + "/v1/tenants/acme/integrations/prod", headers=admin, timeout=10
        )
        assert seen.json()["id"] == integration
        _trust(standin.endpoint_url, issuer, integration)

        # Every replica serves the same JWKS, byte for byte, with the same ETag.
        documents = [jwks(replica) for replica in replicas]
        assert len({d.content for d in documents}) == 1
        assert len({d.headers["etag"] for d in documents}) == 1

        # A token minted by any replica verifies against the JWKS of every replica.
        for minter in replicas:
            token = mint(minter, first)
            for verifier in replicas:
                assert verify(token, verifier, issuer)["sub"] == "tenant:acme:replica-test"

        # A sandbox created on one replica gets credentials from the others.
        grant = httpx.post(
            second.internal_url + "/v1/sandboxes",
            json={"tenant": "acme", "integration": "prod"},
            headers=bearer(first),
            timeout=30,
        )
        assert grant.status_code == 201, grant.text
        token = grant.json()["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        for replica in (first, third):
            vend = httpx.get(replica.sandbox_url, headers={"Authorization": token}, timeout=30)
            assert vend.status_code == 200, vend.text
            assert vend.json()["AccessKeyId"].startswith("ASIA")

        _a_name_moved_by_another_replica(standin.endpoint_url, issuer, third, second, first)
        _rotation_reaches_every_replica(replicas, first, issuer)
        _sigkill_loses_nothing(replicas, token)


def lookups(replica: RunningWarrant) -> dict[str, float]:
    """The replica's warrant_sandbox_integration_lookups_total by source."""
    text = httpx.get(replica.internal_url + "/metrics", timeout=10).text
    found = re.findall(
        r'^warrant_sandbox_integration_lookups_total\{source="(\w+)"\} (\S+)$', text, re.M
    )
    return {source: float(value) for source, value in found}


def _a_name_moved_by_another_replica(
    endpoint: str, issuer: str, maker: RunningWarrant, user: RunningWarrant, keys: RunningWarrant
) -> None:
    """A replica remembers the integrations its sandboxes were created on, by name. Another
    replica removes one and adds a new one under the same name: the next sandbox is bound to
    the new integration (the insert finds the old one gone and the name is looked up again),
    and once the name is gone altogether, creation answers 404 naming it."""
    admin, agent = bearer(keys, "admin"), bearer(keys)  # the bootstrap keys are on `keys`
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **SETUP_KEYS)

    def add() -> str:
        body = {
            "name": "moving",
            "account_id": ACCOUNT,
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/{MOVING}",
        }
        response = httpx.post(
            maker.internal_url + "/v1/tenants/acme/integrations",
            json=body,
            headers=admin,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        integration: str = response.json()["id"]
        trust = _trust_policy(issuer, integration)
        if not any(r["RoleName"] == MOVING for r in iam.list_roles()["Roles"]):
            iam.create_role(RoleName=MOVING, AssumeRolePolicyDocument=json.dumps(trust))
        else:
            iam.update_assume_role_policy(RoleName=MOVING, PolicyDocument=json.dumps(trust))
        return integration

    def remove() -> None:
        url = maker.internal_url + "/v1/tenants/acme/integrations/moving"
        assert httpx.delete(url, headers=admin, timeout=10).status_code == 200

    def create() -> httpx.Response:
        body = {"tenant": "acme", "integration": "moving"}
        return httpx.post(user.internal_url + "/v1/sandboxes", json=body, headers=agent, timeout=30)

    add()
    before = lookups(user)
    for _ in range(2):
        assert create().status_code == 201
    after = lookups(user)
    assert after["database"] - before.get("database", 0) == 1  # the second was known
    assert after["known"] - before.get("known", 0) == 1

    remove()
    new = add()
    grant = create()
    assert grant.status_code == 201, grant.text
    url = user.internal_url + "/v1/sandboxes/" + grant.json()["sandbox_id"]
    assert httpx.get(url, headers=agent, timeout=10).json()["integration"] == new
    assert lookups(user)["stale"] - after.get("stale", 0) == 1

    remove()
    gone = create()
    assert gone.status_code == 404, gone.text
    assert "'moving'" in gone.json()["message"]


def _trust_policy(issuer: str, integration: str) -> dict[str, Any]:
    host = issuer.split("://", 1)[1]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{host}:aud": "acme-oidc-service",
                        f"{host}:sub": f"tenant:acme:{integration}",
                    }
                },
            }
        ],
    }


def _trust(endpoint: str, issuer: str, integration: str) -> None:
    """The customer's side at the stand-in: the OIDC provider and a role trusting the tenant."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **SETUP_KEYS)
    iam.create_open_id_connect_provider(
        Url=issuer, ClientIDList=["acme-oidc-service"], ThumbprintList=["0" * 40]
    )
    iam.create_role(
        RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(_trust_policy(issuer, integration))
    )


def _rotation_reaches_every_replica(
    replicas: list[RunningWarrant], first: RunningWarrant, issuer: str
) -> None:
    """`warrant keys rotate` against the shared store: within the bound every replica signs
    with the new key and serves identical JWKS that publish it."""
    before = _active_kid(first)
    rotated = cli(first.env, "keys", "rotate", "--force")
    started = time.monotonic()
    assert rotated.returncode == 0, rotated.stderr
    active = _active_kid(first)
    assert active != before, "the CLI did not rotate the shared key store"
    pending = set(range(len(replicas)))
    while pending:
        for index in sorted(pending):
            if jwt.get_unverified_header(mint(replicas[index], first))["kid"] == active:
                pending.discard(index)
        assert time.monotonic() - started < ROTATION_BOUND, (
            f"replicas {sorted(pending)} still sign with the old key after {ROTATION_BOUND} s"
        )
        time.sleep(0.1)
    documents = [jwks(replica) for replica in replicas]
    assert len({d.content for d in documents}) == 1
    assert active in {key["kid"] for key in documents[0].json()["keys"]}
    for replica in replicas:
        assert verify(mint(replica, first), replicas[0], issuer)


def _active_kid(replica: RunningWarrant) -> str:
    """The active key according to the shared store (read live by GET /v1/keys)."""
    listed = httpx.get(
        replica.internal_url + "/v1/keys", headers=bearer(replica, "admin"), timeout=10
    )
    kid: str = next(k["kid"] for k in listed.json()["keys"] if k["state"] == "active")
    return kid


def _sigkill_loses_nothing(replicas: list[RunningWarrant], sandbox_token: str) -> None:
    """SIGKILL one replica while all three take mints, sandbox creations and vends: the other
    two never fail, and everything the killed one acknowledged is durable (its sandboxes in
    the database, its audit records in its log)."""
    first, second, victim = replicas
    stop = threading.Event()
    acknowledged: dict[str, list[str]] = {"jti": [], "sandbox": []}
    survivor_errors: list[str] = []

    def hammer_victim() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    token = client.post(
                        victim.internal_url + "/v1/tokens",
                        json={"tenant": "acme"},
                        headers=bearer(first),
                    )
                    if token.status_code == 200:
                        claims = jwt.decode(
                            token.json()["token"], options={"verify_signature": False}
                        )
                        acknowledged["jti"].append(claims["jti"])
                    grant = client.post(
                        victim.internal_url + "/v1/sandboxes",
                        json={"tenant": "acme", "integration": "prod"},
                        headers=bearer(first),
                    )
                    if grant.status_code == 201:
                        acknowledged["sandbox"].append(grant.json()["sandbox_id"])
                except httpx.TransportError:
                    time.sleep(0.01)  # the victim is gone; keep asking until told to stop

    def hammer_survivor(replica: RunningWarrant) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                for response in (
                    client.get(replica.sandbox_url, headers={"Authorization": sandbox_token}),
                    client.post(
                        replica.internal_url + "/v1/tokens",
                        json={"tenant": "acme"},
                        headers=bearer(first),
                    ),
                ):
                    if response.status_code != 200:
                        survivor_errors.append(f"{replica.internal_url}: {response.status_code}")

    threads = [threading.Thread(target=hammer_victim) for _ in range(2)] + [
        threading.Thread(target=hammer_survivor, args=(replica,)) for replica in (first, second)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert not survivor_errors, survivor_errors[:5]
    assert acknowledged["jti"], "the victim acknowledged no mint before it was killed"
    assert acknowledged["sandbox"], "the victim acknowledged no sandbox before it was killed"
    for sandbox_id in acknowledged["sandbox"]:
        found = httpx.get(
            f"{first.internal_url}/v1/sandboxes/{sandbox_id}", headers=bearer(first), timeout=10
        )
        assert found.status_code == 200, f"sandbox {sandbox_id} was acknowledged, then lost"
        assert found.json()["status"] == "active"
    audit = (victim.data_dir / "audit.jsonl").read_text()
    records = [json.loads(line) for line in audit.splitlines() if line.endswith("}")]
    minted = {r.get("detail", "").rsplit("jti=", 1)[-1] for r in records if r["event"] == "mint"}
    created = {r.get("sandbox") for r in records if r["event"] == "sandbox.create"}
    assert set(acknowledged["jti"]) <= minted, "an acknowledged mint has no audit record"
    assert set(acknowledged["sandbox"]) <= created, "an acknowledged sandbox has no audit record"
