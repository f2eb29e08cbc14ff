"""`EventLog`: a session's typed events, for any number of readers (`session.events()`).

One bounded log instead of a queue per reader: each reader keeps its own position and follows the
log; a reader that falls more than `maxlen` events behind skips the ones it missed (counted in
`missed`), so a slow reader never holds up the agent or grows memory. A reader that starts after
the session did still sees the session's first events while they are kept (`SessionStarted`, the
greeting), which is what `agentkit talk` and tests need.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from agentkit.agent._events import AgentEvent

__all__ = ["EventLog"]


class EventLog:
    """Append-only, bounded, closed at the end of the session."""

    def __init__(self, maxlen: int = 256) -> None:
        self._events: deque[AgentEvent] = deque(maxlen=maxlen)
        self._first = 0  # sequence number of self._events[0]
        self._changed = asyncio.Condition()
        self._closed = False
        self.missed = 0
        """Events readers skipped because they fell too far behind."""

    @property
    def closed(self) -> bool:
        return self._closed

    async def append(self, event: AgentEvent) -> None:
        if self._closed:
            return
        if len(self._events) == self._events.maxlen:
            self._first += 1
        self._events.append(event)
        async with self._changed:
            self._changed.notify_all()

    async def close(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    def _past(self, position: int) -> Callable[[], bool]:
        return lambda: self._closed or self._first + len(self._events) > position

    async def follow(self) -> AsyncIterator[AgentEvent]:
        """Every event from the oldest still kept on, until the log is closed and read to its end."""
        position = self._first
        while True:
            if position < self._first:
                self.missed += self._first - position
                position = self._first
            end = self._first + len(self._events)
            if position < end:
                event = self._events[position - self._first]
                position += 1
                yield event
                continue
            if self._closed:
                return
            async with self._changed:
                await self._changed.wait_for(self._past(position))
