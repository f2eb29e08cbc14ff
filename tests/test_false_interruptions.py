"""False interruptions on real models: Silero hears Kokoro's speech over an agent's reply, Moonshine
transcribes it, and the reply pauses at once, then resumes (a backchannel, even a "mm-hmm" that
Moonshine writes as other words; a short burst; a voiced cough) or is flushed (real words), in
process and over Twilio's media stream with marks. Decisions count caller audio, so the outcomes are
exact; no wall-clock timing is asserted. The word rules themselves (`judge_words`) and the gate's
wait for the end of a short sound are plain functions, tested without models."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from _server import live_server, wait_for
from conftest import heard_text, speech

from agentkit import Agent, Stream, TurnTakingOptions
from agentkit.agent import (
    AgentEvent,
    FalseInterruption,
    InterruptionConfirmed,
    InterruptionSuspected,
    ReplyFinished,
    ReplyInterrupted,
    split_sentences,
)
from agentkit.audio import AudioFrame, StreamingResampler, float_to_pcm16
from agentkit.providers import KokoroTTS, MoonshineSTT
from agentkit.providers.llm import ChatMessage
from agentkit.store import MemoryStore
from agentkit.stream import PlaybackPaused, PlaybackResumed, Session
from agentkit.stream._interruption import (
    INTERRUPTION_WORDS,
    InterruptionGate,
    InterruptionState,
    judge_words,
    sound_key,
)
from agentkit.stream._turn import TurnStarted
from agentkit.testing import RecordingTransport, ScriptedLLM, ToneTTS, TwilioCaller, open_recorded_session
from agentkit.testing._signals import speech_bounds
from agentkit.testing._throat_sounds import throat_sound

pytestmark = pytest.mark.slow

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz
REPLY = "Here is the first part of my answer. And this is the second part of it."
TOKEN = "test-auth-token-0123456789abcdef"


@pytest.fixture(scope="module")
def voice(models_dir: object) -> dict[str, AudioFrame]:
    """Kokoro's speech, at 16 kHz: backchannels, a real interruption, a short burst; and a cough."""

    async def speak(text: str, speaker: str = "am_michael") -> AudioFrame:
        frames = [frame async for frame in KokoroTTS(voice=speaker).synthesize(text)]
        joined = AudioFrame.concat(frames)
        return AudioFrame(
            StreamingResampler(joined.sample_rate, RATE).process(joined.samples, last=True), RATE
        )

    async def all_of() -> dict[str, AudioFrame]:
        said = {
            "backchannel": await speak("Yeah, I see."),
            "interruption": await speak("Wait, stop, I have a question."),
            # Moonshine tiny writes this one "And Mm-hmm," or "Amen, hm." (bench/interruption_eval.py)
            "mm-hmm": await speak("Mm-hmm.", "af_heart"),
            "cough": AudioFrame(throat_sound("voiced-cough", np.random.default_rng(4)), RATE),
        }
        hey = await speak("Hey")
        bounds = speech_bounds(hey.samples, RATE)
        assert bounds is not None
        start = round(bounds[0] * RATE)
        said["burst"] = AudioFrame(hey.samples[start : start + round(0.15 * RATE)], RATE)  # 150 ms of a word
        return said

    return asyncio.run(all_of())


class Listener(Agent):
    instructions = "Be brief."
    turn_taking = TurnTakingOptions(end_of_turn_silence_ms=300)
    semantic_turn = None  # the silence rule alone: these tests play short silent tails
    first_piece_words = None  # one piece per sentence: the reply's length is its tone's, exactly
    interruption_words_timeout_s = 10.0  # a loaded machine must not turn words into "no transcript"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.events: list[AgentEvent] = []

    def copy(self) -> Listener:
        clone = super().copy()
        assert isinstance(clone, Listener)
        return clone

    async def on_event(self, event: AgentEvent) -> None:
        self.events.append(event)  # shared by the session's copy: the test reads it


def listener(llm: ScriptedLLM, tts: ToneTTS, **options: Any) -> Listener:
    return Listener(stt=MoonshineSTT("tiny"), llm=llm, tts=tts, **options)


def with_silence(audio: AudioFrame, lead_s: float = 0.0, tail_s: float = 0.6) -> np.ndarray:
    pad = [np.zeros(round(s * audio.sample_rate), dtype=np.float32) for s in (lead_s, tail_s)]
    return np.concatenate([pad[0], audio.samples, pad[1]])


async def feed(session: Session, samples: np.ndarray) -> None:
    for start in range(0, samples.shape[0], FRAME):
        await session.receive_audio(float_to_pcm16(samples[start : start + FRAME]))


async def talk_over_reply(agent: Listener, sound: np.ndarray) -> tuple[Session, RecordingTransport]:
    """A first turn, then `sound` once the reply has played for half a second."""
    session, transport = open_recorded_session(Stream(agent))
    await session.start()
    await feed(session, with_silence(speech("utt2"), 0.3, 0.6))
    await transport.wait_for("response_starting", timeout_s=10)
    while not transport.audio:
        await transport.changed()
    await asyncio.sleep(0.5)
    await feed(session, sound)
    return session, transport


def of_type(events: list[Any], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def reply_heard_over(
    clip: AudioFrame,
) -> tuple[RecordingTransport, Listener, list[ChatMessage], ScriptedLLM]:
    """`clip` spoken over a reply that is then left to play out: the transport, the agent, its
    history and its LLM afterwards."""
    llm = ScriptedLLM(REPLY, "Never said.")
    agent = listener(llm, ToneTTS(ms_per_char=40))
    session, transport = await talk_over_reply(agent, with_silence(clip))
    try:
        await transport.wait_for("response_done", timeout_s=15)
        await transport.wait_for("metrics", timeout_s=5)
        history = session.handler.session.history  # type: ignore[union-attr]
    finally:
        await session.close()
    return transport, agent, history, llm


def test_backchannel_words_are_told_from_real_ones() -> None:
    options = TurnTakingOptions()
    assert judge_words("Yeah, I see.", options.backchannels, 1) == "backchannel"
    assert judge_words("Mm hmm. Okay, sure.", options.backchannels, 1) == "backchannel"
    assert (
        judge_words("Yeah, I", options.backchannels, 1, partial=True) == "backchannel"
    )  # "I see" may follow
    assert judge_words("Yeah, I", options.backchannels, 1) == "confirmed"
    assert judge_words("Yeah, I s", options.backchannels, 1, partial=True) == "backchannel"  # a cut word
    assert judge_words("Wait, sto", options.backchannels, 1, partial=True) == "confirmed"
    assert judge_words("Wait", options.backchannels, 1, partial=True) == "no_words"  # yet
    assert judge_words("Yeah", options.backchannels, 1, partial=True) == "backchannel"
    assert judge_words("Yeah, but", options.backchannels, 2) == "no_words"
    assert judge_words("", options.backchannels, 1) == "no_words"
    assert judge_words("Right, sure", ("right",), 1) == "confirmed"  # a list of one's own
    with pytest.raises(ValueError, match="interrupt_min_speech_ms"):
        TurnTakingOptions(interrupt_min_speech_ms=900, interrupt_decision_ms=700)


OPTIONS = TurnTakingOptions()
BC = OPTIONS.backchannels


def test_backchannels_are_matched_however_the_model_writes_them() -> None:
    # any hum, however spelled; runs of a letter as one; a phrase said again at once, once
    for hum in ("Hmmm.", "Mhm.", "Mm-hm", "mmhmm", "Uh huh.", "Um-hum", "Hmhm", "Mmm, hmm.", "Mmham"):
        assert judge_words(hum, BC, 1) == "backchannel", hum
    assert judge_words("Yeahh, okayy.", BC, 1) == "backchannel"
    assert judge_words("I see, I see, I see", BC, 1) == "backchannel"  # a decoding loop
    # a word that sounds like a backchannel counts as it
    assert sound_key("ride") == sound_key("right") == sound_key("write") == "rt"
    assert sound_key("ok") == sound_key("okay") == "ak" and sound_key("hmm") == "m"
    assert judge_words("Ride.", BC, 1) == judge_words("Yup, oak.", BC, 1) == "backchannel"
    assert judge_words("Get out!", BC, 1) == "confirmed"  # phrases only as spelled: not "got it"
    # ...unless it sounds like an interruption word as well ("sore": "sure" or "sorry"?)
    assert judge_words("Sore.", BC, 1, interruption_words=INTERRUPTION_WORDS) == "confirmed"
    # real words stay words: nothing here is a hum or sounds like a backchannel
    assert judge_words("Amen.", BC, 1) == judge_words("Not now.", BC, 1) == "confirmed"
    assert judge_words("Man.", BC, 1) == judge_words("Name.", BC, 1) == "confirmed"
    assert judge_words("One moment.", BC, 1) == judge_words("No.", BC, 1) == "confirmed"


def test_a_short_sound_holds_one_stray_word_but_never_an_interruption_word() -> None:
    def short(text: str, *, partial: bool = False) -> str:
        return judge_words(
            text, BC, 1, partial=partial, interruption_words=INTERRUPTION_WORDS, fragment_words=1
        )

    # what Moonshine tiny wrote for Kokoro's "Mm-hmm." and "Right." (bench/interruption_eval.py)
    assert short("Amen, hm.") == short("Ride, and.") == short("And Mm-hmm,") == "backchannel"
    assert judge_words("Amen, hm.", BC, 1) == "confirmed"  # not in a long sound
    assert short("Slow down.") == short("That's wrong.") == short("I disagree.") == "confirmed"
    for stop in ("Wait.", "Stop!", "No.", "Hold on.", "Sorry?", "Excuse me.", "Hey!", "What?"):
        assert short(stop) == "confirmed", stop
    assert short("Yeah, no.") == short("Okay, wait") == short("Weight!") == "confirmed"
    assert short("Yes, please.") == "confirmed" and short("Yes, sir.") == "backchannel"
    assert short("What's that?") == "confirmed"  # a contraction by its first part
    # the cost, stated: a real "Wait." misheard as another single word plays on
    assert short("Waiter,") == "backchannel"
    # still talking: the cut last word never counts, a repeated "no" before it does
    assert short("No, no, no, n", partial=True) == "confirmed"
    assert short("Wait", partial=True) == "no_words"  # yet
    with pytest.raises(ValueError, match="backchannel_max_words"):
        TurnTakingOptions(backchannel_max_words=-1)


def test_a_short_sound_still_going_at_the_deadline_is_judged_at_its_end() -> None:
    options = TurnTakingOptions(interrupt_decision_ms=700, backchannel_max_speech_ms=1000)
    gate = InterruptionGate(options, sample_rate=RATE, words=True)
    gate.suspect(TurnStarted(onset_samples=0, decided_samples=1024), at_samples=1024)
    deadline = 1024 + 700 * RATE // 1000
    assert gate.step(position_samples=deadline - 320, speech_ms=700, speaking=True) is None
    assert gate.step(position_samples=deadline, speech_ms=768, speaking=True) == "decide"
    # "And" and a word cut in half settle nothing: the reply stays paused, no decision yet
    assert gate.judge_so_far(768, "And them,") is None and gate.state is InterruptionState.SUSPECTED
    assert gate.step(position_samples=deadline + 320, speech_ms=800, speaking=True) is None
    assert gate.step(position_samples=deadline + 640, speech_ms=832, speaking=False) == "decide"
    assert gate.judge(832, "And Mm-hmm,") == "backchannel"
    # real words at the deadline decide at once, as before
    gate.suspect(TurnStarted(onset_samples=0, decided_samples=1024), at_samples=1024)
    assert gate.judge_so_far(768, "Could you move, my") == "confirmed"
    # a sound that goes on past backchannel_max_speech_ms is judged on every word so far
    gate.suspect(TurnStarted(onset_samples=0, decided_samples=1024), at_samples=1024)
    assert gate.judge_so_far(768, "I disagree") is None
    assert gate.step(position_samples=deadline + 8000, speech_ms=1024, speaking=True) == "decide"
    assert gate.judge_so_far(1024, "I disagree") == "confirmed"
    # with backchannel_max_speech_ms 0, the deadline decides on the words so far, as before
    old = InterruptionGate(TurnTakingOptions(backchannel_max_speech_ms=0), sample_rate=RATE, words=True)
    old.suspect(TurnStarted(onset_samples=0, decided_samples=1024), at_samples=1024)
    assert old.judge_so_far(768, "And them,") == "confirmed"


async def test_a_backchannel_pauses_the_reply_which_then_plays_to_its_end(
    voice: dict[str, AudioFrame],
) -> None:
    tts = ToneTTS(ms_per_char=40)
    llm = ScriptedLLM(REPLY, "Never said.")
    agent = listener(llm, tts)
    session, transport = await talk_over_reply(agent, with_silence(voice["backchannel"]))
    try:
        done = await transport.wait_for("response_done", timeout_s=15)
        await transport.wait_for("metrics", timeout_s=5)
        history = session.handler.session.history  # type: ignore[union-attr]
    finally:
        await session.close()
    [paused] = transport.events_of("playback_paused")
    [resumed] = transport.events_of("playback_resumed")
    assert isinstance(paused.event, PlaybackPaused) and isinstance(resumed.event, PlaybackResumed)
    assert resumed.event.reason == "backchannel"
    assert transport.events_of("interrupted") == []
    # the pause came at the onset: the caller's `started_talking`, then at once `playback_paused`
    types = transport.event_types()
    assert types[types.index("playback_paused") - 1] == "started_talking"
    # nothing was sent while paused; then the unheard rest went out again, and the reply to its end
    assert [a for a in transport.audio if paused.t < a.t < resumed.t] == []
    reply_s = sum(tts.duration_s(s) for s in split_sentences(REPLY))
    assert done.event.audio_ms == round(reply_s * 1000)  # type: ignore[union-attr]
    sent_s = sum(a.samples.shape[0] for a in transport.audio) / 24000
    assert sent_s == pytest.approx(reply_s + resumed.event.replay_ms / 1000, abs=0.002)
    # stored whole, not interrupted; the backchannel was no turn (no second LLM call)
    assert history[-1] == ChatMessage("assistant", REPLY)
    assert len(llm.calls) == 1
    [suspected] = of_type(agent.events, InterruptionSuspected)
    [false] = of_type(agent.events, FalseInterruption)
    assert false.reason == "backchannel" and false.text is not None and "yeah" in false.text.lower()
    assert suspected.heard_ms == paused.event.heard_ms > 0
    assert of_type(agent.events, InterruptionConfirmed) == [] == of_type(agent.events, ReplyInterrupted)
    assert [e.text for e in of_type(agent.events, ReplyFinished)] == [REPLY]


async def test_a_short_burst_pauses_the_reply_and_it_resumes(voice: dict[str, AudioFrame]) -> None:
    transport, agent, history, llm = await reply_heard_over(voice["burst"])
    assert [e.event.type for e in transport.events if e.event.type.startswith("playback_")] == [
        "playback_paused",
        "playback_resumed",
    ]
    [resumed] = transport.events_of("playback_resumed")
    assert resumed.event.reason == "too_short"  # type: ignore[union-attr]
    assert transport.events_of("interrupted") == []
    [false] = of_type(agent.events, FalseInterruption)
    assert false.reason == "too_short" and false.speech_ms < 300 and false.text is None  # no STT needed
    assert history[-1] == ChatMessage("assistant", REPLY) and len(llm.calls) == 1


async def test_a_mm_hmm_the_model_writes_as_other_words_lets_the_reply_resume(
    voice: dict[str, AudioFrame],
) -> None:
    transport, agent, history, llm = await reply_heard_over(voice["mm-hmm"])
    [resumed] = transport.events_of("playback_resumed")
    assert resumed.event.reason == "backchannel"  # type: ignore[union-attr]
    assert transport.events_of("interrupted") == []
    [false] = of_type(agent.events, FalseInterruption)
    assert false.reason == "backchannel" and false.text  # heard as words, not as "mm-hmm"
    assert history[-1] == ChatMessage("assistant", REPLY) and len(llm.calls) == 1
    assert of_type(agent.events, InterruptionConfirmed) == [] == of_type(agent.events, ReplyInterrupted)


async def test_a_voiced_cough_pauses_the_reply_and_it_resumes(voice: dict[str, AudioFrame]) -> None:
    transport, agent, history, llm = await reply_heard_over(voice["cough"])
    # Silero calls the cough speech (the reply pauses), too little of it to be a turn: it resumes
    assert [e.event.type for e in transport.events if e.event.type.startswith("playback_")] == [
        "playback_paused",
        "playback_resumed",
    ]
    assert transport.events_of("interrupted") == []
    [false] = of_type(agent.events, FalseInterruption)
    assert false.reason in ("too_short", "no_words", "backchannel")
    assert history[-1] == ChatMessage("assistant", REPLY) and len(llm.calls) == 1
    assert [e.text for e in of_type(agent.events, ReplyFinished)] == [REPLY]


async def test_real_words_flush_the_reply_and_keep_what_was_heard(voice: dict[str, AudioFrame]) -> None:
    tts = ToneTTS(ms_per_char=40)
    llm = ScriptedLLM(REPLY, "Sure, go ahead.")
    agent = listener(llm, tts)
    session, transport = await talk_over_reply(agent, with_silence(voice["interruption"]))
    try:
        interrupted = await transport.wait_for("interrupted", timeout_s=10)
        await transport.wait_for("metrics", timeout_s=15, count=2)
        history = session.handler.session.history  # type: ignore[union-attr]
    finally:
        await session.close()
    [paused] = transport.events_of("playback_paused")
    assert transport.events_of("playback_resumed") == []
    # nothing was played between the pause and the flush, so what was heard is what the pause said
    heard_ms = interrupted.event.heard_ms  # type: ignore[union-attr]
    assert heard_ms == paused.event.heard_ms > 0  # type: ignore[union-attr]
    assert [a for a in transport.audio if paused.t < a.t < interrupted.t] == []
    heard = heard_text(REPLY, heard_ms, tts)
    assert heard and REPLY.startswith(heard) and heard != REPLY
    assert history[1] == ChatMessage("assistant", heard, interrupted=True)
    assert llm.calls[1].messages[-1].role == "user" and "question" in llm.calls[1].messages[-1].text.lower()
    [confirmed] = of_type(agent.events, InterruptionConfirmed)
    # the words heard so far, "Wait, stop": Moonshine tiny writes "Weight stop," under onnxruntime 1.32
    assert confirmed.text is not None and "stop" in confirmed.text.lower()
    assert confirmed.speech_ms >= 300 and confirmed.heard_ms == heard_ms
    assert of_type(agent.events, FalseInterruption) == []
    [cut] = of_type(agent.events, ReplyInterrupted)
    assert cut.heard_text == heard and cut.heard_ms == heard_ms


async def test_twilio_clears_on_pause_and_resends_the_unheard_rest(
    voice: dict[str, AudioFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over Twilio's media stream: `clear` on the pause, the unheard remainder re-sent on resume, and
    the caller's player (which answers marks as it plays) hears the whole reply once."""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("AGENTKIT_PUBLIC_URL", raising=False)
    monkeypatch.delenv("AGENTKIT_TWILIO_VALIDATE", raising=False)
    tts = ToneTTS(ms_per_char=40)
    agent = listener(ScriptedLLM(REPLY, "Never said."), tts, store=MemoryStore())
    to_8k = StreamingResampler(RATE, 8000)
    backchannel = AudioFrame(to_8k.process(voice["backchannel"].samples, last=True), 8000)
    async with live_server(Stream(agent)) as server:
        async with TwilioCaller(server.http_url, auth_token=TOKEN) as call:
            await call.play(speech("utt2", 8000), lead_silence_s=0.2, tail_silence_s=0.5)
            await wait_for(lambda: call.received_audio().duration_s > 0.5, 10, "half a second of reply")
            await call.play(backchannel, lead_silence_s=0.0, tail_silence_s=0.5)
            await wait_for(lambda: any(n.startswith("end-") for n, _ in call.marks_answered), 10, "the end")
            await call.stop()
        await wait_for(lambda: not server.stream.sessions, what="the session to close")
    [false] = of_type(agent.events, FalseInterruption)
    assert false.reason == "backchannel"
    [clear] = call.events_of("clear")  # the pause; the resume needs none
    assert call.dropped_audio_s > 0  # what Twilio had buffered at the pause was dropped...
    reply_s = sum(tts.duration_s(s) for s in split_sentences(REPLY))
    assert call.heard_audio().duration_s == pytest.approx(reply_s, abs=0.03)  # ...and heard once, later
    assert any(m.t > clear.t for m in call.events_of("media"))
    marks = [e.data["mark"]["name"] for e in call.events_of("mark")]
    assert [n for n, _ in call.marks_answered] == marks and marks[-1].startswith("end-")
    assert [e.text for e in of_type(agent.events, ReplyFinished)] == [REPLY]
    assert of_type(agent.events, ReplyInterrupted) == []
    assert call.protocol_violations == []
