"""Clocks: logic asks an injected clock for the time, so tests can run on virtual time."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "FastForwardClock", "MonotonicClock"]


class Clock(Protocol):
    """Monotonic seconds and a way to sleep until a point on the same scale."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class MonotonicClock:
    """Wall-clock time from `time.monotonic` (the clock asyncio's own loop uses)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class FastForwardClock:
    """Real time that skips every wait: `sleep_until` jumps the clock to the deadline at once.

    Work still takes its real time, so latencies measured on it are real, but paced playout costs
    nothing: `agentkit talk` runs a whole conversation in the time its computation takes.
    """

    def __init__(self) -> None:
        self._skipped_s = 0.0

    def now(self) -> float:
        return time.monotonic() + self._skipped_s

    async def sleep_until(self, deadline: float) -> None:
        ahead = deadline - self.now()
        if ahead > 0:
            self._skipped_s += ahead
        await asyncio.sleep(0)
