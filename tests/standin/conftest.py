"""One stand-in (moto + gate), one fake IdP and one real Warrant issuer for the whole package,
with IAM OIDC providers registered for both issuers; tests create their own uniquely named
roles, so they share moto without interfering."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from broker.standin import StandIn
from tests.e2e import RunningWarrant, free_port, running_warrant
from tests.standin.idp import AUDIENCE, FakeIdp

ACCOUNT = "123456789012"
ACME_AUDIENCE = "acme-oidc-service"
ACME_SUBJECT = "tenant:acme:sbx-1"
REGION = "us-east-1"
# Static dummy keys for setup calls: moto ignores them, and the gate does not know them.
SETUP_KEYS = {"aws_access_key_id": "AKIASETUP0000000TEST", "aws_secret_access_key": "setup"}


def provider_arn(issuer: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:oidc-provider/{issuer.split('://', 1)[1]}"


def web_identity_trust(issuer: str, **conditions: Any) -> dict[str, Any]:
    """A trust policy for `issuer`'s provider; `conditions` is the Condition block."""
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn(issuer)},
        "Action": "sts:AssumeRoleWithWebIdentity",
    }
    if conditions:
        statement["Condition"] = conditions
    return {"Version": "2012-10-17", "Statement": [statement]}


def pinned(issuer: str, aud: str, sub: str, operator: str = "StringEquals") -> dict[str, Any]:
    host = issuer.split("://", 1)[1]
    if operator == "StringEquals":
        return web_identity_trust(issuer, StringEquals={f"{host}:aud": aud, f"{host}:sub": sub})
    return web_identity_trust(
        issuer, StringEquals={f"{host}:aud": aud}, **{operator: {f"{host}:sub": sub}}
    )


@dataclass
class Aws:
    """boto3 clients pointed at a gate, and role setup through it. Clients are cached: building
    one loads the service model, which costs more than the call."""

    endpoint_url: str
    _session: Any = field(default_factory=boto3.session.Session, repr=False)
    _clients: dict[tuple[Any, ...], Any] = field(default_factory=dict, repr=False)

    def client(self, service: str, *, attempts: int = 1, validate: bool = True, **keys: str) -> Any:
        credentials = keys or SETUP_KEYS
        cache_key = (service, attempts, validate, *sorted(credentials.items()))
        if cache_key not in self._clients:
            config = Config(
                # total_max_attempts counts the first try; botocore's max_attempts counts retries.
                retries={"total_max_attempts": attempts, "mode": "standard"},
                parameter_validation=validate,
            )
            self._clients[cache_key] = self._session.client(
                service,
                region_name=REGION,
                endpoint_url=self.endpoint_url,
                config=config,
                **credentials,
            )
        return self._clients[cache_key]

    def sts(self, credentials: dict[str, Any] | None = None, **options: Any) -> Any:
        """An STS client signing with `credentials` (an STS Credentials dict) or setup keys."""
        if credentials is None:
            return self.client("sts", **options)
        return self.client(
            "sts",
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            **options,
        )

    def role(
        self, trust_policy: dict[str, Any], *, max_session: int = 3600, path: str = "/"
    ) -> str:
        name = "r-" + uuid.uuid4().hex[:12]
        created = self.client("iam").create_role(
            RoleName=name,
            Path=path,
            AssumeRolePolicyDocument=json.dumps(trust_policy),
            MaxSessionDuration=max_session,
        )
        arn: str = created["Role"]["Arn"]
        return arn

    def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.endpoint_url + "/_standin" + path, json=body, timeout=5)


@pytest.fixture(scope="package")
def standin() -> Iterator[StandIn]:
    with StandIn(allow_http_issuers=True) as running:
        yield running


@pytest.fixture(scope="package")
def fake_idp() -> Iterator[FakeIdp]:
    idp = FakeIdp()
    idp.start()
    yield idp
    idp.stop()


@pytest.fixture(scope="package")
def warrant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningWarrant]:
    # `warrant serve` also runs the broker's sandbox listener; keep it off its default port.
    sandbox = f"127.0.0.1:{free_port()}"
    with running_warrant(
        tmp_path_factory.mktemp("warrant"), WARRANT_SANDBOX_ADDR=sandbox
    ) as server:
        for slug in ("acme", "globex"):
            response = httpx.post(
                server.internal_url + "/v1/tenants",
                json={"slug": slug},
                headers=server.key("admin"),
                timeout=5,
            )
            assert response.status_code in (200, 201), response.text
        yield server


@pytest.fixture(scope="package")
def aws(standin: StandIn, fake_idp: FakeIdp, warrant: RunningWarrant) -> Aws:
    """Providers for both issuers: the fake IdP's trusts `fake-aud`, Warrant's only acme."""
    helper = Aws(standin.endpoint_url)
    iam = helper.client("iam")
    iam.create_open_id_connect_provider(Url=fake_idp.issuer, ClientIDList=[AUDIENCE])
    iam.create_open_id_connect_provider(Url=warrant.issuer_url, ClientIDList=[ACME_AUDIENCE])
    return helper


@pytest.fixture
def fresh(aws: Aws, fake_idp: FakeIdp) -> Aws:
    """The shared gate with stats, faults and IdP caches cleared, and the fake IdP reset."""
    assert aws.admin("POST", "/reset").status_code == 204
    fake_idp.reset()
    return aws


def mint(server: RunningWarrant, tenant: str = "acme", subject: str = "sbx-1") -> str:
    response = httpx.post(
        server.internal_url + "/v1/tokens",
        json={"tenant": tenant, "subject": subject, "ttl_seconds": 300},
        headers=server.key("agent"),
        timeout=5,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@dataclass(frozen=True)
class Refusal:
    code: str
    status: int
    message: str


def refusal(call: Callable[[], object]) -> Refusal:
    """The AWS error botocore raised for `call`, as the caller sees it."""
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return Refusal(
        str(response["Error"]["Code"]),
        int(response["ResponseMetadata"]["HTTPStatusCode"]),
        str(response["Error"]["Message"]),
    )


def web_identity(aws: Aws, role_arn: str, token: str, **params: Any) -> Any:
    return aws.sts(**params.pop("client", {})).assume_role_with_web_identity(
        RoleArn=role_arn,
        RoleSessionName=params.pop("RoleSessionName", "sbx-1"),
        WebIdentityToken=token,
        **params,
    )


@pytest.fixture
def standin_url(standin: StandIn) -> str:
    return standin.endpoint_url + "/"
