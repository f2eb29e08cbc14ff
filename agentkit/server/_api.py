"""A read-only JSON API over a conversation store, as a FastAPI router.

```
GET /api/conversations?agent=&caller=&limit=&before=
    200 {"conversations": [Conversation, ...], "next_before": float | null}
GET /api/conversations/{id}
    200 {"conversation": Conversation, "messages": [StoredMessage, ...], "metrics": [TurnMetrics, ...],
         "tool_calls": [ToolCallRecord, ...]}
    404 {"detail": "no such conversation"}
```

Records are their `to_dict()` forms. Conversations come newest first; `limit` is 1 to 500 (default
50) and a bad query parameter gets FastAPI's 422 JSON. When a page is full, `next_before` is the
`started_at` to pass as `before` for the next page; otherwise it is null.

The answers hold transcripts and caller ids (phone numbers), so the router guards itself. With a
`token` (`AGENTKIT_API_TOKEN` under `agentkit run`) every request must carry
`Authorization: Bearer <token>`, else 401. Without one the API is off (403, saying how to turn it
on) unless `local=True` (`AGENTKIT_API_LOCAL=1`, for local development): then it answers only
requests made directly on the server's own machine, which means all of

- a loopback client address;
- a `Host` that is a loopback name (`localhost`, `127.0.0.1`, `[::1]`, any port): a DNS-rebinding
  page in the user's own browser connects from loopback too, but with its own name as `Host`, and so
  does a plain TCP relay that exposes the port;
- no proxy header (`PROXY_HEADERS`, or any `X-Forwarded-*` / `X-Original-*`): a tunnel or proxy such
  as the one Twilio reaches the server through connects from loopback too, but says so.

Anything else gets 403.

`session_api(stream)` controls live sessions, whichever worker holds them (through the stream's
`SessionBus`), behind the same guard:

```
POST /api/sessions/{session_id}/hang-up
    202 {"session_id": str, "hanging_up": true}   the worker holding it ends the call (reason `api`)
    404 {"detail": "no such session"}
```
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from agentkit.store._base import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, ConversationStore
from agentkit.stream import SessionHost
from agentkit.transports._origin import is_loopback_host

__all__ = ["conversation_api", "session_api"]

logger = logging.getLogger(__name__)

PROXY_HEADERS = frozenset(
    {
        "forwarded",
        "via",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-original-forwarded-for",
        "x-real-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "x-envoy-external-address",
        "true-client-ip",
        "cf-connecting-ip",
        "fastly-client-ip",
    }
)
"""Headers a proxy or tunnel adds (lowercase); with any of them, a request is not a direct one."""
_PROXY_PREFIXES = ("x-forwarded-", "x-original-")

_OFF = (
    "the conversation API is off: set AGENTKIT_API_TOKEN and send 'Authorization: Bearer <token>', "
    "or, for local development, AGENTKIT_API_LOCAL=1 and call it on this machine at localhost"
)
_LOCAL_ONLY = (
    "with AGENTKIT_API_LOCAL and no AGENTKIT_API_TOKEN this API answers only direct requests from this "
    "machine to localhost, 127.0.0.1 or [::1]"
)


def conversation_api(
    store: ConversationStore,
    *,
    prefix: str = "/api/conversations",
    token: str | None = None,
    local: bool = False,
) -> APIRouter:
    """A router serving `store` read-only under `prefix`; add it with `app.include_router(...)`.

    `token`: the bearer token readers must present. Without one (None or empty) the API is off,
    unless `local`: then direct requests on this machine only (see above). The router does not own
    the store: whoever opened it closes it (e.g. in the app's lifespan).
    """
    router = APIRouter(
        prefix=prefix.rstrip("/"), tags=["conversations"], dependencies=[Depends(_guard(token, local))]
    )

    @router.get("")
    async def list_conversations(
        agent: Annotated[str | None, Query(max_length=200)] = None,
        caller: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT,
        before: Annotated[float | None, Query(allow_inf_nan=False)] = None,
    ) -> dict[str, Any]:
        """Conversations, newest first, optionally only one agent's or one caller's."""
        found = await store.list_conversations(agent=agent, caller=caller, limit=limit, before=before)
        return {
            "conversations": [c.to_dict() for c in found],
            "next_before": found[-1].started_at if len(found) == limit else None,
        }

    @router.get("/{conversation_id}")
    async def get_conversation(conversation_id: str) -> dict[str, Any]:
        """One conversation with its messages and per-turn metrics."""
        conversation = await store.get_conversation(conversation_id)
        if conversation is None:
            raise HTTPException(status_code=404, detail="no such conversation")
        messages = await store.messages(conversation_id)
        metrics = await store.metrics(conversation_id)
        tool_calls = await store.tool_calls(conversation_id)
        return {
            "conversation": conversation.to_dict(),
            "messages": [m.to_dict() for m in messages],
            "metrics": [m.to_dict() for m in metrics],
            "tool_calls": [t.to_dict() for t in tool_calls],
        }

    return router


def session_api(
    stream: SessionHost, *, prefix: str = "/api/sessions", token: str | None = None, local: bool = False
) -> APIRouter:
    """A router that controls `stream`'s sessions in any worker (see above), guarded like
    `conversation_api` (`token`, `local`)."""
    router = APIRouter(
        prefix=prefix.rstrip("/"), tags=["sessions"], dependencies=[Depends(_guard(token, local))]
    )

    @router.post("/{session_id}/hang-up", status_code=202)
    async def hang_up(session_id: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
        """End the session's call; the worker holding it closes it (stop reason `api`)."""
        try:
            await stream.hang_up(session_id, reason="api")
        except KeyError:
            raise HTTPException(status_code=404, detail="no such session") from None
        logger.info("session api: hang-up of session %s asked for", session_id[:8])
        return {"session_id": session_id, "hanging_up": True}

    return router


def _guard(token: str | None, local: bool) -> Callable[[Request], Awaitable[None]]:
    expected = token.encode() if token else None  # an empty token is no token

    async def check(request: Request) -> None:
        if expected is not None:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
                logger.info("conversation api: refused a request without the right token")
                raise HTTPException(
                    status_code=401,
                    detail="this API needs 'Authorization: Bearer <AGENTKIT_API_TOKEN>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            return
        if not local:
            logger.info("conversation api: refused a request (the API is off without a token)")
            raise HTTPException(status_code=403, detail=_OFF)
        refusal = _not_direct(request)
        if refusal is not None:
            logger.info("conversation api: refused a %s request", refusal)
            raise HTTPException(status_code=403, detail=_LOCAL_ONLY)

    return check


def _not_direct(request: Request) -> str | None:
    """Why `request` is not one made directly on this machine (for the log), or None if it is."""
    names = {name.lower() for name, _ in request.headers.items()}
    if names & PROXY_HEADERS or any(name.startswith(_PROXY_PREFIXES) for name in names):
        return "proxied"
    if not is_loopback_host(request.headers.get("host")):
        return "foreign-host"
    client = request.client.host if request.client is not None else ""
    try:
        loopback = ipaddress.ip_address(client).is_loopback
    except ValueError:
        loopback = False
    return None if loopback else "remote"
