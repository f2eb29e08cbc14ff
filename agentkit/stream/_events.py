"""Typed events a session sends to its caller, alongside audio.

Each event is a small frozen dataclass with a `type` literal; `to_json()` gives the wire form used by
the WebSocket protocol (docs/websocket-protocol.md). Control events are never dropped or reordered
behind audio: an interruption flushes queued audio, never events.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "AdditionalOutputsEvent",
    "ErrorEvent",
    "Event",
    "FalseInterruptionReason",
    "Interrupted",
    "PauseDetected",
    "PlaybackPaused",
    "PlaybackResumed",
    "ResponseDone",
    "ResponseStarting",
    "StartedTalking",
    "StopWordDetected",
    "Stopped",
    "ToolEvent",
    "TranscriptEvent",
    "TurnMetricsEvent",
]


FalseInterruptionReason = Literal["backchannel", "too_short", "no_words"]
"""Why sound over a reply did not interrupt it: only backchannel words ("mm-hmm", "right"), too
little speech (a cough, a click), or too few words (see `TurnTakingOptions.interrupt_*`)."""


@dataclass(frozen=True, slots=True)
class _EventBase:
    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StartedTalking(_EventBase):
    """The caller started speaking."""

    t_ms: int
    """Session media time of the speech onset, in milliseconds of input audio."""
    type: Literal["started_talking"] = "started_talking"


@dataclass(frozen=True, slots=True)
class PauseDetected(_EventBase):
    """The caller's turn ended (enough silence after enough speech)."""

    t_ms: int
    """Session media time at which the end of the turn was decided, in milliseconds of input audio."""
    speech_end_ms: int
    """Session media time where the last speech chunk ended."""
    type: Literal["pause_detected"] = "pause_detected"


@dataclass(frozen=True, slots=True)
class ResponseStarting(_EventBase):
    """The handler started producing a reply."""

    type: Literal["response_starting"] = "response_starting"


@dataclass(frozen=True, slots=True)
class ResponseDone(_EventBase):
    """The last audio of a reply has been sent to the caller."""

    audio_ms: int
    """Length of the reply audio that was sent, in milliseconds."""
    type: Literal["response_done"] = "response_done"


@dataclass(frozen=True, slots=True)
class Interrupted(_EventBase):
    """Barge-in: the reply stopped; the caller's player must drop what it has buffered."""

    heard_ms: int
    """How much of the interrupted reply the caller had heard, by the session's playout clock."""
    clear: bool = True
    """Always true: an instruction to clear the client's playback buffer."""
    type: Literal["interrupted"] = "interrupted"


@dataclass(frozen=True, slots=True)
class PlaybackPaused(_EventBase):
    """The caller may be interrupting: the reply stopped playing at once, but is kept.

    What the client has buffered but not played must be dropped (as on `interrupted`): if the reply
    resumes (`playback_resumed`), the server sends that audio again; if the interruption is real,
    `interrupted` follows."""

    heard_ms: int
    """How much of the reply the caller had heard when it paused, by the playout clock."""
    clear: bool = True
    """Always true: an instruction to clear the client's playback buffer."""
    type: Literal["playback_paused"] = "playback_paused"


@dataclass(frozen=True, slots=True)
class PlaybackResumed(_EventBase):
    """A false interruption: the paused reply plays on from where the caller stopped hearing it."""

    reason: FalseInterruptionReason
    """Why the caller's sound did not interrupt the reply."""
    replay_ms: int
    """Reply audio sent before the pause but not heard, which is sent again first."""
    type: Literal["playback_resumed"] = "playback_resumed"


@dataclass(frozen=True, slots=True)
class AdditionalOutputsEvent(_EventBase):
    """Non-audio outputs of the handler (`AdditionalOutputs`), as JSON-able values."""

    data: list[Any] = field(default_factory=list)
    type: Literal["additional_outputs"] = "additional_outputs"


@dataclass(frozen=True, slots=True)
class ErrorEvent(_EventBase):
    """Something went wrong; `fatal` says whether the session is ending because of it."""

    code: str
    message: str
    fatal: bool = False
    type: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class TranscriptEvent(_EventBase):
    """What was said in a turn, for the caller's own display (agents send these; logs never hold them)."""

    role: Literal["user", "assistant"]
    """`user`: the caller's transcribed turn; `assistant`: the agent's reply."""
    text: str
    """For an interrupted reply, only the words the caller heard."""
    interrupted: bool = False
    """The caller spoke over this reply."""
    final: bool = True
    """False for a partial transcript (the caller still talking, or the reply still being spoken):
    a later transcript of the same role replaces it."""
    type: Literal["transcript"] = "transcript"


@dataclass(frozen=True, slots=True)
class TurnMetricsEvent(_EventBase):
    """Per-turn latency and size figures of an agent turn (see `agentkit.store.TurnMetrics`)."""

    turn_index: int
    """0-based turn number within the conversation."""
    metrics: dict[str, float | int | bool | None] = field(default_factory=dict)
    """Field name to value: `*_ms` in milliseconds, `*_s` in seconds, counts as integers."""
    type: Literal["metrics"] = "metrics"


@dataclass(frozen=True, slots=True)
class Stopped(_EventBase):
    """The session ended."""

    reason: Literal["client_stop", "time_limit", "no_audio", "server_shutdown", "error"]
    type: Literal["stopped"] = "stopped"


@dataclass(frozen=True, slots=True)
class StopWordDetected(_EventBase):
    """`ReplyOnStopWords` heard one of its stop words: the caller is talking to it."""

    word: str
    """The stop word (or phrase) heard, lower case."""
    type: Literal["stop_word"] = "stop_word"


@dataclass(frozen=True, slots=True)
class ToolEvent(_EventBase):
    """The agent used a tool (shown in a transcript as a small "used order_status" line).

    Only the tool's name and outcome go to the caller, never its arguments or result."""

    name: str
    """The tool's name."""
    status: Literal["started", "finished", "failed", "cancelled"]
    duration_ms: float | None = None
    """How long it ran (not on `started`)."""
    type: Literal["tool"] = "tool"


Event = (
    StartedTalking
    | PauseDetected
    | ResponseStarting
    | ResponseDone
    | Interrupted
    | PlaybackPaused
    | PlaybackResumed
    | AdditionalOutputsEvent
    | ErrorEvent
    | TranscriptEvent
    | TurnMetricsEvent
    | ToolEvent
    | StopWordDetected
    | Stopped
)
