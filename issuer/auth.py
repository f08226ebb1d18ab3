"""Bearer API keys on the internal listener: who is calling, and may they do this."""

from __future__ import annotations

from starlette.requests import Request

from issuer.apikeys import ApiKey, ApiKeyStore, Role
from issuer.errors import Forbidden, Unauthenticated


class Authenticator:
    def __init__(self, keys: ApiKeyStore) -> None:
        self._keys = keys

    async def require(self, request: Request, role: Role) -> ApiKey:
        """401 when the key is missing or unknown, 403 when it has another role."""
        return await self.require_header(request.headers.get("authorization"), role)

    async def require_header(self, header: str | None, role: Role) -> ApiKey:
        """The same check from the raw Authorization value (for raw-ASGI endpoints)."""
        if not header:
            raise Unauthenticated("missing 'Authorization: Bearer <api key>' header")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <api key>'")
        key = await self._keys.authenticate(presented.strip())
        if key is None:
            raise Unauthenticated("invalid or revoked API key")
        if key.role is not role:
            raise Forbidden(
                f"this endpoint needs an API key with the {role.value!r} role; "
                f"this key has the {key.role.value!r} role"
            )
        return key
