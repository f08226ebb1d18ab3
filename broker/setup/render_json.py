"""The `json` format: the documents and the exact IAM API parameters, for admins who apply them
with their own tooling. Setup and teardown are each one JSON document."""

from __future__ import annotations

import json
from typing import Any

from broker.setup.plan import (
    REVOKE_NOTE,
    REVOKE_POLICY_NAME,
    SHARED_PROVIDER_NOTE,
    Plan,
)

__all__ = ["setup_document", "teardown_document", "to_text"]

FORMAT_VERSION = 1


def setup_document(plan: Plan) -> dict[str, Any]:
    """Setup as IAM API calls in order; policy documents are objects (serialize them to JSON
    strings when calling the API)."""
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "method": str(plan.integration.method),
        "account_id": plan.integration.account_id,
        "role_arn": plan.role_arn,
    }
    if plan.provider is not None:
        provider = plan.provider
        document["oidc_provider"] = {
            "note": SHARED_PROVIDER_NOTE,
            "arn": provider.arn,
            "CreateOpenIDConnectProvider": {
                "Url": provider.url,
                "ClientIDList": [provider.client_id],
            },
            "if_it_exists": {
                "AddClientIDToOpenIDConnectProvider": {
                    "OpenIDConnectProviderArn": provider.arn,
                    "ClientID": provider.client_id,
                }
            },
        }
    if plan.policy is not None:
        document["policy"] = {
            "arn": plan.policy_arn,
            "CreatePolicy": {
                "PolicyName": plan.policy_name,
                "Path": "/",
                "Description": plan.description,
                "PolicyDocument": plan.policy,
            },
        }
    document["role"] = {
        "CreateRole": {
            "RoleName": plan.role_name,
            "Path": plan.role_path,
            "Description": plan.description,
            "MaxSessionDuration": plan.max_session_duration,
            "AssumeRolePolicyDocument": plan.trust,
        },
        "AttachRolePolicy": [
            {"RoleName": plan.role_name, "PolicyArn": arn} for arn in plan.attached_arns
        ],
    }
    if plan.our_side is not None:
        document["our_side"] = {
            "note": "attach this to Warrant's own instance role, in Warrant's account",
            "PolicyDocument": plan.our_side,
        }
    return document


def teardown_document(plan: Plan) -> dict[str, Any]:
    """Teardown as IAM API calls in order: revoke issued sessions, then delete what setup made."""
    steps: list[dict[str, Any]] = [
        {
            "PutRolePolicy": {
                "RoleName": plan.role_name,
                "PolicyName": REVOKE_POLICY_NAME,
                "PolicyDocument": plan.revoke,
            }
        },
    ]
    steps.extend(
        {"DetachRolePolicy": {"RoleName": plan.role_name, "PolicyArn": arn}}
        for arn in plan.attached_arns
    )
    # IAM refuses to delete a role that still has inline policies.
    steps.append(
        {"DeleteRolePolicy": {"RoleName": plan.role_name, "PolicyName": REVOKE_POLICY_NAME}}
    )
    steps.append({"DeleteRole": {"RoleName": plan.role_name}})
    if plan.policy is not None:
        steps.append({"DeletePolicy": {"PolicyArn": plan.policy_arn}})
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "note": REVOKE_NOTE
        + " Deleting the role then removes every permission its remaining sessions had.",
        "steps": steps,
    }
    if plan.provider is not None:
        provider = plan.provider
        document["oidc_provider"] = {
            "note": (
                "If the provider lists other client ids (other tenants of ours), remove only "
                "ours; if ours is its only client id, delete the provider."
            ),
            "RemoveClientIDFromOpenIDConnectProvider": {
                "OpenIDConnectProviderArn": provider.arn,
                "ClientID": provider.client_id,
            },
            "DeleteOpenIDConnectProvider": {"OpenIDConnectProviderArn": provider.arn},
        }
    if plan.our_side is not None:
        document["our_side"] = {
            "note": "remove the sts:AssumeRole permission for this role from Warrant's role",
            "PolicyDocument": plan.our_side,
        }
    return document


def to_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
