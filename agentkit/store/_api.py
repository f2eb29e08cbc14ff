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

The answers hold transcripts and caller ids (phone numbers): mount the router only where its
readers are allowed to see them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from agentkit.store._base import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, ConversationStore

__all__ = ["conversation_api"]


def conversation_api(store: ConversationStore, *, prefix: str = "/api/conversations") -> APIRouter:
    """A router serving `store` read-only under `prefix`; add it with `app.include_router(...)`.

    The router does not own the store: whoever opened it closes it (e.g. in the app's lifespan).
    """
    router = APIRouter(prefix=prefix.rstrip("/"), tags=["conversations"])

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
