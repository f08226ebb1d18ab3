"""generate(): one integration -> setup and teardown text in the requested format. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.model import Integration
from broker.setup import render_cli, render_cloudformation, render_json, render_terraform
from broker.setup.plan import Format, make_plan
from broker.setup.policies import PolicyChoice, Profile

__all__ = ["SetupOutput", "generate"]


@dataclass(frozen=True, slots=True)
class SetupOutput:
    """What an admin runs to connect an account (`setup`) and to disconnect it (`teardown`).

    `our_side` is, for `instance_role`, the policy JSON Warrant's own role needs (in Warrant's
    account); `documents` holds the parsed JSON of the `json` format (setup and teardown)."""

    format: Format
    setup: str
    teardown: str
    our_side: str | None = None
    documents: dict[str, Any] = field(default_factory=dict)


def generate(
    integration: Integration,
    *,
    issuer_url: str | None,
    format: Format,  # shadows the builtin on purpose: the CLI option and query name
    profile: Profile = Profile.INCIDENT,
    policy: PolicyChoice = PolicyChoice.PROFILE,
    warrant_principal_arn: str | None = None,
    now: datetime,
    dev: bool = False,
) -> SetupOutput:
    """Setup and teardown for `integration` in `format`.

    `issuer_url` is our issuer (the `iss` of our tokens); it must be https unless `dev`. `now` is
    the teardown's revoke-sessions cut-off. Raises issuer.errors.BadRequest for a combination that
    cannot work (instance_role without `warrant_principal_arn`, an http issuer without `dev`, a
    session duration no role allows, a trust policy over IAM's 2048 characters).
    """
    plan = make_plan(
        integration,
        issuer_url=issuer_url,
        profile=profile,
        policy=policy,
        warrant_principal_arn=warrant_principal_arn,
        now=now,
        dev=dev,
    )
    our_side = json.dumps(plan.our_side, indent=2) if plan.our_side is not None else None
    match format:
        case Format.CLI:
            setup = render_cli.setup_script(plan)
            teardown = render_cli.teardown_script(plan)
            documents: dict[str, Any] = {}
        case Format.JSON:
            documents = {
                "setup": render_json.setup_document(plan),
                "teardown": render_json.teardown_document(plan),
            }
            setup = render_json.to_text(documents["setup"])
            teardown = render_json.to_text(documents["teardown"])
        case Format.CLOUDFORMATION:
            setup = render_cloudformation.template_text(plan)
            teardown = render_cloudformation.teardown_script(plan)
            documents = {}
        case Format.TERRAFORM:
            setup = render_terraform.configuration(plan)
            teardown = render_terraform.teardown_script(plan)
            documents = {}
    return SetupOutput(
        format=format, setup=setup, teardown=teardown, our_side=our_side, documents=documents
    )
