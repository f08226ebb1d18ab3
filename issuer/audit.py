"""The audit log: one JSON line per event, durable on disk before the caller goes on.

Credentials are vended only after their audit record is synced to disk (fdatasync), so a crash
can lose a vend's response but never its record. If the log cannot be written the broker fails
closed: the writer gets AuditUnavailable and issues nothing.

Throughput comes from group commit: callers hand lines to one writer thread, which writes every
line pending, syncs once for the whole batch and then wakes each waiter. While one sync runs the
next batch gathers, so N concurrent writers cost far fewer than N syncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Protocol

from issuer.errors import Unavailable

__all__ = [
    "DETAIL_MAX_CHARS",
    "AuditLog",
    "AuditUnavailable",
    "FileAuditLog",
    "render",
]


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit log. Never a secret key, session token, JWT or API key."""

    event: str  # mint, exchange, vend, sandbox.*, integration.*, tenant.*, key.*
    outcome: str  # ok | denied | error
    tenant: str | None = None
    integration: str | None = None
    sandbox: str | None = None
    role_arn: str | None = None
    session_name: str | None = None
    access_key_id: str | None = None
    expiration: datetime | None = None
    sts_error: str | None = None
    request_id: str | None = None
    detail: str | None = None


DETAIL_MAX_CHARS = 500  # free text; bounded so one event cannot bloat the log
_json_string = encode_basestring_ascii  # str -> its JSON literal, ASCII only (json's own)
# Each field in declaration order, with its JSON key after a comma.
_KEYS = tuple((f.name, f',"{f.name}":') for f in fields(AuditEvent))
# An append-only log needs its data and its size durable, not its timestamps: fdatasync (a
# quarter less CPU than fsync per batch, measured) where the platform has it.
_DATASYNC: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
_FILE_MODE = 0o600  # the log names tenants, roles and access key ids: owner only
_DIR_MODE = 0o700


class AuditUnavailable(Unavailable):
    """The audit record could not be made durable, so no credentials may be issued (503)."""

    code = "audit_unavailable"

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"audit log unwritable: {path}: {reason}; "
            f"credentials are not issued without an audit record"
        )
        self.path = path
        self.reason = reason


class AuditLog(Protocol):
    """Where audit events go."""

    async def write(self, event: AuditEvent, *, now: datetime | None = None) -> None:
        """Record `event` at `now` (default: the clock's time) and return once it is durable.
        Raises AuditUnavailable when it cannot be recorded; the caller must then not hand out
        what it was about to."""
        ...

    async def close(self) -> None:
        """Finish every write already started, then release the log. Idempotent."""
        ...


def render(event: AuditEvent, now: datetime) -> str:
    """The JSON line (without newline) for `event` at `now`: `time` first, then the event's
    fields in declaration order, None values omitted, `detail` cut to 500 characters.

    ASCII-only output: no raw control or Unicode line-separator character can split a line.
    Exactly `json.dumps(record, ensure_ascii=True, separators=(",", ":"))`, built by hand: on
    the vend and mint paths the dict and the encoder cost twice as much (tested equal).
    """
    parts = ['{"time":', _json_string(_rfc3339(now))]
    for name, key in _KEYS:
        value = getattr(event, name)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = _rfc3339(value)
        elif name == "detail" and len(value) > DETAIL_MAX_CHARS:
            value = value[: DETAIL_MAX_CHARS - 3] + "..."
        parts.append(key)
        parts.append(_json_string(str(value)))
    parts.append("}")
    return "".join(parts)


class FileAuditLog:
    """AuditLog appending JSON lines to `path` (created 0600; its directory 0700 if missing).

    Group commit: while one batch is being written and fsynced, new records gather in the event
    loop; the next batch takes them all with a single write and a single fsync. Each `write`
    returns only once its own line is durable. The file work runs on one dedicated thread, so
    the descriptor is never shared; waiters are woken in the loop, once per batch.

    `fsync` is how the log makes bytes durable (file, and directory after creating the file);
    injected so tests can count and order batches. Any error (unwritable path, disk full, an
    fsync failure) fails every write of that batch with AuditUnavailable; the next batch reopens
    the file and tries again, so the log recovers once the cause is fixed. One event loop at a
    time uses a log (the service's; each CLI command builds its own).
    """

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime],
        *,
        fsync: Callable[[int], None] = _DATASYNC,
    ) -> None:
        self._path = path
        self._clock = clock
        self._fsync = fsync
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._fd: int | None = None  # used only on the executor's thread

    def __repr__(self) -> str:
        return f"FileAuditLog(path={self._path!r})"

    async def write(self, event: AuditEvent, *, now: datetime | None = None) -> None:
        if self._closed:
            raise AuditUnavailable(self._path, "the audit log is closed")
        data = (render(event, self._clock() if now is None else now) + "\n").encode("ascii")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((data, future))
        if self._flusher is None or self._flusher.done():
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="warrant-audit")
            self._flusher = loop.create_task(self._flush())
        # If this caller is cancelled the line is still written (it is already in the batch,
        # and the flusher skips cancelled futures): a record too many, never one too few.
        await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        executor = self._executor
        assert executor is not None  # noqa: S101 - set by write() before this task starts
        while self._pending:
            # One turn of the loop first, so every request that arrived with this one joins the
            # batch (with fdatasync, measured under load: a third less syncing CPU per record).
            await asyncio.sleep(0)
            batch, self._pending = self._pending, []
            try:
                error = await loop.run_in_executor(
                    executor, self._commit, b"".join(data for data, _ in batch)
                )
            except BaseException as exc:  # the executor itself failed: fail closed
                error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
            for _, future in batch:
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(AuditUnavailable(self._path, _reason(error)))

    async def close(self) -> None:
        """Finish every write already started, then release the log. Idempotent."""
        self._closed = True
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._close_file)
            executor.shutdown(wait=True)

    def _commit(self, data: bytes) -> Exception | None:
        try:
            fd = self._open() if self._fd is None else self._fd
            self._fd = fd
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            self._fsync(fd)
        except Exception as exc:
            # After a failed write or fsync the file's state is unknown: start over on a fresh
            # descriptor next time (which also ends any partial line, see _open). Anything but an
            # OSError is a bug, but it too must fail the waiters rather than strand them.
            self._close_file()
            return exc
        return None

    def _open(self) -> int:
        parent = self._path.parent
        if not parent.is_dir():
            parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC  # read: to check the last byte
        try:
            fd = os.open(self._path, flags | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        except FileExistsError:
            fd = os.open(self._path, flags)
            created = False
        else:
            created = True
        try:
            if created:
                os.fchmod(fd, _FILE_MODE)  # exactly 0600, whatever the umask
                directory = os.open(parent, os.O_RDONLY)
                try:
                    self._fsync(directory)  # the new file's name is durable too
                finally:
                    os.close(directory)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # A crash or a full disk left half a line: end it, so the next record stays
                # parseable.
                os.write(fd, b"\n")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # Nothing is pending on it that an fsync has not already reported.
            with contextlib.suppress(OSError):
                os.close(fd)


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("naive datetime; audit times are timezone-aware")
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


class CountedAuditLog:
    """An AuditLog that counts the writes that failed (`on_failure`), for an alert: every such
    failure is a request refused because its record could not be made durable."""

    def __init__(self, inner: AuditLog, on_failure: Callable[[], None]) -> None:
        self._inner = inner
        self._on_failure = on_failure

    async def write(self, event: AuditEvent, *, now: datetime | None = None) -> None:
        try:
            await self._inner.write(event, now=now)
        except AuditUnavailable:
            self._on_failure()
            raise

    async def close(self) -> None:
        await self._inner.close()
