"""End to end: the real `warrant serve` with the strict STS stand-in in front of moto, and
unmodified boto3 / the AWS CLI in separate processes that see only the sandbox's environment."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest

from tests.broker.world import (
    ACCOUNT,
    CLIENT,
    FLOOR,
    LIFETIME,
    REFRESH_AHEAD,
    SETUP_KEYS,
    World,
    open_world,
    run_client,
)
from tests.e2e import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with open_world(tmp_path_factory.mktemp("warrant")) as world:
        yield world


def test_unmodified_boto3_keeps_working_across_refreshes(world: World) -> None:
    """boto3 with only the sandbox env reaches STS as the assumed role, and keeps working while
    Warrant refreshes the short-lived session underneath it several times."""
    grant = world.sandbox("acme", "prod")
    assert set(grant["env"]) == {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EC2_METADATA_DISABLED",
    }
    assert grant["env"]["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == world.server.sandbox_url
    lines = run_client(world, grant, duration=13, interval=0.5)
    assert not [line for line in lines if "error" in line]
    assert all(line["account"] == ACCOUNT for line in lines)
    assert all(
        re.fullmatch(
            rf"arn:aws:sts::{ACCOUNT}:assumed-role/acme-reader/warrant-acme-prod", line["arn"]
        )
        for line in lines
    ), lines[0]
    assert len({line["access_key"] for line in lines}) >= 3, "expected several refreshes"


def test_vended_credentials_never_have_less_than_the_floor(world: World) -> None:
    """Every vend over more than a credential lifetime has at least the floor left, in the SDK
    shape."""
    grant = world.sandbox("acme", "prod")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    deadline = time.monotonic() + LIFETIME.total_seconds() + 3
    while time.monotonic() < deadline:
        response = world.vend(token)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "AccountId"}
        assert body["AccountId"] == ACCOUNT
        expires = datetime.strptime(body["Expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert expires - datetime.now(UTC) >= timedelta(seconds=int(FLOOR) - 1)
        time.sleep(0.25)


def test_aws_cli_with_only_the_sandbox_env(world: World) -> None:
    """The AWS CLI, given only the sandbox env, prints the assumed-role identity."""
    grant = world.sandbox("acme", "prod")
    aws = str(Path(sys.executable).with_name("aws"))
    result = subprocess.run(
        [aws, "sts", "get-caller-identity", "--output", "json"],
        env=world.sandbox_env(grant),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "assumed-role/acme-reader" in json.loads(result.stdout)["Arn"]


def test_env_delivery_gives_static_working_credentials(world: World) -> None:
    """env delivery hands out working static keys, documented as never refreshed."""
    grant = world.sandbox("acme", "prod", delivery="env", ttl_seconds=600)
    assert {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
    } <= set(grant["env"])
    assert "AWS_CONTAINER_AUTHORIZATION_TOKEN" not in grant["env"]
    assert "never refreshed" in grant["note"]
    lines = run_client(world, grant, duration=0, interval=0)
    assert "assumed-role/acme-reader" in lines[0]["arn"]


def test_credential_process_profile(world: World, tmp_path: Path) -> None:
    """An AWS profile whose credential_process is `warrant credential-process` works in boto3."""
    grant = world.sandbox("acme", "prod")
    token_file = tmp_path / "token"
    token_file.write_text(grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"])
    warrant = Path(sys.executable).with_name("warrant")
    config = tmp_path / "config"
    config.write_text(
        f"[profile sandbox]\ncredential_process = {warrant} credential-process "
        f"--url {world.server.sandbox_url} --token-file {token_file}\n"
    )
    printed = cli(
        world.server.env,
        "credential-process",
        "--url",
        world.server.sandbox_url,
        "--token-file",
        str(token_file),
    )
    body = json.loads(printed.stdout)
    assert body["Version"] == 1
    assert set(body) == {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    world.secrets.update({body["SecretAccessKey"], body["SessionToken"]})
    env = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_PROFILE": "sandbox",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_STS": world.standin.endpoint_url,
    }
    result = subprocess.run(
        [sys.executable, str(CLIENT), "0", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "assumed-role/acme-reader" in result.stdout, result.stdout + result.stderr
    bad = cli(
        world.server.env,
        "credential-process",
        "--url",
        world.server.sandbox_url,
        "--token-file",
        str(tmp_path / "missing"),
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: cannot read --token-file")


def test_tenant_isolation_across_every_endpoint(world: World) -> None:
    """A sandbox token yields only its own tenant's role, and opens nothing else anywhere."""
    integration = world.integration("globex", "main", "globex-reader")
    world.oidc_role(
        "globex-reader", aud="globex-oidc-service", sub=f"tenant:globex:{integration['id']}"
    )
    acme = world.sandbox("acme", "prod")
    globex = world.sandbox("globex", "main")
    acme_token = acme["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    globex_token = globex["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    acme_lines = run_client(world, acme, duration=0, interval=0)
    globex_lines = run_client(world, globex, duration=0, interval=0)
    assert "acme-reader" in acme_lines[0]["arn"]
    assert "globex-reader" in globex_lines[0]["arn"]
    # A tenant's token cannot be pointed at the other tenant's integration: there is no knob.
    for params in ({"sandbox": acme["sandbox_id"]}, {"integration": "prod"}, {"tenant": "acme"}):
        response = httpx.get(
            world.server.sandbox_url,
            params=params,
            headers={"Authorization": globex_token},
            timeout=10,
        )
        assert response.status_code == 200
        assert response.json()["AccessKeyId"] != world.vend(acme_token).json()["AccessKeyId"]
    # Sandbox tokens are not API keys, and the sandbox listener serves nothing else.
    for token in (acme_token, f"Bearer {acme_token}"):
        for method, path in [
            ("POST", "/v1/tokens"),
            ("GET", f"/v1/sandboxes/{acme['sandbox_id']}"),
            ("DELETE", f"/v1/sandboxes/{globex['sandbox_id']}"),
            ("GET", "/v1/tenants/acme/integrations"),
        ]:
            response = httpx.request(
                method,
                world.server.internal_url + path,
                headers={"Authorization": token},
                timeout=10,
            )
            assert response.status_code == 401, (method, path)
    sandbox_base = world.server.sandbox_url.rsplit("/v1/", 1)[0]
    for method, path in [
        ("POST", "/v1/tokens"),
        ("POST", "/v1/sandboxes"),
        ("GET", "/metrics"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/v1/tenants"),
        ("GET", "/healthz"),
    ]:
        response = httpx.request(
            method, sandbox_base + path, headers={"Authorization": acme_token}, timeout=10
        )
        assert response.status_code == 404, (method, path)
    unknown = world.vend("wsb_" + "A" * 43)
    assert unknown.status_code == 401
    assert "acme" not in unknown.text
    assert "globex" not in unknown.text


def test_deleting_a_sandbox_revokes_at_once(world: World) -> None:
    """After DELETE, the very next credentials request is refused, and status shows revoked."""
    grant = world.sandbox("acme", "prod")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert world.vend(token).status_code == 200
    deleted = world.agent("DELETE", f"/v1/sandboxes/{grant['sandbox_id']}")
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "revoked"
    assert world.vend(token).status_code == 401
    status = world.agent("GET", f"/v1/sandboxes/{grant['sandbox_id']}").json()
    assert status["status"] == "revoked"
    assert "token" not in json.dumps(status).lower()


def test_one_sts_call_serves_many_concurrent_sandboxes(world: World) -> None:
    """Two hundred concurrent vends for a new integration share the session that sandbox creation
    obtained: every STS exchange produced credentials that were vended (at most one refresh, as
    the stand-in's credentials are short-lived), never one per request."""
    integration = world.integration("acme", "burst", "acme-burst")
    world.oidc_role("acme-burst", aud="acme-oidc-service", sub=f"tenant:acme:{integration['id']}")
    grant = world.sandbox("acme", "burst")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *[
                    client.get(world.server.sandbox_url, headers={"Authorization": token})
                    for _ in range(200)
                ]
            )

    started = time.monotonic()
    responses = asyncio.run(burst())
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 200
    keys = {r.json()["AccessKeyId"] for r in responses}
    # This integration's exchanges only (the stand-in's counts include other sessions' refreshes).
    audit = (world.server.data_dir / "audit.jsonl").read_text().splitlines()
    exchanges = [
        record
        for record in map(json.loads, audit)
        if record["event"] == "exchange" and record.get("integration") == integration["id"]
    ]
    assert all(record["outcome"] == "ok" for record in exchanges)
    # One exchange at creation, then one refresh per refresh window the burst lasted (the
    # stand-in's credentials live 8 s and are refreshed 4 s early): never one per request.
    refresh_window = LIFETIME.total_seconds() - float(REFRESH_AHEAD)
    assert 1 <= len(exchanges) <= 2 + int(elapsed // refresh_window)
    assert len(keys) <= len(exchanges)


def test_sts_outage_serves_cached_credentials_then_503(world: World) -> None:
    """With STS down, cached credentials keep flowing until their floor, then a 503 with
    Retry-After; when STS returns, vending recovers."""
    integration = world.integration("acme", "outage", "acme-outage")
    world.oidc_role("acme-outage", aud="acme-oidc-service", sub=f"tenant:acme:{integration['id']}")
    grant = world.sandbox("acme", "outage")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    world.standin_admin("POST", "/faults", {"mode": "unavailable"})
    try:
        served, deadline = 0, time.monotonic() + LIFETIME.total_seconds() + 5
        while True:
            response = world.vend(token)
            if response.status_code != 200:
                break
            served += 1
            assert time.monotonic() < deadline, "cached credentials outlived their floor"
            time.sleep(0.25)
        assert served >= 4, "cached credentials should keep flowing during the outage"
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"] == "credentials_unavailable"
    finally:
        world.standin_admin("POST", "/faults", {"mode": "none"})
    deadline = time.monotonic() + 30
    while world.vend(token).status_code != 200:
        assert time.monotonic() < deadline, "vending did not recover after the outage"
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("case", "sts_code", "hint"),
    [
        ("wrong_sub", "AccessDenied", "sub"),
        ("wrong_audience", "InvalidIdentityToken", "audience"),
        ("duration_over_role_max", "ValidationError", "MaxSessionDuration"),
    ],
)
def test_misconfigured_oidc_integrations_are_explained(
    world: World, case: str, sts_code: str, hint: str
) -> None:
    """Each misconfiguration is refused by the stand-in and reaches the agent as a clear 403
    naming the STS error and the likely cause, when the sandbox is created."""
    role = f"acme-{case.replace('_', '-')}"
    extra = {"session_duration": 7200} if case == "duration_over_role_max" else {}
    slug = "initech" if case == "wrong_audience" else "acme"
    if slug == "initech" and world.admin("GET", "/v1/tenants/initech").status_code == 404:
        assert world.admin("POST", "/v1/tenants", {"slug": "initech"}).status_code == 201
    integration = world.integration(slug, case, role, **extra)
    sub = f"tenant:{slug}:{integration['id']}" if case != "wrong_sub" else "tenant:acme:other"
    world.oidc_role(role, aud=f"{slug}-oidc-service", sub=sub)
    response = world.agent("POST", "/v1/sandboxes", {"tenant": slug, "integration": case})
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "credentials_rejected"
    assert sts_code in body["message"]
    assert hint.lower() in body["message"].lower()
    assert body["diagnosis"]["token"]["sub"] == f"tenant:{slug}:{integration['id']}"
    assert body["diagnosis"]["token"]["aud"] == f"{slug}-oidc-service"
    # The refused sandbox is recorded as created and at once as revoked, with STS's reason;
    # it never lives.
    mine = [r for r in world.audit() if r.get("integration") == integration["id"]]
    assert [(r["event"], r["outcome"]) for r in mine if r["event"].startswith("sandbox.")] == [
        ("sandbox.create", "ok"),
        ("sandbox.delete", "error"),
    ]
    made, ended = (r for r in mine if r["event"].startswith("sandbox."))
    assert ended["sandbox"] == made["sandbox"]
    assert ended["detail"].startswith("revoked at creation: ")
    assert sts_code in ended["detail"]
    sandbox = world.agent("GET", f"/v1/sandboxes/{made['sandbox']}").json()
    assert sandbox["status"] == "revoked"


def test_a_sandbox_is_recorded_while_sts_answers(world: World) -> None:
    """The sandbox.create record is made durable while the exchange is in flight, not after
    it (its sync overlaps the STS call), and the sandbox's token is handed out only once it
    is: the record is in the log before the response, and before the exchange's record."""
    integration = world.integration("acme", "overlap", "acme-overlap")
    world.oidc_role("acme-overlap", aud="acme-oidc-service", sub=f"tenant:acme:{integration['id']}")

    def mine() -> list[str]:
        records = world.audit()
        return [r["event"] for r in records if r.get("integration") == integration["id"]]

    world.standin_admin("POST", "/faults", {"mode": "slow", "delay": 1.5})
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                world.agent, "POST", "/v1/sandboxes", {"tenant": "acme", "integration": "overlap"}
            )
            deadline = time.monotonic() + 1.0
            while "sandbox.create" not in mine():
                assert time.monotonic() < deadline, f"not recorded while STS answers: {mine()}"
                time.sleep(0.02)
            assert not answer.done()
            response = answer.result(timeout=30)
    finally:
        world.standin_admin("POST", "/faults", {"mode": "none"})
    assert response.status_code == 201, response.text
    assert mine() == ["integration.add", "sandbox.create", "exchange"]


def host_trust(external_id: str) -> dict[str, Any]:
    """A customer role trusting Warrant's EC2 instance role, pinned to an ExternalId."""
    statement = {
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/warrant-host"},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
    }
    return {"Version": "2012-10-17", "Statement": [statement]}


def test_instance_role_flow_with_external_id(world: World) -> None:
    """The instance role from IMDSv2 assumes the customer's role with the generated ExternalId,
    and a wrong ExternalId in the trust policy is refused with a clear error."""
    integration = world.integration("acme", "self-hosted", "acme-xacct", method="instance_role")
    external_id = integration["external_id"]
    assert external_id.startswith("warrant-")
    world.iam().create_role(
        RoleName="acme-xacct", AssumeRolePolicyDocument=json.dumps(host_trust(external_id))
    )
    grant = world.sandbox("acme", "self-hosted")
    lines = run_client(world, grant, duration=0, interval=0)
    assert "assumed-role/acme-xacct" in lines[0]["arn"], lines
    bad = world.integration("acme", "wrong-external", "acme-xacct-wrong", method="instance_role")
    world.iam().create_role(
        RoleName="acme-xacct-wrong", AssumeRolePolicyDocument=json.dumps(host_trust("other-id"))
    )
    response = world.agent("POST", "/v1/sandboxes", {"tenant": "acme", "integration": bad["name"]})
    assert response.status_code == 403
    assert "ExternalId" in response.json()["message"]


def test_removing_an_integration_revokes_its_sandboxes(world: World) -> None:
    """DELETE of an integration revokes its sandboxes at once and says how to cut off issued
    credentials on the AWS side."""
    integration = world.integration("acme", "temp", "acme-temp")
    world.oidc_role("acme-temp", aud="acme-oidc-service", sub=f"tenant:acme:{integration['id']}")
    grant = world.sandbox("acme", "temp")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert world.vend(token).status_code == 200
    evictions = _metric(world, "warrant_credential_cache_evictions_total")
    removed = world.admin("DELETE", f"/v1/tenants/acme/integrations/{integration['id']}")
    assert removed.status_code == 200
    assert removed.json()["revoked_sandboxes"] == [grant["sandbox_id"]]
    assert "aws:TokenIssueTime" in removed.json()["note"]
    assert world.vend(token).status_code == 401
    assert _metric(world, "warrant_credential_cache_evictions_total") > evictions
    # This process forgets the integration it created the sandbox on at once: the name is
    # looked up again (not tried and found stale) and is gone.
    lookups = 'warrant_sandbox_integration_lookups_total{source="%s"}'
    database, stale = (_metric(world, lookups % source) for source in ("database", "stale"))
    gone = world.agent("POST", "/v1/sandboxes", {"tenant": "acme", "integration": "temp"})
    assert gone.status_code == 404, gone.text
    assert "'temp'" in gone.json()["message"]
    assert _metric(world, lookups % "database") == database + 1
    assert _metric(world, lookups % "stale") == stale


def test_metrics_count_exchanges_vends_and_cache(world: World) -> None:
    """/metrics on the internal listener reports STS exchanges, vends and the session cache
    (made here, so the test stands alone: an exchange, a refused one, a vend, a denied vend)."""
    world.integration("acme", "metered", "acme-metered")
    world.oidc_role("acme-metered", aud="acme-oidc-service", sub="tenant:acme:someone-else")
    refused = world.agent("POST", "/v1/sandboxes", {"tenant": "acme", "integration": "metered"})
    assert refused.status_code == 403, refused.text
    grant = world.sandbox("acme", "prod")
    assert world.vend(grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]).status_code == 200
    assert world.vend("wst_" + "x" * 43).status_code == 401
    text = httpx.get(world.server.internal_url + "/metrics", timeout=10).text
    assert 'warrant_sts_exchanges_total{code="none",method="oidc",outcome="ok"}' in text
    assert 'warrant_sts_exchanges_total{code="AccessDenied",method="oidc",outcome="error"}' in text
    assert 'warrant_credential_vends_total{outcome="ok"}' in text
    assert 'warrant_credential_vends_total{outcome="denied"}' in text
    assert "warrant_credential_cache_hits_total" in text
    assert "warrant_vended_credential_remaining_seconds_bucket" in text
    assert 'route="/v1/credentials"' in text


def test_audit_log_records_and_holds_no_secret(world: World) -> None:
    """The audit log has durable records of every kind, and neither it nor the server's logs
    contain a secret key, session token, sandbox token, API key or JWT."""
    audit = world.server.data_dir / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    events = {r["event"] for r in records}
    assert {
        "mint",
        "key.bootstrap",
        "sandbox.create",
        "sandbox.delete",
        "exchange",
        "vend",
        "integration.add",
        "integration.remove",
    } <= events
    vend = next(r for r in records if r["event"] == "vend" and r["outcome"] == "ok")
    assert vend["access_key_id"].startswith("ASIA")
    assert vend["session_name"] == "warrant-acme-prod"
    text = audit.read_text() + world.server.logs()
    assert world.secrets, "the scenario should have seen secrets to look for"
    for secret in world.secrets:
        assert secret not in text
    api_keys = [
        (world.server.data_dir / f"{r}.key").read_text().strip() for r in ("admin", "agent")
    ]
    for key in api_keys:
        assert key not in text
    assert not re.search(r"eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,}", text), "a JWT leaked"


def test_a_sandbox_with_its_own_policy_gets_its_own_session(world: World) -> None:
    """A sandbox narrowing its session with a policy gets a session of its own (named for it),
    which still assumes the integration's role; other sandboxes keep sharing theirs."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}],
    }
    narrow = world.sandbox("acme", "prod", session_policy=policy)
    shared = world.sandbox("acme", "prod")
    narrow_arn = run_client(world, narrow, duration=0, interval=0)[0]["arn"]
    shared_arn = run_client(world, shared, duration=0, interval=0)[0]["arn"]
    assert narrow_arn.endswith(f"/acme-reader/warrant-acme-{narrow['sandbox_id']}")
    assert shared_arn.endswith("/acme-reader/warrant-acme-prod")
    deleted = world.agent("DELETE", f"/v1/sandboxes/{narrow['sandbox_id']}")
    assert deleted.status_code == 200
    shared_token = shared["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert world.vend(shared_token).status_code == 200


def test_generated_setup_script_connects_an_account(world: World, tmp_path: Path) -> None:
    """The `cli` setup script served by GET .../setup, run with the AWS CLI against the
    stand-in, creates a role that the broker then assumes through the strict gate."""
    integration = world.integration("acme", "generated", "acme-generated")
    path = f"/v1/tenants/acme/integrations/{integration['id']}/setup"
    bad = world.admin("GET", path + "?format=pulumi")
    assert bad.status_code == 400
    assert "cli, json, cloudformation, terraform" in bad.json()["message"]
    served = world.admin("GET", path + "?format=cli")
    assert served.status_code == 200, served.text
    result = world.run_admin_script(served.json()["setup"], tmp_path)
    assert integration["role_arn"] in result.stdout
    grant = world.sandbox("acme", "generated")
    lines = run_client(world, grant, duration=0, interval=0)
    assert "assumed-role/acme-generated/" in lines[0]["arn"], lines
    assert "aws:TokenIssueTime" in served.json()["teardown"]


def test_removing_a_tenant_disconnects_everything(world: World) -> None:
    """DELETE of a tenant revokes every sandbox of every integration at once (the next request
    is refused), drops the cached sessions, is audited, and says how to cut off issued
    credentials on the AWS side."""
    assert world.admin("POST", "/v1/tenants", {"slug": "umbrella"}).status_code == 201
    integration = world.integration("umbrella", "main", "umbrella-reader")
    world.oidc_role(
        "umbrella-reader", aud="umbrella-oidc-service", sub=f"tenant:umbrella:{integration['id']}"
    )
    token = world.sandbox("umbrella", "main")["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert world.vend(token).status_code == 200
    evictions_before = _metric(world, "warrant_credential_cache_evictions_total")
    response = world.admin("DELETE", "/v1/tenants/umbrella")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["removed_integrations"] == [integration["id"]]
    assert len(body["revoked_sandboxes"]) == 1
    assert "aws:TokenIssueTime" in body["note"]
    assert world.vend(token).status_code == 401
    assert _metric(world, "warrant_credential_cache_evictions_total") > evictions_before
    assert world.admin("GET", "/v1/tenants/umbrella").status_code == 404
    records = [
        json.loads(line)
        for line in (world.server.data_dir / "audit.jsonl").read_text().splitlines()
    ]
    assert any(r["event"] == "tenant.remove" and r.get("tenant") == "umbrella" for r in records)


def _metric(world: World, name: str) -> float:
    text = httpx.get(world.server.internal_url + "/metrics", timeout=10).text
    return float(
        next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " "))
    )


def test_test_connection_reports_identity_and_capabilities(world: World) -> None:
    """POST .../test obtains credentials the real way, checks the account, probes every
    capability of the profile, and stores and audits the report."""
    for _ in range(2):  # once more if a probe timed out on a loaded CI machine (5 s each)
        response = world.admin("POST", "/v1/tenants/acme/integrations/prod/test?profile=analysis")
        assert response.status_code == 200, response.text
        report = response.json()
        if not any("no answer in" in c["detail"] for c in report["capabilities"]):
            break
    assert report["status"] == "active"
    assert report["account"] == ACCOUNT
    assert "assumed-role/acme-reader/" in report["assumed_role_arn"]
    capabilities = {c["capability"]: c["status"] for c in report["capabilities"]}
    assert set(capabilities) == {
        "logs",
        "cloudwatch",
        "ec2",
        "ecs",
        "eks",
        "lambda",
        "rds",
        "s3",
        "cost explorer",
    }
    assert set(capabilities.values()) == {"allowed"}
    assert world.admin("GET", "/v1/tenants/acme/integrations/prod/test").json() == report
    records = [
        json.loads(line)
        for line in (world.server.data_dir / "audit.jsonl").read_text().splitlines()
    ]
    assert any(r["event"] == "integration.test" and r["outcome"] == "ok" for r in records)


def test_test_connection_explains_a_broken_integration(world: World) -> None:
    """A trust-policy mismatch fails the test with STS's error and the likely cause; an
    integration never tested answers 404 saying how to test it."""
    broken = world.integration("acme", "broken-trust", "acme-broken-trust")
    world.oidc_role("acme-broken-trust", aud="acme-oidc-service", sub="tenant:acme:someone")
    path = f"/v1/tenants/acme/integrations/{broken['id']}/test"
    never = world.admin("GET", path)
    assert never.status_code == 404
    assert "has not been tested yet" in never.json()["message"]
    report = world.admin("POST", path).json()
    assert report["status"] == "failed"
    assert "AccessDenied" in report["error"]
    assert "sub" in report["error"]
    diagnosis = report["diagnosis"]
    host = world.host
    assert diagnosis["token"] == {
        "iss": world.server.issuer_url,
        "aud": "acme-oidc-service",
        "sub": f"tenant:acme:{broken['id']}",
    }
    condition = diagnosis["role_trust_policy_must_be"]["Statement"][0]["Condition"]
    assert condition["StringEquals"][f"{host}:sub"] == f"tenant:acme:{broken['id']}"
    assert diagnosis["provider"]["client_ids_must_include"] == "acme-oidc-service"


def test_integrations_test_cli_shows_each_step(world: World) -> None:
    """`warrant integrations test` prints each step and exits 0 for a working integration."""
    result = cli(world.server.env, "integrations", "test", "acme", "prod")
    assert result.returncode == 0, result.stderr
    assert "calling sts:GetCallerIdentity" in result.stdout
    assert "ec2            allowed" in result.stdout
    assert "is active: 6 of 6 capabilities allowed" in result.stdout


def test_generated_instance_role_setup_then_test_connection(world: World, tmp_path: Path) -> None:
    """For the instance_role method: the generated script (trusting Warrant's instance role with
    the integration's ExternalId) creates the role, and test connection then reports active."""
    integration = world.integration(
        "acme", "generated-host", "acme-generated-host", method="instance_role"
    )
    principal = f"arn:aws:iam::{ACCOUNT}:role/warrant-host"
    served = world.admin(
        "GET",
        f"/v1/tenants/acme/integrations/{integration['id']}/setup"
        f"?format=cli&warrant_principal_arn={principal}",
    )
    assert served.status_code == 200, served.text
    assert integration["external_id"] in served.json()["setup"]
    assert served.json()["our_side"] is not None
    world.run_admin_script(served.json()["setup"], tmp_path)
    report = world.admin("POST", f"/v1/tenants/acme/integrations/{integration['id']}/test")
    assert report.status_code == 200, report.text
    assert report.json()["status"] == "active", report.json()
    assert "assumed-role/acme-generated-host/" in report.json()["assumed_role_arn"]


def test_test_connection_uses_the_integrations_profile(world: World) -> None:
    """An integration created with the analysis profile is tested with its probes by default."""
    integration = world.integration("acme", "costs", "acme-costs", profile="analysis")
    assert integration["profile"] == "analysis"
    world.oidc_role("acme-costs", aud="acme-oidc-service", sub=f"tenant:acme:{integration['id']}")
    report = world.admin("POST", f"/v1/tenants/acme/integrations/{integration['id']}/test")
    assert report.json()["status"] == "active", report.json()
    assert report.json()["profile"] == "analysis"
    assert "cost explorer" in {c["capability"] for c in report.json()["capabilities"]}
    bad = world.admin(
        "POST",
        "/v1/tenants/acme/integrations",
        {
            "name": "x",
            "account_id": ACCOUNT,
            "profile": "everything",
            "role_arn": f"arn:aws:iam::{ACCOUNT}:role/x",
        },
    )
    assert bad.status_code == 400
    assert "incident, analysis" in bad.json()["message"]


def test_a_missing_provider_is_diagnosed(world: World) -> None:
    """An account without our OIDC provider fails the test with STS's InvalidIdentityToken, a
    hint naming the missing provider or issuer mismatch, and the provider the account needs."""
    other = "222222222222"
    integration = world.integration(
        "acme",
        "no-provider",
        "reader",
        account_id=other,
        role_arn=f"arn:aws:iam::{other}:role/reader",
    )
    report = world.admin("POST", f"/v1/tenants/acme/integrations/{integration['id']}/test").json()
    assert report["status"] == "failed"
    assert "InvalidIdentityToken" in report["error"]
    assert "provider" in report["error"].lower()
    assert report["diagnosis"]["provider"]["arn"] == (
        f"arn:aws:iam::{other}:oidc-provider/{world.host}"
    )


@pytest.mark.parametrize(
    ("mode", "code", "fragment"),
    [
        ("jwks_unreachable", "InvalidIdentityToken", "verification key"),
        ("region_disabled", "RegionDisabledException", "region"),
    ],
)
def test_sts_side_failures_are_diagnosed(world: World, mode: str, code: str, fragment: str) -> None:
    """STS unable to fetch our JWKS, and STS disabled in the region, each fail the test with
    STS's error code and a hint that names the cause."""
    integration = world.integration("acme", f"fault-{mode}", f"acme-fault-{mode}".replace("_", "-"))
    world.oidc_role(
        f"acme-fault-{mode}".replace("_", "-"),
        aud="acme-oidc-service",
        sub=f"tenant:acme:{integration['id']}",
    )
    world.standin_admin("POST", "/faults", {"mode": mode, "actions": ["AssumeRoleWithWebIdentity"]})
    try:
        report = world.admin(
            "POST", f"/v1/tenants/acme/integrations/{integration['id']}/test"
        ).json()
    finally:
        world.standin_admin("POST", "/faults", {"mode": "none"})
    assert report["status"] == "failed"
    assert code in report["error"]
    assert fragment in report["error"].lower()


def _apply_iam(iam: Any, call: str, params: dict[str, Any]) -> Any:
    """Call an IAM API named in the json format, serializing embedded policy documents."""
    wire = {k: json.dumps(v) if k.endswith("Document") else v for k, v in params.items()}
    method = re.sub(r"(?<!^)(?=[A-Z])", "_", call).lower().replace("i_d_", "id_")
    return getattr(iam, method.replace("open_i_d", "open_id"))(**wire)


def test_json_and_cloudformation_setups_connect_accounts(world: World) -> None:
    """The json documents applied to IAM, and the CloudFormation template deployed, each create
    a role the broker assumes through the strict stand-in: test connection reports active."""
    iam = world.iam()
    as_json = world.integration("acme", "via-json", "acme-via-json")
    documents = world.admin(
        "GET", f"/v1/tenants/acme/integrations/{as_json['id']}/setup?format=json"
    ).json()
    setup = json.loads(documents["setup"])
    _apply_iam(iam, "CreatePolicy", setup["policy"]["CreatePolicy"])
    _apply_iam(iam, "CreateRole", setup["role"]["CreateRole"])
    for attach in setup["role"]["AttachRolePolicy"]:
        _apply_iam(iam, "AttachRolePolicy", attach)

    via_cfn = world.integration("acme", "via-cfn", "acme-via-cfn")
    template = world.admin(
        "GET", f"/v1/tenants/acme/integrations/{via_cfn['id']}/setup?format=cloudformation"
    ).json()["setup"]
    cfn = boto3.client(
        "cloudformation",
        endpoint_url=world.standin.endpoint_url,
        region_name="us-east-1",
        **SETUP_KEYS,
    )
    # The provider already exists in this account (moto also lacks AWS::IAM::OIDCProvider).
    cfn.create_stack(
        StackName="warrant-acme-via-cfn",
        TemplateBody=template,
        Parameters=[{"ParameterKey": "CreateOidcProvider", "ParameterValue": "false"}],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    for integration in (as_json, via_cfn):
        report = world.admin(
            "POST", f"/v1/tenants/acme/integrations/{integration['id']}/test"
        ).json()
        assert report["status"] == "active", report
        assert integration["role_arn"].split("/")[-1] in report["assumed_role_arn"]


def test_a_malformed_aws_config_file_is_a_clear_error_not_a_500(tmp_path: Path) -> None:
    """The SDK reads AWS_CONFIG_FILE when the broker prepares it: a file it cannot parse leaves
    the server serving, says so in the log, and makes each exchange a 503 that names the file,
    never a 500 or a crash."""
    config = tmp_path / "aws-config"
    config.write_text("[default\nregion = us-east-1\n")
    with open_world(tmp_path / "var", "acme-badconfig-reader", AWS_CONFIG_FILE=str(config)) as w:
        response = w.agent("POST", "/v1/sandboxes", {"tenant": "acme", "integration": "prod"})
        assert response.status_code == 503, response.text
        assert str(config) in response.json()["message"]
        assert response.json()["request_id"] == response.headers["x-request-id"]
        assert w.server.process.poll() is None
        logs = w.server.logs()
        assert "WARNING broker.runtime: the AWS SDK could not be set up to call STS" in logs
        assert "unavailable: the AWS SDK could not be set up to call STS (ConfigParseError" in logs
        assert "Traceback" not in logs
