"""Who may assume the customer's role: the trust policy for each method, the issuer URL rules, and
the permission our own side needs for `instance_role`."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from broker.model import Integration, Method
from broker.setup.policies import POLICY_VERSION, minified
from broker.validation import partition_of
from broker.validation import role_arn as valid_role_arn
from issuer.errors import BadRequest
from issuer.tenants import audience_for

__all__ = [
    "TRUST_POLICY_MAX_CHARS",
    "issuer_host_path",
    "our_side_policy",
    "provider_arn",
    "subject_for",
    "trust_policy",
]

TRUST_POLICY_MAX_CHARS = 2_048  # IAM's default quota for a role trust policy (raisable to 4096)
_URL_MAX_CHARS = 255  # IAM: an OIDC provider URL is at most 255 characters
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_PORT_MAX = 65_535


def issuer_host_path(issuer_url: str, *, dev: bool = False) -> str:
    """The issuer URL without its scheme: the provider ARN's suffix and the condition-key prefix.

    IAM wants https, no query or fragment, no port and no trailing slash (a trailing slash becomes
    part of the identity and then must appear in `iss` too). `dev=True` also accepts a local
    http://host:port issuer, which only our STS stand-in will ever trust.
    """
    try:
        parts = urlsplit(issuer_url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = urlsplit("")
    scheme_ok = parts.scheme == "https" or (dev and parts.scheme == "http")
    host = _HOST.fullmatch(parts.netloc)
    port = host[1] if host else None  # ":<digits>"; parts.port would raise beyond 65535
    if (
        not scheme_ok
        # urlsplit drops leading spaces and any tab or newline: the URL must be what it read.
        or parts.geturl() != issuer_url
        or host is None
        or (port is not None and (not dev or int(port[1:]) > _PORT_MAX))
        or parts.query
        or parts.fragment
        or issuer_url.endswith("/")
        or len(issuer_url) > _URL_MAX_CHARS
    ):
        rule = "https://host[/path]" if not dev else "https://host[/path] or http://host:port"
        raise BadRequest(
            f"issuer URL {issuer_url!r} cannot be an IAM OIDC provider URL: use {rule}, no "
            f"query, no port, no trailing slash, at most {_URL_MAX_CHARS} characters, exactly "
            f"the `iss` of our tokens"
        )
    return issuer_url.split("://", 1)[1]


def provider_arn(partition: str, account_id: str, host_path: str) -> str:
    """The ARN IAM gives the OIDC provider for `host_path` in `account_id`."""
    return f"arn:{partition}:iam::{account_id}:oidc-provider/{host_path}"


def subject_for(integration: Integration) -> str:
    """The `sub` of the token the broker exchanges for this integration's credentials."""
    return f"tenant:{integration.tenant}:{integration.id}"


def trust_policy(
    integration: Integration,
    issuer_url: str | None = None,
    *,
    warrant_principal_arn: str | None = None,
    dev: bool = False,
) -> dict[str, Any]:
    """The role's trust policy for the integration's method.

    `oidc`: our provider may assume the role with a web identity whose `aud` AND `sub` equal this
    integration's (StringEquals on both). STS itself only checks that `aud` is one of the
    provider's client ids, so pinning `aud` alone would let another tenant sharing the account and
    provider in; pinning `sub` also keeps this tenant's other integrations out.
    `instance_role`: our instance role may assume it with the integration's ExternalId.
    """
    partition = partition_of(integration.role_arn)
    if integration.method is Method.OIDC:
        if issuer_url is None:
            raise BadRequest("an oidc integration's trust policy needs the issuer URL")
        host_path = issuer_host_path(issuer_url, dev=dev)
        statement: dict[str, Any] = {
            "Sid": "WarrantWebIdentity",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn(partition, integration.account_id, host_path)},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{host_path}:aud": audience_for(integration.tenant),
                    f"{host_path}:sub": subject_for(integration),
                }
            },
        }
    else:
        if warrant_principal_arn is None:
            raise BadRequest(
                "an instance_role integration's trust policy needs warrant_principal_arn: the "
                "ARN of Warrant's own instance role, e.g. arn:aws:iam::<our account>:role/warrant"
            )
        principal = valid_role_arn(
            warrant_principal_arn, account_id=None, field="warrant_principal_arn"
        )
        if not integration.external_id:
            raise BadRequest(
                f"integration {integration.id} has no external_id; an instance_role "
                f"integration's trust policy must require one"
            )
        statement = {
            "Sid": "WarrantInstanceRole",
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": integration.external_id}},
        }
    policy = {"Version": POLICY_VERSION, "Statement": [statement]}
    size = len(minified(policy))
    if size > TRUST_POLICY_MAX_CHARS:
        raise BadRequest(
            f"the trust policy would be {size} characters, over IAM's {TRUST_POLICY_MAX_CHARS}; "
            f"use a shorter issuer URL, tenant slug or integration id"
        )
    return policy


def our_side_policy(integration: Integration) -> dict[str, Any]:
    """The identity policy Warrant's own instance role needs for an `instance_role` integration:
    sts:AssumeRole on the customer's role (and on the target role of a second hop, if any)."""
    resources = [integration.role_arn]
    if integration.target_role_arn:
        resources.append(integration.target_role_arn)
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "WarrantAssumeCustomerRole",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": resources[0] if len(resources) == 1 else resources,
            }
        ],
    }
