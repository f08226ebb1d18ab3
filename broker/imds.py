"""The EC2 instance role's credentials from the instance metadata service, IMDSv2 only.

There is deliberately no IMDSv1 fallback (botocore falls back when the token PUT is refused or
times out): every GET carries a session token, so a proxy or a container that can reach IMDS
without the PUT hop cannot read the instance role through the broker.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx

from broker.errors import CredentialsRejected, CredentialsUnavailable
from broker.model import AwsCredentials
from broker.protocols import Clock

__all__ = ["DEFAULT_ENDPOINT", "ImdsClient"]

DEFAULT_ENDPOINT = "http://169.254.169.254"

# IMDS answers on the instance in about a millisecond; a second means it is not there (or the
# token response was dropped by the hop limit). botocore uses the same 1 s.
TIMEOUT = timedelta(seconds=1)
# One retry absorbs IMDS's per-instance throttling or a dropped connection without holding the
# caller for long; the cache retries later with its own backoff.
ATTEMPTS = 2
# Pause before a retry, doubled each time: long enough for IMDS's throttle to let us through.
RETRY_BACKOFF = timedelta(milliseconds=100)
# The longest session token IMDS grants (6 h): one PUT covers many credential fetches.
TOKEN_TTL = timedelta(seconds=21600)
# Renew the session token this long before IMDS expires it, so it never lapses between our check
# and the GET; a token IMDS refuses anyway (401) is renewed once on the spot.
TOKEN_RENEW_BEFORE = timedelta(minutes=5)

_TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
_ROLES_PATH = "/latest/meta-data/iam/security-credentials/"
_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
_TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name, not a secret
_REQUIRED = ("AccessKeyId", "SecretAccessKey", "Token", "Expiration")
_SAFE_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

_HOP_LIMIT_HINT = (
    "if the broker runs in a container, the instance needs HttpPutResponseHopLimit >= 2 "
    "(aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2)"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ImdsClient:
    """Reads the instance role's credentials from IMDS (`WARRANT_IMDS_ENDPOINT`)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        timeout: timedelta = TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: timedelta = RETRY_BACKOFF,
        clock: Clock = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._clock = clock
        self._sleep = sleep
        self._token: str | None = None
        self._token_until = datetime.min.replace(tzinfo=UTC)
        self._token_lock = asyncio.Lock()  # one PUT at a time; concurrent callers share it

    @property
    def endpoint(self) -> str:
        return self._endpoint

    async def credentials(self) -> AwsCredentials:
        """The instance role's current credentials.

        Raises CredentialsRejected when IMDSv2 is refused or no role is attached (configuration),
        and CredentialsUnavailable when IMDS does not answer or answers something unusable.
        """
        listing = await self._get(_ROLES_PATH, "the instance's IAM role")
        lines = listing.strip().splitlines()
        role = lines[0].strip() if lines else ""
        if not role:
            raise CredentialsRejected(
                f"IMDS at {self._endpoint} lists no IAM role",
                hint="attach an IAM instance profile to this instance",
            )
        body = await self._get(_ROLES_PATH + quote(role, safe=""), f"credentials for role {role}")
        return _parse(body, role)

    async def _get(self, path: str, what: str) -> str:
        token = await self._session_token()
        response = await self._send("GET", path, {_TOKEN_HEADER: token})
        if response.status_code == 401:  # the token went stale (e.g. IMDS restarted): renew once
            self._forget(token)
            token = await self._session_token()
            response = await self._send("GET", path, {_TOKEN_HEADER: token})
            if response.status_code == 401:
                raise CredentialsUnavailable(
                    f"IMDS at {self._endpoint} rejected a fresh session token (401) for {what}"
                )
        if response.status_code == 404:
            raise CredentialsRejected(
                f"IMDS at {self._endpoint} has no {what} (404)",
                hint="attach an IAM instance profile to this instance",
            )
        if response.status_code == 403:
            raise CredentialsRejected(
                f"IMDS at {self._endpoint} refused to return {what} (403)",
                hint="instance metadata access is disabled or restricted for this instance",
            )
        if response.status_code != 200:
            raise CredentialsUnavailable(
                f"IMDS at {self._endpoint} answered HTTP {response.status_code} for {what}"
            )
        return response.text

    async def _session_token(self) -> str:
        async with self._token_lock:
            now = self._clock()
            if self._token is not None and now < self._token_until:
                return self._token
            ttl = str(int(TOKEN_TTL.total_seconds()))
            response = await self._send("PUT", _TOKEN_PATH, {_TTL_HEADER: ttl})
            if response.status_code in (400, 403, 404, 405):
                raise CredentialsRejected(
                    f"IMDS at {self._endpoint} refused the IMDSv2 session token request "
                    f"(HTTP {response.status_code}); IMDSv2 is required and the IMDSv1 fallback "
                    "is disabled by design",
                    hint="enable IMDSv2 on the instance (HttpTokens=required, HttpEndpoint="
                    f"enabled); {_HOP_LIMIT_HINT}",
                )
            token = response.text.strip() if response.status_code == 200 else ""
            if not token:
                raise CredentialsUnavailable(
                    f"IMDS at {self._endpoint} answered the IMDSv2 token request with HTTP "
                    f"{response.status_code} and no token"
                )
            self._token = token
            self._token_until = now + TOKEN_TTL - TOKEN_RENEW_BEFORE
            return token

    def _forget(self, token: str) -> None:
        if self._token == token:
            self._token = None

    async def _send(self, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        """One request with bounded retries on timeouts, connection errors, 429 and 5xx."""
        failure = ""
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._http.request(
                    method,
                    self._endpoint + path,
                    headers=headers,
                    timeout=self._timeout.total_seconds(),
                )
            except httpx.TimeoutException:
                failure = f"did not answer within {self._timeout.total_seconds():g} s"
            except httpx.TransportError as exc:
                failure = f"could not be reached ({type(exc).__name__})"
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                failure = f"answered HTTP {response.status_code}"
            if attempt < self._attempts:
                await self._sleep((self._backoff * 2 ** (attempt - 1)).total_seconds())
        hint = f"; {_HOP_LIMIT_HINT}" if method == "PUT" else ""
        raise CredentialsUnavailable(
            f"IMDS at {self._endpoint} {failure} ({method} {path}, {self._attempts} attempts){hint}"
        )


def _parse(body: str, role: str) -> AwsCredentials:
    """The credentials document. Error messages never quote the body: it holds the secret."""
    where = f"IMDS credentials for role {role}"
    try:
        data = json.loads(body)
    except ValueError:
        raise CredentialsUnavailable(f"{where} are not valid JSON") from None
    if not isinstance(data, dict):
        raise CredentialsUnavailable(f"{where} are not a JSON object")
    code = data.get("Code")
    if code is not None and code != "Success":
        shown = code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else "unexpected"
        raise CredentialsUnavailable(f"{where} are not available: IMDS reports Code {shown}")
    missing = [name for name in _REQUIRED if not isinstance(data.get(name), str) or not data[name]]
    if missing:
        raise CredentialsUnavailable(f"{where} lack {', '.join(missing)}")
    try:
        expiration = datetime.fromisoformat(data["Expiration"])
    except ValueError:
        raise CredentialsUnavailable(f"{where} have an unparseable Expiration") from None
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=UTC)  # IMDS writes UTC ("...Z")
    return AwsCredentials(
        access_key_id=data["AccessKeyId"],
        secret_access_key=data["SecretAccessKey"],
        session_token=data["Token"],  # IMDS calls it Token, not SessionToken
        expiration=expiration.astimezone(UTC),
    )
