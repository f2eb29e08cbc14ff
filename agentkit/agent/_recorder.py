"""`Recorder`: one conversation's way into the store, off the reply's path.

Writes (messages, metrics, the conversation's end) go through one writer task, in order, so a slow
store never holds up a reply. The queue between is bounded: when the store falls `max_pending`
writes behind, new writes are refused, logged and counted in `dropped` (the conversation in
memory, and so the LLM's history, is unaffected; only the stored copy misses them). A store that
fails at the start is logged and the session goes on without one.

A call that reconnects (a Twilio media stream that dropped, or whose worker died: see
`agentkit.store._base`) goes on in its conversation: `open` finds it by the call's id, takes it over
and returns its messages after the caller's earlier ones; `resumed` says so.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

from agentkit._tasks import TaskSet
from agentkit.agent._tool_runs import ToolRun, arguments_json
from agentkit.providers.llm import ChatMessage
from agentkit.store import (
    RESUMABLE_END_REASONS,
    Conversation,
    ConversationStore,
    Role,
    ToolCallRecord,
    TurnMetrics,
)

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

_Write = Callable[[], Awaitable[object]]


class Recorder:
    """Keeps one session's conversation in `store` (or does nothing when there is none)."""

    def __init__(
        self,
        store: ConversationStore | None,
        *,
        agent_name: str,
        label: str,
        owner: str,
        max_pending: int = 256,
    ) -> None:
        self.store = store
        self.agent_name = agent_name
        self._label = label
        self._tasks = TaskSet(owner)  # its own: the writer outlives the session's other tasks
        self._writes: asyncio.Queue[_Write | None] = asyncio.Queue(maxsize=max_pending)
        self._writer: asyncio.Task[None] | None = None
        self.conversation_id: str | None = None
        """The stored conversation's id; None without a (working) store."""
        self.dropped = 0
        """Writes refused because the store was `max_pending` writes behind."""
        self.resumed = False
        """The conversation was the call's own, taken over after its media reconnected."""
        self.turns_before = 0
        """Turns of the conversation stored before it was taken over (its next turn's index)."""

    async def open(self, channel: str, caller: str | None, call_id: str | None = None) -> list[ChatMessage]:
        """Start the stored conversation, or go on with the call's own (`call_id`, see above); a
        known caller's earlier messages, oldest first, then those of this call so far."""
        store = self.store
        if store is None:
            return []
        earlier: list[ChatMessage] = []
        try:
            found = await self._resumable(store, call_id)
            if caller is not None:
                exclude = found.id if found is not None else None
                past = await store.caller_history(self.agent_name, caller, exclude_conversation_id=exclude)
                earlier = [ChatMessage(m.role, m.text, m.interrupted) for m in past]
            if found is not None:
                record = await store.claim_conversation(found.id)
                so_far = await store.messages(found.id)
                earlier += [ChatMessage(m.role, m.text, m.interrupted) for m in so_far]
                self.turns_before = max((m.turn_index + 1 for m in await store.metrics(found.id)), default=0)
                self.resumed = True
                logger.info("%s: the call reconnected; going on with its conversation", self._label)
            else:
                record = await store.start_conversation(self.agent_name, channel, caller, call_id=call_id)
        except Exception:
            logger.exception("%s: conversation store unavailable; going on without it", self._label)
            return []
        self.conversation_id = record.id
        self._writer = self._tasks.spawn(self._write_loop(), "store-writer")
        return earlier

    async def _resumable(self, store: ConversationStore, call_id: str | None) -> Conversation | None:
        """The call's conversation with this agent if it may go on (open, or ended for one of
        `RESUMABLE_END_REASONS`), else None."""
        if call_id is None:
            return None
        found = await store.conversation_of_call(call_id)
        if found is None or found.agent != self.agent_name:
            return None
        if found.ended_at is not None and found.end_reason not in RESUMABLE_END_REASONS:
            return None
        return found

    def message(self, role: Role, text: str, *, interrupted: bool) -> None:
        store, conversation_id = self.store, self.conversation_id
        if store is None or conversation_id is None:
            return
        at = time.time()
        self._queue(
            lambda: store.add_message(conversation_id, role, text, started_at=at, interrupted=interrupted)
        )

    def metrics(self, metrics: TurnMetrics) -> None:
        store = self.store
        if store is not None and self.conversation_id is not None:
            self._queue(lambda: store.add_metrics(metrics))

    def tool_call(self, run: ToolRun, ended_at: float) -> None:
        """Keep a finished tool call (arguments, result, duration) with the conversation."""
        store, conversation_id, result = self.store, self.conversation_id, run.result
        if store is None or conversation_id is None or result is None:
            return
        record = ToolCallRecord(
            conversation_id=conversation_id,
            turn_index=run.turn_index,
            call_id=run.call.id,
            name=run.call.name,
            arguments=arguments_json(run.call),
            result=result.content,
            is_error=result.is_error,
            cancelled=run.cancelled,
            started_at=time.time() - (ended_at - run.started_at),
            duration_ms=run.duration_ms or 0.0,
        )
        self._queue(lambda: store.add_tool_call(record))

    async def commit(self, timeout_s: float) -> bool:
        """Wait until every write queued so far has landed in the store (False: no store, or not
        within `timeout_s`, which is logged). The session calls it before it tells the client a turn
        is complete, so a client never sees a turn the store could still lose."""
        writer = self._writer
        if writer is None or writer.done():
            return False
        landed = asyncio.get_running_loop().create_future()

        async def barrier() -> None:
            if not landed.done():
                landed.set_result(None)

        try:
            async with asyncio.timeout(timeout_s):
                await self._writes.put(barrier)  # waits for room: a barrier is never dropped
                await landed
        except TimeoutError:
            logger.warning("%s: the store did not confirm a turn within %.1f s", self._label, timeout_s)
            return False
        return True

    async def close(self, timeout_s: float, reason: str = "ended") -> None:
        """End the stored conversation (for `reason`) and wait up to `timeout_s` for every write."""
        store, conversation_id, writer = self.store, self.conversation_id, self._writer
        if store is None or conversation_id is None or writer is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                if not writer.done():  # waiting for room here: the end must not be dropped
                    # if_owner: a call that reconnected to another worker goes on there, not ended here
                    end = functools.partial(
                        store.end_conversation, conversation_id, reason=reason, if_owner=True
                    )
                    await self._writes.put(end)
                    await self._writes.put(None)  # the writer's stop sign
                await asyncio.wait({writer})
        except TimeoutError:
            logger.warning("%s: store writes still pending after %.0f s; left behind", self._label, timeout_s)
        await self._tasks.aclose(timeout_s=0.5)

    def _queue(self, write: _Write) -> None:
        if self._writer is None or self._writer.done():
            return
        try:
            self._writes.put_nowait(write)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:  # the first, then now and then
                behind, dropped = self._writes.maxsize, self.dropped
                logger.warning("%s: the store is %d writes behind; %d dropped", self._label, behind, dropped)

    async def _write_loop(self) -> None:
        while (write := await self._writes.get()) is not None:
            try:
                await write()
            except Exception:
                logger.exception("%s: a conversation store write failed", self._label)
