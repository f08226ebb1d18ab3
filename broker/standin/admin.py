"""The stand-in's own API under `/_standin/` (not AWS): principals, faults, stats, reset.

POST   /_standin/principals        {"access_key_id", "arn", ["role_arn",
                                    "secret_access_key", "session_token", "expires_at"]}
DELETE /_standin/principals/{akid}
POST   /_standin/faults            {"mode": "none"|"throttle"|"unavailable"|"idp_unreachable"|
                                    "jwks_unreachable"|"region_disabled"|"slow",
                                    "actions": [...]?, "remaining": n|null, "delay": seconds}
GET    /_standin/faults
GET    /_standin/stats             {"AssumeRoleWithWebIdentity": {"ok": n, "<Code>": m}, ...}
POST   /_standin/reset             clears stats, faults and cached IdP documents
GET    /_standin/health
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.standin.faults import FaultPlan
from broker.standin.gate import Gate
from broker.standin.model import Principal

__all__ = ["ADMIN_PREFIX", "admin_routes"]

ADMIN_PREFIX = "/_standin"

GateGetter = Callable[[Request], Gate]


class _BadInput(ValueError):
    pass


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _BadInput("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _BadInput("the body must be a JSON object")
    return body


def _string(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise _BadInput(f"{name} must be a non-empty string")
    return value


def _principal(body: dict[str, Any]) -> Principal:
    expires = _string(body, "expires_at")
    try:
        expires_at = None if expires is None else datetime.fromisoformat(expires)
    except ValueError:
        raise _BadInput("expires_at must be an ISO 8601 date-time") from None
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    return Principal(
        access_key_id=str(_string(body, "access_key_id", required=True)),
        arn=str(_string(body, "arn", required=True)),
        role_arn=_string(body, "role_arn"),
        role_session=False,
        secret_access_key=_string(body, "secret_access_key"),
        session_token=_string(body, "session_token"),
        expires_at=expires_at,
    )


def _plan(body: dict[str, Any]) -> FaultPlan:
    actions = body.get("actions")
    if actions is not None and (
        not isinstance(actions, list) or not all(isinstance(a, str) for a in actions)
    ):
        raise _BadInput("actions must be a list of action names")
    remaining = body.get("remaining")
    if remaining is not None and (isinstance(remaining, bool) or not isinstance(remaining, int)):
        raise _BadInput("remaining must be an integer or null")
    delay = body.get("delay", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise _BadInput("delay must be a number of seconds")
    try:
        return FaultPlan.build(str(body.get("mode")), actions, remaining, float(delay))
    except ValueError as exc:
        raise _BadInput(f"bad fault plan: {exc}") from None


def _plan_json(plan: FaultPlan) -> dict[str, Any]:
    return {
        "mode": plan.mode.value,
        "actions": sorted(plan.actions),
        "remaining": plan.remaining,
        "delay": plan.delay,
    }


def admin_routes(gate_of: GateGetter) -> list[Route]:
    def endpoint(
        handler: Callable[[Gate, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(gate_of(request), request)
            except _BadInput as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return run

    async def add_principal(gate: Gate, request: Request) -> Response:
        principal = _principal(await _json_object(request))
        gate.principals.record(principal)
        return JSONResponse(
            {"access_key_id": principal.access_key_id, "arn": principal.arn}, status_code=201
        )

    async def remove_principal(gate: Gate, request: Request) -> Response:
        found = gate.principals.forget(request.path_params["access_key_id"])
        return Response(status_code=204 if found else 404)

    async def set_faults(gate: Gate, request: Request) -> Response:
        plan = _plan(await _json_object(request))
        gate.faults.set(plan)
        return JSONResponse(_plan_json(plan))

    async def get_faults(gate: Gate, request: Request) -> Response:
        return JSONResponse(_plan_json(gate.faults.plan))

    async def stats(gate: Gate, request: Request) -> Response:
        return JSONResponse(gate.stats.snapshot())

    async def reset(gate: Gate, request: Request) -> Response:
        gate.reset()
        return Response(status_code=204)

    async def health(gate: Gate, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    p = ADMIN_PREFIX
    return [
        Route(f"{p}/principals", endpoint(add_principal), methods=["POST"]),
        Route(f"{p}/principals/{{access_key_id}}", endpoint(remove_principal), methods=["DELETE"]),
        Route(f"{p}/faults", endpoint(set_faults), methods=["POST"]),
        Route(f"{p}/faults", endpoint(get_faults), methods=["GET"]),
        Route(f"{p}/stats", endpoint(stats), methods=["GET"]),
        Route(f"{p}/reset", endpoint(reset), methods=["POST"]),
        Route(f"{p}/health", endpoint(health), methods=["GET"]),
    ]
