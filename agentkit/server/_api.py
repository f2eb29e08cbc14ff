"""A read-only JSON API over a conversation store, as a FastAPI router.

```
GET /api/conversations?agent=&caller=&limit=&before=
    200 {"conversations": [Conversation, ...], "next_before": float | null}
GET /api/conversations/{id}
    200 {"conversation": Conversation, "messages": [StoredMessage, ...], "metrics": [TurnMetrics, ...]}
    404 {"detail": "no such conversation"}
```

Records are their `to_dict()` forms. Conversations come newest first; `limit` is 1 to 500 (default
50) and a bad query parameter gets FastAPI's 422 JSON. When a page is full, `next_before` is the
`started_at` to pass as `before` for the next page; otherwise it is null.

The answers hold transcripts and caller ids (phone numbers), so the router guards itself. With a
`token` (`AGENTKIT_API_TOKEN` under `agentkit run`) every request must carry
`Authorization: Bearer <token>`, else 401. Without one it answers only requests made directly from
the server's own machine: a loopback client and no proxy headers (`Forwarded`, `X-Forwarded-For`,
...), since a tunnel such as the one Twilio reaches the server through connects from loopback too.
Anything else gets 403.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from agentkit.store._base import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, ConversationStore

__all__ = ["conversation_api"]

logger = logging.getLogger(__name__)

_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip", "cf-connecting-ip")


def conversation_api(
    store: ConversationStore, *, prefix: str = "/api/conversations", token: str | None = None
) -> APIRouter:
    """A router serving `store` read-only under `prefix`; add it with `app.include_router(...)`.

    `token`: the bearer token readers must present; None: loopback readers only (see above). The
    router does not own the store: whoever opened it closes it (e.g. in the app's lifespan).
    """
    router = APIRouter(
        prefix=prefix.rstrip("/"), tags=["conversations"], dependencies=[Depends(_guard(token))]
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
        return {
            "conversation": conversation.to_dict(),
            "messages": [m.to_dict() for m in messages],
            "metrics": [m.to_dict() for m in metrics],
        }

    return router


def _guard(token: str | None) -> Callable[[Request], Awaitable[None]]:
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
        host = request.client.host if request.client is not None else ""
        proxied = any(name in request.headers for name in _PROXY_HEADERS)
        if proxied or not _is_loopback(host):
            logger.info("conversation api: refused a %s request", "proxied" if proxied else "remote")
            raise HTTPException(
                status_code=403,
                detail="without AGENTKIT_API_TOKEN this API answers only direct requests from this machine",
            )

    return check


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
