"""An Agent served by `create_app` over the WebSocket: transcripts and metrics reach the caller, the
store keeps the conversation and serves it read-only as JSON, and the caller's id carries over."""

from __future__ import annotations

import socket

import httpx
import pytest
from _server import live_server
from conftest import speech

from agentkit import Agent, Stream, TurnTakingOptions, caller_token
from agentkit.exceptions import ConfigError
from agentkit.server import create_app
from agentkit.store import MemoryStore, open_store
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, WebSocketCaller

pytestmark = pytest.mark.slow


class Served(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on 300 ms of silence: the caller plays 0.6 s of it
    greeting = "Welcome."


async def test_agent_over_websocket_with_store_api(
    models_dir: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTKIT_API_LOCAL", "1")  # the API, to this machine only
    monkeypatch.setenv("AGENTKIT_CALLER_SECRET", "a-secret-shared-with-the-site-0123456789")
    store = MemoryStore()
    agent = Served(
        stt=ScriptedSTT("Book a table for two."),
        llm=ScriptedLLM("Done. Your table is booked."),
        tts=ToneTTS(ms_per_char=10),
        store=store,
    )
    async with live_server(Stream(agent)) as server:
        token = caller_token("guest-1")  # as the site's backend would make it
        async with WebSocketCaller(server.ws_url(), caller_token=token) as caller:
            await caller.wait_for_event("response_done", timeout_s=10)  # the greeting
            await caller.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
            metrics = await caller.wait_for_event("metrics", timeout_s=10)
            await caller.stop()
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            listing = (await http.get("/api/conversations", params={"caller": "guest-1"})).json()
            assert len(listing["conversations"]) == 1
            conversation_id = listing["conversations"][0]["id"]
            detail = (await http.get(f"/api/conversations/{conversation_id}")).json()
            missing = await http.get("/api/conversations/nope")
    transcripts = [(e.data["role"], e.data["text"]) for e in caller.events_of("transcript")]
    assert transcripts == [
        ("assistant", "Welcome."),
        ("user", "Book a table for two."),
        ("assistant", "Done. Your table is booked."),
    ]
    assert metrics.data["turn_index"] == 0 and metrics.data["metrics"]["voice_to_voice_ms"] > 0
    assert detail["conversation"]["caller"] == "guest-1" and detail["conversation"]["channel"] == "ws"
    assert [m["text"] for m in detail["messages"]] == [t for _, t in transcripts]
    assert len(detail["metrics"]) == 1 and detail["metrics"][0]["interrupted"] is False
    assert missing.status_code == 404


async def test_the_served_api_takes_its_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_API_TOKEN", "from-the-env")
    agent = Served(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(), store=MemoryStore())
    transport = httpx.ASGITransport(app=create_app(Stream(agent)))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        without = await http.get("/api/conversations")
        with_token = await http.get("/api/conversations", headers={"authorization": "Bearer from-the-env"})
    assert (without.status_code, with_token.status_code) == (401, 200)


async def test_the_served_api_is_off_unless_turned_on(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = Served(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(), store=MemoryStore())
    for local, host, status in (("0", "127.0.0.1", 403), ("1", "testserver", 403), ("1", "127.0.0.1", 200)):
        monkeypatch.setenv("AGENTKIT_API_LOCAL", local)
        transport = httpx.ASGITransport(app=create_app(Stream(agent)))  # a 127.0.0.1 client
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
            assert (await http.get("/api/conversations")).status_code == status, (local, host)


async def test_a_store_that_does_not_answer_stops_the_server_at_startup() -> None:
    """`agentkit run` with `AGENTKIT_STORE=redis://...` pointing nowhere fails at once, not at the
    first caller."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = open_store(f"redis://127.0.0.1:{port}/0")
    agent = Served(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(), store=store)
    app = create_app(Stream(agent))
    with pytest.raises(ConfigError, match="does not answer"):
        async with app.router.lifespan_context(app):
            pass
    await store.aclose()
