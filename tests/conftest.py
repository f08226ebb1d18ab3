"""Shared fixtures: database URLs for SQLite and the real PostgreSQL, and a fixed clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from moto.server import ThreadedMotoServer

from issuer.apikeys import Role
from issuer.runtime import IssuerRuntime
from issuer.settings import Settings
from tests.secret_scan import SCANNED_NAMES, scan_tree
from tests.services import POSTGRES_DB, POSTGRES_HOST, POSTGRES_PORT, require_service


class FakeClock:
    """An injected clock that only moves when a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        # Starts at the real time (whole seconds) so independent verifiers such as pyjwt,
        # which read the wall clock, accept what was minted at the start of a test.
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def seconds(self) -> float:
        """This clock as a caches' `timer` (seconds), so moving it ages their entries."""
        return self.now.timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a private database in the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'warrant.db'}"
        return
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    name = f"warrant_t_{uuid.uuid4().hex[:16]}"
    await _admin(f'CREATE DATABASE "{name}"')
    yield f"postgresql+asyncpg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, database=POSTGRES_DB, user="postgres"
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server on a free loopback port, one per test module (its state is per server)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


ISSUER = "https://issuer.example.test"


def issuer_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {"WARRANT_DATA_DIR": str(data_dir), "WARRANT_ISSUER_URL": ISSUER, **extra}


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings.from_env(issuer_env(data_dir))


@pytest.fixture
async def runtime(settings: Settings, clock: FakeClock) -> AsyncIterator[IssuerRuntime]:
    rt = await IssuerRuntime.open(settings, clock)
    yield rt
    await rt.close()


@pytest.fixture
async def public(runtime: IssuerRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=runtime.public_app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


@pytest.fixture
async def internal(runtime: IssuerRuntime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=runtime.internal_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://internal") as client:
        yield client


def bearer(runtime: IssuerRuntime, role: Role) -> dict[str, str]:
    return {"Authorization": "Bearer " + runtime.api_key_files[role].read_text().strip()}


@pytest.fixture
def admin(runtime: IssuerRuntime) -> dict[str, str]:
    return bearer(runtime, Role.ADMIN)


@pytest.fixture
def agent(runtime: IssuerRuntime) -> dict[str, str]:
    return bearer(runtime, Role.AGENT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After the suite: no audit log or server log written by any test holds a secret. Under
    pytest-xdist the controller scans once, after every worker: their temporary directories live
    under its own."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    findings = scan_tree(factory.getbasetemp())
    if findings:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for path, kinds in findings.items():
            message = f"SECRET SCAN: {path} contains {', '.join(kinds)}"
            if reporter is not None:
                reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            count = sum(1 for name in SCANNED_NAMES for _ in factory.getbasetemp().rglob(name))
            reporter.write_line(f"secret scan: {count} audit and server log files, no secrets")
