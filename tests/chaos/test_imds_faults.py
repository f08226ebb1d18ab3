"""IMDS faults under the instance_role method: the instance metadata service answering 500,
timing out or answering slowly, on the IMDSv2 token PUT and on the credentials GETs, while agents
create sandboxes on the real `warrant serve`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.chaos.world import HOST_ACCESS_KEY, HOST_ROLE, ChaosWorld, SdkClient
from tests.fake_imds import ImdsFault

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# Two attempts of at most 1 s each and a 0.1 s pause (broker/imds.py), plus a loaded machine.
FAILS_WITHIN = 6.0
# A timeout is a delay past the broker's 1 s IMDS timeout; slow is one well inside it.
TIMEOUT_DELAY = 1.5
SLOW_DELAY = 0.3
STS_ACTIONS = ("AssumeRole", "AssumeRoleWithWebIdentity")

FAULTS = [
    ("token-500", ImdsFault("token", status=500), "answered HTTP 500 (PUT /latest/api/token"),
    ("token-timeout", ImdsFault("token", delay=TIMEOUT_DELAY), "did not answer within 1 s (PUT"),
    ("creds-500", ImdsFault("credentials", status=500), "answered HTTP 500 (GET /latest/meta-"),
    ("creds-timeout", ImdsFault("credentials", delay=TIMEOUT_DELAY), "did not answer within 1 s"),
]


def sts_calls(world: ChaosWorld) -> dict[str, dict[str, int]]:
    return {action: world.stats(action) for action in STS_ACTIONS}


def create(world: ChaosWorld, name: str) -> httpx.Response:
    return world.agent("POST", "/v1/sandboxes", {"tenant": world.slug, "integration": name})


def assert_clear_503(response: httpx.Response, fragment: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == "credentials_unavailable"
    assert "IMDS at http://127.0.0.1:" in body["message"]
    assert fragment in body["message"]
    assert int(response.headers["retry-after"]) >= 1
    for leaked in (HOST_ACCESS_KEY, "host-secret", "Traceback", "sandbox_id"):
        assert leaked not in response.text


@dataclass(frozen=True)
class Refused:
    response: httpx.Response
    at: float  # time.monotonic() when it arrived

    @property
    def retry_at(self) -> float:
        return self.at + int(self.response.headers["retry-after"])


def refused(world: ChaosWorld, name: str, fragment: str) -> Refused:
    started = time.monotonic()
    response = create(world, name)
    assert time.monotonic() - started < FAILS_WITHIN, name
    assert_clear_503(response, fragment)
    return Refused(response, time.monotonic())


def create_honouring_retry_after(world: ChaosWorld, name: str, last: Refused) -> Any:
    """What a well-behaved agent does after a 503: wait Retry-After, then ask again once."""
    time.sleep(max(0.0, last.retry_at - time.monotonic()))
    response = create(world, name)
    assert response.status_code == 201, f"{name}: still {response.status_code} after Retry-After"
    return response.json()


def test_imds_faults_fail_sandbox_creation_clearly_then_recover(world: ChaosWorld) -> None:
    """With IMDS's token PUT or credentials GETs answering 500 or timing out, creating an
    instance_role sandbox fails within seconds with a 503 that names IMDS and says what went
    wrong, without any STS call (no fallback to our OIDC tokens or any other identity) and
    without handing out a sandbox; a slow IMDS still works; once IMDS is healthy, agents that
    wait the Retry-After they were given get their sandboxes, whose credentials are the
    customer role's and never the instance role's."""
    imds = world.imds
    failed: dict[str, Refused] = {}
    try:
        for name, fault, fragment in FAULTS:
            world.instance_role_integration(name)
            if fault.path == "token":
                imds.tokens.clear()  # IMDS restarted: the broker's cached token is refused
            imds.fault = fault
            calls = sts_calls(world)
            failed[name] = refused(world, name, fragment)
            assert sts_calls(world) == calls, f"{name}: an STS call was made without IMDS"

        # Still down when the agent comes back as told: the broker backs off longer (5-10 s
        # now), and its Retry-After must say so, or the agent's next try is refused again.
        name = "creds-timeout"
        time.sleep(max(0.0, failed[name].retry_at - time.monotonic()))
        failed[name] = refused(world, name, "did not answer within 1 s")

        imds.fault = ImdsFault("token", delay=SLOW_DELAY)
        imds.tokens.clear()
        world.instance_role_integration("slow")
        slow = world.sandbox(world.slug, "slow")
    finally:
        imds.fault = None

    order = sorted(failed, key=lambda name: failed[name].retry_at)
    grants = {name: create_honouring_retry_after(world, name, failed[name]) for name in order}
    grants["slow"] = slow
    for name, grant in grants.items():
        vended = world.vend(grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"])
        assert vended.status_code == 200, name
        assert vended.json()["AccessKeyId"] != HOST_ACCESS_KEY
    lines = SdkClient(world, grants["token-500"], duration=0).finish()
    assert ":assumed-role/chaos-token-500-" in lines[0]["arn"], lines
    assert HOST_ROLE not in lines[0]["arn"]

    records = world.audit()
    for name in failed:
        integration = world.admin("GET", f"/v1/tenants/{world.slug}/integrations/{name}").json()
        mine = [r for r in records if r.get("integration") == integration["id"]]
        errors = [r for r in mine if r["event"] == "exchange" and r["outcome"] == "error"]
        assert errors, f"{name}: the failed exchange is not in the audit log"
        assert all("IMDS at" in r["detail"] for r in errors)
        # Every refused attempt's sandbox was recorded as created and, in the same breath,
        # as revoked with the reason; only the granted one lives.
        created = [r["sandbox"] for r in mine if r["event"] == "sandbox.create"]
        abandoned = [r for r in mine if r["event"] == "sandbox.delete"]
        assert created[-1] == grants[name]["sandbox_id"], name
        assert [r["sandbox"] for r in abandoned] == created[:-1], name
        assert all(r["outcome"] == "error" for r in abandoned), name
        assert all(r["detail"].startswith("revoked at creation: IMDS") for r in abandoned)
