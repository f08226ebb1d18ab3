"""A small IMDSv2 server on 127.0.0.1 for end-to-end tests of the instance-role method, where
the broker runs in another process and respx cannot reach it. It speaks only IMDSv2: a GET
without a session token is refused with 401, as with HttpTokens=required.

`fault` makes it misbehave for chaos tests: answer the token PUT or the credentials GETs with an
error status, or only after a delay (longer than the broker's 1 s timeout: a timeout; shorter: a
slow IMDS). Set and clear it while the server runs."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.e2e import free_port


@dataclass(frozen=True)
class ImdsFault:
    """What IMDS does instead of answering at once: on `path` ("token": the PUT, or
    "credentials": the GETs), wait `delay` seconds, then answer `status` (None: as usual)."""

    path: str
    status: int | None = None
    delay: float = 0.0


@dataclass
class FakeImds:
    role_name: str
    credentials: dict[str, str]
    tokens: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    fault: ImdsFault | None = None

    async def _faulted(self, path: str) -> Response | None:
        fault = self.fault
        if fault is None or fault.path != path:
            return None
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            return None
        return PlainTextResponse("injected fault", status_code=fault.status)

    def app(self) -> Starlette:
        async def token(request: Request) -> Response:
            self.requests.append(f"{request.method} /latest/api/token")
            if (faulted := await self._faulted("token")) is not None:
                return faulted
            if "x-aws-ec2-metadata-token-ttl-seconds" not in request.headers:
                return PlainTextResponse("missing TTL header", status_code=400)
            value = secrets.token_urlsafe(24)
            self.tokens.add(value)
            return PlainTextResponse(value)

        async def credentials(request: Request) -> Response:
            role = request.path_params.get("role", "")
            self.requests.append(f"GET credentials/{role}")
            if (faulted := await self._faulted("credentials")) is not None:
                return faulted
            if request.headers.get("x-aws-ec2-metadata-token") not in self.tokens:
                return PlainTextResponse("", status_code=401)
            if not role:
                return PlainTextResponse(self.role_name)
            if role != self.role_name:
                return PlainTextResponse("", status_code=404)
            return Response(
                json.dumps(
                    {
                        "Code": "Success",
                        "Type": "AWS-HMAC",
                        "LastUpdated": "2026-11-21T00:00:00Z",
                        **self.credentials,
                    }
                ),
                media_type="text/plain",
            )

        base = "/latest/meta-data/iam/security-credentials/"
        return Starlette(
            routes=[
                Route("/latest/api/token", token, methods=["PUT"]),
                Route(base, credentials, methods=["GET"]),
                Route(base + "{role}", credentials, methods=["GET"]),
            ]
        )


@contextmanager
def running_imds(imds: FakeImds) -> Iterator[str]:
    """Serve `imds` on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(imds.app(), host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("fake IMDS failed to start")
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
