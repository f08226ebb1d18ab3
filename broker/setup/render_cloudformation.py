"""The `cloudformation` format: a JSON template (the provider, the policy, the role; output
RoleArn) and a teardown script that revokes issued sessions, then deletes the stack."""

from __future__ import annotations

import json
import shlex
from typing import Any

from broker.setup.plan import REVOKE_POLICY_NAME, SHARED_PROVIDER_NOTE, Plan
from broker.setup.render_cli import provider_teardown, revoke_sessions_lines

__all__ = [
    "CREATE_PROVIDER_PARAMETER",
    "stack_name",
    "teardown_script",
    "template",
    "template_text",
]

CREATE_PROVIDER_PARAMETER = "CreateOidcProvider"


def stack_name(plan: Plan) -> str:
    """The stack name the instructions use: letters, digits and hyphens, at most 128."""
    name = "".join(c if c.isascii() and c.isalnum() else "-" for c in plan.label)
    return f"warrant-{name}"[:128]


def template(plan: Plan) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    conditions: dict[str, Any] = {}
    provider_arn: Any = None
    if plan.provider is not None:
        provider = plan.provider
        parameters[CREATE_PROVIDER_PARAMETER] = {
            "Type": "String",
            "AllowedValues": ["true", "false"],
            "Default": "true",
            "Description": (
                f"false if the account already has an OIDC provider for {provider.url}; then add "
                f"the client id {provider.client_id} to it before creating this stack"
            ),
        }
        conditions["CreateProvider"] = {"Fn::Equals": [{"Ref": CREATE_PROVIDER_PARAMETER}, "true"]}
        # ThumbprintList is left out: IAM trusts certificates that chain to a public CA itself.
        resources["OidcProvider"] = {
            "Type": "AWS::IAM::OIDCProvider",
            "Condition": "CreateProvider",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {"Url": provider.url, "ClientIdList": [provider.client_id]},
        }
        provider_arn = {
            "Fn::If": [
                "CreateProvider",
                {"Fn::GetAtt": ["OidcProvider", "Arn"]},
                provider.arn,
            ]
        }
    trust = json.loads(json.dumps(plan.trust))
    if provider_arn is not None:
        # The same ARN either way; GetAtt only makes the role wait for the provider.
        trust["Statement"][0]["Principal"]["Federated"] = provider_arn
    managed: list[Any] = []
    if plan.policy is not None:
        resources["Permissions"] = {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "ManagedPolicyName": plan.policy_name,
                "Path": "/",
                "Description": plan.description,
                "PolicyDocument": plan.policy,
            },
        }
        managed.append({"Ref": "Permissions"})
    managed.extend(arn for arn in plan.attached_arns if arn != plan.policy_arn)
    resources["Role"] = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": plan.role_name,
            "Path": plan.role_path,
            "Description": plan.description,
            "MaxSessionDuration": plan.max_session_duration,
            "AssumeRolePolicyDocument": trust,
            "ManagedPolicyArns": managed,
        },
    }
    integration = plan.integration
    description = (
        f"Warrant read-only role for tenant {integration.tenant}, integration {integration.id} "
        f"({integration.method})."
    )
    if plan.provider is not None:
        description += " " + SHARED_PROVIDER_NOTE
    document: dict[str, Any] = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": description[:1024],
    }
    if plan.our_side is not None:
        document["Metadata"] = {
            "WarrantOurSide": {
                "Note": "attach this to Warrant's own instance role, in Warrant's account",
                "PolicyDocument": plan.our_side,
            }
        }
    if parameters:
        document["Parameters"] = parameters
        document["Conditions"] = conditions
    document["Resources"] = resources
    document["Outputs"] = {
        "RoleArn": {"Description": "Give this to Warrant", "Value": {"Fn::GetAtt": ["Role", "Arn"]}}
    }
    return document


def template_text(plan: Plan) -> str:
    return json.dumps(template(plan), indent=2) + "\n"


def teardown_script(plan: Plan) -> str:
    stack = shlex.quote(stack_name(plan))
    role = shlex.quote(plan.role_name)
    lines = [
        "#!/usr/bin/env bash",
        f"# Warrant teardown for the CloudFormation stack {stack_name(plan)} (change STACK if you",
        "# named it otherwise).",
        "set -euo pipefail",
        "",
        f"STACK={stack}",
        f"ROLE_NAME={role}",
        "",
        *revoke_sessions_lines(plan),
        "# CloudFormation cannot delete a role holding a policy it did not create; deleting the",
        "# role removes every permission its remaining sessions had anyway.",
        f'aws iam delete-role-policy --role-name "$ROLE_NAME" --policy-name {REVOKE_POLICY_NAME}',
        'aws cloudformation delete-stack --stack-name "$STACK"',
        'aws cloudformation wait stack-delete-complete --stack-name "$STACK"',
        'echo "deleted stack $STACK"',
    ]
    if plan.provider is not None:
        provider = plan.provider
        lines += [
            "",
            "# The stack keeps (retains) the OIDC provider: other tenants of ours may use it.",
            "# Remove our client id, and delete the provider if no other client id remains.",
            f"PROVIDER_ARN={shlex.quote(provider.arn)}",
            f"CLIENT_ID={shlex.quote(provider.client_id)}",
            provider_teardown(),
        ]
    if plan.our_side is not None:
        lines += ["", "# Our side: remove sts:AssumeRole on this role from Warrant's own role."]
    return "\n".join(lines) + "\n"
