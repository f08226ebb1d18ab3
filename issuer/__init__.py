"""The OpenID Connect issuer: discovery, JWKS, tenants and token minting."""
