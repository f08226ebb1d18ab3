"""instance_role integrations: base credentials -> sts:AssumeRole into the customer's role (with
the ExternalId Warrant generated for it), then optionally a second hop to a target role."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from broker.model import AwsCredentials, CredentialRequest
from broker.protocols import CredentialSource
from broker.sts import StsClients, sts_credentials
from broker.sts_errors import classify
from keys.botocore_lazy import call_errors

if TYPE_CHECKING:
    from types_aiobotocore_sts.type_defs import AssumeRoleRequestTypeDef

__all__ = ["AssumeRoleSource"]

# Role chaining (role credentials -> AssumeRole) caps a session at 1 hour; asking for more is a
# ValidationError, not a shorter session. The second hop is always chaining. We cap the first
# hop too: AWS documents EC2 instance-role credentials -> AssumeRole as NOT chaining, but
# community reports are mixed, and a wrong guess would turn every refresh into an outage.
CHAINING_CAP = timedelta(hours=1)

_ACTION = "AssumeRole"


class AssumeRoleSource:
    """Assumes the integration's role with credentials from `base` (never vended themselves)."""

    def __init__(self, base: CredentialSource, sts: StsClients) -> None:
        self._base = base
        self._sts = sts

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        integration = request.integration
        # Errors from the base propagate unchanged: there is no fallback to anything else.
        base = await self._base.fetch(request)
        duration = min(integration.session_duration, int(CHAINING_CAP.total_seconds()))
        target = integration.target_role_arn
        # The session policy goes on the hop whose credentials are vended. On a first hop that
        # is followed by a second, it would also have to allow sts:AssumeRole on the target.
        first = await self._assume(
            base,
            request,
            integration.role_arn,
            duration,
            None if target else request.session_policy,
        )
        if not target:
            return first
        return await self._assume(first, request, target, duration, request.session_policy)

    async def _assume(
        self,
        caller: AwsCredentials,
        request: CredentialRequest,
        role_arn: str,
        duration: int,
        policy: str | None,
    ) -> AwsCredentials:
        integration = request.integration
        params: AssumeRoleRequestTypeDef = {
            "RoleArn": role_arn,
            "RoleSessionName": request.session_name,
            "DurationSeconds": duration,
        }
        if integration.external_id:
            params["ExternalId"] = integration.external_id
        if policy:
            params["Policy"] = policy
        async with self._sts.signed(integration.region, caller) as client:
            try:
                response = await client.assume_role(**params)
            except call_errors() as exc:
                raise classify(exc, action=_ACTION, role_arn=role_arn) from exc
        return sts_credentials(response["Credentials"], response.get("AssumedRoleUser"))
