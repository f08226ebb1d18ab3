"""`python -m broker.standin` as `make run` starts it: ready line, serving, clean SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import pytest

from broker.standin.__main__ import main
from tests.e2e import free_port


@pytest.mark.slow
def test_cli_serves_until_sigterm() -> None:
    """The CLI prints its ready line, answers, and exits 0 on SIGTERM."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker.standin",
            "--port",
            str(port),
            "--allow-http-issuers",
            "--credential-lifetime",
            "900",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == f"sts stand-in ready on http://127.0.0.1:{port}"
        health = httpx.get(f"http://127.0.0.1:{port}/_standin/health", timeout=5)
        assert health.json() == {"status": "ok"}
        identity = httpx.post(
            f"http://127.0.0.1:{port}/",
            data={"Action": "AssumeRole", "Version": "2011-06-15"},
            timeout=5,
        )
        assert "<Code>MissingAuthenticationToken</Code>" in identity.text
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err


def test_cli_reports_a_busy_port(capsys: pytest.CaptureFixture[str]) -> None:
    """A port already in use is reported and the CLI exits non-zero before starting anything."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
