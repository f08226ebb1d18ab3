"""Errors the broker raises. They extend the issuer's hierarchy so one function per transport maps
every error to a status and a message that is safe to show.

    IssuerError
     └── BrokerError (500)
          ├── NotApplicable              a source does not apply; only a chain may move on
          ├── CredentialsUnavailable (503, Retry-After)
          │    recoverable: STS throttling or 5xx, network, IMDS down; cached credentials keep
          │    flowing until their floor
          └── CredentialsRejected (403)
               irrecoverable: AccessDenied, InvalidIdentityToken, ExpiredToken, ValidationError...
               cached credentials are dropped; `sts_code` and `hint` say what to fix

Client-input errors reuse the issuer's BadRequest, NotFound, Conflict, Forbidden.
"""

from __future__ import annotations

from issuer.errors import IssuerError


class BrokerError(IssuerError):
    code = "broker_error"


class NotApplicable(BrokerError):
    """This source cannot serve the request (e.g. no IMDS here). Only a chain catches it."""

    code = "not_applicable"


class CredentialsUnavailable(BrokerError):
    """A transient failure: retry later. Never carries credentials."""

    status = 503
    code = "credentials_unavailable"

    def __init__(self, message: str, *, sts_code: str | None = None, retry_after: int = 5) -> None:
        super().__init__(message)
        self.sts_code = sts_code
        self.retry_after = retry_after


class CredentialsRejected(BrokerError):
    """AWS refused, and asking again will not help until the configuration changes."""

    status = 403
    code = "credentials_rejected"

    def __init__(
        self, message: str, *, sts_code: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message if hint is None else f"{message} — {hint}")
        self.sts_code = sts_code
        self.hint = hint
