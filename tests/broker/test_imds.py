"""ImdsClient: IMDSv2 only, bounded retries, stale-token recovery, strict parsing (IMDS: respx)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx

from broker.errors import CredentialsRejected, CredentialsUnavailable
from broker.imds import DEFAULT_ENDPOINT, TOKEN_RENEW_BEFORE, TOKEN_TTL, ImdsClient
from broker.sources import InstanceRoleSource
from tests.broker.fakes import request
from tests.conftest import FakeClock

TOKEN_PATH = "/latest/api/token"
ROLES = "/latest/meta-data/iam/security-credentials/"
ROLE = "warrant-broker"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"
EXPIRATION = "2026-06-01T12:00:00Z"
DOCUMENT = {
    "Code": "Success",
    "LastUpdated": "2026-06-01T06:00:00Z",
    "Type": "AWS-HMAC",
    "AccessKeyId": "ASIAEXAMPLEINSTANCE",
    "SecretAccessKey": SECRET,
    "Token": SESSION,
    "Expiration": EXPIRATION,
}


class Sleeps:
    """An injected sleep that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def imds() -> respx.Router:
    """A well-behaved IMDS: token "tok-1", one role, a valid credentials document."""
    router = respx.Router(base_url=DEFAULT_ENDPOINT, assert_all_mocked=True)
    router.put(TOKEN_PATH, name="token").mock(return_value=httpx.Response(200, text="tok-1"))
    router.get(ROLES, name="roles").mock(return_value=httpx.Response(200, text=f"{ROLE}\n"))
    router.get(ROLES + ROLE, name="creds").mock(return_value=httpx.Response(200, json=DOCUMENT))
    return router


@pytest.fixture
async def http(imds: respx.Router) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(imds.async_handler)) as client:
        yield client


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(http: httpx.AsyncClient, clock: FakeClock, sleeps: Sleeps) -> ImdsClient:
    return ImdsClient(http, clock=clock, sleep=sleeps)


def assert_imdsv2_only(router: respx.Router) -> None:
    """No GET ever went out without a session token: there is no IMDSv1 path."""
    for call in router.calls:
        if call.request.method == "GET":
            assert call.request.headers.get("X-aws-ec2-metadata-token"), call.request.url


def calls(router: respx.Router, name: str) -> int:
    return router.routes[name].call_count


def replace_creds(router: respx.Router, response: httpx.Response) -> None:
    router.routes["creds"].mock(return_value=response)


async def test_happy_path(client: ImdsClient, imds: respx.Router) -> None:
    """A token PUT with a 6-hour TTL, then two GETs carrying the token, give the credentials."""
    creds = await client.credentials()
    assert creds.access_key_id == "ASIAEXAMPLEINSTANCE"
    assert creds.secret_access_key == SECRET
    assert creds.session_token == SESSION  # IMDS's "Token"
    assert creds.expiration == datetime(2026, 6, 1, 12, tzinfo=UTC)
    put = imds.routes["token"].calls.last.request
    assert put.headers["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    assert imds.routes["roles"].calls.last.request.headers["X-aws-ec2-metadata-token"] == "tok-1"
    assert imds.routes["creds"].calls.last.request.headers["X-aws-ec2-metadata-token"] == "tok-1"
    assert SECRET not in repr(creds)
    assert_imdsv2_only(imds)


async def test_token_is_reused_until_shortly_before_its_ttl(
    client: ImdsClient, imds: respx.Router, clock: FakeClock
) -> None:
    """One session token serves fetches until shortly before its TTL, then a new one is taken."""
    await client.credentials()
    clock.advance(TOKEN_TTL - TOKEN_RENEW_BEFORE - timedelta(seconds=1))
    await client.credentials()
    assert calls(imds, "token") == 1
    clock.advance(timedelta(seconds=1))
    await client.credentials()
    assert calls(imds, "token") == 2


@pytest.mark.parametrize("status", [400, 403, 404, 405])
async def test_refused_token_put_has_no_imdsv1_fallback(
    client: ImdsClient, imds: respx.Router, status: int
) -> None:
    """A refused token PUT is final: no tokenless GET, and the message explains why."""
    imds.routes["token"].mock(return_value=httpx.Response(status))
    with pytest.raises(CredentialsRejected) as caught:
        await client.credentials()
    message = str(caught.value)
    assert "IMDSv2 is required" in message
    assert "IMDSv1 fallback is disabled" in message
    assert "HttpPutResponseHopLimit" in message
    assert calls(imds, "roles") == calls(imds, "creds") == 0
    assert calls(imds, "token") == 1  # a refusal is not retried


async def test_stale_token_is_renewed_once(client: ImdsClient, imds: respx.Router) -> None:
    """A 401 on a GET means the token went stale: one new token, one retry, success."""
    imds.routes["token"].mock(
        side_effect=[httpx.Response(200, text="tok-1"), httpx.Response(200, text="tok-2")]
    )
    imds.routes["roles"].mock(side_effect=[httpx.Response(401), httpx.Response(200, text=ROLE)])
    creds = await client.credentials()
    assert creds.access_key_id == "ASIAEXAMPLEINSTANCE"
    assert calls(imds, "token") == 2
    assert imds.routes["creds"].calls.last.request.headers["X-aws-ec2-metadata-token"] == "tok-2"
    assert_imdsv2_only(imds)


async def test_persistent_401_is_an_error(client: ImdsClient, imds: respx.Router) -> None:
    """A 401 for a fresh token too is reported after one renewal, not retried forever."""
    imds.routes["roles"].mock(return_value=httpx.Response(401))
    with pytest.raises(CredentialsUnavailable, match="fresh session token"):
        await client.credentials()
    assert calls(imds, "token") == 2
    assert calls(imds, "roles") == 2
    assert_imdsv2_only(imds)


@pytest.mark.parametrize("fault", [httpx.ConnectTimeout, httpx.ReadTimeout])
async def test_token_timeouts_give_up_after_bounded_attempts(
    http: httpx.AsyncClient, imds: respx.Router, clock: FakeClock, fault: type[Exception]
) -> None:
    """A silent IMDS fails after `attempts` tries with short backoffs, naming the endpoint."""
    sleeps = Sleeps()
    client = ImdsClient(http, clock=clock, sleep=sleeps, attempts=3)
    imds.routes["token"].mock(side_effect=fault)
    with pytest.raises(CredentialsUnavailable) as caught:
        await client.credentials()
    assert calls(imds, "token") == 3
    assert sleeps.delays == [0.1, 0.2]
    assert DEFAULT_ENDPOINT in caught.value.message
    assert "did not answer within 1 s" in caught.value.message
    assert "HttpPutResponseHopLimit" in caught.value.message
    assert calls(imds, "roles") == 0


async def test_get_timeouts_give_up_after_bounded_attempts(
    client: ImdsClient, imds: respx.Router, sleeps: Sleeps
) -> None:
    """A credentials GET that times out is retried once (the default) and then reported."""
    imds.routes["creds"].mock(side_effect=httpx.ReadTimeout)
    with pytest.raises(CredentialsUnavailable, match="did not answer"):
        await client.credentials()
    assert calls(imds, "creds") == 2
    assert len(sleeps.delays) == 1


async def test_connection_refused_is_unavailable(client: ImdsClient, imds: respx.Router) -> None:
    """No IMDS at all (connection refused) is a recoverable error naming the endpoint."""
    imds.routes["token"].mock(side_effect=httpx.ConnectError)
    with pytest.raises(CredentialsUnavailable, match="could not be reached"):
        await client.credentials()


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_error_then_success(
    client: ImdsClient, imds: respx.Router, sleeps: Sleeps, status: int
) -> None:
    """A 5xx or throttled answer is retried, and the retry's success is used."""
    imds.routes["creds"].mock(
        side_effect=[httpx.Response(status), httpx.Response(200, json=DOCUMENT)]
    )
    creds = await client.credentials()
    assert creds.access_key_id == "ASIAEXAMPLEINSTANCE"
    assert sleeps.delays == [0.1]


async def test_persistent_server_error_is_unavailable(
    client: ImdsClient, imds: respx.Router
) -> None:
    """A 5xx on every attempt is reported as unavailable with the status."""
    imds.routes["creds"].mock(return_value=httpx.Response(500))
    with pytest.raises(CredentialsUnavailable, match="HTTP 500"):
        await client.credentials()


@pytest.mark.parametrize(
    ("response", "problem"),
    [
        (httpx.Response(200, text="{not json " + SECRET), "not valid JSON"),
        (httpx.Response(200, json=[SECRET]), "not a JSON object"),
        (httpx.Response(200, json={**DOCUMENT, "Code": "AssumeRoleUnauthorizedAccess"}), "Code"),
        (httpx.Response(200, json={**DOCUMENT, "Code": SECRET}), "Code unexpected"),
        (httpx.Response(200, json={**DOCUMENT, "Expiration": "soon"}), "Expiration"),
        (httpx.Response(200, json={**DOCUMENT, "Expiration": 1780000000}), "Expiration"),
        (httpx.Response(200, json={"Code": "Success", "Message": SECRET}), "lack AccessKeyId"),
    ]
    + [
        (httpx.Response(200, json={k: v for k, v in DOCUMENT.items() if k != field}), field)
        for field in ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
    ],
)
async def test_bad_documents_are_unavailable_without_the_body(
    client: ImdsClient, imds: respx.Router, response: httpx.Response, problem: str
) -> None:
    """Malformed JSON, a non-Success Code, missing fields or a bad Expiration are errors that
    never quote the body."""
    replace_creds(imds, response)
    with pytest.raises(CredentialsUnavailable) as caught:
        await client.credentials()
    assert problem in caught.value.message
    assert ROLE in caught.value.message
    assert SECRET not in caught.value.message
    assert SESSION not in caught.value.message


async def test_code_is_optional(client: ImdsClient, imds: respx.Router) -> None:
    """A document without Code (as some IMDS emulators send) is accepted if the fields are there."""
    replace_creds(
        imds, httpx.Response(200, json={k: v for k, v in DOCUMENT.items() if k != "Code"})
    )
    assert (await client.credentials()).access_key_id == "ASIAEXAMPLEINSTANCE"


@pytest.mark.parametrize(
    "roles", [httpx.Response(404), httpx.Response(200, text=""), httpx.Response(200, text="\n")]
)
async def test_no_instance_profile_is_rejected(
    client: ImdsClient, imds: respx.Router, roles: httpx.Response
) -> None:
    """An instance without a role is a configuration error that names the fix."""
    imds.routes["roles"].mock(return_value=roles)
    with pytest.raises(CredentialsRejected, match="instance profile"):
        await client.credentials()


async def test_endpoint_override(clock: FakeClock) -> None:
    """WARRANT_IMDS_ENDPOINT points the client elsewhere, and errors name that endpoint."""
    router = respx.Router(base_url="http://imds.test:1338", assert_all_mocked=True)
    router.put(TOKEN_PATH).mock(return_value=httpx.Response(200, text="tok"))
    router.get(ROLES).mock(return_value=httpx.Response(200, text=ROLE))
    router.get(ROLES + ROLE).mock(return_value=httpx.Response(200, text=json.dumps(DOCUMENT)))
    async with httpx.AsyncClient(transport=httpx.MockTransport(router.async_handler)) as http:
        client = ImdsClient(http, "http://imds.test:1338/", clock=clock)
        assert (await client.credentials()).access_key_id == "ASIAEXAMPLEINSTANCE"
        assert client.endpoint == "http://imds.test:1338"


async def test_instance_role_source_returns_imds_credentials(client: ImdsClient) -> None:
    """InstanceRoleSource returns the instance role's credentials whatever the request."""
    creds = await InstanceRoleSource(client).fetch(request())
    assert creds.access_key_id == "ASIAEXAMPLEINSTANCE"


def test_attempts_must_be_positive(http: httpx.AsyncClient) -> None:
    """Zero attempts is refused at construction."""
    with pytest.raises(ValueError, match="attempts"):
        ImdsClient(http, attempts=0)
