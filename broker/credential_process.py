"""`warrant credential-process`: the sandbox's credentials in the shape AWS `credential_process`
expects, for tools that want an AWS profile rather than the container endpoint.

Kept free of the service's imports: SDKs run it on every refresh, so it must start fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

# botocore gives the container endpoint 2 s per attempt; a credential process may take longer,
# but an agent waiting more than this for credentials is better told to retry.
TIMEOUT = httpx.Timeout(5.0)


class CredentialProcessError(Exception):
    """Printed to stderr by the CLI; never contains the token or a credential."""


def fetch(url: str, token_file: Path) -> dict[str, Any]:
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise CredentialProcessError(
            f"cannot read --token-file {token_file}: {exc.strerror}"
        ) from None
    if not token:
        raise CredentialProcessError(f"--token-file {token_file} is empty")
    try:
        response = httpx.get(
            url, headers={"Authorization": token, "Accept": "application/json"}, timeout=TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise CredentialProcessError(f"cannot reach {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise CredentialProcessError(f"{url} answered {response.status_code}: {_message(response)}")
    try:
        body = response.json()
        return {
            "Version": 1,  # must be the integer 1
            "AccessKeyId": body["AccessKeyId"],
            "SecretAccessKey": body["SecretAccessKey"],
            "SessionToken": body["Token"],  # the container shape says Token, this one does not
            "Expiration": body["Expiration"],
        }
    except (ValueError, KeyError, TypeError):
        raise CredentialProcessError(f"{url} did not answer container credentials JSON") from None


def _message(response: httpx.Response) -> str:
    try:
        message = response.json().get("message")
    except ValueError:
        message = None
    return str(message) if message else response.reason_phrase


def render(credentials: dict[str, Any]) -> str:
    return json.dumps(credentials)
