"""Hand-written fakes for the broker's Protocols, and builders for its data."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from broker.model import AwsCredentials, CredentialRequest, Integration, Method
from broker.protocols import Clock

if TYPE_CHECKING:
    from broker.protocols import CredentialSource, TokenProvider

# What a FakeSource call does: return these credentials, raise this error, or return fresh
# credentials that expire this long after the clock's current time.
Outcome = AwsCredentials | Exception | timedelta

ACCOUNT = "123456789012"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/warrant-acme"
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
# A JWT-shaped placeholder: three base64url segments, the first decoding to a JSON header.
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJlLXBsYWNlaG9sZGVy"

_serial = itertools.count(1)


def integration(**changes: object) -> Integration:
    """An oidc integration for tenant `acme`; keyword arguments replace fields."""
    base = Integration(
        id="int-1",
        tenant="acme",
        name="prod",
        account_id=ACCOUNT,
        role_arn=ROLE_ARN,
        region="us-east-1",
        method=Method.OIDC,
        session_duration=3600,
        created_at=CREATED,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def request(
    integ: Integration | None = None,
    *,
    scope: str | None = None,
    session_policy: str | None = None,
    session_name: str = "warrant-acme-prod",
) -> CredentialRequest:
    """A request for `integ` (default: `integration()`), scoped to the integration by default."""
    integ = integ if integ is not None else integration()
    return CredentialRequest(
        integration=integ,
        session_name=session_name,
        session_policy=session_policy,
        scope=scope if scope is not None else integ.id,
    )


def credentials(expiration: datetime, *, key: str | None = None) -> AwsCredentials:
    """Credentials with a unique access key id unless `key` is given."""
    serial = next(_serial)
    return AwsCredentials(
        access_key_id=key or f"ASIAFAKE{serial:012d}",
        secret_access_key=f"secret-{serial}",
        session_token=f"session-token-{serial}",
        expiration=expiration,
        account_id=ACCOUNT,
    )


class FakeSource:
    """A CredentialSource that plays a script, then `default`, and counts its calls.

    Set `gate` to an unset asyncio.Event to hold calls in flight until the test sets it.
    """

    def __init__(
        self, clock: Clock, *script: Outcome, default: Outcome = timedelta(hours=1)
    ) -> None:
        self.clock = clock
        self.default: Outcome = default
        self.calls: list[CredentialRequest] = []
        self.gate: asyncio.Event | None = None
        self.returned: list[AwsCredentials] = []
        self._script: deque[Outcome] = deque(script)

    @property
    def count(self) -> int:
        return len(self.calls)

    def then(self, *outcomes: Outcome) -> FakeSource:
        self._script.extend(outcomes)
        return self

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        self.calls.append(request)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self._script.popleft() if self._script else self.default
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, timedelta):
            outcome = credentials(self.clock() + outcome)
        self.returned.append(outcome)
        return outcome


class FakeTokenProvider:
    """A TokenProvider returning a fixed token and recording who asked."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[tuple[str, str]] = []

    async def token_for(self, tenant: str, subject: str) -> str:
        self.calls.append((tenant, subject))
        return self.token


if TYPE_CHECKING:  # pin the fakes to the Protocols they stand in for
    _source: CredentialSource = FakeSource(lambda: CREATED)
    _tokens: TokenProvider = FakeTokenProvider()
