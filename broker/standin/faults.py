"""Injected failures, so that callers' retry and fallback paths can be exercised on demand.

    throttle         Throttling 400 "Rate exceeded"         botocore retries it (standard mode)
    unavailable      ServiceUnavailable 503                 botocore retries it
    idp_unreachable  IDPCommunicationError 400              botocore retries it for STS
    jwks_unreachable InvalidIdentityToken 400 "Couldn't retrieve verification key ..." (what STS
                     says when our discovery or JWKS cannot be fetched in 5 s)
    region_disabled  RegionDisabledException 403            STS not activated in the region
    slow             answered as usual, after `delay` seconds (deadlines, draining on shutdown)

A plan applies to the listed actions (by default the two the gate checks), for `remaining`
matching requests or, when that is None, until replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from broker.standin.errors import (
    StsError,
    idp_communication_error,
    invalid_identity_token,
    region_disabled,
    service_unavailable,
    throttling,
)
from broker.standin.query import ASSUME_ROLE, ASSUME_ROLE_WITH_WEB_IDENTITY

__all__ = ["DEFAULT_ACTIONS", "FaultMode", "FaultPlan", "Faults"]

DEFAULT_ACTIONS = frozenset({ASSUME_ROLE, ASSUME_ROLE_WITH_WEB_IDENTITY})


class FaultMode(StrEnum):
    NONE = "none"
    THROTTLE = "throttle"
    UNAVAILABLE = "unavailable"
    IDP_UNREACHABLE = "idp_unreachable"
    JWKS_UNREACHABLE = "jwks_unreachable"
    REGION_DISABLED = "region_disabled"
    SLOW = "slow"


# A slow answer longer than this is a hung test, not a fault worth injecting.
MAX_DELAY = 60.0


_ERRORS: dict[FaultMode, Callable[[], StsError]] = {
    FaultMode.THROTTLE: throttling,
    FaultMode.UNAVAILABLE: service_unavailable,
    FaultMode.IDP_UNREACHABLE: idp_communication_error,
    FaultMode.JWKS_UNREACHABLE: invalid_identity_token,
    FaultMode.REGION_DISABLED: region_disabled,
}


@dataclass(frozen=True)
class FaultPlan:
    mode: FaultMode = FaultMode.NONE
    actions: frozenset[str] = DEFAULT_ACTIONS
    remaining: int | None = None
    delay: float = 0.0  # seconds; only for the slow mode

    @classmethod
    def build(
        cls,
        mode: str,
        actions: Iterable[str] | None = None,
        remaining: int | None = None,
        delay: float = 0.0,
    ) -> FaultPlan:
        """Raises ValueError for an unknown mode, a negative count or a bad delay."""
        if remaining is not None and remaining < 0:
            raise ValueError("remaining must be a non-negative integer or null")
        fault_mode = FaultMode(mode)
        if fault_mode is FaultMode.SLOW and not 0 < delay <= MAX_DELAY:
            raise ValueError(f"the slow mode needs a delay between 0 and {MAX_DELAY:g} seconds")
        if fault_mode is not FaultMode.SLOW and delay:
            raise ValueError("delay applies only to the slow mode")
        return cls(
            fault_mode,
            DEFAULT_ACTIONS if actions is None else frozenset(actions),
            remaining,
            delay,
        )


class Faults:
    def __init__(self) -> None:
        self._plan = FaultPlan()
        self._lock = threading.Lock()

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    def set(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan

    def clear(self) -> None:
        self.set(FaultPlan())

    def take(self, action: str | None) -> StsError | float | None:
        """The error to answer `action` with, or the seconds to wait before answering it, if
        the plan covers it; counts it down."""
        with self._lock:
            plan = self._plan
            if plan.mode is FaultMode.NONE or action not in plan.actions:
                return None
            if plan.remaining is not None:
                if plan.remaining == 0:
                    self._plan = FaultPlan()
                    return None
                self._plan = replace(plan, remaining=plan.remaining - 1)
            if plan.mode is FaultMode.SLOW:
                return plan.delay
            return _ERRORS[plan.mode]()
