"""A minimal STS for set-up at scale: AssumeRoleWithWebIdentity answered at once, nothing checked.

The stand-in (moto behind the strict gate, broker/standin) spends ~25 ms of Python per exchange:
caching 10,000 sessions through it took 285 s on the benchmark VM. The memory figure needs the
sessions cached, not each exchange verified (the stampede and cold figures, and the test suite,
use the stand-in for that), so its server exchanges here instead. The broker runs its real path
all the same: it mints a token, calls AssumeRoleWithWebIdentity over HTTP with aiobotocore
(unsigned, with the session policy), parses the answer, caches it and audits.

The answer has AWS's shape (the one moto and the stand-in send), with fresh random credentials,
Expiration = now + DurationSeconds, and a session token of SESSION_TOKEN_CHARS characters: longer
than moto's (356) and of the size AWS returns for web-identity sessions with an inline policy,
so that the sessions cost what they would in production. GET /_standin/stats counts the calls in
the stand-in's format, so bench.world.BrokerWorld reads both alike.
"""

from __future__ import annotations

import secrets
import string
import threading
from datetime import UTC, datetime, timedelta
from types import TracebackType
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.standin.serving import ServerThread

__all__ = ["QuickSts"]

ACTION = "AssumeRoleWithWebIdentity"
SESSION_TOKEN_CHARS = 1_200
SECRET_KEY_CHARS = 40
ACCESS_KEY_CHARS = 16  # after the ASIA prefix
ROLE_ID_CHARS = 17  # after the AROA prefix
_UPPER = string.ascii_uppercase + string.digits
_NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"


class QuickSts:
    """`start()` / `stop()`, or `with`; `endpoint_url` goes to WARRANT_STS_ENDPOINT."""

    def __init__(self) -> None:
        self._calls = 0
        self._lock = threading.Lock()
        self._server = ServerThread(self._app())

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def start(self) -> QuickSts:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> QuickSts:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._sts, methods=["POST"]),
                Route("/_standin/stats", self._stats, methods=["GET"]),
            ]
        )

    async def _stats(self, _: Request) -> Response:
        return JSONResponse({ACTION: {"ok": self._calls}})

    async def _sts(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8")).items()}
        missing = [
            name
            for name in ("RoleArn", "RoleSessionName", "WebIdentityToken", "DurationSeconds")
            if not form.get(name)
        ]
        if form.get("Action") != ACTION or missing:
            return Response(
                _error(f"only {ACTION} with {', '.join(missing) or 'its parameters'}"),
                status_code=400,
                media_type="text/xml",
            )
        with self._lock:
            self._calls += 1
        return Response(_answer(form), media_type="text/xml")


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _answer(form: dict[str, str]) -> str:
    expiration = datetime.now(UTC) + timedelta(seconds=int(form["DurationSeconds"]))
    account, role = form["RoleArn"].split(":")[4], form["RoleArn"].rsplit("/", 1)[-1]
    session = form["RoleSessionName"]
    role_id = "AROA" + _random(_UPPER, ROLE_ID_CHARS)
    token = secrets.token_urlsafe(SESSION_TOKEN_CHARS)[:SESSION_TOKEN_CHARS]
    return (
        f'<{ACTION}Response xmlns="{_NAMESPACE}"><{ACTION}Result>'
        "<Credentials>"
        f"<AccessKeyId>ASIA{_random(_UPPER, ACCESS_KEY_CHARS)}</AccessKeyId>"
        f"<SecretAccessKey>{secrets.token_urlsafe(SECRET_KEY_CHARS)[:SECRET_KEY_CHARS]}"
        "</SecretAccessKey>"
        f"<SessionToken>{token}</SessionToken>"
        f"<Expiration>{expiration.strftime('%Y-%m-%dT%H:%M:%SZ')}</Expiration>"
        "</Credentials>"
        "<AssumedRoleUser>"
        f"<Arn>arn:aws:sts::{escape(account)}:assumed-role/{escape(role)}/{escape(session)}</Arn>"
        f"<AssumedRoleId>{role_id}:{escape(session)}</AssumedRoleId>"
        "</AssumedRoleUser>"
        f"<SubjectFromWebIdentityToken>bench</SubjectFromWebIdentityToken>"
        f"</{ACTION}Result>"
        f"<ResponseMetadata><RequestId>{secrets.token_hex(16)}</RequestId></ResponseMetadata>"
        f"</{ACTION}Response>"
    )


def _error(message: str) -> str:
    return (
        f'<ErrorResponse xmlns="{_NAMESPACE}"><Error><Type>Sender</Type>'
        f"<Code>ValidationError</Code><Message>{escape(message)}</Message></Error>"
        f"<RequestId>{secrets.token_hex(16)}</RequestId></ErrorResponse>"
    )
