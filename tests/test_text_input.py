"""Text alongside voice: a message the caller types is a turn like a spoken one (the same history,
tools and spoken reply, and a barge-in), over `/ws` and the WebRTC data channel, with a real Agent
and scripted providers; an over-long or control-character message gets a clear `bad_text` error and
the call goes on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _server import live_server

from agentkit import Agent, Stream, TurnTakingOptions, tool
from agentkit.exceptions import ProtocolError
from agentkit.providers.llm import ChatMessage
from agentkit.store import MemoryStore
from agentkit.stream import AsyncStreamHandler, EmitType, Session
from agentkit.stream._session import MAX_TEXT_MESSAGE_CHARS
from agentkit.testing import (
    RecordingTransport,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    WebRTCCaller,
    WebSocketCaller,
    open_recorded_session,
)

ASKED = "Where is my order 42?"
ANSWER = "Let me check. It has shipped."


class Shop(Agent):
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    greeting = "Welcome."
    tool_filler = None

    @tool
    async def order_status(self, order: int) -> str:
        """Where an order is.

        Args:
            order: The order number.
        """
        return f"order {order} has shipped"


def shop(llm: ScriptedLLM | None = None, **settings: Any) -> Shop:
    llm = llm or ScriptedLLM(
        ScriptedLLM.calls_tool("order_status", {"order": 42}, text="Let me check."), "It has shipped."
    )
    return Shop(stt=ScriptedSTT("Never heard."), llm=llm, tts=ToneTTS(ms_per_char=10), **settings)


def said(events: list[Any]) -> list[tuple[str, str]]:
    return [(e.data["role"], e.data["text"]) for e in events if e.data.get("final", True)]


# -- over the wire -------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_typed_turn_over_the_websocket() -> None:
    llm = ScriptedLLM(
        ScriptedLLM.calls_tool("order_status", {"order": 42}, text="Let me check."),
        "It has shipped.",
        "You are welcome.",
    )
    store = MemoryStore()
    async with (
        live_server(Stream(shop(llm, store=store))) as server,
        WebSocketCaller(server.ws_url(), auto_start=False) as caller,
    ):
        await caller.send_json({"type": "text", "text": "Too early."})
        not_started = await caller.wait_for_event("error")
        await caller.start()
        await caller.wait_for_event("response_done", timeout_s=10)  # the greeting
        heard_before = len(caller.audio_chunks)
        await caller.send_json({"type": "text", "text": ASKED})
        metrics = await caller.wait_for_event("metrics", timeout_s=10)
        reply_audio = len(caller.audio_chunks) - heard_before
        errors = []
        for bad in ("x" * (MAX_TEXT_MESSAGE_CHARS + 1), "bell\x07", "   ", 42):
            since = len(caller.events)
            await caller.send_json({"type": "text", "text": bad})
            errors.append(await caller.wait_for_event("error", since=since))
        since = len(caller.events)
        await caller.send_json({"type": "text", "text": "Thanks!\nBye."})  # newlines are fine
        await caller.wait_for_event("metrics", timeout_s=10, since=since)
        await caller.stop()
    assert not_started.data["code"] == "not_started"
    assert said(caller.events_of("transcript")) == [
        ("assistant", "Welcome."),
        ("user", ASKED),
        ("assistant", ANSWER),
        ("user", "Thanks!\nBye."),
        ("assistant", "You are welcome."),
    ]
    assert [(e.data["name"], e.data["status"]) for e in caller.events_of("tool")] == [
        ("order_status", "started"),
        ("order_status", "finished"),
    ]
    assert reply_audio > 0  # the reply was spoken
    figures = metrics.data["metrics"]
    assert figures["stt_provider"] is None and figures["stt_ms"] is None and figures["user_audio_s"] == 0
    assert figures["llm_provider"] == "scripted-llm" and figures["user_chars"] == len(ASKED)
    assert [(e.data["code"], e.data["fatal"]) for e in errors] == [("bad_text", False)] * 4
    assert "at most 2000 characters" in errors[0].data["message"]
    assert "control characters" in errors[1].data["message"]
    # the history: the typed turns, the tool step, the replies, as the LLM saw them
    assert llm.calls[0].messages[-1] == ChatMessage("user", ASKED)
    assert llm.calls[2].messages[0] == ChatMessage("user", ASKED)
    assert llm.calls[2].messages[-2:] == (
        ChatMessage("assistant", "It has shipped."),
        ChatMessage("user", "Thanks!\nBye."),
    )
    (conversation,) = await store.list_conversations()
    stored = [(m.role, m.text) for m in await store.messages(conversation.id)]
    assert stored == said(caller.events_of("transcript"))


@pytest.mark.slow
async def test_a_typed_turn_over_the_webrtc_data_channel() -> None:
    async with live_server(Stream(shop())) as server, WebRTCCaller(server.http_url) as caller:
        await caller.wait_for_event("response_done", timeout_s=10)  # the greeting
        caller.send_json({"type": "text", "text": "bad\x00text"})
        error = await caller.wait_for_event("error", timeout_s=5)
        caller.send_json({"type": "text", "text": ASKED})
        await caller.wait_for_event("metrics", timeout_s=10)
        caller.send_json({"type": "stop"})
        await caller.wait_for_event("stopped", timeout_s=5)
    assert (error.data["code"], error.data["fatal"]) == ("bad_text", False)
    assert said(caller.events_of("transcript")) == [
        ("assistant", "Welcome."),
        ("user", ASKED),
        ("assistant", ANSWER),
    ]
    assert [e.data["status"] for e in caller.events_of("tool")] == ["started", "finished"]


# -- in process: barge-in, and the stream core's checks ------------------------------------------

STORY = "Once upon a time there was a long story. It went on and on. And on. And it kept going for a while."


async def start(agent: Agent) -> tuple[Session, RecordingTransport, Agent]:
    session, transport = open_recorded_session(Stream(agent))
    await session.start()
    assert isinstance(session.handler, Agent)
    return session, transport, session.handler


@pytest.mark.parametrize("can_interrupt", [True, False])
async def test_a_typed_message_over_a_reply_is_a_barge_in(models_dir: object, can_interrupt: bool) -> None:
    llm = ScriptedLLM(STORY, "It is noon.")
    agent = Shop(
        stt=ScriptedSTT(), llm=llm, tts=ToneTTS(ms_per_char=20), greeting=None, can_interrupt=can_interrupt
    )
    session, transport, handler = await start(agent)
    try:
        await session.receive_text("Tell me a story.")
        await transport.wait_for("response_starting", timeout_s=5)
        while not transport.audio:
            await transport.changed()
        await asyncio.sleep(0.5)  # into the 2 s reply
        await session.receive_text("What time is it?")
        await transport.wait_for("metrics", timeout_s=10, count=2)
        history = handler.session.history
    finally:
        await session.close()
    interrupted = transport.events_of("interrupted")
    if can_interrupt:
        assert len(interrupted) == 1
        assert history[0] == ChatMessage("user", "Tell me a story.")
        assert history[1].interrupted and STORY.startswith(history[1].text) and history[1].text != STORY
    else:
        assert interrupted == []  # the typed turn waited for the story to end
        assert history[:2] == [ChatMessage("user", "Tell me a story."), ChatMessage("assistant", STORY)]
    assert history[2:] == [ChatMessage("user", "What time is it?"), ChatMessage("assistant", "It is noon.")]


class Deaf(AsyncStreamHandler):
    """A handler that does not take text (the default `on_text`)."""

    async def receive(self, frame: object) -> None:
        return None

    async def emit(self) -> EmitType:
        await asyncio.sleep(3600)
        return None

    def copy(self) -> Deaf:
        return Deaf()


async def test_the_session_checks_text_before_any_handler_sees_it() -> None:
    session, _ = open_recorded_session(Stream(Deaf()))
    await session.start()
    try:
        await session.receive_text("Hello, tab\tand newline\n, emoji 👋 and é are fine.")  # ignored
        await session.receive_text("x" * MAX_TEXT_MESSAGE_CHARS)
        for bad in (
            "",
            " \n ",
            "x" * (MAX_TEXT_MESSAGE_CHARS + 1),
            "a\x1b[31m",
            "a\r",
            "\u202eevil",
            None,
            7,
        ):
            with pytest.raises(ProtocolError):
                await session.receive_text(bad)
    finally:
        await session.close()
