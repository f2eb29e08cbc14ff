"""A Twilio call whose media stream ends before the call does goes on, in the same conversation.

The webhook answers `<Connect action="{webhook}?reconnect=1"><Stream .../></Connect>`. Twilio
requests the `action` URL when `<Connect>` ends: when the media stream ends for any reason while the
call goes on (the worker holding it was killed, the network dropped it, the server closed it).
Only then: a caller who hangs up ends the call, and a REST hang-up (`Status=completed`) too.

That request reaches any worker, which decides from the conversation store (shared, e.g. Redis):

- the call's conversation ended for a reason in `RESUMABLE_END_REASONS` (`crashed`, `dropped`,
  `server_shutdown`), or has not ended (its process died without a word), or there is none yet
  (the stream failed before the call began): answer another `<Connect><Stream>`, with the next
  attempt number in its `action`. The new media stream's agent finds the conversation by the call's
  id (`CallSid`, in `call_info["call_id"]`), takes it over and goes on with its history;
- it ended for any other reason (the agent or the API hung up, a time limit): `<Hangup/>`, so a call
  that ended normally never loops back;
- after `MAX_RECONNECTS` reconnections, or when Twilio says the call is over (`CallStatus`): the
  answer has no `action` (the call ends with its stream), or is `<Hangup/>`.

A conversation still open when the request comes is given `END_GRACE_S` to end: closing the socket
to hang up reaches Twilio a moment before the session's end reaches the store.

Without a store nothing tells a dropped stream from a finished call, so no `action` is set (the call
ends when its stream does, as before).
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agentkit.store import RESUMABLE_END_REASONS, ConversationStore

__all__ = [
    "END_GRACE_S",
    "MAX_RECONNECTS",
    "RECONNECT_PARAMETER",
    "action_url",
    "may_reconnect",
    "reconnect_attempt",
]

logger = logging.getLogger(__name__)

RECONNECT_PARAMETER = "reconnect"
"""Query parameter of the `action` URL: which reconnection of the call this request is (1, 2, ...)."""
MAX_RECONNECTS = 3
"""How often one call's media stream is reconnected at most."""
END_GRACE_S = 1.5
"""How long an action request waits for a still-open conversation to end before it reconnects."""
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
"""Twilio `CallStatus` values of a call that is over."""
_POLL_S = 0.05


def reconnect_attempt(value: str | None) -> int | None:
    """The attempt number in an action request's query (None: the call's first webhook request;
    a malformed value counts as past the last attempt)."""
    if value is None:
        return None
    return int(value) if value.isdigit() and len(value) < 3 else MAX_RECONNECTS + 1


def action_url(webhook_url: str, attempt: int) -> str:
    """`webhook_url` (as Twilio requested it, query included) with `reconnect={attempt}`."""
    parts = urlsplit(webhook_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != RECONNECT_PARAMETER]
    query.append((RECONNECT_PARAMETER, str(attempt)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


async def may_reconnect(
    store: ConversationStore,
    call_sid: str,
    *,
    call_status: str | None,
    attempt: int,
    grace_s: float = END_GRACE_S,
) -> bool:
    """Whether the action request of reconnection `attempt` for `call_sid` gets another media stream
    (see the module docstring)."""
    if attempt > MAX_RECONNECTS or (call_status or "").lower() in FINAL_CALL_STATUSES:
        return False
    deadline = time.monotonic() + grace_s
    while True:
        conversation = await store.conversation_of_call(call_sid)
        if conversation is None:
            return True
        if conversation.ended_at is not None:
            return conversation.end_reason in RESUMABLE_END_REASONS
        if time.monotonic() >= deadline:
            return True  # still open: its process died (or lost the stream) without a word
        await asyncio.sleep(_POLL_S)
