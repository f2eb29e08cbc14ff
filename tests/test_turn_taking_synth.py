"""Turn-taking on speech synthesised here (espeak-ng), with pauses of known length inside a turn."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import speech_bounds_s
from test_turn_taking import RATE, run, with_silence

from agentkit.audio import StreamingResampler, read_wav
from agentkit.providers.vad import SileroVAD
from agentkit.stream import TurnEnded, TurnTakingOptions


def synthesise(tmp_path: Path, ssml: str, *, voice: str = "en-us", words_per_minute: int = 150) -> np.ndarray:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        if os.environ.get("CI"):
            pytest.fail("espeak-ng is not installed (.ci/run installs it)")
        pytest.skip("espeak-ng is not installed")
    out = tmp_path / "speech.wav"
    subprocess.run(
        [espeak, "-m", "-v", voice, "-s", str(words_per_minute), "-w", str(out), f"<speak>{ssml}</speak>"],
        check=True,
        capture_output=True,
    )
    frame = read_wav(out)
    return StreamingResampler(frame.sample_rate, RATE).process(frame.samples, last=True)


@pytest.mark.parametrize(("voice", "words_per_minute"), [("en-us", 170), ("en-gb", 130), ("en-us+f3", 150)])
def test_synthesised_question_is_one_turn(
    silero: SileroVAD, tmp_path: Path, voice: str, words_per_minute: int
) -> None:
    samples = synthesise(
        tmp_path,
        "Could you move my dentist appointment to Thursday morning?",
        voice=voice,
        words_per_minute=words_per_minute,
    )
    audio = with_silence(samples, lead_s=0.73)
    _, speech_end_s = speech_bounds_s(audio, RATE)
    events = run(silero, audio, TurnTakingOptions(end_of_turn_silence_ms=500))
    ends = [pos for e, pos in events if isinstance(e, TurnEnded)]
    assert len(ends) == 1
    late_ms = (ends[0] / RATE - speech_end_s) * 1000 - 500
    assert -20 <= late_ms <= 64, late_ms


@pytest.mark.parametrize("pause_ms", [300, 700])
def test_internal_pause_shorter_than_the_silence_setting_does_not_split(
    silero: SileroVAD, tmp_path: Path, pause_ms: int
) -> None:
    ssml = (
        f'I would like to order a pizza. <break time="{pause_ms}ms"/> With extra cheese and olives, please.'
    )
    audio = with_silence(synthesise(tmp_path, ssml), lead_s=0.5)
    longer = TurnTakingOptions(end_of_turn_silence_ms=pause_ms + 200)
    assert sum(isinstance(e, TurnEnded) for e, _ in run(silero, audio, longer)) == 1


def test_pause_longer_than_the_silence_setting_splits(silero: SileroVAD, tmp_path: Path) -> None:
    ssml = 'I would like to order a pizza. <break time="900ms"/> With extra cheese and olives, please.'
    audio = with_silence(synthesise(tmp_path, ssml), lead_s=0.5)
    events = run(silero, audio, TurnTakingOptions(end_of_turn_silence_ms=600))
    assert sum(isinstance(e, TurnEnded) for e, _ in events) == 2
