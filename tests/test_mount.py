"""`Stream.mount(app)` adds every transport's endpoints to someone else's FastAPI app."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi import FastAPI

from agentkit import ReplyOnPause, Stream
from agentkit.audio import AudioFrame


def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
    yield audio


async def test_mount_adds_all_transports_under_a_path() -> None:
    app = FastAPI()
    stream = Stream(ReplyOnPause(echo))
    stream.mount(app, path="/voice/")
    paths = {getattr(route, "path", None) for route in app.routes}
    assert {
        "/voice/ws",
        "/voice/websocket/offer",
        "/voice/webrtc/offer",
        "/voice/telephone/incoming",
        "/voice/telephone/media",
    } <= paths
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        refused = await http.post("/voice/webrtc/offer", content=b"not json")
        unsigned = await http.post("/voice/telephone/incoming", data={"From": "+15550100"})
    assert refused.status_code == 400 and refused.json()["error"] == "bad_json"
    assert unsigned.status_code == 403  # Twilio webhooks must be signed unless that is turned off
    await stream.aclose()
