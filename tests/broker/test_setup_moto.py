"""The generated documents work: applied to moto's IAM and CloudFormation, and the CLI scripts
run against moto with the real AWS CLI, they yield a role whose trust pins aud and sub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer

from broker.model import Integration, Method
from broker.setup import Format, generate
from tests.e2e import free_port

pytestmark = pytest.mark.slow

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://oidc.example.com/warrant"
HOST = "oidc.example.com/warrant"
ACCOUNT = "123456789012"  # moto's default account, so the scripts' account check passes
KEYS = {"aws_access_key_id": "AKIASETUP0000000TEST", "aws_secret_access_key": "setup"}
AWS_CLI = Path(sys.executable).with_name("aws")


def _integration(id: str, role: str) -> Integration:
    return Integration(
        id=id,
        tenant="acme",
        name=id,
        account_id=ACCOUNT,
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/warrant/{role}",
        region="us-east-1",
        method=Method.OIDC,
        session_duration=3600,
        created_at=NOW,
    )


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server on a free local port for the whole module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _client(service: str, url: str) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", **KEYS)


def _pinned(role: dict[str, Any], integration: Integration) -> None:
    trust = role["AssumeRolePolicyDocument"]
    if isinstance(trust, str):
        trust = json.loads(trust)
    assert trust["Statement"][0]["Condition"]["StringEquals"] == {
        f"{HOST}:aud": "acme-oidc-service",
        f"{HOST}:sub": f"tenant:acme:{integration.id}",
    }


def _ours(iam: Any) -> list[str]:
    """Providers for our test issuer: moto's state is per process, and other test modules
    (the broker's end-to-end tests) register providers of their own in it."""
    providers = iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]
    return [p["Arn"] for p in providers if p["Arn"].endswith("/" + HOST)]


def _apply(iam: Any, call: str, params: dict[str, Any]) -> Any:
    """Call an IAM API named in the json format, serializing embedded policy documents."""
    wire = {k: json.dumps(v) if k.endswith("Document") else v for k, v in params.items()}
    method = "".join("_" + c.lower() if c.isupper() else c for c in call).lstrip("_")
    method = method.replace("i_d_", "id_").replace("open_i_d", "open_id").replace("_i_d", "_id")
    return getattr(iam, method)(**wire)


def test_json_documents_apply_and_tear_down(moto_url: str) -> None:
    """The json format's calls create the provider, policy and role in moto; the role's trust
    pins aud and sub; its teardown calls remove them again."""
    iam = _client("iam", moto_url)
    integration = _integration("int-json", "acme-json")
    out = generate(integration, issuer_url=ISSUER, format=Format.JSON, now=NOW)
    setup, teardown = out.documents["setup"], out.documents["teardown"]
    _apply(
        iam, "CreateOpenIDConnectProvider", setup["oidc_provider"]["CreateOpenIDConnectProvider"]
    )
    _apply(iam, "CreatePolicy", setup["policy"]["CreatePolicy"])
    _apply(iam, "CreateRole", setup["role"]["CreateRole"])
    for attach in setup["role"]["AttachRolePolicy"]:
        _apply(iam, "AttachRolePolicy", attach)
    role = iam.get_role(RoleName="acme-json")["Role"]
    assert role["Arn"] == integration.role_arn
    _pinned(role, integration)
    attached = iam.list_attached_role_policies(RoleName="acme-json")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [setup["policy"]["arn"]]
    provider = iam.get_open_id_connect_provider(
        OpenIDConnectProviderArn=setup["oidc_provider"]["arn"]
    )
    assert provider["ClientIDList"] == ["acme-oidc-service"]

    for step in teardown["steps"]:
        ((call, params),) = step.items()
        _apply(iam, call, params)
    _apply(
        iam, "DeleteOpenIDConnectProvider", teardown["oidc_provider"]["DeleteOpenIDConnectProvider"]
    )
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName="acme-json")
    assert _ours(iam) == []


def test_cloudformation_stack_creates_the_role(moto_url: str) -> None:
    """The template deploys in moto (with the provider made beforehand, as moto's
    CloudFormation has no AWS::IAM::OIDCProvider) and outputs the pinned role's ARN."""
    iam, cfn = _client("iam", moto_url), _client("cloudformation", moto_url)
    integration = _integration("int-cfn", "acme-cfn")
    out = generate(integration, issuer_url=ISSUER, format=Format.CLOUDFORMATION, now=NOW)
    provider = iam.create_open_id_connect_provider(Url=ISSUER, ClientIDList=["acme-oidc-service"])
    try:
        cfn.create_stack(
            StackName="warrant-acme-cfn",
            TemplateBody=out.setup,
            Parameters=[{"ParameterKey": "CreateOidcProvider", "ParameterValue": "false"}],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )
        stack = cfn.describe_stacks(StackName="warrant-acme-cfn")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        assert outputs["RoleArn"] == integration.role_arn
        role = iam.get_role(RoleName="acme-cfn")["Role"]
        _pinned(role, integration)
        assert role["MaxSessionDuration"] == 3600
        cfn.delete_stack(StackName="warrant-acme-cfn")
        with pytest.raises(iam.exceptions.NoSuchEntityException):
            iam.get_role(RoleName="acme-cfn")
    finally:
        iam.delete_open_id_connect_provider(
            OpenIDConnectProviderArn=provider["OpenIDConnectProviderArn"]
        )


def _run(script: str, moto_url: str, tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text(script)
    env = {
        "PATH": f"{AWS_CLI.parent}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": KEYS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": KEYS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    result = subprocess.run(
        ["bash", str(path)], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.skipif(not AWS_CLI.exists(), reason="the AWS CLI is not installed in the venv")
def test_cli_scripts_run_against_moto(moto_url: str, tmp_path: Path) -> None:
    """The setup script creates provider, policy and role and prints the role ARN, a second run
    is harmless, and the teardown removes all of it, the provider included."""
    iam = _client("iam", moto_url)
    integration = _integration("int-cli", "acme-cli")
    out = generate(integration, issuer_url=ISSUER, format=Format.CLI, now=NOW)

    assert _run(out.setup, moto_url, tmp_path, "setup.sh").strip().endswith(integration.role_arn)
    _run(out.setup, moto_url, tmp_path, "setup.sh")  # idempotent
    _pinned(iam.get_role(RoleName="acme-cli")["Role"], integration)
    arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{HOST}"
    ids = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"]
    assert ids == ["acme-oidc-service"]

    _run(out.teardown, moto_url, tmp_path, "teardown.sh")
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName="acme-cli")
    assert _ours(iam) == []
    names = [p["PolicyName"] for p in iam.list_policies(Scope="Local")["Policies"]]
    assert "warrant-acme-int-cli-incident" not in names


@pytest.mark.skipif(not AWS_CLI.exists(), reason="the AWS CLI is not installed in the venv")
def test_cli_setup_reuses_a_shared_provider(moto_url: str, tmp_path: Path) -> None:
    """When the account's provider already lists our client id (next to another tenant's), the
    setup script reuses it rather than creating a second one. (moto implements neither
    AddClientIDTo- nor RemoveClientIDFromOpenIDConnectProvider, so those branches are not run.)"""
    iam = _client("iam", moto_url)
    integration = _integration("int-shared", "acme-shared")
    provider = iam.create_open_id_connect_provider(
        Url=ISSUER, ClientIDList=["globex-oidc-service", "acme-oidc-service"]
    )["OpenIDConnectProviderArn"]
    out = generate(integration, issuer_url=ISSUER, format=Format.CLI, now=NOW)
    try:
        stdout = _run(out.setup, moto_url, tmp_path, "setup.sh")
        assert "already lists acme-oidc-service" in stdout
        assert len(_ours(iam)) == 1
        _pinned(iam.get_role(RoleName="acme-shared")["Role"], integration)
    finally:
        for attached in iam.list_attached_role_policies(RoleName="acme-shared")["AttachedPolicies"]:
            iam.detach_role_policy(RoleName="acme-shared", PolicyArn=attached["PolicyArn"])
            iam.delete_policy(PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName="acme-shared")
        iam.delete_open_id_connect_provider(OpenIDConnectProviderArn=provider)
