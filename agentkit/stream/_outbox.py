"""`Outbox`: a handler's bounded queue of outputs that an interruption empties for good.

A plain queue is not enough for barge-in: an item can be taken off the queue by `get()` just before
the interruption and only handed on after it, or a producer blocked on a full queue can get its
item in right after the flush. Every item is therefore tagged with the outbox's epoch when it is
put, `flush()` starts a new epoch, and `get()` skips items of an older one.
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

    async def put(self, item: T) -> None:
        await self._queue.put((self._epoch, item))

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
