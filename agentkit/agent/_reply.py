"""One reply in flight, and the handle agent code holds on it.

A reply is a turn's answer, the greeting (`turn_index` -1), or text the agent code asked for with
`session.say()` / `session.generate_reply()` (also -1: they answer no caller turn). It lives from
the moment it is started until the caller has heard all of it (`PlayoutFinished`) or spoke over it;
then it is *finished* exactly once, with the words the caller heard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agentkit.agent._pipeline import ReplyTimings, SpokenReply
from agentkit.agent._tool_runs import ToolStep
from agentkit.agent._tracing import ReplyTrace
from agentkit.audio import AudioFrame
from agentkit.store import TurnMetrics

if TYPE_CHECKING:
    from agentkit.agent._preemptive import Speculation

__all__ = ["CallAction", "Reply", "ReplyHandle", "ReplyOutcome", "ms_between"]


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    """How a reply ended."""

    text: str
    """The words the caller heard (all of the reply unless interrupted)."""
    interrupted: bool
    """The caller spoke over it (or agent code interrupted it)."""
    audio_s: float
    """Seconds of reply audio the caller heard."""


@dataclass(frozen=True, slots=True)
class CallAction:
    """Hang up or transfer the call once the reply that asked for it has been heard."""

    action: Literal["hang_up", "transfer"]
    words: str | None
    """Said first, at the end of that reply (the goodbye, the transfer announcement)."""
    to: str | None = None
    """The transfer destination."""


@dataclass(eq=False)
class Reply:
    """The state of one reply, from its start to its `finish`."""

    index: int
    """The caller turn it answers (0-based); -1 for the greeting and `say`/`generate_reply`."""
    instructions: str | None = None
    """Extra instructions for this reply's LLM call (`generate_reply(instructions=...)`)."""
    audio: AudioFrame | None = None
    """The caller's turn audio (None when the reply answers no turn)."""
    speech_end_at: float | None = None
    decided_at: float | None = None
    stt_ms: float | None = None
    user_text: str | None = None
    spoken: SpokenReply = field(default_factory=SpokenReply)
    timings: ReplyTimings = field(default_factory=ReplyTimings)
    playout_started_at: float | None = None
    played: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the reply's last audio went out (or when it turned out to have none)."""
    outcome: ReplyOutcome | None = None
    """Set once, when the reply is finished."""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    steps: list[ToolStep] = field(default_factory=list)
    """The LLM steps of this reply that ended in tool calls, in order."""
    after: CallAction | None = None
    """What a tool asked for once this reply has been heard (`end_call`, `transfer_call`)."""
    filler_said: bool = False
    """The "one moment" filler was said in this reply (it is said once at most)."""
    announced: bool = False
    """Its transcript, metrics and events have gone out."""
    turn_metrics: TurnMetrics | None = None
    """Set when a reply to a caller turn is settled."""
    trace: ReplyTrace | None = None
    """Its OpenTelemetry span, parent of its calls' (None: not traced; see `agentkit.agent._tracing`)."""
    task: asyncio.Task[None] | None = None
    speculation: Speculation | None = None
    """Work begun in the caller's pause for the turn it answers (`_preemptive.py`), if any."""
    preemptive: bool = False
    """Its first LLM call is that work's (started before the turn ended)."""
    llm_ttft_ms: float | None = None
    """For a preemptive reply, that call's own time to first text (the timings' start is the
    reply's)."""

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def finish(self, heard_ms: int | None) -> ReplyOutcome:
        """Settle the reply: all of it (`heard_ms` None) or the words heard in `heard_ms`."""
        assert self.outcome is None, "a reply is finished once"
        spoken = self.spoken
        interrupted = heard_ms is not None and heard_ms < spoken.audio_ms - 1
        if interrupted and heard_ms is not None:
            outcome = ReplyOutcome(spoken.heard_text(heard_ms), True, heard_ms / 1000)
        else:
            outcome = ReplyOutcome(spoken.text, False, spoken.audio_ms / 1000)
        self.outcome = outcome
        self.played.set()
        self.done.set()
        return outcome

    def drop(self) -> None:
        """Settle a reply that never spoke (its turn was dropped, or it was cancelled while queued)."""
        if self.outcome is None:
            self.outcome = ReplyOutcome("", self.task is not None and self.task.cancelled(), 0.0)
        self.played.set()
        self.done.set()

    def heard_so_far_ms(self, now: float) -> int:
        """The session clock's estimate of what has been heard, for a reply cut short at `now`."""
        if self.playout_started_at is None:
            return 0
        return round((now - self.playout_started_at) * 1000)

    def metrics(self, conversation_id: str, outcome: ReplyOutcome) -> TurnMetrics:
        """This turn's latencies and sizes (for a reply that answers a caller turn)."""
        t, usage = self.timings, self.timings.usage
        return TurnMetrics(
            conversation_id=conversation_id,
            turn_index=self.index,
            end_of_turn_ms=ms_between(self.speech_end_at, self.decided_at),
            stt_ms=self.stt_ms,
            llm_ttft_ms=(
                self.llm_ttft_ms
                if self.llm_ttft_ms is not None
                else ms_between(t.llm_started_at, t.llm_first_text_at)
            ),
            tts_ttfa_ms=ms_between(t.tts_started_at, t.tts_first_audio_at),
            voice_to_voice_ms=ms_between(self.speech_end_at, self.playout_started_at),
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            user_chars=len(self.user_text or ""),
            reply_chars=len(outcome.text),
            user_audio_s=self.audio.duration_s if self.audio is not None else 0.0,
            reply_audio_s=outcome.audio_s,
            interrupted=outcome.interrupted,
            created_at=time.time(),
            stt_provider=t.providers.get("stt"),
            llm_provider=t.providers.get("llm"),
            tts_provider=t.providers.get("tts"),
            preemptive=self.preemptive,
        )


class ReplyHandle:
    """What `session.say()` and `session.generate_reply()` return: await it for the outcome.

    ```python
    outcome = await self.session.say("Goodbye!")
    if not outcome.interrupted:
        await self.session.hang_up()
    ```

    Do not await it inside `on_event` or another hook the reply itself waits on: the reply would
    wait for the hook and the hook for the reply.
    """

    __slots__ = ("_reply",)

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    def done(self) -> bool:
        """The reply has been heard to its end, interrupted, or dropped."""
        return self._reply.done.is_set()

    @property
    def outcome(self) -> ReplyOutcome | None:
        """How it ended; None while it is still being made or played."""
        return self._reply.outcome if self.done() else None

    async def wait(self) -> ReplyOutcome:
        """Wait until the reply is over; its outcome."""
        await self._reply.done.wait()
        outcome = self._reply.outcome
        assert outcome is not None
        return outcome

    def __await__(self) -> Generator[Any, None, ReplyOutcome]:
        return self.wait().__await__()


def ms_between(start: float | None, end: float | None) -> float | None:
    """Milliseconds from `start` to `end` (clock readings), to 0.1 ms; None if either is missing."""
    return None if start is None or end is None else round((end - start) * 1000, 1)
