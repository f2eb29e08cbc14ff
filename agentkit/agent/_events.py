"""Typed events an `Agent` hands to its `on_event` hook, one small dataclass per kind.

They are in-process values for the agent's own code, so unlike log lines they carry the words said.
Override `Agent.on_event` and match on the type:

```python
async def on_event(self, event: AgentEvent) -> None:
    match event:
        case ReplyInterrupted(heard_text=heard):
            ...
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from agentkit.store import TurnMetrics
from agentkit.stream._events import FalseInterruptionReason

__all__ = [
    "AgentEvent",
    "AgentHandoff",
    "DtmfReceived",
    "FalseInterruption",
    "InterruptionConfirmed",
    "InterruptionSuspected",
    "ProviderFailed",
    "ReplyFinished",
    "ReplyInterrupted",
    "ReplyStarted",
    "SessionEnded",
    "SessionStarted",
    "ToolCallFinished",
    "ToolCallStarted",
    "TurnMetricsReady",
    "UserTurnEnded",
    "UserTurnStarted",
]


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A caller connected and the agent is ready (before the greeting)."""

    session_id: str
    conversation_id: str | None
    """Id of the stored conversation; None when the agent has no store."""
    channel: str
    """The transport's protocol name (`ws`, `fastrtc-ws`, `twilio`, `talk`, ...)."""
    caller: str | None
    """The caller's id when the transport knows one."""
    earlier_messages: int
    """How many messages of this caller's earlier conversations (and, `resumed`, of this call so
    far) are in the history."""
    call_info: Mapping[str, str] = field(default_factory=dict)
    """What else the transport knows of the call (`HandlerContext.call_info`; Twilio: `direction`,
    `called`, `call_id`, `purpose`)."""
    resumed: bool = False
    """The call reconnected (its media stream dropped, or its worker died) and goes on in its stored
    conversation, with its history; there is no greeting then."""


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session closed; the conversation is ended in the store."""

    session_id: str
    turns: int
    """User turns that got a reply."""


@dataclass(frozen=True, slots=True)
class UserTurnStarted:
    """The caller started speaking."""

    t_ms: int
    """Session media time of the onset, in milliseconds of input audio."""
    barge_in: bool
    """The agent was replying and has been interrupted."""


@dataclass(frozen=True, slots=True)
class UserTurnEnded:
    """The caller's turn was transcribed (after `on_transcript`)."""

    turn_index: int
    text: str
    """What goes into the history; empty when the turn was dropped."""


@dataclass(frozen=True, slots=True)
class ReplyStarted:
    """The agent started replying to a turn (or saying its greeting, `turn_index` -1)."""

    turn_index: int


@dataclass(frozen=True, slots=True)
class ReplyFinished:
    """A reply played to its end."""

    turn_index: int
    text: str
    """Everything that was said."""
    audio_s: float


@dataclass(frozen=True, slots=True)
class ReplyInterrupted:
    """The caller spoke over a reply; only what they heard stays in the history."""

    turn_index: int
    heard_text: str
    """The words of the reply the caller heard (by the playout clock), as stored."""
    heard_ms: int
    """Milliseconds of reply audio the caller heard."""


@dataclass(frozen=True, slots=True)
class InterruptionSuspected:
    """The caller made a sound over a reply: it paused at once, until the sound is judged (see
    `TurnTakingOptions.interrupt_*`)."""

    t_ms: int
    """Session media time of the sound's onset, in milliseconds of input audio."""
    heard_ms: int
    """Milliseconds of the reply the caller had heard when it paused."""


@dataclass(frozen=True, slots=True)
class InterruptionConfirmed:
    """The sound over a reply was real speech: the reply stopped (a `ReplyInterrupted` follows with
    the words heard) and the caller's turn goes on."""

    t_ms: int
    """Session media time of the onset."""
    speech_ms: int
    """Milliseconds of speech that decided it."""
    heard_ms: int
    """Milliseconds of the reply the caller had heard."""
    text: str | None
    """The words that decided it, when they were transcribed for the decision."""


@dataclass(frozen=True, slots=True)
class FalseInterruption:
    """The sound over a reply did not interrupt it: the reply resumed where it paused."""

    reason: FalseInterruptionReason
    """`backchannel` ("mm-hmm", "right"), `too_short` (a cough, a click) or `no_words`."""
    t_ms: int
    """Session media time of the onset."""
    speech_ms: int
    """Milliseconds of speech heard."""
    text: str | None
    """What was said, when it was transcribed for the decision."""


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a key on their phone (telephone transports only)."""

    digit: str
    """One of `0`-`9`, `*`, `#`, `A`-`D`."""


@dataclass(frozen=True, slots=True)
class TurnMetricsReady:
    """Latency and size figures of one finished (or interrupted) turn."""

    metrics: TurnMetrics


@dataclass(frozen=True, slots=True)
class ToolCallStarted:
    """The LLM called a tool and it started running."""

    turn_index: int
    """The reply's turn (-1 for `say`/`generate_reply`/greeting replies)."""
    call_id: str
    name: str
    arguments: str
    """The arguments as JSON text, as the LLM gave them."""


@dataclass(frozen=True, slots=True)
class ToolCallFinished:
    """A tool call ended: with a result, an error, a timeout, or cancelled by a barge-in."""

    turn_index: int
    call_id: str
    name: str
    result: str
    """What the LLM reads: the result, or the error message."""
    is_error: bool
    cancelled: bool
    """A barge-in cancelled it (its tool was cancellable)."""
    duration_ms: float


@dataclass(frozen=True, slots=True)
class ProviderFailed:
    """A provider (or the code around it) failed a turn's stage; the agent apologised or went on."""

    turn_index: int
    """The reply's turn (-1 for `say`/`generate_reply`/greeting replies)."""
    stage: str
    """What failed: "stt", "llm/tts" (the reply), "say", "greeting", "apology"."""
    provider: str
    """The provider's name as its error gave it (e.g. "anthropic"), or "unknown"."""
    code: str
    """The error's code: "provider_error", "provider_timeout", or "internal" for a bug."""
    status: int | None
    """The HTTP status the provider answered, if it was an HTTP error."""
    retryable: bool


@dataclass(frozen=True, slots=True)
class AgentHandoff:
    """A tool handed the call to another agent: its instructions, tools and voice from now on."""

    previous: str
    """The name of the agent that handed over."""
    agent: str
    """The name of the agent that has the call now."""


AgentEvent: TypeAlias = (
    SessionStarted
    | SessionEnded
    | UserTurnStarted
    | UserTurnEnded
    | ReplyStarted
    | ReplyFinished
    | ReplyInterrupted
    | InterruptionSuspected
    | InterruptionConfirmed
    | FalseInterruption
    | TurnMetricsReady
    | DtmfReceived
    | ToolCallStarted
    | ToolCallFinished
    | ProviderFailed
    | AgentHandoff
)
