"""PostgreSQL going away under the real `warrant serve`: /readyz says so at once, requests that need
the database get a clean 503, and everything recovers when it returns. The database is taken away
by cutting a TCP proxy in front of it; the shared PostgreSQL server itself is never stopped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.e2e import RunningWarrant, base_env, cli, free_port, running_warrant
from tests.tcp_proxy import TcpProxy

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    # The outage is a network one: PostgreSQL only (a fresh database per test).
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

# Trust authentication ignores it, so it travels in the URL without ever being checked: any
# output that contains it has leaked a password.
PASSWORD = "pw-never-shown-7c1e"
# /readyz answers within the ping timeout (2 s) plus slack for a loaded machine; far below the
# 5 s connect timeout and the 10 s pool checkout timeout it must not wait out.
READY_BOUND = 3.5
# A request that needs the database fails by the connect timeout (5 s) at the latest.
REQUEST_BOUND = 7.0
# Long enough for the 5 s API-key and tenant caches to expire and for the pool to reconnect.
RECOVERY_BOUND = 15.0


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    url = make_url(database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def proxied(database_url: str, proxy: TcpProxy) -> str:
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port, password=PASSWORD)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def warrant(tmp_path: Path, database_url: str, proxy: TcpProxy) -> Iterator[RunningWarrant]:
    with running_warrant(
        tmp_path / "var",
        WARRANT_DATABASE_URL=proxied(database_url, proxy),
        WARRANT_LOG_LEVEL="INFO",
    ) as running:
        yield running


def readyz(warrant: RunningWarrant) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    response = httpx.get(f"{warrant.internal_url}/readyz", timeout=30)
    return response.status_code, response.json(), time.monotonic() - started


def tenants(warrant: RunningWarrant) -> httpx.Response:
    return httpx.get(f"{warrant.internal_url}/v1/tenants", headers=warrant.key("admin"), timeout=30)


def wait_until_ready(warrant: RunningWarrant) -> float:
    """Seconds until /readyz answers 200 again; fails the test past RECOVERY_BOUND."""
    started = time.monotonic()
    while time.monotonic() - started < RECOVERY_BOUND:
        if readyz(warrant)[0] == 200:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"/readyz did not recover within {RECOVERY_BOUND} s")


def assert_clean_503(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "unavailable"
    assert body["message"] == "the database is unavailable; retry later"
    assert set(body) == {"error", "message", "request_id"}
    assert response.headers["retry-after"] == "5"
    assert "Traceback" not in response.text


def test_a_cut_database_is_reported_and_refused_cleanly_then_recovers(
    warrant: RunningWarrant, proxy: TcpProxy
) -> None:
    """With PostgreSQL cut off, /readyz answers 503 `database: false` within seconds, the
    liveness probe stays 200, a request that needs the database gets a clean 503 (no traceback,
    no password), the process keeps running, and all of it works again once the database is
    back, with the data written before the cut."""
    created = httpx.post(
        f"{warrant.internal_url}/v1/tenants",
        json={"slug": "acme"},
        headers=warrant.key("admin"),
        timeout=30,
    )
    assert created.status_code == 201, created.text
    assert readyz(warrant)[:2] == (200, {"ready": True, "checks": _checks(database=True)})

    proxy.cut()
    status, body, took = readyz(warrant)
    assert (status, body) == (503, {"ready": False, "checks": _checks(database=False)})
    assert took < READY_BOUND
    assert httpx.get(f"{warrant.internal_url}/healthz", timeout=5).status_code == 200
    started = time.monotonic()
    assert_clean_503(tenants(warrant))
    assert time.monotonic() - started < REQUEST_BOUND
    assert warrant.process.poll() is None

    proxy.restore()
    wait_until_ready(warrant)
    listed = tenants(warrant)
    assert listed.status_code == 200, listed.text
    assert [t["slug"] for t in listed.json()["tenants"]] == ["acme"]
    assert PASSWORD not in warrant.logs()


def test_a_silent_network_keeps_readyz_within_its_bound(
    warrant: RunningWarrant, proxy: TcpProxy
) -> None:
    """When the network swallows every packet (connections open but never answer), /readyz still
    answers 503 within the ping timeout rather than the connect or pool timeouts, a request that
    needs the database gets a clean 503 by the connect timeout, and both recover."""
    assert readyz(warrant)[0] == 200

    proxy.blackhole()
    for _ in range(2):  # the second probe meets whatever the first left in the pool
        status, body, took = readyz(warrant)
        assert (status, body) == (503, {"ready": False, "checks": _checks(database=False)})
        assert took < READY_BOUND
    started = time.monotonic()
    assert_clean_503(tenants(warrant))
    assert time.monotonic() - started < REQUEST_BOUND
    assert warrant.process.poll() is None

    proxy.restore()
    wait_until_ready(warrant)
    assert tenants(warrant).status_code == 200


@pytest.mark.parametrize("command", [["serve"], ["tenants", "list"], ["db", "current"]])
def test_an_unreachable_database_stops_startup_naming_the_setting(
    tmp_path: Path, database_url: str, proxy: TcpProxy, command: list[str]
) -> None:
    """Starting (or running a CLI command) with the database unreachable fails at once with one
    line that names WARRANT_DATABASE_URL and shows the URL with its password masked."""
    proxy.cut()
    env = base_env(
        tmp_path / "var",
        WARRANT_DEV="1",
        WARRANT_DATABASE_URL=proxied(database_url, proxy),
        WARRANT_PUBLIC_ADDR=f"127.0.0.1:{free_port()}",
        WARRANT_INTERNAL_ADDR=f"127.0.0.1:{free_port()}",
        WARRANT_SANDBOX_ADDR=f"127.0.0.1:{free_port()}",
    )
    result = cli(env, *command, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # `serve` warns about dev mode first; the error is the one last line.
    error = result.stderr.strip().splitlines()[-1]
    expected = "error: cannot connect to the database at WARRANT_DATABASE_URL ("
    assert error.startswith(expected), error
    assert f"postgres:***@127.0.0.1:{proxy.port}/" in error
    assert PASSWORD not in result.stderr + result.stdout
    assert proxy.accepted >= 1  # it really tried this database


def _checks(*, database: bool) -> dict[str, bool]:
    return {"database": database, "signing_key": True}
