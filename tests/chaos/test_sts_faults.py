"""STS throttling, intermittent faults and an outage, injected in the strict stand-in while
unmodified boto3 in a sandbox process keeps calling AWS through the container endpoint.

The outage's first half (cached credentials until the floor, then 503, then recovery, seen with
plain HTTP) is tests/broker/test_e2e.py's; here the client is the SDK, the faults come and go,
and the 503 is inspected for what it tells the sandbox, the operator and the SDK.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.broker.world import ACCOUNT
from tests.chaos.conftest import FLOOR, LIFETIME, REFRESH_AHEAD
from tests.chaos.world import ChaosWorld, SdkClient

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# A refresh starts 4 s into a session and a failed one is retried within 5 s (+1 s of botocore's
# own retry delay); allow for a loaded machine on top.
NEXT_SESSION_WITHIN = (LIFETIME.total_seconds() - REFRESH_AHEAD) + 5 + 1 + 8
POLL = 0.2


def remaining(response: httpx.Response) -> timedelta:
    expires = datetime.fromisoformat(response.json()["Expiration"])  # "...Z": UTC
    return expires - datetime.now(UTC)


def vend_ok(world: ChaosWorld, token: str) -> httpx.Response:
    """A vend that must succeed with at least the floor left (1 s for Expiration's rounding)."""
    response = world.vend(token)
    assert response.status_code == 200, response.text
    assert remaining(response) >= timedelta(seconds=FLOOR - 1), response.json()["Expiration"]
    return response


def next_session(world: ChaosWorld, token: str, current: str) -> str:
    """Vend every POLL seconds, each successfully, until a session other than `current` is
    served; its access key id."""
    deadline = time.monotonic() + NEXT_SESSION_WITHIN
    while True:
        key: str = vend_ok(world, token).json()["AccessKeyId"]
        if key != current:
            return key
        assert time.monotonic() < deadline, "no new session: the refresh never succeeded"
        time.sleep(POLL)


def grown(before: dict[str, int], after: dict[str, int], outcome: str) -> int:
    return after.get(outcome, 0) - before.get(outcome, 0)


# (fault, remaining, stand-in outcome it produces). Each is consumed by the next refresh.
INTERMITTENT = [
    # Both attempts of one refresh (the STS client retries once) are throttled: the refresh
    # fails, cached credentials keep flowing, and the cache's retry 2.5-5 s later succeeds.
    ("throttle", 2, "Throttling"),
    # One 503 from STS: the STS client's own retry absorbs it.
    ("unavailable", 1, "ServiceUnavailable"),
    # STS cannot reach our IdP once: retried by the client or, failing that, by the cache.
    ("idp_unreachable", 1, "IDPCommunicationError"),
]


def test_throttling_and_intermittent_faults_never_reach_the_sdk(world: ChaosWorld) -> None:
    """While STS throttles for a while and fails intermittently (counted faults), boto3 in the
    sandbox and a plain HTTP client see no error at all: cached credentials, never below the
    floor, keep flowing while refreshes fail, and the retries succeed with new sessions."""
    world.oidc_integration("throttled")
    grant = world.sandbox(world.slug, "throttled")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    client = SdkClient(world, grant, duration=300)
    try:
        session = next_session(world, token, "")
        for mode, count, outcome in INTERMITTENT:
            before = world.stats()
            world.fault(mode, remaining=count)
            session = next_session(world, token, session)
            after = world.stats()
            assert grown(before, after, outcome) == count, (mode, count, before, after)
            assert grown(before, after, "ok") >= 1

        # Throttling with no end in sight: once a refresh has failed on it, it stops, before the
        # cache's retry (at least 2.5 s after the failure) comes round.
        before = world.stats()
        world.fault("throttle")
        deadline = time.monotonic() + NEXT_SESSION_WITHIN
        while grown(before, world.stats(), "Throttling") < 2:
            vend_ok(world, token)
            assert time.monotonic() < deadline, "the throttled refresh never came"
            time.sleep(POLL)
        vend_ok(world, token)
        world.fault("none")
        session = next_session(world, token, session)
    finally:
        world.fault("none")
        client.process.terminate()
    lines = client.finish()
    assert lines, "the SDK client made no call"
    assert [line for line in lines if "error" in line] == []
    assert all(f":{ACCOUNT}:assumed-role/chaos-throttled-" in line["arn"] for line in lines)
    assert len({line["access_key"] for line in lines}) >= len(INTERMITTENT) + 2


def test_outage_past_the_floor_then_recovery_through_sdk_retries(world: ChaosWorld) -> None:
    """STS down: boto3 keeps working on cached credentials until the floor, then vends answer
    a 503 that tells the sandbox nothing but a request id and Retry-After, while the audit log
    and the server log hold the cause under that id; once STS is back, a boto3 client that
    starts while the broker still answers 503 gets credentials through its own retries,
    without seeing an error."""
    world.oidc_integration("outage")
    created = time.monotonic()  # the session is made while the sandbox is: no older than this
    grant = world.sandbox(world.slug, "outage")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    world.fault("unavailable")
    recovering = SdkClient(world, grant, duration=1, gated=True)
    try:
        # Until a couple of seconds before the session reaches the floor, all from the cache.
        sdk = SdkClient(world, grant, duration=0, gated=True)
        sdk.wait_ready()
        sdk.go(LIFETIME.total_seconds() - FLOOR - 2 - (time.monotonic() - created))
        lines = sdk.finish()
        assert lines, "the SDK client made no call"
        assert [line for line in lines if "error" in line] == []
        assert len({line["access_key"] for line in lines}) == 1

        deadline = time.monotonic() + LIFETIME.total_seconds()
        while (response := world.vend(token)).status_code == 200:
            assert remaining(response) >= timedelta(seconds=FLOOR - 1)
            assert time.monotonic() < deadline, "cached credentials outlived their floor"
            time.sleep(POLL)
        assert_clear_503(world, response)
    except BaseException:
        recovering.kill()
        raise
    finally:
        world.fault("none")

    # The broker tries STS again only when its backoff ends (Retry-After says when). An SDK
    # client asked to start just before then meets a 503 first, and its retries (three
    # attempts, a second apart) carry it past the moment the broker recovers.
    try:
        recovering.wait_ready()
        response = world.vend(token)
        if response.status_code == 503:
            due = time.monotonic() + int(response.headers["retry-after"])
            time.sleep(max(0.0, due - 1.8 - time.monotonic()))
        went = datetime.now(UTC)
        recovering.go()
        lines = recovering.finish()
    finally:
        recovering.kill()
    assert [line for line in lines if "error" in line] == [], lines
    assert ":assumed-role/chaos-outage-" in lines[0]["arn"]
    met = [
        r
        for r in world.audit()
        if r["event"] == "vend"
        and r.get("sandbox") == grant["sandbox_id"]
        and r["outcome"] == "error"
        and datetime.fromisoformat(r["time"]) >= went
    ]
    print(f"\nthe recovering SDK client met {len(met)} 503(s) before it got credentials")


def assert_clear_503(world: ChaosWorld, response: httpx.Response) -> None:
    """What a sandbox (untrusted code) may see, and what the operator finds under its id."""
    assert response.status_code == 503, response.text
    rid = response.headers["x-request-id"]
    assert int(response.headers["retry-after"]) >= 1
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == "credentials_unavailable"
    assert body["request_id"] == rid
    assert rid in body["message"]
    for hidden in ("ServiceUnavailable", "arn:aws", "Traceback", world.slug):
        assert hidden not in response.text
    records = [r for r in world.audit() if r.get("request_id") == rid]
    assert [(r["event"], r["outcome"], r.get("sts_error")) for r in records] == [
        ("vend", "error", "ServiceUnavailable")
    ]
    logged = f"request {rid}: credentials not vended: CredentialsUnavailable"
    deadline = time.monotonic() + 5
    while logged not in world.server.logs():  # the log line may trail the response a moment
        assert time.monotonic() < deadline, f"the server log has no line for request {rid}"
        time.sleep(0.05)
