"""`LeaseKeeper`: keeps a server's claim on its conversations alive, and ends the conversations of
processes that died.

A server that serves conversations runs one keeper over its store (`agentkit.server.create_app`
does). At start it renews the store's lease and ends every open conversation whose owner's lease
has run out (`end_reason="crashed"`): the ones a killed predecessor left open. Then, every
`ttl_s / 3`, it renews the lease, and every `ttl_s` it sweeps again, so a crash that happened while
its lease still ran is cleaned up within one more `ttl_s`, by whichever worker is alive. A store that
does not answer for a while is logged, not fatal: its lease may lapse, in which case another worker
may end this one's conversations early (they are marked `crashed`); the calls themselves go on.
"""

from __future__ import annotations

import asyncio
import logging

from agentkit._tasks import TaskSet
from agentkit.store._base import ConversationStore

__all__ = ["LeaseKeeper"]

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Renew `store`'s lease and end abandoned conversations, in a task of its own."""

    def __init__(self, store: ConversationStore, *, ttl_s: float = 30.0) -> None:
        if ttl_s <= 0:
            raise ValueError("a lease needs a positive ttl_s")
        self.store = store
        self.ttl_s = ttl_s
        self._tasks = TaskSet("store-lease")
        self.ended = 0
        """Abandoned conversations this keeper has ended."""

    async def start(self) -> list[str]:
        """Renew the lease and end what crashed processes left open (the ids); then keep at it."""
        await self.store.renew_lease(self.ttl_s)
        ended = await self._sweep()
        self._tasks.spawn(self._run(), "renew")
        return ended

    async def _sweep(self) -> list[str]:
        ended = await self.store.end_abandoned()
        if ended:
            self.ended += len(ended)
            logger.warning("ended %d conversation(s) left open by a process that stopped", len(ended))
        return ended

    async def _run(self) -> None:
        renewals_per_sweep = 3
        renewals = 0
        while True:
            await asyncio.sleep(self.ttl_s / renewals_per_sweep)
            try:
                await self.store.renew_lease(self.ttl_s)
                renewals += 1
                if renewals % renewals_per_sweep == 0:
                    await self._sweep()
            except Exception as exc:  # a store that is down now and then must not end the server
                logger.warning("conversation store lease not renewed (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        await self._tasks.aclose(timeout_s=2.0)
