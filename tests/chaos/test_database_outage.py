"""PostgreSQL going away (cut, then a silent network) under the real `warrant serve` while a
sandbox vends, an agent mints and creates sandboxes. The database is taken away by the TCP proxy
in front of it (tests/tcp_proxy.py); the shared server itself is never stopped.

What the code promises, and this test holds it to: a vend needs the sandbox's authentication and
its integration, cached for 2 s (SANDBOX_AUTH_CACHE_TTL, INTEGRATION_CACHE_TTL: how long a
revocation made elsewhere may take to bite). Within that window a vend is served from the caches
and audited to the log file; after it, a vend fails closed with a 503 and Retry-After, because
the broker can no longer tell that the sandbox is still live. Minting works while the API-key
and tenant caches (5 s) hold, then 503; creating a sandbox writes to the database, so 503 at
once. Never a 500, never a traceback, never the password; all of it works again once the
database is back.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.chaos.world import ChaosWorld, chaos_world
from tests.tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

# Trust authentication ignores it; any output that contains it has leaked a password.
PASSWORD = "pw-chaos-never-shown-41d9"
# The sandbox-authentication and integration caches (broker/settings.py, broker/service.py).
VEND_CACHE = 2.0
# The API-key and tenant caches (issuer/runtime.py, issuer/settings.py).
MINT_CACHE = 5.0
# A request that needs the database fails by the driver's connect timeout (5 s) at the latest.
REQUEST_BOUND = 7.0
RECOVERY_BOUND = 20.0
DATABASE_DOWN = "the database is unavailable; retry later"


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    url = make_url(database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


@pytest.fixture
def world(tmp_path: Path, database_url: str, proxy: TcpProxy) -> Iterator[ChaosWorld]:
    """Sessions live a minute here, so none needs refreshing during the outage."""
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port, password=PASSWORD)
    with chaos_world(
        tmp_path / "var",
        tenant="chaosdb",
        lifetime=timedelta(seconds=60),
        floor=2,
        refresh_ahead=30,
        WARRANT_DATABASE_URL=url.render_as_string(hide_password=False),
    ) as running:
        yield running


class Seen:
    """Every response of the test, to check at the end that none was a 500 or a traceback."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> httpx.Response:
        self.responses.append(response)
        return response


def assert_database_503(response: httpx.Response) -> None:
    """The internal listener's answer when the database is needed and gone."""
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "unavailable",
        "message": DATABASE_DOWN,
        "request_id": response.headers["x-request-id"],
    }
    assert response.headers["retry-after"] == "5"


def assert_vend_503(world: ChaosWorld, response: httpx.Response) -> None:
    """The sandbox listener's: a request id and Retry-After; the log names the database."""
    assert response.status_code == 503, response.text
    rid = response.headers["x-request-id"]
    assert set(response.json()) == {"error", "message", "request_id"}
    assert response.json()["error"] == "credentials_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    logged = f"request {rid}: credentials not vended: Unavailable: {DATABASE_DOWN}"
    deadline = time.monotonic() + 5
    while logged not in world.server.logs():
        assert time.monotonic() < deadline, f"no log line says why request {rid} failed"
        time.sleep(0.05)


def mint(world: ChaosWorld) -> httpx.Response:
    return world.agent("POST", "/v1/tokens", {"tenant": world.slug})


def create(world: ChaosWorld) -> httpx.Response:
    return world.agent("POST", "/v1/sandboxes", {"tenant": world.slug, "integration": "db"})


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def ready(world: ChaosWorld) -> int:
    return httpx.get(world.server.internal_url + "/readyz", timeout=30).status_code


def wait_until_ready(world: ChaosWorld) -> None:
    deadline = time.monotonic() + RECOVERY_BOUND
    while ready(world) != 200:
        assert time.monotonic() < deadline, f"/readyz did not recover within {RECOVERY_BOUND} s"
        time.sleep(0.2)


def test_database_outage_vend_mint_create(world: ChaosWorld, proxy: TcpProxy) -> None:
    """With PostgreSQL cut off: a vend within the 2-s caches is served (and audited), later
    vends, mints past the 5-s caches and sandbox creation get clean 503s with Retry-After
    within the connect timeout; with the network silently swallowing packets the same holds;
    no response is a 500 or shows a traceback, the password shows nowhere, and vending,
    minting and creating work again once the database is back."""
    seen = Seen()
    world.oidc_integration("db")
    grant = world.sandbox(world.slug, "db")
    token = grant["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    assert seen(mint(world)).status_code == 200
    assert seen(world.vend(token)).status_code == 200  # caches its authentication for 2 s
    warmed = time.monotonic()

    proxy.cut()
    cut = time.monotonic()
    cached = seen(world.vend(token))
    if time.monotonic() - warmed < VEND_CACHE - 0.5:  # a loaded machine may take longer
        assert cached.status_code == 200, cached.text
        key = cached.json()["AccessKeyId"]
        assert key in {r.get("access_key_id") for r in world.audit() if r["event"] == "vend"}
    response, took = timed(lambda: seen(create(world)))
    assert_database_503(response)
    assert took < REQUEST_BOUND

    time.sleep(max(0.0, cut + MINT_CACHE + 0.5 - time.monotonic()))
    response, took = timed(lambda: seen(world.vend(token)))
    assert_vend_503(world, response)
    assert took < REQUEST_BOUND
    for response, took in (timed(lambda: seen(mint(world))), timed(lambda: seen(create(world)))):
        assert_database_503(response)
        assert took < REQUEST_BOUND
    assert ready(world) == 503
    assert world.server.process.poll() is None

    proxy.restore()
    wait_until_ready(world)
    assert seen(world.vend(token)).status_code == 200  # caches its authentication again

    proxy.blackhole()  # connections open, nothing ever answers
    time.sleep(VEND_CACHE + 0.2)
    response, took = timed(lambda: seen(world.vend(token)))
    assert_vend_503(world, response)
    assert took < REQUEST_BOUND
    response, took = timed(lambda: seen(create(world)))
    assert_database_503(response)
    assert took < REQUEST_BOUND

    proxy.restore()
    wait_until_ready(world)
    assert seen(world.vend(token)).status_code == 200
    minted = seen(mint(world))
    assert minted.status_code == 200, minted.text
    created = seen(create(world))
    assert created.status_code == 201, created.text
    fresh = created.json()["env"]["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    world.secrets.add(fresh)
    assert seen(world.vend(fresh)).status_code == 200

    assert {r.status_code for r in seen.responses if r.status_code >= 500} <= {503}
    assert not [r for r in seen.responses if "Traceback" in r.text or PASSWORD in r.text]
    assert PASSWORD not in world.server.logs()
    jti = _jti(minted.json()["token"])
    assert any(jti in r.get("detail", "") for r in world.audit() if r["event"] == "mint")


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    value: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"]
    return value
