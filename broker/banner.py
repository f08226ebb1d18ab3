"""What `warrant serve` prints once every listener is up: where things are and what to try."""

from __future__ import annotations

import sys

from broker.runtime import WarrantRuntime
from issuer.apikeys import Role


def ready_banner(runtime: WarrantRuntime) -> str:
    s, bs = runtime.issuer.settings, runtime.broker_settings
    admin = runtime.issuer.api_key_files.get(Role.ADMIN)
    agent = runtime.issuer.api_key_files.get(Role.AGENT)
    scheme = "https" if bs.internal_tls else "http"
    internal = f"{scheme}://{s.internal_addr}"
    warrant = sys.argv[0]
    grpc = "off (WARRANT_GRPC_ADDR=off)"
    grpc_hint = ""
    if bs.grpc is not None:
        security = "mTLS" if bs.grpc.client_ca else "TLS" if bs.grpc.tls else "plaintext"
        grpc = f"{bs.grpc.addr}   warrant.v1.CredentialBroker, health, reflection ({security})"
        if security == "plaintext":
            grpc_hint = f"\n  grpcurl -plaintext {bs.grpc.addr} list"
    return f"""\
Warrant is serving.
  issuer     {s.issuer_url}
  public     http://{s.public_addr}   discovery + JWKS (the only listener to expose)
  internal   {internal}   minting, tenants, keys, integrations, sandboxes, /metrics
  sandbox    {bs.sandbox_url}   credentials for sandboxes, nothing else
  grpc       {grpc}
  admin key  {admin}
  agent key  {agent}
  audit log  {s.audit_path}
Try next:
  curl -s {s.issuer_url}/.well-known/openid-configuration
  curl -s -X POST {internal}/v1/tenants -H "Authorization: Bearer $(cat {admin})" \\
       -d '{{"slug": "acme", "name": "Acme Corp"}}'
  curl -s -X POST {internal}/v1/tokens -H "Authorization: Bearer $(cat {agent})" \\
       -d '{{"tenant": "acme", "subject": "agent-1"}}'
  {warrant} keys list{grpc_hint}
Stop with Ctrl-C."""
