"""Everything the four renderers need, resolved and validated once: names, ARNs and documents."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.model import Integration, Method
from broker.setup.policies import (
    POLICY_VERSION,
    PolicyChoice,
    Profile,
    managed_readonly_arn,
    permissions_policy,
)
from broker.setup.trust import (
    issuer_host_path,
    our_side_policy,
    provider_arn,
    trust_policy,
)
from broker.validation import partition_of
from broker.validation import role_arn as valid_role_arn
from issuer.errors import BadRequest
from issuer.tenants import audience_for

__all__ = [
    "REVOKE_NOTE",
    "REVOKE_POLICY_NAME",
    "SHARED_PROVIDER_NOTE",
    "Format",
    "Plan",
    "Provider",
    "make_plan",
    "revoke_sessions_policy",
]

ROLE_MIN_SESSION = 3_600  # IAM: a role's MaxSessionDuration is 3600-43200 seconds
ROLE_MAX_SESSION = 43_200
STS_MIN_DURATION = 900  # STS: DurationSeconds is 900-43200
_NAME_MAX_CHARS = 128  # IAM: managed policy names are 1-128 of [\w+=,.@-]
_NAME_CHAR = re.compile(r"[^A-Za-z0-9_+=,.@-]")
REVOKE_POLICY_NAME = "WarrantRevokeOlderSessions"
REVOKE_NOTE = (
    "STS credentials already issued stay valid until they expire (at most the session duration). "
    "The first teardown step cuts them off now: an inline deny-all on the role for every session "
    "whose aws:TokenIssueTime is earlier than the teardown time (what the IAM console's "
    "Roles > Revoke active sessions does)."
)
SHARED_PROVIDER_NOTE = (
    "An account registers an OIDC provider URL once. If it already has one for this issuer "
    "(another tenant of ours), do not create a second: add this client id to it instead "
    "(aws iam add-client-id-to-open-id-connect-provider)."
)


class Format(enum.StrEnum):
    CLI = "cli"
    JSON = "json"
    CLOUDFORMATION = "cloudformation"
    TERRAFORM = "terraform"


@dataclass(frozen=True, slots=True)
class Provider:
    """The IAM OIDC provider for our issuer, shared by every tenant of ours in the account."""

    url: str
    host_path: str
    arn: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Plan:
    integration: Integration
    partition: str
    role_name: str
    role_path: str
    max_session_duration: int
    description: str
    trust: dict[str, Any]
    policy_name: str
    policy_arn: str
    policy: dict[str, Any] | None  # our customer-managed policy; None with managed-readonly alone
    attached_arns: tuple[str, ...]  # every managed policy to attach, ours first
    revoke: dict[str, Any]
    provider: Provider | None  # oidc only
    our_side: dict[str, Any] | None  # instance_role only

    @property
    def role_arn(self) -> str:
        return self.integration.role_arn

    @property
    def label(self) -> str:
        """A short, name-safe `<tenant>-<integration name>` for stack and policy names."""
        name = _NAME_CHAR.sub("-", f"{self.integration.tenant}-{self.integration.name}")
        return name[:64].strip("-") or "warrant"


def make_plan(
    integration: Integration,
    *,
    issuer_url: str | None,
    profile: Profile,
    policy: PolicyChoice,
    warrant_principal_arn: str | None,
    now: datetime,
    dev: bool,
) -> Plan:
    """Resolve and check everything; raises BadRequest for combinations that cannot work."""
    role_arn = valid_role_arn(integration.role_arn, account_id=integration.account_id)
    partition = partition_of(role_arn)
    path_and_name = role_arn.split(":role", 1)[1]
    role_path, role_name = path_and_name.rsplit("/", 1)
    if not STS_MIN_DURATION <= integration.session_duration <= ROLE_MAX_SESSION:
        raise BadRequest(
            f"session_duration {integration.session_duration} s cannot be served: a role's "
            f"session lasts {STS_MIN_DURATION}-{ROLE_MAX_SESSION} s"
        )
    if now.tzinfo is None:
        raise BadRequest("now must be timezone-aware")
    provider = None
    our_side = None
    if integration.method is Method.OIDC:
        if issuer_url is None:
            raise BadRequest("the oidc method needs the issuer URL")
        host_path = issuer_host_path(issuer_url, dev=dev)
        provider = Provider(
            url=issuer_url,
            host_path=host_path,
            arn=provider_arn(partition, integration.account_id, host_path),
            client_id=audience_for(integration.tenant),
        )
    else:
        our_side = our_side_policy(integration)
    trust = trust_policy(
        integration, issuer_url, warrant_principal_arn=warrant_principal_arn, dev=dev
    )
    statements: list[dict[str, Any]] = []
    if policy is PolicyChoice.PROFILE:
        statements.extend(permissions_policy(profile, partition)["Statement"])
    if integration.target_role_arn:
        # The broker's second hop is made with this role's credentials.
        statements.append(
            {
                "Sid": "WarrantSecondHop",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": integration.target_role_arn,
            }
        )
    label = _NAME_CHAR.sub("-", f"{integration.tenant}-{integration.name}")
    policy_name = f"warrant-{label}"[: _NAME_MAX_CHARS - len(profile) - 1] + f"-{profile}"
    if policy is PolicyChoice.MANAGED_READONLY:
        policy_name = f"warrant-{label}"[: _NAME_MAX_CHARS - 6] + "-extra"
    policy_arn = f"arn:{partition}:iam::{integration.account_id}:policy/{policy_name}"
    attached = ((policy_arn,) if statements else ()) + (
        (managed_readonly_arn(partition),) if policy is PolicyChoice.MANAGED_READONLY else ()
    )
    what = (
        f"the {profile} profile" if policy is PolicyChoice.PROFILE else "AWS managed ReadOnlyAccess"
    )
    return Plan(
        integration=integration,
        partition=partition,
        role_name=role_name,
        role_path=f"{role_path}/",
        max_session_duration=max(ROLE_MIN_SESSION, integration.session_duration),
        description=(
            f"Warrant read-only access ({what}) for tenant {integration.tenant}, integration "
            f"{integration.id} via {integration.method}"
        )[:1000],
        trust=trust,
        policy_name=policy_name,
        policy_arn=policy_arn,
        policy={"Version": POLICY_VERSION, "Statement": statements} if statements else None,
        attached_arns=attached,
        revoke=revoke_sessions_policy(now),
        provider=provider,
        our_side=our_side,
    )


def revoke_sessions_policy(now: datetime) -> dict[str, Any]:
    """The inline deny-all that cuts off every session issued before `now` (what the IAM
    console's "Revoke active sessions" attaches): STS credentials cannot be recalled otherwise."""
    issued_before = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "WarrantRevokeOlderSessions",
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": issued_before}},
            }
        ],
    }
