"""The FastAPI app that serves a stream: its transports, `/healthz`, and clean shutdown.

When the stream's handler is an `Agent`, the app also warms its providers up before the first
caller, gives it a conversation store (from `AGENTKIT_STORE` unless it has one) and serves that
store read-only under `/api/conversations`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from agentkit.agent import Agent
from agentkit.store import ConversationStore, conversation_api, open_store
from agentkit.stream import Stream
from agentkit.transports.websocket import add_websocket_routes

__all__ = ["create_app"]


def create_app(
    stream: Stream,
    *,
    path: str = "",
    fastrtc_input_sample_rate: int = 48000,
    fastrtc_output_sample_rate: int = 24000,
    title: str = "agentkit",
) -> FastAPI:
    """A FastAPI app with `stream` mounted under `path` and a `/healthz` probe.

    The app closes every open session on shutdown.
    """

    agent = stream.handler if isinstance(stream.handler, Agent) else None
    owned_store: ConversationStore | None = None
    if agent is not None and agent.store is None:
        owned_store = agent.store = open_store()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if agent is not None:
            await agent.warm_up()  # a missing key or model fails here, not on the first call
        try:
            yield
        finally:
            await stream.aclose()
            if owned_store is not None:
                await owned_store.aclose()

    app = FastAPI(title=title, lifespan=lifespan)
    if agent is not None and agent.store is not None:
        app.include_router(conversation_api(agent.store))
    add_websocket_routes(
        app,
        stream,
        prefix=path.rstrip("/"),
        fastrtc_input_sample_rate=fastrtc_input_sample_rate,
        fastrtc_output_sample_rate=fastrtc_output_sample_rate,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "ok": True,
            "pid": os.getpid(),
            "sessions": len(stream.sessions),
            "concurrency_limit": stream.concurrency_limit,
            # the FastRTC-compatible endpoint's wire rates (read by FastRTC's benchmark client)
            "input_sample_rate": fastrtc_input_sample_rate,
            "output_sample_rate": fastrtc_output_sample_rate,
        }

    return app
