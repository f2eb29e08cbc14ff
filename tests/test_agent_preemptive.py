"""Preemptive generation: the reply is begun in the caller's pause and adopted when the turn ends there.

A tone is the caller's speech (an energy VAD hears it), scripted STT and LLM give exact words, and
the tests wait on what the agent did (calls made, events sent), never on the wall clock: the
input goes in as fast as it is taken, except where a reply must be playing to be spoken over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import EnergyVAD, heard_text

from agentkit import Agent, Stream, tool
from agentkit.agent import ReplyInterrupted, ToolCallStarted, TurnMetricsReady, UserTurnEnded
from agentkit.audio import Samples, float_to_pcm16
from agentkit.exceptions import ConfigError
from agentkit.providers import LocalLLM, MoonshineSTT
from agentkit.providers.llm import ChatMessage
from agentkit.stream import Session, TurnTakingOptions
from agentkit.testing import RecordingTransport, ScriptedLLM, ScriptedSTT, ToneTTS, open_recorded_session

RATE = 16000
FRAME = 320  # 20 ms
PAUSE_S = 0.3  # past `preemptive_after_ms` (150), short of the end of turn (600)


class Preemptive(Agent):
    instructions = "Be brief."
    vad = EnergyVAD()
    semantic_turn = None
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=600)
    preemptive_generation = True
    preemptive_after_ms = 150
    greeting = None


def speech(seconds: float) -> Samples:
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(round(seconds * RATE)) / RATE)).astype(np.float32)


def silence(seconds: float) -> Samples:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


async def feed(session: Session, samples: Samples, *, realtime: bool = False) -> None:
    for start in range(0, samples.shape[0], FRAME):
        await session.receive_audio(float_to_pcm16(samples[start : start + FRAME]))
        if realtime:
            await asyncio.sleep(FRAME / RATE)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for the agent to get there (the timeout only keeps a broken test from hanging)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - the scripted providers' counts have no event
            await asyncio.sleep(0.005)


async def start(agent: Agent) -> tuple[Session, RecordingTransport, Agent]:
    session, transport = open_recorded_session(Stream(agent))
    await session.start()
    handler = session.handler
    assert isinstance(handler, Agent)
    return session, transport, handler


class Listening(Preemptive):
    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.seen: list[Any] = []

    async def on_event(self, event: Any) -> None:
        self.seen.append(event)


async def test_a_pause_that_ends_the_turn_is_transcribed_once_and_answered_from_the_pause() -> None:
    stt = ScriptedSTT("What time is it?")
    llm = ScriptedLLM("It is three o'clock. Anything else?")
    tts = ToneTTS(ms_per_char=5)
    session, transport, agent = await start(Listening(stt=stt, llm=llm, tts=tts))
    try:
        await feed(session, silence(0.3))
        await feed(session, speech(1.0))
        await feed(session, silence(PAUSE_S))
        await until(lambda: llm.call_count == 1)
        # begun, not spoken: no turn events, no history, no audio, no TTS
        assert stt.call_count == 1
        assert not {"pause_detected", "transcript", "response_starting"} & set(transport.event_types())
        assert agent.session.history == [] and not transport.audio and tts.call_count == 0
        assert not any(isinstance(e, UserTurnEnded) for e in agent.seen)
        await feed(session, silence(1.0))
        metrics = await transport.wait_for("metrics")
        history = agent.session.history
    finally:
        await session.close()
    assert stt.call_count == 1 and llm.call_count == 1 and llm.closed_early == 0
    assert llm.calls[0].messages == (ChatMessage("user", "What time is it?"),)
    assert history == [
        ChatMessage("user", "What time is it?"),
        ChatMessage("assistant", "It is three o'clock. Anything else?"),
    ]
    assert tts.texts == ["It is three o'clock.", "Anything else?"]
    figures = metrics.event.metrics  # type: ignore[union-attr]
    assert figures["preemptive"] is True
    assert figures["stt_ms"] is not None and figures["llm_ttft_ms"] is not None
    assert figures["user_audio_s"] == pytest.approx(stt.heard[0].duration_s)  # the turn's own audio
    order = ["pause_detected", "transcript", "response_starting", "response_done"]
    assert [t for t in transport.event_types() if t in order] == [*order, "transcript"]


async def test_a_turn_that_ends_before_its_pause_is_transcribed_waits_for_that_transcript() -> None:
    stt = ScriptedSTT("What time is it?", delay_s=0.2)
    llm = ScriptedLLM("It is three o'clock.")
    session, transport, agent = await start(Listening(stt=stt, llm=llm, tts=ToneTTS(ms_per_char=5)))
    try:
        await feed(session, silence(0.3))
        await feed(session, speech(1.0))
        await feed(session, silence(1.0))  # the turn ends, most likely while the STT still runs
        metrics = await transport.wait_for("metrics")
        history = agent.session.history
    finally:
        await session.close()
    assert stt.call_count == 1 and llm.call_count == 1
    assert history == [
        ChatMessage("user", "What time is it?"),
        ChatMessage("assistant", "It is three o'clock."),
    ]
    figures = metrics.event.metrics  # type: ignore[union-attr]
    assert figures["preemptive"] is True and figures["stt_ms"] is not None


class ScriptedTurnModel:
    """An end-of-turn model that always gives `answer`, counting the checks."""

    sample_rate = RATE
    max_audio_samples = 8 * RATE

    def __init__(self, answer: float) -> None:
        self.answer = answer
        self.asked = 0

    def load(self) -> bool:
        return True

    async def probability(self, samples: Samples) -> float:
        del samples
        self.asked += 1
        return self.answer

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("finished", [True, False])
async def test_with_an_end_of_turn_model_the_llm_call_waits_for_the_pause_check(finished: bool) -> None:
    """Transcribed at 150 ms of silence; the LLM call starts after the check at 200 ms: at the end
    of turn when the check says yes, when it says no otherwise (the turn then ends at 700 ms)."""
    model = ScriptedTurnModel(0.99 if finished else 0.0)
    options = TurnTakingOptions(
        semantic_max_silence_ms=700, semantic_unsure_silence_ms=700, semantic_recheck_ms=0
    )
    stt = ScriptedSTT("What time is it?")
    llm = ScriptedLLM("It is three o'clock. Anything else?")
    agent = Listening(stt=stt, llm=llm, tts=ToneTTS(ms_per_char=5), semantic_turn=model, turn_taking=options)
    session, transport, handler = await start(agent)
    try:
        await feed(session, silence(0.3))
        await feed(session, speech(1.0))
        await feed(session, silence(0.18))  # past preemptive_after_ms, short of the check
        await until(lambda: stt.call_count == 1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert llm.call_count == 0 and model.asked == 0  # transcribed, the LLM call held
        await feed(session, silence(0.1))  # the check
        assert model.asked == 1
        if not finished:
            await until(lambda: llm.call_count == 1)
            assert not transport.events_of("pause_detected")  # begun before the end of turn
        await feed(session, silence(0.8))
        metrics = await transport.wait_for("metrics")
        history = handler.session.history
    finally:
        await session.close()
    assert stt.call_count == 1 and llm.call_count == 1 and model.asked == 1
    assert history[1] == ChatMessage("assistant", "It is three o'clock. Anything else?")
    assert metrics.event.metrics["preemptive"] is True  # type: ignore[union-attr]


async def test_speech_after_the_pause_cancels_its_work_and_the_whole_turn_is_answered() -> None:
    stt = ScriptedSTT("What time", "What time is it in Paris?")
    llm = ScriptedLLM("Sorry, what time where? Please say it again.", "It is three in Paris.")
    session, transport, agent = await start(Listening(stt=stt, llm=llm, tts=ToneTTS(ms_per_char=5)))
    try:
        await feed(session, silence(0.3))
        await feed(session, speech(0.8))
        await feed(session, silence(PAUSE_S))
        await until(lambda: llm.call_count == 1)  # begun on "What time", held after its first piece
        await feed(session, speech(0.8))  # the caller goes on
        await until(lambda: llm.closed_early == 1)  # that LLM call was closed
        await feed(session, silence(1.0))
        metrics = await transport.wait_for("metrics")
        history = agent.session.history
    finally:
        await session.close()
    assert stt.call_count == 2 and llm.call_count == 2 and llm.closed_early == 1
    first, whole = stt.heard
    assert whole.timestamp_samples == first.timestamp_samples and whole.duration_s > first.duration_s + 1.0
    assert llm.calls[1].messages == (ChatMessage("user", "What time is it in Paris?"),)
    assert history == [
        ChatMessage("user", "What time is it in Paris?"),
        ChatMessage("assistant", "It is three in Paris."),
    ]
    assert [e.text for e in agent.seen if isinstance(e, UserTurnEnded)] == ["What time is it in Paris?"]
    assert len(transport.events_of("pause_detected")) == 1
    figures = metrics.event.metrics  # type: ignore[union-attr]
    assert figures["preemptive"] is True and figures["user_audio_s"] == pytest.approx(whole.duration_s)


async def test_a_tool_the_llm_asks_for_in_the_pause_runs_once_after_the_turn_ended() -> None:
    pauses_when_run: list[int] = []
    transports: list[RecordingTransport] = []

    class Shop(Listening):
        @tool
        async def order_status(self, order: int) -> str:
            """Where an order is.

            Args:
                order: The order number.
            """
            pauses_when_run.append(len(transports[0].events_of("pause_detected")))
            return f"order {order} has shipped"

    llm = ScriptedLLM(
        ScriptedLLM.calls_tool("order_status", {"order": 42}, text="Let me check."), "It has shipped."
    )
    stt = ScriptedSTT("Where is order 42?")
    session, transport, agent = await start(Shop(stt=stt, llm=llm, tts=ToneTTS(ms_per_char=5)))
    transports.append(transport)
    try:
        await feed(session, silence(0.3))
        await feed(session, speech(1.0))
        await feed(session, silence(PAUSE_S))
        await until(lambda: llm.call_count == 1)
        await asyncio.sleep(0)  # the scripted call has yielded all of it, the tool call included
        assert pauses_when_run == [] and not transport.events_of("tool")
        await feed(session, silence(1.0))
        await transport.wait_for("metrics")
        history = agent.session.history
    finally:
        await session.close()
    assert pauses_when_run == [1]  # once, after the end of turn
    assert stt.call_count == 1 and llm.call_count == 2
    assert [t.name for t in llm.calls[0].tools] == ["order_status"]  # offered as in a normal reply
    assert llm.calls[1].messages[-1].role == "tool"
    assert "shipped" in llm.calls[1].messages[-1].tool_results[0].content
    started = [i for i, e in enumerate(agent.seen) if isinstance(e, ToolCallStarted)]
    ended = [i for i, e in enumerate(agent.seen) if isinstance(e, UserTurnEnded)]
    assert len(started) == 1 and ended and ended[0] < started[0]
    assert history[0] == ChatMessage("user", "Where is order 42?")
    assert history[-1] == ChatMessage("assistant", "It has shipped.")


async def test_barge_in_on_an_adopted_reply_keeps_only_the_heard_words() -> None:
    reply = " ".join(f"Sentence number {n} is here to be spoken slowly." for n in range(1, 9))
    tts = ToneTTS(ms_per_char=40)
    llm = ScriptedLLM(reply, "Sure.")
    agent = Listening(stt=ScriptedSTT("Tell me a story.", "Stop."), llm=llm, tts=tts)
    session, transport, handler = await start(agent)
    try:
        await feed(session, silence(0.3))
        await feed(session, speech(1.0))
        await feed(session, silence(PAUSE_S))
        await until(lambda: llm.call_count == 1)
        await feed(session, silence(1.0))
        await transport.wait_for("response_starting")
        while not transport.audio:
            await transport.changed()
        await asyncio.sleep(1.5)  # into the reply, past its first pieces
        await feed(session, np.concatenate([speech(0.6), silence(1.0)]), realtime=True)
        interrupted = await transport.wait_for("interrupted")
        await transport.wait_for("metrics", count=2)
        history = handler.session.history
    finally:
        await session.close()
    heard_ms = interrupted.event.heard_ms  # type: ignore[union-attr]
    heard = heard_text(reply, heard_ms, tts, first_clause_chars=24, first_piece_words=agent.first_piece_words)
    assert heard and reply.startswith(heard) and len(heard) < len(reply) / 2
    assert history[:2] == [
        ChatMessage("user", "Tell me a story."),
        ChatMessage("assistant", heard, interrupted=True),
    ]
    assert llm.calls[1].messages[1] == ChatMessage("assistant", heard, interrupted=True)
    assert history[2:] == [ChatMessage("user", "Stop."), ChatMessage("assistant", "Sure.")]
    cut = [e for e in handler.seen if isinstance(e, ReplyInterrupted)]
    assert len(cut) == 1 and cut[0].heard_text == heard
    first, second = [e.metrics for e in handler.seen if isinstance(e, TurnMetricsReady)]
    assert first.preemptive and first.interrupted and second.preemptive and not second.interrupted
    assert first.reply_audio_s == pytest.approx(heard_ms / 1000)


def test_preemptive_generation_is_on_for_local_models_on_silence_alone_unless_set() -> None:
    assert not Agent(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS()).preemptive
    local = {"stt": MoonshineSTT("tiny"), "llm": LocalLLM("smollm2-135m"), "tts": ToneTTS()}
    assert Agent(**local, semantic_turn=None).preemptive
    assert not Agent(**local).preemptive  # with Smart Turn (when its file is there): no clear win
    assert Agent(**local).preemptive_generation is None
    assert not Agent(
        stt=MoonshineSTT("tiny"), llm=ScriptedLLM(), tts=ToneTTS(), semantic_turn=None
    ).preemptive
    chosen = Agent(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(), preemptive_generation=True)
    assert chosen.preemptive
    with pytest.raises(ConfigError, match="preemptive_after_ms"):
        Agent(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(), preemptive_after_ms=0)


class SlowTurnModel(ScriptedTurnModel):
    """Says "finished", after `delay_s` of work (a loaded machine, a slow model)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(0.99)
        self.delay_s = delay_s

    async def probability(self, samples: Samples) -> float:
        await asyncio.sleep(self.delay_s)
        return await super().probability(samples)


@pytest.mark.parametrize("preemptive", [False, True])
async def test_the_end_of_turn_counts_the_time_its_decision_took(preemptive: bool) -> None:
    """The audio goes in at once, so its end of speech arrived just before the 200 ms pause that
    asks the model; the model then takes 0.4 s. The turn's figures count from the arrival of the end
    of speech, so they hold those 0.4 s (dated back from the decision, they would say about 0.2 s)."""
    stt, llm = ScriptedSTT("What time is it?"), ScriptedLLM("It is three o'clock.")
    agent = Listening(
        stt=stt, llm=llm, tts=ToneTTS(ms_per_char=5), semantic_turn=SlowTurnModel(0.4),
        preemptive_generation=preemptive,
    )  # fmt: skip
    session, transport, _ = await start(agent)
    try:
        await feed(session, silence(0.3))
        await feed(session, speech(1.0))
        await feed(session, silence(0.3))
        metrics = await transport.wait_for("metrics")
    finally:
        await session.close()
    figures = metrics.event.metrics  # type: ignore[union-attr]
    assert figures["end_of_turn_ms"] >= 400
    assert figures["voice_to_voice_ms"] >= figures["end_of_turn_ms"]
