"""`make run`'s demo: the printed command works with nothing but the sandbox's environment."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e import WARRANT, base_env, free_port

pytestmark = pytest.mark.slow


def test_demo_prints_a_working_aws_cli_command(tmp_path: Path) -> None:
    """`warrant demo` sets up tenant, IAM, integration and sandbox against the strict stand-in,
    and the AWS CLI command it prints returns the assumed role."""
    env = base_env(
        tmp_path / "var",
        WARRANT_DEV="1",
        WARRANT_LOG_LEVEL="WARNING",
        WARRANT_PUBLIC_ADDR=f"127.0.0.1:{free_port()}",
        WARRANT_INTERNAL_ADDR=f"127.0.0.1:{free_port()}",
        WARRANT_SANDBOX_ADDR=f"127.0.0.1:{free_port()}",
        WARRANT_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        WARRANT_DEMO_STS_ADDR=f"127.0.0.1:{free_port()}",
    )
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        process = subprocess.Popen(
            [WARRANT, "demo"], env=env, stdout=sink, stderr=subprocess.STDOUT, text=True
        )
    try:
        deadline = time.monotonic() + 60
        while "sts get-caller-identity" not in out.read_text():
            assert process.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        command = next(
            line.strip()
            for line in out.read_text().splitlines()
            if line.strip().startswith("env -i")
        )
        words = shlex.split(command.replace('PATH="$PATH"', "PATH=/usr/bin:/bin"))
        result = subprocess.run(words, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        arn = json.loads(result.stdout)["Arn"]
        assert arn.startswith("arn:aws:sts::123456789012:assumed-role/warrant-demo-reader/")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    assert process.returncode == 0, out.read_text()
