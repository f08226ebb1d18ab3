"""A decorator that records every STS exchange in the audit log, whatever its outcome."""

from __future__ import annotations

from dataclasses import replace

from broker.errors import BrokerError, CredentialsRejected, CredentialsUnavailable
from broker.model import AwsCredentials, CredentialRequest
from broker.protocols import CredentialSource
from issuer.audit import AuditEvent, AuditLog


class AuditedSource:
    def __init__(self, inner: CredentialSource, audit: AuditLog) -> None:
        self._inner = inner
        self._audit = audit

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        integration = request.integration
        event = AuditEvent(
            event="exchange",
            outcome="ok",
            tenant=integration.tenant,
            integration=integration.id,
            role_arn=integration.target_role_arn or integration.role_arn,
            session_name=request.session_name,
            detail=f"method={integration.method.value}",
        )
        try:
            credentials = await self._inner.fetch(request)
        except (CredentialsUnavailable, CredentialsRejected) as exc:
            await self._audit.write(
                replace(event, outcome="error", sts_error=exc.sts_code, detail=exc.message)
            )
            raise
        except BrokerError as exc:
            await self._audit.write(replace(event, outcome="error", detail=exc.message))
            raise
        await self._audit.write(
            replace(
                event, access_key_id=credentials.access_key_id, expiration=credentials.expiration
            )
        )
        return credentials
