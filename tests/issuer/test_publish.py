"""Static publishing to S3: the objects are byte-identical to what the live public listener
serves (body, Content-Type, Cache-Control), follow rotations made with the CLI, and every bad
input is one clear CLI error. S3 is moto's server over real HTTP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import httpx
import pytest
from aiobotocore.session import AioSession

from issuer.audit import FileAuditLog
from issuer.discovery import DISCOVERY_PATH, JWKS_PATH, discovery_document
from issuer.documents import StaticDocument
from issuer.errors import ConfigError
from issuer.publish import (
    RETRY_DELAY,
    AutoPublisher,
    PublishError,
    S3Publisher,
    object_keys,
    open_s3_client,
)
from issuer.runtime import build_key_manager, utc_now
from issuer.settings import PublishTarget, Settings
from tests.conftest import FakeClock
from tests.e2e import RunningWarrant, base_env, cli, free_port, running_warrant

REGION = "us-east-1"
# Dummy keys: moto accepts any unless told to enforce IAM. Never real credentials.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAPUBLISHTEST00000",
    "AWS_SECRET_ACCESS_KEY": "publish-test-secret-not-real-0000",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
ISSUER = "https://oidc.example.test"
MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")


def s3_client(url: str, **keys: str) -> Any:
    """An independent (boto3, synchronous) client: what reads the objects back."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=keys.get("id", AWS_ENV["AWS_ACCESS_KEY_ID"]),
        aws_secret_access_key=keys.get("secret", AWS_ENV["AWS_SECRET_ACCESS_KEY"]),
    )


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = "warrant-pub-" + uuid.uuid4().hex[:12]
    s3_client(moto_url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def session() -> AioSession:
    session = AioSession()
    session.set_credentials(AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"])
    session.set_config_variable("region", REGION)
    return session


@pytest.fixture
async def publisher_client(moto_url: str, session: AioSession) -> AsyncIterator[Any]:
    async with open_s3_client(moto_url, session) as client:
        yield client


def stored(url: str, bucket: str, key: str) -> tuple[bytes, str, str]:
    """Body, Content-Type and Cache-Control of an object, as S3 answers a GET."""
    answer = s3_client(url).get_object(Bucket=bucket, Key=key)
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    return answer["Body"].read(), headers["content-type"], headers["cache-control"]


def served(server: RunningWarrant, path: str) -> tuple[bytes, str, str]:
    answer = httpx.get(server.public_url + path, timeout=5)
    assert answer.status_code == 200
    return answer.content, answer.headers["content-type"], answer.headers["cache-control"]


def keys_in(url: str, bucket: str) -> set[str]:
    listing = s3_client(url).list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in listing.get("Contents", [])}


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def documents(issuer: str, jwks: bytes = b'{"keys":[]}') -> tuple[StaticDocument, StaticDocument]:
    return (
        StaticDocument.build(discovery_document(issuer, ["RS256"]), max_age=300),
        StaticDocument.build(jwks, max_age=300),
    )


# Object layout and settings.


@pytest.mark.parametrize(
    ("issuer", "prefix", "expected"),
    [
        (ISSUER, None, ".well-known/"),
        (ISSUER + "/acme", None, "acme/.well-known/"),
        (ISSUER + "/acme/oidc", None, "acme/oidc/.well-known/"),
        (ISSUER + "/acme", "", ".well-known/"),
        (ISSUER, "site/issuer", "site/issuer/.well-known/"),
    ],
)
def test_object_keys_follow_the_issuer_path_or_the_prefix(
    issuer: str, prefix: str | None, expected: str
) -> None:
    """Both keys sit where the discovery document points, under the prefix (default: the
    issuer URL's path)."""
    discovery, _ = documents(issuer)
    assert object_keys(discovery.body, issuer, prefix) == (
        expected + "openid-configuration",
        expected + "jwks.json",
    )


def test_a_jwks_uri_outside_the_issuer_cannot_be_published() -> None:
    """A jwks_uri on another host has no place in the bucket: refused, not guessed."""
    body = json.dumps({"jwks_uri": "https://elsewhere.test/jwks.json"}).encode()
    with pytest.raises(PublishError, match="not under the issuer URL"):
        object_keys(body, ISSUER, None)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WARRANT_PUBLISH_S3_BUCKET": "oidc-bucket"}, PublishTarget("oidc-bucket", None)),
        (
            {"WARRANT_PUBLISH_S3_BUCKET": "oidc.bucket-1", "WARRANT_PUBLISH_S3_PREFIX": "/a/b/"},
            PublishTarget("oidc.bucket-1", "a/b"),
        ),
        (
            {"WARRANT_PUBLISH_S3_BUCKET": "oidc-bucket", "WARRANT_PUBLISH_S3_PREFIX": "/"},
            PublishTarget("oidc-bucket", ""),
        ),
    ],
)
def test_publish_settings(tmp_path: Path, env: dict[str, str], expected: PublishTarget) -> None:
    """The bucket turns auto-publishing on; the prefix is normalised ('/' is the root)."""
    settings = Settings.from_env({"WARRANT_DATA_DIR": str(tmp_path), **env}, require_issuer=False)
    assert settings.publish == expected


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"WARRANT_PUBLISH_S3_BUCKET": "Bad_Bucket"}, "WARRANT_PUBLISH_S3_BUCKET"),
        ({"WARRANT_PUBLISH_S3_BUCKET": "ab"}, "WARRANT_PUBLISH_S3_BUCKET"),
        ({"WARRANT_PUBLISH_S3_PREFIX": "oidc"}, "WARRANT_PUBLISH_S3_BUCKET"),
        (
            {"WARRANT_PUBLISH_S3_BUCKET": "oidc-bucket", "WARRANT_PUBLISH_S3_PREFIX": "a//b"},
            "WARRANT_PUBLISH_S3_PREFIX",
        ),
        (
            {"WARRANT_PUBLISH_S3_BUCKET": "oidc-bucket", "WARRANT_PUBLISH_S3_PREFIX": "a/../b"},
            "WARRANT_PUBLISH_S3_PREFIX",
        ),
        ({"WARRANT_AWS_ENDPOINT": "s3.local:9000"}, "WARRANT_AWS_ENDPOINT"),
    ],
)
def test_bad_publish_settings_name_the_variable(
    tmp_path: Path, env: dict[str, str], names: str
) -> None:
    """Each bad publish setting fails at startup with an error naming the variable to fix."""
    with pytest.raises(ConfigError, match=names):
        Settings.from_env({"WARRANT_DATA_DIR": str(tmp_path), **env}, require_issuer=False)


# The publisher against moto's S3 server.


@pytest.mark.slow
async def test_publisher_writes_the_documents_with_their_headers(
    moto_url: str, bucket: str, publisher_client: Any
) -> None:
    """Each object holds the document's exact bytes with its Content-Type and Cache-Control."""
    discovery, jwks = documents(ISSUER + "/acme", b'{"keys":[{"kid":"k1"}]}')
    publisher = S3Publisher(
        publisher_client, bucket=bucket, prefix=None, issuer_url=ISSUER + "/acme"
    )
    written = await publisher.publish(discovery, jwks)
    assert [w.uri for w in written] == [
        f"s3://{bucket}/acme/.well-known/jwks.json",
        f"s3://{bucket}/acme/.well-known/openid-configuration",
    ]
    for document, key in ((discovery, written[1].key), (jwks, written[0].key)):
        assert stored(moto_url, bucket, key) == (
            document.body,
            "application/json",
            "public, max-age=300",
        )


@pytest.mark.slow
async def test_auto_publisher_publishes_changes_and_retries_failures(
    moto_url: str, session: AioSession
) -> None:
    """A failed publish is retried only after RETRY_DELAY; an unchanged key set is not
    rewritten; a changed one is."""
    clock = FakeClock()
    name = "warrant-late-" + uuid.uuid4().hex[:12]
    publisher = AutoPublisher(
        PublishTarget(name, None),
        issuer_url=ISSUER,
        endpoint_url=moto_url,
        clock=clock,
        session=session,
    )
    try:
        first = documents(ISSUER, b'{"keys":[{"kid":"one"}]}')
        assert not await publisher.sync(*first)  # the bucket does not exist yet
        s3_client(moto_url).create_bucket(Bucket=name)
        assert not await publisher.sync(*first)  # still waiting out the retry delay
        clock.advance(RETRY_DELAY)
        assert await publisher.sync(*first)
        assert stored(moto_url, name, ".well-known/jwks.json")[0] == first[1].body

        s3_client(moto_url).delete_object(Bucket=name, Key=".well-known/jwks.json")
        assert not await publisher.sync(*first)  # same documents: nothing written
        assert keys_in(moto_url, name) == {".well-known/openid-configuration"}

        second = documents(ISSUER, b'{"keys":[{"kid":"two"}]}')
        assert await publisher.sync(*second)
        assert stored(moto_url, name, ".well-known/jwks.json")[0] == second[1].body
    finally:
        await publisher.close()


async def test_an_unparseable_aws_config_is_a_logged_failure_then_retried(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The publisher makes its session when it first publishes: a malformed AWS_CONFIG_FILE is
    a logged failure naming the file, retried later like any other (sync never raises), and
    once the file is fixed the next try publishes."""
    name = "warrant-config-" + uuid.uuid4().hex[:12]
    s3_client(moto_url).create_bucket(Bucket=name)
    config = tmp_path / "aws-config"
    config.write_text("[default\nregion = us-east-1\n")
    for variable, value in {**AWS_ENV, "AWS_CONFIG_FILE": str(config)}.items():
        monkeypatch.setenv(variable, value)
    clock = FakeClock()
    publisher = AutoPublisher(
        PublishTarget(name, None), issuer_url=ISSUER, endpoint_url=moto_url, clock=clock
    )
    try:
        pair = documents(ISSUER, b'{"keys":[{"kid":"one"}]}')
        with caplog.at_level(logging.ERROR, logger="issuer.publish"):
            assert not await publisher.sync(*pair)
        assert f"ConfigParseError: Unable to parse config file: {config}" in caplog.text
        assert "fix the server's AWS configuration" in caplog.text
        config.write_text("[default]\nregion = us-east-1\n")
        clock.advance(RETRY_DELAY)
        assert await publisher.sync(*pair)
        assert stored(moto_url, name, ".well-known/jwks.json")[0] == pair[1].body
    finally:
        await publisher.close()


# The real CLI and the real server.


def publish_env(moto_url: str, **extra: str) -> dict[str, str]:
    return {**AWS_ENV, "WARRANT_AWS_ENDPOINT": moto_url, **extra}


@pytest.mark.slow
def test_cli_publish_is_byte_identical_to_the_live_listener(
    tmp_path: Path, moto_url: str, bucket: str
) -> None:
    """`warrant keys publish` writes exactly what `warrant serve` serves: the same bytes,
    Content-Type and Cache-Control, at the paths the discovery document names."""
    with running_warrant(tmp_path / "var", WARRANT_JWKS_MAX_AGE="120") as server:
        env = {**server.env, **publish_env(moto_url)}
        result = cli(env, "keys", "publish", "--s3-bucket", bucket)
        assert f"s3://{bucket}/.well-known/jwks.json" in result.stdout
        assert "public, max-age=120" in result.stdout
        for path in (DISCOVERY_PATH, JWKS_PATH):
            assert stored(moto_url, bucket, path.lstrip("/")) == served(server, path)
        assert keys_in(moto_url, bucket) == {
            ".well-known/openid-configuration",
            ".well-known/jwks.json",
        }


@pytest.mark.slow
def test_auto_publish_follows_a_cli_rotation(tmp_path: Path, moto_url: str, bucket: str) -> None:
    """With WARRANT_PUBLISH_S3_BUCKET set, the running service publishes on start and again
    after `warrant keys rotate`, always equal to what it serves."""
    extra = publish_env(
        moto_url,
        WARRANT_PUBLISH_S3_BUCKET=bucket,
        WARRANT_PUBLISH_S3_PREFIX="issuers/acme",
        WARRANT_KEY_RELOAD_INTERVAL="1",
    )
    discovery_key = "issuers/acme/.well-known/openid-configuration"
    jwks_key = "issuers/acme/.well-known/jwks.json"

    def in_sync(server: RunningWarrant) -> bool:
        if keys_in(moto_url, bucket) != {discovery_key, jwks_key}:
            return False
        return stored(moto_url, bucket, jwks_key) == served(server, JWKS_PATH) and stored(
            moto_url, bucket, discovery_key
        ) == served(server, DISCOVERY_PATH)

    with running_warrant(tmp_path / "var", **extra) as server:
        eventually(lambda: in_sync(server))
        before = stored(moto_url, bucket, jwks_key)[0]

        cli(server.env, "keys", "rotate", "--force")
        eventually(lambda: stored(moto_url, bucket, jwks_key)[0] != before)
        eventually(lambda: in_sync(server))
        after = stored(moto_url, bucket, jwks_key)[0]
        assert kids(after) > kids(before)  # the new pending key joined; none was dropped
    assert "Traceback" not in server.logs()


def kids(jwks: bytes) -> set[str]:
    return {key["kid"] for key in json.loads(jwks)["keys"]}


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A data directory whose key store holds a first key set, as after a first start."""
    data_dir = tmp_path / "var"
    settings = Settings.from_env({"WARRANT_DATA_DIR": str(data_dir), "WARRANT_ISSUER_URL": ISSUER})

    async def seed() -> None:
        audit = FileAuditLog(settings.audit_path, utc_now)
        await build_key_manager(settings, utc_now, audit).ensure_initialized()
        await audit.close()

    asyncio.run(seed())
    return data_dir


def run_publish(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = base_env(data_dir, **{"WARRANT_ISSUER_URL": ISSUER, **AWS_ENV, **extra})
    return cli(env, "keys", "publish", *args, check=False)


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.mark.slow
def test_cli_publish_defaults_to_the_settings(seeded: Path, moto_url: str, bucket: str) -> None:
    """Without options the CLI publishes to WARRANT_PUBLISH_S3_BUCKET/_PREFIX; an issuer URL
    with a path puts the documents under that path."""
    result = run_publish(
        seeded,
        WARRANT_AWS_ENDPOINT=moto_url,
        WARRANT_PUBLISH_S3_BUCKET=bucket,
        WARRANT_ISSUER_URL=ISSUER + "/acme",
    )
    assert result.returncode == 0, result.stderr
    assert keys_in(moto_url, bucket) == {
        "acme/.well-known/openid-configuration",
        "acme/.well-known/jwks.json",
    }
    discovery = json.loads(stored(moto_url, bucket, "acme/.well-known/openid-configuration")[0])
    assert discovery["jwks_uri"] == ISSUER + "/acme/.well-known/jwks.json"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "extra", "fragments"),
    [
        ((), {}, ("no bucket", "--s3-bucket", "WARRANT_PUBLISH_S3_BUCKET")),
        (("--s3-bucket", "Not_A_Bucket"), {}, ("--s3-bucket='Not_A_Bucket'",)),
        (("--s3-bucket", "oidc-bucket", "--prefix", "a/../b"), {}, ("--prefix",)),
        (("--s3-bucket", "oidc-bucket"), {"WARRANT_ISSUER_URL": ""}, ("WARRANT_ISSUER_URL",)),
    ],
)
def test_cli_publish_refuses_bad_input(
    seeded: Path, args: tuple[str, ...], extra: dict[str, str], fragments: tuple[str, ...]
) -> None:
    """Missing or malformed bucket, prefix or issuer: one error line naming what to fix."""
    assert_clean_error(run_publish(seeded, *args, **extra), *fragments)


@pytest.mark.slow
def test_cli_publish_with_a_broken_aws_configuration(seeded: Path) -> None:
    """An unparseable AWS_CONFIG_FILE or an unknown AWS_PROFILE: one error line naming it."""
    config = seeded.parent / "aws-config"
    config.write_text("[default\nregion = us-east-1\n")
    result = run_publish(seeded, "--s3-bucket", "oidc-bucket", AWS_CONFIG_FILE=str(config))
    assert_clean_error(result, "ConfigParseError", str(config), "AWS_CONFIG_FILE")
    result = run_publish(seeded, "--s3-bucket", "oidc-bucket", AWS_PROFILE="no-such-profile")
    assert_clean_error(result, "ProfileNotFound", "no-such-profile", "AWS_PROFILE")


@pytest.mark.slow
def test_cli_publish_with_an_unreachable_endpoint(seeded: Path) -> None:
    """Nothing listens at the endpoint: the error names it and the settings that choose it."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    result = run_publish(seeded, "--s3-bucket", "oidc-bucket", WARRANT_AWS_ENDPOINT=endpoint)
    assert_clean_error(result, "cannot reach S3", endpoint, "WARRANT_AWS_ENDPOINT")


@pytest.mark.slow
def test_cli_publish_to_a_missing_bucket(seeded: Path, moto_url: str) -> None:
    """A bucket that does not exist is named, with how to fix it."""
    result = run_publish(
        seeded, "--s3-bucket", "warrant-no-such-bucket", WARRANT_AWS_ENDPOINT=moto_url
    )
    assert_clean_error(result, "'warrant-no-such-bucket' does not exist", "NoSuchBucket")


@pytest.mark.slow
def test_cli_publish_with_an_empty_key_store(tmp_path: Path, moto_url: str, bucket: str) -> None:
    """Before the first start there are no keys: publishing an empty JWKS is refused."""
    result = run_publish(tmp_path / "var", "--s3-bucket", bucket, WARRANT_AWS_ENDPOINT=moto_url)
    assert_clean_error(result, "no published keys")
    assert keys_in(moto_url, bucket) == set()


@contextmanager
def moto_enforcing_iam(free_actions: int) -> Iterator[str]:
    """moto's server in its own process with IAM enforced after `free_actions` requests (the
    switch is process-wide, so it must not touch the shared in-process server)."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(free_actions)}
    process = subprocess.Popen(
        [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url + "/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise AssertionError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
def test_cli_publish_denied_names_the_missing_permission(seeded: Path) -> None:
    """An identity without s3:PutObject gets AccessDenied, explained with the permission and
    object it needs, and never its secret."""
    with moto_enforcing_iam(free_actions=4) as url:
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        s3_client(url).create_bucket(Bucket="oidc-denied")
        iam.create_user(UserName="reader")
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(
            UserName="reader",
            PolicyName="read-only",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
                }
            ),
        )
        result = run_publish(
            seeded,
            "--s3-bucket",
            "oidc-denied",
            WARRANT_AWS_ENDPOINT=url,
            AWS_ACCESS_KEY_ID=key["AccessKeyId"],
            AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"],
        )
    assert_clean_error(
        result,
        "AccessDenied",
        "s3:PutObject on arn:aws:s3:::oidc-denied/.well-known/jwks.json",
    )
    assert key["SecretAccessKey"] not in result.stderr + result.stdout
