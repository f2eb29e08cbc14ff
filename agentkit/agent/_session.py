"""`AgentSession`: one call's conversation with an agent, and the handle agent code holds on it.

Agent code reaches it as `self.session` once the call has started:

```python
await self.session.say("One moment, I'll check.")        # speak, then add it to the history
self.session.generate_reply(instructions="Ask for the order number.")
await self.session.interrupt()                           # stop talking, keep what was heard
await self.session.hang_up()
async for event in self.session.events(): ...           # typed events, as `on_event` sees them
```

A caller's turn: its audio → `stt_node` → `on_transcript` → history → `llm_node` → sentences →
`tts_node` → the agent's outbox → the stream session's paced output → played. A reply is recorded
once the caller has heard all of it (`PlayoutFinished`), or, when the caller speaks over it, with
only the words heard by then (the playout clock says how many milliseconds; `SpokenReply` turns
that into words). Replies take the floor one at a time, in the order they were started; a barge-in
(or `interrupt()`) stops the one speaking and drops the ones waiting.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, Literal, Protocol

from agentkit._aio import closing
from agentkit._executor import run_audio_job
from agentkit._tasks import TaskSet, cancel_and_wait
from agentkit.agent import _events as ev
from agentkit.agent._config import AgentConfig, AgentHooks
from agentkit.agent._event_log import EventLog
from agentkit.agent._pipeline import speak
from agentkit.agent._preemptive import Preemption, Speculation
from agentkit.agent._recorder import Recorder
from agentkit.agent._reply import CallAction, Reply, ReplyHandle, ReplyOutcome
from agentkit.agent._tool_runs import ToolRun, ToolRunner, ToolStep, arguments_json, reply_messages
from agentkit.agent._tools import result_text
from agentkit.agent._tracing import ReplyTrace, provider_call
from agentkit.audio import AudioFrame
from agentkit.exceptions import ProviderError
from agentkit.providers._fallback import recording_answers
from agentkit.providers.llm import ChatMessage, LLMChunk, ToolSpec
from agentkit.stream._events import (
    ErrorEvent,
    ResponseStarting,
    ToolEvent,
    TranscriptEvent,
    TurnMetricsEvent,
)
from agentkit.stream._handlers import HandlerContext, PlayoutEvent, PlayoutFinished, PlayoutStarted
from agentkit.stream._interruption import InterruptionDecision
from agentkit.stream._turn import TurnDetector, TurnEnded, TurnStarted

__all__ = ["AgentSession", "ReplyOutput"]

logger = logging.getLogger(__name__)

_CANCEL_TIMEOUT_S = 2.0
_CLOSE_WRITES_TIMEOUT_S = 5.0
_COMMIT_TIMEOUT_S = 2.0
_HEARD_TIMEOUT_S = 10.0


class ReplyOutput(Protocol):
    """Where a session's replies go: the agent's outbox (a `TurnTakingHandler`)."""

    async def put_output(self, item: Any) -> None: ...

    async def end_reply(self) -> None: ...

    async def interrupt(self) -> int: ...


async def _once(text: str) -> AsyncIterator[str]:
    yield text


class AgentSession:
    """Per-call state of an `Agent` and the actions agent code takes on the call."""

    def __init__(
        self, config: AgentConfig, hooks: AgentHooks, context: HandlerContext, output: ReplyOutput
    ) -> None:
        self.config = config
        self._hooks = hooks
        self._sinks = config.event_sinks  # not replaced by a handoff: the server's metrics stay fed
        self._context = context
        self._output = output
        self._label = f"{config.name} session {context.session_id[:8]}"
        self._tasks = TaskSet(f"agent-{context.session_id[:8]}")
        self._recorder = Recorder(
            config.store, agent_name=config.name, label=self._label, owner=f"store-{context.session_id[:8]}"
        )
        self._events = EventLog()
        self._tools = ToolRunner(
            owner=f"tools-{context.session_id[:8]}",
            clock=context.clock,
            default_timeout_s=config.tool_timeout_s,
            session=self,
            interpret=self._tool_value,
            notify_started=self._tool_started,
            notify_finished=self._tool_finished,
        )
        self._offer_tools = True  # False for a reply's last LLM step (`max_tool_steps` reached)
        self._history: list[ChatMessage] = []
        self._replies: list[Reply] = []  # unfinished, in the order they take the floor
        self._floor = asyncio.Lock()
        self._speaking: Reply | None = None  # the reply holding the floor
        self._stopped: Reply | None = None  # the one speaking when `stop_replies` stopped them all
        self._carry: AudioFrame | None = None  # a turn cut off before it was transcribed
        self._user_turn = 0  # bumped at every speech onset: partial transcripts of older turns are stale
        self._user_speaking = False
        self._partial: asyncio.Task[None] | None = None
        self._partial_at = 0  # media position of the last partial transcript's audio
        self._preemption = Preemption(self._tasks, sample_rate=config.input_sample_rate)
        self.turns = 0
        self._turn_base = 0  # turns of the conversation before this session (a reconnected call)
        """Caller turns that got a reply."""

    # -- what agent code reads -------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        return self._context.session_id

    @property
    def conversation_id(self) -> str | None:
        """The stored conversation's id (None without a store)."""
        return self._recorder.conversation_id

    @property
    def caller(self) -> str | None:
        """The caller's verified id when the transport knows one (Twilio: the phone number; web: the
        `sub` of a caller token). It links the caller's earlier conversations."""
        return self._context.caller

    @property
    def channel(self) -> str:
        """The transport's protocol name (`websocket`, `fastrtc-ws`, `webrtc`, `twilio`, `talk`)."""
        return self._context.channel

    @property
    def call_info(self) -> Mapping[str, str]:
        """What else the transport knows of the call (see `HandlerContext.call_info`)."""
        return self._context.call_info

    @property
    def history(self) -> list[ChatMessage]:
        """What the LLM sees (a copy): a returning caller's earlier conversations, then this one."""
        return list(self._history)

    @property
    def replying(self) -> bool:
        """A reply is being made, waiting for the floor, or still queued or playing."""
        return any(not r.played.is_set() for r in self._replies) or self._context.responding

    @property
    def reply_instructions(self) -> str | None:
        """Extra instructions of the reply being made (`generate_reply(instructions=...)`)."""
        return self._speaking.instructions if self._speaking is not None else None

    @property
    def dropped_writes(self) -> int:
        """Store writes dropped because the store fell too far behind (see `Recorder`)."""
        return self._recorder.dropped

    # -- what agent code does --------------------------------------------------------------------
    def say(self, text: str) -> ReplyHandle:
        """Speak `text` after any reply in progress; it joins the history as the agent's words
        (only the part heard, if the caller speaks over it). Await the handle for the outcome."""
        reply = Reply(index=-1)
        self._start(reply, self._say(reply, text), "say")
        return ReplyHandle(reply)

    def generate_reply(self, instructions: str | None = None) -> ReplyHandle:
        """Have the LLM reply now, on the history so far, without waiting for the caller to speak
        (e.g. after a tool finished, or to open the call); `instructions` add to the agent's for
        this reply only. Await the handle for the outcome."""
        reply = Reply(index=-1, instructions=instructions)
        self._start(reply, self._reply_with_llm(reply), "generate")
        return ReplyHandle(reply)

    async def interrupt(self) -> int:
        """Stop talking now, as a barge-in does: the reply speaking is cut to the words heard and
        replies waiting for the floor are dropped. Returns the milliseconds heard."""
        return await self._output.interrupt()

    async def hang_up(self) -> None:
        """End the call (Twilio: through its REST API); the session then closes as usual."""
        await self._context.hang_up()

    @property
    def can_transfer(self) -> bool:
        """The channel can hand the call to another number (Twilio)."""
        return self._context.can_transfer

    async def end_call(self, goodbye: str | None = None) -> bool:
        """Say `goodbye` (if any), and once the caller has heard it, hang up. A caller who speaks
        over it keeps the call (False)."""
        if goodbye:
            outcome = await self.say(goodbye)
            if outcome.interrupted:
                return False
        if not await self._context.wait_heard(_HEARD_TIMEOUT_S):
            logger.info("%s: the goodbye was not confirmed as heard in time; hanging up", self._label)
        await self.hang_up()
        return True

    def end_after_reply(self, goodbye: str | None) -> None:
        """For a tool: once the reply that called it has said `goodbye` and it has been heard, hang
        up (nothing happens if the caller speaks over it)."""
        self._current_reply("end_after_reply").after = CallAction("hang_up", goodbye)

    def transfer_after_reply(self, to: str, announcement: str | None) -> None:
        """For a tool: once the reply that called it has said `announcement` and it has been
        heard, transfer the call to `to`."""
        self._current_reply("transfer_after_reply").after = CallAction("transfer", announcement, to)

    def _current_reply(self, what: str) -> Reply:
        if self._speaking is None:
            raise RuntimeError(f"{what} is for tools, while the reply that called them is being made")
        return self._speaking

    def events(self) -> AsyncIterator[ev.AgentEvent]:
        """The session's typed events, from its first still kept (see `EventLog`) to `SessionEnded`."""
        return self._events.follow()

    # -- lifecycle (called by the agent) ---------------------------------------------------------
    async def open(self) -> None:
        ctx = self._context
        earlier = await self._recorder.open(ctx.channel, ctx.caller, ctx.call_info.get("call_id"))
        self._history = earlier
        resumed = self._recorder.resumed
        self._turn_base = self._recorder.turns_before
        started = ev.SessionStarted(
            ctx.session_id,
            self.conversation_id,
            ctx.channel,
            ctx.caller,
            len(earlier),
            ctx.call_info,
            resumed,
        )
        await self._notify(started)
        if self.config.greeting and not resumed:  # a call that reconnected was greeted already
            reply = Reply(index=-1)
            self._start(reply, self._say(reply, self.config.greeting, "greeting"), "greeting")

    async def close(self) -> None:
        speaking = self._speaking
        heard_ms = speaking.heard_so_far_ms(self._context.clock.now()) if speaking is not None else 0
        await self._tasks.aclose(_CANCEL_TIMEOUT_S)
        await self._tools.aclose()  # the call is over: even tools that must finish are stopped
        for reply in list(self._replies):
            if reply is speaking and not reply.finished:
                await self._finish(reply, heard_ms=heard_ms)
            else:
                self._forget(reply)
        if speaking is not None and speaking.finished and not speaking.announced:
            await self._finish(speaking, heard_ms=None)  # heard to its end just before the close
        await self._recorder.close(_CLOSE_WRITES_TIMEOUT_S, self._context.stop_reason or "ended")
        await self._notify(ev.SessionEnded(self._context.session_id, self.turns))
        await self._events.close()

    # -- turn-taking (called by the agent) -------------------------------------------------------
    async def caller_started(self, event: TurnStarted, *, barge_in: bool) -> None:
        self._preemption.drop()
        self._user_turn += 1
        self._user_speaking = True
        await self._notify(ev.UserTurnStarted(self._ms(event.onset_samples), barge_in))

    async def interruption(self, decision: InterruptionDecision) -> None:
        """A sound over a reply was suspected, confirmed or found false: its typed event."""
        t_ms = self._ms(decision.onset.onset_samples)
        if decision.outcome == "suspected":
            await self._notify(ev.InterruptionSuspected(t_ms, decision.heard_ms))
        elif decision.outcome == "confirmed":
            await self._notify(
                ev.InterruptionConfirmed(t_ms, decision.speech_ms, decision.heard_ms, decision.text)
            )
        elif decision.reason is not None:
            await self._notify(ev.FalseInterruption(decision.reason, t_ms, decision.speech_ms, decision.text))

    def caller_discarded(self) -> None:
        """A burst too short to be a turn ended: no partial transcript of it stays current."""
        self._user_speaking = False
        self._cancel_partial()
        self._preemption.drop()

    async def caller_finished(self, event: TurnEnded, *, speech_end_at: float) -> None:
        """The caller's turn ended; their speech ended at clock time `speech_end_at`
        (`TurnTakingHandler.arrival_time`), which the turn's latencies count from."""
        self._user_speaking = False
        self._cancel_partial()
        now = self._context.clock.now()
        audio = event.audio
        if self._carry is not None:
            audio, self._carry = AudioFrame.concat([self._carry, event.audio]), None
        reply = Reply(
            index=self._turn_base + self.turns, audio=audio, speech_end_at=speech_end_at, decided_at=now
        )
        speculation = self._preemption.take(event, usable=audio is event.audio)  # not with a carry
        self._start(reply, self._take_turn(reply, audio), f"reply-{reply.index}")
        if speculation is not None:
            speculation.adopt(reply)

    async def user_text(self, text: str, *, interrupt: bool) -> None:
        """The caller typed `text`: a turn like a spoken one minus the STT (`on_transcript` →
        history → `transcript` event → the LLM's reply, tools included). With `interrupt` (the
        agent's `can_interrupt`) a reply in progress is stopped first, as a barge-in stops it;
        otherwise the turn waits for it. No `UserTurnStarted` precedes its `UserTurnEnded`."""
        if interrupt and self.replying:
            await self._output.interrupt()
        self._user_turn += 1  # a partial transcript still on its way is of an older turn
        reply = Reply(index=self._turn_base + self.turns, decided_at=self._context.clock.now())
        self._start(reply, self._take_turn(reply, text), f"reply-{reply.index}")

    async def stop_replies(self) -> None:
        """Cancel every reply task (the speaking one and those waiting); they are settled next, in
        `interrupted`, once the session knows how much was heard."""
        self._stopped = self._speaking
        # the waiting ones first: were the speaking one stopped first, the next would take the floor
        for reply in reversed(self._replies):
            if reply.played.is_set():
                continue  # heard to its end already: it is being recorded as such
            if reply.task is not None and not await cancel_and_wait(reply.task, _CANCEL_TIMEOUT_S):
                logger.warning("%s: a reply did not stop within %.0f s", self._label, _CANCEL_TIMEOUT_S)

    async def interrupted(self, heard_ms: int) -> None:
        """After a barge-in flushed the output: keep in the history what the caller heard."""
        speaking, self._stopped = self._stopped, None
        for reply in list(self._replies):
            if reply.played.is_set():
                continue
            if reply is speaking and reply.audio is not None and reply.user_text is None:
                self._carry = reply.audio  # not transcribed yet: it joins the caller's next turn
                self._forget(reply)  # it said nothing: no reply to record or announce
                continue
            if reply is speaking and not reply.finished:
                self._settle(reply, heard_ms)  # in the history at once; announced once stored
                self._tasks.spawn(self._finish(reply, heard_ms=heard_ms), f"announce-{reply.index}")
            else:
                self._forget(reply)

    @property
    def preempting(self) -> bool:
        """`preempt` may have work after an input: preemptive generation is on, or a speculation is
        under way."""
        return bool(self.config.preemptive_generation) or self._preemption.speculating

    async def preempt(self, detector: TurnDetector, *, llm_after_ms: int = 0) -> None:
        """After each input frame: with `preemptive_generation`, begin the reply in a pause of
        `preemptive_after_ms` while no reply is being made (its LLM call once the pause reaches
        `llm_after_ms`), and drop it once the pause is over."""
        config = self.config
        idle = config.preemptive_generation and self._carry is None and not self.replying
        after_ms = config.preemptive_after_ms if idle else None
        await self._preemption.after_audio(
            detector, after_ms=after_ms, llm_after_ms=llm_after_ms, begin=self._speculation
        )

    def _speculation(self, audio: AudioFrame, speech_end_samples: int) -> Speculation:
        hooks = self._hooks

        def start_llm(history: list[ChatMessage]) -> AsyncIterator[str | LLMChunk]:
            if self._speaking is None:  # as the reply's first LLM step will offer them
                self._offer_tools = self.config.max_tool_steps > 0
            return hooks.llm_node(history)

        return Speculation(
            audio,
            speech_end_samples,
            owner=hooks,
            history=self._history,
            transcribe=hooks.stt_node,
            start_llm=start_llm,
            clock=self._context.clock,
            first_piece_words=self.config.first_piece_words,
        )

    async def partial_user_transcript(self, detector: TurnDetector) -> None:
        """Transcribe the turn so far every `partial_interval_ms` while the caller talks (one at a time)."""
        rate = self.config.input_sample_rate
        position = detector.position_samples
        busy = self._partial is not None and not self._partial.done()
        if busy or position - self._partial_at < self.config.partial_interval_ms * rate // 1000:
            return
        self._partial_at = position
        samples = await run_audio_job(detector.turn_so_far)
        if samples is None or samples.shape[0] < rate // 2:
            return
        turn = self._user_turn
        self._partial = self._tasks.spawn(
            self._send_partial(AudioFrame(samples, rate), turn), f"partial-{turn}"
        )

    def on_playout(self, event: PlayoutEvent) -> None:
        reply = self._speaking
        if reply is None:
            return
        if isinstance(event, PlayoutStarted) and reply.playout_started_at is None:
            reply.playout_started_at = event.at_s
        elif isinstance(event, PlayoutFinished):
            reply.played.set()
            self._settle(reply, None)  # in the history before the caller is told it is done

    def dtmf(self, digit: str) -> None:
        """A phone key reaches `on_event` as `DtmfReceived` (in a task the session owns)."""
        if not self._tasks.closed:
            self._tasks.spawn(self._notify(ev.DtmfReceived(digit)), "dtmf")

    # -- replies ---------------------------------------------------------------------------------
    def _start(self, reply: Reply, coro: Coroutine[Any, Any, None], name: str) -> None:
        ctx = self._context
        reply.trace = ReplyTrace.start(
            turn_index=reply.index,
            kind=name,
            session_id=ctx.session_id,
            conversation_id=self.conversation_id,
            channel=ctx.channel,
            agent=self.config.name,
            clock=ctx.clock,
            providers=reply.timings.providers,
        )
        self._replies.append(reply)
        reply.task = self._tasks.spawn(self._on_floor(reply, coro), name)

    async def _on_floor(self, reply: Reply, coro: Coroutine[Any, Any, None]) -> None:
        """Run a reply once the one before it is over."""
        try:
            async with self._floor:
                self._speaking = reply  # until the reply is settled (`_finish`, `_forget`)
                with recording_answers(reply.timings.providers):  # which providers answer it
                    await coro
        finally:
            coro.close()  # never started (cancelled while waiting for the floor): no warning
            if not reply.finished and not (reply.task is not None and reply.task.cancelling()):
                self._forget(reply)

    def _forget(self, reply: Reply) -> None:
        reply.drop()
        self._settled(reply)
        if reply.trace is not None and reply.outcome is not None:
            reply.trace.end(interrupted=reply.outcome.interrupted, metrics=None)

    def _settled(self, reply: Reply) -> None:
        if reply in self._replies:
            self._replies.remove(reply)
        if self._speaking is reply:
            self._speaking = None

    async def _take_turn(self, reply: Reply, turn: AudioFrame | str) -> None:
        """A caller's turn: its audio (transcribed first) or the text they typed."""
        try:
            said = turn if isinstance(turn, str) else await self._transcribe(reply, turn)
            text = (await self._hooks.on_transcript(said)) or ""
        except Exception as exc:
            await self._failed(reply, "stt", exc)
            await self._apologise(reply)
            await self._end_reply(reply)
            return
        await self._notify(ev.UserTurnEnded(reply.index, text))
        if not text.strip():
            self._forget(reply)
            return
        reply.user_text = text
        self._history.append(ChatMessage("user", text))
        self._recorder.message("user", text, interrupted=False)
        await self._context.send_event(TranscriptEvent(role="user", text=text))
        self.turns += 1
        await self._reply_with_llm(reply)

    async def _reply_with_llm(self, reply: Reply) -> None:
        await self._context.send_event(ResponseStarting())
        await self._notify(ev.ReplyStarted(reply.index))
        try:
            await self._llm_steps(reply)
        except Exception as exc:
            await self._failed(reply, "llm/tts", exc)
            await self._apologise(reply)
            reply.after = None  # something went wrong: do not end a call on a failed turn
        await self._end_reply(reply)
        if reply.after is not None and reply.outcome is not None and not reply.outcome.interrupted:
            await self._after_reply(reply.after)

    async def _after_reply(self, after: CallAction) -> None:
        """Hang up or transfer, once the caller has heard the reply that asked for it."""
        if not await self._context.wait_heard(_HEARD_TIMEOUT_S):
            logger.info("%s: the last words were not confirmed as heard in time", self._label)
        if after.action == "transfer" and after.to is not None:
            try:
                await self._context.transfer(after.to)
            except Exception as exc:
                logger.warning("%s: the transfer failed (%s)", self._label, type(exc).__name__)
                await self.say("Sorry, I could not transfer the call.").wait()
            return
        await self.hang_up()

    # -- the tool loop ---------------------------------------------------------------------------
    @property
    def offered_tools(self) -> list[ToolSpec]:
        """The tools the LLM is offered now (none on a reply's last step)."""
        return [t.spec for t in self._hooks.agent_tools().values()] if self._offer_tools else []

    async def _llm_steps(self, reply: Reply) -> None:
        """LLM → (words spoken at once) tool calls → results → LLM ..., `max_tool_steps` at most."""
        for number in range(self.config.max_tool_steps + 1):
            self._offer_tools = number < self.config.max_tool_steps
            step = ToolStep(first_sentence=len(reply.spoken.segments))
            history = [*self._history, *self._step_messages(reply)]
            preempted = reply.speculation if number == 0 else None
            stream = await preempted.take_llm(history, self._hooks, reply) if preempted else None
            if stream is None:
                stream = self._hooks.llm_node(history)
            await self._speak(reply, self._take_calls(stream, reply, step), llm=True)
            if not step.runs:
                return
            await self._await_tools(reply, step)
            step.end_sentence = len(reply.spoken.segments)
            if reply.after is not None:  # a tool ends or transfers the call: its words, then no more
                if reply.after.words:
                    await self._speak(reply, _once(reply.after.words))
                return
        self._offer_tools = True

    async def _take_calls(
        self, stream: AsyncIterator[str | LLMChunk], reply: Reply, step: ToolStep
    ) -> AsyncIterator[str | LLMChunk]:
        """The LLM's text goes on to the TTS; each tool call starts running as soon as it is whole."""
        async with closing(stream) as items:
            async for item in items:
                if isinstance(item, LLMChunk) and item.tool_call is not None:
                    if not step.runs:
                        reply.steps.append(step)
                    tools = self._hooks.agent_tools() if self._offer_tools else {}
                    step.runs.append(await self._tools.start(item.tool_call, tools, reply.index, reply.trace))
                    if item.text or item.usage is not None:
                        yield LLMChunk(item.text, item.usage)
                    continue
                yield item

    async def _await_tools(self, reply: Reply, step: ToolStep) -> None:
        """Wait for a step's calls; past `tool_filler_after_s`, say the filler once per reply."""
        tasks = {run.task for run in step.runs if run.task is not None}
        filler = self.config.tool_filler
        if filler and not reply.filler_said:
            _, tasks = await asyncio.wait(tasks, timeout=self.config.tool_filler_after_s)
            if tasks:
                reply.filler_said = True
                await self._speak(reply, _once(filler))
        if tasks:
            await asyncio.wait(tasks)  # each call has its own timeout

    def _step_messages(self, reply: Reply) -> list[ChatMessage]:
        """The reply's tool steps so far, as the next LLM step must see them (all it said)."""
        sentences = [s.text for s in reply.spoken.segments]
        messages, _, _ = reply_messages(reply.steps, sentences, sentences, interrupted=False)
        return [m for _, m in messages]

    async def _tool_value(self, value: object) -> str:
        """What a tool returned, as the LLM reads it; an `Agent` takes the call over (handoff)."""
        handed = await self._hooks.handoff(value)
        return handed if handed is not None else result_text(value)

    async def hand_off(self, hooks: AgentHooks, config: AgentConfig, previous: str) -> None:
        """From now on `hooks` (another agent) answers: its instructions, tools and voice; the
        history, the caller and the turn-taking stay. Called by `Agent.handoff`."""
        await self._notify(ev.AgentHandoff(previous, config.name))  # the agent handing over hears it
        self._hooks, self.config = hooks, config

    async def _tool_started(self, run: ToolRun) -> None:
        await self._context.send_event(ToolEvent(name=run.call.name, status="started"))
        call = run.call
        await self._notify(ev.ToolCallStarted(run.turn_index, call.id, call.name, arguments_json(call)))

    async def _tool_finished(self, run: ToolRun) -> None:
        result, duration_ms = run.result, run.duration_ms or 0.0
        assert result is not None
        status: Literal["cancelled", "failed", "finished"] = (
            "cancelled" if run.cancelled else "failed" if result.is_error else "finished"
        )
        self._recorder.tool_call(run, self._context.clock.now())
        await self._context.send_event(ToolEvent(name=run.call.name, status=status, duration_ms=duration_ms))
        await self._notify(
            ev.ToolCallFinished(
                run.turn_index,
                run.call.id,
                run.call.name,
                result.content,
                result.is_error,
                run.cancelled,
                duration_ms,
            )
        )

    async def _say(self, reply: Reply, text: str, what: str = "say") -> None:
        await self._context.send_event(ResponseStarting())
        await self._notify(ev.ReplyStarted(reply.index))
        try:
            await self._speak(reply, _once(text))
        except Exception as exc:
            await self._failed(reply, what, exc)
            await self._context.send_event(ErrorEvent(code="provider_error", message=f"the {what} failed"))
        await self._end_reply(reply)

    async def _transcribe(self, reply: Reply | None, audio: AudioFrame) -> str:
        if reply is not None and reply.speculation is not None:  # transcribed in the pause already
            text = await reply.speculation.transcript(reply)
            if text is not None:
                return text
        clock = self._context.clock
        started = clock.now()
        with provider_call(reply.trace if reply is not None else None, "stt"):
            text = await self._hooks.stt_node(audio)
        if reply is not None:
            reply.stt_ms = round((clock.now() - started) * 1000, 1)
        return text

    async def _send_partial(self, audio: AudioFrame, turn: int) -> None:
        try:
            text = await self._transcribe(None, audio)
        except Exception as exc:  # a partial is a nicety: the final transcript still comes
            logger.debug("%s: partial transcript failed (%s)", self._label, type(exc).__name__)
            return
        if text and turn == self._user_turn and self._user_speaking:
            await self._context.send_event(TranscriptEvent(role="user", text=text, final=False))

    def _cancel_partial(self) -> None:
        if self._partial is not None and not self._partial.done():
            self._partial.cancel()
        self._partial = None

    async def _speak(self, reply: Reply, text: AsyncIterator[str | LLMChunk], *, llm: bool = False) -> None:
        """Speak `text`: the LLM's (`llm`, traced as an LLM request) or fixed words."""
        await speak(
            text,
            self._hooks.tts_node,
            self._output.put_output,
            reply=reply.spoken,
            timings=reply.timings,
            clock=self._context.clock,
            timeouts=self.config.timeouts,
            first_piece_words=self.config.first_piece_words,
            on_sentence=self._partial_reply if self.config.partial_transcripts else None,
            trace=reply.trace,
            text_from_llm=llm,
        )

    async def _partial_reply(self, text_so_far: str) -> None:
        await self._context.send_event(TranscriptEvent(role="assistant", text=text_so_far, final=False))

    async def _apologise(self, reply: Reply) -> None:
        """Say the agent's apology; failing that, tell the client. The call goes on either way."""
        try:
            await self._speak(reply, _once(self.config.apology))
        except Exception as exc:
            await self._failed(reply, "apology", exc)
            await self._context.send_event(
                ErrorEvent(code="provider_error", message="the agent could not answer this turn")
            )

    async def _end_reply(self, reply: Reply) -> None:
        await self._output.end_reply()
        await reply.played.wait()
        await self._finish(reply, heard_ms=None)

    def _settle(self, reply: Reply, heard_ms: int | None) -> ReplyOutcome:
        """Settle a reply once, at once: all of it, or (interrupted) the words heard in `heard_ms`,
        into the history and the store, before the caller is told the reply is done."""
        if reply.outcome is not None:
            return reply.outcome
        outcome = reply.finish(heard_ms)
        self._settled(reply)
        if reply.steps:
            self._record_steps(reply, heard_ms if outcome.interrupted else None, outcome.interrupted)
        elif outcome.text:
            self._history.append(ChatMessage("assistant", outcome.text, outcome.interrupted))
        if outcome.text:
            self._recorder.message("assistant", outcome.text, interrupted=outcome.interrupted)
        if reply.index >= 0 and reply.user_text is not None:
            reply.turn_metrics = reply.metrics(self.conversation_id or "", outcome)
            self._recorder.metrics(reply.turn_metrics)
        if reply.trace is not None:
            reply.trace.end(interrupted=outcome.interrupted, metrics=reply.turn_metrics)
        return outcome

    def _record_steps(self, reply: Reply, heard_ms: int | None, interrupted: bool) -> None:
        """A reply that called tools goes into the history as its steps: words and calls, results,
        then its last words. A call still running (a tool that must finish) keeps its place, and
        its result fills it in when it comes."""
        if interrupted:  # the cancellable calls still running stop now
            self._tools.interrupt([run for step in reply.steps for run in step.runs])
        sentences = [s.text for s in reply.spoken.segments]
        heard = reply.spoken.heard_sentences(heard_ms)
        messages, final, cut_in_final = reply_messages(reply.steps, sentences, heard, interrupted=interrupted)
        for number, message in messages:
            self._history.append(message)
            if message.role == "tool" and any(not r.done for r in reply.steps[number].runs):
                fill = functools.partial(self._fill, len(self._history) - 1, reply.steps[number])
                for run in reply.steps[number].runs:
                    run.on_result.append(fill)
        if final:
            self._history.append(ChatMessage("assistant", final, cut_in_final))

    def _fill(self, slot: int, step: ToolStep, _: ToolRun) -> None:
        """A tool that had to finish did: its result replaces the place kept for it."""
        message = self._history[slot] if slot < len(self._history) else None
        if message is None or message.role != "tool":
            return
        results = tuple(
            run.result if run.result is not None else old
            for run, old in zip(step.runs, message.tool_results, strict=True)
        )
        self._history[slot] = ChatMessage("tool", "", tool_results=results)

    async def _finish(self, reply: Reply, *, heard_ms: int | None) -> ReplyOutcome:
        """Settle a reply (if it is not yet) and announce it: transcript, metrics, events."""
        outcome = self._settle(reply, heard_ms)
        if reply.announced:
            return outcome
        reply.announced = True
        await self._recorder.commit(_COMMIT_TIMEOUT_S)  # stored before the client sees it complete
        if outcome.text:
            await self._context.send_event(
                TranscriptEvent(role="assistant", text=outcome.text, interrupted=outcome.interrupted)
            )
        metrics = reply.turn_metrics
        if metrics is not None:
            figures = metrics.to_dict()
            del figures["conversation_id"], figures["turn_index"]
            await self._context.send_event(TurnMetricsEvent(turn_index=reply.index, metrics=figures))
            await self._notify(ev.TurnMetricsReady(metrics))
        if outcome.interrupted:
            await self._notify(ev.ReplyInterrupted(reply.index, outcome.text, round(outcome.audio_s * 1000)))
        else:
            await self._notify(ev.ReplyFinished(reply.index, outcome.text, outcome.audio_s))
        return outcome

    # -- helpers ---------------------------------------------------------------------------------
    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.config.input_sample_rate

    async def _failed(self, reply: Reply, stage: str, exc: Exception) -> None:
        """Log a failed stage (code and provider only: no bodies, no words) and tell the sinks."""
        if isinstance(exc, ProviderError):
            provider = str(exc.context.get("provider") or "unknown")
            status = exc.context.get("status")
            logger.warning(
                "%s: turn %d: %s failed (%s, %s, retryable=%s)",
                self._label,
                reply.index,
                stage,
                provider,
                exc.code,
                exc.retryable,
            )
            failed = ev.ProviderFailed(
                reply.index,
                stage,
                provider,
                exc.code,
                status if isinstance(status, int) else None,
                exc.retryable,
            )
        else:
            logger.error("%s: turn %d: %s failed", self._label, reply.index, stage, exc_info=exc)
            failed = ev.ProviderFailed(reply.index, stage, "unknown", "internal", None, False)
        await self._notify(failed)

    async def _notify(self, event: ev.AgentEvent) -> None:
        try:
            await self._hooks.on_event(event)
        except Exception:
            logger.exception("%s: on_event failed for %s", self._label, type(event).__name__)
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                logger.exception("%s: an event sink failed for %s", self._label, type(event).__name__)
        await self._events.append(event)


def history_for_llm(history: Sequence[ChatMessage], max_messages: int) -> list[ChatMessage]:
    """The last `max_messages` of `history`, starting at a caller's message (an LLM conversation
    starts with the user; a history cut in the middle may start with the agent's words)."""
    messages = list(history)[-max_messages:]
    while messages and messages[0].role != "user":
        messages.pop(0)
    return messages
