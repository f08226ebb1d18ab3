"""The file audit log: one JSON line per event, owner-only, durable (fsynced) before write returns,
group-committed under concurrency, and failing closed when the disk refuses."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import re
import stat
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuer.audit import (
    AuditEvent,
    AuditLog,
    AuditUnavailable,
    CountedAuditLog,
    FileAuditLog,
    render,
)
from issuer.errors import Unavailable
from tests.issuer.conftest import Clock

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
KEYS = [
    "time",
    "event",
    "outcome",
    "tenant",
    "integration",
    "sandbox",
    "role_arn",
    "session_name",
    "access_key_id",
    "expiration",
    "sts_error",
    "request_id",
    "detail",
]


class RecordingFsync:
    """An fsync fake: optionally slow or failing; records how many lines each file fsync made
    durable, and counts directory fsyncs apart."""

    def __init__(self, path: Path, delay: float = 0.0) -> None:
        self.path = path
        self.delay = delay
        self.durable_lines = 0
        self.file_syncs = 0
        self.directory_syncs = 0
        self.failure: OSError | None = None
        self._lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            self.directory_syncs += 1
            return
        time.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        with self._lock:
            self.durable_lines = len(self.path.read_bytes().splitlines())
            self.file_syncs += 1


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the log goes: inside a directory that does not exist yet."""
    return tmp_path / "audit" / "audit.log"


@pytest.fixture
def fsync(path: Path) -> RecordingFsync:
    """The recording fsync, 2 ms per file fsync so that concurrent writers pile up."""
    return RecordingFsync(path, delay=0.002)


@pytest.fixture
async def log(path: Path, clock: Clock, fsync: RecordingFsync) -> AsyncIterator[FileAuditLog]:
    """A file audit log with the recording fsync, closed after the test."""
    audit = FileAuditLog(path, clock, fsync=fsync)
    yield audit
    await audit.close()


def _lines(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in _raw(path).decode("ascii").splitlines()]


def _raw(path: Path) -> bytes:
    return path.read_bytes()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _exists(path: Path) -> bool:
    return path.exists()


def _create(path: Path, content: bytes) -> None:
    path.parent.mkdir(mode=0o700)
    path.write_bytes(content)


FULL = AuditEvent(
    event="vend",
    outcome="ok",
    tenant="acme",
    integration="int_0123456789abcdef",
    sandbox="sbx_0123456789abcdef0123",
    role_arn="arn:aws:iam::123456789012:role/warrant",
    session_name="warrant-acme-sbx_0123",
    access_key_id="ASIAEXAMPLEEXAMPLE12",
    expiration=datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC),
    sts_error="Throttling",
    request_id="req-1",
    detail="served from cache",
)


async def test_a_line_has_every_field_in_order(log: FileAuditLog, path: Path, clock: Clock) -> None:
    """A full event becomes one JSON line with time first, then every field in order; times are
    RFC 3339 UTC with milliseconds."""
    clock.now = datetime(2026, 5, 1, 13, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    await log.write(FULL)
    [line] = _lines(path)
    assert list(line) == KEYS
    assert line["time"] == "2026-05-01T11:30:05.123Z"
    assert line["expiration"] == "2026-05-01T12:00:00.000Z"
    assert TIME.fullmatch(line["time"])
    assert line["access_key_id"] == FULL.access_key_id
    assert line["event"] == "vend"
    assert line["detail"] == "served from cache"


async def test_nulls_are_omitted_and_now_overrides_the_clock(log: FileAuditLog, path: Path) -> None:
    """Unset fields are left out, and an explicit `now` is the line's time."""
    await log.write(
        AuditEvent(event="mint", outcome="denied"),
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert _lines(path) == [
        {"time": "2026-01-02T03:04:05.000Z", "event": "mint", "outcome": "denied"}
    ]


async def test_detail_is_cut_to_500_characters_and_stays_on_one_line(
    log: FileAuditLog, path: Path
) -> None:
    """A long detail is truncated to 500 characters; newlines and non-ASCII cannot split the
    line."""
    await log.write(AuditEvent(event="vend", outcome="error", detail="x\n\u2028é" * 400))
    raw = _raw(path)
    assert raw.count(b"\n") == 1
    [line] = _lines(path)
    assert len(line["detail"]) == 500
    assert line["detail"].endswith("...")


def test_naive_times_are_refused() -> None:
    """A naive datetime cannot be rendered: audit times are always unambiguous."""
    with pytest.raises(ValueError, match="naive"):
        render(AuditEvent(event="mint", outcome="ok"), datetime(2026, 1, 1))  # noqa: DTZ001


async def test_file_is_owner_only_in_an_owner_only_directory(
    log: FileAuditLog, path: Path, fsync: RecordingFsync
) -> None:
    """The log is created 0600 inside a directory created 0700, and the new name is fsynced."""
    await log.write(FULL)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert fsync.directory_syncs == 1


async def test_appends_across_reopen_and_ends_a_torn_line(
    path: Path, clock: Clock, fsync: RecordingFsync
) -> None:
    """An existing log is appended to; a torn last line left by a crash is ended first, so every
    new record is its own parseable line."""
    _create(path, b'{"time":"2026-01-01T00:00:00.000Z","event":"mint","outcome":"ok"}\n{"ti')
    audit = FileAuditLog(path, clock, fsync=fsync)
    await audit.write(FULL)
    await audit.close()
    lines = _raw(path).decode("ascii").splitlines()
    assert len(lines) == 3
    assert lines[1] == '{"ti'
    assert json.loads(lines[2])["request_id"] == "req-1"


async def test_group_commit_fsyncs_once_per_batch_before_anyone_returns(
    log: FileAuditLog, path: Path, fsync: RecordingFsync
) -> None:
    """200 concurrent writes take far fewer fsyncs than writes, and each write returns only after
    an fsync that covered its own line."""
    durable_at_return: dict[str, int] = {}

    async def write(number: int) -> None:
        request_id = f"req-{number}"
        await log.write(AuditEvent(event="vend", outcome="ok", request_id=request_id))
        durable_at_return[request_id] = fsync.durable_lines

    await asyncio.gather(*(write(number) for number in range(200)))
    lines = _lines(path)
    assert len(lines) == 200
    assert fsync.file_syncs < 20
    for position, line in enumerate(lines):
        assert position < durable_at_return[line["request_id"]]


async def test_unwritable_path_fails_closed(tmp_path: Path, clock: Clock) -> None:
    """A directory where the file should be makes every waiting write fail with AuditUnavailable
    (a 503), naming the path and the reason."""
    path = tmp_path / "audit.log"
    path.mkdir()
    audit = FileAuditLog(path, clock)
    results = await asyncio.gather(*(audit.write(FULL) for _ in range(10)), return_exceptions=True)
    await audit.close()
    assert all(isinstance(result, AuditUnavailable) for result in results)
    error = results[0]
    assert isinstance(error, Unavailable)
    assert error.status == 503
    assert error.message == (
        f"audit log unwritable: {path}: Is a directory; "
        f"credentials are not issued without an audit record"
    )


async def test_failed_writes_are_counted(tmp_path: Path, clock: Clock) -> None:
    """CountedAuditLog reports each failed write (the metric an operator alerts on) and still
    raises it; successful writes are not counted."""
    failures: list[None] = []
    broken = tmp_path / "broken.log"
    broken.mkdir()
    audit = CountedAuditLog(FileAuditLog(broken, clock), lambda: failures.append(None))
    for _ in range(3):
        with pytest.raises(AuditUnavailable):
            await audit.write(FULL)
    await audit.close()
    assert len(failures) == 3
    working = CountedAuditLog(
        FileAuditLog(tmp_path / "ok.log", clock), lambda: failures.append(None)
    )
    await working.write(FULL)
    await working.close()
    assert len(failures) == 3


async def test_path_under_proc_fails_closed(clock: Clock) -> None:
    """A log path that cannot be created, even by root, fails closed."""
    audit = FileAuditLog(Path("/proc/warrant-audit/audit.log"), clock)
    with pytest.raises(AuditUnavailable, match=r"/proc/warrant-audit/audit\.log"):
        await audit.write(FULL)
    await audit.close()


async def test_fsync_failure_fails_the_batch_and_the_log_recovers(
    log: FileAuditLog, path: Path, fsync: RecordingFsync
) -> None:
    """When fsync fails (a full disk, an I/O error) the writes of that batch fail closed; once it
    works again so do writes."""
    await log.write(FULL)
    fsync.failure = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(AuditUnavailable, match="No space left on device"):
        await log.write(AuditEvent(event="vend", outcome="ok", request_id="lost"))
    fsync.failure = None
    await log.write(AuditEvent(event="vend", outcome="ok", request_id="after"))
    assert _lines(path)[-1]["request_id"] == "after"


async def test_close_flushes_pending_writes(path: Path, clock: Clock) -> None:
    """Writes already waiting when close is called are written and fsynced before close returns;
    writes after close fail closed; closing twice is harmless."""
    fsync = RecordingFsync(path, delay=0.01)
    audit = FileAuditLog(path, clock, fsync=fsync)
    writes = [
        asyncio.create_task(audit.write(AuditEvent(event="vend", outcome="ok", request_id=f"r{n}")))
        for n in range(50)
    ]
    await asyncio.sleep(0)  # every write is queued
    await audit.close()
    assert all(write.done() and write.exception() is None for write in writes)
    assert fsync.durable_lines == 50
    with pytest.raises(AuditUnavailable, match="closed"):
        await audit.write(FULL)
    await audit.close()


async def test_close_without_writes(path: Path, clock: Clock) -> None:
    """A log that never wrote closes at once and creates no file."""
    audit = FileAuditLog(path, clock)
    await audit.close()
    assert not _exists(path)


async def test_a_cancelled_writer_does_not_stall_others(
    log: FileAuditLog, path: Path, fsync: RecordingFsync
) -> None:
    """Cancelling one waiting write leaves the writer thread serving everyone else."""
    fsync.delay = 0.02
    victim = asyncio.create_task(log.write(AuditEvent(event="vend", outcome="ok")))
    await asyncio.sleep(0)
    victim.cancel()
    await log.write(AuditEvent(event="vend", outcome="ok", request_id="survivor"))
    assert victim.cancelled()
    assert _lines(path)[-1]["request_id"] == "survivor"


def _conforms(path: Path, clock: Clock) -> AuditLog:
    """Type-checked only: FileAuditLog is an AuditLog."""
    return FileAuditLog(path, clock)


def test_file_log_satisfies_the_protocol(path: Path, clock: Clock) -> None:
    """FileAuditLog is an AuditLog (checked by mypy) and its repr names only the path."""
    assert repr(_conforms(path, clock)) == f"FileAuditLog(path={path!r})"


# -- render: hand-built, equal to the json.dumps oracle ----------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=600) | st.sampled_from(
    ["", '"', "\\", "\n", "\u2028", "\x00", "é", "😀", "a" * 501]
)
_MOMENTS = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds
    max_value=datetime(9999, 12, 30),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone.min]),
)


def _oracle(event: AuditEvent, now: datetime) -> str:
    """What render promises, restated with a dict and json.dumps."""

    def stamp(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
            f"{moment.microsecond // 1000:03d}Z"
        )

    record = {"time": stamp(now)}
    for name in KEYS[1:]:
        value = getattr(event, name)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = stamp(value)
        elif name == "detail" and len(value) > 500:
            value = value[:497] + "..."
        record[name] = value
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


_TEXT_FIELDS = [name for name in KEYS[3:] if name != "expiration"]


@given(
    event=_TEXT,
    outcome=_TEXT,
    texts=st.lists(_TEXT | st.none(), min_size=len(_TEXT_FIELDS), max_size=len(_TEXT_FIELDS)),
    expiration=_MOMENTS | st.none(),
    now=_MOMENTS,
)
@settings(max_examples=300, deadline=None, database=None)
def test_render_equals_json_dumps(
    event: str, outcome: str, texts: list[str | None], expiration: datetime | None, now: datetime
) -> None:
    record = AuditEvent(event, outcome, expiration=expiration)
    fields: dict[str, Any] = dict(zip(_TEXT_FIELDS, texts, strict=True))
    record = dataclasses.replace(record, **fields)
    line = render(record, now)
    assert line == _oracle(record, now)
    assert line.isascii()
    assert "\n" not in line
