"""Trust-policy evaluation: principals, actions, Allow and Deny, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from broker.standin.trust import RequestPrincipal, UnsupportedCondition, is_allowed

PROVIDER = "arn:aws:iam::123456789012:oidc-provider/issuer.example.com"
ROLE = "arn:aws:iam::123456789012:role/broker"
FEDERATED = RequestPrincipal("Federated", frozenset({PROVIDER}))
CALLER = RequestPrincipal(
    "AWS",
    frozenset({ROLE, "arn:aws:iam::123456789012:root", "123456789012"}),
)
WEB = "sts:AssumeRoleWithWebIdentity"


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(**fields: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"Federated": PROVIDER}, "Action": WEB, **fields}


@pytest.mark.parametrize(
    ("document", "principal", "actions", "allowed"),
    [
        (policy(allow()), FEDERATED, [WEB], True),
        ({"Statement": allow()}, FEDERATED, [WEB], True),
        (policy(allow(Action="sts:*")), FEDERATED, [WEB], True),
        (policy(allow(Action="*")), FEDERATED, [WEB], True),
        (policy(allow(Action="STS:assumerolewithwebidentity")), FEDERATED, [WEB], True),
        (policy(allow(Action=["sts:AssumeRole"])), FEDERATED, [WEB], False),
        (policy(allow(Principal={"Federated": PROVIDER + "x"})), FEDERATED, [WEB], False),
        (policy(allow(Principal={"AWS": PROVIDER})), FEDERATED, [WEB], False),
        (policy(allow(Principal="*")), FEDERATED, [WEB], True),
        (policy(allow(), {**allow(), "Effect": "Deny"}), FEDERATED, [WEB], False),
        (policy(allow()), FEDERATED, [WEB, "sts:TagSession"], False),
        (
            policy(allow(), allow(Action="sts:TagSession")),
            FEDERATED,
            [WEB, "sts:TagSession"],
            True,
        ),
        (policy(allow(Effect="Maybe")), FEDERATED, [WEB], False),
        (policy({"Effect": "Allow", "Action": WEB}), FEDERATED, [WEB], False),
        (
            policy(allow(Principal={"AWS": ROLE}, Action="sts:AssumeRole")),
            CALLER,
            ["sts:AssumeRole"],
            True,
        ),
        (
            policy(allow(Principal={"AWS": "123456789012"}, Action="sts:AssumeRole")),
            CALLER,
            ["sts:AssumeRole"],
            True,
        ),
        (
            policy(allow(Principal={"AWS": "*"}, Action="sts:AssumeRole")),
            CALLER,
            ["sts:AssumeRole"],
            True,
        ),
        (
            policy({"Effect": "Allow", "Principal": {"AWS": ROLE}, "NotAction": "s3:*"}),
            CALLER,
            ["sts:AssumeRole"],
            True,
        ),
        (
            policy({"Effect": "Allow", "NotPrincipal": {"AWS": ROLE}, "Action": "sts:AssumeRole"}),
            CALLER,
            ["sts:AssumeRole"],
            False,
        ),
        (policy(), FEDERATED, [WEB], False),
    ],
)
def test_trust_policies(
    document: dict[str, Any], principal: RequestPrincipal, actions: list[str], allowed: bool
) -> None:
    """Every needed action must be allowed by some statement and denied by none."""
    assert is_allowed(document, principal, actions, {}) is allowed


@pytest.mark.parametrize(
    "document",
    [
        policy(allow(Principal=["not", "an", "object"])),
        policy(allow(Action=5)),
        {"Statement": ["not an object"]},
    ],
)
def test_malformed_policies_are_errors(document: dict[str, Any]) -> None:
    """Shapes IAM would not store raise instead of being guessed at."""
    with pytest.raises(UnsupportedCondition):
        is_allowed(document, FEDERATED, [WEB], {})
