"""The internal listener's OpenAPI document: valid OpenAPI 3.1, served without a key, and in step
with the routes of the app `warrant serve` composes (both ways), so neither can drift."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Route

from broker.delivery.http import INTEGRATION_FIELDS, SANDBOX_FIELDS
from broker.delivery.openapi import internal_document
from broker.runtime import WarrantRuntime
from broker.settings import BrokerSettings
from issuer.app import MINT_FIELDS
from issuer.openapi import ROLE_EXTENSION
from issuer.settings import Settings
from tests.conftest import ISSUER

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Starlette answers HEAD on every GET route; the document lists HEAD where it is part of the
# contract (the probes), not on every GET.
DOCUMENTED_HEAD = {"/healthz", "/readyz"}


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[WarrantRuntime]:
    env = {
        "WARRANT_DATA_DIR": str(tmp_path),
        "WARRANT_ISSUER_URL": ISSUER,
        "WARRANT_GRPC_ADDR": "off",
    }
    settings = Settings.from_env(env)
    rt = await WarrantRuntime.open(settings, BrokerSettings.from_env(env, data_dir=tmp_path))
    yield rt
    await rt.close()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method.upper(), item[method]


def test_document_is_valid_openapi_3_1() -> None:
    """The document passes the OpenAPI 3.1 specification's own schema."""
    spec = internal_document()
    assert spec["openapi"].startswith("3.1.")
    validate(spec)


async def test_document_and_routes_list_the_same_operations(runtime: WarrantRuntime) -> None:
    """Every route of the internal app is in the document, and every documented operation is a
    route (HEAD only where documented on purpose)."""
    routed = {
        (route.path, method)
        for route in runtime.internal_app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    documented = {(path, method) for path, method, _ in operations(internal_document())}
    assert documented - routed == set(), "documented but not served"
    undocumented = {
        (path, method)
        for path, method in routed - documented
        if method != "HEAD" or path in DOCUMENTED_HEAD
    }
    assert undocumented == set(), "served but not documented"
    assert all(isinstance(route, Route) for route in runtime.internal_app.routes)


async def test_document_is_served_without_a_key(runtime: WarrantRuntime) -> None:
    """GET /openapi.json needs no key and answers exactly the document; other methods are 405
    naming the allowed one."""
    transport = httpx.ASGITransport(app=runtime.internal_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal") as client:
        response = await client.get("/openapi.json")
        refused = await client.post("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == internal_document()
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert refused.json()["error"] == "method_not_allowed"


async def test_405_lists_every_method_of_the_path(runtime: WarrantRuntime) -> None:
    """A 405 names every method the path supports, though each has its own route."""
    transport = httpx.ASGITransport(app=runtime.internal_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal") as client:
        response = await client.put("/v1/tenants/acme/integrations/prod")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, HEAD"
    assert response.json()["message"].endswith("allowed: DELETE, GET, HEAD")


def test_request_bodies_are_exactly_what_the_server_reads() -> None:
    """Each JSON body lists exactly the members its handler allows, and refuses others."""
    expected = {
        ("/v1/tokens", "POST"): MINT_FIELDS,
        ("/v1/tenants", "POST"): {"slug", "name"},
        ("/v1/keys/rotate", "POST"): {"force"},
        ("/v1/tenants/{slug}/integrations", "POST"): INTEGRATION_FIELDS,
        ("/v1/sandboxes", "POST"): SANDBOX_FIELDS,
    }
    bodies = {
        (path, method): op["requestBody"]["content"]["application/json"]["schema"]
        for path, method, op in operations(internal_document())
        if "requestBody" in op
    }
    assert set(bodies) == set(expected)
    for key, schema in bodies.items():
        assert set(schema["properties"]) == set(expected[key]), key
        assert schema["additionalProperties"] is False, key


def test_every_operation_states_its_role_and_errors() -> None:
    """An operation that needs a key names its role (description and x-warrant-role) and the
    bearer scheme, and documents 401, 403 and 503; every 4xx answer is the Error schema."""
    spec = internal_document()
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, method, op in operations(spec):
        role = op.get(ROLE_EXTENSION)
        if path.startswith("/v1/"):
            assert role in {"admin", "agent"}, (path, method)
            assert f"role `{role}`" in op["description"]
            assert op["security"] == [{"bearer": []}]
            assert {"401", "403", "503"} <= set(op["responses"]), (path, method)
        else:
            assert role is None
            assert op["security"] == []
        for status, answer in op["responses"].items():
            if status.startswith("4"):
                name = answer["$ref"].rsplit("/", 1)[1]
                schema = spec["components"]["responses"][name]["content"]["application/json"]
                assert schema["schema"] == error_ref, (path, method, status)


def test_tenant_removal_documents_the_route_that_answers() -> None:
    """DELETE /v1/tenants/{slug} is the broker's (200 with what was removed), which the app
    mounts ahead of the issuer's 204 route."""
    spec = internal_document()
    answer = spec["paths"]["/v1/tenants/{slug}"]["delete"]["responses"]
    assert "204" not in answer
    assert (
        "removed_integrations"
        in answer["200"]["content"]["application/json"]["schema"]["properties"]
    )
