"""Semantic end of turn as shipped: on by default for `Agent`, tuned schedule, fallback without the model.

Real models on real (synthesised) speech, built the way bench/turn_eval_set.py builds its set: a
paused sentence is spoken whole with "..." at the pause, so the words before it keep mid-sentence
intonation, and the engine's pause is then stretched. Nothing is timed by the wall clock: ends of
turn are read from `pause_detected` (`t_ms` where it was decided, `speech_end_ms` the acoustic end
of speech; both media-clock positions).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import EnergyVAD

from agentkit import Agent, ReplyOnPause, Stream
from agentkit.agent._agent import DEFAULT_SEMANTIC_TURN
from agentkit.audio import AudioFrame, Samples, StreamingResampler, float_to_pcm16
from agentkit.providers import KokoroTTS, SileroVAD, SmartTurn
from agentkit.stream import PauseDetected, TurnTakingOptions
from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS, open_recorded_session

pytestmark = pytest.mark.slow

RATE = 16000
FRAME = 320  # 20 ms input frames
OPTIONS = TurnTakingOptions()
FIRST_MS = OPTIONS.semantic_check_after_ms
RECHECK_MS = OPTIONS.semantic_recheck_ms


async def _say(tts: KokoroTTS, text: str) -> Samples:
    frames = [frame async for frame in tts.synthesize(text)]
    joined = AudioFrame.concat(frames)
    audio = StreamingResampler(joined.sample_rate, RATE).process(joined.samples, last=True)
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    return audio[loud[0] : loud[-1] + 1]


def _levels_db(samples: Samples) -> Samples:
    n = samples.shape[0] // 160
    blocks = samples[: n * 160].astype(np.float64).reshape(n, 160)
    return 10 * np.log10((blocks**2).mean(axis=1) + 1e-12)


def _stretch_pause(whole: Samples, before: Samples, pause_s: float) -> Samples:
    """`whole` with the quiet stretch where `before` (its first words, said alone) ends made
    `pause_s` long: the quietest 10 ms blocks within 0.35 s of there, grown over the quiet run."""
    levels = _levels_db(whole)
    guess = before.shape[0] // 160
    lo, hi = guess - 35, guess + 35
    mid = lo + int(np.argmin(levels[lo:hi]))
    start, end = mid, mid + 1
    while levels[start - 1] < -50:
        start -= 1
    while levels[end] < -50:
        end += 1
    gap = np.zeros(round(pause_s * RATE), dtype=np.float32)
    return np.concatenate([whole[: start * 160], gap, whole[end * 160 :]])


def _with_noise(samples: Samples, tail_s: float) -> Samples:
    audio = np.concatenate(
        [np.zeros(RATE // 2, np.float32), samples, np.zeros(round(tail_s * RATE), np.float32)]
    )
    noise = 5e-4 * np.random.default_rng(7).standard_normal(audio.shape[0])  # a quiet microphone
    return (audio + noise).astype(np.float32)


@pytest.fixture(scope="module")
def speech(models_dir: Path) -> dict[str, Samples]:
    """A finished question, and "My order number is ... four five seven two nine." paused 0.9 s."""

    async def speak() -> dict[str, Samples]:
        tts = KokoroTTS(voice="af_heart")
        question = await _say(tts, "What is the capital of France?")
        whole = await _say(tts, "My order number is... four five seven two nine.")
        before = await _say(tts, "My order number is")
        return {"question": question, "paused": _stretch_pause(whole, before, 0.9)}

    return asyncio.run(speak())


async def _pauses(stream: Stream, audio: Samples) -> list[PauseDetected]:
    session, transport = open_recorded_session(stream)
    await session.start()
    try:
        for start in range(0, audio.shape[0], FRAME):
            await session.receive_audio(float_to_pcm16(audio[start : start + FRAME]))
        await session.settle_input()  # the last inputs were given without waiting for their batch
        await asyncio.sleep(0.05)
    finally:
        await session.close()
    return [e.event for e in transport.events_of("pause_detected")]  # type: ignore[misc]


def _reply_on_pause(**kwargs: Any) -> Stream:
    def reply(audio: AudioFrame) -> Iterator[AudioFrame]:
        del audio
        yield from ()

    return Stream(ReplyOnPause(reply, **kwargs))


def _agent(**kwargs: Any) -> Agent:
    return Agent(stt=ScriptedSTT("Hi."), llm=ScriptedLLM("Hello."), tts=ToneTTS(), **kwargs)


def _waited_ms(pause: PauseDetected) -> int:
    return pause.t_ms - pause.speech_end_ms


async def test_a_finished_question_ends_at_the_first_or_second_check(speech: dict[str, Samples]) -> None:
    model = SmartTurn()
    checks = model.checks
    (pause,) = await _pauses(_reply_on_pause(semantic_turn=model), _with_noise(speech["question"], 2.0))
    assert model.checks - checks <= 2
    assert FIRST_MS <= _waited_ms(pause) <= FIRST_MS + RECHECK_MS + 20  # within the frame it was due in


async def test_a_sentence_paused_where_it_is_unfinished_stays_one_turn(speech: dict[str, Samples]) -> None:
    audio = _with_noise(speech["paused"], 2.0)
    (pause,) = await _pauses(_reply_on_pause(semantic_turn=SmartTurn()), audio)
    assert pause.t_ms > audio.shape[0] * 1000 // RATE - 2000  # the one end came after the last words
    assert len(await _pauses(_reply_on_pause(), audio)) == 2  # silence alone splits it


class _Scripted:
    """An end-of-turn model that answers from a script (its last answer over and over after that),
    and notes how many times it was asked."""

    sample_rate = RATE
    max_audio_samples = 8 * RATE

    def __init__(self, *answers: float) -> None:
        self.answers = answers
        self.asked = 0

    def load(self) -> bool:
        return True

    async def probability(self, samples: Samples) -> float:
        del samples
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return answer

    async def aclose(self) -> None:
        pass


def _tone_then_silence() -> Samples:
    """0.5 s of silence, 1 s of a loud tone (the "speech"), then 2 s of silence."""
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE)
    return np.concatenate([np.zeros(RATE // 2), tone, np.zeros(2 * RATE)]).astype(np.float32)


@pytest.mark.parametrize(
    ("answers", "options", "waited_ms", "asked"),
    [
        # unsure (0.9 <= p < 0.99) at 500 ms: the band ends it at 1250 ms, without asking at 1400 ms
        ((0.5, 0.92, 0.3, 0.3), OPTIONS, 1250, 4),
        # clear noes only (p < 0.9), however close: the detector ends it at 1500 ms
        ((0.5, 0.89, 0.3, 0.3), OPTIONS, 1500, 5),
        # unsure at the first check: the band still waits for its silence
        ((0.92, 0.0), OPTIONS, 1250, 4),
        # a band set at the maximum is no band
        ((0.5, 0.92, 0.3), TurnTakingOptions(semantic_unsure_silence_ms=1500), 1500, 5),
        # unsure first reached at a check past the band's silence: that check ends the turn
        ((0.0, 0.0, 0.0, 0.0, 0.95), TurnTakingOptions(semantic_unsure_silence_ms=1300), 1400, 5),
    ],
)
async def test_an_unsure_model_ends_the_turn_at_the_shorter_silence(
    answers: tuple[float, ...], options: TurnTakingOptions, waited_ms: int, asked: int
) -> None:
    """Scripted answers at the checks of 200, 500, 800, 1100 and 1400 ms of silence."""
    model = _Scripted(*answers)
    stream = _reply_on_pause(semantic_turn=model, vad=EnergyVAD(), options=options)
    (pause,) = await _pauses(stream, _tone_then_silence())
    assert 1500 <= pause.speech_end_ms <= 1500 + 8  # the tone's end, to the detector's 8 ms block
    assert waited_ms <= _waited_ms(pause) <= waited_ms + 20  # within the frame it was reached in
    assert model.asked == asked


def test_unsure_band_is_validated() -> None:
    with pytest.raises(ValueError, match="semantic_unsure_threshold"):
        TurnTakingOptions(semantic_unsure_threshold=0.95)  # above semantic_threshold (0.93)
    with pytest.raises(ValueError, match="semantic_unsure_threshold"):
        TurnTakingOptions(semantic_unsure_threshold=0.0)
    with pytest.raises(ValueError, match="semantic_unsure_silence_ms"):
        TurnTakingOptions(semantic_unsure_silence_ms=100)  # before the first check (200 ms)
    # above the maximum it is simply no band (so lowering the maximum alone stays valid)
    assert TurnTakingOptions(semantic_max_silence_ms=1000).semantic_unsure_silence_ms == 1250


def test_recheck_threshold_is_validated() -> None:
    with pytest.raises(ValueError, match="semantic_recheck_threshold"):
        TurnTakingOptions(semantic_threshold=0.8, semantic_recheck_threshold=0.7)
    with pytest.raises(ValueError, match="semantic_recheck_threshold"):
        TurnTakingOptions(semantic_recheck_threshold=1.1)


async def test_agent_is_semantic_by_default_and_none_turns_it_off(speech: dict[str, Samples]) -> None:
    assert _agent().semantic_turn is DEFAULT_SEMANTIC_TURN and DEFAULT_SEMANTIC_TURN.optional
    audio = _with_noise(speech["question"], 1.5)
    (semantic,) = await _pauses(Stream(_agent()), audio)
    assert FIRST_MS <= _waited_ms(semantic) <= FIRST_MS + RECHECK_MS + 20
    (plain,) = await _pauses(Stream(_agent(semantic_turn=None)), audio)
    assert 500 <= _waited_ms(plain) <= 500 + 20


async def test_without_the_model_the_default_falls_back_to_silence_with_one_info_line(
    speech: dict[str, Samples],
    silero: SileroVAD,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENTKIT_MODELS_DIR", str(tmp_path))  # an empty models dir
    monkeypatch.delenv("AGENTKIT_OFFLINE", raising=False)  # optional: no download even when allowed
    monkeypatch.setattr(SmartTurn, "_absence_logged", False)
    model = SmartTurn(optional=True)
    audio = _with_noise(speech["question"], 1.0)
    with caplog.at_level(logging.INFO, logger="agentkit"):
        pauses = [
            *await _pauses(Stream(_agent(semantic_turn=model, vad=silero)), audio),
            *await _pauses(Stream(_agent(semantic_turn=SmartTurn(optional=True), vad=silero)), audio),
        ]
    assert [_waited_ms(p) >= 500 and _waited_ms(p) <= 520 for p in pauses] == [True, True]
    lines = [r for r in caplog.records if "semantic end of turn is off" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "agentkit models download smart-turn" in lines[0].getMessage()
    assert not (tmp_path / "smart-turn").exists()  # nothing was fetched


def test_the_evaluation_set_definitions_cover_what_the_benchmark_reports() -> None:
    """tests/data/turn_eval.json, which bench/turn_eval_set.py speaks (the audio is not in git)."""
    items = json.loads((Path(__file__).parent / "data" / "turn_eval.json").read_text())["items"]
    assert len(items) >= 40 and len({item["id"] for item in items}) == len(items)
    kinds = {kind: [i for i in items if i["kind"] == kind] for kind in ("complete", "paused", "list")}
    assert all(len(group) >= 6 for group in kinds.values())
    assert {i["text"] for i in items if i["kind"] == "backchannel"} >= {"Mm-hmm.", "Yeah.", "Right.", "Okay."}
    assert any(i["kind"] == "noise" for i in items)
    assert {"af_heart", "am_michael", "bf_emma", "bm_george"} <= {i["voice"] for i in items}
    assert any(i["voice"].startswith("espeak:") for i in items)
    for item in kinds["paused"] + kinds["list"]:
        assert item["text"].count("...") == len(item["pauses_s"]) >= 1, item["id"]
        low, high = (0.5, 1.2) if item["kind"] == "paused" else (0.5, 0.9)
        assert all(low <= pause <= high for pause in item["pauses_s"]), item["id"]
