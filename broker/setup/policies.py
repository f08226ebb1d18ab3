"""What the customer's role may do: the capability profiles (read-only customer-managed policy
documents), the AWS managed ReadOnlyAccess option, and the read-only session policy the broker
attaches to every session."""

from __future__ import annotations

import enum
import functools
import json
from typing import Any

from issuer.errors import BadRequest

__all__ = [
    "DATA_READ_ACTIONS",
    "POLICY_VERSION",
    "SESSION_POLICY_MAX_CHARS",
    "PolicyChoice",
    "Profile",
    "managed_readonly_arn",
    "minified",
    "permissions_policy",
    "profile_actions",
    "read_only_session_policy",
]

POLICY_VERSION = "2012-10-17"
SESSION_POLICY_MAX_CHARS = 2_048  # STS: inline session policy plaintext, 1-2048 characters


class Profile(enum.StrEnum):
    INCIDENT = "incident"  # on-call agents: logs, metrics, compute and cache state
    ANALYSIS = "analysis"  # infrastructure, cost and security analysis agents


class PolicyChoice(enum.StrEnum):
    PROFILE = "profile"  # our least-privilege document for the chosen profile
    MANAGED_READONLY = "managed-readonly"  # AWS managed ReadOnlyAccess (broad; reads data too)


# Reads of data rather than of configuration: never granted by a profile, always denied by the
# session policy. Logs reads are absent on purpose: reading logs is what `incident` is for.
DATA_READ_ACTIONS: tuple[str, ...] = (
    "s3:GetObject",
    "s3:GetObjectVersion",
    "secretsmanager:GetSecretValue",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "kms:Decrypt",
    "lambda:GetFunction",  # returns a presigned URL to the function's code
)

_LOGS = (
    "logs:Describe*",
    "logs:FilterLogEvents",
    "logs:GetLogEvents",
    "logs:StartQuery",
    "logs:GetQueryResults",
    "logs:StopQuery",
)
_CLOUDWATCH = (
    "cloudwatch:ListMetrics",
    "cloudwatch:GetMetricData",
    "cloudwatch:GetMetricStatistics",
    "cloudwatch:DescribeAlarms",
)
_EC2 = (
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
)
_ECS = (
    "ecs:ListClusters",
    "ecs:DescribeClusters",
    "ecs:ListServices",
    "ecs:DescribeServices",
    "ecs:ListTasks",
    "ecs:DescribeTasks",
)
_EKS = ("eks:ListClusters", "eks:DescribeCluster", "eks:ListNodegroups", "eks:DescribeNodegroup")
_ELASTICACHE = (
    "elasticache:DescribeCacheClusters",
    "elasticache:DescribeReplicationGroups",
    "elasticache:DescribeServerlessCaches",
    "elasticache:DescribeEvents",
)
_IDENTITY = ("sts:GetCallerIdentity",)
_LAMBDA = ("lambda:ListFunctions", "lambda:GetFunctionConfiguration")
_DATA_STORES = (
    "rds:Describe*",
    # Bucket-level only: never s3:GetObject, nor s3:Get* (which includes it).
    "s3:ListAllMyBuckets",
    "s3:GetBucketLocation",
    "s3:GetBucketPolicy",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetEncryptionConfiguration",
    "s3:GetBucketLogging",
    "s3:GetBucketAcl",
    "dynamodb:ListTables",
    "dynamodb:DescribeTable",
)
_LOAD_BALANCERS = ("elasticloadbalancing:Describe*",)
_IAM = ("iam:Get*", "iam:List*")
_COST = ("ce:Get*", "ce:Describe*")
_ORGANIZATIONS = ("organizations:Describe*", "organizations:List*")

# (statement id, actions): one statement per concern, so a reviewer can read the policy.
_PROFILES: dict[Profile, tuple[tuple[str, tuple[str, ...]], ...]] = {
    Profile.INCIDENT: (
        ("Logs", _LOGS),
        ("Metrics", _CLOUDWATCH),
        ("Compute", _EC2 + _ECS + _EKS),
        ("Caches", _ELASTICACHE),
        ("Identity", _IDENTITY),
    ),
    Profile.ANALYSIS: (
        ("Compute", _EC2 + _ECS + _EKS + _LAMBDA),
        ("DataStoreConfiguration", _DATA_STORES),
        ("LoadBalancers", _LOAD_BALANCERS),
        ("Metrics", _CLOUDWATCH),
        ("Iam", _IAM),
        ("Cost", _COST),
        ("Organizations", _ORGANIZATIONS),
        ("Identity", _IDENTITY),
    ),
}


def profile_actions(profile: Profile) -> tuple[str, ...]:
    """Every action pattern a profile grants."""
    return tuple(action for _, actions in _PROFILES[profile] for action in actions)


def permissions_policy(profile: Profile, partition: str = "aws") -> dict[str, Any]:
    """The read-only identity policy document for `profile`. Every action is a read of
    configuration, metrics or logs; the resources are "*" because these actions are listed or
    described account-wide. `partition` is accepted for symmetry with ARN-bearing documents."""
    del partition  # no ARNs inside: every statement is on "*"
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": f"Warrant{sid}",
                "Effect": "Allow",
                "Action": list(actions),
                "Resource": "*",
            }
            for sid, actions in _PROFILES[profile]
        ],
    }


def managed_readonly_arn(partition: str) -> str:
    """The AWS managed ReadOnlyAccess policy in `partition`."""
    return f"arn:{partition}:iam::aws:policy/ReadOnlyAccess"


# Read patterns per service, for the session policy's Deny/NotAction. The service is always named:
# IAM's Action grammar is "<service>:<action>" with wildcards in the action part; a wildcard
# service ("*:Get*") is not documented, and a session policy IAM rejects would break every
# credential request. Naming the services also caps the session at the services we support.
_SESSION_READS: tuple[str, ...] = (
    "logs:Describe*",
    "logs:FilterLogEvents",
    "logs:GetLogEvents",
    "logs:StartQuery",
    "logs:StopQuery",
    "logs:GetQueryResults",
    "cloudwatch:Describe*",
    "cloudwatch:Get*",
    "cloudwatch:List*",
    "ec2:Describe*",
    "ecs:Describe*",
    "ecs:List*",
    "eks:Describe*",
    "eks:List*",
    "elasticache:Describe*",
    "lambda:List*",
    "lambda:GetFunctionConfiguration",
    "rds:Describe*",
    "s3:ListAllMyBuckets",
    "s3:GetBucket*",
    "s3:GetEncryptionConfiguration",
    "dynamodb:Describe*",
    "dynamodb:List*",
    "elasticloadbalancing:Describe*",
    "iam:Get*",
    "iam:List*",
    "ce:Get*",
    "ce:Describe*",
    "organizations:Describe*",
    "organizations:List*",
    "sts:GetCallerIdentity",
)


def read_only_session_policy() -> str:
    """The inline session policy the broker attaches to every session, minified JSON.

    Session policies intersect with the role's permissions: a session can do only what both
    allow. So the final `Allow *` grants nothing the role does not already grant, while the two
    Deny statements (an explicit Deny always wins) take away, from even an over-broad role such as
    one with AdministratorAccess: every action that is not a read of a supported service
    (Deny + NotAction), and the data reads in DATA_READ_ACTIONS by name, even where a read
    pattern would otherwise cover them. STS caps the plaintext at 2048 characters; a test keeps
    this well inside it, leaving room for nothing else (STS takes one inline policy per call).
    """
    policy = {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "DenyNonReads",
                "Effect": "Deny",
                "NotAction": list(_SESSION_READS),
                "Resource": "*",
            },
            {
                "Sid": "DenyDataReads",
                "Effect": "Deny",
                "Action": list(DATA_READ_ACTIONS),
                "Resource": "*",
            },
            {"Sid": "WithinTheRole", "Effect": "Allow", "Action": "*", "Resource": "*"},
        ],
    }
    text = minified(policy)
    if len(text) > SESSION_POLICY_MAX_CHARS:  # pragma: no cover - guarded by a test
        raise AssertionError(f"session policy is {len(text)} characters, over STS's 2048")
    return text


def minified(document: dict[str, Any]) -> str:
    """A policy document as IAM counts it: JSON without insignificant whitespace."""
    return json.dumps(document, separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def guarded_session_policy(narrowing: str | None) -> str:
    """The one inline session policy the broker sends with every exchange: the read-only guard's
    Deny statements, plus the integration's or sandbox's own narrowing statements in place of the
    guard's `Allow *` (STS takes a single inline policy, so the two are merged). A narrowing
    policy can therefore only take access away, never add writes or data reads back.

    Raises BadRequest when the merged policy exceeds STS's 2048 characters, saying how short the
    narrowing policy must be. Cached: it sits on the vend path.
    """
    guard = json.loads(read_only_session_policy())
    statements = [s for s in guard["Statement"] if s["Effect"] == "Deny"]
    if narrowing is None:
        statements.append(
            {"Sid": "WithinTheRole", "Effect": "Allow", "Action": "*", "Resource": "*"}
        )
    else:
        custom = json.loads(narrowing)
        extra = custom.get("Statement", [])
        statements.extend(extra if isinstance(extra, list) else [extra])
    text = minified({"Version": POLICY_VERSION, "Statement": statements})
    if len(text) > SESSION_POLICY_MAX_CHARS:
        room = SESSION_POLICY_MAX_CHARS - (
            len(guarded_session_policy(None))
            - len(
                minified(
                    {"Sid": "WithinTheRole", "Effect": "Allow", "Action": "*", "Resource": "*"}
                )
            )
        )
        raise BadRequest(
            f"session_policy: merged with Warrant's read-only guard it is {len(text)} "
            f"characters, over STS's {SESSION_POLICY_MAX_CHARS}; keep its statements under "
            f"about {room} characters"
        )
    return text
