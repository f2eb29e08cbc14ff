"""`ReplyOnPause`: wait for the caller to finish a turn, then reply with a generator function."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeAlias

from agentkit._executor import run_audio_job
from agentkit.audio import AudioFrame
from agentkit.providers.vad import VAD, SileroVAD
from agentkit.stream._events import PauseDetected, ResponseStarting, StartedTalking
from agentkit.stream._handlers import AsyncStreamHandler, EmitType, ReplyEnd
from agentkit.stream._outbox import Outbox
from agentkit.stream._turn import TurnDetector, TurnEnded, TurnStarted, TurnTakingOptions

__all__ = ["ReplyFn", "ReplyOnPause"]

logger = logging.getLogger(__name__)

ReplyFn: TypeAlias = Callable[..., Iterator[EmitType] | AsyncIterator[EmitType]]
"""`fn(audio: AudioFrame, *inputs)`: a sync or async generator of replies (audio, `(rate, samples)`
pairs or `AdditionalOutputs`). `inputs` are the values last given to `Stream.set_input`."""

_DONE = object()
_CANCEL_TIMEOUT_S = 2.0


class ReplyOnPause(AsyncStreamHandler):
    """Turn-taking on a VAD around a reply generator.

    When the caller's turn ends, `fn` is called with the turn's audio (16 kHz, pre-roll included) and
    whatever it yields is played back. With `can_interrupt`, speech onset during a reply stops the
    generator and flushes everything queued for the caller; without it, turns taken while a reply
    is still playing are ignored.
    """

    def __init__(
        self,
        fn: ReplyFn,
        *,
        options: TurnTakingOptions | None = None,
        can_interrupt: bool = True,
        vad: VAD | None = None,
        output_sample_rate: int = 24000,
        max_queued_outputs: int = 16,
    ) -> None:
        if not callable(fn):
            raise TypeError("ReplyOnPause needs a generator function")
        self.fn = fn
        self.options = options or TurnTakingOptions()
        self.can_interrupt = can_interrupt
        self.vad: VAD = vad if vad is not None else SileroVAD()
        self.input_sample_rate = self.vad.sample_rate
        self.output_sample_rate = output_sample_rate
        self._max_queued = max_queued_outputs
        self._outputs: Outbox[Any] = Outbox(max_queued_outputs)
        self._detector: TurnDetector | None = None
        self._reply: asyncio.Task[None] | None = None
        self._replies = 0

    def copy(self) -> ReplyOnPause:
        return ReplyOnPause(
            self.fn,
            options=self.options,
            can_interrupt=self.can_interrupt,
            vad=self.vad,
            output_sample_rate=self.output_sample_rate,
            max_queued_outputs=self._max_queued,
        )

    async def start_up(self) -> None:
        stream = await asyncio.to_thread(self.vad.stream)  # loads the shared model on first use
        self._detector = TurnDetector(
            stream,
            sample_rate=self.vad.sample_rate,
            chunk_samples=self.vad.chunk_samples,
            options=self.options,
        )

    async def shutdown(self) -> None:
        await self._cancel_reply()

    @property
    def replying(self) -> bool:
        """A reply is being generated, or its audio is still queued or playing."""
        running = self._reply is not None and not self._reply.done()
        return running or self.context.responding

    async def receive(self, frame: AudioFrame) -> None:
        if self._detector is None:
            raise RuntimeError("ReplyOnPause.receive before start_up")
        for event in await run_audio_job(self._detector.process, frame.samples):
            rate = self.vad.sample_rate
            if isinstance(event, TurnStarted):
                await self.context.send_event(StartedTalking(t_ms=event.onset_samples * 1000 // rate))
                if self.can_interrupt and self.replying:
                    await self.interrupt()
            elif isinstance(event, TurnEnded):
                if self.replying:
                    logger.debug("turn ignored: a reply is still playing and can_interrupt is off")
                    continue
                await self.context.send_event(
                    PauseDetected(
                        t_ms=event.decided_samples * 1000 // rate,
                        speech_end_ms=event.speech_end_samples * 1000 // rate,
                    )
                )
                self._start_reply(event.audio)

    async def emit(self) -> EmitType:
        item = await self._outputs.get()
        if item is _DONE:
            return ReplyEnd()
        return item  # type: ignore[no-any-return]

    async def interrupt(self) -> None:
        """Stop the reply in progress and flush every queue between it and the caller's ear."""
        await self._cancel_reply()
        self._outputs.flush()
        await self.context.interrupt()

    def _start_reply(self, audio: AudioFrame) -> None:
        self._replies += 1
        self._reply = asyncio.create_task(self._run_reply(audio), name=f"reply-{self._replies}")

    async def _cancel_reply(self) -> None:
        task, self._reply = self._reply, None
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, _CANCEL_TIMEOUT_S)

    async def _run_reply(self, audio: AudioFrame) -> None:
        await self.context.send_event(ResponseStarting())
        try:
            result = self.fn(audio, *self.context.latest_args)
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        if item is not None:
                            await self._outputs.put(item)
                finally:
                    await result.aclose()  # a cancelled reply closes its generator now, not at GC
            elif inspect.isgenerator(result):
                await self._drive_sync(result)
            else:
                raise TypeError("a ReplyOnPause function must be a generator or an async generator")
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reply function failed in session %s", self.context.session_id)
        await self._outputs.put(_DONE)

    async def _drive_sync(self, gen: Iterator[Any]) -> None:
        """Pull a sync generator on a worker thread, one item at a time."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await loop.run_in_executor(None, next, gen, _DONE)
                if item is _DONE:
                    return
                if item is not None:
                    await self._outputs.put(item)
        finally:
            # a generator still running on its thread cannot be closed; it is dropped instead
            with contextlib.suppress(ValueError):
                getattr(gen, "close", lambda: None)()
