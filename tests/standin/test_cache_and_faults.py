"""Cache-Control as the IdP-document cache reads it, and fault plans counting down."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from broker.standin.errors import StsError
from broker.standin.faults import FaultPlan, Faults
from broker.standin.idp import cache_lifetime


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"cache-control": "public, max-age=300"}, 300),
        ({"cache-control": 'max-age="60"'}, 60),
        ({"cache-control": "Max-Age=60, must-revalidate"}, 60),
        ({"cache-control": "no-cache, max-age=300"}, 0),
        ({"cache-control": "no-store"}, 0),
        ({"cache-control": "public, s-maxage=300"}, 0),
        ({"cache-control": "max-age=300", "pragma": "no-cache"}, 0),
        ({}, 0),
    ],
)
def test_cache_lifetime(headers: dict[str, str], seconds: int) -> None:
    """Only a positive max-age without no-cache/no-store/Pragma allows reuse."""
    assert cache_lifetime(httpx.Headers(headers)) == timedelta(seconds=seconds)


def test_a_limited_fault_runs_out() -> None:
    """A plan with remaining=2 fails two matching requests, then turns itself off."""
    faults = Faults()
    faults.set(FaultPlan.build("throttle", ["AssumeRole"], 2))
    assert faults.take("AssumeRoleWithWebIdentity") is None
    first, second = faults.take("AssumeRole"), faults.take("AssumeRole")
    assert isinstance(first, StsError)
    assert first.code == "Throttling"
    assert second is not None
    assert faults.take("AssumeRole") is None
    assert faults.plan.mode.value == "none"


def test_an_unlimited_fault_stays() -> None:
    """A plan with remaining=None keeps failing until replaced."""
    faults = Faults()
    faults.set(FaultPlan.build("unavailable"))
    for _ in range(5):
        error = faults.take("AssumeRoleWithWebIdentity")
        assert isinstance(error, StsError)
        assert error.status == 503
    faults.clear()
    assert faults.take("AssumeRoleWithWebIdentity") is None
