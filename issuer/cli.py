"""`warrant` — the operator's command line. Builds real objects from the environment; every
error is one line on stderr that says what to fix, and exit status 1."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
import httpx
import uvloop
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from issuer import migrations
from issuer.apikeys import Role, SqlApiKeyStore
from issuer.audit import FileAuditLog
from issuer.db import create_engine
from issuer.doctor import run_checks
from issuer.errors import ConfigError, IssuerError
from issuer.http import iso
from issuer.logs import configure_logging
from issuer.publish import S3Publisher, load_documents, open_s3_client
from issuer.runtime import build_key_manager, utc_now
from issuer.settings import Settings, normalize_prefix, validate_bucket
from issuer.tenants import SqlTenantStore, audience_for
from keys.cli import keys as keys_group
from keys.errors import KeysError
from keys.manager import KeyManager

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("warrant")


@dataclass
class CliContext:
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def settings(self, *, serving: bool = False) -> Settings:
        return Settings.from_env(self.env, require_issuer=serving)

    def key_manager_factory(self) -> KeyManager:
        settings = self.settings()
        return build_key_manager(settings, utc_now, FileAuditLog(settings.audit_path, utc_now))


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def run_async(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T | None]:
    """Run the command's coroutine; known errors become one clean line, never a traceback."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T | None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(func(*args, **kwargs))
        except (IssuerError, KeysError) as exc:
            fail(str(exc))
        except SQLAlchemyError as exc:
            fail(
                f"database error ({type(exc).__name__}); check WARRANT_DATABASE_URL and that "
                "the database is reachable"
            )
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="warrant")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Warrant: an OIDC issuer and short-lived AWS credential broker for sandboxed agents."""
    ctx.obj = CliContext()
    try:
        configure_logging(os.environ)
    except ConfigError as exc:
        fail(exc.message)


main.add_command(keys_group)


@keys_group.command("publish")
@click.option(
    "--s3-bucket", metavar="BUCKET", help="Bucket to write to [default: WARRANT_PUBLISH_S3_BUCKET]."
)
@click.option(
    "--prefix",
    help="Where the issuer URL's root lives in the bucket ('/' for the bucket root) "
    "[default: WARRANT_PUBLISH_S3_PREFIX, else the issuer URL's path].",
)
@click.pass_obj
@run_async
async def keys_publish(obj: CliContext, s3_bucket: str | None, prefix: str | None) -> None:
    """Write discovery and JWKS to S3, byte-identical to what the public listener serves."""
    settings = obj.settings(serving=True)
    target = settings.publish
    if s3_bucket is not None:
        bucket = validate_bucket(s3_bucket, "--s3-bucket")
    elif target is not None:
        bucket = target.bucket
    else:
        fail("no bucket: pass --s3-bucket BUCKET or set WARRANT_PUBLISH_S3_BUCKET")
        return
    if prefix is not None:
        key_prefix = normalize_prefix(prefix, "--prefix")
    else:
        key_prefix = None if target is None else target.prefix
    discovery, jwks = await load_documents(
        obj.key_manager_factory().store,
        issuer_url=settings.issuer_url,
        max_age=int(settings.policy.jwks_max_age.total_seconds()),
    )
    async with open_s3_client(settings.aws_endpoint) as client:
        publisher = S3Publisher(
            client, bucket=bucket, prefix=key_prefix, issuer_url=settings.issuer_url
        )
        written = await publisher.publish(discovery, jwks)
    for item in written:
        click.echo(f"published {item.uri} ({item.content_type}; {item.cache_control})")
    click.echo(
        f"serve the bucket at {settings.issuer_url} (e.g. through CloudFront) so that AWS STS "
        "fetches these copies"
    )


DEV_WARNING = """\
WARNING: WARRANT_DEV=1 — development mode. The issuer URL may be plain http on 127.0.0.1, which
WARNING: AWS STS can never reach or trust. Do not run this configuration in production."""


@asynccontextmanager
async def open_engine(obj: CliContext) -> AsyncIterator[AsyncEngine]:
    """The database of the settings in force, with its schema, disposed of on the way out."""
    settings = obj.settings()
    engine = create_engine(settings.database_url, settings.database_pool)
    try:
        await migrations.prepare(engine, auto_migrate=settings.database_auto_migrate)
        yield engine
    finally:
        await engine.dispose()


@main.command("doctor")
@click.option("--issuer-url", help="Check this issuer instead of WARRANT_ISSUER_URL.")
@click.pass_obj
@run_async
async def doctor(obj: CliContext, issuer_url: str | None) -> None:
    """Check the public side as AWS STS sees it: discovery, JWKS, issuer, cache headers, keys."""
    url = issuer_url or obj.settings(serving=True).issuer_url
    async with httpx.AsyncClient(follow_redirects=False) as client:
        checks = await run_checks(url, client)
    for check in checks:
        click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    failed = [c for c in checks if not c.ok]
    if failed:
        fail(f"{len(failed)} of {len(checks)} checks failed for {url}")
    click.echo(f"all {len(checks)} checks passed for {url}")


@main.group()
def tenants() -> None:
    """Tenants: each gets its own token audience, <slug>-oidc-service."""


@tenants.command("add")
@click.argument("slug")
@click.option("--name", help="Friendly name (defaults to the slug).")
@click.pass_obj
@run_async
async def tenants_add(obj: CliContext, slug: str, name: str | None) -> None:
    """Add a tenant."""
    async with open_engine(obj) as engine:
        store = SqlTenantStore(engine, utc_now)
        tenant = await store.add(slug, name)
    click.echo(
        f"added tenant {tenant.slug} ({tenant.name}); token audience: {audience_for(tenant.slug)}"
    )


@tenants.command("list")
@click.pass_obj
@run_async
async def tenants_list(obj: CliContext) -> None:
    """List tenants."""
    async with open_engine(obj) as engine:
        store = SqlTenantStore(engine, utc_now)
        rows = await store.list()
    if not rows:
        click.echo("no tenants; add one with 'warrant tenants add SLUG'")
        return
    click.echo(f"{'SLUG':<24} {'AUDIENCE':<40} {'CREATED':<21} NAME")
    for t in rows:
        click.echo(f"{t.slug:<24} {audience_for(t.slug):<40} {iso(t.created_at):<21} {t.name}")


@tenants.command("remove")
@click.argument("slug")
@click.pass_obj
@run_async
async def tenants_remove(obj: CliContext, slug: str) -> None:
    """Remove a tenant: no more tokens are minted for it."""
    async with open_engine(obj) as engine:
        store = SqlTenantStore(engine, utc_now)
        await store.remove(slug)
    click.echo(f"removed tenant {slug}; running services stop minting for it within seconds")


@main.group()
def apikeys() -> None:
    """API keys of the internal listener (roles: admin, agent)."""


@apikeys.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.pass_obj
@run_async
async def apikeys_create(obj: CliContext, role: str) -> None:
    """Create an API key; the key is printed once, on stdout, and never stored in clear."""
    async with open_engine(obj) as engine:
        store = SqlApiKeyStore(engine, utc_now)
        key, secret = await store.create(Role(role))
    click.echo(f"created {key.role.value} key {key.key_id}", err=True)
    click.echo(secret)


@apikeys.command("list")
@click.pass_obj
@run_async
async def apikeys_list(obj: CliContext) -> None:
    """List API keys (ids and roles only)."""
    async with open_engine(obj) as engine:
        store = SqlApiKeyStore(engine, utc_now)
        rows = await store.list()
    click.echo(f"{'ID':<14} {'ROLE':<6} CREATED")
    for k in rows:
        click.echo(f"{k.key_id:<14} {k.role.value:<6} {iso(k.created_at)}")


@apikeys.command("revoke")
@click.argument("key_id")
@click.pass_obj
@run_async
async def apikeys_revoke(obj: CliContext, key_id: str) -> None:
    """Revoke an API key."""
    async with open_engine(obj) as engine:
        store = SqlApiKeyStore(engine, utc_now)
        await store.revoke(key_id)
    click.echo(f"revoked API key {key_id}; running services reject it within seconds")


@main.group("db")
def db_group() -> None:
    """The database schema. Startup upgrades it unless WARRANT_DATABASE_AUTO_MIGRATE=0."""


@db_group.command("upgrade")
@click.pass_obj
@run_async
async def db_upgrade(obj: CliContext) -> None:
    """Upgrade the schema to this release's (run at startup too).

    Adopts a database made before migrations; safe from several hosts at once; never drops data.
    """
    settings = obj.settings()
    engine = create_engine(settings.database_url, settings.database_pool)
    try:
        result = await migrations.upgrade(engine)
    finally:
        await engine.dispose()
    if result.before.ahead:
        fail(f"database schema {result.describe()}; nothing this release can do")
    click.echo(f"database schema {result.describe()}")


@db_group.command("current")
@click.option("--check", is_flag=True, help="Exit with status 1 unless the schema is current.")
@click.pass_obj
@run_async
async def db_current(obj: CliContext, check: bool) -> None:
    """Show the schema revision of the database and this release's."""
    settings = obj.settings()
    engine = create_engine(settings.database_url, settings.database_pool)
    try:
        current = await migrations.status(engine)
    finally:
        await engine.dispose()
    click.echo(f"database schema {current.describe()}")
    if check and not current.up_to_date:
        sys.exit(1)
