"""The soak's verdicts and outputs, without servers: errors from the workers and the soak's own
checks, RSS drift against its 10% ceiling, key rotations and token verification decide PASS or
FAIL, and the printed summary and the JSON file say the same."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bench.soak_load import Failed, Plan, Tally
from bench.soak_report import KeyWatch, MemorySample, SoakResult, render, write_json

WARMUP = 30.0
OPTIONS: dict[str, Any] = {
    "minutes": 2.0,
    "rotate_every": 60,
    "rate_scale": 1.0,
    "warmup_seconds": WARMUP,
    "sample_every": 5.0,
    "max_drift_pct": 10.0,
    "cpus": 2,
}


def _plan(kind: str) -> Plan:
    return Plan(
        kind=kind,
        seconds=120.0,
        rate=10.0,
        threads=2,
        timeout=10.0,
        issuer="http://127.0.0.1:8000",
        public_url="http://127.0.0.1:8000",
        internal_url="http://127.0.0.1:8002",
        sandbox_url="http://127.0.0.1:8001",
        grpc_target="127.0.0.1:50051",
        tenant="acme",
        audience="acme-aws",
        agent_key="k",
        credential_floor=1200.0,
    )


def _worker_report(kind: str, tally: Tally) -> dict[str, Any]:
    """A worker's report as the soak reads it: `Tally.report` through JSON."""
    loaded: dict[str, Any] = json.loads(json.dumps(tally.report(_plan(kind))))
    return loaded


def _workers(*, vend_failures: int = 0, verified: int = 40) -> dict[str, dict[str, Any]]:
    """mint: 30 HTTP and 10 gRPC tokens, `verified` of them verified, signed by two keys;
    vend: 100 requests of which `vend_failures` answered 503."""
    mint = Tally()
    for _ in range(30):
        mint.ok("mint-http", 0.004)
    for _ in range(10):
        mint.ok("mint-grpc", 0.003)
    mint.count("tokens_verified", verified)
    mint.count("tokens_reverified", 12)
    mint.count("jwks_fetches", 3)
    mint.count("kid:k1", 25)
    mint.count("kid:k2", 15)
    vend = Tally()
    for _ in range(100 - vend_failures):
        vend.ok("vend-http", 0.002)
    for _ in range(vend_failures):
        vend.failed("vend-http", 0.05, Failed("status 503", "service unavailable"))
    return {"mint": _worker_report("mint", mint), "vend": _worker_report("vend", vend)}


def _keys() -> KeyWatch:
    """k1, then k2 at 50 s, then k3 at 110 s, as GET /v1/keys showed them every few seconds."""
    keys = KeyWatch()
    for at, active, published in [
        (0, "k1", 2),
        (2, "k1", 2),
        (50.04, "k2", 3),
        (52, "k2", 3),
        (110.0, "k3", 4),
    ]:
        keys.observe(at, active, published)
    return keys


def _memory(warm_kib: int, end_kib: int) -> list[MemorySample]:
    """RSS climbs during the warm-up (not drift), then goes from `warm_kib` to `end_kib`."""
    return [
        MemorySample(at=0.0, rss_kib=60_000, hwm_kib=60_000, threads=8, fds=20),
        MemorySample(at=25.0, rss_kib=90_000, hwm_kib=90_000, threads=10, fds=30),
        MemorySample(at=30.0, rss_kib=warm_kib, hwm_kib=warm_kib, threads=12, fds=31),
        MemorySample(
            at=60.0, rss_kib=(warm_kib + end_kib) // 2, hwm_kib=120_000, threads=12, fds=31
        ),
        MemorySample(at=120.0, rss_kib=end_kib, hwm_kib=120_000, threads=12, fds=32),
    ]


def _result(
    *,
    warm_kib: int = 100_000,
    end_kib: int = 104_000,
    vend_failures: int = 0,
    verified: int = 40,
    extra_errors: Mapping[str, int] | None = None,
    rotations_expected: int = 1,
) -> SoakResult:
    return SoakResult(
        date="2026-11-21T18:18:00Z",
        options=OPTIONS,
        settings={"WARRANT_KEY_ROTATION_PERIOD": "60s"},
        workers=_workers(vend_failures=vend_failures, verified=verified),
        extra_errors=extra_errors or {"keys-poll": 0, "sts-standin": 0, "server-log": 0},
        extra_samples=[],
        keys=_keys(),
        memory=_memory(warm_kib, end_kib),
        sts_ok={"AssumeRoleWithWebIdentity": 7},
        server_log_levels={"INFO": 50, "WARNING": 1},
        rotations_expected=rotations_expected,
    )


def _verdicts(text: str) -> dict[str, tuple[str, str, str]]:
    """The targets table of a printed summary: name -> (goal, measured, verdict)."""
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("target ")))
    rows: dict[str, tuple[str, str, str]] = {}
    for line in lines[start + 2 :]:
        if not line:
            break
        name, goal, measured, verdict = re.split(r" {2,}", line)
        rows[name] = (goal, measured, verdict)
    return rows


def test_a_clean_soak_passes() -> None:
    """No errors, +4% RSS after the warm-up, two rotations of one expected, every token
    verified: every target passes and the summary ends with PASS."""
    result = _result()
    assert result.errors == 0
    assert result.drift_pct == pytest.approx(4.0)
    assert result.passed
    text = render(result)
    assert _verdicts(text) == {
        "errors": ("0", "0", "PASS"),
        "RSS drift": ("< 10 %", "+4.0 %", "PASS"),
        "key rotations": (">= 1", "2", "PASS"),
        "tokens verified": ("all", "40 of 40", "PASS"),
    }
    assert text.endswith("\nPASS")
    assert "Errors by kind: none" in text


def test_drift_is_measured_from_the_first_sample_after_warm_up() -> None:
    """The sample at the warm-up's end is the reference, not the start of the run (which
    would read +73%)."""
    result = _result(warm_kib=100_000, end_kib=104_000)
    assert result.warm.at == WARMUP
    assert result.warm.rss_kib == 100_000
    assert "after warm-up (30s) 97.7 MiB, end 101.6 MiB" in render(result)


@pytest.mark.parametrize(
    ("end_kib", "passed"),
    [(109_000, True), (110_000, False), (125_000, False), (90_000, True)],
)
def test_rss_drift_target_is_strictly_under_ten_percent(end_kib: int, passed: bool) -> None:
    """+9% passes, exactly +10% and +25% fail, a shrinking RSS passes; the overall verdict
    follows."""
    result = _result(end_kib=end_kib)
    drift = next(t for t in result.targets() if t.name == "RSS drift")
    assert drift.passed is passed
    assert result.passed is passed
    verdict = _verdicts(render(result))["RSS drift"][2]
    assert verdict == ("PASS" if passed else "FAIL")
    assert render(result).endswith("\nPASS" if passed else "\nFAIL: a target was missed")


def test_worker_and_check_errors_fail_the_soak() -> None:
    """Three 503s at vend and two server-log errors make five errors, listed by where they
    happened and cause, with the first messages as examples."""
    result = _result(vend_failures=3, extra_errors={"keys-poll": 0, "server-log": 2})
    assert result.errors == 5
    assert result.errors_by_kind() == {
        "vend/vend-http": {"status 503": 3},
        "server-log": {"failed": 2},
    }
    assert not result.passed
    text = render(result)
    assert _verdicts(text)["errors"] == ("0", "5", "FAIL")
    assert "  vend/vend-http: status 503 3\n" in text
    assert "  server-log: failed 2\n" in text
    assert "    e.g. vend-http: status 503: service unavailable\n" in text
    assert text.endswith("\nFAIL: a target was missed")


def test_unverified_tokens_and_missing_rotations_fail() -> None:
    """39 verified of 40 minted fails; so does one rotation fewer than expected."""
    unverified = _result(verified=39)
    assert _verdicts(render(unverified))["tokens verified"] == ("all", "39 of 40", "FAIL")
    assert not unverified.passed
    too_few = _result(rotations_expected=3)
    assert _verdicts(render(too_few))["key rotations"] == (">= 3", "2", "FAIL")
    assert not too_few.passed


def test_summary_table_counts_requests_and_rates() -> None:
    """Per operation and in all: requests, req/s over the run's minutes, errors."""
    text = render(_result(vend_failures=3))
    lines = text.splitlines()
    assert lines[2].split() == [
        "kind",
        "operation",
        "requests",
        "req/s",
        "errors",
        "p50",
        "ms",
        "p99",
        "ms",
        "max",
        "ms",
    ]
    cells = [re.split(r" {2,}", line) for line in lines[4:7]]
    rows = {(row[0], row[1]): row[2:5] for row in cells}
    assert rows[("mint", "mint-grpc")] == ["10", "0.1", "0"]
    assert rows[("mint", "mint-http")] == ["30", "0.2", "0"]
    assert rows[("vend", "vend-http")] == ["100", "0.8", "3"]
    assert re.split(r" {2,}", lines[7]) == ["all", "140", "1.2", "3"]
    assert lines[0].startswith("Soak 2026-11-21T18:18:00Z: 2 min, key rotation every 60 s")


def test_key_rotations_and_tokens_in_the_summary() -> None:
    """The summary lists when keys rotated, the signing keys the verifier saw, and the
    stand-in's and server log's counts."""
    text = render(_result())
    assert "Key rotations: 2 (at 50s, 110s); 3 keys active in turn, at most 4 published" in text
    assert "Tokens: 40 minted, 40 verified (signed by 2 keys), 12 verified again" in text
    assert "STS stand-in, successful calls: AssumeRoleWithWebIdentity 7" in text
    assert "Server log: INFO 50, WARNING 1" in text
    assert "Open fds: 20 -> 31 -> 32; threads 8 -> 12 -> 12" in text


def test_write_json_names_the_file_by_date_and_matches_the_verdicts(tmp_path: Path) -> None:
    """The file is soak-<compact date>.json in the given directory; its pass flag, targets,
    errors and memory figures are those of the result."""
    result = _result(end_kib=110_000, vend_failures=1)
    path = write_json(result, tmp_path / "results")
    assert path == tmp_path / "results" / "soak-20261121T181800Z.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["passed"] is False
    assert {t["name"]: t["passed"] for t in data["targets"]} == {
        "errors": False,
        "RSS drift": False,
        "key rotations": True,
        "tokens verified": True,
    }
    assert (data["requests"], data["errors"]) == (140, 1)
    assert data["errors_by_kind"] == {"vend/vend-http": {"status 503": 1}}
    assert data["error_samples"] == ["vend-http: status 503: service unavailable"]
    memory = data["memory"]
    assert (memory["start_kib"], memory["after_warmup_kib"], memory["end_kib"]) == (
        60_000,
        100_000,
        110_000,
    )
    assert memory["drift_pct"] == 10.0
    assert memory["max_kib"] == 110_000
    assert data["keys"]["rotated_at_seconds"] == [50.0, 110.0]
    assert data["keys"]["signing_kids_seen_by_verifier"] == 2
    assert data["tokens"]["minted"] == 40
    assert "ops" not in data["workers"]["vend"]


def test_drift_just_under_the_ceiling_never_reads_as_the_ceiling() -> None:
    """+9.96 % passes and reads +9.9 % (rounding to +10.0 % beside "< 10 %" read as a
    contradiction); +10.04 % fails and reads +10.0 %."""
    under = _result(warm_kib=100_000, end_kib=109_960)
    assert _verdicts(render(under))["RSS drift"][1:] == ("+9.9 %", "PASS")
    over = _result(warm_kib=100_000, end_kib=110_040)
    assert _verdicts(render(over))["RSS drift"][1:] == ("+10.0 %", "FAIL")
