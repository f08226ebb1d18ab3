"""AssumeRoleWithWebIdentity, checked in the order STS does before moto issues anything:

1. parameters (no Tags/ExternalId/SourceIdentity/ProviderId; RoleArn, RoleSessionName,
   WebIdentityToken length, DurationSeconds range);
2. the token's `iss` has an IAM OIDC provider in the role's account (https only, unless
   `allow_http_issuers`);
3. discovery + JWKS fetched (5 s, HTTP 200, discovery `issuer` == `iss`), key chosen by `kid`,
   RS*/ES* signature verified with PyJWT;
4. claims: `aud` present and in the provider's client IDs, integer NumericDates, `exp` (5 min
   skew), `nbf`, `sub`;
5. the role exists and its trust policy allows the provider with the token's condition keys;
6. DurationSeconds within the role's MaxSessionDuration.
"""

from __future__ import annotations

import logging

from broker.standin.conditions import Context
from broker.standin.errors import access_denied, invalid_identity_token, validation_error
from broker.standin.forward import Relayed
from broker.standin.iam import IamDirectory
from broker.standin.idp import IdpKeys
from broker.standin.model import Clock, OidcProvider
from broker.standin.query import (
    ASSUME_ROLE_WITH_WEB_IDENTITY,
    IncomingRequest,
    QueryRequest,
    check_web_identity_params,
    duration_seconds,
    role_arn,
    role_session_name,
    web_identity_token,
)
from broker.standin.sessions import SessionIssuer
from broker.standin.tokens import WebIdentity, check_claims, read_unverified, verify_signature
from broker.standin.trust import RequestPrincipal, UnsupportedCondition, is_allowed

__all__ = ["WebIdentityExchange"]

log = logging.getLogger(__name__)

DENIED = "Not authorized to perform sts:AssumeRoleWithWebIdentity"
MAX_SESSION_EXCEEDED = (
    "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
)


def condition_context(provider: OidcProvider, identity: WebIdentity, session_name: str) -> Context:
    """Only these keys exist: AWS offers no condition keys for custom claims."""
    prefix = provider.url.lower()
    context: dict[str, tuple[str, ...]] = {
        f"{prefix}:aud": (identity.audience,),
        f"{prefix}:sub": (identity.subject,),
        "sts:rolesessionname": (session_name,),
    }
    if identity.azp is not None:
        context[f"{prefix}:azp"] = (identity.azp,)
    if identity.amr:
        context[f"{prefix}:amr"] = identity.amr
    if identity.source_identity is not None:
        context["sts:sourceidentity"] = (identity.source_identity,)
    return context


class WebIdentityExchange:
    def __init__(
        self,
        *,
        iam: IamDirectory,
        keys: IdpKeys,
        sessions: SessionIssuer,
        clock: Clock,
        allow_http_issuers: bool,
    ) -> None:
        self._iam = iam
        self._keys = keys
        self._sessions = sessions
        self._clock = clock
        self._allow_http = allow_http_issuers

    async def __call__(self, request: IncomingRequest, query: QueryRequest) -> Relayed:
        check_web_identity_params(query)
        arn = role_arn(query)
        session_name = role_session_name(query)
        token = web_identity_token(query)
        duration = duration_seconds(query)

        unverified = read_unverified(token)
        issuer = unverified.issuer
        no_provider = invalid_identity_token(
            f"No OpenIDConnect provider found in your account for {issuer}"
        )
        if not issuer.startswith("https://") and not (
            self._allow_http and issuer.startswith("http://")
        ):
            log.warning("iss %s is not https (allow_http_issuers is off)", issuer)
            raise no_provider
        provider = await self._iam.oidc_provider(arn.account_id, issuer)
        if provider is None:
            log.info("no OIDC provider for %s in account %s", issuer, arn.account_id)
            raise no_provider

        jwk = await self._keys.signing_key(issuer, unverified.kid)
        verify_signature(token, unverified, jwk)
        identity = check_claims(unverified.claims, provider, self._clock())
        log.info(
            "verified token iss=%s kid=%s aud=%s for %s",
            issuer,
            unverified.kid,
            identity.audience,
            arn.arn,
        )

        role = await self._iam.role(arn)
        if role is None:
            log.info("role %s does not exist", arn.arn)
            raise access_denied(DENIED)
        actions = ["sts:AssumeRoleWithWebIdentity"]
        if identity.has_session_tags:
            actions.append("sts:TagSession")
        if identity.source_identity is not None:
            actions.append("sts:SetSourceIdentity")
        principal = RequestPrincipal("Federated", frozenset({provider.arn}))
        context = condition_context(provider, identity, session_name)
        try:
            allowed = is_allowed(role.trust_policy, principal, actions, context)
        except UnsupportedCondition as exc:
            log.warning("trust policy of %s cannot be evaluated: %s", arn.arn, exc)
            allowed = False
        if not allowed:
            log.info(
                "trust policy of %s refuses %s (aud=%s)", arn.arn, provider.arn, identity.audience
            )
            raise access_denied(DENIED)
        if duration > role.max_session_duration:
            raise validation_error(MAX_SESSION_EXCEEDED)

        fields = {
            "SubjectFromWebIdentityToken": identity.subject,
            "Provider": provider.arn,
            "Audience": identity.audience,
        }
        if identity.source_identity is not None:
            fields["SourceIdentity"] = identity.source_identity
        return await self._sessions.issue(request, ASSUME_ROLE_WITH_WEB_IDENTITY, arn.arn, fields)
