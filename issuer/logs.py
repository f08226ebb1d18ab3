"""Logging: plain text for a terminal, or one JSON object per line for a log pipeline, each
carrying the request id of the request it belongs to (the id clients see in `x-request-id` and
the audit log records).

The request id lives in a context variable, set when a request's id is first taken; every
request runs in its own task, so ids never leak between requests.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from issuer.errors import ConfigError

REQUEST_ID: ContextVar[str | None] = ContextVar("warrant_request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def bind_request_id(scope: MutableMapping[str, Any]) -> str:
    """The request's id (made on first use) and, from now on, that of its log lines."""
    rid = scope.get("warrant.request_id")
    if not isinstance(rid, str):
        rid = secrets.token_hex(8)
        scope["warrant.request_id"] = rid
        REQUEST_ID.set(rid)
    return rid


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", "request_id"?, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(env: Mapping[str, str]) -> None:
    """WARRANT_LOG_LEVEL and WARRANT_LOG_FORMAT, validated; raises ConfigError naming them."""
    level = env.get("WARRANT_LOG_LEVEL", "INFO").upper()
    if level not in LEVELS:
        raise ConfigError(f"WARRANT_LOG_LEVEL={level!r} must be one of {', '.join(LEVELS)}")
    kind = env.get("WARRANT_LOG_FORMAT", "text").lower()
    if kind not in FORMATS:
        raise ConfigError(f"WARRANT_LOG_FORMAT={kind!r} must be 'text' (default) or 'json'")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # One "Started server process" line per listener says nothing the ready banner doesn't.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    # One line per outbound request (STS, IMDS, the IdP) is noise at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Alembic's "Context impl ..." lines on every start; our runner says what it applied.
    logging.getLogger("alembic").setLevel(logging.WARNING)
