"""One reply's way from LLM text to audio: sentence by sentence, synthesis pipelined with playback.

`speak()` runs two owned tasks: the *writer* reads the text stream and cuts it into sentences, the
*speaker* synthesises each sentence and hands its frames on. The queue between them is small, so
the LLM runs only a few sentences ahead; the frames go to the session's paced output queue, so
sentence n+1 is synthesised while sentence n plays.

First audio comes first: the first piece of a reply may be shorter than a sentence (a clause, or
`first_piece_words` words), and once it is written the writer reads no more text until that piece
has its first audio (or has been synthesised to nothing). A local LLM, whose stream pauses when
it is not read, then leaves the CPU to the TTS for the piece the caller is waiting for; the rest
of the reply is written while the first piece plays. `SpokenReply` keeps where each sentence sits in
the reply audio, which is how an interrupted reply is cut down to the words the caller heard.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from agentkit._aio import closing, next_within
from agentkit.agent._sentences import SentenceSplitter
from agentkit.agent._tracing import ReplyTrace, provider_call
from agentkit.audio import AudioFrame
from agentkit.clock import Clock
from agentkit.exceptions import ProviderError
from agentkit.providers.llm import LLMChunk, LLMUsage

__all__ = ["ReplyTimings", "SpokenReply", "StageTimeouts", "speak"]

logger = logging.getLogger(__name__)

_SENTENCES_AHEAD = 4
_FIRST_CLAUSE_CHARS = 24  # the first piece of a reply may end at a comma past this: earlier first audio
FIRST_PIECE_WORDS = 4
"""Default for `speak(first_piece_words=...)` and `Agent.first_piece_words`."""


@dataclass(frozen=True, slots=True)
class StageTimeouts:
    """How long each provider may take before the turn counts as failed (and the agent apologises)."""

    stt_s: float = 10.0
    """Whole transcription of one turn."""
    llm_first_token_s: float = 10.0
    """From the LLM call to its first text."""
    llm_stall_s: float = 10.0
    """Between two pieces of LLM text."""
    tts_first_audio_s: float = 10.0
    """From a sentence to its first audio."""
    tts_stall_s: float = 10.0
    """Between two frames of one sentence's audio."""


@dataclass(slots=True)
class ReplyTimings:
    """Clock times of one reply's milestones (session clock seconds; None until they happen)."""

    llm_started_at: float | None = None
    llm_first_text_at: float | None = None
    tts_started_at: float | None = None
    """When the first sentence went to the TTS."""
    tts_first_audio_at: float | None = None
    usage: LLMUsage | None = None
    providers: dict[str, str] = field(default_factory=dict)
    """Stage (`stt`, `llm`, `tts`) → name of the provider that answered it (with a fallback, the one
    that did; see `agentkit.providers._fallback.recording_answers`)."""


@dataclass(slots=True)
class _Segment:
    text: str
    start_ms: float
    end_ms: float


@dataclass(slots=True)
class SpokenReply:
    """The sentences of one reply with their span in its audio, in order."""

    segments: list[_Segment] = field(default_factory=list)
    audio_ms: float = 0.0
    """Reply audio produced so far."""

    def begin(self, text: str) -> None:
        """A new sentence starts at the current end of the audio."""
        self.segments.append(_Segment(text, self.audio_ms, self.audio_ms))

    def add_audio(self, duration_ms: float) -> None:
        self.audio_ms += duration_ms
        if self.segments:
            self.segments[-1].end_ms = self.audio_ms

    @property
    def text(self) -> str:
        """Everything said (or being said)."""
        return " ".join(s.text for s in self.segments)

    def heard_text(self, heard_ms: float) -> str:
        """The words heard in the first `heard_ms` of the reply audio.

        Whole sentences up to that point, then the share of the words of the sentence being played
        that fits in its played share (words are taken as evenly spread over their sentence's audio;
        a word counts only once all of it may have been heard).
        """
        return " ".join(t for t in self.heard_sentences(heard_ms) if t)

    def heard_sentences(self, heard_ms: float | None) -> list[str]:
        """Per sentence, the words of it heard in the first `heard_ms` (None: all of them); a
        sentence not reached is `""`."""
        heard: list[str] = []
        for segment in self.segments:
            if heard_ms is None or heard_ms >= segment.end_ms:
                heard.append(segment.text)
                continue
            span = segment.end_ms - segment.start_ms
            if span > 0 and heard_ms > segment.start_ms:
                sentence = segment.text.split()
                share = (heard_ms - segment.start_ms) / span
                heard.append(" ".join(sentence[: math.floor(share * len(sentence) + 1e-9)]))
            else:
                heard.append("")
        return heard


async def speak(
    text: AsyncIterator[str | LLMChunk],
    synthesize: Callable[[str], AsyncIterator[AudioFrame]],
    out: Callable[[AudioFrame], Awaitable[None]],
    *,
    reply: SpokenReply,
    timings: ReplyTimings,
    clock: Clock,
    timeouts: StageTimeouts,
    max_sentence_chars: int = 160,
    first_piece_words: int | None = FIRST_PIECE_WORDS,
    on_sentence: Callable[[str], Awaitable[None]] | None = None,
    trace: ReplyTrace | None = None,
    text_from_llm: bool = False,
) -> None:
    """Speak a streamed text through `synthesize` (the agent's `tts_node`), passing each frame to
    `out` as it comes.

    Sentences already written are still spoken when the text stream fails; the failure is raised
    after them (as `ProviderError`), so the caller can add an apology. Cancelling `speak` closes the
    text stream and any synthesis in progress at once. `on_sentence(text_so_far)` is awaited as each
    sentence goes to the TTS (for partial transcripts). The first piece ends after
    `first_piece_words` words at most (None: at its sentence's end or first clause).

    With a `trace` (the reply's spans), each sentence's synthesis is an `agentkit.tts` span, and
    reading `text` an `agentkit.llm` one when it is an LLM's (`text_from_llm`).
    """
    sentences: asyncio.Queue[str | None] = asyncio.Queue(maxsize=_SENTENCES_AHEAD)
    failure: list[BaseException] = []
    first_heard = asyncio.Event()  # the first piece has its first audio, or was synthesised to none

    async def write() -> None:
        splitter = SentenceSplitter(
            max_chars=max_sentence_chars,
            first_clause_chars=_FIRST_CLAUSE_CHARS,
            first_piece_words=first_piece_words,
        )
        timings.llm_started_at = clock.now()
        written = False
        llm_trace = trace if text_from_llm else None
        try:
            async with provider_call(llm_trace, "llm") as call, closing(text) as stream:
                timeout_s, what = timeouts.llm_first_token_s, "llm first token"
                while True:
                    try:
                        item = await next_within(stream, timeout_s, what, stage=what)
                    except StopAsyncIteration:
                        break
                    delta = item.text if isinstance(item, LLMChunk) else str(item)
                    if isinstance(item, LLMChunk) and item.usage is not None:
                        timings.usage = item.usage
                        call.usage(item.usage)
                    if delta:
                        call.first_output()
                    if delta and timings.llm_first_text_at is None:
                        timings.llm_first_text_at = clock.now()
                        timeout_s, what = timeouts.llm_stall_s, "llm next token"
                    for sentence in splitter.push(delta):
                        await sentences.put(sentence)
                        written = True
                    if written and not first_heard.is_set():
                        await first_heard.wait()  # the text stream is not read meanwhile
            for sentence in splitter.flush():
                await sentences.put(sentence)
        except ProviderError as exc:
            failure.append(exc)  # what is already queued is still spoken
        # the speaker's stop sign; not in a `finally`: when cancelled, the queue may be full with
        # nobody left to read it, and waiting for room there would stall the barge-in
        await sentences.put(None)

    async def say() -> None:
        while (sentence := await sentences.get()) is not None:
            reply.begin(sentence)
            if on_sentence is not None:
                await on_sentence(reply.text)
            if timings.tts_started_at is None:
                timings.tts_started_at = clock.now()
            await _synthesise(
                sentence,
                synthesize,
                out,
                reply=reply,
                timings=timings,
                clock=clock,
                timeouts=timeouts,
                first_heard=first_heard,
                trace=trace,
            )
            first_heard.set()

    async with asyncio.TaskGroup() as group:
        writer = group.create_task(write(), name="reply-writer")
        speaker = group.create_task(say(), name="reply-speaker")
        # if the speaker fails, the writer is cancelled by the group; nothing more to do here
        del writer, speaker
    if failure:
        raise failure[0]


async def _synthesise(
    sentence: str,
    synthesize: Callable[[str], AsyncIterator[AudioFrame]],
    out: Callable[[AudioFrame], Awaitable[None]],
    *,
    reply: SpokenReply,
    timings: ReplyTimings,
    clock: Clock,
    timeouts: StageTimeouts,
    first_heard: asyncio.Event,
    trace: ReplyTrace | None,
) -> None:
    async with provider_call(trace, "tts") as call, closing(synthesize(sentence)) as frames:
        timeout_s, what = timeouts.tts_first_audio_s, "tts first audio"
        while True:
            try:
                frame = await next_within(frames, timeout_s, what, stage=what)
            except StopAsyncIteration:
                return
            assert isinstance(frame, AudioFrame)
            if frame.num_samples == 0:
                continue
            call.first_output()
            if timings.tts_first_audio_at is None:
                timings.tts_first_audio_at = clock.now()
            first_heard.set()  # not only with the timings: an apology reuses a failed reply's
            timeout_s, what = timeouts.tts_stall_s, "tts next audio"
            reply.add_audio(frame.duration_s * 1000)
            await out(frame)
