"""`TurnTakingHandler`: the one turn-taking base, shared by `ReplyOnPause` and `Agent`.

It owns what both need and what must not be written twice:

- the `TurnDetector` over the handler's VAD (created in `start_up`, fed off the event loop);
- the turn events on the wire (`started_talking`, `pause_detected`);
- the barge-in rule: speech onset while `replying` interrupts when `can_interrupt` is on, and a
  turn that ends while a reply is still playing is ignored when it is off;
- the outbox of reply outputs and its end-of-reply sentinel, so `emit()` is written once and a
  barge-in flushes with the same `Outbox` epoch mechanism the session uses;
- the opt-in semantic end of turn (`semantic_turn`): after each frame, a pause that reached its
  next check awaits the model (`SemanticEndOfTurn`), whose yes ends the turn as a `TurnEnded`.

Subclasses say what a reply is:

```
receive(frame) ─► TurnDetector ─► TurnStarted ──► on_turn_started(event, barge_in)  [then interrupt()]
                                  TurnEnded ────► on_turn_ended(event)   (unless a reply is playing)
                                  TurnDiscarded ► on_turn_discarded(event)
producers ─► put_output(item) / end_reply() ─► Outbox ─► emit() ─► the session
interrupt(): stop_reply() ─► flush the outbox ─► context.interrupt() (the session flushes its own)
```

New decision logic (semantic end of turn, stop words, false-interruption handling) plugs in here,
once, for every handler kind.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any

from agentkit._executor import run_audio_job
from agentkit.audio import AudioFrame
from agentkit.exceptions import ConfigError
from agentkit.providers.turn import EndOfTurnModel
from agentkit.providers.vad import VAD
from agentkit.stream._events import PauseDetected, StartedTalking
from agentkit.stream._handlers import AsyncStreamHandler, EmitType, ReplyEnd
from agentkit.stream._outbox import Outbox
from agentkit.stream._semantic_turn import SemanticEndOfTurn
from agentkit.stream._turn import (
    TurnDetector,
    TurnDiscarded,
    TurnEnded,
    TurnEvent,
    TurnStarted,
    TurnTakingOptions,
)

__all__ = ["TurnTakingHandler"]

logger = logging.getLogger(__name__)

_REPLY_END = object()


class TurnTakingHandler(AsyncStreamHandler):
    """An `AsyncStreamHandler` that takes turns on a VAD and replies through a flushable outbox.

    Subclasses set `turn_vad`, `turn_options` and `can_interrupt` (in `__init__` or as class
    attributes) and implement the `on_turn_*` hooks, `replying` and `stop_reply`.
    """

    turn_vad: VAD
    """The VAD the detector runs on (its `sample_rate` is the handler's input rate)."""
    turn_options: TurnTakingOptions = TurnTakingOptions()
    can_interrupt: bool = True
    """Speech over a reply stops it (barge-in); otherwise turns taken during a reply are ignored."""
    max_queued_outputs: int = 32
    """Room in the outbox; a producer that gets ahead of playback waits (is paced) beyond it."""
    semantic_turn: EndOfTurnModel | None = None
    """An end-of-turn model (e.g. `SmartTurn()`) asked in pauses whether the caller has finished (the
    `semantic_*` settings of `turn_options`); None: turns end on `end_of_turn_silence_ms` alone. A
    model that cannot be loaded is logged once and turn-taking falls back to silence alone."""

    _detector: TurnDetector | None = None
    _semantic: SemanticEndOfTurn | None = None
    _outbox: Outbox[Any] | None = None

    # -- what a subclass provides ---------------------------------------------------------------
    @property
    @abc.abstractmethod
    def replying(self) -> bool:
        """A reply is being made, or its audio is still queued or playing."""

    @abc.abstractmethod
    async def stop_reply(self) -> None:
        """Stop making the reply in progress (cancel its task and wait for it), if there is one."""

    async def on_turn_started(self, event: TurnStarted, *, barge_in: bool) -> None:
        """The caller started talking; `barge_in`: over a reply, which `interrupt()` stops next."""
        del event, barge_in

    @abc.abstractmethod
    async def on_turn_ended(self, event: TurnEnded) -> None:
        """The caller's turn ended (and no reply is playing): reply to `event.audio`."""

    async def on_turn_discarded(self, event: TurnDiscarded) -> None:
        """A burst too short to be a turn (a cough, a click) ended."""
        del event

    async def after_audio(self, detector: TurnDetector) -> None:
        """Called after each input frame's turn events (e.g. for partial transcripts)."""
        del detector

    # -- the shared machinery -------------------------------------------------------------------
    @property
    def detector(self) -> TurnDetector:
        if self._detector is None:
            raise RuntimeError(f"{type(self).__name__}: turn-taking has not started (start_up)")
        return self._detector

    @property
    def outbox(self) -> Outbox[Any]:
        if self._outbox is None:
            self._outbox = Outbox(self.max_queued_outputs)
        return self._outbox

    def reset_turn_taking(self) -> None:
        """Forget the detector and the outbox (for `copy()`: each session gets its own)."""
        self._detector = None
        self._semantic = None
        self._outbox = None

    @property
    def semantic(self) -> SemanticEndOfTurn | None:
        """This session's end-of-turn checks; None when `semantic_turn` is off or unavailable."""
        return self._semantic

    async def start_up(self) -> None:
        vad = self.turn_vad
        stream = await asyncio.to_thread(vad.stream)  # loads the shared model on first use
        options = self.turn_options
        model = self.semantic_turn
        self._semantic = None
        if model is not None and await asyncio.to_thread(model.load):
            if model.sample_rate != vad.sample_rate:
                raise ConfigError(
                    f"semantic_turn takes {model.sample_rate} Hz audio, "
                    f"but the VAD runs at {vad.sample_rate} Hz"
                )
            self._semantic = SemanticEndOfTurn(model, options, sample_rate=vad.sample_rate)
            options = SemanticEndOfTurn.detector_options(options)
        self._detector = TurnDetector(
            stream, sample_rate=vad.sample_rate, chunk_samples=vad.chunk_samples, options=options
        )

    async def receive(self, frame: AudioFrame) -> None:
        detector = self.detector
        for event in await run_audio_job(detector.process, frame.samples):
            await self._on_turn_event(event)
        semantic = self._semantic
        if semantic is not None and semantic.due(detector):
            ended = await semantic.check(detector)
            if ended is not None:
                await self._on_turn_event(ended)
        await self.after_audio(detector)

    async def _on_turn_event(self, event: TurnEvent) -> None:
        rate = self.turn_vad.sample_rate
        if isinstance(event, TurnStarted):
            await self.context.send_event(StartedTalking(t_ms=event.onset_samples * 1000 // rate))
            barge_in = self.can_interrupt and self.replying
            await self.on_turn_started(event, barge_in=barge_in)
            if barge_in:
                await self.interrupt()
        elif isinstance(event, TurnEnded):
            if self.replying:
                logger.debug("turn ignored: a reply is still playing and can_interrupt is off")
                return
            await self.context.send_event(
                PauseDetected(
                    t_ms=event.decided_samples * 1000 // rate,
                    speech_end_ms=event.speech_end_samples * 1000 // rate,
                )
            )
            await self.on_turn_ended(event)
        elif isinstance(event, TurnDiscarded):
            await self.on_turn_discarded(event)

    async def put_output(self, item: Any) -> None:
        """Queue one output of the reply in progress (audio, `AdditionalOutputs`); waits for room."""
        await self.outbox.put(item)

    async def end_reply(self) -> None:
        """Mark the end of the reply in progress (the session answers with `response_done`)."""
        await self.outbox.put(_REPLY_END)

    async def emit(self) -> EmitType:
        item = await self.outbox.get()
        return ReplyEnd() if item is _REPLY_END else item

    async def interrupt(self) -> int:
        """Barge-in: stop the reply, flush every queue between it and the caller's ear.

        Returns how much of the reply the caller had heard, in milliseconds of reply audio.
        """
        await self.stop_reply()
        self.outbox.flush()
        return await self.context.interrupt()
