"""Crash-safe file writes behind a two-method seam, so tests can crash a store mid-write."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

__all__ = ["TEMP_SUFFIX", "Filesystem", "OsFilesystem", "is_temp", "temp_path_for"]

TEMP_SUFFIX = ".tmp"
# Owner read/write only: these files hold private keys, or say which key signs.
FILE_MODE = 0o600


class Filesystem(Protocol):
    """The only writes a key store makes. Both are durable when they return."""

    def write_atomic(self, path: Path, data: bytes) -> None:
        """Replace `path` with `data` (mode 0600): readers see the old file or the new, never
        a part. A crash may leave a temp file (see `is_temp`) in the same directory."""
        ...

    def remove(self, path: Path) -> None:
        """Delete `path`; a file that is already gone is not an error."""
        ...


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temp name next to `path`: same directory, so os.replace is atomic."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")


def is_temp(path: Path) -> bool:
    """Whether `path` is a temp file a crashed write left behind."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


class OsFilesystem:
    """The real thing: temp file, fsync, os.replace, fsync the directory."""

    def write_atomic(self, path: Path, data: bytes) -> None:
        temp = temp_path_for(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(temp, flags, FILE_MODE)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_directory(path.parent)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
