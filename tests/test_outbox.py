"""`Outbox`: what an interruption flushes stays flushed, even when its producer puts it late."""

from __future__ import annotations

import asyncio

from agentkit.stream._outbox import Outbox


async def test_flush_drops_queued_and_late_items_but_not_new_ones() -> None:
    box: Outbox[str] = Outbox(maxsize=1)
    await box.put("old-1")
    late = asyncio.create_task(box.put("old-2"))  # blocked: the outbox is full
    await asyncio.sleep(0)
    box.flush()  # barge-in: "old-1" goes, and "old-2" gets in only after the flush
    await late
    consumer = asyncio.create_task(box.get())  # skips the late "old-2", then waits
    await box.put("new")
    assert await asyncio.wait_for(consumer, 1) == "new"
    assert box.dropped == 2


async def test_a_waiting_consumer_gets_only_current_items() -> None:
    box: Outbox[int] = Outbox(maxsize=4)
    consumer = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.flush()
    await box.put(7)
    assert await asyncio.wait_for(consumer, 1) == 7


async def test_an_item_computed_before_a_flush_is_dropped_when_put_after_it() -> None:
    """A producer captures the epoch, works off the loop, then puts: a flush meanwhile wins."""
    box: Outbox[str] = Outbox(maxsize=4)
    captured = box.epoch
    box.flush()  # barge-in while the item was being encoded
    await box.put("stale", epoch=captured)
    assert box.empty() and box.dropped == 1
    await box.put("fresh", epoch=box.epoch)
    assert await asyncio.wait_for(box.get(), 1) == "fresh"
