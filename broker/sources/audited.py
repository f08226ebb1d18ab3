"""A decorator that records every STS exchange in the audit log and the metrics, whatever its
outcome."""

from __future__ import annotations

from dataclasses import replace

from broker.errors import BrokerError, CredentialsRejected, CredentialsUnavailable
from broker.model import AwsCredentials, CredentialRequest
from broker.protocols import CredentialSource
from issuer.audit import AuditEvent, AuditLog
from issuer.metrics import Metrics


class AuditedSource:
    def __init__(self, inner: CredentialSource, audit: AuditLog, metrics: Metrics) -> None:
        self._inner = inner
        self._audit = audit
        self._metrics = metrics

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        integration = request.integration
        method = integration.method.value
        event = AuditEvent(
            event="exchange",
            outcome="ok",
            tenant=integration.tenant,
            integration=integration.id,
            role_arn=integration.target_role_arn or integration.role_arn,
            session_name=request.session_name,
            detail=f"method={method}",
        )
        try:
            credentials = await self._inner.fetch(request)
        except (CredentialsUnavailable, CredentialsRejected) as exc:
            self._count(method, "error", exc.sts_code or "none")
            await self._audit.write(
                replace(event, outcome="error", sts_error=exc.sts_code, detail=exc.message)
            )
            raise
        except BrokerError as exc:
            self._count(method, "error", "none")
            await self._audit.write(replace(event, outcome="error", detail=exc.message))
            raise
        self._count(method, "ok", "none")
        await self._audit.write(
            replace(
                event, access_key_id=credentials.access_key_id, expiration=credentials.expiration
            )
        )
        return credentials

    def _count(self, method: str, outcome: str, code: str) -> None:
        self._metrics.sts_exchanges.labels(method, outcome, code).inc()
