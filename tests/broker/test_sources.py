"""Sources against moto's real STS server over HTTP, and the router's no-fallthrough rule."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
import respx
from aiobotocore.session import AioSession
from aiobotocore.stub import AioStubber
from moto.server import ThreadedMotoServer

from broker.errors import BrokerError, CredentialsRejected, CredentialsUnavailable
from broker.imds import DEFAULT_ENDPOINT, ImdsClient
from broker.model import AwsCredentials, Method
from broker.sources import AssumeRoleSource, InstanceRoleSource, MethodRouter, WebIdentitySource
from broker.sts import StsClients
from tests.broker.fakes import (
    ACCOUNT,
    TOKEN,
    FakeSource,
    FakeTokenProvider,
    credentials,
    integration,
    request,
)
from tests.conftest import FakeClock

pytestmark = pytest.mark.slow  # starts moto's server in a thread

ROLE = "warrant-acme"
TARGET = "warrant-target"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"
TARGET_ARN = f"arn:aws:iam::{ACCOUNT}:role/{TARGET}"
POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*"}]})
HOUR = timedelta(hours=1)
BASE_KEY = "ASIABASEKEY000000001"


class Recorder:
    """botocore event hooks that record each STS call's parameters and Authorization header."""

    def __init__(self) -> None:
        self.params: list[tuple[str, dict[str, Any]]] = []
        self.auth: list[str | None] = []

    def on_params(self, params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        self.params.append((model.name, dict(params)))

    def on_send(self, request: Any, **kwargs: Any) -> None:
        value = request.headers.get("Authorization")
        self.auth.append(value.decode() if isinstance(value, bytes) else value)

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.params if name == operation]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server on a free local port, with the integration's role and a target role."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    for name in (ROLE, TARGET):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust, MaxSessionDuration=43200)
    yield url
    server.stop()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def sts(moto_url: str, recorder: Recorder) -> AsyncIterator[StsClients]:
    session = AioSession()
    session.register("before-parameter-build.sts", recorder.on_params)
    session.register("before-send.sts", recorder.on_send)
    clients = StsClients(session, endpoint_url=moto_url)
    yield clients
    await clients.close()


@pytest.fixture
def base(clock: FakeClock) -> FakeSource:
    """Base credentials as the instance role would give them (moto does not check signatures)."""
    return FakeSource(clock, default=credentials(clock() + 6 * HOUR, key=BASE_KEY))


async def caller_arn(url: str, creds: AwsCredentials) -> str:
    """sts:GetCallerIdentity with a real boto3 client, proving the credentials work."""

    def call() -> str:
        client = boto3.client(
            "sts",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
        )
        return str(client.get_caller_identity()["Arn"])

    return await asyncio.to_thread(call)


# --- WebIdentitySource -----------------------------------------------------------------------


async def test_web_identity_credentials_work(
    sts: StsClients, moto_url: str, clock: FakeClock
) -> None:
    """AssumeRoleWithWebIdentity returns credentials that STS knows as the assumed role."""
    tokens = FakeTokenProvider()
    integ = integration(role_arn=ROLE_ARN)
    req = request(integ, scope="sbx-1")
    creds = await WebIdentitySource(tokens, sts).fetch(req)
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/warrant-acme-prod"
    assert creds.assumed_role_arn == arn
    assert creds.account_id == ACCOUNT
    assert creds.expiration.tzinfo is not None
    assert await caller_arn(moto_url, creds) == arn
    assert tokens.calls == [("acme", integ.id)]  # the subject the trust policy pins


@pytest.mark.parametrize("policy", [None, POLICY])
async def test_web_identity_sends_only_its_own_parameters(
    sts: StsClients, recorder: Recorder, policy: str | None
) -> None:
    """The call carries RoleArn, RoleSessionName, the token, DurationSeconds and Policy if set:
    never Tags, ExternalId, SourceIdentity or ProviderId, and no signature."""
    integ = integration(role_arn=ROLE_ARN, session_duration=7200, external_id="ext-should-not-go")
    await WebIdentitySource(FakeTokenProvider(), sts).fetch(request(integ, session_policy=policy))
    (params,) = recorder.calls("AssumeRoleWithWebIdentity")
    expected = {
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "warrant-acme-prod",
        "WebIdentityToken": TOKEN,
        "DurationSeconds": 7200,
    }
    assert params == (expected if policy is None else {**expected, "Policy": policy})
    assert recorder.auth == [None]  # unsigned


async def test_web_identity_errors_are_classified(sts: StsClients) -> None:
    """An STS refusal comes out as CredentialsRejected with its code and a hint."""
    client = await sts.unsigned("us-east-1")
    with AioStubber(client) as stubber:
        stubber.add_client_error(
            "assume_role_with_web_identity",
            service_error_code="AccessDenied",
            service_message="Not authorized to perform sts:AssumeRoleWithWebIdentity",
            http_status_code=403,
        )
        with pytest.raises(CredentialsRejected) as caught:
            await WebIdentitySource(FakeTokenProvider(), sts).fetch(request())
    assert caught.value.sts_code == "AccessDenied"
    assert caught.value.hint is not None
    assert "trust policy" in caught.value.hint
    assert TOKEN not in str(caught.value)


async def test_unreachable_sts_is_unavailable() -> None:
    """No STS listening is a recoverable error, not a rejection."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clients = StsClients(endpoint_url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(CredentialsUnavailable, match="could not reach STS"):
            await WebIdentitySource(FakeTokenProvider(), clients).fetch(request())
    finally:
        await clients.close()


# --- AssumeRoleSource ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "sent"), [(900, 900), (3600, 3600), (7200, 3600), (43200, 3600)]
)
async def test_assume_role_caps_duration_and_sends_external_id(
    sts: StsClients,
    recorder: Recorder,
    base: FakeSource,
    moto_url: str,
    configured: int,
    sent: int,
) -> None:
    """AssumeRole is signed with the base credentials, carries the ExternalId, and asks for at
    most 3600 s."""
    integ = integration(
        role_arn=ROLE_ARN,
        method=Method.INSTANCE_ROLE,
        external_id="warrant-ext-123",
        session_duration=configured,
    )
    creds = await AssumeRoleSource(base, sts).fetch(request(integ))
    (params,) = recorder.calls("AssumeRole")
    assert params == {
        "RoleArn": ROLE_ARN,
        "RoleSessionName": "warrant-acme-prod",
        "DurationSeconds": sent,
        "ExternalId": "warrant-ext-123",
    }
    assert recorder.auth[0] is not None
    assert f"Credential={BASE_KEY}/" in recorder.auth[0]
    assert creds.access_key_id != BASE_KEY
    assert await caller_arn(moto_url, creds) == creds.assumed_role_arn
    assert f":assumed-role/{ROLE}/" in (creds.assumed_role_arn or "")


async def test_second_hop_to_the_target_role(
    sts: StsClients, recorder: Recorder, base: FakeSource, moto_url: str
) -> None:
    """With a target role, the first hop's credentials assume it; the policy goes on that hop."""
    integ = integration(
        role_arn=ROLE_ARN,
        method=Method.INSTANCE_ROLE,
        external_id="warrant-ext-123",
        target_role_arn=TARGET_ARN,
        session_duration=7200,
    )
    creds = await AssumeRoleSource(base, sts).fetch(request(integ, session_policy=POLICY))
    first, second = recorder.calls("AssumeRole")
    assert first["RoleArn"] == ROLE_ARN
    assert "Policy" not in first
    assert second["RoleArn"] == TARGET_ARN
    assert second["Policy"] == POLICY
    assert first["ExternalId"] == second["ExternalId"] == "warrant-ext-123"
    assert first["DurationSeconds"] == second["DurationSeconds"] == 3600
    assert recorder.auth[0] is not None
    assert recorder.auth[1] is not None
    assert f"Credential={BASE_KEY}/" in recorder.auth[0]
    assert f"Credential={BASE_KEY}/" not in recorder.auth[1]  # signed by the first hop
    assert f":assumed-role/{TARGET}/" in await caller_arn(moto_url, creds)


@pytest.mark.parametrize(
    "error",
    [
        CredentialsRejected("no role attached", hint="attach an instance profile"),
        CredentialsUnavailable("IMDS at http://169.254.169.254 did not answer"),
    ],
)
async def test_base_errors_propagate_unchanged(
    sts: StsClients, recorder: Recorder, clock: FakeClock, error: Exception
) -> None:
    """A failing base source's error reaches the caller as is, and STS is never called."""
    source = AssumeRoleSource(FakeSource(clock, default=error), sts)
    with pytest.raises(type(error)) as caught:
        await source.fetch(request(integration(method=Method.INSTANCE_ROLE)))
    assert caught.value is error
    assert recorder.params == []


async def test_assume_role_errors_are_classified(sts: StsClients, base: FakeSource) -> None:
    """A chaining ValidationError comes out as CredentialsRejected with the chaining hint."""
    base_creds = await base.fetch(request())
    async with sts.signed("us-east-1", base_creds) as client:
        with AioStubber(client) as stubber:
            stubber.add_client_error(
                "assume_role",
                service_error_code="ValidationError",
                service_message="The requested DurationSeconds exceeds the 1 hour session limit "
                "for roles assumed by role chaining.",
                http_status_code=400,
            )
            with pytest.raises(CredentialsRejected) as caught:
                await AssumeRoleSource(base, sts).fetch(request(integration(role_arn=ROLE_ARN)))
    assert caught.value.sts_code == "ValidationError"
    assert ROLE_ARN in caught.value.message
    assert "3600" in (caught.value.hint or "")


async def test_instance_role_chain_end_to_end(
    sts: StsClients, recorder: Recorder, moto_url: str
) -> None:
    """IMDSv2 credentials (respx) sign an AssumeRole against moto; only the assumed role's
    credentials come out."""
    imds = respx.Router(base_url=DEFAULT_ENDPOINT, assert_all_mocked=True)
    imds.put("/latest/api/token").mock(return_value=httpx.Response(200, text="tok"))
    imds.get("/latest/meta-data/iam/security-credentials/").mock(
        return_value=httpx.Response(200, text="broker")
    )
    imds.get("/latest/meta-data/iam/security-credentials/broker").mock(
        return_value=httpx.Response(
            200,
            json={
                "Code": "Success",
                "AccessKeyId": "ASIAINSTANCEROLE0001",
                "SecretAccessKey": "instance-secret",
                "Token": "instance-token",
                "Expiration": "2099-01-01T00:00:00Z",
            },
        )
    )
    async with httpx.AsyncClient(transport=httpx.MockTransport(imds.async_handler)) as http:
        source = AssumeRoleSource(InstanceRoleSource(ImdsClient(http)), sts)
        integ = integration(
            role_arn=ROLE_ARN, method=Method.INSTANCE_ROLE, external_id="warrant-ext-1"
        )
        creds = await source.fetch(request(integ))
    assert recorder.auth[0] is not None
    assert "Credential=ASIAINSTANCEROLE0001/" in recorder.auth[0]
    assert creds.access_key_id != "ASIAINSTANCEROLE0001"
    assert f":assumed-role/{ROLE}/" in await caller_arn(moto_url, creds)


# --- MethodRouter ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(Method))
async def test_router_picks_by_method(clock: FakeClock, method: Method) -> None:
    """Each method goes to its own source and only to it."""
    oidc, instance = FakeSource(clock), FakeSource(clock)
    router = MethodRouter(oidc=oidc, instance_role=instance)
    creds = await router.fetch(request(integration(method=method)))
    chosen, other = (oidc, instance) if method is Method.OIDC else (instance, oidc)
    assert chosen.returned == [creds]
    assert other.count == 0


@pytest.mark.parametrize(
    "error",
    [
        CredentialsRejected("AccessDenied", sts_code="AccessDenied"),
        CredentialsUnavailable("Throttling", sts_code="Throttling"),
        BrokerError("boom"),
    ],
)
@pytest.mark.parametrize("method", list(Method))
async def test_router_never_falls_through(
    clock: FakeClock, method: Method, error: Exception
) -> None:
    """A failure of the configured method is final: the other source is never asked."""
    failing, spare = FakeSource(clock, default=error), FakeSource(clock)
    sources = {Method.OIDC: failing, Method.INSTANCE_ROLE: spare}
    if method is Method.INSTANCE_ROLE:
        sources = {Method.OIDC: spare, Method.INSTANCE_ROLE: failing}
    router = MethodRouter(oidc=sources[Method.OIDC], instance_role=sources[Method.INSTANCE_ROLE])
    with pytest.raises(type(error)) as caught:
        await router.fetch(request(integration(method=method)))
    assert caught.value is error
    assert spare.count == 0


async def test_router_refuses_an_unknown_method(clock: FakeClock) -> None:
    """An integration with a method the router does not know is an error, not a guess."""
    oidc, instance = FakeSource(clock), FakeSource(clock)
    router = MethodRouter(oidc=oidc, instance_role=instance)
    with pytest.raises(BrokerError, match="unknown method 'ldap'"):
        await router.fetch(request(integration(method="ldap")))
    assert oidc.count == instance.count == 0


# --- StsClients ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "override", "endpoint"),
    [
        ("us-east-1", None, "https://sts.us-east-1.amazonaws.com"),
        ("eu-south-2", None, "https://sts.eu-south-2.amazonaws.com"),
        ("cn-north-1", None, "https://sts.cn-north-1.amazonaws.com.cn"),
        ("us-east-1", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
async def test_sts_endpoints(region: str, override: str | None, endpoint: str) -> None:
    """Regional endpoints (China partition for cn-*), or WARRANT_STS_ENDPOINT when set."""
    clients = StsClients(endpoint_url=override)
    try:
        assert clients.endpoint(region) == endpoint
        client = await clients.unsigned(region)
        assert client.meta.endpoint_url == endpoint
        assert client.meta.region_name == region
    finally:
        await clients.close()


async def test_sts_clients_are_long_lived(sts: StsClients, base: FakeSource) -> None:
    """One unsigned client per region, one signed client per access key, reused across calls."""
    assert await sts.unsigned("us-east-1") is await sts.unsigned("us-east-1")
    assert await sts.unsigned("us-east-1") is not await sts.unsigned("eu-west-1")
    creds = await base.fetch(request())
    async with sts.signed("us-east-1", creds) as first, sts.signed("us-east-1", creds) as again:
        assert first is again


async def test_evicted_signed_client_outlives_its_lease(moto_url: str, clock: FakeClock) -> None:
    """A signed client pushed out of the pool still works for whoever holds it."""
    clients = StsClients(endpoint_url=moto_url, max_signed=1)
    try:
        one = credentials(clock() + HOUR, key="ASIAONE0000000000001")
        two = credentials(clock() + HOUR, key="ASIATWO0000000000002")
        async with clients.signed("us-east-1", one) as held:
            async with clients.signed("us-east-1", two):
                pass  # evicts `one` from the pool while it is held
            await held.get_caller_identity()
        async with clients.signed("us-east-1", one) as fresh:
            assert fresh is not held
    finally:
        await clients.close()


async def test_closed_clients_refuse_work(moto_url: str) -> None:
    """After close(), asking for a client is a programming error."""
    clients = StsClients(endpoint_url=moto_url)
    await clients.unsigned("us-east-1")
    await clients.close()
    with pytest.raises(RuntimeError, match="closed"):
        await clients.unsigned("us-east-1")
