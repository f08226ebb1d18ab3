"""The audit log becoming unwritable under the running `warrant serve`: nothing is handed out
without its record.

The tests run as root, for whom permissions are no obstacle, and the server keeps the log open,
so renaming or replacing the file would not stop its writes either. What does: the immutable
attribute (`chattr +i`), which the kernel enforces for root and for descriptors already open
(EPERM). Where it cannot be set (no CAP_LINUX_IMMUTABLE, or a file system without it), the file is
grown, sparsely, to the largest size its file system allows, so that every append fails with EFBIG
as on a full disk; both undo cleanly.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.chaos.world import ChaosWorld

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

# Watch the instance-role sandbox this long after its session was made: the session enters its
# refresh window at 4 s (the world's 15 s sessions, refreshed from 11 s left), so refreshes are
# wanted for the last 5 s. Backing off (2.5-5 s, then 5-10 s) allows two or three attempts in
# that time; without backoff it was one per vend (dozens).
STORM_WATCH = 9.0
MAX_WASTED_CALLS = 3


def _chattr(path: Path, flag: str) -> bool:
    try:
        result = subprocess.run(
            ["chattr", flag, str(path)], capture_output=True, text=True, timeout=10, check=False
        )
    except FileNotFoundError:
        return False
    return result.returncode == 0


def _largest_size(path: Path) -> int:
    """The largest size `path`'s file system lets it have (found by truncating, sparsely)."""
    low, high = path.stat().st_size, 2**63 - 1
    while low < high:
        middle = (low + high + 1) // 2
        try:
            os.truncate(path, middle)
        except OSError as exc:
            if exc.errno not in (errno.EFBIG, errno.EINVAL):
                raise
            high = middle - 1
        else:
            low = middle
    return low


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[str]:
    """Until the block ends, the kernel refuses every write to `path`, through any descriptor.
    Yields how."""
    if _chattr(path, "+i"):
        try:
            yield "immutable"
        finally:
            assert _chattr(path, "-i"), f"could not make {path} writable again"
        return
    size = path.stat().st_size
    try:
        os.truncate(path, _largest_size(path))
        yield "file too large"
    finally:
        os.truncate(path, size)


def mint(world: ChaosWorld) -> httpx.Response:
    return world.agent("POST", "/v1/tokens", {"tenant": world.slug})


def create(world: ChaosWorld, integration: str, **extra: Any) -> httpx.Response:
    body = {"tenant": world.slug, "integration": integration, **extra}
    return world.agent("POST", "/v1/sandboxes", body)


def jti(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    value: str = claims["jti"]
    return value


def live_sandboxes(world: ChaosWorld, integration_id: str) -> set[str]:
    """Sandboxes of the integration that are not revoked, read from the database itself."""
    with contextlib.closing(sqlite3.connect(world.server.data_dir / "warrant.db")) as db:
        rows = db.execute(
            "SELECT id FROM sandboxes WHERE integration_id = ? AND revoked_at IS NULL",
            (integration_id,),
        ).fetchall()
    return {row[0] for row in rows}


def assert_names_the_audit_log(response: httpx.Response, path: Path) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"error", "message", "request_id"}
    assert body["error"] == "audit_unavailable"
    assert body["message"].startswith(f"audit log unwritable: {path}: ")
    assert "not issued without an audit record" in body["message"]
    assert int(response.headers["retry-after"]) >= 1
    for leaked in ("AWS_SECRET_ACCESS_KEY", "AWS_CONTAINER_AUTHORIZATION_TOKEN", 'token"', "eyJ"):
        assert leaked not in response.text


def test_unwritable_audit_log_fails_closed_then_recovers(world: ChaosWorld) -> None:
    """With the audit log unwritable, minting, vending (even cached credentials) and creating
    sandboxes of both deliveries answer 503 (naming the audit log to the agent; only a request
    id to the sandbox, whose cause is in the server log), nothing is handed out, no half-made
    sandbox stays live, refreshes that cannot be audited back off rather than call STS on every
    request, and the log is not torn; once it is writable again everything works,
    and every token, credential and sandbox handed out in the test has its record."""
    integration = world.oidc_integration("audited")
    grant = world.sandbox(world.slug, "audited")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    handed_out: list[tuple[str, str]] = [("sandbox", grant["sandbox_id"])]
    world.instance_role_integration("audited-host")
    hosted = world.sandbox(world.slug, "audited-host")  # its session is brand new
    hosted_at = time.monotonic()
    handed_out.append(("sandbox", hosted["sandbox_id"]))
    vended = world.vend(token)
    assert vended.status_code == 200  # the session is cached: vending needs no STS call
    handed_out.append(("vend", vended.json()["AccessKeyId"]))
    path = world.server.data_dir / "audit.jsonl"
    before = path.read_bytes()

    with unwritable(path) as how:
        refused = [mint(world), create(world, "audited"), create(world, "audited", delivery="env")]
        for response in refused:
            assert_names_the_audit_log(response, path)
        response = world.vend(token)
        assert response.status_code == 503, response.text
        assert set(response.json()) == {"error", "message", "request_id"}
        assert "Secret" not in response.text
        rid = response.headers["x-request-id"]
        assert int(response.headers["retry-after"]) >= 1
        # Past refresh-ahead, every vend of the instance-role sandbox wants a new session; each
        # attempt costs an IMDS read and an STS call whose result cannot be audited, so is
        # thrown away. The broker backs off between attempts instead of making one per vend.
        calls = world.stats("AssumeRole").get("ok", 0)
        hosted_token = hosted["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        while time.monotonic() < hosted_at + STORM_WATCH:
            assert world.vend(hosted_token).status_code == 503
            time.sleep(0.1)
        wasted = world.stats("AssumeRole").get("ok", 0) - calls
        assert wasted <= MAX_WASTED_CALLS, f"{wasted} STS calls in {STORM_WATCH:g} s"
        if how == "immutable":  # the other way makes the file enormous (sparse): leave it be
            assert path.read_bytes() == before, "the log changed while it was unwritable"
    assert path.read_bytes() == before

    logged = f"request {rid}: credentials not vended: AuditUnavailable: audit log unwritable"
    deadline = time.monotonic() + 5
    while logged not in world.server.logs():
        assert time.monotonic() < deadline, "the server log does not say why the vend failed"
        time.sleep(0.05)
    assert live_sandboxes(world, integration["id"]) == {grant["sandbox_id"]}, (
        "a sandbox whose creation could not be audited is live"
    )

    minted = mint(world)
    assert minted.status_code == 200, minted.text
    vended = world.vend(hosted_token)
    assert vended.status_code == 200, vended.text  # its session is still cached
    handed_out.append(("vend", vended.json()["AccessKeyId"]))
    handed_out.append(("mint", jti(minted.json()["token"])))
    vended = world.vend(token)
    assert vended.status_code == 200, vended.text
    handed_out.append(("vend", vended.json()["AccessKeyId"]))
    for extra in ({}, {"delivery": "env"}):
        created = create(world, "audited", **extra)
        assert created.status_code == 201, created.text
        handed_out.append(("sandbox", created.json()["sandbox_id"]))
        if "AWS_ACCESS_KEY_ID" in created.json()["env"]:
            handed_out.append(("vend", created.json()["env"]["AWS_ACCESS_KEY_ID"]))
            world.secrets.add(created.json()["env"]["AWS_SECRET_ACCESS_KEY"])

    records = world.audit()  # every line parses: the failures tore nothing
    recorded = {("sandbox", r["sandbox"]) for r in records if r["event"] == "sandbox.create"}
    recorded |= {
        ("vend", r["access_key_id"])
        for r in records
        if r["event"] == "vend" and r["outcome"] == "ok"
    }
    recorded |= {
        ("mint", r["detail"].rsplit("jti=", 1)[1]) for r in records if r["event"] == "mint"
    }
    assert [item for item in handed_out if item not in recorded] == []


def test_a_sandbox_is_revoked_even_when_its_revocation_cannot_be_recorded(
    world: ChaosWorld,
) -> None:
    """The sandbox's creation is recorded while STS answers. If the log breaks before the
    exchange's answer arrives, the agent gets the clear 503 naming the log, the half-made
    sandbox is revoked all the same, and the server's log says its revocation could not be
    recorded (the audit log shows it created, and nothing after)."""
    integration = world.oidc_integration("breaks-mid-way")
    audit = world.server.data_dir / "audit.jsonl"

    def created() -> list[str]:
        return [
            r["sandbox"]
            for r in world.audit()
            if r["event"] == "sandbox.create" and r.get("integration") == integration["id"]
        ]

    world.standin_admin("POST", "/faults", {"mode": "slow", "delay": 1.5})
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(create, world, "breaks-mid-way")
            deadline = time.monotonic() + 1.0
            while not created():
                assert time.monotonic() < deadline, "the sandbox was not recorded while STS answers"
                time.sleep(0.02)
            with unwritable(audit):
                response = answer.result(timeout=30)
    finally:
        world.fault("none")
    assert_names_the_audit_log(response, audit)
    (sandbox,) = created()
    assert live_sandboxes(world, integration["id"]) == set()
    assert [r["event"] for r in world.audit() if r.get("sandbox") == sandbox] == ["sandbox.create"]
    assert (
        f"sandbox {sandbox}: revocation not recorded: audit log unwritable" in world.server.logs()
    )
