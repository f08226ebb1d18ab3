"""Forwarding an approved AssumeRole* call to moto, then amending and remembering what it issued."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from broker.standin.forward import MotoForwarder, Relayed
from broker.standin.model import Clock, Principal
from broker.standin.principals import PrincipalRegistry
from broker.standin.query import IncomingRequest
from broker.standin.responses import add_result_fields, read_credentials, set_expiration

__all__ = ["SessionIssuer"]


class SessionIssuer:
    def __init__(
        self,
        forwarder: MotoForwarder,
        principals: PrincipalRegistry,
        clock: Clock,
        credential_lifetime: timedelta | None,
    ) -> None:
        self._forwarder = forwarder
        self._principals = principals
        self._clock = clock
        self._lifetime = credential_lifetime

    async def issue(
        self,
        request: IncomingRequest,
        action: str,
        role_arn: str,
        extra_fields: Mapping[str, str] | None = None,
    ) -> Relayed:
        """moto's answer; on success with Expiration in AWS's format (or now + the configured
        lifetime), `extra_fields` added to the result, and the new keys recorded as a role
        session."""
        relayed = await self._forwarder.forward(request)
        if relayed.status != 200:
            return relayed
        issued = read_credentials(relayed.body, action)
        if self._lifetime is not None:
            expiration = self._clock() + self._lifetime
        else:
            expiration = issued.expiration
        expiration = expiration.replace(microsecond=0)
        body = set_expiration(relayed.body, expiration)
        if extra_fields:
            body = add_result_fields(body, action, extra_fields)
        self._principals.record(
            Principal(
                access_key_id=issued.access_key_id,
                arn=issued.assumed_role_arn,
                role_arn=role_arn,
                role_session=True,
                secret_access_key=issued.secret_access_key,
                session_token=issued.session_token,
                expires_at=expiration,
            )
        )
        return Relayed(relayed.status, relayed.headers, body)
