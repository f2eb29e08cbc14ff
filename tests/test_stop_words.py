"""`ReplyOnStopWords` on real speech (espeak-ng, Silero turn-taking, Moonshine transcripts): only
turns addressed with the stop word get a reply; a lone stop word makes the next turn the request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_turn_taking_synth import synthesise

from agentkit import ReplyOnStopWords, Stream, TurnTakingOptions
from agentkit.audio import AudioFrame, float_to_pcm16
from agentkit.testing import open_recorded_session

pytestmark = pytest.mark.slow

RATE = 16000
FRAME = 320


def test_stop_words_must_be_words() -> None:
    def fn(audio: AudioFrame) -> Iterator[AudioFrame]:
        yield audio

    with pytest.raises(ValueError, match="stop_words"):
        ReplyOnStopWords(fn, stop_words=[])
    with pytest.raises(ValueError, match="stop_words"):
        ReplyOnStopWords(fn, stop_words=["computer", " , "])


async def run(tmp_path: Path, utterances: list[str], replies: int) -> tuple[list[float], list[str]]:
    """Say each utterance (with 1 s of silence after it); the lengths of the turns the handler was
    called with (waiting for `replies` of them), and the stop words it reported."""
    heard: list[float] = []

    def reply(audio: AudioFrame) -> Iterator[AudioFrame]:
        heard.append(audio.duration_s)
        yield AudioFrame(np.zeros(2400, np.float32), 24000)

    handler = ReplyOnStopWords(
        reply, stop_words=["computer"], options=TurnTakingOptions(end_of_turn_silence_ms=400)
    )
    session, transport = open_recorded_session(Stream(handler))
    await session.start()
    try:
        for text in utterances:  # each turn is transcribed as it ends, while the audio goes in
            samples = np.concatenate([synthesise(tmp_path, text), np.zeros(RATE, np.float32)])
            for start in range(0, samples.shape[0], FRAME):
                await session.receive_audio(float_to_pcm16(samples[start : start + FRAME]))
        if replies:
            await transport.wait_for("response_done", timeout_s=10, count=replies)
    finally:
        await session.close()
    words = [e.event.word for e in transport.events_of("stop_word")]  # type: ignore[union-attr]
    assert len(transport.events_of("pause_detected")) == len(utterances)
    return heard, words


async def test_only_turns_with_the_stop_word_are_answered(tmp_path: Path, models_dir: object) -> None:
    heard, words = await run(tmp_path, ["What time is it?", "Computer, what time is it?"], replies=1)
    assert words == ["computer"]
    assert len(heard) == 1 and heard[0] > 1.0  # the addressed turn, whole


async def test_a_lone_stop_word_makes_the_next_turn_the_request(tmp_path: Path, models_dir: object) -> None:
    heard, words = await run(tmp_path, ["Computer.", "What is the weather like today?"], replies=1)
    assert words == ["computer"]
    assert len(heard) == 1 and heard[0] > 1.0  # the request, not the lone word
