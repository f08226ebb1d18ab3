"""Trust policies for both methods, and the combinations the generator refuses."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from broker.model import Integration, Method
from broker.setup import Format, generate, our_side_policy, trust_policy
from broker.setup.policies import minified
from issuer.errors import BadRequest

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
OURS = "arn:aws:iam::999999999999:role/warrant"
OIDC = Integration(
    id="int-abc123",
    tenant="acme",
    name="prod",
    account_id="123456789012",
    role_arn="arn:aws:iam::123456789012:role/warrant/acme-prod",
    region="eu-west-1",
    method=Method.OIDC,
    session_duration=3600,
    created_at=NOW,
)
INSTANCE = replace(
    OIDC,
    id="int-def456",
    method=Method.INSTANCE_ROLE,
    role_arn="arn:aws:iam::123456789012:role/acme-warrant",
    external_id="warrant-0123456789abcdef",
)


@pytest.mark.parametrize(
    ("issuer", "prefix"),
    [
        ("https://oidc.example.com", "oidc.example.com"),
        ("https://example.com/warrant/oidc", "example.com/warrant/oidc"),
    ],
)
def test_oidc_trust_pins_aud_and_sub(issuer: str, prefix: str) -> None:
    """The trust policy names our provider and pins `<host/path>:aud` and `:sub` exactly."""
    policy = trust_policy(OIDC, issuer)
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::123456789012:oidc-provider/{prefix}"
    }
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {
            f"{prefix}:aud": "acme-oidc-service",
            f"{prefix}:sub": "tenant:acme:int-abc123",
        }
    }
    assert len(minified(policy)) <= 2_048


def test_partition_follows_the_role() -> None:
    """A GovCloud role gets a GovCloud provider ARN."""
    gov = replace(OIDC, role_arn="arn:aws-us-gov:iam::123456789012:role/r")
    principal = trust_policy(gov, "https://oidc.example.com")["Statement"][0]["Principal"]
    assert principal["Federated"].startswith("arn:aws-us-gov:iam::123456789012:oidc-provider/")


def test_instance_role_trust_requires_external_id() -> None:
    """The instance_role trust names our role as principal and requires the ExternalId."""
    (statement,) = trust_policy(INSTANCE, warrant_principal_arn=OURS)["Statement"]
    assert statement["Principal"] == {"AWS": OURS}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"] == {
        "StringEquals": {"sts:ExternalId": "warrant-0123456789abcdef"}
    }


def test_our_side_may_assume_role_and_target() -> None:
    """Our side's policy allows sts:AssumeRole on the role and on a second-hop target."""
    chained = replace(INSTANCE, target_role_arn="arn:aws:iam::222222222222:role/target")
    (statement,) = our_side_policy(chained)["Statement"]
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Resource"] == [INSTANCE.role_arn, "arn:aws:iam::222222222222:role/target"]


@pytest.mark.parametrize(
    "issuer",
    [
        "http://oidc.example.com",
        "https://oidc.example.com/",
        "https://oidc.example.com:8443",
        "https://oidc.example.com?x=1",
        "oidc.example.com",
        "https://" + "a" * 250 + ".com",
    ],
)
def test_unusable_issuer_urls_are_refused(issuer: str) -> None:
    """An issuer URL IAM would refuse, or that cannot equal our `iss`, is a BadRequest."""
    with pytest.raises(BadRequest, match="issuer URL"):
        generate(OIDC, issuer_url=issuer, format=Format.JSON, now=NOW)


def test_dev_allows_a_local_http_issuer() -> None:
    """With dev=True a local http://host:port issuer is accepted, port and all."""
    out = generate(OIDC, issuer_url="http://127.0.0.1:8080", format=Format.JSON, now=NOW, dev=True)
    trust = out.documents["setup"]["role"]["CreateRole"]["AssumeRolePolicyDocument"]
    assert "127.0.0.1:8080:aud" in trust["Statement"][0]["Condition"]["StringEquals"]


@pytest.mark.parametrize(
    ("integration", "principal", "message"),
    [
        (INSTANCE, None, "warrant_principal_arn"),
        (replace(INSTANCE, external_id=None), OURS, "external_id"),
        (INSTANCE, "arn:aws:iam::1:user/x", "role ARN"),
        (replace(OIDC, session_duration=43_201), None, "session_duration"),
        (replace(OIDC, account_id="210987654321"), None, "account"),
        (replace(OIDC, id="x" * 2_000), None, "2048"),
    ],
)
def test_impossible_combinations_are_refused(
    integration: Integration, principal: str | None, message: str
) -> None:
    """Combinations that cannot work raise BadRequest saying what to fix."""
    with pytest.raises(BadRequest, match=message):
        generate(
            integration,
            issuer_url="https://oidc.example.com",
            format=Format.CLI,
            now=NOW,
            warrant_principal_arn=principal,
        )


def test_naive_now_is_refused() -> None:
    """The revoke cut-off must be an unambiguous instant."""
    with pytest.raises(BadRequest, match="timezone"):
        generate(
            OIDC,
            issuer_url="https://oidc.example.com",
            format=Format.CLI,
            now=datetime(2026, 5, 1),  # noqa: DTZ001 - the point of the test
        )


def test_role_session_ceiling_covers_the_integration() -> None:
    """MaxSessionDuration is at least the integration's session and never under 3600."""
    long = replace(OIDC, session_duration=7_200)
    for integration, expected in (
        (OIDC, 3_600),
        (long, 7_200),
        (replace(OIDC, session_duration=900), 3_600),
    ):
        out = generate(
            integration, issuer_url="https://oidc.example.com", format=Format.JSON, now=NOW
        )
        assert out.documents["setup"]["role"]["CreateRole"]["MaxSessionDuration"] == expected


def test_role_name_and_path_come_from_role_arn() -> None:
    """The generated role has exactly the name and path of the integration's role_arn."""
    out = generate(OIDC, issuer_url="https://oidc.example.com", format=Format.JSON, now=NOW)
    create = out.documents["setup"]["role"]["CreateRole"]
    assert (create["RoleName"], create["Path"]) == ("acme-prod", "/warrant/")
    assert json.loads(out.setup)["role_arn"] == OIDC.role_arn
