"""Pre-computed public documents: body bytes, a strong ETag, and the exact response headers.

Computed once per key-set change, served many times: STS and every other verifier fetch these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StaticDocument:
    body: bytes = field(repr=False)
    etag: str
    headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)
    not_modified_headers: tuple[tuple[bytes, bytes], ...] = field(repr=False)

    @classmethod
    def build(cls, body: bytes, *, max_age: int) -> StaticDocument:
        if max_age <= 0:
            raise ValueError("max_age must be positive: no-cache makes STS refetch on every call")
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        cache = f"public, max-age={max_age}".encode()
        common = ((b"cache-control", cache), (b"etag", etag.encode()))
        headers = (
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *common,
        )
        return cls(body=body, etag=etag, headers=headers, not_modified_headers=common)

    def matches(self, if_none_match: str | None) -> bool:
        """RFC 9110 weak comparison over a list of entity tags (or `*`)."""
        if not if_none_match:
            return False
        for candidate in if_none_match.split(","):
            tag = candidate.strip()
            if tag == "*" or tag.removeprefix("W/") == self.etag:
                return True
        return False
