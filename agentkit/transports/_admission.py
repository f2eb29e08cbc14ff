"""Per-client-address caps: how much of a stream one address may hold at once.

Without them, one client could take every slot of a stream's `concurrency_limit`: open sessions it
never speaks in, or post WebRTC offers it never connects. `mount` gives each stream two
`AddressLimiter`s, shared by all of its endpoints:

- sessions (`max_sessions_per_address`, default 4): `/ws`, `/websocket/offer` and `/webrtc/offer`;
- pending offers (`max_pending_offers_per_address`, default 2): answered WebRTC offers whose peer
  has not connected yet (each also holds a session slot until it connects or times out).

The address is the connection's peer as the ASGI server reports it (`scope["client"]`). agentkit
never reads `X-Forwarded-For` or the like; `agentkit run` also turns uvicorn's proxy-header handling
off, so it is the socket peer. Behind a reverse proxy that is the proxy, shared by every client: raise
the caps there (or turn them off with 0) and limit per client in the proxy. Twilio's media stream is
not capped per address: its peer is always Twilio, and every stream must redeem a signed, single-use
token that only Twilio's signed webhook request obtains.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from agentkit.exceptions import AddressLimitError, ConfigError
from agentkit.stream._refusals import Refusals

__all__ = ["AddressLimiter", "AddressSlot", "client_address"]

AddressReason = Literal["too_many_sessions", "too_many_pending_offers"]


def client_address(client: tuple[str, int] | None) -> str:
    """The key one client's holdings are counted under: the host of the ASGI `client` (a
    `(host, port)` pair, or None when the server does not know it; all such clients share one key).

    An IPv6 address counts by its /64 (one host usually has a whole /64 to pick addresses from), an
    IPv4-mapped one as the IPv4 address.
    """
    if client is None:
        return ""
    try:
        ip = ipaddress.ip_address(client[0])
    except ValueError:  # not an IP address (a test client's name, a Unix socket)
        return client[0]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AddressSlot:
    """One session or offer an address holds; `release()` gives it back (a second call does nothing)."""

    __slots__ = ("_address", "_limiter")

    def __init__(self, limiter: AddressLimiter | None, address: str) -> None:
        self._limiter = limiter
        self._address = address

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self._address)


class AddressLimiter:
    """At most `limit` slots per client address (None: no cap, slots are only counted).

    `acquire` refuses beyond the cap with an `AddressLimitError` whose code is `reason`, and counts
    the refusal in `refused` (the stream's `SessionHost.refused`).
    """

    def __init__(self, limit: int | None, *, reason: AddressReason, what: str, refused: Refusals) -> None:
        if limit is not None and limit < 1:
            raise ConfigError("a per-address limit must be at least 1 (or None: no limit)", limit=limit)
        self.limit = limit
        self.reason: AddressReason = reason
        self._what = what  # plural noun for messages: "sessions", "pending WebRTC offers"
        self._refused = refused
        self._held: dict[str, int] = {}

    def held(self, address: str) -> int:
        """Slots `address` holds now."""
        return self._held.get(address, 0)

    @property
    def addresses(self) -> int:
        """Addresses holding at least one slot."""
        return len(self._held)

    def acquire(self, address: str) -> AddressSlot:
        """Take a slot for `address`; raises `AddressLimitError` when it holds `limit` already."""
        held = self._held.get(address, 0)
        if self.limit is not None and held >= self.limit:
            self._refused.note(
                self.reason, f"one address already holds {held} {self._what} (limit {self.limit})"
            )
            raise AddressLimitError(
                f"too many {self._what} from your address (at most {self.limit}); end one and try again",
                code=self.reason,
                limit=self.limit,
            )
        self._held[address] = held + 1
        return AddressSlot(self, address)

    def _release(self, address: str) -> None:
        held = self._held.get(address, 0) - 1
        if held > 0:
            self._held[address] = held
        else:
            self._held.pop(address, None)
