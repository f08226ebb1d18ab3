"""IAM condition operators as trust policies use them, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from broker.standin.conditions import Context, UnsupportedCondition, conditions_hold

P = "issuer.example.com"
CONTEXT: Context = {
    f"{P}:aud": ("acme-oidc-service",),
    f"{P}:sub": ("tenant:acme:sbx-1",),
    f"{P}:amr": ("pwd", "mfa"),
}


@pytest.mark.parametrize(
    ("block", "holds"),
    [
        (None, True),
        ({}, True),
        ({"StringEquals": {f"{P}:aud": "acme-oidc-service"}}, True),
        ({"StringEquals": {f"{P}:aud": "ACME-oidc-service"}}, False),
        ({"StringEquals": {f"{P}:AUD": "acme-oidc-service"}}, True),
        ({"StringEquals": {f"{P}:aud": ["other", "acme-oidc-service"]}}, True),
        (
            {"StringEquals": {f"{P}:aud": "acme-oidc-service", f"{P}:sub": "tenant:acme:x"}},
            False,
        ),
        (
            {
                "StringEquals": {f"{P}:aud": "acme-oidc-service"},
                "StringLike": {f"{P}:sub": "tenant:acme:*"},
            },
            True,
        ),
        ({"StringLike": {f"{P}:sub": "tenant:acme:sbx-?"}}, True),
        ({"StringLike": {f"{P}:sub": "tenant:acme:sbx-??"}}, False),
        ({"StringLike": {f"{P}:sub": "tenant:acme"}}, False),
        ({"StringLike": {f"{P}:sub": "tenant.acme.*"}}, False),
        ({"StringLike": {f"{P}:sub": "*"}}, True),
        ({"StringEqualsIgnoreCase": {f"{P}:aud": "ACME-OIDC-SERVICE"}}, True),
        ({"StringNotEquals": {f"{P}:aud": "globex-oidc-service"}}, True),
        ({"StringNotEquals": {f"{P}:aud": ["x", "acme-oidc-service"]}}, False),
        ({"StringNotLike": {f"{P}:sub": "tenant:globex:*"}}, True),
        ({"StringNotLike": {f"{P}:sub": "tenant:acme:*"}}, False),
        ({"StringEquals": {f"{P}:azp": "anything"}}, False),
        ({"StringNotEquals": {f"{P}:azp": "anything"}}, True),
        ({"StringEqualsIfExists": {f"{P}:azp": "anything"}}, True),
        ({"StringEqualsIfExists": {f"{P}:aud": "other"}}, False),
        ({"Null": {f"{P}:azp": "true"}}, True),
        ({"Null": {f"{P}:aud": "true"}}, False),
        ({"Null": {f"{P}:aud": "false"}}, True),
        ({"ForAnyValue:StringEquals": {f"{P}:amr": "mfa"}}, True),
        ({"ForAnyValue:StringEquals": {f"{P}:amr": "otp"}}, False),
        ({"ForAllValues:StringEquals": {f"{P}:amr": ["pwd", "mfa", "otp"]}}, True),
        ({"ForAllValues:StringEquals": {f"{P}:amr": ["pwd"]}}, False),
        ({"ForAllValues:StringEquals": {f"{P}:azp": ["x"]}}, True),
        ({"ForAnyValue:StringEquals": {f"{P}:azp": ["x"]}}, False),
        ({"ForAnyValue:StringNotEquals": {f"{P}:amr": "pwd"}}, True),
        ({"StringEquals": {f"{P}:amr": "mfa"}}, True),
        ({"StringNotEquals": {f"{P}:amr": "mfa"}}, False),
    ],
)
def test_condition_blocks(block: Any, holds: bool) -> None:
    """Each operator, qualifier and absent-key rule evaluates as IAM documents it."""
    assert conditions_hold(block, CONTEXT) is holds


@pytest.mark.parametrize(
    "block",
    [
        {"NumericLessThan": {f"{P}:aud": "3"}},
        {"Bool": {"aws:SecureTransport": "true"}},
        {"ForSomeValues:StringEquals": {f"{P}:amr": "mfa"}},
        {"StringEquals": f"{P}:aud"},
        {"StringEquals": {f"{P}:aud": []}},
        {"StringEquals": {f"{P}:aud": [{"nested": 1}]}},
        {"Null": {f"{P}:aud": "maybe"}},
        ["StringEquals"],
    ],
)
def test_conditions_the_stand_in_cannot_judge_are_errors(block: Any) -> None:
    """Unsupported operators and malformed blocks raise instead of being skipped."""
    with pytest.raises(UnsupportedCondition):
        conditions_hold(block, CONTEXT)
