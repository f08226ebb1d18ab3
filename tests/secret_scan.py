"""Finds secrets in text: what must never reach a log or an audit record."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

PATTERNS = {
    "JWT": re.compile(r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{16,}"),
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----"),
    "sandbox token": re.compile(r"wsb_[\w-]{43}"),
    "API key": re.compile(r"wrn_(?:admin|agent)_[\w-]{43}"),
    "credential field": re.compile(
        r"\"?(?:SecretAccessKey|SessionToken|secret_access_key|session_token)\"?\s*[:=]\s*"
        r"[\"']?[\w/+=]{16,}"
    ),
}
# What the scan reads after the suite: audit logs and the servers' own output.
SCANNED_NAMES = ("audit.jsonl", "serve.out", "serve.err")


def find_secrets(text: str) -> list[str]:
    return [name for name, pattern in PATTERNS.items() if pattern.search(text)]


def scan_tree(root: Path, names: Iterable[str] = SCANNED_NAMES) -> dict[Path, list[str]]:
    findings: dict[Path, list[str]] = {}
    for name in names:
        for path in root.rglob(name):
            found = find_secrets(path.read_text(errors="replace"))
            if found:
                findings[path] = found
    return findings
