"""The stand-in's own API: injected faults as botocore sees them, stats, reset, and the shape of
the gate's error responses."""

from __future__ import annotations

import re
import time
from typing import Any
from xml.etree import ElementTree as ET

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.standin.conftest import REGION, SETUP_KEYS, Aws, pinned, refusal, web_identity
from tests.standin.idp import AUDIENCE, SUBJECT, FakeIdp

pytestmark = pytest.mark.usefixtures("fresh")


def fault(aws: Aws, **plan: Any) -> None:
    response = aws.admin("POST", "/faults", plan)
    assert response.status_code == 200, response.text


def role(aws: Aws, idp: FakeIdp) -> str:
    return aws.role(pinned(idp.issuer, AUDIENCE, SUBJECT))


@pytest.mark.parametrize(
    ("mode", "code", "status"),
    [
        ("throttle", "Throttling", 400),
        ("unavailable", "ServiceUnavailable", 503),
        ("idp_unreachable", "IDPCommunicationError", 400),
    ],
)
def test_faults_reach_botocore_as_aws_errors(
    aws: Aws, fake_idp: FakeIdp, mode: str, code: str, status: int
) -> None:
    """Each fault mode arrives as the AWS error code and status botocore expects."""
    arn = role(aws, fake_idp)
    fault(aws, mode=mode)
    error = refusal(lambda: web_identity(aws, arn, fake_idp.token()))
    assert (error.code, error.status) == (code, status)
    if mode == "throttle":
        assert error.message == "Rate exceeded"


def test_slow_mode_answers_late_but_as_usual(aws: Aws, fake_idp: FakeIdp) -> None:
    """The slow mode delays the answer by `delay` seconds and changes nothing else."""
    arn = role(aws, fake_idp)
    fault(aws, mode="slow", delay=0.4, remaining=1)
    assert aws.admin("GET", "/faults").json()["delay"] == 0.4
    started = time.monotonic()
    answer = web_identity(aws, arn, fake_idp.token())
    assert time.monotonic() - started >= 0.4
    assert answer["Credentials"]["AccessKeyId"].startswith("ASIA")
    started = time.monotonic()
    web_identity(aws, arn, fake_idp.token())  # the plan covered one request only
    assert time.monotonic() - started < 0.4


def test_throttling_outlasts_botocore_retries(aws: Aws, fake_idp: FakeIdp) -> None:
    """With retries={"max_attempts": 1} botocore retries once, then raises Throttling."""
    arn = role(aws, fake_idp)
    fault(aws, mode="throttle")
    sts = boto3.client(
        "sts",
        region_name=REGION,
        endpoint_url=aws.endpoint_url,
        config=Config(retries={"max_attempts": 1}),
        **SETUP_KEYS,
    )
    with pytest.raises(ClientError) as caught:
        sts.assume_role_with_web_identity(
            RoleArn=arn, RoleSessionName="sbx-1", WebIdentityToken=fake_idp.token()
        )
    assert caught.value.response["Error"]["Code"] == "Throttling"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    assert aws.admin("GET", "/stats").json()["AssumeRoleWithWebIdentity"] == {"Throttling": 2}


def test_botocore_retries_through_a_short_fault(aws: Aws, fake_idp: FakeIdp) -> None:
    """A throttle limited to one request is absorbed by botocore's own retry."""
    arn = role(aws, fake_idp)
    fault(aws, mode="throttle", remaining=1)
    result = web_identity(aws, arn, fake_idp.token(), client={"attempts": 2})
    assert result["ResponseMetadata"]["RetryAttempts"] == 1
    assert aws.admin("GET", "/stats").json()["AssumeRoleWithWebIdentity"] == {
        "Throttling": 1,
        "ok": 1,
    }
    assert aws.admin("GET", "/faults").json()["mode"] == "none"


def test_faults_apply_only_to_their_actions(aws: Aws, fake_idp: FakeIdp) -> None:
    """A fault for AssumeRole leaves AssumeRoleWithWebIdentity and IAM alone."""
    arn = role(aws, fake_idp)
    fault(aws, mode="unavailable", actions=["AssumeRole"])
    assert web_identity(aws, arn, fake_idp.token())["Credentials"]
    assert aws.client("iam").get_role(RoleName=arn.rsplit("/", 1)[1])["Role"]["Arn"] == arn


def test_stats_count_each_outcome(aws: Aws, fake_idp: FakeIdp) -> None:
    """Stats count successes and each refusal code per action."""
    arn = role(aws, fake_idp)
    web_identity(aws, arn, fake_idp.token())
    refusal(lambda: web_identity(aws, arn, fake_idp.token(kid="nope")))
    refusal(lambda: web_identity(aws, arn, fake_idp.token(fake_idp.claims(sub="other-1"))))
    stats = aws.admin("GET", "/stats").json()
    assert stats["AssumeRoleWithWebIdentity"] == {
        "ok": 1,
        "InvalidIdentityToken": 1,
        "AccessDenied": 1,
    }
    assert stats["CreateRole"] == {"ok": 1}


def test_reset_clears_stats_and_faults(aws: Aws, fake_idp: FakeIdp) -> None:
    """After a reset there are no counts and no fault."""
    fault(aws, mode="throttle")
    refusal(lambda: web_identity(aws, role(aws, fake_idp), fake_idp.token()))
    assert aws.admin("POST", "/reset").status_code == 204
    assert aws.admin("GET", "/stats").json() == {}
    assert aws.admin("GET", "/faults").json()["mode"] == "none"


@pytest.mark.parametrize(
    "plan",
    [
        {"mode": "explode"},
        {},
        {"mode": "throttle", "remaining": -1},
        {"mode": "throttle", "remaining": True},
        {"mode": "throttle", "actions": "AssumeRole"},
        {"mode": "throttle", "delay": 1},
        {"mode": "slow"},
        {"mode": "slow", "delay": 0},
        {"mode": "slow", "delay": 61},
        {"mode": "slow", "delay": "1"},
        ["throttle"],
    ],
)
def test_bad_fault_plans_are_rejected(aws: Aws, plan: Any) -> None:
    """Unknown modes, bad counts and bad action lists get 400 and change nothing."""
    assert aws.admin("POST", "/faults", plan).status_code == 400
    assert aws.admin("GET", "/faults").json()["mode"] == "none"


def test_error_responses_have_the_sts_shape(standin_url: str) -> None:
    """Errors are STS query XML with Type, Code, Message and a RequestId matching the header."""
    response = httpx.post(
        standin_url,
        data={"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/xml"
    ns = {"s": "https://sts.amazonaws.com/doc/2011-06-15/"}
    root = ET.fromstring(response.content)  # noqa: S314 - our own gate's answer
    assert root.tag == "{https://sts.amazonaws.com/doc/2011-06-15/}ErrorResponse"
    assert root.findtext("s:Error/s:Type", namespaces=ns) == "Sender"
    assert root.findtext("s:Error/s:Code", namespaces=ns) == "ValidationError"
    assert re.search("roleArn", root.findtext("s:Error/s:Message", namespaces=ns) or "")
    assert root.findtext("s:RequestId", namespaces=ns) == response.headers["x-amzn-requestid"]


def test_health(aws: Aws) -> None:
    """The health endpoint answers while the gate serves."""
    assert aws.admin("GET", "/health").json() == {"status": "ok"}
