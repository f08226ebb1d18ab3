"""`python -m broker.standin`: moto behind the strict STS gate, until SIGINT or SIGTERM.

Prints `sts stand-in ready on http://HOST:PORT` once serving (scripts wait for that line).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import timedelta

import uvloop

from broker.standin.app import create_app
from broker.standin.launcher import start_moto
from broker.standin.options import GateOptions
from broker.standin.serving import bind, serve_until_signalled


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m broker.standin",
        description="A local STS/IAM stand-in: moto behind a gate that checks web identity "
        "tokens, trust policies, ExternalId and role chaining as AWS does.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=4566, help="port to listen on (0: any)")
    parser.add_argument(
        "--credential-lifetime",
        type=int,
        metavar="SECONDS",
        help="issue credentials that expire after SECONDS instead of DurationSeconds",
    )
    parser.add_argument(
        "--allow-http-issuers",
        action="store_true",
        help="accept tokens from http:// issuers (local development only; AWS never does)",
    )
    parser.add_argument("--log-level", default="INFO", help="gate log level (default INFO)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.credential_lifetime is not None and args.credential_lifetime <= 0:
        _parser().error("--credential-lifetime must be a positive number of seconds")
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    options = GateOptions(
        allow_http_issuers=args.allow_http_issuers,
        credential_lifetime=None
        if args.credential_lifetime is None
        else timedelta(seconds=args.credential_lifetime),
    )
    moto, moto_url = start_moto(args.host)
    host, port = sock.getsockname()[:2]

    def ready() -> None:
        print(f"sts stand-in ready on http://{host}:{port}", flush=True)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve_until_signalled(create_app(moto_url, options), sock, ready))
    finally:
        moto.stop()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
