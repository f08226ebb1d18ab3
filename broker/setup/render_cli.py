"""The `cli` format: bash scripts that run the AWS CLI. Idempotent where that is cheap, strict
(`set -euo pipefail`), JSON documents in quoted heredocs so the shell never expands them."""

from __future__ import annotations

import json
import shlex
from typing import Any

from broker.setup.plan import REVOKE_NOTE, REVOKE_POLICY_NAME, SHARED_PROVIDER_NOTE, Plan

__all__ = ["comment", "one_line", "provider_teardown", "setup_script", "teardown_script"]

_PRELUDE = """\
#!/usr/bin/env bash
{comments}
set -euo pipefail

{variables}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Refuse to touch any account but the integration's.
actual_account=$(aws sts get-caller-identity --query Account --output text)
if [ "$actual_account" != "$ACCOUNT_ID" ]; then
  echo "these credentials are for account $actual_account, not $ACCOUNT_ID; stopping" >&2
  exit 1
fi
"""

# `aws ... --output text` prints a list as tab-separated words, and "None" for a missing value.
_CLIENT_IDS = """\
client_ids() {
  aws iam get-open-id-connect-provider --open-id-connect-provider-arn "$PROVIDER_ARN" \\
    --query 'ClientIDList' --output text | tr '\\t' '\\n' | grep -v '^None$' || true
}
"""


def revoke_sessions_lines(plan: Plan) -> list[str]:
    """Teardown's first step in every shell-driven format: attach a deny-all conditioned on
    aws:TokenIssueTime, which cuts off credentials already issued (needs $ROLE_NAME set)."""
    return [
        comment(REVOKE_NOTE),
        "tmp=$(mktemp -d)",
        "trap 'rm -rf \"$tmp\"' EXIT",
        "cat > \"$tmp/revoke.json\" <<'JSON'",
        json.dumps(plan.revoke, indent=2),
        "JSON",
        f'aws iam put-role-policy --role-name "$ROLE_NAME" --policy-name {REVOKE_POLICY_NAME} \\',
        '  --policy-document "file://$tmp/revoke.json"',
    ]


def comment(text: str) -> str:
    words, lines, line = text.split(), [], "#"
    for word in words:
        if len(line) + len(word) + 1 > 99:
            lines.append(line)
            line = "#"
        line += " " + word
    lines.append(line)
    return "\n".join(lines)


def _heredoc(path: str, document: dict[str, Any]) -> str:
    return f"cat > \"$tmp/{path}\" <<'JSON'\n{json.dumps(document, indent=2)}\nJSON\n"


def _variables(plan: Plan) -> str:
    values = {
        "ACCOUNT_ID": plan.integration.account_id,
        "ROLE_NAME": plan.role_name,
        "ROLE_PATH": plan.role_path,
        "POLICY_ARN": plan.policy_arn if plan.policy is not None else "",
    }
    if plan.provider is not None:
        values |= {
            "ISSUER_URL": plan.provider.url,
            "CLIENT_ID": plan.provider.client_id,
            "PROVIDER_ARN": plan.provider.arn,
        }
    return "\n".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


def _header(plan: Plan, what: str) -> str:
    integration = plan.integration
    return "\n".join(
        [
            f"# Warrant {what}: tenant {integration.tenant}, integration {integration.id} "
            f"({one_line(integration.name)}),",
            f"# method {integration.method}, account {integration.account_id}. Run it with "
            "administrator credentials for that account.",
        ]
    )


def setup_script(plan: Plan) -> str:
    parts = [
        _PRELUDE.format(comments=_header(plan, "setup"), variables=_variables(plan)),
    ]
    if plan.provider is not None:
        parts.append(
            f"""
{comment(SHARED_PROVIDER_NOTE)}
{_CLIENT_IDS}
if aws iam get-open-id-connect-provider --open-id-connect-provider-arn "$PROVIDER_ARN" \\
    >/dev/null 2>&1; then
  if client_ids | grep -qxF "$CLIENT_ID"; then
    echo "OIDC provider $PROVIDER_ARN already lists $CLIENT_ID"
  else
    aws iam add-client-id-to-open-id-connect-provider \\
      --open-id-connect-provider-arn "$PROVIDER_ARN" --client-id "$CLIENT_ID"
    echo "added $CLIENT_ID to the existing OIDC provider $PROVIDER_ARN"
  fi
else
  # No thumbprint: IAM trusts certificates that chain to a public CA by itself.
  aws iam create-open-id-connect-provider --url "$ISSUER_URL" --client-id-list "$CLIENT_ID" \\
    >/dev/null
  echo "created OIDC provider $PROVIDER_ARN"
fi
"""
        )
    parts.append("\n" + _heredoc("trust.json", plan.trust))
    parts.append(
        f"""if aws iam get-role --role-name "$ROLE_NAME" >/dev/null 2>&1; then
  aws iam update-assume-role-policy --role-name "$ROLE_NAME" \\
    --policy-document "file://$tmp/trust.json"
  aws iam update-role --role-name "$ROLE_NAME" --max-session-duration {plan.max_session_duration}
  echo "updated role $ROLE_NAME"
else
  aws iam create-role --role-name "$ROLE_NAME" --path "$ROLE_PATH" \\
    --assume-role-policy-document "file://$tmp/trust.json" \\
    --max-session-duration {plan.max_session_duration} \\
    --description {shlex.quote(plan.description)} >/dev/null
  echo "created role $ROLE_NAME"
fi
"""
    )
    if plan.policy is not None:
        parts.append("\n" + _heredoc("permissions.json", plan.policy))
        parts.append(
            f"""if aws iam get-policy --policy-arn "$POLICY_ARN" >/dev/null 2>&1; then
  # A managed policy keeps at most 5 versions; delete an old one if this fails.
  aws iam create-policy-version --policy-arn "$POLICY_ARN" \\
    --policy-document "file://$tmp/permissions.json" --set-as-default >/dev/null
  echo "updated policy $POLICY_ARN"
else
  aws iam create-policy --policy-name {shlex.quote(plan.policy_name)} \\
    --policy-document "file://$tmp/permissions.json" \\
    --description {shlex.quote(plan.description)} >/dev/null
  echo "created policy $POLICY_ARN"
fi
"""
        )
    parts.append("\n# Attaching a policy that is already attached changes nothing.\n")
    parts.extend(
        f'aws iam attach-role-policy --role-name "$ROLE_NAME" --policy-arn {shlex.quote(arn)}\n'
        for arn in plan.attached_arns
    )
    if plan.our_side is not None:
        parts.append(_our_side(plan.our_side, "Grant"))
    parts.append(
        '\necho "Role ARN (give it to Warrant):"\n'
        'aws iam get-role --role-name "$ROLE_NAME" --query Role.Arn --output text\n'
    )
    return "".join(parts)


def teardown_script(plan: Plan) -> str:
    parts = [
        _PRELUDE.format(comments=_header(plan, "teardown"), variables=_variables(plan)),
        "\n" + comment(REVOKE_NOTE) + "\n",
        _heredoc("revoke.json", plan.revoke),
        f"""if aws iam get-role --role-name "$ROLE_NAME" >/dev/null 2>&1; then
  aws iam put-role-policy --role-name "$ROLE_NAME" --policy-name {REVOKE_POLICY_NAME} \\
    --policy-document "file://$tmp/revoke.json"
  echo "revoked the sessions issued so far for $ROLE_NAME"

  # IAM deletes a role only once no policy is attached to it or inline in it.
  for arn in $(aws iam list-attached-role-policies --role-name "$ROLE_NAME" \\
      --query 'AttachedPolicies[].PolicyArn' --output text); do
    [ "$arn" = None ] && continue
    aws iam detach-role-policy --role-name "$ROLE_NAME" --policy-arn "$arn"
  done
  for name in $(aws iam list-role-policies --role-name "$ROLE_NAME" \\
      --query 'PolicyNames[]' --output text); do
    [ "$name" = None ] && continue
    aws iam delete-role-policy --role-name "$ROLE_NAME" --policy-name "$name"
  done
  aws iam delete-role --role-name "$ROLE_NAME"
  echo "deleted role $ROLE_NAME"
fi
""",
    ]
    if plan.policy is not None:
        parts.append(
            """
if aws iam get-policy --policy-arn "$POLICY_ARN" >/dev/null 2>&1; then
  for version in $(aws iam list-policy-versions --policy-arn "$POLICY_ARN" \\
      --query 'Versions[?!IsDefaultVersion].VersionId' --output text); do
    [ "$version" = None ] && continue
    aws iam delete-policy-version --policy-arn "$POLICY_ARN" --version-id "$version"
  done
  aws iam delete-policy --policy-arn "$POLICY_ARN"
  echo "deleted policy $POLICY_ARN"
fi
"""
        )
    if plan.provider is not None:
        parts.append("\n" + provider_teardown())
    if plan.our_side is not None:
        parts.append(_our_side(plan.our_side, "Remove"))
    return "".join(parts)


def provider_teardown() -> str:
    """Bash that removes $CLIENT_ID from the provider $PROVIDER_ARN, or deletes the provider when
    no other client id (another tenant of ours) remains. A missing provider is not an error."""
    return f"""\
# The provider may serve other tenants of ours: remove only our client id, and delete the
# provider only when ours was its last.
{_CLIENT_IDS}
if aws iam get-open-id-connect-provider --open-id-connect-provider-arn "$PROVIDER_ARN" \\
    >/dev/null 2>&1; then
  others=$(client_ids | grep -vxF "$CLIENT_ID" || true)
  if [ -z "$others" ]; then
    aws iam delete-open-id-connect-provider --open-id-connect-provider-arn "$PROVIDER_ARN"
    echo "deleted OIDC provider $PROVIDER_ARN"
  elif client_ids | grep -qxF "$CLIENT_ID"; then
    aws iam remove-client-id-from-open-id-connect-provider \\
      --open-id-connect-provider-arn "$PROVIDER_ARN" --client-id "$CLIENT_ID"
    echo "removed $CLIENT_ID from OIDC provider $PROVIDER_ARN (other client ids remain)"
  fi
fi
"""


def _our_side(policy: dict[str, Any], verb: str) -> str:
    body = "\n".join(f"#   {line}" for line in json.dumps(policy, indent=2).splitlines())
    return (
        f"\n# Our side (in Warrant's account, not this one). {verb} this permission on Warrant's\n"
        f"# own instance role:\n{body}\n"
    )


def one_line(text: str) -> str:
    """`text` safe inside a one-line comment: no line breaks or control characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())
