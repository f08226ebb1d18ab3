"""AssumeRole, checked as STS does before moto issues anything:

1. the caller is authenticated by its SigV4 access key (sessions the gate saw issued, or
   principals registered through the admin API): session token, expiry and, when the secret is
   known, the signature;
2. parameters (RoleArn, RoleSessionName, DurationSeconds range, ExternalId 2-1224 chars);
3. the role exists and its trust policy allows the caller (`AWS`: the role ARN, the session ARN,
   the account root or id, `*`) with the request's condition keys (`sts:ExternalId`, ...);
4. role chaining: credentials of a role session are capped at 1 hour (EC2 instance-role
   credentials, i.e. registered principals, are not);
5. DurationSeconds within the role's MaxSessionDuration.
"""

from __future__ import annotations

import logging

from broker.standin.conditions import Context
from broker.standin.errors import access_denied, validation_error
from broker.standin.forward import Relayed
from broker.standin.iam import IamDirectory
from broker.standin.model import Principal, RoleArn
from broker.standin.principals import PrincipalRegistry
from broker.standin.query import (
    ASSUME_ROLE,
    IncomingRequest,
    QueryRequest,
    check_assume_role_params,
    duration_seconds,
    external_id,
    role_arn,
    role_session_name,
)
from broker.standin.sessions import SessionIssuer
from broker.standin.trust import RequestPrincipal, UnsupportedCondition, is_allowed
from broker.standin.web_identity import MAX_SESSION_EXCEEDED

__all__ = ["AssumeRoleExchange"]

log = logging.getLogger(__name__)

# Role chaining caps the new session at one hour (IAM user guide, id_roles_terms-and-concepts).
CHAINED_MAX_DURATION = 3600
CHAINING_EXCEEDED = (
    "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role "
    "chaining."
)


def caller_principal(caller: Principal) -> RequestPrincipal:
    names = {caller.arn}
    role = caller.role_arn or Principal.role_arn_of(caller.arn)
    if role is not None:
        names.add(role)
    account = caller.account_id
    if account is not None:
        names.update({account, f"arn:{caller.partition}:iam::{account}:root"})
    return RequestPrincipal("AWS", frozenset(names))


def condition_context(caller: Principal, query: QueryRequest, session_name: str) -> Context:
    context: dict[str, tuple[str, ...]] = {
        "sts:rolesessionname": (session_name,),
        "aws:principalarn": (caller.role_arn or Principal.role_arn_of(caller.arn) or caller.arn,),
    }
    if caller.account_id is not None:
        context["aws:principalaccount"] = (caller.account_id,)
    for key, param in (("sts:externalid", "ExternalId"), ("sts:sourceidentity", "SourceIdentity")):
        value = query.get(param)
        if value is not None:
            context[key] = (value,)
    return context


def _required_actions(query: QueryRequest) -> list[str]:
    actions = ["sts:AssumeRole"]
    if any(name.startswith(("Tags.", "TransitiveTagKeys.")) for name in query.params):
        actions.append("sts:TagSession")
    if query.get("SourceIdentity") is not None:
        actions.append("sts:SetSourceIdentity")
    return actions


class AssumeRoleExchange:
    def __init__(
        self, *, iam: IamDirectory, principals: PrincipalRegistry, sessions: SessionIssuer
    ) -> None:
        self._iam = iam
        self._principals = principals
        self._sessions = sessions

    async def __call__(self, request: IncomingRequest, query: QueryRequest) -> Relayed:
        caller = self._principals.authenticate(request, verify_signature=True)
        check_assume_role_params(query)
        arn: RoleArn = role_arn(query)
        session_name = role_session_name(query)
        duration = duration_seconds(query)
        external_id(query)

        denied = access_denied(
            f"User: {caller.arn} is not authorized to perform: sts:AssumeRole on resource: "
            f"{arn.arn}"
        )
        role = await self._iam.role(arn)
        if role is None:
            log.info("role %s does not exist", arn.arn)
            raise denied
        try:
            allowed = is_allowed(
                role.trust_policy,
                caller_principal(caller),
                _required_actions(query),
                condition_context(caller, query, session_name),
            )
        except UnsupportedCondition as exc:
            log.warning("trust policy of %s cannot be evaluated: %s", arn.arn, exc)
            allowed = False
        if not allowed:
            log.info("trust policy of %s refuses %s", arn.arn, caller.arn)
            raise denied
        if caller.role_session and duration > CHAINED_MAX_DURATION:
            raise validation_error(CHAINING_EXCEEDED)
        if duration > role.max_session_duration:
            raise validation_error(MAX_SESSION_EXCEEDED)
        log.info("%s assumes %s", caller.arn, arn.arn)
        return await self._sessions.issue(request, ASSUME_ROLE, arn.arn)
