"""Start-up cost: botocore and aiobotocore (~0.3 s of CPU to import) load at the first AWS call,
not when `warrant` starts (see keys.botocore_lazy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import sys
import broker.cli, broker.runtime, issuer.runtime, issuer.cli, keys.cli
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"botocore", "aiobotocore", "boto3"})
print(",".join(loaded))
"""


def test_starting_warrant_does_not_import_botocore() -> None:
    """Every module `warrant serve` and the CLI import at start-up leaves botocore unloaded."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_the_first_aws_call_path_loads_it() -> None:
    """The probe can fail: a session made the way the broker makes one loads aiobotocore."""
    probe = PROBE.replace(
        "loaded =", "from keys.botocore_lazy import new_session\nnew_session()\nloaded ="
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "aiobotocore.session" in result.stdout.split(",")
