"""Errors the issuer raises. Each carries what a client may see: HTTP status and a message that
says what to fix. Details that are not safe to show stay in the log.

    IssuerError (500)
     ├── BadRequest (400)          malformed input; the message states the rule
     │    └── InvalidSlug (400)
     ├── Unauthenticated (401)
     ├── Forbidden (403)
     ├── NotFound (404)
     │    └── UnknownTenant (404)
     ├── Conflict (409)
     │    └── TenantExists (409)
     ├── ConfigError (startup)     a setting is wrong; names the variable
     └── Unavailable (503)         a dependency is down; retry later
"""

from __future__ import annotations


class IssuerError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # Extra members of the error body, safe to show the caller (e.g. a diagnosis).
        self.details: dict[str, object] = {}


class BadRequest(IssuerError):
    status = 400
    code = "bad_request"


class InvalidSlug(BadRequest):
    code = "invalid_slug"


class Unauthenticated(IssuerError):
    status = 401
    code = "unauthenticated"


class Forbidden(IssuerError):
    status = 403
    code = "forbidden"


class NotFound(IssuerError):
    status = 404
    code = "not_found"


class UnknownTenant(NotFound):
    code = "unknown_tenant"

    def __init__(self, slug: str) -> None:
        super().__init__(f"no tenant {slug!r}; create it with 'warrant tenants add {slug}'")
        self.slug = slug


class Conflict(IssuerError):
    status = 409
    code = "conflict"


class TenantExists(Conflict):
    code = "tenant_exists"

    def __init__(self, slug: str) -> None:
        super().__init__(f"tenant {slug!r} already exists")
        self.slug = slug


class ConfigError(IssuerError):
    """A setting is wrong; raised at startup, the message names the environment variable."""

    code = "config_error"


class Unavailable(IssuerError):
    status = 503
    code = "unavailable"
