"""The secret scan that runs after the suite can find what it looks for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.secret_scan import find_secrets, scan_tree

PLANTED = {
    "JWT": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZW5hbnQ6YWNtZSJ9.c2lnbmF0dXJlLWJ5dGVzLWhlcmU",
    "private key": "-----BEGIN " + "PRIVATE KEY-----",  # split: not key material
    "sandbox token": "wsb_" + "A" * 43,
    "API key": "wrn_agent_" + "b" * 43,
    "credential field": json.dumps({"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"}),
}


@pytest.mark.parametrize(("kind", "text"), PLANTED.items())
def test_each_planted_secret_is_found(kind: str, text: str) -> None:
    """Every kind of secret, planted in a log line, is reported by its kind."""
    assert find_secrets(f"2026-11-21 INFO something happened: {text} and more") == [kind]


def test_clean_audit_lines_pass() -> None:
    """An ordinary audit record (access key id, session name, kid) is not a finding."""
    line = json.dumps(
        {
            "event": "vend",
            "access_key_id": "ASIAEXAMPLE123456789",
            "session_name": "warrant-acme-prod",
            "detail": "sub=tenant:acme kid=x",
        }
    )
    assert find_secrets(line) == []


def test_scan_tree_reports_the_file(tmp_path: Path) -> None:
    """A planted secret in an audit file under the tree is reported with its path."""
    # Named apart from real audit logs, so the scan after the suite does not report it.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "planted.jsonl").write_text('{"event": "vend"}\n' + PLANTED["JWT"] + "\n")
    (tmp_path / "a" / "clean.log").write_text("nothing to see\n")
    names = ("planted.jsonl", "clean.log")
    assert scan_tree(tmp_path, names) == {tmp_path / "a" / "planted.jsonl": ["JWT"]}
