"""`warrant demo` (what `make run` runs): the whole flow offline.

Starts the strict STS stand-in (moto behind the token and trust-policy gate), serves Warrant
against it, and sets up a demo tenant end to end: the IAM OIDC provider and a role trusting our
issuer (audience and subject pinned), an integration, and a sandbox. Then it prints an AWS CLI
command that runs with nothing but the sandbox's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import click

from broker.banner import ready_banner
from broker.model import Delivery
from broker.runtime import WarrantRuntime
from broker.settings import BrokerSettings
from broker.setup import Profile, permissions_policy, trust_policy
from issuer.errors import NotFound, TenantExists
from issuer.server import serve
from issuer.settings import Address, Settings

DEMO_TENANT = "demo"
DEMO_INTEGRATION = "demo-account"
DEMO_ACCOUNT = "123456789012"  # moto's default account
DEMO_ROLE = "warrant-demo-reader"
DEMO_STS_ADDR = Address("127.0.0.1", 8084)
# moto ignores these; the gate never sees them as a caller (setup calls go to IAM only).
SETUP_KEYS = {"aws_access_key_id": "AKIADEMOSETUP0000000", "aws_secret_access_key": "demo"}


async def run_demo(
    settings: Settings, broker_settings: BrokerSettings, sts_addr: Address = DEMO_STS_ADDR
) -> None:
    # The stand-in (moto) is the `standin` extra, absent from production installs.
    from broker.standin import StandIn  # noqa: PLC0415

    with StandIn(host=sts_addr.host, port=sts_addr.port, allow_http_issuers=True) as standin:
        bs = replace(
            broker_settings, sts_endpoint=standin.endpoint_url, aws_endpoint=standin.endpoint_url
        )
        runtime = await WarrantRuntime.open(settings, bs)
        ready = asyncio.Event()

        def on_ready() -> None:
            click.echo(ready_banner(runtime))
            ready.set()

        async def background() -> None:
            # Runs beside the listeners: they are serving before the stand-in fetches our JWKS.
            await ready.wait()
            click.echo(await set_up(runtime, standin.endpoint_url))
            await runtime.run_background()

        try:
            await serve(
                runtime.listeners(),
                services=runtime.services(),
                background=background,
                on_ready=on_ready,
            )
        finally:
            await runtime.close()


async def set_up(runtime: WarrantRuntime, sts_url: str) -> str:
    issuer_url = runtime.issuer.settings.issuer_url
    with contextlib.suppress(TenantExists):
        await runtime.issuer.tenants.add(DEMO_TENANT, "Demo tenant")
    try:
        integration = await runtime.service.get_integration(DEMO_TENANT, DEMO_INTEGRATION)
    except NotFound:
        integration = await runtime.service.add_integration(
            DEMO_TENANT,
            {
                "name": DEMO_INTEGRATION,
                "account_id": DEMO_ACCOUNT,
                "role_arn": f"arn:aws:iam::{DEMO_ACCOUNT}:role/{DEMO_ROLE}",
            },
        )
    iam = boto3.client("iam", endpoint_url=sts_url, region_name="us-east-1", **SETUP_KEYS)
    iam.create_open_id_connect_provider(
        Url=issuer_url, ClientIDList=[f"{DEMO_TENANT}-oidc-service"]
    )
    # The same documents `warrant setup` gives a customer: audience and subject pinned.
    trust = trust_policy(integration, issuer_url, dev=True)
    iam.create_role(RoleName=DEMO_ROLE, AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName=DEMO_ROLE,
        PolicyName="read-only",
        PolicyDocument=json.dumps(permissions_policy(Profile.INCIDENT)),
    )
    grant = await runtime.service.create_sandbox(
        tenant=DEMO_TENANT,
        integration_ref=integration.id,
        ttl_seconds=3600,
        session_policy=None,
        delivery=Delivery.CONTAINER,
    )
    env = {**grant.env, "AWS_ENDPOINT_URL_STS": sts_url}
    aws = Path(sys.executable).with_name("aws")
    command = (
        'env -i PATH="$PATH" '
        + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        + f" {aws} sts get-caller-identity"
    )
    return f"""
Demo set up against the local STS stand-in at {sts_url} (moto behind a strict gate that checks
our token's signature, iss, aud, exp and the role's trust policy, as AWS STS does):
  tenant       {DEMO_TENANT}  (token audience {DEMO_TENANT}-oidc-service)
  integration  {integration.id}  role {integration.role_arn}
  sandbox      {grant.sandbox.id}  (expires {grant.sandbox.expires_at:%Y-%m-%dT%H:%M:%SZ})

An AWS CLI call with nothing but the sandbox's environment (AWS_ENDPOINT_URL_STS points the CLI
at the stand-in, since no real AWS is reachable from here):

  {command}

The sandbox's SDK polls {runtime.broker_settings.sandbox_url} and gets fresh
credentials before these expire; every vend is in {runtime.issuer.settings.audit_path}."""
