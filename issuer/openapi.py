"""The internal listener's OpenAPI 3.1 document, served at `GET /openapi.json`.

Each package describes its own routes as OpenAPI path items (the issuer's are here, the broker's
in `broker.delivery.openapi`); `document(...)` joins them under one set of components. The
document describes the API and reveals no data, so it needs no key. A test compares it with the
routes of the composed app in both directions, so neither can drift from the other.

Request bodies say `additionalProperties: false` because the server refuses unknown members;
every error answer is the `Error` schema (`{"error", "message"}`, the message saying what to fix).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from issuer.tenants import NAME_MAX_CHARS, SLUG_RULE
from keys.model import Algorithm, KeyState

__all__ = [
    "OPENAPI_PATH",
    "ROLE_EXTENSION",
    "SLUG",
    "TIME",
    "Schema",
    "array",
    "document",
    "issuer_paths",
    "json_body",
    "nullable",
    "obj",
    "openapi_route",
    "operation",
    "path_param",
    "query_param",
    "ref",
    "response",
]

OPENAPI_PATH = "/openapi.json"
# Which API key role an operation needs, machine-readable (the description says it in words).
ROLE_EXTENSION = "x-warrant-role"

Schema = dict[str, Any]

# Error answers by status; an operation lists the ones it can give.
_ERRORS = {
    400: ("BadRequest", "the input breaks a rule; `message` names the field and the rule"),
    401: ("Unauthenticated", "missing or unknown API key"),
    403: ("Forbidden", "the API key has another role (or AWS refused, where noted)"),
    404: ("NotFound", "no such resource; `message` says what was looked up"),
    409: ("Conflict", "the change conflicts with the current state; `message` says which"),
    503: ("Unavailable", "a dependency (database, audit log, STS) is down; retry after"),
}
_AUTH_ERRORS = (401, 403, 503)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(properties: Mapping[str, Schema], *, required: Iterable[str] | None = None) -> Schema:
    """A response object: every property present unless `required` says otherwise."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(properties if required is None else required),
    }


def json_body(
    properties: Mapping[str, Schema], *, required: Sequence[str] = (), optional: bool = False
) -> Schema:
    """A JSON object request body; unknown members are refused (400), as the server does."""
    schema = {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": False,
    }
    return {"required": not optional, "content": {"application/json": {"schema": schema}}}


def response(
    description: str, schema: Schema | None = None, media: str = "application/json"
) -> Schema:
    answer: Schema = {"description": description}
    if schema is not None:
        answer["content"] = {media: {"schema": schema}}
    return answer


def path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def query_param(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def operation(
    summary: str,
    *,
    role: str | None,
    responses: Mapping[int, Schema],
    errors: Iterable[int] = (),
    parameters: Sequence[Schema] = (),
    body: Schema | None = None,
    description: str | None = None,
) -> Schema:
    """One operation. `role` None means no key is needed; otherwise 401, 403 and 503 are added to
    `errors`, and the role is stated in the description and in `x-warrant-role`."""
    op: Schema = {"summary": summary, "operationId": _operation_id(summary)}
    text = [description] if description else []
    if role is None:
        op["security"] = []
    else:
        op["security"] = [{"bearer": []}]
        op[ROLE_EXTENSION] = role
        text.append(f"Needs an API key with role `{role}`.")
        errors = (*errors, *_AUTH_ERRORS)
    if text:
        op["description"] = " ".join(text)
    if parameters:
        op["parameters"] = list(parameters)
    if body is not None:
        op["requestBody"] = body
    answers = {str(status): answer for status, answer in responses.items()}
    for status in sorted(set(errors)):
        answers.setdefault(str(status), {"$ref": f"#/components/responses/{_ERRORS[status][0]}"})
    op["responses"] = answers
    return op


def document(
    *contributions: Mapping[str, Mapping[str, Schema]], schemas: Mapping[str, Schema] | None = None
) -> Schema:
    """The whole document: `contributions` are path items (path -> method -> operation); a later
    one replaces an earlier one's operation for the same path and method, as the routes of a
    layer above take over ours (the broker's tenant removal). `schemas` join the components."""
    paths: dict[str, dict[str, Schema]] = {}
    for contribution in contributions:
        for path, methods in contribution.items():
            paths.setdefault(path, {}).update(methods)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Warrant internal API",
            "version": "v1",  # the API's version, as in its paths
            "description": "Agents (role `agent`) mint tokens and manage sandboxes; operators "
            "(role `admin`) manage tenants, keys and integrations. Every error is JSON "
            '`{"error": "<code>", "message": "<what to fix>"}`; a 5xx carries only a request id.',
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Warrant API key, `wrn_<role>_<43 base64url chars>`. The role "
                    "(`admin` or `agent`) must be the one the operation names: another role gets "
                    "403, a missing or unknown key 401.",
                }
            },
            "schemas": {**_SCHEMAS, **(schemas or {})},
            "responses": {
                name: response(description, ref("Error")) for name, description in _ERRORS.values()
            },
        },
    }


def openapi_route(spec: Mapping[str, Any]) -> Route:
    """`GET /openapi.json`: the document, encoded once."""
    body = json.dumps(spec, separators=(",", ":")).encode()

    def serve(_: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route(OPENAPI_PATH, serve, methods=["GET"])


def _operation_id(summary: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in summary).split()
    return words[0].lower() + "".join(w.capitalize() for w in words[1:])


TIME = {"type": "string", "format": "date-time"}
SLUG = {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$",
    "description": SLUG_RULE,
}
_SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "minLength": 1, "description": "a stable code"},
            "message": {"type": "string", "minLength": 1, "description": "what to fix"},
            "request_id": {"type": "string", "description": "5xx: the log has the detail"},
            "safe_at": {**TIME, "description": "409 on rotation: when it becomes safe"},
            "diagnosis": {"type": "object", "description": "what AWS must be told"},
        },
    },
    "Tenant": obj(
        {
            "slug": SLUG,
            "name": {"type": "string"},
            "audience": {"type": "string", "description": "`<slug>-oidc-service`"},
            "created_at": TIME,
        }
    ),
    "Key": obj(
        {
            "kid": {"type": "string"},
            "alg": {"enum": [a.value for a in Algorithm]},
            "state": {"enum": [s.value for s in KeyState]},
            "created_at": nullable(TIME),
            "activated_at": nullable(TIME),
            "retired_at": nullable(TIME),
            "revoked_at": nullable(TIME),
            "retire_after": nullable(TIME),
        }
    ),
}


def issuer_paths() -> dict[str, dict[str, Schema]]:
    """The issuer's routes on the internal listener (`issuer.app.InternalApi.routes`)."""
    slug = path_param("slug", "the tenant's slug", SLUG)
    tenant = response("the tenant", ref("Tenant"))
    readiness = obj(
        {"ready": {"type": "boolean"}, "checks": {"additionalProperties": {"type": "boolean"}}}
    )
    return {
        "/v1/tokens": {
            "post": operation(
                "Mint a token",
                role="agent",
                description="`sub` is `tenant:<slug>` or `tenant:<slug>:<subject>`.",
                body=json_body(
                    {
                        "tenant": SLUG,
                        "subject": nullable(
                            {"type": "string", "pattern": "^[A-Za-z0-9._@:+=-]{1,200}$"}
                        ),
                        "ttl_seconds": nullable(
                            {
                                "type": "integer",
                                "minimum": 60,
                                "description": "default 300; at most WARRANT_TOKEN_MAX_TTL",
                            }
                        ),
                    },
                    required=["tenant"],
                ),
                responses={
                    200: response(
                        "the token",
                        obj(
                            {
                                "token": {"type": "string"},
                                "expires_at": TIME,
                                "kid": {"type": "string"},
                            }
                        ),
                    )
                },
                errors=(400, 404),
            )
        },
        "/v1/tenants": {
            "get": operation(
                "List tenants",
                role="admin",
                responses={
                    200: response("every tenant, by slug", obj({"tenants": array(ref("Tenant"))}))
                },
            ),
            "post": operation(
                "Add a tenant",
                role="admin",
                body=json_body(
                    {
                        "slug": SLUG,
                        "name": nullable(
                            {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": NAME_MAX_CHARS,
                                "description": "printable, not only spaces; default: the slug",
                            }
                        ),
                    },
                    required=["slug"],
                ),
                responses={201: tenant},
                errors=(400, 409),
            ),
        },
        "/v1/tenants/{slug}": {
            "get": operation(
                "Get a tenant",
                role="admin",
                parameters=[slug],
                responses={200: tenant},
                errors=(400, 404),
            ),
        },
        "/v1/keys": {
            "get": operation(
                "List keys",
                role="admin",
                responses={200: response("every key record", obj({"keys": array(ref("Key"))}))},
            )
        },
        "/v1/keys/rotate": {
            "post": operation(
                "Rotate keys",
                role="admin",
                description="Promotes the oldest safely pre-published key; 409 with `safe_at` "
                "when none is safe yet, unless `force`.",
                body=json_body({"force": {"type": "boolean"}}, optional=True),
                responses={
                    200: response(
                        "the outcome",
                        obj(
                            {
                                "active_kid": {"type": "string"},
                                "retired_kid": nullable({"type": "string"}),
                                "forced": {"type": "boolean"},
                                "warning": nullable({"type": "string"}),
                            }
                        ),
                    )
                },
                errors=(400, 409),
            )
        },
        "/v1/keys/prune": {
            "post": operation(
                "Prune keys",
                role="admin",
                description="Removes retired keys past their retire-after time.",
                responses={
                    200: response("the removed kids", obj({"removed": array({"type": "string"})}))
                },
            )
        },
        "/v1/keys/{kid}/revoke": {
            "post": operation(
                "Revoke a key",
                role="admin",
                description="Emergency: drops the key from the JWKS at once.",
                parameters=[path_param("kid", "the key's id")],
                responses={
                    200: response(
                        "the outcome",
                        obj(
                            {
                                "revoked_kid": {"type": "string"},
                                "active_kid": {"type": "string"},
                                "message": {"type": "string"},
                            }
                        ),
                    )
                },
                errors=(404, 409),
            )
        },
        "/healthz": {
            "get": operation(
                "Liveness",
                role=None,
                responses={200: response("alive", obj({"status": {"const": "ok"}}))},
            ),
            "head": operation(
                "Liveness (headers only)", role=None, responses={200: response("alive")}
            ),
        },
        "/readyz": {
            "get": operation(
                "Readiness",
                role=None,
                description="Answers within 2 s even when the database is unreachable.",
                responses={
                    200: response("ready", readiness),
                    503: response("not ready; `checks` says what failed", readiness),
                },
            ),
            "head": operation(
                "Readiness (headers only)",
                role=None,
                responses={200: response("ready"), 503: response("not ready")},
            ),
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics",
                role=None,
                responses={200: response("Prometheus text", {"type": "string"}, "text/plain")},
            )
        },
        OPENAPI_PATH: {
            "get": operation(
                "This document",
                role=None,
                responses={200: response("OpenAPI 3.1", {"type": "object"})},
            )
        },
    }
