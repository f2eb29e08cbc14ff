"""Hostile input on every endpoint, seeded (`AGENTKIT_FUZZ_SEED`), against one live server with an
Agent on scripted providers and a SQLite store: the native WebSocket `/ws`, FastRTC's
`/websocket/offer`, Twilio's media stream and voice webhook, the WebRTC offer and data channel, and
the conversation API. About 3,000 messages and requests in all (tests/_hostile.py makes them).

Every one gets a refusal of its own kind (an `error` event, a 4xx, a close code other than 1011) and
nothing reaches a traceback: no ERROR record and no record with exception info in the server's log,
no forged log line, no phone number in it. Afterwards no session or peer connection is left, the
file descriptors are back, and a normal call is still answered. bench/soak.py runs the long version.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _hostile import (
    FORGED,
    PHONE,
    Hostile,
    Tally,
    disconnect_mid_body,
    fuzz_api,
    fuzz_data_channel,
    fuzz_fastrtc,
    fuzz_native,
    fuzz_offers,
    fuzz_twilio,
    fuzz_webhook,
)
from _server import LiveServer, live_server, offer_sdp, wait_for
from aiortc import RTCConfiguration, RTCPeerConnection
from conftest import speech
from websockets.asyncio.client import connect

from agentkit import Agent, Stream, TurnTakingOptions
from agentkit.store import open_store
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, TwilioCaller, WebSocketCaller, loopback_ice
from agentkit.transports._webrtc_connection import close_peer_connection
from agentkit.transports.webrtc import WebRTCPeers

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("AGENTKIT_FUZZ_SEED", "20241124"))
TWILIO_TOKEN = "fuzz-auth-token-0123456789abcdef"
API_TOKEN = "fuzz-api-token-0123456789abcdef"
ALLOWED_CLOSES = {1000, 1003, 1007, 1008, 1009}
"""Server-chosen close codes a hostile message may earn: stop, binary on Twilio, bad data, policy
(bad token, no start), too big. Never 1011."""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    monkeypatch.setenv("AGENTKIT_API_TOKEN", API_TOKEN)
    monkeypatch.delenv("AGENTKIT_PUBLIC_URL", raising=False)
    monkeypatch.delenv("AGENTKIT_TWILIO_VALIDATE", raising=False)


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    with loopback_ice():
        yield


class Served(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    greeting = "Hello."


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def peers_of(server: LiveServer) -> WebRTCPeers:
    peers = server.server.config.app.state.webrtc_peers
    assert isinstance(peers, WebRTCPeers)
    return peers


async def normal_calls(server: LiveServer) -> None:
    """After all that: a WebSocket call hears its greeting and gets a reply to a spoken question, and
    a phone call through Twilio starts."""
    async with WebSocketCaller(server.ws_url(), caller="guest-1") as caller:
        await caller.wait_for_event("response_done", timeout_s=10)  # the greeting
        await caller.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
        transcript = await caller.wait_for_event("transcript", timeout_s=10)
        await caller.stop()
    assert transcript.data["role"] in ("user", "assistant")
    async with TwilioCaller(server.http_url, auth_token=TWILIO_TOKEN, from_number=PHONE) as call:
        await call.start()
        await wait_for(lambda: len(server.stream.sessions) == 1, what="the phone call's session")
        await call.stop()


async def test_hostile_input_on_every_endpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store = open_store(f"sqlite:///{tmp_path}/conversations.db")
    agent = Served(
        stt=ScriptedSTT("What time is it?"),
        llm=ScriptedLLM("It is noon."),
        tts=ToneTTS(ms_per_char=10),
        store=store,
    )
    hostile = Hostile(SEED)
    tallies: dict[str, Tally] = {
        name: Tally() for name in ("ws", "fastrtc", "twilio", "webhook", "offer", "channel", "api")
    }
    try:
        async with live_server(Stream(agent)) as server:
            sessions = lambda: len(server.stream.sessions)  # noqa: E731
            sdps = [await offer_sdp() for _ in range(3)]
            await fuzz_offers(server.http_url, sdps, Hostile(SEED - 1), 5, Tally())  # warm up aiortc
            await wait_for(lambda: not peers_of(server).connections, what="warm-up peers to close")
            fds_before = open_fds()

            await fuzz_native(server.ws_url(), hostile, 1200, tallies["ws"])
            await fuzz_fastrtc(server.ws_url("/websocket/offer"), hostile, 700, tallies["fastrtc"])
            await fuzz_twilio(
                server.http_url, TWILIO_TOKEN, hostile, 600, tallies["twilio"], sessions=sessions
            )
            await fuzz_webhook(server.http_url, TWILIO_TOKEN, hostile, 150, tallies["webhook"])
            await fuzz_offers(server.http_url, sdps, hostile, 150, tallies["offer"])
            await fuzz_data_channel(server.http_url, hostile, 300, tallies["channel"])
            await fuzz_api(server.http_url, API_TOKEN, hostile, 200, tallies["api"])
            await disconnect_mid_body(server.http_url, "/webrtc/offer")

            await wait_for(lambda: not server.stream.sessions, timeout_s=15, what="every session to close")
            await wait_for(lambda: not peers_of(server).connections, timeout_s=15, what="every peer to close")
            await wait_for(lambda: open_fds() <= fds_before + 2, timeout_s=10, what="the fds to come back")
            await normal_calls(server)
            await wait_for(lambda: not server.stream.sessions, timeout_s=10, what="the normal calls to end")
    finally:
        await store.aclose()

    summary = {name: _summary(t) for name, t in tallies.items()}
    print(json.dumps(summary, indent=1))  # shown with -s or on failure
    for name, tally in tallies.items():
        assert not tally.failures(), (name, tally.failures())
        assert set(tally.close_codes) <= ALLOWED_CLOSES, (name, tally.close_codes)
    assert sum(t.sent for t in tallies.values()) >= 3000
    for name in ("ws", "fastrtc", "channel"):
        assert tallies[name].survived > 0, name
    assert {"bad_json", "bad_start", "not_started"} <= set(tallies["ws"].error_codes)
    assert {"bad_json", "bad_start"} <= set(tallies["fastrtc"].error_codes)
    assert {"bad_json", "unknown_message"} <= set(tallies["channel"].error_codes)
    assert {"bad_json", "bad_sdp", "too_large"} <= set(tallies["offer"].error_codes)
    assert {200, 400, 403, 413} <= set(tallies["webhook"].statuses)
    assert 1008 in tallies["twilio"].close_codes  # spoiled starts: bad token or sids, before a session

    records = [r for r in caplog.records if r.name.split(".")[0] not in ("websockets", "httpx", "httpcore")]
    failures = [r for r in records if r.levelno >= logging.ERROR or r.exc_info]
    assert not failures, [f"{r.name}: {r.getMessage()[:300]}" for r in failures[:5]]
    messages = [r.getMessage() for r in records]
    assert not [m for m in messages if FORGED in m], "a log line was forged"
    assert not [m for m in messages if PHONE in m or PHONE[1:] in m], "a phone number reached the log"
    assert any("disconnected before" in m for m in messages)  # the webhook's ClientDisconnect: one line


def _summary(tally: Tally) -> dict[str, Any]:
    return {
        "sent": tally.sent,
        "connections": tally.connections,
        "survived": tally.survived,
        "statuses": dict(sorted(tally.statuses.items())),
        "close_codes": dict(sorted(tally.close_codes.items())),
        "errors": dict(tally.error_codes.most_common(8)),
    }


async def test_refusals_are_specific() -> None:
    """Deterministic spot checks of what the fuzz test covers at random."""
    deep = "[" * 2000 + "]" * 2000
    async with live_server(Stream(Served(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS()))) as server:
        async with WebSocketCaller(server.ws_url(), auto_start=False) as caller:
            for text, code in [
                (deep, "bad_json"),
                ('{"type": "start", "sample_rate": 16000, "session_id": "a\\nb"}', "bad_start"),
                ('{"type": "start", "sample_rate": 16000, "caller": "\\ud800"}', "bad_start"),
                ('{"type": "start", "sample_rate": 16000, "session_id": "\\ud800"}', "bad_start"),
            ]:
                since = len(caller.events)
                await caller.send_raw(text)
                error = await caller.wait_for_event("error", since=since)
                assert error.data["code"] == code, text
            await caller.ping()  # the connection is fine
        async with connect(server.ws_url("/websocket/offer")) as ws:  # FastRTC's protocol
            await ws.send(json.dumps({"event": "start", "websocket_id": "id" + FORGED}))
            assert json.loads(await ws.recv())["code"] == "bad_start"
        assert not server.stream.sessions
        for token, stream_sid in [("\ud800", "MZ1"), (None, "MZ\n1"), ("x" * 20_000, "MZ1")]:
            call = TwilioCaller(server.http_url, auth_token=TWILIO_TOKEN, from_number=PHONE)
            assert (await call.post_webhook()).stream_url is not None
            async with connect(server.ws_url("/telephone/media")) as ws:
                start = {
                    "streamSid": stream_sid,
                    "callSid": call.call_sid,
                    "customParameters": {"token": token},
                }
                await ws.send(json.dumps({"event": "start", "streamSid": stream_sid, "start": start}))
                await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 1008, (token, stream_sid)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            sdp = await offer_sdp()
            cases: list[tuple[Any, int, str]] = [
                (deep, 400, "bad_json"),
                ('{"a":' * 3000 + "1" + "}" * 3000, 400, "bad_json"),
                ({"type": "offer", "sdp": sdp, "session_id": "\ud800"}, 400, "bad_offer"),
                ({"type": "offer", "sdp": sdp, "session_id": "x\ny"}, 400, "bad_offer"),
                ({"type": "offer", "sdp": sdp, "caller": "\ud800"}, 400, "bad_offer"),
                ({"type": "offer", "sdp": sdp.replace("a=setup:actpass", "a=setup:active")}, 400, "bad_sdp"),
                ({"type": "offer", "sdp": sdp.replace("a=mid:0\r\n", "")}, 400, "bad_sdp"),
                ("x" * 200_000, 413, "too_large"),
            ]
            for body, status, code in cases:
                content = body if isinstance(body, str) else json.dumps(body)
                response = await http.post("/webrtc/offer", content=content)
                assert (response.status_code, response.json()["error"]) == (status, code), str(body)[:80]
        assert not server.stream.sessions and not peers_of(server).connections


async def test_a_peer_connection_that_fails_to_close_still_frees_its_sockets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """aiortc can raise inside `pc.close()` (half-negotiated connections did): the transports it made
    are then stopped by hand, and every socket it opened is closed."""
    before = open_fds()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("events")
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())  # gathers candidates: sockets are open
    assert open_fds() > before

    async def broken() -> None:
        raise RuntimeError("aiortc failed")

    monkeypatch.setattr(pc.getTransceivers()[0], "stop", broken)
    await close_peer_connection(pc)
    assert open_fds() <= before
