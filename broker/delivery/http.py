"""HTTP delivery: integration and sandbox management on the internal listener, and the
sandbox-facing listener that serves credentials and nothing else."""

from __future__ import annotations

import enum
import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from broker.cache import MAXSIZE as SESSION_CACHE_SIZE
from broker.errors import CredentialsRejected, CredentialsUnavailable
from broker.model import AwsCredentials, Delivery, Integration, Sandbox
from broker.service import BrokerService
from broker.setup import Format, PolicyChoice, Profile
from issuer.apikeys import Role
from issuer.auth import Authenticator
from issuer.errors import BadRequest, IssuerError
from issuer.fastpath import HotRoutes, JsonAnswer, JsonEndpoint, RawRequest
from issuer.http import (
    handle_error,
    iso,
    optional_int,
    optional_str,
    read_json_object,
    request_id,
    required_str,
)
from issuer.metrics import Metrics

log = logging.getLogger(__name__)
E = TypeVar("E", bound=enum.Enum)

_NO_STORE = ((b"cache-control", b"no-store"),)

INTEGRATION_FIELDS = frozenset(
    {
        "name",
        "account_id",
        "role_arn",
        "region",
        "method",
        "target_role_arn",
        "session_duration",
        "session_policy",
        "profile",
    }
)
SANDBOX_FIELDS = frozenset({"tenant", "integration", "ttl_seconds", "session_policy", "delivery"})
ENV_DELIVERY_NOTE = (
    "env delivery is static: these credentials are never refreshed; "
    "use delivery 'container' for sandboxes that outlive them"
)
DISCONNECT_NOTE = (
    "STS credentials already issued stay valid until they expire (at most the session "
    "duration). To cut them off now, attach a deny-all policy to the role with the condition "
    "aws:TokenIssueTime earlier than now (IAM console: Roles > Revoke active sessions)."
)


def integration_json(integration: Integration) -> dict[str, Any]:
    return {
        "id": integration.id,
        "tenant": integration.tenant,
        "name": integration.name,
        "account_id": integration.account_id,
        "role_arn": integration.role_arn,
        "region": integration.region,
        "method": integration.method.value,
        "target_role_arn": integration.target_role_arn,
        "external_id": integration.external_id,
        "session_duration": integration.session_duration,
        "session_policy": integration.session_policy,
        "profile": integration.profile,
        "created_at": iso(integration.created_at),
    }


def sandbox_json(sandbox: Sandbox, now: datetime) -> dict[str, Any]:
    return {
        "sandbox_id": sandbox.id,
        "tenant": sandbox.tenant,
        "integration": sandbox.integration_id,
        "delivery": sandbox.delivery.value,
        "status": sandbox.status(now),
        "created_at": iso(sandbox.created_at),
        "expires_at": iso(sandbox.expires_at),
        "revoked_at": iso(sandbox.revoked_at),
        "session_policy": sandbox.session_policy,
    }


@functools.lru_cache(maxsize=SESSION_CACHE_SIZE)
def container_credentials_json(credentials: AwsCredentials) -> bytes:
    """The container-credentials shape every AWS SDK reads: note `Token`, not `SessionToken`.

    Every sandbox of a session is vended the same credentials until they are refreshed, so each
    session's JSON is encoded once (the cache holds no more than the session cache already does).
    """
    body: dict[str, str] = {
        "AccessKeyId": credentials.access_key_id,
        "SecretAccessKey": credentials.secret_access_key,
        "Token": credentials.session_token,
        "Expiration": iso(credentials.expiration) or "",
    }
    if credentials.account_id:
        body["AccountId"] = credentials.account_id
    return json.dumps(body, separators=(",", ":")).encode()


class BrokerApi:
    """Routes of the internal listener that belong to the broker."""

    def __init__(
        self, *, auth: Authenticator, service: BrokerService, clock: Callable[[], datetime]
    ) -> None:
        self._auth = auth
        self._service = service
        self._clock = clock

    def routes(self) -> list[BaseRoute]:
        """Mounted before the issuer's routes: removing a tenant is the broker's job too."""
        base = "/v1/tenants/{slug}/integrations"
        return [
            Route("/v1/tenants/{slug}", self.remove_tenant, methods=["DELETE"]),
            Route(base, self.add_integration, methods=["POST"]),
            Route(base, self.list_integrations, methods=["GET"]),
            Route(base + "/{ref}", self.get_integration, methods=["GET"]),
            Route(base + "/{ref}", self.remove_integration, methods=["DELETE"]),
            Route(base + "/{ref}/setup", self.setup, methods=["GET"]),
            Route(base + "/{ref}/test", self.test_integration, methods=["POST"]),
            Route(base + "/{ref}/test", self.last_test, methods=["GET"]),
            Route("/v1/sandboxes", self.create_sandbox, methods=["POST"]),
            Route("/v1/sandboxes/{sandbox_id}", self.get_sandbox, methods=["GET"]),
            Route("/v1/sandboxes/{sandbox_id}", self.delete_sandbox, methods=["DELETE"]),
        ]

    async def add_integration(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        body = await read_json_object(request, INTEGRATION_FIELDS)
        fields: dict[str, Any] = {
            "name": required_str(body, "name"),
            "account_id": required_str(body, "account_id"),
            "role_arn": required_str(body, "role_arn"),
        }
        for name in ("region", "method", "target_role_arn", "profile"):
            if (value := optional_str(body, name)) is not None:
                fields[name] = value
        if (policy := _policy_text(body.get("session_policy"))) is not None:
            fields["session_policy"] = policy
        if (duration := optional_int(body, "session_duration")) is not None:
            fields["session_duration"] = duration
        integration = await self._service.add_integration(
            request.path_params["slug"], fields, request_id=request_id(request)
        )
        return JSONResponse(integration_json(integration), status_code=201)

    async def list_integrations(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        rows = await self._service.list_integrations(request.path_params["slug"])
        return JSONResponse({"integrations": [integration_json(i) for i in rows]})

    async def get_integration(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        integration = await self._service.get_integration(
            request.path_params["slug"], request.path_params["ref"]
        )
        return JSONResponse(integration_json(integration))

    async def remove_integration(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        integration, revoked = await self._service.remove_integration(
            request.path_params["slug"], request.path_params["ref"], request_id=request_id(request)
        )
        return JSONResponse(
            {"removed": integration.id, "revoked_sandboxes": revoked, "note": DISCONNECT_NOTE}
        )

    async def remove_tenant(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        removed, revoked = await self._service.remove_tenant(
            request.path_params["slug"], request_id=request_id(request)
        )
        return JSONResponse(
            {
                "removed": request.path_params["slug"],
                "removed_integrations": [i.id for i in removed],
                "revoked_sandboxes": revoked,
                "note": DISCONNECT_NOTE,
            }
        )

    async def test_integration(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        asked = request.query_params.get("profile")
        profile = None if asked is None else _choice(Profile, asked, "profile")
        report = await self._service.test_integration(
            request.path_params["slug"],
            request.path_params["ref"],
            profile=profile,
            request_id=request_id(request),
        )
        return JSONResponse(report.to_json())

    async def last_test(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        report = await self._service.last_test(
            request.path_params["slug"], request.path_params["ref"]
        )
        return JSONResponse(report.to_json())

    async def setup(self, request: Request) -> Response:
        await self._auth.require(request, Role.ADMIN)
        query = request.query_params
        output = await self._service.setup_for(
            request.path_params["slug"],
            request.path_params["ref"],
            format=_choice(Format, query.get("format", Format.CLI.value), "format"),
            profile=None
            if "profile" not in query
            else _choice(Profile, query["profile"], "profile"),
            policy=_choice(PolicyChoice, query.get("policy", PolicyChoice.PROFILE.value), "policy"),
            warrant_principal_arn=query.get("warrant_principal_arn"),
        )
        return JSONResponse(
            {
                "format": output.format.value,
                "setup": output.setup,
                "teardown": output.teardown,
                "our_side": output.our_side,
            }
        )

    async def create_sandbox(self, request: Request) -> Response:
        await self._auth.require(request, Role.AGENT)
        body = await read_json_object(request, SANDBOX_FIELDS)
        delivery_name = optional_str(body, "delivery") or Delivery.CONTAINER.value
        try:
            delivery = Delivery(delivery_name)
        except ValueError:
            raise BadRequest(
                f"delivery must be 'container' (default; refreshing) or 'env' "
                f"(static, never refreshed), not {delivery_name!r}"
            ) from None
        grant = await self._service.create_sandbox(
            tenant=required_str(body, "tenant"),
            integration_ref=required_str(body, "integration"),
            ttl_seconds=optional_int(body, "ttl_seconds"),
            session_policy=_policy_text(body.get("session_policy")),
            delivery=delivery,
            request_id=request_id(request),
        )
        payload = {
            "sandbox_id": grant.sandbox.id,
            "expires_at": iso(grant.sandbox.expires_at),
            "delivery": delivery.value,
            "env": grant.env,
        }
        if grant.credentials_expire_at is not None:
            payload["credentials_expire_at"] = iso(grant.credentials_expire_at)
            payload["note"] = ENV_DELIVERY_NOTE
        response = JSONResponse(payload, status_code=201)
        response.headers["cache-control"] = "no-store"
        return response

    async def get_sandbox(self, request: Request) -> Response:
        await self._auth.require(request, Role.AGENT)
        sandbox = await self._service.get_sandbox(request.path_params["sandbox_id"])
        return JSONResponse(sandbox_json(sandbox, self._clock()))

    async def delete_sandbox(self, request: Request) -> Response:
        await self._auth.require(request, Role.AGENT)
        sandbox = await self._service.delete_sandbox(
            request.path_params["sandbox_id"], request_id=request_id(request)
        )
        return JSONResponse(sandbox_json(sandbox, self._clock()))


def _choice(kind: type[E], value: str, name: str) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise BadRequest(f"{name}={value!r} is not one of: {allowed}") from None


def _policy_text(value: object) -> str | None:
    """A session policy may be sent as a JSON object or as its text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    raise BadRequest("session_policy must be a JSON object (an IAM policy document) or its text")


class CredentialsEndpoint:
    """GET /v1/credentials with the sandbox token as the raw Authorization value, exactly as
    AWS SDKs send AWS_CONTAINER_AUTHORIZATION_TOKEN."""

    def __init__(self, service: BrokerService) -> None:
        self._service = service

    async def handle(self, request: RawRequest) -> JsonAnswer:
        """The vend hot path, served raw (see issuer.fastpath)."""
        credentials = await self._service.vend(
            request.header(b"authorization") or "", request_id=request.request_id
        )
        return JsonAnswer(container_credentials_json(credentials), headers=_NO_STORE)


async def _sandbox_error(request: Request, exc: Exception) -> Response:
    """Sandboxes run untrusted code: an error says only what the caller can act on. Auth and
    input errors are answered as usual; upstream failures get a request id, and the log and the
    audit record hold the cause."""
    if isinstance(exc, HTTPException) or (
        isinstance(exc, IssuerError)
        and exc.status < 500
        and not isinstance(exc, CredentialsRejected)
    ):
        return await handle_error(request, exc)
    rid = request_id(request)
    log.warning("request %s: credentials not vended: %s: %s", rid, type(exc).__name__, exc)
    body = {
        "error": "credentials_unavailable",
        "message": "credentials are unavailable for this sandbox right now; the operator "
        f"can find the cause under request id {rid}",
        "request_id": rid,
    }
    if isinstance(exc, IssuerError) and exc.status == 503:
        retry = exc.retry_after if isinstance(exc, CredentialsUnavailable) else 5
        return JSONResponse(
            body, status_code=503, headers={"x-request-id": rid, "retry-after": str(retry)}
        )
    # AWS refused (or something broke): retrying will not help until the operator acts.
    return JSONResponse(body, status_code=502, headers={"x-request-id": rid})


def create_sandbox_app(service: BrokerService, metrics: Metrics) -> HotRoutes:
    """The sandbox-facing listener: GET /v1/credentials (served hot), nothing else."""
    handlers: dict[Any, Any] = {
        Exception: _sandbox_error,
        IssuerError: _sandbox_error,
        HTTPException: _sandbox_error,
    }
    app = Starlette(
        routes=[
            Route(
                "/v1/credentials",
                JsonEndpoint(CredentialsEndpoint(service).handle),
                methods=["GET"],
            )
        ],
        exception_handlers=handlers,
        middleware=[Middleware(metrics.middleware("sandbox"))],
    )
    return HotRoutes(app, metrics, "sandbox")
