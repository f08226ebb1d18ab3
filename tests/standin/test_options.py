"""Gate options, each on a second gate in front of the shared moto: https-only issuers,
credential_lifetime with an injected clock, and the IdP timeout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from broker.standin import GateOptions, StandIn, create_app
from broker.standin.model import utc_now
from broker.standin.serving import ServerThread
from tests.conftest import FakeClock
from tests.e2e import RunningWarrant
from tests.standin.conftest import (
    ACME_AUDIENCE,
    ACME_SUBJECT,
    Aws,
    mint,
    pinned,
    refusal,
    web_identity,
)
from tests.standin.idp import AUDIENCE, SUBJECT, FakeIdp

pytestmark = pytest.mark.usefixtures("fresh")

LIFETIME = timedelta(seconds=120)


@pytest.fixture(scope="module")
def module_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gate_clock(module_clock: FakeClock) -> FakeClock:
    """The dev gate's clock, back at the real time (whole seconds) for each test."""
    module_clock.now = datetime.now(UTC).replace(microsecond=0)
    return module_clock


def _serve(standin: StandIn, options: GateOptions, clock: FakeClock | None = None) -> Iterator[Aws]:
    server = ServerThread(create_app(standin.moto_url, options, clock or utc_now))
    server.start()
    yield Aws(server.url)
    server.stop()


@pytest.fixture(scope="module")
def strict_gate(standin: StandIn) -> Iterator[Aws]:
    yield from _serve(standin, GateOptions())


@pytest.fixture(scope="module")
def dev_gate(standin: StandIn, module_clock: FakeClock) -> Iterator[Aws]:
    options = GateOptions(
        allow_http_issuers=True, credential_lifetime=LIFETIME, idp_timeout=timedelta(seconds=0.3)
    )
    yield from _serve(standin, options, module_clock)


@pytest.fixture
def strict(strict_gate: Aws) -> Aws:
    """A gate with default options (https issuers only), reset."""
    assert strict_gate.admin("POST", "/reset").status_code == 204
    return strict_gate


@pytest.fixture
def dev(dev_gate: Aws, gate_clock: FakeClock) -> Aws:
    """A dev gate (http issuers, 120 s credentials, 0.3 s IdP timeout, the fake clock), reset."""
    assert dev_gate.admin("POST", "/reset").status_code == 204
    return dev_gate


def test_http_issuer_is_refused_by_default(strict: Aws, aws: Aws, warrant: RunningWarrant) -> None:
    """Without allow_http_issuers an http:// iss has no provider, even though moto holds one."""
    role = aws.role(pinned(warrant.issuer_url, ACME_AUDIENCE, ACME_SUBJECT))
    error = refusal(lambda: web_identity(strict, role, mint(warrant)))
    assert error.code == "InvalidIdentityToken"
    assert error.message.startswith("No OpenIDConnect provider found in your account for http://")


def test_http_provider_registration_is_refused_by_default(strict: Aws) -> None:
    """Without allow_http_issuers IAM refuses an http:// provider URL, as AWS does."""
    error = refusal(
        lambda: strict.client("iam").create_open_id_connect_provider(
            Url="http://127.0.0.1:9/dev", ClientIDList=["x"]
        )
    )
    assert error.code == "ValidationError"


def test_credential_lifetime_rewrites_expiration(
    dev: Aws, aws: Aws, fake_idp: FakeIdp, gate_clock: FakeClock
) -> None:
    """Issued credentials expire credential_lifetime after issue, whatever DurationSeconds says."""
    role = aws.role(pinned(fake_idp.issuer, AUDIENCE, SUBJECT))
    result = web_identity(dev, role, fake_idp.token(), DurationSeconds=3600)
    assert result["Credentials"]["Expiration"] == gate_clock.now + LIFETIME


def test_sessions_expire_after_their_lifetime(
    dev: Aws, aws: Aws, fake_idp: FakeIdp, gate_clock: FakeClock
) -> None:
    """Once the clock passes Expiration the credentials get ExpiredToken everywhere."""
    role = aws.role(pinned(fake_idp.issuer, AUDIENCE, SUBJECT))
    credentials = web_identity(dev, role, fake_idp.token())["Credentials"]
    assert dev.sts(credentials).get_caller_identity()["Arn"]
    gate_clock.advance(LIFETIME)
    assert refusal(lambda: dev.sts(credentials).get_caller_identity()).code == "ExpiredToken"
    error = refusal(lambda: dev.sts(credentials).assume_role(RoleArn=role, RoleSessionName="again"))
    assert error.code == "ExpiredToken"


@pytest.mark.parametrize(("advance", "allowed"), [(590, True), (610, False)])
def test_token_expiry_follows_the_clock(
    dev: Aws, aws: Aws, fake_idp: FakeIdp, gate_clock: FakeClock, advance: int, allowed: bool
) -> None:
    """A 300 s token is good until ten minutes (exp plus the skew) on the gate's clock."""
    role = aws.role(pinned(fake_idp.issuer, AUDIENCE, SUBJECT))
    token = fake_idp.token()
    gate_clock.advance(timedelta(seconds=advance))
    if allowed:
        assert web_identity(dev, role, token)["Credentials"]
    else:
        assert refusal(lambda: web_identity(dev, role, token)).code == "ExpiredTokenException"


def test_slow_idp_is_given_up_on(dev: Aws, aws: Aws, fake_idp: FakeIdp) -> None:
    """An IdP slower than the timeout means the key cannot be retrieved."""
    role = aws.role(pinned(fake_idp.issuer, AUDIENCE, SUBJECT))
    fake_idp.delay = 1.0
    error = refusal(lambda: web_identity(dev, role, fake_idp.token()))
    assert error.code == "InvalidIdentityToken"
    assert error.message.startswith("Couldn't retrieve verification key")


@pytest.mark.parametrize(
    "options",
    [{"credential_lifetime": timedelta(0)}, {"idp_timeout": timedelta(seconds=-1)}],
)
def test_nonsense_options_are_refused(options: dict[str, timedelta]) -> None:
    """A non-positive credential lifetime or IdP timeout fails at construction."""
    with pytest.raises(ValueError, match="must be positive"):
        GateOptions(**options)  # type: ignore[arg-type]
