"""OsFilesystem: atomic, private, durable writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from keys.atomic import OsFilesystem, is_temp, temp_path_for


def test_write_atomic_creates_a_private_file(tmp_path: Path) -> None:
    """A new file gets exactly the bytes given, mode 0600, and no temp file remains."""
    target = tmp_path / "manifest.json"
    OsFilesystem().write_atomic(target, b"hello")
    assert target.read_bytes() == b"hello"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_write_atomic_replaces_with_a_new_inode(tmp_path: Path) -> None:
    """Replacing a file swaps in a new inode, so readers holding the old one see it whole."""
    target = tmp_path / "manifest.json"
    fs = OsFilesystem()
    fs.write_atomic(target, b"one")
    with target.open("rb") as reader:
        fs.write_atomic(target, b"two")
        assert reader.read() == b"one"
    assert target.read_bytes() == b"two"


def test_failed_replace_leaves_no_temp_file(tmp_path: Path) -> None:
    """When the final rename fails (a directory is in the way) the temp file is removed."""
    target = tmp_path / "manifest.json"
    target.mkdir()
    (target / "occupied").touch()
    with pytest.raises(OSError, match=r"Is a directory|Directory not empty"):
        OsFilesystem().write_atomic(target, b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_remove_tolerates_a_missing_file(tmp_path: Path) -> None:
    """Removing deletes the file, and removing it again is not an error."""
    target = tmp_path / "k.pem"
    target.write_bytes(b"x")
    fs = OsFilesystem()
    fs.remove(target)
    fs.remove(target)
    assert not target.exists()


def test_temp_names_are_recognised(tmp_path: Path) -> None:
    """Temp names are hidden siblings of their target, unique, and recognised by is_temp."""
    target = tmp_path / "manifest.json"
    first, second = temp_path_for(target), temp_path_for(target)
    assert first != second
    assert first.parent == tmp_path
    assert is_temp(first)
    assert not is_temp(target)
    assert not is_temp(tmp_path / "abc.pem")
