"""The public listener: discovery and JWKS exactly as AWS STS and strict validators expect."""

from __future__ import annotations

import json

import httpx
import pytest
from authlib.oidc.discovery import OpenIDProviderMetadata

from issuer.runtime import IssuerRuntime
from keys.jwk import PUBLIC_MEMBERS
from keys.model import KeyState
from tests.conftest import ISSUER

DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/.well-known/jwks.json"


async def test_discovery_passes_authlib_provider_metadata_validation(
    public: httpx.AsyncClient,
) -> None:
    """The discovery document passes authlib's full OpenID provider-metadata validation."""
    response = await public.get(DISCOVERY)
    assert response.status_code == 200
    metadata = OpenIDProviderMetadata(response.json())
    metadata.validate()


async def test_discovery_issuer_is_byte_identical(public: httpx.AsyncClient) -> None:
    """`issuer` equals the configured URL byte for byte and jwks_uri sits under it."""
    doc = json.loads((await public.get(DISCOVERY)).content)
    assert doc["issuer"] == ISSUER
    assert doc["jwks_uri"] == ISSUER + JWKS
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["response_types_supported"] == ["id_token"]
    assert doc["subject_types_supported"] == ["public"]


@pytest.mark.parametrize("path", [DISCOVERY, JWKS])
async def test_documents_are_cacheable_json(public: httpx.AsyncClient, path: str) -> None:
    """Both documents are JSON with a positive public max-age and never no-cache."""
    response = await public.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "public, max-age=300"
    assert "no-cache" not in response.headers["cache-control"]
    assert "pragma" not in response.headers
    assert response.headers["etag"].startswith('"')
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize("path", [DISCOVERY, JWKS])
async def test_etag_gives_304(public: httpx.AsyncClient, path: str) -> None:
    """If-None-Match with the current ETag (plain, weak, in a list, or *) answers a bodiless 304."""
    etag = (await public.get(path)).headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        response = await public.get(path, headers={"If-None-Match": header})
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "public, max-age=300"
    stale = await public.get(path, headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200


@pytest.mark.parametrize("path", [DISCOVERY, JWKS])
async def test_head_has_headers_and_no_body(public: httpx.AsyncClient, path: str) -> None:
    """HEAD answers with the GET headers and an empty body."""
    get = await public.get(path)
    head = await public.head(path)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-length"] == get.headers["content-length"]


@pytest.mark.parametrize("path", [DISCOVERY, JWKS])
async def test_other_methods_are_405(public: httpx.AsyncClient, path: str) -> None:
    """Writing to a document is refused with 405 and an Allow header."""
    response = await public.post(path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"


async def test_jwks_publishes_only_public_members(
    public: httpx.AsyncClient, runtime: IssuerRuntime
) -> None:
    """The served JWKS holds every published key and nothing outside the public allow-list."""
    keys = json.loads((await public.get(JWKS)).content)["keys"]
    published = {r.kid for r in runtime.keyring.snapshot.records if r.published}
    assert {k["kid"] for k in keys} == published
    for key in keys:
        assert set(key) <= set(PUBLIC_MEMBERS)
        assert key["use"] == "sig"
        assert key["alg"] == "RS256"
        assert key["kty"] == "RSA"
    states = {r.state for r in runtime.keyring.snapshot.records}
    assert states == {KeyState.ACTIVE, KeyState.PENDING}


async def test_public_listener_has_no_minting_or_admin(public: httpx.AsyncClient) -> None:
    """Minting, tenant and key endpoints do not exist on the public listener."""
    for method, path in [
        ("POST", "/v1/tokens"),
        ("GET", "/v1/tenants"),
        ("GET", "/v1/keys"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
    ]:
        response = await public.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "not_found"


async def test_authorize_explains_there_is_no_interactive_login(public: httpx.AsyncClient) -> None:
    """The advertised authorization endpoint answers an OAuth error that says why."""
    response = await public.get("/authorize")
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_response_type"


async def test_healthz(public: httpx.AsyncClient) -> None:
    """The public listener reports its own health."""
    assert (await public.get("/healthz")).json() == {"status": "ok"}


async def test_documents_are_counted_by_route_method_and_status(
    public: httpx.AsyncClient, internal: httpx.AsyncClient
) -> None:
    """Discovery and the JWKS are served without Starlette's middleware, yet every answer is
    counted under its route as the middleware counts: 200, 304 and 405 alike; the public
    listener's requests are not timed (pre-computed bytes)."""
    first = await public.get(JWKS)
    await public.get(JWKS, headers={"If-None-Match": first.headers["etag"]})
    await public.post(JWKS)
    await public.head(DISCOVERY)
    await public.get("/healthz")  # through the app and its middleware, as before
    text = (await internal.get("/metrics")).text
    for method, route, status in (
        ("GET", JWKS, 200),
        ("GET", JWKS, 304),
        ("POST", JWKS, 405),
        ("HEAD", DISCOVERY, 200),
        ("GET", "/healthz", 200),
    ):
        assert (
            f'warrant_http_requests_total{{listener="public",method="{method}",'
            f'route="{route}",status="{status}"}} 1.0'
        ) in text
    assert 'warrant_http_request_duration_seconds_count{listener="public"' not in text
