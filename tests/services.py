"""Real local services the storage tests run against, and the CI rule for when one is missing."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_DB = "test"
REDIS_PORT = 6379


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a developer's machine lacks the service; under CI=true, fail instead."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if in_ci():
        pytest.fail(f"{message}; CI must run every storage test against it")
    pytest.skip(f"{message}; start it to run this test (CI=true makes this a failure)")
