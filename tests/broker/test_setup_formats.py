"""Every format, for both methods, is valid for its tool: bash -n, JSON sizes, cfn-lint, HCL."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import hcl2
import pytest

from broker.model import Integration, Method
from broker.setup import Format, PolicyChoice, Profile, SetupOutput, generate
from broker.setup.policies import minified

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://oidc.example.com/warrant"
OURS = "arn:aws:iam::999999999999:role/warrant"
OIDC = Integration(
    id="int-abc123",
    tenant="acme",
    name="prod\n$(touch /tmp/pwned) 'quoted'",
    account_id="123456789012",
    role_arn="arn:aws:iam::123456789012:role/warrant/acme-prod",
    region="eu-west-1",
    method=Method.OIDC,
    session_duration=7200,
    created_at=NOW,
)
INSTANCE = replace(
    OIDC,
    method=Method.INSTANCE_ROLE,
    role_arn="arn:aws:iam::123456789012:role/acme-warrant",
    external_id="warrant-0123456789abcdef",
    target_role_arn="arn:aws:iam::123456789012:role/acme-target",
)
CASES = [
    pytest.param(OIDC, PolicyChoice.PROFILE, id="oidc"),
    pytest.param(OIDC, PolicyChoice.MANAGED_READONLY, id="oidc-managed"),
    pytest.param(INSTANCE, PolicyChoice.PROFILE, id="instance_role"),
]
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
TERRAFORM = shutil.which("terraform")


def _out(integration: Integration, policy: PolicyChoice, format: Format) -> SetupOutput:
    return generate(
        integration,
        issuer_url=ISSUER,
        format=format,
        profile=Profile.ANALYSIS,
        policy=policy,
        warrant_principal_arn=OURS,
        now=NOW,
    )


def _bash_n(script: str, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(script)
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script


@pytest.mark.parametrize(("integration", "policy"), CASES)
def test_cli_is_valid_bash(integration: Integration, policy: PolicyChoice, tmp_path: Path) -> None:
    """Setup and teardown scripts pass `bash -n`; setup prints the role ARN, teardown revokes."""
    out = _out(integration, policy, Format.CLI)
    _bash_n(out.setup, tmp_path, "setup.sh")
    _bash_n(out.teardown, tmp_path, "teardown.sh")
    assert "--query Role.Arn" in out.setup
    assert "aws:TokenIssueTime" in out.teardown
    assert "2026-05-01T12:00:00Z" in out.teardown
    # A hostile integration name lands in comments, or reduced to IAM name characters.
    for script in (out.setup, out.teardown):
        lines = [line for line in script.splitlines() if "pwned" in line]
        assert all(line.startswith("#") or "$(" not in line for line in lines)


def test_cli_handles_an_existing_provider() -> None:
    """The oidc script adds our client id to an existing provider instead of creating another,
    and the teardown removes it, deleting the provider only when no other client id remains."""
    out = _out(OIDC, PolicyChoice.PROFILE, Format.CLI)
    assert "add-client-id-to-open-id-connect-provider" in out.setup
    assert "create-open-id-connect-provider" in out.setup
    assert "remove-client-id-from-open-id-connect-provider" in out.teardown
    assert "delete-open-id-connect-provider" in out.teardown


@pytest.mark.parametrize(("integration", "policy"), CASES)
def test_json_documents_parse_and_fit(integration: Integration, policy: PolicyChoice) -> None:
    """The json format parses, its trust policy is within 2048 minified characters, and it
    matches what `documents` holds."""
    out = _out(integration, policy, Format.JSON)
    setup, teardown = json.loads(out.setup), json.loads(out.teardown)
    assert (setup, teardown) == (out.documents["setup"], out.documents["teardown"])
    trust = setup["role"]["CreateRole"]["AssumeRolePolicyDocument"]
    assert len(minified(trust)) <= 2_048
    if "policy" in setup:
        assert len(minified(setup["policy"]["CreatePolicy"]["PolicyDocument"])) <= 6_144
    revoke = teardown["steps"][0]["PutRolePolicy"]["PolicyDocument"]["Statement"][0]
    assert revoke["Condition"] == {"DateLessThan": {"aws:TokenIssueTime": "2026-05-01T12:00:00Z"}}
    assert list(teardown["steps"][-1]) in (["DeletePolicy"], ["DeleteRole"])


def test_managed_readonly_attaches_the_aws_policy() -> None:
    """managed-readonly attaches AWS ReadOnlyAccess and creates no profile policy."""
    setup = _out(OIDC, PolicyChoice.MANAGED_READONLY, Format.JSON).documents["setup"]
    attached = [a["PolicyArn"] for a in setup["role"]["AttachRolePolicy"]]
    assert attached == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    assert "policy" not in setup


def test_instance_role_has_our_side() -> None:
    """instance_role output carries our side's sts:AssumeRole policy separately."""
    out = _out(INSTANCE, PolicyChoice.PROFILE, Format.JSON)
    assert out.our_side is not None
    assert json.loads(out.our_side) == out.documents["setup"]["our_side"]["PolicyDocument"]
    assert "oidc_provider" not in out.documents["setup"]


@pytest.mark.parametrize(("integration", "policy"), CASES)
def test_cloudformation_passes_cfn_lint(
    integration: Integration, policy: PolicyChoice, tmp_path: Path
) -> None:
    """The template has the expected resources and cfn-lint reports nothing."""
    out = _out(integration, policy, Format.CLOUDFORMATION)
    template = json.loads(out.setup)
    types = {r["Type"] for r in template["Resources"].values()}
    assert "AWS::IAM::Role" in types
    assert ("AWS::IAM::OIDCProvider" in types) is (integration.method is Method.OIDC)
    assert ("AWS::IAM::ManagedPolicy" in types) is (
        policy is PolicyChoice.PROFILE or integration.target_role_arn is not None
    )
    assert template["Outputs"]["RoleArn"]["Value"] == {"Fn::GetAtt": ["Role", "Arn"]}
    path = tmp_path / "template.json"
    path.write_text(out.setup)
    result = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _bash_n(out.teardown, tmp_path, "teardown.sh")


@pytest.mark.parametrize(("integration", "policy"), CASES)
def test_terraform_parses(integration: Integration, policy: PolicyChoice, tmp_path: Path) -> None:
    """The configuration parses as HCL with the expected resources, the policies inside are
    JSON, and the teardown script is valid bash."""
    out = _out(integration, policy, Format.TERRAFORM)
    parsed = hcl2.loads(out.setup)
    resources = {
        kind.strip('"'): body for block in parsed["resource"] for kind, body in block.items()
    }
    assert {"aws_iam_role", "aws_iam_role_policy_attachment"} <= set(resources)
    assert ("aws_iam_openid_connect_provider" in resources) is (integration.method is Method.OIDC)
    assert [next(iter(o)).strip('"') for o in parsed["output"]] == ["role_arn"]
    role = resources["aws_iam_role"]['"warrant"']
    trust_text = role["assume_role_policy"]
    body = trust_text[trust_text.index("{") : trust_text.rindex("}") + 1]
    assert json.loads(body)["Statement"][0]["Effect"] == "Allow"
    _bash_n(out.teardown, tmp_path, "teardown.sh")


@pytest.mark.parametrize(("integration", "policy"), CASES)
def test_terraform_is_fmt_clean(integration: Integration, policy: PolicyChoice) -> None:
    """`terraform fmt -check` accepts the configuration unchanged."""
    if TERRAFORM is None:
        pytest.skip("no terraform binary on PATH")
    out = _out(integration, policy, Format.TERRAFORM)
    result = subprocess.run(
        [TERRAFORM, "fmt", "-check", "-diff", "-"],
        input=out.setup,
        capture_output=True,
        text=True,
        check=False,
        env={"TF_CLI_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
