"""`Refusals`: how often a stream turned a caller away or cut one off, by reason.

Every refusal is also a clear error on the wire (an `error` event and a close code, or an HTTP status
with a JSON body); this is the server's side of it, for `/healthz` and the log. The first refusal of
each reason is logged as a warning, later ones at debug level only: a flood of refusals (which is
what an attack looks like) must not become a flood of log lines. Log texts carry counts and limits,
never a client's address, caller id or data.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

__all__ = ["REFUSAL_REASONS", "RefusalReason", "Refusals"]

logger = logging.getLogger(__name__)

RefusalReason = Literal[
    "over_capacity",
    "busy",
    "too_many_sessions",
    "too_many_pending_offers",
    "connect_timeout",
    "no_audio",
    "message_too_large",
]
"""Why a caller was turned away or cut off:

- `over_capacity`: the stream is at its `concurrency_limit`;
- `busy`: the process is overloaded (its `LoadMonitor` says so), so new callers are turned away
  rather than every call degrading;
- `too_many_sessions`: the caller's address already holds `max_sessions_per_address` sessions;
- `too_many_pending_offers`: ... or `max_pending_offers_per_address` unconnected WebRTC offers;
- `connect_timeout`: an answered WebRTC offer never connected;
- `no_audio`: a session received no audio for its `no_audio_timeout_s`;
- `message_too_large`: a message over the stream's `max_message_bytes`.
"""
REFUSAL_REASONS: tuple[RefusalReason, ...] = get_args(RefusalReason)


class Refusals:
    """Counts of refusals by reason; `note()` one, `counts()` reads them all."""

    def __init__(self) -> None:
        self._counts: dict[RefusalReason, int] = dict.fromkeys(REFUSAL_REASONS, 0)

    def note(self, reason: RefusalReason, detail: str) -> None:
        """Count one refusal; log it as a warning if it is the first of its reason.

        `detail` is a short text of our own making (counts and limits only, no client data).
        """
        self._counts[reason] += 1
        if self._counts[reason] == 1:
            logger.warning("refused a caller (%s): %s; further ones are only counted", reason, detail)
        else:
            logger.debug("refused a caller (%s): %s", reason, detail)

    def counts(self) -> dict[str, int]:
        """Every reason with its count so far (a copy, JSON-ready)."""
        return {str(reason): count for reason, count in self._counts.items()}

    def __getitem__(self, reason: RefusalReason) -> int:
        return self._counts[reason]
