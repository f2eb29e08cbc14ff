"""`MemoryStore`: the conversation store kept in this process's memory (`memory://`).

For tests and throwaway runs: everything is lost when the process ends, and two `MemoryStore`
objects share nothing. Every method runs on the event loop without awaiting, so each one is atomic
with respect to other coroutines.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable

from agentkit.store._base import DEFAULT_LIST_LIMIT, check_limits
from agentkit.store._models import (
    Conversation,
    Role,
    StoredMessage,
    ToolCallRecord,
    TurnMetrics,
    check_role,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """A `ConversationStore` in plain dicts.

    `wall_clock` gives unix seconds for `started_at` / `ended_at` of conversations (inject a fake
    one in tests).
    """

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._now = wall_clock
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, list[StoredMessage]] = {}
        self._metrics: dict[str, dict[int, TurnMetrics]] = {}
        self._tool_calls: dict[str, list[ToolCallRecord]] = {}
        self._owners: dict[str, str] = {}  # conversation id -> the owner that started it
        self._leases: dict[str, float] = {}  # owner -> expiry (a MemoryStore has one owner: itself)
        self._owner = uuid.uuid4().hex
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(conversations={len(self._conversations)})"

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the conversation store is closed")

    def _existing(self, conversation_id: str) -> Conversation:
        self._check_open()
        try:
            return self._conversations[conversation_id]
        except KeyError:
            raise KeyError(f"no conversation with id {conversation_id!r}") from None

    async def start_conversation(
        self,
        agent: str,
        channel: str,
        caller: str | None = None,
        conversation_id: str | None = None,
        *,
        call_id: str | None = None,
    ) -> Conversation:
        self._check_open()
        cid = conversation_id if conversation_id is not None else uuid.uuid4().hex
        if cid in self._conversations:
            raise ValueError(f"a conversation with id {cid!r} already exists")
        conversation = Conversation(cid, agent, channel, caller, self._now(), None, call_id=call_id)
        self._conversations[cid] = conversation
        self._owners[cid] = self._owner
        self._tool_calls[cid] = []
        self._messages[cid] = []
        self._metrics[cid] = {}
        return conversation

    async def end_conversation(
        self, conversation_id: str, *, reason: str = "ended", if_owner: bool = False
    ) -> Conversation:
        conversation = self._existing(conversation_id)
        if if_owner and self._owners.get(conversation_id) != self._owner:
            return conversation
        if conversation.ended_at is None:
            conversation = dataclasses.replace(conversation, ended_at=self._now(), end_reason=reason)
            self._conversations[conversation_id] = conversation
        return conversation

    async def conversation_of_call(self, call_id: str) -> Conversation | None:
        self._check_open()
        theirs = [c for c in self._conversations.values() if c.call_id == call_id]
        return max(theirs, key=lambda c: (c.started_at, c.id), default=None)

    async def claim_conversation(self, conversation_id: str) -> Conversation:
        conversation = dataclasses.replace(self._existing(conversation_id), ended_at=None, end_reason=None)
        self._conversations[conversation_id] = conversation
        self._owners[conversation_id] = self._owner
        return conversation

    async def add_tool_call(self, record: ToolCallRecord) -> None:
        self._existing(record.conversation_id)
        self._tool_calls[record.conversation_id].append(record)

    async def tool_calls(self, conversation_id: str) -> list[ToolCallRecord]:
        self._check_open()
        return list(self._tool_calls.get(conversation_id, []))

    @property
    def owner(self) -> str:
        return self._owner

    async def renew_lease(self, ttl_s: float) -> None:
        self._check_open()
        self._leases[self._owner] = self._now() + ttl_s

    async def end_abandoned(self, reason: str = "crashed") -> list[str]:
        self._check_open()
        now = self._now()
        ended = [
            cid
            for cid, conversation in self._conversations.items()
            if conversation.ended_at is None
            and self._owners.get(cid) != self._owner
            and self._leases.get(self._owners.get(cid, ""), 0.0) <= now
        ]
        for cid in ended:
            await self.end_conversation(cid, reason=reason)
        return ended

    async def add_message(
        self,
        conversation_id: str,
        role: Role,
        text: str,
        *,
        started_at: float,
        ended_at: float | None = None,
        interrupted: bool = False,
    ) -> StoredMessage:
        check_role(role)
        self._existing(conversation_id)
        messages = self._messages[conversation_id]
        message = StoredMessage(
            conversation_id, len(messages), role, text, started_at, ended_at, bool(interrupted)
        )
        messages.append(message)
        return message

    async def add_metrics(self, metrics: TurnMetrics) -> None:
        self._existing(metrics.conversation_id)
        turns = self._metrics[metrics.conversation_id]
        if metrics.turn_index in turns:
            raise ValueError(f"metrics for turn {metrics.turn_index} are already stored")
        turns[metrics.turn_index] = metrics

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        self._check_open()
        return self._conversations.get(conversation_id)

    async def messages(self, conversation_id: str) -> list[StoredMessage]:
        self._check_open()
        return list(self._messages.get(conversation_id, ()))

    async def metrics(self, conversation_id: str) -> list[TurnMetrics]:
        self._check_open()
        turns = self._metrics.get(conversation_id, {})
        return [turns[i] for i in sorted(turns)]

    async def list_conversations(
        self,
        *,
        agent: str | None = None,
        caller: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        before: float | None = None,
    ) -> list[Conversation]:
        self._check_open()
        check_limits(limit=limit)
        found = [
            c
            for c in self._conversations.values()
            if (agent is None or c.agent == agent)
            and (caller is None or c.caller == caller)
            and (before is None or c.started_at < before)
        ]
        found.sort(key=lambda c: (c.started_at, c.id), reverse=True)
        return found[:limit]

    async def caller_history(
        self,
        agent: str,
        caller: str,
        *,
        limit_messages: int = 50,
        exclude_conversation_id: str | None = None,
    ) -> list[StoredMessage]:
        self._check_open()
        check_limits(limit_messages=limit_messages)
        if limit_messages == 0:
            return []
        theirs = sorted(
            (
                c
                for c in self._conversations.values()
                if c.agent == agent and c.caller == caller and c.id != exclude_conversation_id
            ),
            key=lambda c: (c.started_at, c.id),
        )
        history = [m for c in theirs for m in self._messages[c.id]]
        return history[-limit_messages:]

    async def ping(self) -> None:
        self._check_open()

    async def aclose(self) -> None:
        self._closed = True
