"""`warrant` — the whole command line: the issuer's commands plus `serve` (every listener),
`integrations` and `credential-process`. This is the console script's entry point."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from broker.banner import ready_banner
from broker.credential_process import CredentialProcessError, fetch, render
from broker.delivery.http import DISCONNECT_NOTE
from broker.integrations import SqlIntegrationStore
from broker.model import Integration
from broker.runtime import WarrantRuntime
from broker.sandboxes import SqlSandboxStore
from broker.settings import BrokerSettings
from broker.setup import Format, PolicyChoice, Profile, generate
from issuer.audit import AuditEvent, FileAuditLog
from issuer.cli import DEV_WARNING, CliContext, fail, main, open_engine, run_async
from issuer.errors import BadRequest, ConfigError
from issuer.http import iso
from issuer.runtime import utc_now
from issuer.server import serve
from issuer.settings import parse_address

__all__ = ["main"]


def broker_settings(obj: CliContext) -> BrokerSettings:
    return BrokerSettings.from_env(obj.env, data_dir=obj.settings().data_dir)


@main.command("serve")
@click.pass_obj
@run_async
async def serve_command(obj: CliContext) -> None:
    """Start the public, internal and sandbox listeners."""
    settings = obj.settings(serving=True)
    bs = BrokerSettings.from_env(obj.env, data_dir=settings.data_dir)
    if settings.dev:
        click.echo(DEV_WARNING, err=True)
    runtime = await WarrantRuntime.open(settings, bs)
    try:
        await serve(
            runtime.listeners(),
            services=runtime.services(),
            background=runtime.run_background,
            on_ready=lambda: click.echo(ready_banner(runtime)),
        )
    finally:
        await runtime.close()


@main.command("demo")
@click.pass_obj
@run_async
async def demo_command(obj: CliContext) -> None:
    """Serve Warrant against a local STS stand-in and set up a demo tenant end to end."""
    # The demo needs the `standin` extra (moto), absent from production installs.
    from broker.demo import DEMO_STS_ADDR, run_demo  # noqa: PLC0415

    settings = obj.settings(serving=True)
    if not settings.dev:
        raise ConfigError("warrant demo runs only in development mode: set WARRANT_DEV=1")
    click.echo(DEV_WARNING, err=True)
    sts_addr = parse_address(obj.env, "WARRANT_DEMO_STS_ADDR", str(DEMO_STS_ADDR))
    await run_demo(settings, BrokerSettings.from_env(obj.env, data_dir=settings.data_dir), sts_addr)


@dataclass
class BrokerStores:
    integrations: SqlIntegrationStore
    sandboxes: SqlSandboxStore
    audit: FileAuditLog


@asynccontextmanager
async def broker_stores(obj: CliContext) -> AsyncIterator[BrokerStores]:
    settings = obj.settings()
    floor = int(broker_settings(obj).credential_floor.total_seconds())
    async with open_engine(obj) as engine:
        audit = FileAuditLog(settings.audit_path, utc_now)
        try:
            yield BrokerStores(
                SqlIntegrationStore(engine, utc_now, floor_seconds=floor),
                SqlSandboxStore(engine, utc_now),
                audit,
            )
        finally:
            await audit.close()


def describe(integration: Integration) -> str:
    lines = [
        f"id                {integration.id}",
        f"tenant            {integration.tenant}",
        f"name              {integration.name}",
        f"method            {integration.method.value}",
        f"profile           {integration.profile}",
        f"account           {integration.account_id}",
        f"role              {integration.role_arn}",
        f"region            {integration.region}",
        f"session duration  {integration.session_duration}s",
        f"created           {iso(integration.created_at)}",
    ]
    if integration.target_role_arn:
        lines.append(f"target role       {integration.target_role_arn}")
    if integration.external_id:
        lines.append(f"external id       {integration.external_id}")
    if integration.session_policy:
        lines.append(f"session policy    {integration.session_policy}")
    return "\n".join(lines)


@main.group()
def integrations() -> None:
    """A tenant's AWS accounts: one integration per account and region."""


@integrations.command("add")
@click.argument("tenant")
@click.argument("name")
@click.option("--account-id", required=True, help="The customer's 12-digit AWS account id.")
@click.option("--role-arn", required=True, help="arn:aws:iam::<account-id>:role/<name>")
@click.option("--region", help="Default us-east-1.")
@click.option(
    "--method", type=click.Choice(["oidc", "instance_role"]), default="oidc", show_default=True
)
@click.option("--target-role-arn", help="instance_role only: a further cross-account hop.")
@click.option("--session-duration", type=int, help="Seconds; default 3600.")
@click.option("--session-policy", help="Inline session policy JSON, or @FILE.")
@click.option(
    "--profile",
    "capability_profile",
    type=click.Choice(["incident", "analysis"]),
    default="incident",
    show_default=True,
    help="What the agents may read: incident (on-call) or analysis.",
)
@click.pass_obj
@run_async
async def integrations_add(
    obj: CliContext,
    tenant: str,
    name: str,
    account_id: str,
    role_arn: str,
    region: str | None,
    method: str,
    target_role_arn: str | None,
    session_duration: int | None,
    session_policy: str | None,
    capability_profile: str,
) -> None:
    """Add an integration to TENANT."""
    if session_policy and session_policy.startswith("@"):
        session_policy = _read_policy_file(Path(session_policy[1:]))
    async with broker_stores(obj) as stores:
        integration = await stores.integrations.add(
            tenant,
            name=name,
            account_id=account_id,
            role_arn=role_arn,
            region=region,
            method=method,
            target_role_arn=target_role_arn,
            session_duration=session_duration,
            session_policy=session_policy,
            profile=capability_profile,
        )
        await stores.audit.write(
            AuditEvent(
                event="integration.add",
                outcome="ok",
                tenant=tenant,
                integration=integration.id,
                role_arn=integration.role_arn,
                detail="via CLI",
            )
        )
    click.echo(describe(integration))


def _read_policy_file(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise BadRequest(f"--session-policy @{path}: {exc.strerror}") from None


@integrations.command("list")
@click.argument("tenant")
@click.pass_obj
@run_async
async def integrations_list(obj: CliContext, tenant: str) -> None:
    """List TENANT's integrations."""
    async with broker_stores(obj) as stores:
        rows = await stores.integrations.list(tenant)
    if not rows:
        click.echo(f"no integrations for {tenant}; add one with 'warrant integrations add'")
        return
    click.echo(f"{'ID':<22} {'NAME':<20} {'METHOD':<14} {'ACCOUNT':<13} {'REGION':<15} ROLE")
    for i in rows:
        click.echo(
            f"{i.id:<22} {i.name:<20} {i.method.value:<14} {i.account_id:<13} "
            f"{i.region:<15} {i.role_arn}"
        )


@integrations.command("show")
@click.argument("tenant")
@click.argument("ref")
@click.pass_obj
@run_async
async def integrations_show(obj: CliContext, tenant: str, ref: str) -> None:
    """Show one integration (REF is its id or name)."""
    async with broker_stores(obj) as stores:
        integration = await stores.integrations.get(tenant, ref)
    click.echo(describe(integration))


@integrations.command("test")
@click.argument("tenant")
@click.argument("ref")
@click.option(
    "--profile",
    type=click.Choice([p.value for p in Profile]),
    help="Default: the integration's profile.",
)
@click.pass_obj
@run_async
async def integrations_test(obj: CliContext, tenant: str, ref: str, profile: str | None) -> None:
    """Test an integration: credentials, identity, then each capability, step by step."""
    settings = obj.settings(serving=True)
    runtime = await WarrantRuntime.open(settings, broker_settings(obj))
    try:
        report = await runtime.service.test_integration(
            tenant, ref, profile=Profile(profile) if profile else None, progress=click.echo
        )
    finally:
        await runtime.close()
    if report.status != "active":
        fail(f"integration {report.integration_id} failed: {report.error}")
    allowed = sum(c.status == "allowed" for c in report.capabilities)
    click.echo(
        f"integration {report.integration_id} is active: {allowed} of "
        f"{len(report.capabilities)} capabilities allowed"
    )


@integrations.command("remove")
@click.argument("tenant")
@click.argument("ref")
@click.pass_obj
@run_async
async def integrations_remove(obj: CliContext, tenant: str, ref: str) -> None:
    """Remove an integration and revoke its sandboxes."""
    async with broker_stores(obj) as stores:
        integration = await stores.integrations.get(tenant, ref)
        revoked = await stores.sandboxes.revoke_for_integration(integration.id)
        await stores.integrations.remove(tenant, integration.id)
        await stores.audit.write(
            AuditEvent(
                event="integration.remove",
                outcome="ok",
                tenant=tenant,
                integration=integration.id,
                role_arn=integration.role_arn,
                detail=f"via CLI; revoked {len(revoked)} sandboxes",
            )
        )
    click.echo(
        f"removed integration {integration.id} ({integration.name}); revoked "
        f"{len(revoked)} sandbox(es). Running services stop vending within seconds."
    )
    click.echo(DISCONNECT_NOTE)


@main.command("setup")
@click.argument("tenant")
@click.argument("integration")
@click.option(
    "--format",
    "format_",
    type=click.Choice([f.value for f in Format]),
    default=Format.CLI.value,
    show_default=True,
)
@click.option(
    "--profile",
    type=click.Choice([p.value for p in Profile]),
    help="Default: the integration's profile (incident or analysis).",
)
@click.option(
    "--policy",
    type=click.Choice([p.value for p in PolicyChoice]),
    default=PolicyChoice.PROFILE.value,
    show_default=True,
    help="The profile's least-privilege policy, or AWS managed ReadOnlyAccess.",
)
@click.option(
    "--warrant-principal-arn",
    help="instance_role: the ARN of Warrant's own (EC2 instance) role to trust.",
)
@click.option("--teardown", is_flag=True, help="Print the disconnect steps instead.")
@click.pass_obj
@run_async
async def setup_command(
    obj: CliContext,
    tenant: str,
    integration: str,
    format_: str,
    profile: str | None,
    policy: str,
    warrant_principal_arn: str | None,
    teardown: bool,
) -> None:
    """Print what the customer's cloud admin runs to connect INTEGRATION (or to disconnect it)."""
    settings = obj.settings(serving=True)
    async with broker_stores(obj) as stores:
        found = await stores.integrations.get(tenant, integration)
    output = generate(
        found,
        issuer_url=settings.issuer_url,
        format=Format(format_),
        profile=Profile(profile or found.profile),
        policy=PolicyChoice(policy),
        warrant_principal_arn=warrant_principal_arn,
        now=utc_now(),
        dev=settings.dev,
    )
    click.echo(output.teardown if teardown else output.setup)
    if output.our_side and not teardown:
        click.echo("\n# Warrant's own role needs this policy (in Warrant's account):", err=True)
        click.echo(output.our_side, err=True)


@main.command("credential-process")
@click.option("--url", required=True, help="The sandbox credentials URL (WARRANT_SANDBOX_URL).")
@click.option(
    "--token-file",
    required=True,
    type=click.Path(path_type=Path),
    help="File holding the sandbox token; re-read on every call.",
)
def credential_process(url: str, token_file: Path) -> None:
    """Print the sandbox's credentials as AWS credential_process JSON."""
    try:
        click.echo(render(fetch(url, token_file)))
    except CredentialProcessError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
