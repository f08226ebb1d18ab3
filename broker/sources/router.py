"""Routes a request to the source for its integration's method, and only that source."""

from __future__ import annotations

from broker.errors import BrokerError
from broker.model import AwsCredentials, CredentialRequest, Method
from broker.protocols import CredentialSource

__all__ = ["MethodRouter"]


class MethodRouter:
    """Picks the source by `integration.method`.

    There is no fallthrough: a failure of the configured method is final, so a broken
    web-identity setup can never silently obtain credentials some other way. `instance_role` is
    the AssumeRoleSource built on the instance role, never the instance role itself.
    """

    def __init__(self, oidc: CredentialSource, instance_role: CredentialSource) -> None:
        self._sources: dict[Method, CredentialSource] = {
            Method.OIDC: oidc,
            Method.INSTANCE_ROLE: instance_role,
        }

    async def fetch(self, request: CredentialRequest) -> AwsCredentials:
        method = request.integration.method
        source = self._sources.get(method)
        if source is None:
            raise BrokerError(
                f"integration {request.integration.id} has unknown method {method!r}; "
                f"expected one of {', '.join(m.value for m in Method)}"
            )
        return await source.fetch(request)
