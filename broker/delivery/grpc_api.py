"""The gRPC API (`warrant.v1.CredentialBroker`): a thin adapter over the same service layer,
authenticator and audit log as the HTTP API, so behaviour, roles, audit and errors match.

Every call gets a request id (the `x-request-id` trailing metadata, and the audit records'
`request_id`), runs within the client's deadline, and maps errors once (grpc_errors)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from broker.connection import ConnectionReport
from broker.delivery.grpc_errors import to_grpc_error
from broker.delivery.http import ENV_DELIVERY_NOTE
from broker.model import Delivery, Sandbox
from broker.rpc.v1 import credential_broker_pb2 as pb
from broker.rpc.v1 import credential_broker_pb2_grpc as pb_grpc
from broker.service import BrokerService
from broker.setup import Profile
from issuer.apikeys import Role
from issuer.auth import Authenticator
from issuer.errors import BadRequest
from issuer.logs import REQUEST_ID
from issuer.metrics import Metrics
from issuer.minting import TokenMinter

log = logging.getLogger(__name__)
T = TypeVar("T")
Context = grpc.aio.ServicerContext[object, object]

_DELIVERY_IN = {
    pb.DELIVERY_UNSPECIFIED: Delivery.CONTAINER,
    pb.DELIVERY_CONTAINER: Delivery.CONTAINER,
    pb.DELIVERY_ENV: Delivery.ENV,
}
_DELIVERY_OUT = {Delivery.CONTAINER: pb.DELIVERY_CONTAINER, Delivery.ENV: pb.DELIVERY_ENV}
_STATUS_OUT = {
    "active": pb.SANDBOX_STATUS_ACTIVE,
    "expired": pb.SANDBOX_STATUS_EXPIRED,
    "revoked": pb.SANDBOX_STATUS_REVOKED,
}
# Codes that mean "something is wrong on our side or upstream", worth a log line.
_LOGGED = frozenset(
    {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION}
)


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """Whole seconds, like the HTTP API's RFC 3339 strings."""
    return None if value is None else timestamp_pb2.Timestamp(seconds=int(value.timestamp()))


def sandbox_message(sandbox: Sandbox, now: datetime) -> pb.Sandbox:
    return pb.Sandbox(
        sandbox_id=sandbox.id,
        tenant=sandbox.tenant,
        integration=sandbox.integration_id,
        delivery=_DELIVERY_OUT[sandbox.delivery],
        status=_STATUS_OUT[sandbox.status(now)],
        created_at=timestamp(sandbox.created_at),
        expires_at=timestamp(sandbox.expires_at),
        revoked_at=timestamp(sandbox.revoked_at),
        session_policy=sandbox.session_policy,
    )


def report_message(report: ConnectionReport) -> pb.TestIntegrationResponse:
    diagnosis = None
    if report.diagnosis is not None:
        diagnosis = struct_pb2.Struct()
        diagnosis.update(report.diagnosis)
    return pb.TestIntegrationResponse(
        integration=report.integration_id,
        profile=report.profile.value,
        status=report.status,
        tested_at=timestamp(report.tested_at),
        account=report.account or "",
        assumed_role_arn=report.assumed_role_arn or "",
        error=report.error or "",
        capabilities=[
            pb.CapabilityResult(capability=c.capability, status=c.status, detail=c.detail)
            for c in report.capabilities
        ],
        diagnosis=diagnosis,
    )


def _fields(message: type[object]) -> tuple[str, ...]:
    descriptor = getattr(message, "DESCRIPTOR")  # noqa: B009 - generated classes have it
    return tuple(f.name for f in descriptor.fields)


def _metadata(context: Context, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == name:
            return value if isinstance(value, str) else None
    return None


def _sandbox_token(context: Context) -> str:
    """The sandbox token, raw (as AWS SDKs send it over HTTP) or as `Bearer <token>`."""
    value = (_metadata(context, "authorization") or "").strip()
    scheme, _, rest = value.partition(" ")
    return rest.strip() if scheme.lower() == "bearer" and rest else value


class CredentialBrokerServicer(pb_grpc.CredentialBrokerServicer):
    def __init__(
        self,
        *,
        auth: Authenticator,
        minter: TokenMinter,
        service: BrokerService,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._auth = auth
        self._minter = minter
        self._service = service
        self._metrics = metrics
        self._clock = clock

    async def _run(
        self,
        method: str,
        context: Context,
        fields: Sequence[str],
        work: Callable[[str], Awaitable[T]],
        *,
        sanitize: bool = False,
    ) -> T:
        rid = secrets.token_hex(8)
        REQUEST_ID.set(rid)  # every call runs in its own task
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            # Honour the client's deadline: stop working (and clean up) when it passes.
            async with asyncio.timeout(context.time_remaining()):
                result = await work(rid)
        except Exception as exc:
            error = to_grpc_error(exc, request_id=rid, fields=fields, sanitize=sanitize)
            code = error.code
            if code is grpc.StatusCode.INTERNAL:
                log.error("grpc %s request %s failed", method, rid, exc_info=exc)
            elif code in _LOGGED:
                log.warning("grpc %s request %s: %s: %s", method, rid, type(exc).__name__, exc)
            await context.abort(code, error.message, trailing_metadata=error.trailing_metadata(rid))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._metrics.grpc_requests.labels(method, code.name).inc()
            self._metrics.grpc_latency.labels(method).observe(time.perf_counter() - started)
        context.set_trailing_metadata((("x-request-id", rid),))
        return result

    async def _agent(self, context: Context, role: Role = Role.AGENT) -> None:
        await self._auth.require_header(_metadata(context, "authorization"), role)

    async def MintToken(  # noqa: N802 - the RPC's name
        self, request: pb.MintTokenRequest, context: Context
    ) -> pb.MintTokenResponse:
        async def work(_: str) -> pb.MintTokenResponse:
            await self._agent(context)
            minted = await self._minter.mint(
                request.tenant,
                request.subject if request.HasField("subject") else None,
                request.ttl_seconds if request.HasField("ttl_seconds") else None,
            )
            self._metrics.tokens_minted.labels(minted.alg).inc()
            return pb.MintTokenResponse(
                token=minted.token, expires_at=timestamp(minted.expires_at), kid=minted.kid
            )

        return await self._run("MintToken", context, _fields(pb.MintTokenRequest), work)

    async def CreateSandbox(  # noqa: N802
        self, request: pb.CreateSandboxRequest, context: Context
    ) -> pb.CreateSandboxResponse:
        async def work(rid: str) -> pb.CreateSandboxResponse:
            await self._agent(context)
            delivery = _DELIVERY_IN.get(request.delivery)
            if delivery is None:
                raise BadRequest(
                    f"delivery must be DELIVERY_CONTAINER (default; refreshing) or DELIVERY_ENV "
                    f"(static, never refreshed), not {request.delivery}"
                )
            grant = await self._service.create_sandbox(
                tenant=_required(request.tenant, "tenant"),
                integration_ref=_required(request.integration, "integration"),
                ttl_seconds=request.ttl_seconds if request.HasField("ttl_seconds") else None,
                session_policy=(
                    request.session_policy if request.HasField("session_policy") else None
                ),
                delivery=delivery,
                request_id=rid,
            )
            answer = pb.CreateSandboxResponse(
                sandbox_id=grant.sandbox.id,
                expires_at=timestamp(grant.sandbox.expires_at),
                delivery=_DELIVERY_OUT[delivery],
                env=grant.env,
            )
            if grant.credentials_expire_at is not None:
                answer.credentials_expire_at.FromSeconds(
                    int(grant.credentials_expire_at.timestamp())
                )
                answer.note = ENV_DELIVERY_NOTE
            return answer

        return await self._run("CreateSandbox", context, _fields(pb.CreateSandboxRequest), work)

    async def GetSandbox(  # noqa: N802
        self, request: pb.GetSandboxRequest, context: Context
    ) -> pb.Sandbox:
        async def work(_: str) -> pb.Sandbox:
            await self._agent(context)
            sandbox = await self._service.get_sandbox(_required(request.sandbox_id, "sandbox_id"))
            return sandbox_message(sandbox, self._clock())

        return await self._run("GetSandbox", context, ("sandbox_id",), work)

    async def DeleteSandbox(  # noqa: N802
        self, request: pb.DeleteSandboxRequest, context: Context
    ) -> pb.Sandbox:
        async def work(rid: str) -> pb.Sandbox:
            await self._agent(context)
            sandbox = await self._service.delete_sandbox(
                _required(request.sandbox_id, "sandbox_id"), request_id=rid
            )
            return sandbox_message(sandbox, self._clock())

        return await self._run("DeleteSandbox", context, ("sandbox_id",), work)

    async def GetCredentials(  # noqa: N802
        self, request: pb.GetCredentialsRequest, context: Context
    ) -> pb.Credentials:
        async def work(rid: str) -> pb.Credentials:
            credentials = await self._service.vend(_sandbox_token(context), request_id=rid)
            return pb.Credentials(
                access_key_id=credentials.access_key_id,
                secret_access_key=credentials.secret_access_key,
                session_token=credentials.session_token,
                expiration=timestamp(credentials.expiration),
                account_id=credentials.account_id or "",
            )

        # A sandbox token may be held by untrusted code: AWS's reasons stay in the log.
        return await self._run("GetCredentials", context, (), work, sanitize=True)

    async def TestIntegration(  # noqa: N802
        self, request: pb.TestIntegrationRequest, context: Context
    ) -> pb.TestIntegrationResponse:
        async def work(rid: str) -> pb.TestIntegrationResponse:
            await self._agent(context, Role.ADMIN)
            profile = None
            if request.HasField("profile"):
                try:
                    profile = Profile(request.profile)
                except ValueError:
                    allowed = ", ".join(p.value for p in Profile)
                    raise BadRequest(
                        f"profile={request.profile!r} is not one of: {allowed}"
                    ) from None
            report = await self._service.test_integration(
                _required(request.tenant, "tenant"),
                _required(request.integration, "integration"),
                profile=profile,
                request_id=rid,
            )
            return report_message(report)

        return await self._run("TestIntegration", context, _fields(pb.TestIntegrationRequest), work)


def _required(value: str, name: str) -> str:
    if not value:
        raise BadRequest(f"{name} is required")
    return value
