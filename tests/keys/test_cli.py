"""`warrant keys ...` driven through click's CliRunner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from keys.cli import keys
from keys.errors import PolicyError
from keys.file_store import FileKeyStore
from keys.manager import KeyManager
from keys.model import Algorithm, KeyRecord, KeyState, RotationPolicy
from keys.protocols import Plan
from keys.rotation import format_time
from tests.keys.fakes import FakeClock

POLICY = RotationPolicy()


@dataclass(frozen=True)
class Context:
    """What the parent `warrant` command puts on the click context."""

    key_manager_factory: Callable[[], KeyManager]


@pytest.fixture
def manager(data_dir: Path, clock: FakeClock) -> KeyManager:
    return KeyManager(FileKeyStore(data_dir / "keys"), POLICY, Algorithm.ES256, clock)


@pytest.fixture
def run(manager: KeyManager) -> Callable[..., Result]:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(keys, list(args), obj=Context(lambda: manager))

    return invoke


def records_of(manager: KeyManager) -> tuple[KeyRecord, ...]:
    return asyncio.run(manager.list())


def kid_in(manager: KeyManager, state: KeyState) -> str:
    return next(r.kid for r in records_of(manager) if r.state is state)


def assert_clean_failure(result: Result, message: str) -> None:
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_list_of_an_empty_store(run: Callable[..., Result]) -> None:
    """Listing a store with no keys says so and succeeds."""
    result = run("list")
    assert result.exit_code == 0
    assert "no keys yet" in result.stdout


def test_list_table(run: Callable[..., Result], manager: KeyManager, clock: FakeClock) -> None:
    """The table shows kid, alg, state, created, activated and retire-after for each key."""
    asyncio.run(manager.ensure_initialized())
    clock.advance(POLICY.publish_ahead)
    asyncio.run(manager.rotate())
    result = run("list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRE-AFTER"]
    assert len(rows) == 3
    by_kid = {row.split()[0]: row.split() for row in rows}
    retired = next(r for r in records_of(manager) if r.state is KeyState.RETIRED)
    assert retired.retired_at is not None
    assert by_kid[retired.kid][1:3] == ["ES256", "retired"]
    assert by_kid[retired.kid][5] == format_time(retired.retired_at + POLICY.retire_for)
    pending = kid_in(manager, KeyState.PENDING)
    assert by_kid[pending][2:] == ["pending", format_time(clock.now), "-", "-"]


def test_rotate_refusal_is_a_clean_error(run: Callable[..., Result], manager: KeyManager) -> None:
    """Rotating before the pending key is safe exits 1 with the time it becomes safe."""
    asyncio.run(manager.ensure_initialized())
    assert_clean_failure(run("rotate"), "becomes safe to activate at")


def test_rotate_without_pending_publishes_one(
    run: Callable[..., Result], manager: KeyManager, clock: FakeClock
) -> None:
    """With no pending key, rotate publishes one, refuses and says when to run it again; run
    again then, it promotes that key."""
    asyncio.run(manager.ensure_initialized())

    def retire_pending(records: Sequence[KeyRecord]) -> Plan:
        pending = next(r.kid for r in records if r.state is KeyState.PENDING)
        return Plan(now=clock.now, transitions={pending: KeyState.RETIRED})

    asyncio.run(manager.store.apply(retire_pending))
    result = run("rotate")
    assert_clean_failure(result, "there is no pending key")
    assert "run 'warrant keys rotate' again after 1h" in result.stderr
    published = kid_in(manager, KeyState.PENDING)
    clock.advance(POLICY.publish_ahead)
    result = run("rotate")
    assert result.exit_code == 0, result.output
    assert kid_in(manager, KeyState.ACTIVE) == published


def test_rotate_force_warns_loudly(run: Callable[..., Result], manager: KeyManager) -> None:
    """--force rotates at once and prints WARNING lines on stderr."""
    asyncio.run(manager.ensure_initialized())
    pending = kid_in(manager, KeyState.PENDING)
    result = run("rotate", "--force")
    assert result.exit_code == 0, result.output
    assert "WARNING:" in result.stderr
    assert "cached JWKS" in result.stderr
    assert f"rotated: {pending} is now active" in result.stdout
    assert kid_in(manager, KeyState.ACTIVE) == pending


def test_rotate_when_safe(
    run: Callable[..., Result], manager: KeyManager, clock: FakeClock
) -> None:
    """After publish_ahead a plain rotate succeeds quietly."""
    asyncio.run(manager.ensure_initialized())
    clock.advance(POLICY.publish_ahead)
    result = run("rotate")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.startswith("rotated: ")


def test_revoke_prints_the_outcome(run: Callable[..., Result], manager: KeyManager) -> None:
    """Revoking prints that tokens signed with the kid are now invalid."""
    asyncio.run(manager.ensure_initialized())
    active = kid_in(manager, KeyState.ACTIVE)
    result = run("revoke", active)
    assert result.exit_code == 0, result.output
    assert f"key {active} is revoked" in result.stdout
    assert "now invalid" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("revoke", "nope"), "no key with kid 'nope'"),
        (("revoke", "-Eh_x"), "no key with kid '-Eh_x'"),
        (("revoke", "--E-x"), "no key with kid '--E-x'"),
        (("rotate",), "nothing to rotate"),
    ],
    ids=["unknown kid", "kid starting with -", "kid starting with --", "empty store"],
)
def test_errors_exit_1_without_traceback(
    run: Callable[..., Result], args: tuple[str, ...], message: str
) -> None:
    """KeysError subclasses become one 'error:' line on stderr and exit status 1."""
    assert_clean_failure(run(*args), message)


def test_corrupt_store_is_a_clean_error(
    run: Callable[..., Result], manager: KeyManager, data_dir: Path
) -> None:
    """A corrupt store is reported with the file name, not a traceback."""
    asyncio.run(manager.ensure_initialized())
    (data_dir / "keys" / "manifest.json").write_bytes(b"{")
    assert_clean_failure(run("list"), "manifest.json")


def test_prune(run: Callable[..., Result], manager: KeyManager, clock: FakeClock) -> None:
    """Prune reports nothing to do, then the kid of a retired key whose time is up."""
    asyncio.run(manager.ensure_initialized())
    clock.advance(POLICY.publish_ahead)
    retired = asyncio.run(manager.rotate()).retired_kid
    assert run("prune").stdout == "nothing to prune\n"
    clock.advance(POLICY.retire_for)
    result = run("prune")
    assert result.exit_code == 0
    assert result.stdout == f"removed {retired}\n"


def test_missing_context_is_reported() -> None:
    """Started without a key manager on the context, the commands fail cleanly."""
    result = CliRunner().invoke(keys, ["list"], obj=object())
    assert result.exit_code == 1
    assert "without a key manager" in result.output


def test_factory_errors_are_clean() -> None:
    """A key manager that cannot be built (bad settings) is one 'error:' line, exit 1."""

    def broken() -> KeyManager:
        raise PolicyError("WARRANT_KEY_PUBLISH_AHEAD is too short")

    result = CliRunner().invoke(keys, ["list"], obj=Context(broken))
    assert_clean_failure(result, "WARRANT_KEY_PUBLISH_AHEAD is too short")


def test_revoke_help_still_works(run: Callable[..., Result]) -> None:
    """Accepting kids that start with "-" does not swallow --help."""
    result = run("revoke", "--help")
    assert result.exit_code == 0, result.output
    assert "Drop KID from the JWKS now" in result.stdout
