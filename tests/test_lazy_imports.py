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


# Every import of the SDK and every read of its data files that happens on the event loop's
# thread while the broker makes its STS clients, as an audit hook sees them.
LOOP_PROBE = """
import asyncio, sys, threading
from datetime import UTC, datetime
from broker.model import AwsCredentials
from broker.sts import StsClients

LOOP = threading.get_ident()
SDK = {"botocore", "aiobotocore", "aiohttp"}
seen = []

def hook(event, args):
    if threading.get_ident() != LOOP:
        return
    if event == "import" and args[0].split(".")[0] in SDK:
        seen.append("import " + args[0])
    elif event == "open" and "botocore/data" in str(args[0]).replace("\\\\", "/"):
        seen.append("open " + str(args[0]))

async def main():
    clients = StsClients(endpoint_url="http://127.0.0.1:9")
    PREPARE
    sys.addaudithook(hook)
    await clients.unsigned("us-east-1")
    await clients.unsigned("eu-west-1")
    keys = AwsCredentials("ASIAPROBE", "secret", "token", datetime.now(UTC))
    async with clients.signed("us-east-1", keys):
        pass
    await clients.close()

asyncio.run(main())
print("\\n".join(seen))
"""


def _on_the_loop(prepare: str) -> list[str]:
    probe = LOOP_PROBE.replace("PREPARE", prepare)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    return [line for line in result.stdout.splitlines() if line]


def test_making_sts_clients_never_imports_or_reads_the_sdk_on_the_loop() -> None:
    """The first exchange makes the session and its clients: the SDK's import (~0.3 s) and its
    data (~50 ms for STS) load on a worker thread, never on the loop every listener shares."""
    assert _on_the_loop("pass") == []


def test_prepare_loads_the_sdk_before_the_first_client() -> None:
    """What a server does once it serves: afterwards the first client only assembles."""
    assert _on_the_loop("await clients.prepare()") == []


def test_the_loop_probe_sees_data_read_on_the_loop() -> None:
    """The probe can fail: a session made without loading STS's data leaves that to the first
    client's creation, on the loop, and the hook sees it."""
    seen = _on_the_loop(
        "from keys.botocore_lazy import new_session\n    clients._session = new_session()"
        "\n    clients._warmed = True"
    )
    assert any(line.startswith("open ") and "sts" in line for line in seen)


def test_asking_which_errors_are_the_sdks_does_not_load_it() -> None:
    """An `except call_errors()` clause is evaluated for any exception passing by, before any
    AWS call too: it matches nothing then, and imports nothing."""
    probe = PROBE.replace(
        "loaded =",
        "from keys.botocore_lazy import call_errors\n"
        "try:\n    raise RuntimeError('x')\nexcept call_errors():\n    pass\n"
        "except RuntimeError:\n    pass\nloaded =",
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
