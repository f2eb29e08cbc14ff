"""`Outbox`: a bounded queue of outputs that an interruption empties for good.

A plain queue is not enough for barge-in: an item can be taken off the queue by `get()` just before
the interruption and only handed on after it, or a producer blocked on a full queue can get its
item in right after the flush. Every item is therefore tagged with the outbox's epoch when it is
put, `flush()` starts a new epoch, and `get()` skips items of an older one.

A producer that computes an item off the event loop (resampling, encoding) can capture `epoch`
before the work and `put(item, epoch=captured)` after it: the item is then dropped if a flush came
in between. A consumer that hands an item on in several steps (the session's pacer) checks
`epoch` between steps to stop as soon as a flush happens.

One mechanism for every queue a barge-in must empty: a handler's outputs (`TurnTakingHandler`)
and a session's encoded audio on its way to the caller (`Session`).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["Outbox"]

T = TypeVar("T")


class Outbox(Generic[T]):
    """Bounded (producers wait for room, which paces them), flushed on interruption."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[tuple[int, T]] = asyncio.Queue(maxsize=maxsize)
        self._epoch = 0
        self.dropped = 0
        """Items discarded by flushes (queued, or put late by a producer of an older epoch)."""

    @property
    def epoch(self) -> int:
        """Bumped by every `flush()`; items of an older epoch are never handed out."""
        return self._epoch

    def empty(self) -> bool:
        """Nothing is queued (of any epoch)."""
        return self._queue.empty()

    async def put(self, item: T, *, epoch: int | None = None) -> None:
        """Queue `item` (waiting for room) as of `epoch` (default: the current one).

        An item of an epoch already flushed is dropped at once and counted.
        """
        if epoch is None:
            epoch = self._epoch
        elif epoch != self._epoch:
            self.dropped += 1
            return
        await self._queue.put((epoch, item))

    async def get(self) -> T:
        """The next item of the current epoch (waits until there is one)."""
        while True:
            epoch, item = await self._queue.get()
            if epoch == self._epoch:
                return item
            self.dropped += 1

    def flush(self) -> None:
        """Drop everything queued, and anything an older producer still puts."""
        self._epoch += 1
        while not self._queue.empty():
            self._queue.get_nowait()
            self.dropped += 1
