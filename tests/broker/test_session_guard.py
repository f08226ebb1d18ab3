"""Every session carries the read-only guard; a narrowing policy can only take access away."""

from __future__ import annotations

import json

import pytest

from broker.setup import allowed
from broker.setup.policies import guarded_session_policy
from issuer.errors import BadRequest

NARROW = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["ec2:DescribeInstances", "s3:*"], "Resource": "*"}
        ],
    }
)


@pytest.mark.parametrize(
    ("narrowing", "action", "expected"),
    [
        (None, "ec2:DescribeInstances", True),
        (None, "logs:FilterLogEvents", True),
        (None, "s3:PutObject", False),
        (None, "s3:GetObject", False),
        (None, "secretsmanager:GetSecretValue", False),
        (None, "iam:CreateUser", False),
        (NARROW, "ec2:DescribeInstances", True),
        (NARROW, "logs:FilterLogEvents", False),  # narrowed away
        (NARROW, "s3:PutObject", False),  # the narrowing allows s3:*, the guard still denies
        (NARROW, "s3:GetObject", False),
        (NARROW, "s3:ListAllMyBuckets", True),
    ],
)
def test_the_guard_denies_writes_and_data_reads(
    narrowing: str | None, action: str, expected: bool
) -> None:
    """Reads pass, writes and data reads are denied, and a narrowing policy narrows only."""
    policy = json.loads(guarded_session_policy(narrowing))
    assert allowed(policy, action) is expected


def test_the_guarded_policy_fits_sts() -> None:
    """The merged policy stays within STS's 2048 characters."""
    assert len(guarded_session_policy(None)) <= 2048
    assert len(guarded_session_policy(NARROW)) <= 2048


def test_a_narrowing_policy_too_long_to_merge_is_refused() -> None:
    """A policy that fits alone but not with the guard is refused, saying how long it may be."""
    long = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [f"ec2:Describe{n:04d}" for n in range(60)],
                    "Resource": "*",
                }
            ],
        }
    )
    assert len(long) <= 2048
    with pytest.raises(BadRequest, match="keep its statements under about"):
        guarded_session_policy(long)
