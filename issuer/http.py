"""HTTP plumbing shared by the listeners: JSON bodies in, JSON errors out, one mapping from our
exceptions to statuses. Clients see a message that says what to fix; a 5xx shows only a request
id, and the detail goes to the log (never a secret)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from issuer.errors import BadRequest, Conflict, IssuerError, NotFound, Unavailable
from issuer.logs import bind_request_id
from keys.errors import KeysError, KeyStoreLocked, RotationRefused, UnknownKey

log = logging.getLogger(__name__)

# Requests to the internal API are small JSON objects; anything bigger is a mistake or an attack.
MAX_BODY_BYTES = 64 * 1024


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a Z and whole seconds, the shape AWS SDKs parse."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime; Warrant keeps every timestamp timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def request_id(request: Request) -> str:
    return bind_request_id(request.scope)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if extra:
        body.update(extra)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def translate(exc: Exception) -> IssuerError:
    """Every exception a handler lets through, as the IssuerError a client may see."""
    if isinstance(exc, IssuerError):
        return exc
    if isinstance(exc, UnknownKey):
        return NotFound(str(exc))
    if isinstance(exc, RotationRefused):
        return Conflict(str(exc))
    if isinstance(exc, KeyStoreLocked):
        return Unavailable(str(exc))
    if isinstance(exc, KeysError):
        return IssuerError("the key store refused the change; see the server log")
    return IssuerError("internal error")


async def handle_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {
            404: f"no such endpoint: {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, code, message, headers=exc.headers)
    error = translate(exc)
    rid = request_id(request)
    extra: dict[str, Any] = {}
    headers = {"x-request-id": rid}
    if isinstance(exc, RotationRefused) and exc.safe_at is not None:
        extra["safe_at"] = iso(exc.safe_at)
    if error.status >= 500:
        log.error(
            "request %s %s %s failed: %s",
            rid,
            request.method,
            request.url.path,
            type(exc).__name__,
            exc_info=exc,
        )
        message = error.message if error is exc else "internal error"
        if error.status == 503:
            headers["retry-after"] = "5"
            message = error.message
        extra["request_id"] = rid
        return error_response(error.status, error.code, message, extra=extra, headers=headers)
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    extra.update(error.details)
    return error_response(error.status, error.code, error.message, extra=extra, headers=headers)


async def read_json_object(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object with only the `allowed` members; BadRequest says what is wrong."""
    check_declared_length(request.headers.get("content-length"))
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise BadRequest(f"request body must be at most {MAX_BODY_BYTES} bytes")
    return parse_json_object(raw, allowed)


def check_declared_length(declared: str | None) -> None:
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadRequest(f"request body must be at most {MAX_BODY_BYTES} bytes")


def parse_json_object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """`raw` as a JSON object with only the `allowed` members (empty means {})."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(sorted(allowed)) or 'none'}"
        )
    return value


def optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"{name} must be a string")


def required_str(body: Mapping[str, Any], name: str) -> str:
    value = optional_str(body, name)
    if value is None:
        raise BadRequest(f"{name} is required")
    return value


def optional_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer")
    return value


def optional_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value
