"""`/healthz` and `/readyz`: what a process supervisor and a load balancer ask a server.

- `GET /healthz` is liveness: 200 for as long as the process serves HTTP at all, with its counts
  (open sessions, the limit, refusals by reason). A supervisor restarts a process that stops
  answering it; an overloaded process still answers 200, since restarting it would cut every call.
- `GET /readyz` is readiness: 200 `{"ready": true, ...}` while a new call would be admitted, 503
  with `Retry-After` and the `reason` while it would be refused: `busy` (the process is overloaded,
  see `agentkit.stream.LoadMonitor`), `over_capacity` (at the stream's `concurrency_limit`) or
  `shutting_down`. A load balancer sends new calls elsewhere meanwhile; the open ones go on.

Both are open to anyone, like any health probe: they show counts and load figures only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from agentkit.stream import LoadMonitor, SessionHost
from agentkit.stream._stream import RETRY_AFTER_S

__all__ = ["Probes"]


class Probes:
    """The probes of one app serving `stream`, and the load monitor readiness depends on.

    `load` becomes `stream.load`, so the stream refuses new sessions (`busy`) while it says the
    process is overloaded; the app's lifespan runs it within `serving()`.
    """

    def __init__(
        self, stream: SessionHost, load: LoadMonitor, *, input_sample_rate: int, output_sample_rate: int
    ) -> None:
        """`input_sample_rate` / `output_sample_rate`: the FastRTC-compatible endpoint's wire rates,
        shown by `/healthz` (FastRTC's benchmark client reads them there)."""
        self.stream = stream
        self.load = stream.load = load
        self.shutting_down = False
        """The app is shutting down: `/readyz` says so, whatever else holds."""
        self._rates = {"input_sample_rate": input_sample_rate, "output_sample_rate": output_sample_rate}

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """While the app serves: the load monitor runs; once it stops, `shutting_down` is set."""
        self.shutting_down = False
        self.load.start()
        try:
            yield
        finally:
            self.shutting_down = True
            await self.load.aclose()

    def health(self) -> dict[str, Any]:
        """The `/healthz` body."""
        return {
            "ok": True,
            "pid": os.getpid(),
            "sessions": len(self.stream.sessions),
            "concurrency_limit": self.stream.concurrency_limit,
            "refused": self.stream.refused.counts(),  # callers refused or cut off, by reason (counts only)
            **self._rates,
        }

    def readiness(self) -> JSONResponse:
        """The `/readyz` answer: 200 when ready, else 503 with the reason and `Retry-After`."""
        reason = "shutting_down" if self.shutting_down else self.stream.admission()
        body = {
            "ready": reason is None,
            "reason": reason,
            "sessions": len(self.stream.sessions),
            "concurrency_limit": self.stream.concurrency_limit,
            "load": self.load.figures(),
        }
        if reason is None:
            return JSONResponse(body)
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})

    def router(self) -> APIRouter:
        """A router serving both probes."""
        router = APIRouter()

        @router.get("/healthz")
        async def healthz() -> dict[str, Any]:
            return self.health()

        @router.get("/readyz")
        async def readyz() -> JSONResponse:
            return self.readiness()

        return router
