"""Turn-taking on real speech through the real Silero model."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import speech, speech_bounds_s

from agentkit.providers.vad import SileroVAD
from agentkit.stream import TurnDetector, TurnDiscarded, TurnEnded, TurnEvent, TurnStarted, TurnTakingOptions

RATE = 16000
FRAME = 320  # 20 ms input frames, as a transport delivers them


def run(vad: SileroVAD, audio: np.ndarray, options: TurnTakingOptions) -> list[tuple[TurnEvent, int]]:
    """Feed `audio` in 20 ms frames; return each event with the input position when it was produced."""
    detector = TurnDetector(vad.stream(), sample_rate=RATE, chunk_samples=512, options=options)
    events: list[tuple[TurnEvent, int]] = []
    for start in range(0, audio.shape[0], FRAME):
        frame = audio[start : start + FRAME]
        events += [(event, start + frame.shape[0]) for event in detector.process(frame)]
    return events


def with_silence(samples: np.ndarray, lead_s: float, tail_s: float = 2.0) -> np.ndarray:
    lead = np.zeros(round(lead_s * RATE), dtype=np.float32)
    return np.concatenate([lead, samples, np.zeros(round(tail_s * RATE), dtype=np.float32)])


@pytest.mark.parametrize("name", ["utt1", "utt2"])
@pytest.mark.parametrize("silence_ms", [600, 800])
def test_one_utterance_is_one_turn_ended_within_silence_plus_64ms(
    silero: SileroVAD, name: str, silence_ms: int
) -> None:
    rng = random.Random(silence_ms)
    options = TurnTakingOptions(end_of_turn_silence_ms=silence_ms)
    for _ in range(6):  # utterance phases against the 32 ms chunk grid
        audio = with_silence(speech(name).samples, lead_s=0.5 + rng.uniform(0, 0.6))
        _, speech_end_s = speech_bounds_s(audio, RATE)
        events = run(silero, audio, options)
        ends = [(e, pos) for e, pos in events if isinstance(e, TurnEnded)]
        assert len(ends) == 1, events
        assert sum(isinstance(e, TurnStarted) for e, _ in events) == 1
        turn, decided_at = ends[0]
        assert 0 <= decided_at - turn.decided_samples < FRAME  # decided inside the frame just fed
        late_ms = (decided_at / RATE - speech_end_s) * 1000 - silence_ms
        assert -20 <= late_ms <= 64, late_ms
        assert not turn.cut


def test_internal_pause_splits_only_when_silence_is_shorter(silero: SileroVAD) -> None:
    """utt1 has two sentences with a pause of about 0.35 s between them."""
    audio = with_silence(speech("utt1").samples, lead_s=0.5)
    short = [e for e, _ in run(silero, audio, TurnTakingOptions(end_of_turn_silence_ms=250))]
    assert sum(isinstance(e, TurnEnded) for e in short) == 2
    longer = [e for e, _ in run(silero, audio, TurnTakingOptions(end_of_turn_silence_ms=500))]
    assert sum(isinstance(e, TurnEnded) for e in longer) == 1


def test_spliced_sentences_with_a_short_gap_stay_one_turn(silero: SileroVAD) -> None:
    whole = speech("utt2").samples
    start_s, end_s = speech_bounds_s(whole, RATE)
    one = whole[round(start_s * RATE) : round(end_s * RATE)]
    gap = np.zeros(round(0.3 * RATE), dtype=np.float32)
    audio = with_silence(np.concatenate([one, gap, one]), lead_s=0.4)
    events = [e for e, _ in run(silero, audio, TurnTakingOptions(end_of_turn_silence_ms=450))]
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert len(ended) == 1
    assert ended[0].audio.duration_s > 2 * (end_s - start_s) + 0.3


def test_pre_roll_keeps_the_first_syllable(silero: SileroVAD) -> None:
    options = TurnTakingOptions(pre_roll_ms=256)
    audio = with_silence(speech("utt2").samples, lead_s=1.0)
    onset_s, _ = speech_bounds_s(audio, RATE)
    events = run(silero, audio, options)
    started = next(e for e, _ in events if isinstance(e, TurnStarted))
    turn = next(e for e, _ in events if isinstance(e, TurnEnded))
    assert abs(started.onset_samples / RATE - onset_s) < 0.1
    assert turn.audio.timestamp_samples / RATE <= onset_s - 0.2
    head = turn.audio.samples[: round((onset_s - turn.audio.timestamp_s) * RATE) + 800]
    assert np.abs(head).max() > 0.01  # the onset itself is inside the turn audio


def test_max_turn_length_cuts_a_long_turn(silero: SileroVAD) -> None:
    one = speech("utt2").samples
    audio = with_silence(np.concatenate([one, one, one]), lead_s=0.3)
    events = [e for e, _ in run(silero, audio, TurnTakingOptions(max_turn_ms=2000))]
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and ended[0].cut
    assert ended[0].audio.duration_s == pytest.approx(2.0, abs=0.1)


def test_noise_and_short_bursts_are_not_turns(silero: SileroVAD) -> None:
    rng = np.random.default_rng(0)
    noise = (0.003 * rng.standard_normal(RATE * 3)).astype(np.float32)
    tone = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)).astype(np.float32)
    events = [e for e, _ in run(silero, np.concatenate([noise, tone, noise]), TurnTakingOptions())]
    assert not any(isinstance(e, TurnEnded) for e in events)
    # a 150 ms snippet of speech: an onset, then discarded as too short for a turn
    snippet = speech("utt2").samples[8000:10400]
    events = [e for e, _ in run(silero, with_silence(snippet, 0.5), TurnTakingOptions(min_speech_ms=300))]
    assert not any(isinstance(e, TurnEnded) for e in events)
    assert any(isinstance(e, TurnDiscarded) for e in events) or not events


def test_noise_floor_does_not_delay_the_end_of_turn(silero: SileroVAD) -> None:
    """Steady background noise after speech: silence still counts from where the VAD says it ends."""
    rng = np.random.default_rng(1)
    audio = with_silence(speech("utt2").samples, lead_s=0.5)
    audio = audio + (0.01 * rng.standard_normal(audio.shape[0])).astype(np.float32)  # about -40 dBFS
    events = run(silero, audio, TurnTakingOptions(end_of_turn_silence_ms=500))
    ends = [pos for e, pos in events if isinstance(e, TurnEnded)]
    assert len(ends) == 1
    _, speech_end_s = speech_bounds_s(with_silence(speech("utt2").samples, 0.5), RATE)
    assert ends[0] / RATE - speech_end_s < 0.5 + 0.15


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        TurnTakingOptions(speech_threshold=0.3, silence_threshold=0.5)
    with pytest.raises(ValueError):
        TurnTakingOptions(end_of_turn_silence_ms=0)
