"""The Agent pipeline on real turn-taking (Silero VAD, recorded speech) with scripted STT/LLM and a
tone TTS, so words, history and timing are exact: turns, history, barge-in fidelity, failures and
apologies, greeting, store and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from conftest import heard_text, speech

from agentkit import Stream
from agentkit.agent import Agent, ReplyInterrupted, SessionStarted, TurnMetricsReady, split_sentences
from agentkit.agent._pipeline import StageTimeouts
from agentkit.audio import float_to_pcm16
from agentkit.exceptions import ConfigError, ProviderError
from agentkit.providers.llm import ChatMessage
from agentkit.providers.turn import SmartTurn
from agentkit.store import MemoryStore
from agentkit.stream import Session, TurnTakingOptions
from agentkit.testing import RecordingTransport, ScriptedLLM, ScriptedSTT, ToneTTS, open_recorded_session

FAST = TurnTakingOptions(end_of_turn_silence_ms=300)
RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


class Helper(Agent):
    instructions = "Be brief."
    turn_taking = FAST
    semantic_turn = None  # turns end on silence (FAST); tests/test_semantic_turn.py has the model


def make_agent(**overrides: Any) -> Agent:
    settings: dict[str, Any] = {
        "stt": ScriptedSTT("What time is it?"),
        "llm": ScriptedLLM("It is three o'clock. Anything else?"),
        "tts": ToneTTS(),
    }
    settings.update(overrides)
    return Helper(**settings)


def utterance(lead_s: float = 0.3, tail_s: float = 0.6) -> np.ndarray:
    silence = [np.zeros(round(s * RATE), dtype=np.float32) for s in (lead_s, tail_s)]
    return np.concatenate([silence[0], speech("utt2").samples, silence[1]])


async def feed(session: Session, samples: np.ndarray, *, realtime: bool = False) -> None:
    for start in range(0, samples.shape[0], FRAME):
        await session.receive_audio(float_to_pcm16(samples[start : start + FRAME]))
        if realtime:
            await asyncio.sleep(FRAME / RATE)


async def start(agent: Agent, **kwargs: Any) -> tuple[Session, RecordingTransport, Agent]:
    stream = Stream(agent)
    session, transport = open_recorded_session(stream, **kwargs)
    await session.start()
    handler = session.handler
    assert isinstance(handler, Agent)
    return session, transport, handler


async def test_one_turn_end_to_end(models_dir: object) -> None:
    tts = ToneTTS()
    llm = ScriptedLLM("It is three o'clock. Anything else?")
    session, transport, agent = await start(make_agent(llm=llm, tts=tts))
    try:
        await feed(session, utterance())
        done = await transport.wait_for("response_done", timeout_s=10)
        metrics = await transport.wait_for("metrics", timeout_s=5)
        history = agent.session.history
    finally:
        await session.close()
    assert history == [
        ChatMessage("user", "What time is it?"),
        ChatMessage("assistant", "It is three o'clock. Anything else?"),
    ]
    assert llm.calls[0].instructions == "Be brief."
    assert llm.calls[0].messages == (ChatMessage("user", "What time is it?"),)
    assert tts.texts == ["It is three o'clock.", "Anything else?"]  # sentence by sentence
    types = transport.event_types()
    order = [
        "started_talking",
        "pause_detected",
        "transcript",
        "response_starting",
        "response_done",
        "metrics",
    ]
    assert [t for t in types if t in order] == [*order[:5], "transcript", "metrics"]
    expected_s = sum(tts.duration_s(s) for s in tts.texts)
    assert done.event.audio_ms == round(expected_s * 1000)  # type: ignore[union-attr]
    figures = metrics.event.metrics  # type: ignore[union-attr]
    for key in ("end_of_turn_ms", "stt_ms", "llm_ttft_ms", "tts_ttfa_ms", "voice_to_voice_ms"):
        assert figures[key] is not None and figures[key] >= 0, key
    assert figures["voice_to_voice_ms"] >= figures["end_of_turn_ms"]
    assert figures["output_tokens"] == 6 and figures["interrupted"] is False
    assert figures["reply_audio_s"] == pytest.approx(expected_s, abs=0.01)
    assert figures["user_chars"] == len("What time is it?")


async def test_a_phone_call_takes_turns_at_8_khz_and_the_stt_still_gets_its_rate(models_dir: object) -> None:
    """On an 8 kHz call the agent's VAD runs at 8 kHz (`follow_call_rate`, no resampling on the way
    in); the turn is resampled to the STT's 16 kHz once, and its length is the same as at 16 kHz.
    With Smart Turn (16 kHz) in use, or the setting off, the call is resampled as before."""
    heard = {}
    for rate in (8000, 16000):
        stt = ScriptedSTT("What time is it?")
        session, transport, agent = await start(make_agent(stt=stt), input_sample_rate=rate)
        try:
            assert agent.input_sample_rate == rate and agent.turn_vad.sample_rate == rate
            silence = [np.zeros(round(s * rate), dtype=np.float32) for s in (0.3, 0.6)]
            samples = np.concatenate([silence[0], speech("utt2", rate).samples, silence[1]])
            for begin in range(0, samples.shape[0], rate // 50):
                await session.receive_audio(float_to_pcm16(samples[begin : begin + rate // 50]))
            await transport.wait_for("response_done", timeout_s=10)
        finally:
            await session.close()
        assert len(stt.heard) == 1 and stt.heard[0].sample_rate == 16000
        heard[rate] = stt.heard[0].duration_s
    assert heard[8000] == pytest.approx(heard[16000], abs=0.04)
    smart = Helper(semantic_turn=SmartTurn(), stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS()).copy()
    smart.match_call_rate(8000)
    off = make_agent(follow_call_rate=False).copy()
    off.match_call_rate(8000)
    assert smart.input_sample_rate == off.input_sample_rate == 16000


async def test_second_turn_sees_the_whole_history(models_dir: object) -> None:
    stt = ScriptedSTT("Hello.", "And tomorrow?")
    llm = ScriptedLLM("Hi there.", "Tomorrow is Friday.")
    session, transport, _agent = await start(make_agent(stt=stt, llm=llm, tts=ToneTTS(ms_per_char=10)))
    try:
        for turn in (1, 2):
            await feed(session, utterance())
            await transport.wait_for("metrics", timeout_s=10, count=turn)
    finally:
        await session.close()
    assert llm.calls[1].messages == (
        ChatMessage("user", "Hello."),
        ChatMessage("assistant", "Hi there."),
        ChatMessage("user", "And tomorrow?"),
    )
    assert [m.event.turn_index for m in transport.events_of("metrics")] == [0, 1]  # type: ignore[union-attr]


async def test_barge_in_keeps_only_the_heard_words(models_dir: object) -> None:
    """Speaking over a long reply stops it at once; the history holds the words played by then,
    marked interrupted, and the next LLM call sees exactly that."""
    reply = " ".join(f"Sentence number {n} is here to be spoken slowly." for n in range(1, 9))
    tts = ToneTTS(ms_per_char=40)
    llm = ScriptedLLM(reply, "Sure.")
    events: list[Any] = []

    class Listening(Helper):
        async def on_event(self, event: Any) -> None:
            events.append(event)

    agent = Listening(stt=ScriptedSTT("Tell me a story.", "Stop."), llm=llm, tts=tts)
    session, transport, handler = await start(agent)
    try:
        await feed(session, utterance())
        await transport.wait_for("response_starting", timeout_s=10)
        while not transport.audio:
            await transport.changed()
        await asyncio.sleep(2.5)  # well into the reply, past the first sentences
        await feed(session, utterance(lead_s=0.0), realtime=True)
        interrupted = await transport.wait_for("interrupted", timeout_s=5)
        await transport.wait_for("metrics", timeout_s=10, count=2)
        history = handler.session.history
    finally:
        await session.close()
    heard_ms = interrupted.event.heard_ms  # type: ignore[union-attr]
    assert 2000 < heard_ms < 3500
    # pieces as the pipeline cuts them: the first one ends after `first_piece_words` words
    heard = heard_text(reply, heard_ms, tts, first_clause_chars=24, first_piece_words=agent.first_piece_words)
    assert heard and reply.startswith(heard) and len(heard) < len(reply) / 2
    assert history[1] == ChatMessage("assistant", heard, interrupted=True)
    assert llm.calls[1].messages[1] == ChatMessage("assistant", heard, interrupted=True)
    cut = [e for e in events if isinstance(e, ReplyInterrupted)]
    assert len(cut) == 1 and cut[0].heard_text == heard and cut[0].heard_ms == heard_ms
    first_metrics = next(e.metrics for e in events if isinstance(e, TurnMetricsReady))
    assert first_metrics.interrupted and first_metrics.reply_audio_s == pytest.approx(heard_ms / 1000)
    # nothing of the old reply was sent after the interruption
    after = [a for a in transport.audio if a.t > interrupted.t]
    assert sum(a.samples.shape[0] for a in after) / 24000 <= tts.duration_s("Sure.") + 0.03


async def test_stt_failure_is_apologised_for_and_the_call_goes_on(models_dir: object) -> None:
    stt = ScriptedSTT("First?", "Second?")
    stt.fail_next = ProviderError("upstream 503", retryable=True)
    tts = ToneTTS(ms_per_char=5)
    llm = ScriptedLLM("Answer two.")
    session, transport, agent = await start(make_agent(stt=stt, llm=llm, tts=tts))
    try:
        await feed(session, utterance())
        await transport.wait_for("response_done", timeout_s=10)
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
        history = agent.session.history
    finally:
        await session.close()
    # the apology, piece by piece: a short first piece, then the rest of its first sentence
    pieces = split_sentences(agent.apology, first_clause_chars=24, first_piece_words=agent.first_piece_words)
    assert tts.texts[:2] == pieces[:2] and pieces[1].endswith("on my side.")
    assert history[0] == ChatMessage("assistant", agent.apology)
    assert history[-1] == ChatMessage("assistant", "Answer two.")
    assert len(llm.calls) == 1


async def test_llm_stall_times_out_into_an_apology(models_dir: object) -> None:
    llm = ScriptedLLM("Never heard.")
    llm.stall_s = 5.0
    tts = ToneTTS(ms_per_char=5)
    timeouts = StageTimeouts(llm_first_token_s=0.3)
    session, transport, agent = await start(make_agent(llm=llm, tts=tts, timeouts=timeouts))
    try:
        await feed(session, utterance())
        await transport.wait_for("response_done", timeout_s=10)
        history = agent.session.history
    finally:
        await session.close()
    assert history[-1] == ChatMessage("assistant", agent.apology)
    assert "Never heard." not in tts.texts


async def test_retryable_llm_error_is_retried_once(models_dir: object) -> None:
    llm = ScriptedLLM("Second try worked.")
    llm.fail_next = ProviderError("overloaded", retryable=True)
    session, transport, agent = await start(make_agent(llm=llm, tts=ToneTTS(ms_per_char=5)))
    try:
        await feed(session, utterance())
        await transport.wait_for("response_done", timeout_s=10)
        history = agent.session.history
    finally:
        await session.close()
    assert len(llm.calls) == 2
    assert history[-1] == ChatMessage("assistant", "Second try worked.")


async def test_llm_failing_mid_reply_keeps_what_was_said_then_apologises(models_dir: object) -> None:
    llm = ScriptedLLM("One sentence is fine. The second one breaks here.")
    llm.fail_after_words = 6
    tts = ToneTTS(ms_per_char=5)
    session, transport, agent = await start(make_agent(llm=llm, tts=tts, llm_retries=0))
    try:
        await feed(session, utterance())
        await transport.wait_for("response_done", timeout_s=10)
        history = agent.session.history
    finally:
        await session.close()
    assert tts.texts[0] == "One sentence is fine."
    assert history[-1].text == "One sentence is fine. " + agent.apology


async def test_dead_tts_still_tells_the_client(models_dir: object) -> None:
    tts = ToneTTS()
    session, transport, _agent = await start(make_agent(tts=tts))
    tts.fail_next = ProviderError("tts down", retryable=False)
    original = tts.synthesize

    async def broken(text: str) -> Any:
        raise ProviderError("tts down", retryable=False)
        yield  # pragma: no cover

    tts.synthesize = broken  # type: ignore[method-assign]
    try:
        await feed(session, utterance())
        error = await transport.wait_for("error", timeout_s=10)
        await transport.wait_for("response_done", timeout_s=5)
    finally:
        tts.synthesize = original  # type: ignore[method-assign]
        await session.close()
    assert error.event.code == "provider_error" and not error.event.fatal  # type: ignore[union-attr]
    assert session.closed and transport.closed is None  # the server did not hang up


async def test_greeting_store_and_returning_caller(models_dir: object) -> None:
    store = MemoryStore()
    events: list[Any] = []

    class Greeter(Helper):
        greeting = "Hello, how can I help?"

        async def on_event(self, event: Any) -> None:
            events.append(event)

    llm = ScriptedLLM("Noted.", "Welcome back.")
    agent = Greeter(stt=ScriptedSTT("Remember blue."), llm=llm, tts=ToneTTS(ms_per_char=5), store=store)
    stream = Stream(agent)
    for call in range(2):
        transport = RecordingTransport()
        session = stream.open_session(transport, input_sample_rate=RATE, caller="caller-7")
        await session.start()
        try:
            await transport.wait_for("response_done", timeout_s=10)  # the greeting
            await feed(session, utterance())
            await transport.wait_for("metrics", timeout_s=10)
        finally:
            await session.close()
        del call
    conversations = await store.list_conversations(caller="caller-7")
    assert len(conversations) == 2 and all(c.ended_at is not None for c in conversations)
    first = conversations[-1]
    texts = [(m.role, m.text) for m in await store.messages(first.id)]
    assert texts == [
        ("assistant", "Hello, how can I help?"),
        ("user", "Remember blue."),
        ("assistant", "Noted."),
    ]
    assert [m.turn_index for m in await store.metrics(first.id)] == [0]
    started = [e for e in events if isinstance(e, SessionStarted)]
    assert [s.earlier_messages for s in started] == [0, 3]
    # the second call's LLM saw the first call's conversation before its own (from the caller's words on)
    assert [(m.role, m.text) for m in llm.calls[1].messages] == [
        ("user", "Remember blue."),
        ("assistant", "Noted."),
        ("assistant", "Hello, how can I help?"),
        ("user", "Remember blue."),
    ]


async def test_on_transcript_can_drop_a_turn(models_dir: object) -> None:
    class Picky(Helper):
        async def on_transcript(self, text: str) -> str | None:
            return None

    llm = ScriptedLLM("Unused.")
    session, transport, _ = await start(Picky(stt=ScriptedSTT("mumble"), llm=llm, tts=ToneTTS()))
    try:
        await feed(session, utterance())
        await transport.wait_for("pause_detected", timeout_s=10)
        await asyncio.sleep(0.3)
    finally:
        await session.close()
    assert llm.calls == [] and transport.audio == []
    assert "response_starting" not in transport.event_types()


def test_bad_settings_and_provider_strings() -> None:
    with pytest.raises(ConfigError, match="unknown Agent setting"):
        Helper(stt=ScriptedSTT(), llm=ScriptedLLM(), tts=ToneTTS(), voice="x")
    with pytest.raises(ConfigError, match="unknown LLM provider 'openai/gpt'"):
        Helper(stt=ScriptedSTT(), llm="openai/gpt", tts=ToneTTS())


async def test_logs_hold_no_words(models_dir: object, caplog: pytest.LogCaptureFixture) -> None:
    """Failures are logged with the stage and error code, never with what was said."""
    caplog.set_level("DEBUG", logger="agentkit")
    stt = ScriptedSTT("my secret account number", "second secret question")
    llm = ScriptedLLM("The private answer. More private words.")
    llm.fail_after_words = 3
    session, transport, _ = await start(
        make_agent(stt=stt, llm=llm, tts=ToneTTS(ms_per_char=5), llm_retries=0)
    )
    try:
        await feed(session, utterance())
        await transport.wait_for("metrics", timeout_s=10)
    finally:
        await session.close()
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "failed" in logged  # the failure itself is logged...
    for secret in ("secret", "account", "private", "answer"):
        assert secret not in logged.lower()  # ...but none of the words


async def test_partial_transcripts_of_both_sides(models_dir: object) -> None:
    """With `partial_transcripts`, the caller's words show while they talk (STT on the turn so far)
    and the reply's sentences as they are spoken; each side ends with its final transcript."""
    stt = ScriptedSTT("What time is it?")
    agent = make_agent(stt=stt, tts=ToneTTS(ms_per_char=5), partial_transcripts=True, partial_interval_ms=500)
    session, transport, _ = await start(agent)
    try:
        await feed(session, utterance(), realtime=True)
        await transport.wait_for("metrics", timeout_s=10)
    finally:
        await session.close()
    said = [(e.event.role, e.event.final, e.event.text) for e in transport.events_of("transcript")]  # type: ignore[union-attr]
    user = [(final, text) for role, final, text in said if role == "user"]
    assistant = [(final, text) for role, final, text in said if role == "assistant"]
    assert (
        len(user) >= 3 and all(not final for final, _ in user[:-1]) and user[-1] == (True, "What time is it?")
    )
    assert assistant == [
        (False, "It is three o'clock."),
        (False, "It is three o'clock. Anything else?"),
        (True, "It is three o'clock. Anything else?"),
    ]
    types = transport.event_types()
    last_partial = max(
        i
        for i, e in enumerate(transport.events)
        if getattr(e.event, "final", True) is False and e.event.role == "user"
    )  # type: ignore[union-attr]
    assert last_partial < types.index("pause_detected")  # partials only while the caller talks
    assert len(stt.heard) >= 3  # the partials were real STT calls on the growing turn
    assert stt.heard[0].duration_s < stt.heard[-1].duration_s
