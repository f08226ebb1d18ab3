"""Structured logs: JSON lines carrying the request id, and validated log settings."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from issuer.cli import DEV_WARNING
from issuer.errors import ConfigError
from issuer.logs import REQUEST_ID, JsonFormatter, bind_request_id, configure_logging
from tests.e2e import base_env, cli, running_warrant


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = None if exc is None else (type(exc), exc, exc.__traceback__)
    return logging.LogRecord("warrant.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_json_lines_carry_the_request_id_of_their_request() -> None:
    """Within a request the id is on every line; concurrent requests never see each other's."""
    formatter = JsonFormatter()

    async def request(name: str) -> tuple[str, dict[str, object]]:
        rid = bind_request_id({})
        await asyncio.sleep(0)  # let the other request run in between
        return rid, json.loads(formatter.format(record("handled %s", name)))

    async def both() -> list[tuple[str, dict[str, object]]]:
        return list(await asyncio.gather(request("a"), request("b")))

    (rid_a, line_a), (rid_b, line_b) = asyncio.run(both())
    assert rid_a != rid_b
    assert line_a["request_id"] == rid_a
    assert line_b["request_id"] == rid_b
    assert line_a["message"] == "handled a"
    assert line_a["level"] == "WARNING"
    assert line_a["logger"] == "warrant.test"
    assert str(line_a["time"]).endswith("+00:00")
    assert REQUEST_ID.get() is None  # nothing leaked out of the requests
    assert "request_id" not in json.loads(formatter.format(record("outside")))


def test_an_existing_request_id_is_kept() -> None:
    """The id is made once per request; asking again returns the same one."""
    scope: dict[str, object] = {}
    assert bind_request_id(scope) == bind_request_id(scope) == scope["warrant.request_id"]


def test_exceptions_are_one_json_field() -> None:
    line = json.loads(JsonFormatter().format(record("failed", exc=ValueError("boom"))))
    assert "ValueError: boom" in line["exception"]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"WARRANT_LOG_LEVEL": "LOUD"}, "WARRANT_LOG_LEVEL"),
        ({"WARRANT_LOG_FORMAT": "xml"}, "WARRANT_LOG_FORMAT"),
    ],
)
def test_bad_log_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        configure_logging(env)


def test_bad_log_settings_are_a_clean_cli_error(tmp_path: Path) -> None:
    result = cli(base_env(tmp_path / "var", WARRANT_LOG_FORMAT="xml"), "keys", "list", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: WARRANT_LOG_FORMAT")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_server_logs_json_lines(tmp_path: Path) -> None:
    """With WARRANT_LOG_FORMAT=json every line the server logs is a JSON object."""
    with running_warrant(
        tmp_path / "var", WARRANT_LOG_FORMAT="json", WARRANT_LOG_LEVEL="INFO"
    ) as server:
        pass
    lines = [line for line in (server.log_dir / "serve.err").read_text().splitlines() if line]
    logged = [line for line in lines if line not in DEV_WARNING.splitlines()]
    assert logged, "the server logged nothing at INFO"
    for line in logged:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry)
    assert any("key set loaded" in json.loads(line)["message"] for line in logged)
