"""Which web pages may open a session: the `Origin` check shared by the browser-facing endpoints.

A browser names the page that opens a WebSocket (or posts a WebRTC offer) in the `Origin` header.
A request is allowed when it has no `Origin` (not a browser: tests, benchmarks, servers), when the
origin is on the allow-list (`"*"` on the list allows every origin), or when it is the server's own:
its host and port equal the `Host` header *and* that host is one the server is known by (a loopback
name, the host of `AGENTKIT_PUBLIC_URL`, or one of `AGENTKIT_ALLOWED_HOSTS`). The second condition
stops DNS rebinding: a page of `http://evil.example:8000` whose name the attacker re-points at this
server sends `Origin: http://evil.example:8000` with `Host: evil.example:8000`, which match.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from agentkit.config import load_settings

__all__ = ["OriginPolicy", "host_name", "is_loopback_host", "known_hosts"]

_HOST = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")


def _normalize(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def host_name(host: str | None) -> str | None:
    """The name in a `Host` header, lowercase: `Agent.Example:8000` → `agent.example`, `[::1]:80` →
    `::1`; None for a missing or malformed one (user info, paths and the like included)."""
    match = _HOST.fullmatch(host.strip().lower()) if host else None
    return match.group(1).strip("[]") if match else None


def is_loopback_host(host: str | None) -> bool:
    """The `Host` header names this machine: `localhost` or a loopback address, any port."""
    name = host_name(host)
    if name is None:
        return False
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def known_hosts(public_url: str | None = None) -> frozenset[str]:
    """Host names the server is known by besides loopback ones: the host of `public_url` (default
    `AGENTKIT_PUBLIC_URL`) and `AGENTKIT_ALLOWED_HOSTS`."""
    settings = load_settings()
    names = list(settings.allowed_hosts)
    url = public_url or settings.public_url
    if url:
        names.append(urlsplit(url.strip()).netloc)
    return frozenset(n for n in map(host_name, names) if n is not None)


class OriginPolicy:
    """An allow-list of origins such as `https://shop.example` (scheme, host and optional port), and
    the host names (`server_hosts`, besides loopback ones) under which the server's own pages count."""

    def __init__(self, allowed_origins: Iterable[str] = (), *, server_hosts: Iterable[str] = ()) -> None:
        normalized = tuple(_normalize(o) for o in allowed_origins if o.strip())
        self.allow_all = "*" in normalized
        self.allowed_origins: frozenset[str] = frozenset(o for o in normalized if o != "*")
        self.server_hosts: frozenset[str] = frozenset(n for n in map(host_name, server_hosts) if n)

    def is_listed(self, origin: str | None) -> bool:
        """The origin is on the allow-list (same-origin requests are not, unless listed)."""
        return origin is not None and (self.allow_all or _normalize(origin) in self.allowed_origins)

    def is_server_host(self, host: str | None) -> bool:
        """The `Host` header is a name the server is known by (a loopback one, or a listed one)."""
        return is_loopback_host(host) or host_name(host) in self.server_hosts

    def allows(self, origin: str | None, host: str | None) -> bool:
        """May a request with these `Origin` and `Host` headers open a session?"""
        if origin is None:
            return True
        if self.is_listed(origin):
            return True
        if origin.strip().lower() == "null" or host is None or not self.is_server_host(host):
            return False
        return urlsplit(_normalize(origin)).netloc == host.strip().lower()

    @classmethod
    def of(
        cls, allowed_origins: Sequence[str] | None, *, public_url: str | None = None
    ) -> OriginPolicy | None:
        """`None` (no check at all) for `None`, else a policy over the list, with the server's host
        names from `known_hosts(public_url)`."""
        if allowed_origins is None:
            return None
        return cls(allowed_origins, server_hosts=known_hosts(public_url))

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
