"""First audio first in the reply pipeline (`agentkit.agent._pipeline.speak`): the first piece of a
reply is short, and no more LLM text is read until that piece has its first audio, so a local LLM
(whose stream pauses when unread) leaves the CPU to the TTS meanwhile. Scripted streams; the order
of events is what is checked, not timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from agentkit.agent._pipeline import ReplyTimings, SpokenReply, StageTimeouts, speak
from agentkit.audio import AudioFrame
from agentkit.clock import MonotonicClock

REPLY = "The sky looks blue to us because air scatters blue light the most. Sunsets are red."


class Recorder:
    """A text stream read token by token, and a TTS whose first piece waits for `release`."""

    def __init__(self, tokens: list[str], *, first_piece_silent: bool = False) -> None:
        self.tokens = tokens
        self.read = 0
        self.log: list[str] = []
        self.release = asyncio.Event()
        self.first_piece_silent = first_piece_silent
        self.frames: list[AudioFrame] = []

    async def text(self) -> AsyncIterator[str]:
        for token in self.tokens:
            self.read += 1
            self.log.append(f"read {token!r}")
            yield token
            await asyncio.sleep(0)  # a token at a time, as a streamed LLM gives them

    async def synthesize(self, piece: str) -> AsyncIterator[AudioFrame]:
        first = not any(entry.startswith("tts ") for entry in self.log)
        self.log.append(f"tts {piece!r}")
        if first:
            await self.release.wait()
            if self.first_piece_silent:
                return
        yield AudioFrame(np.full(240, 0.1, np.float32), 24000)

    async def out(self, frame: AudioFrame) -> None:
        self.frames.append(frame)


async def run(recorder: Recorder, first_piece_words: int | None = 6) -> SpokenReply:
    reply = SpokenReply()
    await speak(
        recorder.text(),
        recorder.synthesize,
        recorder.out,
        reply=reply,
        timings=ReplyTimings(),
        clock=MonotonicClock(),
        timeouts=StageTimeouts(),
        first_piece_words=first_piece_words,
    )
    return reply


def words(text: str) -> list[str]:
    tokens = text.split(" ")
    return [tokens[0], *(" " + t for t in tokens[1:])]


async def test_no_text_is_read_while_the_first_piece_is_synthesised() -> None:
    recorder = Recorder(words(REPLY))
    task = asyncio.create_task(run(recorder))
    for _ in range(50):  # let the writer run as far as it will
        await asyncio.sleep(0)
    first_piece = "The sky looks blue to us"
    assert recorder.log[-1] == f"tts {first_piece!r}"
    # read up to the token that showed the sixth word was whole, and no further while the TTS works
    assert recorder.read == 7 and recorder.log[-2] == "read ' because'"
    recorder.release.set()
    reply = await task
    assert recorder.read == len(recorder.tokens)
    assert [s.text for s in reply.segments] == [
        first_piece,
        "because air scatters blue light the most.",  # later pieces: whole (rest of) sentences
        "Sunsets are red.",
    ]
    assert len(recorder.frames) == 3


async def test_a_first_piece_without_audio_does_not_hold_the_rest() -> None:
    recorder = Recorder(words(REPLY), first_piece_silent=True)
    task = asyncio.create_task(run(recorder))
    await asyncio.sleep(0.01)
    recorder.release.set()
    reply = await asyncio.wait_for(task, 5)
    assert len(reply.segments) == 3 and len(recorder.frames) == 2


async def test_without_a_word_limit_the_first_piece_is_the_first_sentence() -> None:
    recorder = Recorder(words(REPLY))
    recorder.release.set()
    reply = await run(recorder, first_piece_words=None)
    assert [s.text for s in reply.segments] == [
        "The sky looks blue to us because air scatters blue light the most.",
        "Sunsets are red.",
    ]
