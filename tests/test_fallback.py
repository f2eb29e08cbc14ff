"""Provider fallback: `FallbackLLM`, `FallbackSTT`, `FallbackTTS` hand a request that failed retryably
before any output to the next provider, raise other failures as they are, skip a provider that
keeps failing for a cooldown (on a fake clock), and the agent's metrics name the provider that
answered. LLMs through the real Anthropic and Groq SDKs against their loopback fakes, and the
in-process scripted fakes."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _cloud import KEY, isolate_cloud_env
from conftest import speech

from agentkit import Stream
from agentkit.agent import Agent
from agentkit.audio import AudioFrame, float_to_pcm16
from agentkit.exceptions import ConfigError, ProviderError, ProviderTimeoutError
from agentkit.providers import FallbackLLM, FallbackSTT, FallbackTTS
from agentkit.providers.llm import AnthropicLLM, ChatMessage, GroqLLM
from agentkit.store import SQLiteStore, TurnMetrics
from agentkit.store._models import METRIC_COLUMNS
from agentkit.stream import Session, TurnTakingOptions
from agentkit.testing import RecordingTransport, ScriptedLLM, ScriptedSTT, ToneTTS, open_recorded_session
from agentkit.testing.fakes import FakeAnthropic, FakeGroq, Reply

HISTORY = [ChatMessage("user", "Where is my order?")]
OVERLOADED = ProviderError("overloaded", retryable=True, provider="scripted")


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        self.t = max(self.t, deadline)
        await asyncio.sleep(0)


def named(provider: Any, name: str) -> Any:
    provider.name = name  # the fakes' names are class attributes: give each instance its own
    return provider


async def reply_text(llm: FallbackLLM, history: list[ChatMessage] = HISTORY) -> str:
    return "".join([c.text async for c in llm.stream(history, instructions="Be brief.")])


# -- LLM: the real SDKs against their fakes ------------------------------------------------------


@pytest.fixture
async def cloud(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[FakeAnthropic, FakeGroq, FallbackLLM]]:
    """Anthropic first, Groq second, each through its SDK to its loopback fake."""
    isolate_cloud_env(monkeypatch, tmp_path)
    async with FakeAnthropic(api_key=KEY) as anthropic, FakeGroq(api_key=KEY) as groq:
        llm = FallbackLLM(
            [
                AnthropicLLM(api_key=KEY, base_url=anthropic.base_url, timeout_s=2.0),
                GroqLLM(api_key=KEY, base_url=groq.base_url, timeout_s=2.0),
            ]
        )
        try:
            yield anthropic, groq, llm
        finally:
            await llm.aclose()


@pytest.mark.parametrize("status", [529, 503])
async def test_overloaded_anthropic_hands_the_same_request_to_groq(
    cloud: tuple[FakeAnthropic, FakeGroq, FallbackLLM], status: int
) -> None:
    anthropic, groq, llm = cloud
    anthropic.push(Reply(status=status))
    groq.push(Reply(text="It ships tomorrow."))
    assert await reply_text(llm) == "It ships tomorrow."
    assert len(anthropic.requests) == len(groq.requests) == 1
    asked = anthropic.requests[0].json()["messages"][-1]["content"]
    assert groq.requests[0].json()["messages"][-1] == {"role": "user", "content": asked}
    assert asked == "Where is my order?"
    assert llm.last_provider == llm.providers[1].name and llm.last_provider.startswith("groq/")


async def test_a_bad_request_is_raised_not_handed_over(
    cloud: tuple[FakeAnthropic, FakeGroq, FallbackLLM],
) -> None:
    anthropic, groq, llm = cloud
    anthropic.push(Reply(status=400))
    with pytest.raises(ProviderError) as caught:
        await reply_text(llm)
    assert not caught.value.retryable and caught.value.context["status"] == 400
    assert groq.requests == []


async def test_an_error_mid_stream_is_raised_not_handed_over(
    cloud: tuple[FakeAnthropic, FakeGroq, FallbackLLM],
) -> None:
    anthropic, groq, llm = cloud
    anthropic.push(Reply(text="It ships on the tenth of May.", error_after=2))  # an overloaded_error event
    seen: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in llm.stream(HISTORY, instructions="Be brief."):
            seen.append(chunk.text)
    assert caught.value.retryable and "".join(seen) == "It ships "
    assert groq.requests == []


async def test_the_agent_answers_the_same_turn_with_groq(
    cloud: tuple[FakeAnthropic, FakeGroq, FallbackLLM], models_dir: object
) -> None:
    anthropic, groq, llm = cloud
    anthropic.push(Reply(status=529))
    groq.push(Reply(text="It ships tomorrow."))
    agent = Helper(stt=ScriptedSTT("Where is my order?"), llm=llm, tts=ToneTTS(ms_per_char=10))
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        metrics = await transport.wait_for("metrics", timeout_s=10)
        history = handler.session.history
    finally:
        await session.close()
    assert history == [
        ChatMessage("user", "Where is my order?"),
        ChatMessage("assistant", "It ships tomorrow."),
    ]
    figures = metrics.event.metrics  # type: ignore[union-attr]
    assert figures["llm_provider"] == llm.providers[1].name
    assert (figures["stt_provider"], figures["tts_provider"]) == ("scripted-stt", "tone-tts")


# -- LLM: the scripted fakes ---------------------------------------------------------------------


async def test_scripted_llm_fails_over_then_raises_what_is_not_retryable() -> None:
    primary, secondary = (
        named(ScriptedLLM("From the first."), "first"),
        named(ScriptedLLM("From the second."), "second"),
    )
    llm = FallbackLLM([primary, secondary])
    primary.fail_next = OVERLOADED
    assert await reply_text(llm) == "From the second."
    assert secondary.calls[0].messages == primary.calls[0].messages == tuple(HISTORY)
    assert llm.last_provider == "second"
    assert await reply_text(llm) == "From the first."  # the next call starts with the first again
    primary.fail_next = ProviderError("bad request", retryable=False)
    with pytest.raises(ProviderError, match="bad request"):
        await reply_text(llm)
    assert (primary.call_count, secondary.call_count) == (3, 1)


async def test_a_timeout_hands_over_and_so_does_a_stall_past_first_output_timeout() -> None:
    primary, secondary = named(ScriptedLLM("Slow."), "first"), named(ScriptedLLM("Quick."), "second")
    llm = FallbackLLM([primary, secondary], first_output_timeout_s=0.2)
    primary.fail_next = ProviderTimeoutError("no answer in time")
    assert await reply_text(llm) == "Quick."
    primary.stall_s = 5.0
    async with asyncio.timeout(3):  # a guard: the stall must not be waited out
        assert await reply_text(llm) == "Quick."
    assert primary.call_count == 2


async def test_a_failure_after_the_first_words_is_raised_as_is() -> None:
    primary, secondary = ScriptedLLM("One two three four."), ScriptedLLM("Other.")
    llm = FallbackLLM([primary, secondary])
    primary.fail_after_words = 2
    seen: list[str] = []
    with pytest.raises(ProviderError, match="mid-reply"):
        async for chunk in llm.stream(HISTORY, instructions=""):
            seen.append(chunk.text)
    assert "".join(seen) == "One two" and secondary.call_count == 0


async def test_a_failure_before_a_tool_call_after_no_words_hands_over() -> None:
    call = ScriptedLLM.calls_tool("order_status", {"order": 42})
    primary, secondary = ScriptedLLM(call), ScriptedLLM(call)
    llm = FallbackLLM([primary, secondary])
    primary.fail_after_words = 0  # fails just before its tool call: nothing went out yet
    chunks = [c async for c in llm.stream(HISTORY, instructions="", tools=())]
    assert [c.tool_call.name for c in chunks if c.tool_call] == ["order_status"]
    assert secondary.call_count == 1


async def test_the_breaker_skips_a_failing_provider_until_its_cooldown_is_over() -> None:
    clock = FakeClock()
    primary, secondary = named(ScriptedLLM("First."), "first"), named(ScriptedLLM("Second."), "second")
    llm = FallbackLLM([primary, secondary], failure_threshold=2, cooldown_s=30.0, clock=clock)
    for _ in range(2):
        primary.fail_next = OVERLOADED
        assert await reply_text(llm) == "Second."
    assert llm.skipped() == ["first"]
    clock.t += 29.0
    assert await reply_text(llm) == "Second."  # skipped: not even asked
    assert primary.call_count == 2
    clock.t += 1.0
    assert llm.skipped() == []
    primary.fail_next = OVERLOADED  # tried again after the cooldown, and one failure skips it again
    assert await reply_text(llm) == "Second."
    assert primary.call_count == 3 and llm.skipped() == ["first"]
    clock.t += 30.0
    assert await reply_text(llm) == "First."  # healthy again
    primary.fail_next = OVERLOADED
    assert await reply_text(llm) == "Second."
    assert llm.skipped() == []  # one failure after a success does not skip it


async def test_when_every_provider_is_skipped_all_are_tried_anyway() -> None:
    clock = FakeClock()
    primary, secondary = ScriptedLLM("First."), ScriptedLLM("Second.")
    llm = FallbackLLM([primary, secondary], failure_threshold=1, cooldown_s=60.0, clock=clock)
    primary.fail_next, secondary.fail_next = OVERLOADED, OVERLOADED
    with pytest.raises(ProviderError, match="overloaded"):
        await reply_text(llm)
    assert len(llm.skipped()) == 2
    assert await reply_text(llm) == "First."


async def test_llm_fallback_settings() -> None:
    local = ScriptedLLM(supports_tools=False)
    assert FallbackLLM([ScriptedLLM(), ScriptedLLM()]).supports_tools
    assert not FallbackLLM([ScriptedLLM(), local]).supports_tools
    assert FallbackLLM([named(ScriptedLLM(), "a"), named(ScriptedLLM(), "b")]).name == "fallback(a, b)"
    with pytest.raises(ConfigError):
        FallbackLLM([])
    with pytest.raises(ConfigError):
        FallbackLLM([ScriptedLLM()], failure_threshold=0)
    with pytest.raises(ConfigError, match="cannot call tools"):
        Helper(
            stt=ScriptedSTT(), llm=FallbackLLM([ScriptedLLM(), local]), tts=ToneTTS(), tools=[order_status]
        )
    providers = [ScriptedLLM(), ScriptedLLM()]
    llm = FallbackLLM(providers)
    await llm.warm_up()
    await llm.aclose()
    assert all(p.closed for p in providers)


# -- STT and TTS ---------------------------------------------------------------------------------


async def test_stt_hands_over_and_resamples_for_the_next_provider() -> None:
    primary, secondary = named(ScriptedSTT("first"), "first"), named(ScriptedSTT("second"), "second")
    secondary.sample_rate = 8000
    stt = FallbackSTT([primary, secondary])
    assert stt.sample_rate == 16000
    audio = AudioFrame(np.zeros(16000, np.float32), 16000)
    primary.fail_next = OVERLOADED
    transcript = await stt.transcribe(audio)
    assert transcript.text == "second" and stt.last_provider == "second"
    assert secondary.heard[-1].sample_rate == 8000 and secondary.heard[-1].num_samples == 8000
    primary.fail_next = ProviderError("bad audio", retryable=False)
    with pytest.raises(ProviderError, match="bad audio"):
        await stt.transcribe(audio)
    primary.delay_s = 5.0
    slow = FallbackSTT([primary, secondary], first_output_timeout_s=0.2)
    async with asyncio.timeout(3):
        assert (await slow.transcribe(audio)).text == "second"


def order_status(order: int) -> str:
    """Where an order is."""
    return f"order {order} has shipped"


class FailsMidSentence(ToneTTS):
    """A TTS whose audio breaks off after the first frame."""

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        async with contextlib.aclosing(super().synthesize(text)) as frames:
            async for frame in frames:
                yield frame
                raise ProviderError("connection cut", retryable=True)


async def test_tts_hands_over_before_audio_not_after() -> None:
    primary, secondary = (
        named(ToneTTS(sample_rate=24000), "first"),
        named(ToneTTS(sample_rate=16000), "second"),
    )
    tts = FallbackTTS([primary, secondary])
    assert tts.sample_rate == 24000
    primary.fail_next = OVERLOADED
    frames = [f async for f in tts.synthesize("Hello there.")]
    assert {f.sample_rate for f in frames} == {16000} and tts.last_provider == "second"
    assert sum(f.duration_s for f in frames) == pytest.approx(secondary.duration_s("Hello there."))
    cut = FallbackTTS([FailsMidSentence(), secondary])
    heard: list[AudioFrame] = []
    with pytest.raises(ProviderError, match="connection cut"):
        async for frame in cut.synthesize("Hello there."):
            heard.append(frame)
    assert len(heard) == 1 and secondary.call_count == 1


# -- the agent: metrics name the providers that answered, a TTS rate change mid-reply -------------

FAST = TurnTakingOptions(end_of_turn_silence_ms=300)


class Helper(Agent):
    turn_taking = FAST
    semantic_turn = None  # turns end on silence: these tests play short silent tails


class FailsOnCall(ToneTTS):
    """A tone TTS that fails retryably, before any audio, on the given calls (1-based)."""

    def __init__(self, *calls: int, **options: Any) -> None:
        super().__init__(**options)
        self.failing = set(calls)

    async def synthesize(self, text: str) -> AsyncGenerator[AudioFrame, None]:
        if self.call_count + 1 in self.failing:
            self.fail_next = OVERLOADED
        async with contextlib.aclosing(super().synthesize(text)) as frames:
            async for frame in frames:
                yield frame


def utterance() -> np.ndarray:
    quiet = np.zeros(round(0.6 * 16000), np.float32)
    return np.concatenate([quiet[:4800], speech("utt2").samples, quiet])


async def feed(session: Session, samples: np.ndarray) -> None:
    for start in range(0, samples.shape[0], 320):
        await session.receive_audio(float_to_pcm16(samples[start : start + 320]))


async def start(
    agent: Agent, output_sample_rate: int | None = None
) -> tuple[Session, RecordingTransport, Agent]:
    session, transport = open_recorded_session(Stream(agent), output_sample_rate=output_sample_rate)
    await session.start()
    assert isinstance(session.handler, Agent)
    return session, transport, session.handler


async def test_metrics_name_the_providers_that_answered_and_the_voice_may_change_rate(
    models_dir: object, tmp_path: Path
) -> None:
    first_ear, first_mind = named(ScriptedSTT("Down?"), "stt-a"), named(ScriptedLLM("Never."), "llm-a")
    first_ear.fail_next = first_mind.fail_next = OVERLOADED
    stt = FallbackSTT([first_ear, named(ScriptedSTT("Is it down?"), "stt-b")])
    llm = FallbackLLM([first_mind, named(ScriptedLLM("It is up. All good."), "llm-b")])
    first_voice = named(FailsOnCall(2, sample_rate=24000, ms_per_char=20), "tts-a")  # fails on sentence 2
    tts = FallbackTTS([first_voice, named(ToneTTS(sample_rate=16000, ms_per_char=20), "tts-b")])
    store = SQLiteStore(tmp_path / "m.db")
    # both voices are resampled for the wire (48 kHz), so the first one's filter holds a tail of
    # audio when the second takes over: it must go out, not be dropped with the old resampler
    session, transport, handler = await start(Helper(stt=stt, llm=llm, tts=tts, store=store), 48000)
    try:
        await feed(session, utterance())
        done = await transport.wait_for("response_done", timeout_s=10)
        metrics = await transport.wait_for("metrics", timeout_s=5)
        history = handler.session.history
        conversation = handler.session.conversation_id
    finally:
        await session.close()
    assert history == [ChatMessage("user", "Is it down?"), ChatMessage("assistant", "It is up. All good.")]
    figures = metrics.event.metrics  # type: ignore[union-attr]
    assert (figures["stt_provider"], figures["llm_provider"], figures["tts_provider"]) == (
        "stt-b",
        "llm-b",
        "tts-b",  # sentence 1 by tts-a at 24 kHz, sentence 2 by tts-b at 16 kHz
    )
    assert first_voice.texts == ["It is up.", "All good."]
    # both sentences were sent whole, the change of rate cutting nothing off the first
    expected_ms = 1000 * (first_voice.duration_s("It is up.") + first_voice.duration_s("All good."))
    assert done.event.audio_ms == pytest.approx(expected_ms, abs=3)  # type: ignore[union-attr]
    sent_s = sum(a.samples.shape[0] for a in transport.audio) / 48000
    assert sent_s == pytest.approx(expected_ms / 1000, abs=0.003)
    assert conversation is not None
    stored = await store.metrics(conversation)
    await store.aclose()
    assert [(m.stt_provider, m.llm_provider, m.tts_provider) for m in stored] == [("stt-b", "llm-b", "tts-b")]


async def test_plain_providers_are_named_in_the_metrics_too(models_dir: object) -> None:
    session, transport, _ = await start(
        Helper(stt=ScriptedSTT("Hi."), llm=ScriptedLLM("Hello."), tts=ToneTTS(ms_per_char=10))
    )
    try:
        await feed(session, utterance())
        metrics = await transport.wait_for("metrics", timeout_s=10)
    finally:
        await session.close()
    figures = metrics.event.metrics  # type: ignore[union-attr]
    assert (figures["stt_provider"], figures["llm_provider"], figures["tts_provider"]) == (
        "scripted-stt",
        "scripted-llm",
        "tone-tts",
    )


async def test_a_version_1_store_gets_the_provider_columns(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """CREATE TABLE conversations (id TEXT PRIMARY KEY NOT NULL, agent TEXT NOT NULL,
                channel TEXT NOT NULL, caller TEXT, started_at REAL NOT NULL, ended_at REAL);
            CREATE TABLE messages (conversation_id TEXT NOT NULL, idx INTEGER NOT NULL, role TEXT NOT NULL,
                text TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, interrupted INTEGER NOT NULL,
                PRIMARY KEY (conversation_id, idx)) WITHOUT ROWID;
            CREATE TABLE turn_metrics (conversation_id TEXT NOT NULL, turn_index INTEGER NOT NULL,
                end_of_turn_ms REAL, stt_ms REAL, llm_ttft_ms REAL, tts_ttfa_ms REAL, voice_to_voice_ms REAL,
                input_tokens INTEGER, output_tokens INTEGER, user_chars INTEGER NOT NULL,
                reply_chars INTEGER NOT NULL, user_audio_s REAL NOT NULL, reply_audio_s REAL NOT NULL,
                interrupted INTEGER NOT NULL, created_at REAL NOT NULL,
                PRIMARY KEY (conversation_id, turn_index)) WITHOUT ROWID;
            INSERT INTO conversations VALUES ('old', 'claude', 'ws', NULL, 1.0, 2.0);
            INSERT INTO turn_metrics VALUES ('old', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1.0, 2.0, 0, 3.0);
            PRAGMA user_version = 1;"""
        )
    db.close()
    store = SQLiteStore(path)
    try:
        (old,) = await store.metrics("old")
        conversation = await store.start_conversation("claude", "ws")
        figures: dict[str, Any] = dict.fromkeys(METRIC_COLUMNS)
        figures |= {"conversation_id": conversation.id, "turn_index": 0, "user_chars": 3, "reply_chars": 6}
        figures |= {"user_audio_s": 0.0, "reply_audio_s": 1.2, "interrupted": False, "created_at": 5.0}
        figures |= {"preemptive": False}
        figures |= {"llm_provider": "groq/llama-3.3-70b-versatile", "tts_provider": "kokoro/af_heart"}
        fresh = TurnMetrics(**figures)
        await store.add_metrics(fresh)
        assert await store.metrics(conversation.id) == [fresh]
    finally:
        await store.aclose()
    assert (old.stt_provider, old.llm_provider, old.tts_provider) == (None, None, None)
