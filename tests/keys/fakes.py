"""Hand-written fakes and builders for the keys tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from keys.atomic import OsFilesystem, temp_path_for
from keys.model import Algorithm, KeyRecord, KeyState


class FakeClock(Protocol):
    """The shape of the `clock` fixture (tests/conftest.py): a clock that moves when told."""

    now: datetime

    def __call__(self) -> datetime: ...

    def advance(self, delta: timedelta) -> None: ...


class SimulatedCrash(Exception):
    """Raised by FaultyFilesystem where a real process would have died."""


@dataclass
class FaultyFilesystem:
    """A Filesystem that does real writes, but dies at write step `crash_at` (0-based).

    A write that dies leaves a half-written temp file behind, as a killed process would; a
    removal that dies removes nothing. `steps` records every step attempted.
    """

    crash_at: int | None = None
    steps: list[str] = field(default_factory=list)
    _real: OsFilesystem = field(default_factory=OsFilesystem)

    def write_atomic(self, path: Path, data: bytes) -> None:
        if self._crashes(f"write {path.name}"):
            temp_path_for(path).write_bytes(data[: len(data) // 2])
            raise SimulatedCrash(self.steps[-1])
        self._real.write_atomic(path, data)

    def remove(self, path: Path) -> None:
        if self._crashes(f"remove {path.name}"):
            raise SimulatedCrash(self.steps[-1])
        self._real.remove(path)

    def _crashes(self, step: str) -> bool:
        self.steps.append(step)
        return len(self.steps) - 1 == self.crash_at


def record(
    kid: str,
    state: KeyState,
    created_at: datetime,
    *,
    activated_at: datetime | None = None,
    retired_at: datetime | None = None,
    revoked_at: datetime | None = None,
    alg: Algorithm = Algorithm.ES256,
    public_jwk: Mapping[str, str] | None = None,
) -> KeyRecord:
    """A record for the pure planners, which never look at the key material."""
    return KeyRecord(
        kid=kid,
        alg=alg,
        state=state,
        created_at=created_at,
        public_jwk=public_jwk if public_jwk is not None else {"kid": kid},
        activated_at=activated_at,
        retired_at=retired_at,
        revoked_at=revoked_at,
    )
