"""Caller ids on the web are verified: only a caller token the site's backend signed links a caller's
earlier conversations; a plain `caller` is a label; a bad token is refused, never downgraded.

The token checks run on their own first, then against a real `Agent` (scripted STT and LLM, a tone
TTS, a `MemoryStore`) served by uvicorn on loopback, over `/ws` and WebRTC.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from _server import FAST, Silent, live_server, offer_sdp, wait_for
from conftest import speech

import agentkit
from agentkit import Agent, Stream
from agentkit._identity import MAX_TTL_S, CallerTokenError, verify_caller_token
from agentkit.agent import AgentEvent, SessionStarted
from agentkit.exceptions import ConfigError
from agentkit.providers.llm import ChatMessage
from agentkit.server import create_app
from agentkit.store import MemoryStore
from agentkit.testing import (
    CallRefusedError,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    WebRTCCaller,
    WebSocketCaller,
    loopback_ice,
)

SECRET = "caller-secret-for-tests-0123456789abcdef"
OTHER_SECRET = "another-site-secret-0123456789abcdefghij"
ALICE = "alice@example.com"


@pytest.fixture(autouse=True)
def _caller_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AGENTKIT_CALLER_SECRET", SECRET)
    with loopback_ice():
        yield


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def mint(*, secret: str = SECRET, drop: tuple[str, ...] = (), **claims: Any) -> str:
    """An HS256 token for ALICE, valid for 5 minutes, with `claims` changed and `drop` left out."""
    now = int(time.time())
    payload = {"sub": ALICE, "aud": "agentkit", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if k not in drop}, secret, algorithm="HS256")


def unsigned() -> str:
    """The classic forgery: `alg: none` and no signature."""
    now = int(time.time())
    claims = {"sub": ALICE, "aud": "agentkit", "iat": now, "exp": now + 300}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def bad_tokens() -> dict[str, tuple[Any, str]]:
    """name -> (token, a word the refusal's message must hold)."""
    now = int(time.time())
    return {
        "expired": (mint(iat=now - 600, exp=now - 300), "expired"),
        "wrong secret": (mint(secret=OTHER_SECRET), "signed"),
        "wrong audience": (mint(aud="someone-else"), "aud"),
        "no audience": (mint(drop=("aud",)), "aud"),
        "alg none": (unsigned(), "HS256"),
        "HS512": (
            jwt.encode(jwt.decode(mint(), options={"verify_signature": False}), SECRET * 2, "HS512"),
            "HS256",
        ),
        "malformed": ("not-a-jwt", "JWT"),
        "no exp": (mint(drop=("exp",)), "exp"),
        "no sub": (mint(drop=("sub",)), "sub"),
        "lives two days": (mint(exp=now + 2 * 86400), "24 h"),
        "issued in the future": (mint(iat=now + 3600, exp=now + 3900), "not valid yet"),
        "over-long sub": (mint(sub="x" * 200), "sub"),
        "not a string": (42, "JWT"),
    }


# -- the tokens ----------------------------------------------------------------------------------


def test_caller_token_round_trip() -> None:
    token = agentkit.caller_token(ALICE, ttl_s=120)
    assert verify_caller_token(token, SECRET) == ALICE
    assert verify_caller_token(None, SECRET) is None  # no token: no caller, no error
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="agentkit")
    assert claims["sub"] == ALICE and claims["exp"] - claims["iat"] == 120
    assert abs(claims["iat"] - time.time()) < 5
    explicit = agentkit.caller_token("bob", secret=OTHER_SECRET)
    assert verify_caller_token(explicit, OTHER_SECRET) == "bob"
    with pytest.raises(CallerTokenError, match="signed"):
        verify_caller_token(explicit, SECRET)


def test_caller_token_needs_a_secret_of_32_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKIT_CALLER_SECRET")
    with pytest.raises(ConfigError, match="AGENTKIT_CALLER_SECRET"):
        agentkit.caller_token(ALICE)
    with pytest.raises(ConfigError, match="32 bytes"):
        agentkit.caller_token(ALICE, secret="short")
    with pytest.raises(ValueError, match="ttl_s"):
        agentkit.caller_token(ALICE, secret=SECRET, ttl_s=MAX_TTL_S + 1)
    with pytest.raises(ValueError, match="caller_id"):
        agentkit.caller_token("", secret=SECRET)
    with pytest.raises(CallerTokenError, match="no caller secret"):  # a server without a secret
        verify_caller_token(agentkit.caller_token(ALICE, secret=SECRET), None)


@pytest.mark.parametrize("name", sorted(bad_tokens()))
def test_bad_tokens_are_refused_with_a_reason(name: str) -> None:
    token, reason = bad_tokens()[name]
    with pytest.raises(CallerTokenError) as refused:
        verify_caller_token(token, SECRET)
    assert refused.value.code == "bad_caller_token"
    assert reason in refused.value.message, refused.value.message


def test_a_weak_server_secret_stops_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_CALLER_SECRET", "too-short")
    with pytest.raises(ConfigError, match="32 bytes"):
        create_app(Stream(Silent()))


# -- a real agent with a memory ------------------------------------------------------------------


class Remembering(Agent):
    turn_taking = FAST
    semantic_turn = None  # turns end on silence: these tests play short silent tails

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started: list[SessionStarted] = []  # shared by every session's copy

    async def on_event(self, event: AgentEvent) -> None:
        if isinstance(event, SessionStarted):
            self.started.append(event)


EARLIER = [ChatMessage("user", "My locker code is 4711."), ChatMessage("assistant", "Noted.")]


async def remembering_agent() -> tuple[Remembering, MemoryStore, ScriptedLLM]:
    """An agent whose store holds one earlier conversation of ALICE's."""
    store = MemoryStore()
    earlier = await store.start_conversation("Remembering", "ws", caller=ALICE)
    for message in EARLIER:
        await store.add_message(earlier.id, message.role, message.text, started_at=time.time())
    await store.end_conversation(earlier.id)
    llm = ScriptedLLM("Hello.")
    agent = Remembering(stt=ScriptedSTT("What is my locker code?"), llm=llm, tts=ToneTTS(), store=store)
    return agent, store, llm


async def _started(agent: Remembering, count: int) -> SessionStarted:
    await wait_for(lambda: len(agent.started) >= count, timeout_s=10, what="the agent's session start")
    return agent.started[count - 1]


@pytest.mark.slow
async def test_a_claimed_caller_gets_no_history_and_a_token_does(models_dir: object) -> None:
    agent, store, llm = await remembering_agent()
    async with live_server(Stream(agent)) as server:
        # a page that merely says it is Alice: a label, no caller, no history, nothing linked to her
        async with WebSocketCaller(server.ws_url(), caller=ALICE) as forger:
            session = server.stream.sessions[forger.session_id or ""]
            assert session.caller is None and dict(session.call_info) == {"caller_label": ALICE}
            started = await _started(agent, 1)
            assert (started.caller, started.earlier_messages) == (None, 0)
            assert started.call_info == {"caller_label": ALICE}
            await forger.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
            await forger.wait_for_event("metrics", timeout_s=10)
            await forger.stop()
        assert [m.text for m in llm.calls[-1].messages] == ["What is my locker code?"]
        # Alice's own page, with the token her site's backend made: her history is back
        token = agentkit.caller_token(ALICE)
        async with WebSocketCaller(server.ws_url(), caller_token=token) as alice:
            assert server.stream.sessions[alice.session_id or ""].caller == ALICE
            started = await _started(agent, 2)
            assert (started.caller, started.earlier_messages) == (ALICE, 2)
            await alice.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
            await alice.wait_for_event("metrics", timeout_s=10)
            await alice.stop()
        assert list(llm.calls[-1].messages[:2]) == EARLIER
    conversations = await store.list_conversations()
    assert [c.caller for c in conversations] == [ALICE, None, ALICE]  # newest first
    assert await store.list_conversations(caller=ALICE) == [conversations[0], conversations[2]]


@pytest.mark.slow
async def test_the_same_over_webrtc(models_dir: object) -> None:
    agent, store, _ = await remembering_agent()
    async with live_server(Stream(agent)) as server:
        async with WebRTCCaller(server.http_url, caller=ALICE) as forger:
            session = server.stream.sessions[forger.session_id or ""]
            assert session.caller is None and dict(session.call_info) == {"caller_label": ALICE}
            started = await _started(agent, 1)
            assert (started.caller, started.earlier_messages) == (None, 0)
        async with WebRTCCaller(server.http_url, caller_token=agentkit.caller_token(ALICE)) as alice:
            assert server.stream.sessions[alice.session_id or ""].caller == ALICE
            started = await _started(agent, 2)
            assert (started.caller, started.earlier_messages) == (ALICE, 2)
        await wait_for(lambda: not server.stream.sessions, timeout_s=10, what="the sessions closing")
    assert [c.caller for c in await store.list_conversations()] == [ALICE, None, ALICE]


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_bad_tokens_are_refused_on_the_websocket() -> None:
    async with live_server(Stream(Silent())) as server:
        for name, (token, reason) in bad_tokens().items():
            caller = WebSocketCaller(server.ws_url(), caller_token=token, caller=ALICE)
            with pytest.raises(CallRefusedError) as refused:
                async with caller:
                    pass
            assert (refused.value.error_code, refused.value.close_code) == ("bad_caller_token", 1008), name
            (error,) = caller.events_of("error")
            assert error.data["fatal"] is True and reason in error.data["message"], name
        assert not server.stream.sessions


@pytest.mark.slow
async def test_bad_tokens_are_refused_on_the_webrtc_offer() -> None:
    async with live_server(Stream(Silent())) as server:
        sdp = await offer_sdp()
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            for name, (token, reason) in bad_tokens().items():
                body = {"type": "offer", "sdp": sdp, "caller_token": token, "caller": ALICE}
                response = await http.post("/webrtc/offer", json=body)
                assert response.status_code == 401, name
                assert response.json()["error"] == "bad_caller_token", name
                assert reason in response.json()["message"], name
        assert not server.stream.sessions and not server.server.config.app.state.webrtc_peers.connections


@pytest.mark.slow
async def test_a_server_without_a_secret_refuses_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTKIT_CALLER_SECRET")
    token = agentkit.caller_token(ALICE, secret=SECRET)
    async with live_server(Stream(Silent())) as server:
        with pytest.raises(CallRefusedError) as refused:
            async with WebSocketCaller(server.ws_url(), caller_token=token):
                pass
        assert refused.value.error_code == "bad_caller_token"
        body = {"type": "offer", "sdp": await offer_sdp(), "caller_token": token}
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.post("/webrtc/offer", json=body)
        assert (response.status_code, response.json()["error"]) == (401, "bad_caller_token")
        async with WebSocketCaller(server.ws_url(), caller=ALICE) as labelled:  # a label needs no secret
            assert server.stream.sessions[labelled.session_id or ""].caller is None
