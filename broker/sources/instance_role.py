"""The EC2 instance role, read from IMDSv2: the base credentials for instance_role integrations.

A BASE source only. Its credentials belong to the broker's own role, which can reach every
customer role that trusts it, so they must never be vended to a sandbox: the only consumer is
AssumeRoleSource, which trades them for one customer role's credentials (with its ExternalId).
MethodRouter never routes to this source directly.
"""

from __future__ import annotations

from broker.imds import ImdsClient
from broker.model import AwsCredentials, CredentialRequest

__all__ = ["InstanceRoleSource"]


class InstanceRoleSource:
    """The instance role's credentials, whatever the request (the request is not consulted)."""

    def __init__(self, imds: ImdsClient) -> None:
        self._imds = imds

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        del request  # one instance role serves every integration
        return await self._imds.credentials()
