"""schemathesis against a real `warrant serve`: every operation of the internal listener's OpenAPI
document, with generated valid and invalid input, never answers 5xx, answers what the document
says, and every 4xx is JSON whose `message` says what to fix.

The server runs in dev mode on SQLite in front of the strict STS stand-in (tests.broker.world),
with tenants `acme` and `globex` and acme's working integration `prod`. `test_generated_input`
sends what schemathesis generates (coverage and fuzzing phases) with the operation's key;
`test_real_identifiers_any_key` puts real identifiers into schema-valid cases, so generated input
reaches past "no such tenant" into each handler's own rules, and sends any key. Operations that
delete get fresh resources of their own, so the shared ones survive for the other cases.

The schema is built from the same function the server serves (a test below compares the served
bytes): schemathesis's lazy `from_fixture` loader fails under pytest 9.2 (it sets a removed
`_nodeid`), and `from_url` at import time would need the server before collection.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import CHECKS, load_all_checks

from broker.delivery.openapi import internal_document
from issuer.openapi import ROLE_EXTENSION
from tests.broker.world import ACCOUNT, World, open_world

pytestmark = pytest.mark.slow

# Per operation and test, for the fuzzing phase; with the coverage phase's fixed cases the whole
# module stays well under a minute.
SETTINGS: dict[str, Any] = {
    "max_examples": 10,
    "deadline": None,
    "database": None,  # nothing written into the working tree; a failure prints its reproducer
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much],
}
SHARED_TENANTS = ("acme", "globex")
REQUIRED_MEMBERS = {"tenant", "integration", "name", "account_id", "role_arn", "slug"}
# Messages that name no field, rule or remedy: a client could not act on them.
GENERIC = re.compile(
    r"(bad request|invalid( input| request)?|error|not found|forbidden|unauthorized|conflict|"
    r"method not allowed|unprocessable entity|validation (error|failed))\W*",
    re.IGNORECASE,
)

# The document the server publishes (test_openapi checks the served bytes are these).
schema = schemathesis.openapi.from_dict(internal_document())


@schemathesis.check
def helpful_client_error(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx is JSON `{"error", "message", ...}` and the message says what to fix."""
    if not 400 <= response.status_code < 500:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
        f"a {response.status_code} must be JSON"
    )
    body = response.json()
    assert isinstance(body, dict), "an error body is a JSON object"
    assert isinstance(body.get("error"), str), "an error body has a string `error` code"
    assert body["error"], "the `error` code is not empty"
    message = body.get("message")
    assert isinstance(message, str), "an error body has a string `message`"
    assert len(message.split()) >= 3, f"{message!r} is too short to say what to fix"
    assert not GENERIC.fullmatch(message), f"{message!r} does not say what to fix"
    if response.status_code == 401:
        assert response.headers.get("www-authenticate") == ["Bearer"], "a 401 names its scheme"
    return True


# Everything schemathesis checks on a response, except `positive_data_acceptance`: some of the
# server's rules span fields or need state (a role ARN's account must equal account_id, the region
# must lie in the ARN's partition, a session policy must fit STS's 2048 characters once merged with
# the read-only guard), which JSON Schema cannot state, so schema-valid input may rightly be 400.
load_all_checks()
CHECK_FUNCTIONS = [
    check
    for name, check in zip(CHECKS.get_all_names(), CHECKS.get_all(), strict=True)
    if name != "positive_data_acceptance" and not isinstance(check, type)
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with open_world(tmp_path_factory.mktemp("warrant"), "fuzz-reader") as world:
        yield world


@pytest.fixture(scope="module")
def prod_id(world: World) -> str:
    response = world.admin("GET", "/v1/tenants/acme/integrations/prod")
    assert response.status_code == 200, response.text
    integration_id: str = response.json()["id"]
    return integration_id


def _fresh_tenant(world: World) -> str:
    slug = f"fz-{uuid.uuid4().hex[:12]}"
    world.tenant(slug)
    return slug


def _fresh_integration(world: World) -> dict[str, Any]:
    return world.integration("acme", f"fz-{uuid.uuid4().hex[:12]}", "fuzz-reader")


def _fresh_sandbox(world: World) -> str:
    sandbox_id: str = world.sandbox("acme", "prod")["sandbox_id"]
    return sandbox_id


def _kids(world: World) -> list[str]:
    response = world.admin("GET", "/v1/keys")
    assert response.status_code == 200, response.text
    return [key["kid"] for key in response.json()["keys"]]


def _use_real_identifiers(case: Case[Any], world: World, prod_id: str, data: st.DataObject) -> None:
    """Swap generated identifiers for real ones (fresh ones for operations that delete them), and
    drop some generated optional members, so schema-valid input also succeeds."""
    deletes = case.method.upper() == "DELETE"
    params = case.path_parameters
    if "sandbox_id" in params:
        params["sandbox_id"] = _fresh_sandbox(world)
    if "kid" in params:
        # An index, not sampled_from(kids): the key set changes as cases rotate and revoke, and
        # hypothesis needs the same strategy on every replay.
        kids = _kids(world)
        params["kid"] = kids[data.draw(st.integers(0, 63), "kid") % len(kids)]
    if "ref" in params:
        if deletes:
            fresh = _fresh_integration(world)
            params["slug"] = "acme"
            params["ref"] = data.draw(st.sampled_from([fresh["id"], fresh["name"]]), "ref")
        else:
            params["slug"] = data.draw(st.sampled_from(["acme", "acme", "globex"]), "slug")
            params["ref"] = data.draw(st.sampled_from(["prod", prod_id]), "ref")
    elif "slug" in params:
        params["slug"] = _fresh_tenant(world) if deletes else "acme"
    body = case.body
    if not isinstance(body, dict):
        return
    if "tenant" in body:
        body["tenant"] = "acme"
    if "integration" in body:
        body["integration"] = data.draw(st.sampled_from(["prod", prod_id]), "integration")
    if "role_arn" in body:
        body["name"] = f"fz-{uuid.uuid4().hex[:12]}"
        body["account_id"] = ACCOUNT
        body["role_arn"] = f"arn:aws:iam::{ACCOUNT}:role/fuzz-reader"
    for name in sorted(set(body) - REQUIRED_MEMBERS):
        if not data.draw(st.booleans(), f"keep {name}"):
            del body[name]


def _protect_shared(case: Case[Any], world: World, prod_id: str) -> None:
    """Generated input never deletes the tenants and integration the other cases share."""
    params = case.path_parameters
    if (
        case.method.upper() == "DELETE"
        and params.get("slug") in SHARED_TENANTS
        and params.get("ref", "prod") in ("prod", prod_id)
    ):
        params["slug"] = _fresh_tenant(world)


def _call(case: Case[Any], world: World, key: str | None) -> None:
    case.call_and_validate(
        base_url=world.server.internal_url,
        headers=world.server.key(key) if key else {},
        checks=CHECK_FUNCTIONS,
        timeout=30,
    )


def _role(case: Case[Any]) -> str | None:
    role = case.operation.definition.raw.get(ROLE_EXTENSION)
    return role if isinstance(role, str) else None


@schema.parametrize()
@settings(**SETTINGS)
def test_generated_input(case: Case[Any], world: World, prod_id: str) -> None:
    """Coverage phase (boundary values, missing and mistyped members) and fuzzing, with the
    operation's key: no 5xx, answers as documented, every 4xx says what to fix."""
    _protect_shared(case, world, prod_id)
    _call(case, world, _role(case))


@schema.parametrize()
@schema.given(data=st.data())
@settings(**SETTINGS)
def test_real_identifiers_any_key(
    case: Case[Any], data: st.DataObject, world: World, prod_id: str
) -> None:
    """Schema-valid input reaching real tenants, integrations, sandboxes and keys, and any key
    (the operation's, the other role's, none): still no 5xx, and every 4xx says what to fix."""
    needed = _role(case)
    other = {"admin": "agent", "agent": "admin"}.get(needed or "")
    key = data.draw(st.sampled_from([needed, needed, other, None]), "key")
    if case.meta is not None and case.meta.generation.mode.is_positive:
        _use_real_identifiers(case, world, prod_id, data)
    _protect_shared(case, world, prod_id)
    _call(case, world, key)


def test_served_document_is_the_fuzzed_one(world: World) -> None:
    """The running server publishes exactly the document fuzzed above, without a key."""
    response = httpx.get(world.server.internal_url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == internal_document()
