"""One session's conversation with an agent: its history, its turns and the reply in progress.

A turn: the caller's audio → STT → `on_transcript` → history → `speak()` (LLM → sentences → TTS)
→ the session's paced output → played. The reply is recorded once the caller has heard all of it
(`PlayoutFinished`), or, when the caller speaks over it, with only the words heard by then (the
session's playout clock says how many milliseconds; `SpokenReply` turns that into words).

Store writes go through one writer task per conversation, in order, so a slow store never holds up
a reply and a closing session still writes what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentkit._executor import run_audio_job
from agentkit.agent import _events as ev
from agentkit.agent._pipeline import ReplyTimings, SpokenReply, speak
from agentkit.audio import AudioFrame, StreamingResampler
from agentkit.exceptions import ProviderError, ProviderTimeoutError
from agentkit.providers.llm import ChatMessage
from agentkit.store import TurnMetrics
from agentkit.stream._events import (
    ErrorEvent,
    PauseDetected,
    ResponseStarting,
    TranscriptEvent,
    TurnMetricsEvent,
)
from agentkit.stream._handlers import (
    EmitType,
    HandlerContext,
    PlayoutEvent,
    PlayoutFinished,
    PlayoutStarted,
    ReplyEnd,
)
from agentkit.stream._outbox import Outbox
from agentkit.stream._turn import TurnDetector, TurnEnded, TurnStarted

if TYPE_CHECKING:
    from agentkit.agent._agent import Agent

__all__ = ["AgentSession"]

logger = logging.getLogger(__name__)

_REPLY_END = object()
_CANCEL_TIMEOUT_S = 2.0
_CLOSE_WRITES_TIMEOUT_S = 5.0
_MAX_QUEUED_FRAMES = 32


@dataclass(eq=False)
class _Reply:
    """One reply in progress (a turn's, or the greeting's with index -1)."""

    index: int
    audio: AudioFrame | None = None
    speech_end_at: float | None = None
    decided_at: float | None = None
    stt_ms: float | None = None
    user_text: str | None = None
    spoken: SpokenReply = field(default_factory=SpokenReply)
    timings: ReplyTimings = field(default_factory=ReplyTimings)
    playout_started_at: float | None = None
    played: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False
    task: asyncio.Task[None] | None = None


async def _once(text: str) -> AsyncIterator[str]:
    yield text


class AgentSession:
    """Per-session state of an `Agent` (created in `start_up`)."""

    def __init__(self, agent: Agent, context: HandlerContext) -> None:
        self.agent = agent
        self.context = context
        self.id: str | None = None
        """The stored conversation's id (None without a store)."""
        self.history: list[ChatMessage] = []
        """What the LLM sees: earlier conversations of a returning caller, then this one."""
        self.turns = 0
        """Caller turns that got a reply."""
        self._outputs: Outbox[Any] = Outbox(_MAX_QUEUED_FRAMES)
        self._reply: _Reply | None = None
        self._carry: AudioFrame | None = None  # a turn cut off before it was transcribed
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes: asyncio.Queue[Callable[[], Awaitable[object]] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._user_turn = 0  # bumped at every speech onset: partial transcripts of older turns are stale
        self._user_speaking = False
        self._partial: asyncio.Task[None] | None = None
        self._partial_at = 0  # media position of the last partial transcript's audio

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        store, ctx = self.agent.store, self.context
        earlier = 0
        if store is not None:
            try:
                if ctx.caller is not None:
                    past = await store.caller_history(self.agent.agent_name, ctx.caller)
                    self.history = [ChatMessage(m.role, m.text, m.interrupted) for m in past]
                    earlier = len(self.history)
                record = await store.start_conversation(self.agent.agent_name, ctx.channel, ctx.caller)
                self.id = record.id
            except Exception:
                logger.exception("%s: conversation store unavailable; going on without it", self._label)
            else:
                self._writer = asyncio.create_task(self._write_loop(), name=f"store-{ctx.session_id[:8]}")
        started = ev.SessionStarted(ctx.session_id, self.id, ctx.channel, ctx.caller, earlier, ctx.call_info)
        await self._notify(started)
        if self.agent.greeting:
            reply = _Reply(index=-1)
            self._start(reply, self._greet(reply, self.agent.greeting))

    async def close(self) -> None:
        reply = self._reply
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CANCEL_TIMEOUT_S)
        if reply is not None and not reply.finished:
            await self._finish(reply, heard_ms=self._heard_so_far(reply))
        if self.id is not None:
            conversation_id, store = self.id, self.agent.store
            assert store is not None
            self._record(lambda: store.end_conversation(conversation_id))
        if self._writer is not None:
            await self._writes.put(None)  # the writer's stop sign
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._writer, _CLOSE_WRITES_TIMEOUT_S)
        await self._notify(ev.SessionEnded(self.context.session_id, self.turns))

    # -- events from the agent -----------------------------------------------------------------
    @property
    def replying(self) -> bool:
        """A reply is being made or played (or the session still has reply audio queued)."""
        return (self._reply is not None and not self._reply.played.is_set()) or self.context.responding

    async def caller_started(self, event: TurnStarted, *, barge_in: bool) -> None:
        self._user_turn += 1
        self._user_speaking = True
        interrupting = barge_in and self.replying
        await self._notify(ev.UserTurnStarted(self._ms(event.onset_samples), interrupting))
        if interrupting:
            await self.interrupt()

    def caller_discarded(self) -> None:
        """A burst too short to be a turn ended: no partial transcript of it stays current."""
        self._user_speaking = False
        self._cancel_partial()

    async def caller_finished(self, event: TurnEnded) -> None:
        self._user_speaking = False
        self._cancel_partial()
        if self.replying:
            logger.debug("%s: turn ignored, a reply is playing and can_interrupt is off", self._label)
            return
        now = self.context.clock.now()
        lag_s = (event.decided_samples - event.speech_end_samples) / self.agent.input_sample_rate
        await self.context.send_event(
            PauseDetected(
                t_ms=self._ms(event.decided_samples), speech_end_ms=self._ms(event.speech_end_samples)
            )
        )
        audio = event.audio
        if self._carry is not None:
            audio, self._carry = AudioFrame.concat([self._carry, event.audio]), None
        reply = _Reply(index=self.turns, audio=audio, speech_end_at=now - lag_s, decided_at=now)
        self._start(reply, self._take_turn(reply, audio))

    async def interrupt(self) -> None:
        """Barge-in: stop the reply, flush its audio, keep in the history what the caller heard."""
        reply = self._reply
        if reply is not None and reply.task is not None and not reply.task.done():
            reply.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(reply.task), _CANCEL_TIMEOUT_S)
        self._outputs.flush()
        heard_ms = await self.context.interrupt()
        if reply is not None and not reply.finished:
            if reply.user_text is None and reply.audio is not None:
                self._carry = reply.audio  # not transcribed yet: it joins the caller's next turn
            await self._finish(reply, heard_ms=heard_ms)

    async def partial_user_transcript(self, detector: TurnDetector) -> None:
        """Transcribe the turn so far every `partial_interval_ms` while the caller talks (one at a time)."""
        rate = self.agent.input_sample_rate
        position = detector.position_samples
        busy = self._partial is not None and not self._partial.done()
        if busy or position - self._partial_at < self.agent.partial_interval_ms * rate // 1000:
            return
        self._partial_at = position
        samples = await run_audio_job(detector.turn_so_far)
        if samples is None or samples.shape[0] < rate // 2:
            return
        turn = self._user_turn
        self._partial = asyncio.create_task(
            self._send_partial(AudioFrame(samples, rate), turn), name=f"agent-partial-{turn}"
        )
        self._tasks.add(self._partial)
        self._partial.add_done_callback(self._task_done)

    async def _send_partial(self, audio: AudioFrame, turn: int) -> None:
        try:
            text = await self._transcribe(None, audio)
        except Exception as exc:  # a partial is a nicety: the final transcript still comes
            logger.debug("%s: partial transcript failed (%s)", self._label, type(exc).__name__)
            return
        if text and turn == self._user_turn and self._user_speaking:
            await self.context.send_event(TranscriptEvent(role="user", text=text, final=False))

    def _cancel_partial(self) -> None:
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()
        self._partial = None

    def on_playout(self, event: PlayoutEvent) -> None:
        reply = self._reply
        if reply is None:
            return
        if isinstance(event, PlayoutStarted) and reply.playout_started_at is None:
            reply.playout_started_at = event.at_s
        elif isinstance(event, PlayoutFinished):
            reply.played.set()

    async def next_output(self) -> EmitType:
        item = await self._outputs.get()
        return ReplyEnd() if item is _REPLY_END else item

    # -- a turn --------------------------------------------------------------------------------
    async def _take_turn(self, reply: _Reply, audio: AudioFrame) -> None:
        agent = self.agent
        try:
            text = (await agent.on_transcript(await self._transcribe(reply, audio))) or ""
        except Exception as exc:
            self._log_failure(reply, "stt", exc)
            await self._apologise(reply)
            await self._end_reply(reply)
            return
        await self._notify(ev.UserTurnEnded(reply.index, text))
        if not text.strip():
            reply.finished, reply.played = True, _set_event()
            self._reply = None
            return
        reply.user_text = text
        self.history.append(ChatMessage("user", text))
        self._store_message("user", text, interrupted=False)
        await self.context.send_event(TranscriptEvent(role="user", text=text))
        self.turns += 1
        await self.context.send_event(ResponseStarting())
        await self._notify(ev.ReplyStarted(reply.index))
        try:
            await self._speak(reply, agent.llm_node(list(self.history)))
        except Exception as exc:
            self._log_failure(reply, "llm/tts", exc)
            await self._apologise(reply)
        await self._end_reply(reply)

    async def _greet(self, reply: _Reply, text: str) -> None:
        await self.context.send_event(ResponseStarting())
        await self._notify(ev.ReplyStarted(reply.index))
        try:
            await self._speak(reply, _once(text))
        except Exception as exc:
            self._log_failure(reply, "greeting", exc)
            await self.context.send_event(ErrorEvent(code="provider_error", message="the greeting failed"))
        await self._end_reply(reply)

    async def _transcribe(self, reply: _Reply | None, audio: AudioFrame) -> str:
        stt = self.agent.stt_provider
        if audio.sample_rate != stt.sample_rate:
            resampler = StreamingResampler(audio.sample_rate, stt.sample_rate)
            audio = await run_audio_job(resampler.process_frame, audio)
        clock, timeout_s = self.context.clock, self.agent.timeouts.stt_s
        started = clock.now()
        try:
            async with asyncio.timeout(timeout_s):
                transcript = await stt.transcribe(audio)
        except TimeoutError:
            raise ProviderTimeoutError(f"STT took over {timeout_s:g} s", stage="stt") from None
        if reply is not None:
            reply.stt_ms = round((clock.now() - started) * 1000, 1)
        return transcript.text

    async def _speak(self, reply: _Reply, text: AsyncIterator[Any]) -> None:
        await speak(
            text,
            self.agent.tts_provider,
            self._outputs.put,
            reply=reply.spoken,
            timings=reply.timings,
            clock=self.context.clock,
            timeouts=self.agent.timeouts,
            on_sentence=self._partial_reply if self.agent.partial_transcripts else None,
        )

    async def _partial_reply(self, text_so_far: str) -> None:
        await self.context.send_event(TranscriptEvent(role="assistant", text=text_so_far, final=False))

    async def _apologise(self, reply: _Reply) -> None:
        """Say the agent's apology; failing that, tell the client. The call goes on either way."""
        try:
            await self._speak(reply, _once(self.agent.apology))
        except Exception as exc:
            self._log_failure(reply, "apology", exc)
            await self.context.send_event(
                ErrorEvent(code="provider_error", message="the agent could not answer this turn")
            )

    async def _end_reply(self, reply: _Reply) -> None:
        await self._outputs.put(_REPLY_END)
        await reply.played.wait()
        await self._finish(reply, heard_ms=None)

    async def _finish(self, reply: _Reply, *, heard_ms: int | None) -> None:
        """Record a reply once: all of it, or (interrupted) the words heard in `heard_ms`."""
        if reply.finished:
            return
        reply.finished = True
        if self._reply is reply:
            self._reply = None
        spoken = reply.spoken
        interrupted = heard_ms is not None and heard_ms < spoken.audio_ms - 1
        text = spoken.heard_text(heard_ms) if interrupted and heard_ms is not None else spoken.text
        audio_s = (heard_ms if interrupted and heard_ms is not None else spoken.audio_ms) / 1000
        if text:
            self.history.append(ChatMessage("assistant", text, interrupted))
            self._store_message("assistant", text, interrupted=interrupted)
            await self.context.send_event(
                TranscriptEvent(role="assistant", text=text, interrupted=interrupted)
            )
        if reply.index >= 0 and reply.user_text is not None:
            await self._report_metrics(reply, text, audio_s, interrupted)
        if interrupted:
            await self._notify(ev.ReplyInterrupted(reply.index, text, heard_ms or 0))
        else:
            await self._notify(ev.ReplyFinished(reply.index, text, audio_s))

    async def _report_metrics(self, reply: _Reply, text: str, audio_s: float, interrupted: bool) -> None:
        t, usage = reply.timings, reply.timings.usage
        metrics = TurnMetrics(
            conversation_id=self.id or "",
            turn_index=reply.index,
            end_of_turn_ms=_ms_between(reply.speech_end_at, reply.decided_at),
            stt_ms=reply.stt_ms,
            llm_ttft_ms=_ms_between(t.llm_started_at, t.llm_first_text_at),
            tts_ttfa_ms=_ms_between(t.tts_started_at, t.tts_first_audio_at),
            voice_to_voice_ms=_ms_between(reply.speech_end_at, reply.playout_started_at),
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            user_chars=len(reply.user_text or ""),
            reply_chars=len(text),
            user_audio_s=reply.audio.duration_s if reply.audio is not None else 0.0,
            reply_audio_s=audio_s,
            interrupted=interrupted,
            created_at=time.time(),
        )
        figures = {k: v for k, v in metrics.to_dict().items() if k not in ("conversation_id", "turn_index")}
        await self.context.send_event(TurnMetricsEvent(turn_index=reply.index, metrics=figures))
        if self.id is not None:
            store = self.agent.store
            assert store is not None
            self._record(lambda: store.add_metrics(metrics))
        await self._notify(ev.TurnMetricsReady(metrics))

    # -- helpers -------------------------------------------------------------------------------
    @property
    def _label(self) -> str:
        return f"{self.agent.agent_name} session {self.context.session_id[:8]}"

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.agent.input_sample_rate

    def _heard_so_far(self, reply: _Reply) -> int:
        if reply.playout_started_at is None:
            return 0
        return round((self.context.clock.now() - reply.playout_started_at) * 1000)

    def _start(self, reply: _Reply, coro: Coroutine[Any, Any, None]) -> None:
        self._reply = reply
        reply.task = asyncio.create_task(coro, name=f"agent-reply-{reply.index}")
        self._tasks.add(reply.task)
        reply.task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: reply task failed", self._label, exc_info=task.exception())

    def _log_failure(self, reply: _Reply, stage: str, exc: Exception) -> None:
        if isinstance(exc, ProviderError):
            logger.warning(
                "%s: turn %d: %s failed (%s, retryable=%s)",
                self._label,
                reply.index,
                stage,
                exc.code,
                exc.retryable,
            )
        else:
            logger.error("%s: turn %d: %s failed", self._label, reply.index, stage, exc_info=exc)

    async def _notify(self, event: ev.AgentEvent) -> None:
        try:
            await self.agent.on_event(event)
        except Exception:
            logger.exception("%s: on_event failed for %s", self._label, type(event).__name__)

    def _store_message(self, role: str, text: str, *, interrupted: bool) -> None:
        store, conversation_id = self.agent.store, self.id
        if store is None or conversation_id is None:
            return
        at = time.time()
        self._record(
            lambda: store.add_message(conversation_id, role, text, started_at=at, interrupted=interrupted)  # type: ignore[arg-type]
        )

    def _record(self, write: Callable[[], Awaitable[object]]) -> None:
        if self._writer is not None and not self._writer.done():
            self._writes.put_nowait(write)

    async def _write_loop(self) -> None:
        while (write := await self._writes.get()) is not None:
            try:
                await write()
            except Exception:
                logger.exception("%s: a conversation store write failed", self._label)


def _ms_between(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else round((end - start) * 1000, 1)


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event
