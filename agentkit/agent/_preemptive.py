"""Preemptive generation: start on the reply in the caller's pause, before the turn is known to be over.

```
 a pause reaches preemptive_after_ms ─► Speculation: stt_node(the turn's audio so far)
        (idle session: no reply playing)    ─► once the pause has had its first end-of-turn
                                               check (at once without a model): llm_node(history
                                               + that transcript), read up to the first piece, held
 the turn ends in that same pause ───► adopted by the turn's reply: its transcript, then (if the
        (same audio, same end of speech)   reply's first LLM call gets the same history) its LLM
                                           stream, started now if it was still waiting, read on
 the caller speaks again, the turn is ─► dropped: its task cancelled, the LLM stream closed
 discarded, a reply starts, a new pause     (a later pause of the turn may speculate again)
```

Why: the local agent's turn used to be strictly sequential on two cores: end of turn (Smart Turn
asked at 200 ms of silence, ~60-70 ms of one core), then STT (~50-60 ms), then the LLM's first
words, then the TTS. Begun at 120 ms of silence, the transcription is done by the time the check
is made. The LLM call waits for that check: llama.cpp evaluates the prompt on both cores, and
both at once made the check (which holds up the input, so the end of turn) about as much slower
as the LLM gained (docs/benchmarks.md). A pause the check says no to gets its LLM call started
then, so a turn that ends later (unsure, or at the silence ceiling) has its first words ready;
without an end-of-turn model the LLM call starts with the transcript.

What a speculation never does: speak, run a tool (a tool call is held with the text, and runs once
the adopting reply reads it, through the normal path), touch the history or the store, or emit
the caller's turn events. Its transcript is the raw `stt_node` text: `on_transcript` runs once, on
adoption, and when it changes the text the LLM stream is not adopted (the history would differ).

The LLM stream stays with the speculation's task from its first item to its close, also after
adoption (the reply reads through `Speculation.take_llm`'s stream, item by item, on demand), so a
provider stream is never driven from two tasks, and a local LLM whose stream holds back when it is
not read (llama.cpp) runs no further ahead than it would in `speak`: up to the first piece before
adoption, then as the reply's writer asks. Whatever ends the speculation (dropped, the adopting
reply done or cancelled, the session closed) cancels that task, and its `closing()` closes the
stream, which stops llama.cpp.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from agentkit._aio import closing
from agentkit._executor import run_audio_job
from agentkit._tasks import TaskSet, cancel_and_wait
from agentkit.agent._pipeline import _FIRST_CLAUSE_CHARS
from agentkit.agent._reply import ms_between
from agentkit.agent._sentences import SentenceSplitter
from agentkit.audio import AudioFrame
from agentkit.clock import Clock
from agentkit.providers._fallback import recording_answers
from agentkit.providers.llm import ChatMessage, LLMChunk
from agentkit.stream._turn import TurnDetector, TurnEnded, TurnState

if TYPE_CHECKING:
    from agentkit.agent._reply import Reply

__all__ = ["Preemption", "Speculation"]

logger = logging.getLogger(__name__)

_STOP_TIMEOUT_S = 2.0

LLMStream = AsyncIterator[str | LLMChunk]


class SpeculationStopped(RuntimeError):
    """An adopted speculation's task was cancelled before its LLM stream ended (the session closed)."""


class Speculation:
    """One pause's transcript and LLM reply, made before the turn is known to be over.

    `run()` is its task's body (the session's `TaskSet` owns the task): transcribe `audio`; once
    `release()`d, start the LLM on `history` plus the transcript, read until the reply's first
    piece is complete (as `speak` would cut it) and hold. `adopt()`, `transcript()` and
    `take_llm()` are for the reply that takes it over.
    """

    def __init__(
        self,
        audio: AudioFrame,
        speech_end_samples: int,
        *,
        owner: object,
        history: Sequence[ChatMessage],
        transcribe: Callable[[AudioFrame], Awaitable[str]],
        start_llm: Callable[[list[ChatMessage]], LLMStream],
        clock: Clock,
        first_piece_words: int | None,
    ) -> None:
        self.audio = audio
        """The turn as it will be if it ends in this pause (`TurnDetector.pause_audio`)."""
        self.speech_end_samples = speech_end_samples
        """The pause's start: the acoustic end of speech, on the media clock."""
        self.owner = owner
        """The agent whose stages it ran (after a handoff its LLM stream is not adopted)."""
        self._history = list(history)
        self._transcribe = transcribe
        self._start_llm = start_llm
        self._clock = clock
        self._first_piece_words = first_piece_words
        self.providers: dict[str, str] = {}
        """Which providers answered its STT and LLM calls (see `recording_answers`)."""
        self.stt_ms: float | None = None
        self.llm_history: list[ChatMessage] | None = None
        """What its LLM call was given (None until it starts)."""
        self.llm_started_at: float | None = None
        self.llm_first_text_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._text: asyncio.Future[str] = loop.create_future()
        self._llm_begun: asyncio.Future[None] = loop.create_future()  # or cancelled: it never will
        self._go = asyncio.Event()  # the LLM call may start (see `release`)
        self._items: list[str | LLMChunk] = []
        self._complete = False  # the LLM stream ended
        self._error: Exception | None = None  # ...or failed (raised where the stream would have)
        self._over = False  # the task is done: no more items will come
        self._wanted = 0  # items the adopting reply has asked for
        self._wake = asyncio.Event()  # for the task: more items are wanted
        self._changed = asyncio.Event()  # for the reply: an item came, or the task is over
        self._streamed = False

    def matches(self, event: TurnEnded) -> bool:
        """The turn ended in this speculation's pause: the same audio, no speech since."""
        audio = event.audio
        return (
            not event.cut
            and event.speech_end_samples == self.speech_end_samples
            and audio.timestamp_samples == self.audio.timestamp_samples
            and audio.num_samples == self.audio.num_samples
        )

    @property
    def llm_ttft_ms(self) -> float | None:
        """Its LLM call's own time to first text (None until the text comes)."""
        return ms_between(self.llm_started_at, self.llm_first_text_at)

    async def run(self) -> None:
        try:
            with recording_answers(self.providers):
                started = self._clock.now()
                try:
                    text = await self._transcribe(self.audio)
                except Exception as exc:  # the adopting reply transcribes the turn itself
                    logger.debug("preemptive transcript failed (%s)", type(exc).__name__)
                    return
                self.stt_ms = round((self._clock.now() - started) * 1000, 1)
                self._text.set_result(text)
                if not text.strip():
                    return
                await self._go.wait()
                self.llm_history = [*self._history, ChatMessage("user", text)]
                self.llm_started_at = self._clock.now()
                self._llm_begun.set_result(None)
                async with closing(self._start_llm(self.llm_history)) as stream:
                    await self._read(stream)
        finally:
            for future in (self._text, self._llm_begun):
                if not future.done():
                    future.cancel()
            self._over = True
            self._changed.set()

    async def _read(self, stream: LLMStream) -> None:
        """Read the LLM's items: up to the first piece on its own, then as many as are wanted."""
        splitter = SentenceSplitter(
            first_clause_chars=_FIRST_CLAUSE_CHARS, first_piece_words=self._first_piece_words
        )
        holding = False
        while True:
            while holding and self._wanted <= len(self._items):
                self._wake.clear()
                await self._wake.wait()
            try:
                item = await anext(stream)
            except StopAsyncIteration:
                self._complete = True
                return
            except Exception as exc:
                self._error = exc
                return
            self._items.append(item)
            self._changed.set()
            text = item.text if isinstance(item, LLMChunk) else str(item)
            if text and self.llm_first_text_at is None:
                self.llm_first_text_at = self._clock.now()
            holding = holding or bool(text and splitter.push(text))

    def release(self) -> None:
        """Let the LLM call start once the transcript is in (until then it waits: see `Preemption`)."""
        self._go.set()

    # -- for the reply that adopts it -----------------------------------------------------------
    def adopt(self, reply: Reply) -> None:
        """`reply` answers the turn this speculation was for: it ends when the reply's task does."""
        reply.speculation = self
        self.release()
        task = reply.task
        if task is not None:
            task.add_done_callback(lambda _: self.cancel())

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def stop(self) -> None:
        """Cancel the task and wait for it (and so for its LLM stream to close)."""
        if self.task is not None and not await cancel_and_wait(self.task, _STOP_TIMEOUT_S):
            logger.warning("a preemptive reply did not stop within %.0f s", _STOP_TIMEOUT_S)

    async def transcript(self, reply: Reply) -> str | None:
        """Its transcript, once made (`reply.stt_ms` is then its STT time); None if it failed."""
        await asyncio.wait([self._text])
        if self._text.cancelled():
            return None
        reply.stt_ms = self.stt_ms
        reply.timings.providers.update(self.providers)
        return self._text.result()

    async def take_llm(self, history: Sequence[ChatMessage], owner: object, reply: Reply) -> LLMStream | None:
        """Its LLM stream for the reply's first LLM call on `history` by `owner`'s stages, when it
        was started (or, released by `adopt`, is starting) on exactly that; otherwise None, and the
        speculation is stopped."""
        await asyncio.wait([self._llm_begun])
        same = self.llm_history == list(history) and owner is self.owner
        if self._streamed or not same:
            await self.stop()
            return None
        self._streamed = True
        reply.preemptive = True
        return self._stream(reply)

    async def _stream(self, reply: Reply) -> AsyncGenerator[str | LLMChunk, None]:
        index = 0
        try:
            while True:
                if index < len(self._items):
                    item = self._items[index]
                    index += 1
                    if reply.llm_ttft_ms is None and self.llm_first_text_at is not None:
                        reply.llm_ttft_ms = self.llm_ttft_ms
                    yield item
                    continue
                if self._over:
                    if self._error is not None:
                        raise self._error
                    if not self._complete:
                        raise SpeculationStopped("the preemptive LLM call was stopped")
                    return
                self._wanted = index + 1
                self._wake.set()
                self._changed.clear()
                await self._changed.wait()
        finally:
            reply.timings.providers.update(self.providers)
            await self.stop()


class Preemption:
    """One session's preemptive generation: at most one `Speculation` at a time."""

    def __init__(self, tasks: TaskSet, *, sample_rate: int) -> None:
        self._tasks = tasks
        self._rate = sample_rate
        self._current: Speculation | None = None
        self.started = 0
        """Speculations begun in this session."""
        self.adopted = 0
        """...taken up by the turn's reply (the rest was work thrown away)."""

    @property
    def speculating(self) -> bool:
        """A speculation is under way (`after_audio` may have it to drop)."""
        return self._current is not None

    async def after_audio(
        self,
        detector: TurnDetector,
        *,
        after_ms: int | None,
        llm_after_ms: int,
        begin: Callable[[AudioFrame, int], Speculation],
    ) -> None:
        """After each input frame: drop the speculation once its pause is over (speech again, a
        new pause, the turn gone), or when `after_ms` is None (off, or not now: a reply is being
        made); start one, with `begin(audio, speech_end_samples)`, in a pause of `after_ms`, and
        let its LLM call start in a pause of `llm_after_ms`."""
        if after_ms is None and self._current is None:  # off, or not now, and nothing to drop
            return
        pause = detector.speech_end_samples if detector.state is TurnState.PAUSED else None
        current = self._current
        if current is not None and (after_ms is None or pause != current.speech_end_samples):
            self.drop()
        silence_ms = detector.silence_samples * 1000 // self._rate
        if self._current is not None and silence_ms >= llm_after_ms:
            self._current.release()
        if self._current is not None or pause is None or after_ms is None or silence_ms < after_ms:
            return
        audio = await run_audio_job(detector.pause_audio)
        if audio is None:
            return
        speculation = begin(audio, pause)
        if silence_ms >= llm_after_ms:
            speculation.release()
        speculation.task = self._tasks.spawn(speculation.run(), "preempt")
        self._current = speculation
        self.started += 1

    def take(self, event: TurnEnded, *, usable: bool = True) -> Speculation | None:
        """The speculation for the turn `event` ended, if it was made on the same audio (it is
        then the caller's to adopt); any other is dropped, and so is this one unless `usable`
        (the reply's audio is more than the turn's: a turn cut off before it was transcribed)."""
        current, self._current = self._current, None
        if current is not None and usable and current.matches(event):
            self.adopted += 1
            return current
        if current is not None:
            self._stop(current)
        return None

    def drop(self) -> None:
        """Drop the speculation in progress, if any: cancelled in the background (the input path
        does not wait for an LLM to stop)."""
        current, self._current = self._current, None
        if current is not None:
            self._stop(current)

    def _stop(self, speculation: Speculation) -> None:
        logger.debug("preemptive reply dropped")
        if self._tasks.closed:
            speculation.cancel()
        else:
            self._tasks.spawn(speculation.stop(), "preempt-stop")
