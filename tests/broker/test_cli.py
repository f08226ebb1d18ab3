"""`warrant integrations` through the real executable, as an operator would use it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e import base_env, cli

pytestmark = pytest.mark.slow

ROLE = "arn:aws:iam::123456789012:role/warrant-reader"


def test_integrations_add_list_show_remove(tmp_path: Path) -> None:
    """An operator adds, lists, shows and removes integrations; each change is audited."""
    env = base_env(tmp_path / "var")
    cli(env, "tenants", "add", "acme")
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "logs:Describe*", "Resource": "*"}],
            }
        )
    )
    added = cli(
        env,
        "integrations",
        "add",
        "acme",
        "prod",
        "--account-id",
        "123456789012",
        "--role-arn",
        ROLE,
        "--region",
        "eu-west-1",
        "--session-policy",
        f"@{policy}",
    )
    assert "method            oidc" in added.stdout
    assert "region            eu-west-1" in added.stdout
    xacct = cli(
        env,
        "integrations",
        "add",
        "acme",
        "self-hosted",
        "--account-id",
        "123456789012",
        "--role-arn",
        ROLE,
        "--method",
        "instance_role",
    )
    assert "external id       warrant-" in xacct.stdout
    listing = cli(env, "integrations", "list", "acme").stdout
    assert "prod" in listing
    assert "self-hosted" in listing
    shown = cli(env, "integrations", "show", "acme", "prod").stdout
    assert "logs:Describe*" in shown
    removed = cli(env, "integrations", "remove", "acme", "prod")
    assert "aws:TokenIssueTime" in removed.stdout
    assert "prod" not in cli(env, "integrations", "list", "acme").stdout.split("\n", 1)[1]
    events = [
        json.loads(line)["event"]
        for line in (tmp_path / "var" / "audit.jsonl").read_text().splitlines()
    ]
    assert events.count("integration.add") == 2
    assert events.count("integration.remove") == 1


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--account-id", "123", "--role-arn", ROLE], "account_id"),
        (["--account-id", "210987654321", "--role-arn", ROLE], "123456789012"),
        (["--account-id", "123456789012", "--role-arn", "not-an-arn"], "role_arn"),
        (
            ["--account-id", "123456789012", "--role-arn", ROLE, "--session-duration", "60"],
            "session_duration",
        ),
        (
            ["--account-id", "123456789012", "--role-arn", ROLE, "--session-policy", "{"],
            "session_policy",
        ),
        (
            ["--account-id", "123456789012", "--role-arn", ROLE, "--session-policy", "@/nope"],
            "--session-policy @/nope",
        ),
    ],
)
def test_bad_integration_input_is_one_clean_line(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    """Invalid input is one 'error:' line naming the field, exit status 1, no traceback."""
    env = base_env(tmp_path / "var")
    cli(env, "tenants", "add", "acme")
    result = cli(env, "integrations", "add", "acme", "prod", *args, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_tenant_is_named(tmp_path: Path) -> None:
    """Adding to a tenant that does not exist names it and says how to create it."""
    result = cli(base_env(tmp_path / "var"), "integrations", "list", "ghost", check=False)
    assert result.returncode == 1
    assert "ghost" in result.stderr


def test_setup_prints_valid_scripts_and_clear_errors(tmp_path: Path) -> None:
    """`warrant setup` prints a bash script (and its teardown) that bash accepts; an
    instance_role setup without Warrant's principal is one clean error line."""
    env = base_env(tmp_path / "var", WARRANT_ISSUER_URL="https://oidc.example.com")
    cli(env, "tenants", "add", "acme")
    cli(
        env,
        "integrations",
        "add",
        "acme",
        "prod",
        "--account-id",
        "123456789012",
        "--role-arn",
        ROLE,
    )
    for extra in ([], ["--teardown"], ["--profile", "analysis"]):
        script = cli(env, "setup", "acme", "prod", *extra).stdout
        checked = subprocess.run(
            ["bash", "-n"], input=script, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stderr
    setup = cli(env, "setup", "acme", "prod").stdout
    assert "oidc.example.com:sub" in setup
    assert "acme-oidc-service" in setup
    cfn = cli(env, "setup", "acme", "prod", "--format", "cloudformation").stdout
    assert "AWS::IAM::Role" in cfn
    cli(
        env,
        "integrations",
        "add",
        "acme",
        "xacct",
        "--account-id",
        "123456789012",
        "--role-arn",
        ROLE + "-x",
        "--method",
        "instance_role",
    )
    failed = cli(env, "setup", "acme", "xacct", check=False)
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: ")
    assert "warrant_principal_arn" in failed.stderr or "principal" in failed.stderr
