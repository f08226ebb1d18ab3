"""The IAM setup generator: what a customer's cloud admin runs in their AWS account to let Warrant
in (an OIDC provider for our issuer and a read-only role our tokens may assume, or a role our
instance role may assume with an ExternalId), in four formats, with the matching teardown.

    generate(integration, issuer_url=..., format=Format.CLI, now=...) -> SetupOutput
    trust_policy(integration, issuer_url)          the role's trust policy
    permissions_policy(profile, partition)         a capability profile's read-only policy
    read_only_session_policy()                     the session policy the broker attaches

Everything here is pure: no I/O, the clock passed in.
"""

from broker.setup.actions import action_matches, allowed
from broker.setup.generate import SetupOutput, generate
from broker.setup.plan import Format
from broker.setup.policies import (
    DATA_READ_ACTIONS,
    PolicyChoice,
    Profile,
    managed_readonly_arn,
    permissions_policy,
    read_only_session_policy,
)
from broker.setup.trust import our_side_policy, trust_policy

__all__ = [
    "DATA_READ_ACTIONS",
    "Format",
    "PolicyChoice",
    "Profile",
    "SetupOutput",
    "action_matches",
    "allowed",
    "generate",
    "managed_readonly_arn",
    "our_side_policy",
    "permissions_policy",
    "read_only_session_policy",
    "trust_policy",
]
