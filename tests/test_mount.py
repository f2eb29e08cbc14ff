"""`Stream.mount(app)` adds every transport's endpoints to someone else's FastAPI app; `mount(app, host)` is
the one function behind it (and behind `create_app`)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
from fastapi import FastAPI

from agentkit import ReplyOnPause, Stream
from agentkit.audio import AudioFrame
from agentkit.stream import SessionHost
from agentkit.testing._transport import open_recorded_session
from agentkit.transports import mount


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


async def test_mount_takes_the_transport_options_and_closes_webrtc_with_the_stream() -> None:
    app = FastAPI()
    host = SessionHost(ReplyOnPause(echo))  # the core alone: `mount` needs no `Stream`
    mounted = mount(app, host, prefix="/v", allowed_origins=[], validate_twilio_signatures=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        foreign = await http.post(
            "/v/webrtc/offer", json={"type": "offer"}, headers={"origin": "https://elsewhere.example"}
        )
        unsigned = await http.post("/v/telephone/incoming", data={"From": "+15550100"})
        await host.aclose()
        late = await http.post("/v/webrtc/offer", json={"type": "offer"})
    assert foreign.status_code == 403 and foreign.json()["error"] == "origin_not_allowed"
    assert unsigned.status_code == 200 and "<Stream" in unsigned.text
    assert late.status_code == 503 and late.json()["error"] == "shutting_down"
    assert not mounted.webrtc_peers.connections


async def test_on_close_steps_run_before_the_sessions_close() -> None:
    host = SessionHost(ReplyOnPause(echo))
    session, _ = open_recorded_session(host)
    seen: list[bool] = []

    async def step() -> None:
        seen.append(session.closed)

    host.on_close(step)
    await host.aclose()
    assert seen == [False] and session.closed and not host.sessions
