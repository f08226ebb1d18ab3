"""An flock(2) on a lock file, waited for up to a deadline."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from keys.errors import KeysError, KeyStoreLocked

__all__ = ["EXCLUSIVE", "SHARED", "file_lock"]

EXCLUSIVE = fcntl.LOCK_EX
SHARED = fcntl.LOCK_SH
# Short enough that a waiting CLI feels immediate, long enough not to spin on the lock.
POLL_INTERVAL = timedelta(milliseconds=10)
LOCK_FILE_MODE = 0o600


@contextmanager
def file_lock(path: Path, operation: int, timeout: timedelta) -> Iterator[None]:
    """Hold `operation` (SHARED or EXCLUSIVE) on `path`, created if missing, for the block.

    Raises KeyStoreLocked if another holder keeps it past `timeout`. The kernel releases the
    lock if this process dies, so a crash never leaves the store locked.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_FILE_MODE)
    except OSError as exc:
        raise KeysError(f"key store {path}: cannot open the lock: {exc.strerror}") from exc
    try:
        _acquire(fd, operation, path, timeout)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, operation: int, path: Path, timeout: timedelta) -> None:
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise KeyStoreLocked(
                    f"key store {path.parent}: another process held the lock for more than "
                    f"{timeout.total_seconds():g}s"
                ) from None
            time.sleep(POLL_INTERVAL.total_seconds())
        else:
            return
