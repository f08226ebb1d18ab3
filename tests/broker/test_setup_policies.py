"""The capability profiles, the wildcard matcher and the read-only session policy."""

from __future__ import annotations

import json

import pytest

from broker.setup import (
    DATA_READ_ACTIONS,
    Profile,
    action_matches,
    allowed,
    permissions_policy,
    read_only_session_policy,
)
from broker.setup.actions import statements
from broker.setup.policies import minified, profile_actions

# Actions a careless pattern could grant: the data reads plus more of their kind.
KNOWN_DATA_READS = (
    *DATA_READ_ACTIONS,
    "s3:GetObjectAcl",
    "s3:GetObjectAttributes",
    "s3:GetObjectTagging",
    "secretsmanager:BatchGetSecretValue",
    "ssm:GetParameterHistory",
    "dynamodb:PartiQLSelect",
    "dynamodb:GetRecords",
    "kms:GenerateDataKey",
    "lambda:InvokeFunction",
    "rds:DownloadDBLogFilePortion",
    "ec2:GetPasswordData",
    "ec2:GetConsoleOutput",
    "ecs:ExecuteCommand",
)

WRITE_PREFIXES = (
    "Create",
    "Delete",
    "Put",
    "Update",
    "Modify",
    "Attach",
    "Detach",
    "Run",
    "Start",
    "Stop",
    "Invoke",
    "Terminate",
    "Reboot",
    "Tag",
    "Untag",
    "Set",
    "Add",
    "Remove",
    "Associate",
    "Disassociate",
    "Execute",
    "Restore",
    "Copy",
    "Import",
    "Export",
    "Enable",
    "Disable",
    "Reset",
    "Revoke",
    "Authorize",
    "Pass",
    "Upload",
    "Send",
    "Publish",
    "Replace",
    "Register",
    "Deregister",
)
READ_QUERIES_ALLOWED = {"logs:StartQuery", "logs:StopQuery"}
# Real write actions of the profiles' services; a wildcard that reaches any of them fails.
KNOWN_WRITES = (
    "logs:PutLogEvents",
    "logs:DeleteLogGroup",
    "logs:CreateExportTask",
    "cloudwatch:PutMetricData",
    "cloudwatch:DeleteAlarms",
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "ec2:ModifyInstanceAttribute",
    "ecs:UpdateService",
    "ecs:RunTask",
    "ecs:StopTask",
    "eks:UpdateNodegroupConfig",
    "eks:DeleteCluster",
    "elasticache:RebootCacheCluster",
    "lambda:UpdateFunctionCode",
    "lambda:InvokeFunction",
    "rds:ModifyDBInstance",
    "rds:StartDBInstance",
    "s3:PutObject",
    "s3:DeleteBucket",
    "s3:PutBucketPolicy",
    "dynamodb:PutItem",
    "dynamodb:UpdateTable",
    "elasticloadbalancing:ModifyListener",
    "iam:CreateUser",
    "iam:AttachRolePolicy",
    "iam:PassRole",
    "ce:UpdateCostAllocationTagsStatus",
    "organizations:LeaveOrganization",
    "sts:AssumeRole",
    "sts:TagSession",
)


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("s3:GetObject", "s3:GetObject", True),
        ("s3:getobject", "S3:GetObject", True),
        ("s3:Get*", "s3:GetObject", True),
        ("s3:GetBucket*", "s3:GetObject", False),
        ("s3:GetBucket*", "s3:GetBucketPolicy", True),
        ("ssm:GetParameter?", "ssm:GetParameters", True),
        ("ssm:GetParameter?", "ssm:GetParameter", False),
        ("*", "kms:Decrypt", True),
        ("logs:*", "logs:GetLogEvents", True),
        ("logs:*", "cloudwatch:GetMetricData", False),
        ("ec2:Describe*", "ec2:DescribeInstances", True),
        ("ec2:Describe*", "ec2:DeleteVpc", False),
        ("iam:*AccessKey*", "iam:ListAccessKeys", True),
        ("s3:Get.bject", "s3:GetObject", False),
    ],
)
def test_wildcard_matcher(pattern: str, action: str, expected: bool) -> None:
    """`*` matches any run, `?` one character, case-insensitively, and nothing is a regex."""
    assert action_matches(pattern, action) is expected


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("action", KNOWN_DATA_READS)
def test_profiles_grant_no_data_read(profile: Profile, action: str) -> None:
    """No profile pattern, once expanded, covers a data-reading action."""
    assert not allowed(permissions_policy(profile), action)


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("action", KNOWN_WRITES)
def test_profiles_grant_no_known_write(profile: Profile, action: str) -> None:
    """No profile pattern, once expanded, covers a known write action."""
    assert not allowed(permissions_policy(profile), action)


@pytest.mark.parametrize("profile", list(Profile))
def test_profile_actions_have_no_write_verb(profile: Profile) -> None:
    """Every action name of a profile starts with a read verb (the two Logs query controls
    aside), so a new entry that writes is caught even if it is in no list above."""
    offenders = [
        action
        for action in profile_actions(profile)
        if action.split(":", 1)[1].startswith(WRITE_PREFIXES) and action not in READ_QUERIES_ALLOWED
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("profile", "action"),
    [
        (Profile.INCIDENT, "logs:FilterLogEvents"),
        (Profile.INCIDENT, "logs:StartQuery"),
        (Profile.INCIDENT, "logs:DescribeLogGroups"),
        (Profile.INCIDENT, "elasticache:DescribeServerlessCaches"),
        (Profile.INCIDENT, "sts:GetCallerIdentity"),
        (Profile.ANALYSIS, "s3:GetBucketPolicy"),
        (Profile.ANALYSIS, "rds:DescribeDBInstances"),
        (Profile.ANALYSIS, "ce:GetCostAndUsage"),
        (Profile.ANALYSIS, "iam:ListRoles"),
        (Profile.ANALYSIS, "lambda:GetFunctionConfiguration"),
    ],
)
def test_profiles_grant_what_they_are_for(profile: Profile, action: str) -> None:
    """Each profile grants the reads its agents need."""
    assert allowed(permissions_policy(profile), action)


def test_incident_does_not_reach_analysis_services() -> None:
    """The incident profile stays narrow: no IAM, cost or S3 reads."""
    policy = permissions_policy(Profile.INCIDENT)
    assert not any(
        allowed(policy, a) for a in ("iam:ListRoles", "ce:GetCostAndUsage", "s3:ListAllMyBuckets")
    )


@pytest.mark.parametrize("profile", list(Profile))
def test_profiles_fit_a_managed_policy(profile: Profile) -> None:
    """A profile's document is valid JSON under IAM's 6144-character managed-policy limit."""
    text = minified(permissions_policy(profile))
    assert json.loads(text) == permissions_policy(profile)
    assert len(text) <= 6_144


def test_session_policy_fits_sts() -> None:
    """The session policy is minified JSON within STS's 2048 characters."""
    text = read_only_session_policy()
    assert len(text) <= 2_048
    assert json.loads(text)["Version"] == "2012-10-17"


# The session policy intersected with an AdministratorAccess role: what the session may do.
@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("ec2:DescribeInstances", True),
        ("logs:GetLogEvents", True),
        ("logs:StartQuery", True),
        ("cloudwatch:GetMetricData", True),
        ("s3:GetBucketPolicy", True),
        ("sts:GetCallerIdentity", True),
        ("s3:PutObject", False),
        ("s3:GetObject", False),
        ("secretsmanager:GetSecretValue", False),
        ("ssm:GetParameters", False),
        ("dynamodb:Query", False),
        ("kms:Decrypt", False),
        ("lambda:GetFunction", False),
        ("iam:CreateUser", False),
        ("ec2:RunInstances", False),
        ("sts:AssumeRole", False),
    ],
)
def test_session_policy_leaves_only_reads(action: str, expected: bool) -> None:
    """Under the session policy even an admin role may only read configuration (Deny wins)."""
    session = json.loads(read_only_session_policy())
    admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*"}]}
    assert (allowed(session, action) and allowed(admin, action)) is expected


@pytest.mark.parametrize("action", [*KNOWN_DATA_READS, *KNOWN_WRITES])
def test_session_policy_denies_every_known_data_read_and_write(action: str) -> None:
    """Every listed data read and write is denied by the session policy."""
    assert not allowed(json.loads(read_only_session_policy()), action)


def test_evaluator_skips_conditional_statements() -> None:
    """A statement with a Condition never counts as an unconditional grant or denial."""
    policy = {"Statement": {"Effect": "Allow", "Action": "*", "Condition": {"Bool": {"x": "true"}}}}
    assert statements(policy) == [policy["Statement"]]
    assert not allowed(policy, "ec2:DescribeInstances")
