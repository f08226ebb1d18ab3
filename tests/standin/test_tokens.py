"""Claim checks on an injected clock: the skew boundaries and the NumericDate rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.standin.errors import StsError
from broker.standin.model import OidcProvider
from broker.standin.tokens import check_claims, read_unverified

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
PROVIDER = OidcProvider("arn:aws:iam::123456789012:oidc-provider/i.example", "i.example", ("aud",))


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": "https://i.example", "aud": "aud", "sub": "s-1", "iat": T, "exp": T + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({}, None),
        ({"exp": T - 300}, None),
        ({"exp": T - 301}, "ExpiredTokenException"),
        ({"nbf": T + 300}, None),
        ({"nbf": T + 301}, "InvalidIdentityToken"),
        ({"iat": True}, "InvalidIdentityToken"),
        ({"exp": float(T + 300)}, "InvalidIdentityToken"),
        ({"exp": str(T + 300)}, "InvalidIdentityToken"),
        ({"aud": ["aud"]}, None),
        ({"aud": []}, "InvalidIdentityToken"),
        ({"aud": 5}, "InvalidIdentityToken"),
        ({"sub": ""}, "InvalidIdentityToken"),
        ({"amr": ["pwd", "mfa"], "azp": "client"}, None),
    ],
)
def test_claim_rules(overrides: dict[str, Any], code: str | None) -> None:
    """exp and nbf get exactly five minutes of skew; NumericDates must be integers."""
    if code is None:
        identity = check_claims(claims(**overrides), PROVIDER, NOW)
        assert identity.audience == "aud"
        return
    with pytest.raises(StsError) as caught:
        check_claims(claims(**overrides), PROVIDER, NOW)
    assert caught.value.code == code


@pytest.mark.parametrize("token", ["a.b.c", "abcd", "e30.e30.", "eyJhbGciOiJSUzI1NiJ9.e30.sig"])
def test_unreadable_or_issuerless_tokens_are_refused(token: str) -> None:
    """A token that is not a JWT, or names no issuer, is InvalidIdentityToken."""
    with pytest.raises(StsError) as caught:
        read_unverified(token)
    assert caught.value.code == "InvalidIdentityToken"


def test_expired_message_names_both_times() -> None:
    """The ExpiredTokenException message carries the current time and exp in epoch seconds."""
    with pytest.raises(StsError) as caught:
        check_claims(claims(exp=T - 400), PROVIDER, NOW + timedelta(seconds=1))
    assert caught.value.message == (
        f"Token expired: current date/time {T + 1} must be before the expiration date/time "
        f"{T - 400}"
    )
