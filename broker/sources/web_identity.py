"""oidc integrations: the tenant's token from our issuer -> sts:AssumeRoleWithWebIdentity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.model import AwsCredentials, CredentialRequest
from broker.protocols import TokenProvider
from broker.sts import StsClients, sts_credentials
from broker.sts_errors import classify
from keys.botocore_lazy import call_errors

if TYPE_CHECKING:
    from types_aiobotocore_sts.type_defs import AssumeRoleWithWebIdentityRequestTypeDef

__all__ = ["WebIdentitySource"]

_ACTION = "AssumeRoleWithWebIdentity"


class WebIdentitySource:
    """Exchanges a freshly minted web-identity token for the integration role's credentials."""

    def __init__(self, tokens: TokenProvider, sts: StsClients) -> None:
        self._tokens = tokens
        self._sts = sts

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        integration = request.integration
        # sub = tenant:<slug>:<integration id>: what the role's trust policy pins (`:sub`),
        # whichever sandbox or session scope asked.
        token = await self._tokens.token_for(integration.tenant, integration.id)
        # Only these parameters exist on this call: Tags, TransitiveTagKeys, ExternalId and
        # SourceIdentity come from the token's claims, and ProviderId is for OAuth 2.0 providers
        # (Amazon, Facebook), never for OIDC ID tokens.
        params: AssumeRoleWithWebIdentityRequestTypeDef = {
            "RoleArn": integration.role_arn,
            "RoleSessionName": request.session_name,
            "WebIdentityToken": token,
            "DurationSeconds": integration.session_duration,
        }
        if request.session_policy:
            params["Policy"] = request.session_policy
        client = await self._sts.unsigned(integration.region)
        try:
            response = await client.assume_role_with_web_identity(**params)
        except call_errors() as exc:
            raise classify(exc, action=_ACTION, role_arn=integration.role_arn) from exc
        return sts_credentials(response["Credentials"], response.get("AssumedRoleUser"))
