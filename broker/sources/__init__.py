"""Credential sources: where credentials come from, each one a CredentialSource.

MethodRouter                 picks by the integration's method; never falls through
 ├── WebIdentitySource       oidc: our token -> sts:AssumeRoleWithWebIdentity
 └── AssumeRoleSource        instance_role: base credentials -> sts:AssumeRole (+ 2nd hop)
      └── InstanceRoleSource the EC2 instance role via IMDSv2; a base only, never vended
"""

from broker.sources.assume_role import AssumeRoleSource
from broker.sources.instance_role import InstanceRoleSource
from broker.sources.router import MethodRouter
from broker.sources.web_identity import WebIdentitySource

__all__ = ["AssumeRoleSource", "InstanceRoleSource", "MethodRouter", "WebIdentitySource"]
