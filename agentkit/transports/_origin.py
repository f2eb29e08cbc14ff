"""Which web pages may open a session: the `Origin` check shared by the browser-facing endpoints.

A browser names the page that opens a WebSocket (or posts a WebRTC offer) in the `Origin` header.
A request is allowed when it has no `Origin` (not a browser: tests, benchmarks, servers), when the
origin is the server's own (its host and port equal the `Host` header), or when it is on the
allow-list. `"*"` on the list allows every origin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

__all__ = ["OriginPolicy"]


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class OriginPolicy:
    """An allow-list of origins such as `https://shop.example` (scheme, host and optional port)."""

    def __init__(self, allowed_origins: Iterable[str] = ()) -> None:
        normalized = tuple(_normalize(o) for o in allowed_origins if o.strip())
        self.allow_all = "*" in normalized
        self.allowed_origins: frozenset[str] = frozenset(o for o in normalized if o != "*")

    def is_listed(self, origin: str | None) -> bool:
        """The origin is on the allow-list (same-origin requests are not, unless listed)."""
        return origin is not None and (self.allow_all or _normalize(origin) in self.allowed_origins)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """May a request with these `Origin` and `Host` headers open a session?"""
        if origin is None:
            return True
        if self.is_listed(origin):
            return True
        if origin.strip().lower() == "null" or host is None:
            return False
        return urlsplit(_normalize(origin)).netloc == host.strip().lower()

    @classmethod
    def of(cls, allowed_origins: Sequence[str] | None) -> OriginPolicy | None:
        """`None` (no check at all) for `None`, else a policy over the list."""
        return None if allowed_origins is None else cls(allowed_origins)

    def cors_headers(self, origin: str | None, *, preflight: bool = False) -> dict[str, str]:
        """CORS response headers for a listed origin (none for others; `Vary` always)."""
        headers = {"Vary": "Origin"}
        if origin is not None and self.is_listed(origin):
            headers["Access-Control-Allow-Origin"] = origin
            if preflight:
                headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE"
                headers["Access-Control-Allow-Headers"] = "content-type"
                headers["Access-Control-Max-Age"] = "600"
        return headers
