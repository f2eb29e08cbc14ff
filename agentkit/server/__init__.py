"""The FastAPI app that serves a stream: its transports, `/healthz`, and clean shutdown."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

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

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await stream.aclose()

    app = FastAPI(title=title, lifespan=lifespan)
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
