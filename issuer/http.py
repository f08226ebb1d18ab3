"""HTTP plumbing shared by the listeners: JSON bodies in, JSON errors out, one mapping from our
exceptions to statuses. Clients see a message that says what to fix; a 5xx shows only a request
id, and the detail goes to the log (never a secret)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from issuer.errors import BadRequest, Conflict, IssuerError, NotFound, Unavailable
from issuer.logs import bind_request_id
from keys.errors import KeysError, KeyStoreLocked, RotationRefused, UnknownKey
from keys.kms import KmsUnavailable

log = logging.getLogger(__name__)

# Requests to the internal API are small JSON objects; anything bigger is a mistake or an attack.
MAX_BODY_BYTES = 64 * 1024
# No request nests deeper than an inline IAM policy does (about 7 levels); a deeper body is a
# mistake or an attack, and would reach Python's recursion limit in json somewhere downstream.
MAX_JSON_DEPTH = 32
_TOO_DEEP = f"request body nests lists and objects more than {MAX_JSON_DEPTH} levels deep"


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
    if isinstance(exc, KeyStoreLocked | KmsUnavailable):
        return Unavailable(str(exc))
    if isinstance(exc, KeysError):
        return IssuerError("the key store refused the change; see the server log")
    return IssuerError("internal error")


def _log_failure(request: Request, rid: str, exc: Exception, error: IssuerError) -> None:
    if error.status == 503 and error is exc:
        # Raised as a 503 on purpose (STS unreachable or throttled, the audit log unwritable,
        # the AWS SDK misconfigured): its message says what happened and is safe to show; a
        # traceback per refused request during an outage would bury the log.
        log.error("request %s %s %s unavailable: %s", rid, request.method, request.url.path, exc)
        return
    log.error(
        "request %s %s %s failed: %s",
        rid,
        request.method,
        request.url.path,
        type(exc).__name__,
        exc_info=exc,
    )


async def handle_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {
            404: f"no such endpoint: {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request)  # replaces Starlette's (same name)
            message += f"; allowed: {headers['Allow']}"
        return error_response(exc.status_code, code, message, headers=headers)
    error = translate(exc)
    rid = request_id(request)
    extra: dict[str, Any] = {}
    headers = {"x-request-id": rid}
    if isinstance(exc, RotationRefused) and exc.safe_at is not None:
        extra["safe_at"] = iso(exc.safe_at)
    if error.status >= 500:
        _log_failure(request, rid, exc, error)
        message = error.message if error is exc else "internal error"
        if error.status == 503:
            # The broker's CredentialsUnavailable knows when its backoff ends (up to minutes);
            # a retry before then is refused again. Anything else: try again shortly.
            headers["retry-after"] = str(getattr(error, "retry_after", 5))
            message = error.message
        extra["request_id"] = rid
        return error_response(error.status, error.code, message, extra=extra, headers=headers)
    if error.status == 401:
        headers["www-authenticate"] = "Bearer"
    extra.update(error.details)
    return error_response(error.status, error.code, error.message, extra=extra, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method the requested path supports. Starlette's 405 lists only those of the first
    route whose path matched, but ours are one route per method, and RFC 9110 wants them all."""
    methods: set[str] = set()
    for route in getattr(request.scope.get("router"), "routes", ()):
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


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


def nesting(value: object) -> int:
    """How deeply `value` nests lists and objects (a scalar is 0), counted without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is not None:
            deepest = max(deepest, depth)
            pending.extend((child, depth + 1) for child in children)
    return deepest


def parse_json_object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """`raw` as a JSON object with only the `allowed` members (empty means {})."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(_TOO_DEEP) from None
    except ValueError:  # an integer beyond Python's int/str conversion limit (CVE-2020-10735)
        raise BadRequest(
            f"request body has a number of more than {sys.get_int_max_str_digits()} digits; "
            f"no field takes one"
        ) from None
    if nesting(value) > MAX_JSON_DEPTH:
        raise BadRequest(_TOO_DEEP)
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
        shown = json.dumps(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise BadRequest(f"{name} must be an integer, without a decimal point, not {shown}")
    return value


def optional_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value
