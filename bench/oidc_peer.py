"""The peer: panva's oidc-provider (Node.js), the most used OpenID provider library, configured
by bench/peer/server.mjs to do what Warrant's issuer does (discovery, a JWKS, RS256 JWT access
tokens for one audience through the client-credentials grant).

Its version is pinned in bench/peer/package.json and package-lock.json; `npm ci` installs it into
bench/peer/node_modules (git-ignored) the first time it is needed. Without Node.js (or when the
install fails) the peer figures are skipped, with the reason in the report.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bench.errors import BenchError
from bench.loadgen import HttpRequest
from bench.servers import RunningServer, free_port, started

__all__ = [
    "AUDIENCE",
    "DISCOVERY_PATH",
    "JWKS_PATH",
    "PEER_DIR",
    "Peer",
    "PeerUnavailable",
    "peer_server",
    "prepare",
]

PEER_DIR = Path(__file__).resolve().parent / "peer"
PACKAGE = "oidc-provider"
CLIENT_ID = "bench"
AUDIENCE = "acme-oidc-service"  # the `aud` of its tokens, as of Warrant's for tenant acme
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"  # oidc-provider's default; its discovery document says so
TOKEN_PATH = "/token"  # noqa: S105 - a path, not a secret
# `npm ci` of 40 small packages takes seconds; a minute means the registry is unreachable.
INSTALL_TIMEOUT = timedelta(minutes=3)


class PeerUnavailable(BenchError):
    """The peer cannot run on this machine; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Peer:
    server: RunningServer
    url: str  # its issuer: http://127.0.0.1:<port>
    version: str  # of oidc-provider, as installed
    client_secret: str

    @property
    def label(self) -> str:
        return f"{PACKAGE} {self.version}"

    def document(self, path: str) -> HttpRequest:
        return HttpRequest(self.url + path)

    def token_request(self) -> HttpRequest:
        """POST /token, client_credentials with HTTP Basic client authentication."""
        basic = base64.b64encode(f"{CLIENT_ID}:{self.client_secret}".encode()).decode("ascii")
        return HttpRequest(
            self.url + TOKEN_PATH,
            method="POST",
            body="grant_type=client_credentials",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": f"Basic {basic}",
            },
        )


def prepare() -> tuple[str, str]:
    """Node's path and oidc-provider's installed version, running `npm ci` first if needed;
    PeerUnavailable when Node.js or npm is missing or the install fails."""
    node = shutil.which("node")
    if node is None:
        raise PeerUnavailable(
            "Node.js not found: install node (20 or later) and npm to compare with oidc-provider"
        )
    manifest = PEER_DIR / "node_modules" / PACKAGE / "package.json"
    if not manifest.exists():
        _install()
    try:
        version = str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError) as exc:
        raise PeerUnavailable(f"cannot read {manifest}: {exc}") from exc
    return node, version


def _install() -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise PeerUnavailable(f"npm not found: it installs {PACKAGE} into {PEER_DIR}")
    argv = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    try:
        result = subprocess.run(
            argv,
            cwd=PEER_DIR,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT.total_seconds(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"`npm ci` in {PEER_DIR} did not finish in time") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-1_000:]
        raise PeerUnavailable(f"`npm ci` in {PEER_DIR} failed (exit {result.returncode}): {tail}")


@contextmanager
def peer_server(node: str, version: str, *, cpu: int | None, workdir: Path) -> Iterator[Peer]:
    """bench/peer/server.mjs on a free port, pinned to `cpu`, NODE_ENV=production."""
    port = free_port()
    secret = secrets.token_urlsafe(32)
    argv = [node, str(PEER_DIR / "server.mjs"), "--port", str(port)]
    argv += ["--client-id", CLIENT_ID]
    # The secret goes in the environment, not argv: ps would show it to every user.
    env = {**os.environ, "NODE_ENV": "production", "PEER_CLIENT_SECRET": secret}
    url = f"http://127.0.0.1:{port}"
    with started(
        "oidc-provider",
        argv,
        env=env,
        health_urls=[url + DISCOVERY_PATH],
        cpu=cpu,
        workdir=workdir,
    ) as server:
        yield Peer(server, url, version, secret)
