"""session_name(): always a valid RoleSessionName, readable, and unique under truncation."""

from __future__ import annotations

import random
import re
import string

import pytest

from broker.session_name import MAX_LENGTH, session_name

# STS's pattern, with Java's ASCII-only \w.
VALID = re.compile(r"^[\w+=,.@-]{2,64}$", re.ASCII)


@pytest.mark.parametrize(
    ("tenant", "label", "expected"),
    [
        ("acme", "prod", "warrant-acme-prod"),
        ("acme", "sbx_01", "warrant-acme-sbx_01"),
        ("acme", "a+b=c,d.e@f-g", "warrant-acme-a+b=c,d.e@f-g"),
        ("acme corp", "sandbox/1", "warrant-acme-corp-sandbox-1"),
        ("acme", "naïve:ünïcode", "warrant-acme-na-ve--n-code"),
        ("acme", "", "warrant-acme-"),
        ("", "", "warrant--"),
        ("a\nb", "c\td", "warrant-a-b-c-d"),
    ],
)
def test_sanitisation(tenant: str, label: str, expected: str) -> None:
    """Characters outside [\\w+=,.@-] (ASCII \\w, as STS means it) become '-'; others are kept."""
    assert session_name(tenant, label) == expected


def test_exactly_64_characters_is_kept_whole() -> None:
    """A name of exactly 64 characters is not truncated or hashed."""
    label = "x" * (MAX_LENGTH - len("warrant-acme-"))
    name = session_name("acme", label)
    assert name == f"warrant-acme-{label}"
    assert len(name) == MAX_LENGTH


def test_long_names_keep_a_prefix_and_end_in_a_hash() -> None:
    """A long name keeps its readable start and is exactly 64 characters."""
    name = session_name("acme", "sandbox-" + "y" * 100)
    assert len(name) == MAX_LENGTH
    assert name.startswith("warrant-acme-sandbox-yyyy")
    assert re.fullmatch(r".*-[0-9a-f]{10}", name)


def test_truncated_names_stay_unique() -> None:
    """Long names that differ only after the cut, or only in replaced characters, stay distinct."""
    stem = "z" * 80
    names = {session_name("acme", f"{stem}-{n}") for n in range(1000)}
    names |= {session_name("acme", f"{stem}/{n}") for n in range(1000)}
    assert len(names) == 2000


def test_deterministic() -> None:
    """The same tenant and label always give the same name (CloudTrail can be searched by it)."""
    assert session_name("acme", "q" * 90) == session_name("acme", "q" * 90)


def test_always_valid() -> None:
    """For arbitrary input, including non-ASCII and very long strings, the result is valid."""
    rng = random.Random(7)  # noqa: S311 - a seeded, repeatable set of inputs
    alphabet = string.printable + "éßø中文🙂/\\ :;'\"\x00"
    for _ in range(2000):
        tenant = "".join(rng.choices(alphabet, k=rng.randrange(0, 40)))
        label = "".join(rng.choices(alphabet, k=rng.randrange(0, 120)))
        assert VALID.fullmatch(session_name(tenant, label)), (tenant, label)
