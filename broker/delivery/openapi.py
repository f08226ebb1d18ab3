"""The broker's routes in the internal listener's OpenAPI document (see `issuer.openapi`), and the
whole document as `warrant serve` composes it: the issuer's routes, then the broker's."""

from __future__ import annotations

from typing import Any

from broker.model import Delivery, Method
from broker.setup import Format, PolicyChoice, Profile
from broker.validation import (
    ACCOUNT_RULE,
    NAME_MAX_CHARS,
    POLICY_MAX_CHARS,
    REGION_RULE,
    ROLE_ARN_MAX_CHARS,
    ROLE_ARN_RULE,
    STS_MAX_DURATION,
    STS_MIN_DURATION,
)
from issuer.openapi import (
    SLUG,
    TIME,
    Schema,
    array,
    document,
    issuer_paths,
    json_body,
    nullable,
    obj,
    operation,
    path_param,
    query_param,
    ref,
    response,
)

__all__ = ["broker_paths", "internal_document"]

_STR = {"type": "string"}
_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": NAME_MAX_CHARS,
    "description": "printable, without leading or trailing spaces",
}
# The server's own patterns (broker.validation), in ECMA-262 syntax with \\w spelled out in ASCII.
_IAM_CHARS = "[A-Za-z0-9_+=,.@-]"
_ROLE_ARN = {
    "type": "string",
    "pattern": rf"^arn:(aws|aws-cn|aws-us-gov):iam::[0-9]{{12}}:role/({_IAM_CHARS}+/)*"
    rf"{_IAM_CHARS}{{1,64}}$",
    "maxLength": ROLE_ARN_MAX_CHARS,
    "description": ROLE_ARN_RULE,
}
_ACCOUNT = {"type": "string", "pattern": "^[0-9]{12}$", "description": ACCOUNT_RULE}
_REGION = {
    "type": "string",
    "pattern": "^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$",
    "description": f"{REGION_RULE}; it must lie in the role ARN's partition",
}
_POLICY = {
    "anyOf": [{"type": "object"}, {"type": "string"}, {"type": "null"}],
    "description": "an IAM policy document (object or its JSON text) that narrows the session; "
    f"merged with the read-only guard it must fit STS's {POLICY_MAX_CHARS} characters",
}


def _enum(kind: Any) -> Schema:
    return {"enum": [member.value for member in kind]}


_INTEGRATION = obj(
    {
        "id": _STR,
        "tenant": SLUG,
        "name": _STR,
        "account_id": _STR,
        "role_arn": _STR,
        "region": _STR,
        "method": _enum(Method),
        "target_role_arn": nullable(_STR),
        "external_id": nullable(_STR),
        "session_duration": {"type": "integer"},
        "session_policy": nullable(_STR),
        "profile": _enum(Profile),
        "created_at": TIME,
    }
)
_SANDBOX = obj(
    {
        "sandbox_id": _STR,
        "tenant": SLUG,
        "integration": _STR,
        "delivery": _enum(Delivery),
        "status": {"enum": ["active", "expired", "revoked"]},
        "created_at": TIME,
        "expires_at": TIME,
        "revoked_at": nullable(TIME),
        "session_policy": nullable(_STR),
    }
)
_REPORT = obj(
    {
        "integration": _STR,
        "profile": _enum(Profile),
        "status": {"enum": ["active", "failed"]},
        "tested_at": TIME,
        "account": nullable(_STR),
        "assumed_role_arn": nullable(_STR),
        "error": nullable(_STR),
        "diagnosis": nullable({"type": "object"}),
        "capabilities": array(
            obj(
                {
                    "capability": _STR,
                    "status": {"enum": ["allowed", "denied", "error"]},
                    "detail": _STR,
                }
            )
        ),
    }
)


def broker_paths() -> dict[str, dict[str, Schema]]:
    """The broker's routes on the internal listener (`broker.delivery.http.BrokerApi.routes`)."""
    slug = path_param("slug", "the tenant's slug", SLUG)
    integration_ref = path_param("ref", "the integration's id (`int_...`) or name")
    sandbox_id = path_param("sandbox_id", "the sandbox's id (`sbx_...`)")
    profile = query_param(
        "profile", "capability profile; default: the integration's", _enum(Profile)
    )
    base = "/v1/tenants/{slug}/integrations"
    integration = response("the integration", ref("Integration"))
    sandbox = response("the sandbox (no secrets)", ref("Sandbox"))
    report = response("the connection report", ref("ConnectionReport"))
    note = {"type": "string", "description": "how to cut off credentials STS already issued"}
    return {
        "/v1/tenants/{slug}": {
            "delete": operation(
                "Remove a tenant",
                role="admin",
                description="Revokes its sandboxes at once and removes its integrations.",
                parameters=[slug],
                responses={
                    200: response(
                        "what was removed",
                        obj(
                            {
                                "removed": SLUG,
                                "removed_integrations": array(_STR),
                                "revoked_sandboxes": array(_STR),
                                "note": note,
                            }
                        ),
                    )
                },
                errors=(400, 404),
            )
        },
        base: {
            "post": operation(
                "Add an integration",
                role="admin",
                parameters=[slug],
                body=json_body(
                    {
                        "name": _NAME,
                        "account_id": _ACCOUNT,
                        "role_arn": _ROLE_ARN,
                        "region": nullable(_REGION),
                        "method": nullable(_enum(Method)),
                        "target_role_arn": nullable(_ROLE_ARN),
                        "session_duration": nullable(
                            {
                                "type": "integer",
                                "minimum": STS_MIN_DURATION,
                                "maximum": STS_MAX_DURATION,
                                "description": "seconds (STS's range); at most 3600 with "
                                "target_role_arn (role chaining); default 3600",
                            }
                        ),
                        "session_policy": _POLICY,
                        "profile": nullable(_enum(Profile)),
                    },
                    required=["name", "account_id", "role_arn"],
                ),
                responses={201: integration},
                errors=(400, 404, 409),
            ),
            "get": operation(
                "List integrations",
                role="admin",
                parameters=[slug],
                responses={
                    200: response(
                        "the tenant's integrations, by name",
                        obj({"integrations": array(ref("Integration"))}),
                    )
                },
                errors=(400, 404),
            ),
        },
        base + "/{ref}": {
            "get": operation(
                "Get an integration",
                role="admin",
                description="Another tenant's integration is 404.",
                parameters=[slug, integration_ref],
                responses={200: integration},
                errors=(400, 404),
            ),
            "delete": operation(
                "Remove an integration",
                role="admin",
                description="Revokes its sandboxes at once and drops its cached sessions.",
                parameters=[slug, integration_ref],
                responses={
                    200: response(
                        "what was removed",
                        obj({"removed": _STR, "revoked_sandboxes": array(_STR), "note": note}),
                    )
                },
                errors=(400, 404),
            ),
        },
        base + "/{ref}/setup": {
            "get": operation(
                "Setup for the customer's account",
                role="admin",
                description="What the customer's cloud admin runs, and the teardown.",
                parameters=[
                    slug,
                    integration_ref,
                    query_param("format", "output format; default cli", _enum(Format)),
                    profile,
                    query_param(
                        "policy", "permissions policy; default profile", _enum(PolicyChoice)
                    ),
                    query_param(
                        "warrant_principal_arn",
                        "instance_role only: the ARN of Warrant's own role",
                        _ROLE_ARN,
                    ),
                ],
                responses={
                    200: response(
                        "setup and teardown",
                        obj(
                            {
                                "format": _enum(Format),
                                "setup": _STR,
                                "teardown": _STR,
                                "our_side": nullable(_STR),
                            }
                        ),
                    )
                },
                errors=(400, 404),
            )
        },
        base + "/{ref}/test": {
            "post": operation(
                "Test the connection",
                role="admin",
                description="Obtains credentials the real way and probes the profile's "
                "capabilities; a failure is a report with status `failed`, not an error.",
                parameters=[slug, integration_ref, profile],
                responses={200: report},
                errors=(400, 404),
            ),
            "get": operation(
                "Last connection test",
                role="admin",
                parameters=[slug, integration_ref],
                responses={200: report},
                errors=(400, 404),
            ),
        },
        "/v1/sandboxes": {
            "post": operation(
                "Create a sandbox",
                role="agent",
                description="With `container` delivery the session is obtained first: when AWS "
                "refuses, 403 `credentials_rejected` carries STS's code, a hint and a `diagnosis`.",
                body=json_body(
                    {
                        "tenant": SLUG,
                        "integration": {"type": "string", "description": "id or name"},
                        "ttl_seconds": nullable(
                            {
                                "type": "integer",
                                "minimum": 60,
                                "description": "seconds; default and maximum are "
                                "WARRANT_SANDBOX_DEFAULT_TTL and WARRANT_SANDBOX_MAX_TTL",
                            }
                        ),
                        "session_policy": _POLICY,
                        "delivery": nullable(_enum(Delivery)),
                    },
                    required=["tenant", "integration"],
                ),
                responses={
                    201: response(
                        "the sandbox's environment (holds a secret: show it once)",
                        obj(
                            {
                                "sandbox_id": _STR,
                                "expires_at": TIME,
                                "delivery": _enum(Delivery),
                                "env": {"type": "object", "additionalProperties": _STR},
                                "credentials_expire_at": TIME,
                                "note": _STR,
                            },
                            required=["sandbox_id", "expires_at", "delivery", "env"],
                        ),
                    )
                },
                errors=(400, 404),
            )
        },
        "/v1/sandboxes/{sandbox_id}": {
            "get": operation(
                "Get a sandbox",
                role="agent",
                parameters=[sandbox_id],
                responses={200: sandbox},
                errors=(404,),
            ),
            "delete": operation(
                "Delete a sandbox",
                role="agent",
                description="Revoked at once: its token's next request is refused.",
                parameters=[sandbox_id],
                responses={200: sandbox},
                errors=(404,),
            ),
        },
    }


def internal_document() -> Schema:
    """The document `warrant serve` publishes on the internal listener."""
    return document(
        issuer_paths(),
        broker_paths(),
        schemas={"Integration": _INTEGRATION, "Sandbox": _SANDBOX, "ConnectionReport": _REPORT},
    )
