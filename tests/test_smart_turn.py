"""Semantic end of turn: Smart Turn v3.2's features and batching, and the opt-in in turn-taking.

Speech is synthesised here with Kokoro (real models on real speech). Nothing is timed by the wall
clock: ends of turn are read from `pause_detected` (`t_ms` is where the decision was made and
`speech_end_ms` the acoustic end of speech, both media-clock positions counted in samples).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_semantic_turn import _pauses as pauses_of

from agentkit import ReplyOnPause, Stream
from agentkit.audio import AudioFrame, Samples, StreamingResampler, float_to_pcm16
from agentkit.providers import KokoroTTS, SileroVAD, SmartTurn
from agentkit.providers.turn._features import CLIP_SAMPLES, _mel_filterbank, clip_batch, log_mel_features
from agentkit.stream import PauseDetected, TurnDetector, TurnTakingOptions
from agentkit.testing import open_recorded_session

pytestmark = pytest.mark.slow

RATE = 16000
CHECK_AFTER_MS = TurnTakingOptions().semantic_check_after_ms
FRAME = 320  # 20 ms input frames
CHUNK_MS = 32  # the VAD's chunk: the detector's silence is measured from a block inside one


async def _say(tts: KokoroTTS, text: str) -> Samples:
    frames = [frame async for frame in tts.synthesize(text)]
    joined = AudioFrame.concat(frames)
    audio = StreamingResampler(joined.sample_rate, RATE).process(joined.samples, last=True)
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    return audio[loud[0] : loud[-1] + 1]  # Kokoro's own lead and tail silence trimmed


def _gap(seconds: float) -> Samples:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


@pytest.fixture(scope="module")
def voices(models_dir: Path) -> dict[str, Samples]:
    """The test utterances, spoken once for the module by Kokoro (am_michael)."""

    async def speak_all() -> dict[str, Samples]:
        tts = KokoroTTS(voice="am_michael")
        try:
            return {
                "question": await _say(tts, "What is the capital of France?"),
                "cut": await _say(tts, "So I was wondering if"),
                "rest": await _say(tts, "you could check the status of my order."),
            }
        finally:
            await tts.aclose()

    return asyncio.run(speak_all())


@pytest.fixture(scope="module")
def smart_turn(models_dir: Path) -> SmartTurn:
    model = SmartTurn()
    assert model.load()
    return model


# -- features ---------------------------------------------------------------------------------------


def test_mel_filterbank_is_slaney() -> None:
    filters = _mel_filterbank()
    assert filters.shape == (80, 201) and (filters >= 0).all()
    peaks = filters.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and peaks[0] <= 2 and peaks[-1] >= 190  # 0-8 kHz, in order
    # unit area: each triangle's height is 2 / (its width in Hz), times its half-width sum in bins
    hz_per_bin = 8000 / 200
    assert np.allclose(filters.sum(axis=1) * hz_per_bin, 1.0, atol=0.1)


def test_features_shape_padding_and_range() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(3 * RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    long_noise = (0.1 * rng.standard_normal(10 * RATE)).astype(np.float32)
    batch = clip_batch([tone, long_noise])
    assert batch.shape == (2, CLIP_SAMPLES)
    assert not batch[0, : 5 * RATE].any() and np.array_equal(batch[0, 5 * RATE :], tone)  # left-padded
    assert np.array_equal(batch[1], long_noise[-CLIP_SAMPLES:])  # the last 8 s
    features = log_mel_features(batch)
    assert features.shape == (2, 80, 800) and features.dtype == np.float32
    for clip in features:
        assert clip.max() - clip.min() <= 2.0 + 1e-6  # clipped at max - 8, then divided by 4
    # the padding is flat (all at the floor) and the tone lands in the mel band that holds 1 kHz
    assert np.ptp(features[0, :, :450]) < 1e-6
    band = int(features[0, :, 600].argmax())
    assert _mel_filterbank()[band, 25] > 0  # bin 25 is 1000 Hz
    # the waveform is normalised first: a quieter copy gives (nearly) the same features
    quieter = log_mel_features(clip_batch([0.05 * long_noise]))
    assert np.abs(quieter[0] - features[1]).max() < 1e-3


# -- the model --------------------------------------------------------------------------------------


def _with_silence(samples: Samples, silence_ms: int) -> Samples:
    return np.concatenate([_gap(0.5), samples, _gap(silence_ms / 1000)])


def test_complete_question_scores_high_and_a_cut_one_low(
    smart_turn: SmartTurn, voices: dict[str, Samples]
) -> None:
    complete, cut = smart_turn.predict(
        [_with_silence(voices["question"], CHECK_AFTER_MS), _with_silence(voices["cut"], CHECK_AFTER_MS)]
    )
    assert complete > 0.9
    assert cut < 0.2


def test_one_and_two_threads_score_alike_on_sessions_of_their_own(
    smart_turn: SmartTurn, voices: dict[str, Samples]
) -> None:
    clips = [_with_silence(voices["question"], CHECK_AFTER_MS), _with_silence(voices["cut"], CHECK_AFTER_MS)]
    single = SmartTurn(smart_turn.model_path, threads=1)
    assert single.load() and smart_turn.load()
    assert single._session is not smart_turn._session  # one shared session per thread count
    assert single._session.get_session_options().intra_op_num_threads == 1
    assert smart_turn._session.get_session_options().intra_op_num_threads == smart_turn.threads == 2
    assert np.allclose(single.predict(clips), smart_turn.predict(clips), atol=1e-4)
    with pytest.raises(ValueError, match="threads"):
        SmartTurn(threads=0)


async def test_checks_arriving_together_share_one_run_with_the_same_results(
    smart_turn: SmartTurn, voices: dict[str, Samples]
) -> None:
    clips = [
        _with_silence(voices["question"], 200),
        _with_silence(voices["cut"], 200),
        _with_silence(voices["rest"], 100),
        np.concatenate([voices["cut"], _gap(0.5), voices["rest"]]),
    ]
    singles = [smart_turn.predict([clip])[0] for clip in clips]
    runs = smart_turn.runs
    batched = await asyncio.gather(*(smart_turn.probability(clip) for clip in clips))
    assert smart_turn.runs == runs + 1
    assert np.allclose(batched, singles, atol=1e-5)


async def test_a_full_batch_runs_without_waiting_and_a_cancelled_caller_drops_only_its_result(
    models_dir: Path, voices: dict[str, Samples]
) -> None:
    model = SmartTurn(batch_window_ms=60_000, max_batch=2)  # only a full batch can run
    assert await asyncio.to_thread(model.load)  # loaded first: the four requests join in order
    clip = _with_silence(voices["question"], 200)
    first = asyncio.create_task(model.probability(clip))
    second = asyncio.create_task(model.probability(clip))
    leaving = asyncio.create_task(model.probability(clip))
    third = asyncio.create_task(model.probability(clip))
    await asyncio.sleep(0)
    leaving.cancel()
    assert await first == await second == pytest.approx(await third, abs=1e-6)
    assert model.runs == 2 and model.checks == 4
    await model.aclose()


# -- turn-taking with the model ---------------------------------------------------------------------


async def _pauses(audio: Samples, **handler: Any) -> list[PauseDetected]:
    """Feed `audio` in 20 ms frames to a ReplyOnPause with a silent reply; its pause_detected events."""

    def reply(audio: AudioFrame) -> Iterator[AudioFrame]:
        del audio
        yield from ()

    return await pauses_of(Stream(ReplyOnPause(reply, **handler)), audio)


async def test_complete_question_ends_the_turn_after_the_first_check(
    smart_turn: SmartTurn, voices: dict[str, Samples]
) -> None:
    audio = _with_silence(voices["question"], 2000)
    checks = smart_turn.checks
    (semantic,) = await _pauses(audio, semantic_turn=smart_turn)
    assert smart_turn.checks == checks + 1
    waited_ms = semantic.t_ms - semantic.speech_end_ms
    assert CHECK_AFTER_MS <= waited_ms < CHECK_AFTER_MS + 20 + 1  # within the frame it was reached in
    (plain,) = await _pauses(audio)
    assert 500 <= plain.t_ms - plain.speech_end_ms < 500 + 20 + 1
    assert abs(plain.speech_end_ms - semantic.speech_end_ms) <= CHUNK_MS


async def test_mid_sentence_pause_stays_one_turn_with_the_model_and_splits_without(
    smart_turn: SmartTurn, voices: dict[str, Samples]
) -> None:
    audio = np.concatenate([_gap(0.5), voices["cut"], _gap(0.8), voices["rest"], _gap(2.0)])
    semantic = await _pauses(audio, semantic_turn=smart_turn)
    assert len(semantic) == 1
    plain = await _pauses(audio)
    assert len(plain) == 2


class _Never:
    """An end-of-turn model that never thinks the caller has finished, and notes when it was asked."""

    sample_rate = RATE
    max_audio_samples = CLIP_SAMPLES

    def __init__(self) -> None:
        self.asked_at: list[int] = []  # length of the audio it was given, in samples

    def load(self) -> bool:
        return True

    async def probability(self, samples: Samples) -> float:
        self.asked_at.append(samples.shape[0])
        return 0.0

    async def aclose(self) -> None:
        pass


async def test_rechecks_as_silence_grows_then_max_silence_ends_the_turn(voices: dict[str, Samples]) -> None:
    model = _Never()
    options = TurnTakingOptions(semantic_recheck_ms=150, semantic_max_silence_ms=1200)
    (pause,) = await _pauses(_with_silence(voices["question"], 2000), semantic_turn=model, options=options)
    assert 1200 <= pause.t_ms - pause.speech_end_ms < 1200 + 20 + 1
    assert len(model.asked_at) == 1 + (1200 - CHECK_AFTER_MS) // 150  # 200, 350, ... 1100 ms
    steps_ms = np.diff(model.asked_at) * 1000 / RATE
    assert all(150 <= step < 150 + 20 + 1 for step in steps_ms), steps_ms


async def test_missing_model_falls_back_to_silence_with_one_log_line(
    voices: dict[str, Samples], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = SmartTurn(tmp_path / "nowhere.onnx")
    audio = _with_silence(voices["question"], 1000)
    with caplog.at_level(logging.WARNING):
        first = await _pauses(audio, semantic_turn=model)
        second = await _pauses(audio, semantic_turn=model)
    lines = [r for r in caplog.records if "semantic end of turn is off" in r.getMessage()]
    assert len(lines) == 1 and "nowhere.onnx" in lines[0].getMessage()
    for (pause,) in (first, second):
        assert 500 <= pause.t_ms - pause.speech_end_ms < 500 + 20 + 1
    assert not model.load()


def test_detector_ends_a_turn_only_in_a_pause(silero: SileroVAD, voices: dict[str, Samples]) -> None:
    detector = TurnDetector(silero.stream(), sample_rate=RATE, chunk_samples=512)
    assert detector.end_turn() is None and detector.recent_audio(RATE) is None
    audio = np.concatenate([_gap(0.5), voices["question"]])
    detector.process(audio)
    assert detector.silence_samples == 0 and detector.end_turn() is None  # still speaking
    detector.process(_gap(0.2))
    assert detector.silence_samples > 0
    tail = detector.recent_audio(RATE)
    assert tail is not None and tail.shape[0] == RATE
    ended = detector.end_turn()
    assert ended is not None and not getattr(ended, "cut", True)
    assert ended.decided_samples == audio.shape[0] + round(0.2 * RATE)
    assert detector.silence_samples == 0 and detector.recent_audio(RATE) is None


@pytest.mark.parametrize(
    "settings",
    [
        {"semantic_check_after_ms": 0},
        {"semantic_check_after_ms": 600, "semantic_max_silence_ms": 500},
        {"semantic_recheck_ms": -1},
        {"semantic_threshold": 0.0},
        {"semantic_threshold": 1.5},
    ],
)
def test_semantic_settings_are_validated(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="semantic"):
        TurnTakingOptions(**settings)


async def test_agent_takes_the_setting_and_ends_turns_with_it(voices: dict[str, Samples]) -> None:
    from agentkit import Agent
    from agentkit.testing import ScriptedLLM, ScriptedSTT, ToneTTS

    class _Yes(_Never):
        async def probability(self, samples: Samples) -> float:
            await super().probability(samples)
            return 1.0

    plain = Agent(stt=ScriptedSTT("Hi."), llm=ScriptedLLM("Hello."), tts=ToneTTS(), semantic_turn=None)
    assert plain.semantic_turn is None
    model = _Yes()
    agent = Agent(stt=ScriptedSTT("Hi."), llm=ScriptedLLM("Hello."), tts=ToneTTS(), semantic_turn=model)
    session, transport = open_recorded_session(Stream(agent))
    await session.start()
    try:
        audio = _with_silence(voices["question"], 1000)
        for start in range(0, audio.shape[0], FRAME):
            await session.receive_audio(float_to_pcm16(audio[start : start + FRAME]))
        pause = (await transport.wait_for("pause_detected")).event
    finally:
        await session.close()
    assert len(model.asked_at) == 1
    assert CHECK_AFTER_MS <= pause.t_ms - pause.speech_end_ms < CHECK_AFTER_MS + 20 + 1  # type: ignore[union-attr]
