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

__all__ = [
    "AgentEvent",
    "AgentHandoff",
    "DtmfReceived",
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
    """How many messages of this caller's earlier conversations are in the history."""
    call_info: Mapping[str, str] = field(default_factory=dict)
    """What else the transport knows of the call (`HandlerContext.call_info`; Twilio: `direction`,
    `called`, `purpose`)."""


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
    | TurnMetricsReady
    | DtmfReceived
    | ToolCallStarted
    | ToolCallFinished
    | AgentHandoff
)
