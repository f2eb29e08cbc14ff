"""`ReplyOnPause`: wait for the caller to finish a turn, then reply with a generator function."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal, Self, TypeAlias

from agentkit._tasks import TaskSet, cancel_and_wait
from agentkit.audio import AudioFrame
from agentkit.providers.turn import EndOfTurnModel
from agentkit.providers.vad import VAD, SileroVAD
from agentkit.stream._events import ResponseStarting
from agentkit.stream._handlers import EmitType
from agentkit.stream._turn import TurnEnded, TurnTakingOptions
from agentkit.stream._turn_handler import TurnTakingHandler

__all__ = ["ReplyFn", "ReplyOnPause"]

logger = logging.getLogger(__name__)

ReplyFn: TypeAlias = Callable[..., Iterator[EmitType] | AsyncIterator[EmitType]]
"""`fn(audio: AudioFrame, *inputs)`: a sync or async generator of replies (audio, `(rate, samples)`
pairs or `AdditionalOutputs`). `inputs` are the values last given to `Stream.set_input`."""

_DONE = object()
_Call: TypeAlias = "tuple[Any, asyncio.Future[Any] | None] | Exception"
"""What calling the reply function gave: its result (and a sync generator's first item, asked for),
or what it raised."""
_CANCEL_TIMEOUT_S = 2.0


def _vad_at(vad: VAD, sample_rate: int | None) -> VAD:
    """`vad` running at `sample_rate` (None: its own rate)."""
    if sample_rate is None or sample_rate == vad.sample_rate:
        return vad
    if isinstance(vad, SileroVAD):
        return vad.at_rate(sample_rate)  # raises ValueError for a rate Silero does not take
    raise ValueError(
        f"this VAD runs at {vad.sample_rate} Hz; input_sample_rate={sample_rate} needs one that runs at it"
    )


class ReplyOnPause(TurnTakingHandler):
    """Turn-taking on a VAD around a reply generator.

    When the caller's turn ends, `fn` is called with the turn's audio (at `input_sample_rate`,
    pre-roll included) and whatever it yields is played back. With `can_interrupt`, speech onset
    during a reply stops the generator and flushes everything queued for the caller; without it,
    turns taken while a reply is still playing are ignored. Turns end on silence alone unless
    `semantic_turn` is given (e.g. `SmartTurn()`: a finished sentence then ends the turn after
    ~200 ms; an `Agent` has it on by default).

    `input_sample_rate`: the rate `fn` and the VAD get the caller's audio at; None: the VAD's own
    (16 kHz for Silero). `8000` suits a phone line: Twilio's 8 kHz audio then arrives as it is, with
    no resampling, and Silero runs at 8 kHz (turns end as soon as at 16 kHz, for less CPU per call:
    docs/benchmarks.md, "Phone calls scored at 8 kHz"); audio from other transports is resampled
    down to it. `"call"`: each call's own rate where it is below the VAD's and the VAD runs at it
    (`follow_call_rate`): 8 kHz on the phone, the VAD's own rate elsewhere; `fn` then gets audio at
    either rate (an `AudioFrame` says which). A `vad` that cannot run at a given rate is a
    `ValueError`.
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
        semantic_turn: EndOfTurnModel | None = None,
        input_sample_rate: int | Literal["call"] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError("ReplyOnPause needs a generator function")
        self.fn = fn
        self.options = options or TurnTakingOptions()
        self.turn_options = self.options
        self.can_interrupt = can_interrupt
        self.follow_call_rate = input_sample_rate == "call"
        rate = None if input_sample_rate == "call" else input_sample_rate
        self.vad: VAD = _vad_at(vad if vad is not None else SileroVAD(), rate)
        self.turn_vad = self.vad
        self.input_sample_rate = self.vad.sample_rate
        self.output_sample_rate = output_sample_rate
        self.max_queued_outputs = max_queued_outputs
        self.semantic_turn = semantic_turn
        self._tasks = TaskSet("reply-on-pause")
        self._reply: asyncio.Task[None] | None = None
        self._replies = 0

    def copy(self) -> Self:
        """A fresh handler for one more session, of this handler's own class: a subclass that only
        overrides methods (or whose `__init__` takes `ReplyOnPause`'s arguments) keeps its overrides
        in every session. One whose `__init__` takes other arguments overrides `copy` too; without
        it the session cannot start, with a `TypeError` that says so (FastRTC instead gave every
        session a plain `ReplyOnPause`, silently dropping the overrides)."""
        cls = type(self)
        try:
            return cls(
                self.fn,
                options=self.options,
                can_interrupt=self.can_interrupt,
                vad=self.vad,  # already at input_sample_rate
                output_sample_rate=self.output_sample_rate,
                max_queued_outputs=self.max_queued_outputs,
                semantic_turn=self.semantic_turn,
                input_sample_rate="call" if self.follow_call_rate else None,
            )
        except TypeError as exc:
            if cls is ReplyOnPause:
                raise
            raise TypeError(
                f"{cls.__name__}.copy(): its __init__ does not take ReplyOnPause's arguments ({exc}); "
                f"override copy() to make the handler each session gets"
            ) from exc

    async def shutdown(self) -> None:
        await self.stop_reply()
        await self._tasks.aclose(_CANCEL_TIMEOUT_S)

    @property
    def replying(self) -> bool:
        """A reply is being generated, or its audio is still queued or playing."""
        running = self._reply is not None and not self._reply.done()
        return running or self.context.responding

    async def on_turn_ended(self, event: TurnEnded) -> None:
        self._replies += 1
        call = self._call(event.audio)
        self._reply = self._tasks.spawn(self._run_reply(call), f"reply-{self._replies}")

    def _call(self, audio: AudioFrame) -> _Call:
        """Call the reply function. A sync generator's first item is asked for at once, on a worker
        thread, while the reply's task starts: under load each hand-over waits a loop turn, and this
        one then overlaps the thread's."""
        try:
            result = self.fn(audio, *self.context.latest_args)
        except Exception as exc:
            return exc
        if not inspect.isgenerator(result):
            return result, None
        first = asyncio.get_running_loop().run_in_executor(None, next, result, _DONE)
        first.add_done_callback(_retrieve)  # a reply cancelled before its task ran never awaits it
        return result, first

    async def stop_reply(self) -> None:
        task, self._reply = self._reply, None
        if task is not None and not await cancel_and_wait(task, _CANCEL_TIMEOUT_S):
            logger.warning(
                "a reply function did not stop within %.0f s of its cancellation", _CANCEL_TIMEOUT_S
            )

    async def _run_reply(self, call: _Call) -> None:
        await self.context.send_event(ResponseStarting())
        try:
            if isinstance(call, Exception):
                raise call
            result, first = call
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        if item is not None:
                            await self.put_output(item)
                finally:
                    await result.aclose()  # a cancelled reply closes its generator now, not at GC
            elif inspect.isgenerator(result):
                await self._drive_sync(result, first)
            else:
                raise TypeError("a ReplyOnPause function must be a generator or an async generator")
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reply function failed in session %s", self.context.session_id)
        await self.end_reply()

    async def _drive_sync(self, gen: Iterator[Any], first: asyncio.Future[Any] | None) -> None:
        """Pull a sync generator on a worker thread, one item at a time (the first already asked for)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                item = await (first or loop.run_in_executor(None, next, gen, _DONE))
                first = None
                if item is _DONE:
                    return
                if item is not None:
                    await self.put_output(item)
        finally:
            # a generator still running on its thread cannot be closed; it is dropped instead
            with contextlib.suppress(ValueError):
                getattr(gen, "close", lambda: None)()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (whoever awaits it still gets it)."""
    if not future.cancelled():
        future.exception()
