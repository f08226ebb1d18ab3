"""The broker's seams."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from broker.model import AwsCredentials, CredentialRequest


class CredentialSource(Protocol):
    """Obtains credentials for a request.

    Raises NotApplicable when this source cannot serve the request at all (only a chain may then
    try another), CredentialsUnavailable for transient failures, CredentialsRejected when AWS
    refused. Never returns None and never returns expired credentials.
    """

    async def fetch(self, request: CredentialRequest) -> AwsCredentials: ...


class TokenProvider(Protocol):
    """Mints the tenant's web-identity token in-process (the issuer implements it)."""

    async def token_for(self, tenant: str, subject: str) -> str: ...


class Clock(Protocol):
    def __call__(self) -> datetime: ...
