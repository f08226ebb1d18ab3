"""The `terraform` format: HCL for the AWS provider (`terraform fmt` clean) and a teardown script
that revokes issued sessions, then runs `terraform destroy`."""

from __future__ import annotations

import json
import shlex
from typing import Any

from broker.setup.plan import SHARED_PROVIDER_NOTE, Plan
from broker.setup.render_cli import comment, one_line, provider_teardown, revoke_sessions_lines

__all__ = ["configuration", "teardown_script"]

# thumbprint_list became optional in hashicorp/aws 5.81.0 (IAM fetches it itself).
_PROVIDER_VERSION = ">= 5.81.0"


def _string(value: str) -> str:
    # JSON string escapes are valid HCL; `${` and `%{` would start a template, so double them.
    return json.dumps(value).replace("${", "$${").replace("%{", "%%{")


def _heredoc(document: dict[str, Any]) -> str:
    text = json.dumps(document, indent=2).replace("${", "$${").replace("%{", "%%{")
    body = "\n".join(f"    {line}" for line in text.splitlines())
    return f"<<-EOT\n{body}\n  EOT"


def _block(header: str, attributes: list[tuple[str, str] | None]) -> str:
    """A block whose attributes are aligned on `=` as `terraform fmt` does: consecutive
    single-line attributes form a group; None is a blank line; multi-line values stand alone."""
    lines = [f"{header} {{"]
    group: list[tuple[str, str]] = []

    def flush() -> None:
        width = max((len(name) for name, _ in group), default=0)
        lines.extend(f"  {name.ljust(width)} = {value}" for name, value in group)
        group.clear()

    for item in attributes:
        if item is None:
            flush()
            lines.append("")
        elif "\n" in item[1]:
            flush()
            lines.append(f"  {item[0]} = {item[1]}")
        else:
            group.append(item)
    flush()
    lines.append("}")
    return "\n".join(lines)


def configuration(plan: Plan) -> str:
    integration = plan.integration
    blocks = [
        "\n".join(
            [
                f"# Warrant setup: tenant {integration.tenant}, integration {integration.id} "
                f"({one_line(integration.name)}),",
                f"# method {integration.method}, account {integration.account_id}.",
                'terraform {\n  required_providers {\n    aws = {\n      source  = "hashicorp/aws"'
                f"\n      version = {_string(_PROVIDER_VERSION)}\n    }}\n  }}\n}}",
            ]
        )
    ]
    depends: list[tuple[str, str] | None] = []
    if plan.provider is not None:
        provider = plan.provider
        blocks.append(
            comment(SHARED_PROVIDER_NOTE)
            + "\n"
            + _block(
                'variable "create_oidc_provider"',
                [
                    ("description", _string("false if the account already has our provider")),
                    ("type", "bool"),
                    ("default", "true"),
                ],
            )
        )
        blocks.append(
            "# No thumbprint_list: IAM trusts certificates that chain to a public CA itself.\n"
            + _block(
                'resource "aws_iam_openid_connect_provider" "warrant"',
                [
                    ("count", "var.create_oidc_provider ? 1 : 0"),
                    ("url", _string(provider.url)),
                    ("client_id_list", f"[{_string(provider.client_id)}]"),
                ],
            )
        )
        depends = [None, ("depends_on", "[aws_iam_openid_connect_provider.warrant]")]
    blocks.append(
        _block(
            'resource "aws_iam_role" "warrant"',
            [
                ("name", _string(plan.role_name)),
                ("path", _string(plan.role_path)),
                ("description", _string(plan.description)),
                ("max_session_duration", str(plan.max_session_duration)),
                # Lets destroy delete the role even with the revoke-sessions policy inline.
                ("force_detach_policies", "true"),
                None,
                ("assume_role_policy", _heredoc(plan.trust)),
                *depends,
            ],
        )
    )
    if plan.policy is not None:
        blocks.append(
            _block(
                'resource "aws_iam_policy" "warrant"',
                [
                    ("name", _string(plan.policy_name)),
                    ("path", _string("/")),
                    ("description", _string(plan.description)),
                    None,
                    ("policy", _heredoc(plan.policy)),
                ],
            )
        )
    for index, arn in enumerate(plan.attached_arns):
        ours = plan.policy is not None and arn == plan.policy_arn
        blocks.append(
            _block(
                f'resource "aws_iam_role_policy_attachment" "warrant_{index}"',
                [
                    ("role", "aws_iam_role.warrant.name"),
                    ("policy_arn", "aws_iam_policy.warrant.arn" if ours else _string(arn)),
                ],
            )
        )
    blocks.append(
        _block(
            'output "role_arn"',
            [
                ("description", _string("Give this to Warrant")),
                ("value", "aws_iam_role.warrant.arn"),
            ],
        )
    )
    if plan.our_side is not None:
        policy = "\n".join(
            f"#   {line}" for line in json.dumps(plan.our_side, indent=2).splitlines()
        )
        blocks.append(
            "# Our side (in Warrant's account, not this one): attach this to Warrant's own\n"
            f"# instance role.\n{policy}"
        )
    return "\n\n".join(blocks) + "\n"


def teardown_script(plan: Plan) -> str:
    lines = [
        "#!/usr/bin/env bash",
        "# Warrant teardown for the Terraform configuration; run it in that configuration's",
        "# directory.",
        "set -euo pipefail",
        "",
        f"ROLE_NAME={shlex.quote(plan.role_name)}",
        "",
        *revoke_sessions_lines(plan),
    ]
    if plan.provider is not None:
        lines += [
            "",
            "# Other tenants of ours may share the provider: take it out of Terraform's hands",
            "# and let the step below decide whether to delete it.",
            "terraform state rm 'aws_iam_openid_connect_provider.warrant[0]' || true",
        ]
    lines += [
        "# force_detach_policies lets destroy delete the role with the revoke policy inline.",
        "terraform destroy -auto-approve",
    ]
    if plan.provider is not None:
        lines += [
            "",
            f"PROVIDER_ARN={shlex.quote(plan.provider.arn)}",
            f"CLIENT_ID={shlex.quote(plan.provider.client_id)}",
            provider_teardown(),
        ]
    if plan.our_side is not None:
        lines += ["", "# Our side: remove sts:AssumeRole on this role from Warrant's own role."]
    return "\n".join(lines) + "\n"
