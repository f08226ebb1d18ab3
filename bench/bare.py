"""The baseline server: one Starlette route returning fixed bytes, served exactly as Warrant's
listeners are (`issuer.server.uvicorn_config`, httptools, uvloop, one process).

What Warrant adds on top of this — routing, middleware, metrics, auth, signing — is what the
ratios measure. Run as `python -m bench.bare --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from issuer.server import uvicorn_config
from issuer.settings import Address

PATH = "/"
BODY = b'{"keys":[]}'


async def fixed(_: Request) -> Response:
    # The body is never read: the baseline is the framework's cost, not the handler's.
    return Response(BODY, media_type="application/json")


def create_app() -> Starlette:
    # POST too, so a POST benchmark has a baseline of the same request shape.
    return Starlette(routes=[Route(PATH, fixed, methods=["GET", "POST"])])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    config = uvicorn_config(create_app(), Address(args.host, args.port))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
