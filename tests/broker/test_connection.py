"""Test connection's failure paths: no credentials, and credentials from the wrong account."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.connection import ConnectionReport, ConnectionTester
from broker.errors import CredentialsRejected
from broker.setup import Profile
from broker.standin.serving import ServerThread
from tests.broker.fakes import FakeSource, integration, request
from tests.conftest import FakeClock


async def test_a_refused_exchange_fails_the_test_with_its_reason(clock: FakeClock) -> None:
    """When STS refuses, the report is failed, carries the hint, and no probe runs."""
    source = FakeSource(
        clock,
        CredentialsRejected(
            "AssumeRoleWithWebIdentity refused",
            sts_code="AccessDenied",
            hint="the trust policy's :sub does not match",
        ),
    )
    report = await ConnectionTester(source, clock=clock).test(
        request(integration()), Profile.INCIDENT
    )
    assert report.status == "failed"
    assert report.error is not None
    assert ":sub does not match" in report.error
    assert report.capabilities == ()


@pytest.mark.slow
async def test_credentials_from_another_account_fail_naming_both(
    clock: FakeClock, moto_url: str
) -> None:
    """Credentials that work but belong to another account fail the test, naming both."""
    source = FakeSource(clock)
    tester = ConnectionTester(source, clock=clock, endpoint_url=moto_url)
    wrong = integration(account_id="111111111111", role_arn="arn:aws:iam::111111111111:role/reader")
    steps: list[str] = []
    report = await tester.test(request(wrong), Profile.INCIDENT, steps.append)
    assert report.status == "failed"
    assert report.account == "123456789012"
    assert report.error is not None
    assert "123456789012" in report.error
    assert "111111111111" in report.error
    assert any("GetCallerIdentity" in step for step in steps)


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_reports_survive_a_round_trip(
    clock: FakeClock, zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored report reads back equal (what GET .../test answers), whatever the machine's
    time zone: the stored time is UTC and read back as UTC."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        report = ConnectionReport("int-1", Profile.ANALYSIS, "active", clock(), account="1" * 12)
        stored = report.to_json()
        assert stored["tested_at"] == clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert ConnectionReport.from_json(stored) == report
    finally:
        monkeypatch.undo()
        time.tzset()


def fake_aws() -> Starlette:
    """Answers GetCallerIdentity, denies CloudWatch Logs (JSON protocol) and EC2 (EC2 query
    protocol), and fails everything else with a 500."""

    async def endpoint(request: Request) -> Response:
        target = request.headers.get("x-amz-target", "")
        form = (await request.body()).decode()
        if "Action=GetCallerIdentity" in form:
            return Response(
                '<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                "<GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn>"
                "<UserId>AROA:s</UserId><Account>123456789012</Account>"
                "</GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId>"
                "</ResponseMetadata></GetCallerIdentityResponse>",
                media_type="text/xml",
            )
        if target.startswith("Logs_"):
            return Response(
                json.dumps({"__type": "AccessDeniedException", "message": "no"}),
                status_code=400,
                media_type="application/x-amz-json-1.1",
            )
        if "Action=DescribeInstances" in form:
            return Response(
                "<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>no"
                "</Message></Error></Errors><RequestID>1</RequestID></Response>",
                status_code=403,
                media_type="text/xml",
            )
        return Response("boom", status_code=500)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


@pytest.mark.slow
async def test_capabilities_are_reported_allowed_denied_or_error(clock: FakeClock) -> None:
    """A refused probe is `denied` (the credentials work, the policy says no); a broken one is
    `error`; the connection itself is still active."""
    server = ServerThread(fake_aws(), "127.0.0.1", 0)
    server.start()
    try:
        tester = ConnectionTester(FakeSource(clock), clock=clock, endpoint_url=server.url)
        report = await tester.test(request(integration()), Profile.INCIDENT)
    finally:
        server.stop()
    statuses = {c.capability: c.status for c in report.capabilities}
    assert report.status == "active"
    assert statuses["logs"] == "denied"
    assert statuses["ec2"] == "denied"
    assert statuses["ecs"] == "error"
