"""What the conversation store keeps: conversations, their messages, and per-turn metrics.

Each record is a small frozen dataclass with units in its field names; times are unix seconds
(`*_at`), latencies milliseconds (`*_ms`), audio lengths seconds (`*_audio_s`). `to_dict()` gives a
JSON-friendly dict (only str, int, float, bool and None values), used by the JSON API.

Records hold caller ids and transcripts: never log them (see the style guide).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

__all__ = ["ROLES", "Conversation", "Role", "StoredMessage", "ToolCallRecord", "TurnMetrics"]

Role = Literal["user", "assistant"]
"""Who said a message: the caller (`user`) or the agent (`assistant`)."""

ROLES: tuple[str, ...] = get_args(Role)


def check_role(role: str) -> None:
    """Raise `ValueError` unless `role` is one of `ROLES`."""
    if role not in ROLES:
        raise ValueError(f"message role must be one of {ROLES}, not {role!r}")


@dataclass(frozen=True, slots=True)
class _Record:
    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict of JSON-friendly values, keyed by field name."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Conversation(_Record):
    """One call or session between a caller and an agent."""

    id: str
    """Store-wide unique id (a random hex uuid unless the caller of `start_conversation` chose one)."""
    agent: str
    """Name of the agent that answered (e.g. the `Agent` class name)."""
    channel: str
    """Transport it came in on: `websocket`, `webrtc`, `twilio`, `talk`, ..."""
    caller: str | None
    """Caller id (a phone number, a client-supplied id), or `None` when the transport has none."""
    started_at: float
    """When the conversation started, unix seconds."""
    ended_at: float | None
    """When it ended, unix seconds; `None` while it is still going on."""
    end_reason: str | None = None
    """Why it ended: how the session closed (`client_stop`, `hang_up`, `time_limit`, ...), or
    `crashed` when the process that served it died and another closed it (see `end_abandoned`);
    `None` while it is going on."""
    call_id: str | None = None
    """The transport's id of the call (Twilio's `CallSid`), kept when its media reconnects: a call
    whose stream dropped or whose worker died goes on in this conversation (`claim_conversation`).
    `None` for transports without one."""


@dataclass(frozen=True, slots=True)
class StoredMessage(_Record):
    """One utterance of a conversation, as text."""

    conversation_id: str
    """The conversation it belongs to."""
    index: int
    """0-based position within its conversation, assigned by the store in order of arrival."""
    role: Role
    """`user` for the caller, `assistant` for the agent."""
    text: str
    """What was said; for an interrupted reply only the part the caller heard."""
    started_at: float
    """When the utterance started, unix seconds."""
    ended_at: float | None
    """When it ended, unix seconds; `None` when unknown."""
    interrupted: bool
    """True when the caller barged in and cut this (assistant) message short."""

    def __post_init__(self) -> None:
        check_role(self.role)
        if self.index < 0:
            raise ValueError(f"message index must be >= 0, not {self.index}")


@dataclass(frozen=True, slots=True)
class TurnMetrics(_Record):
    """Latencies and sizes of one turn (a caller utterance and the agent's reply).

    Every timing is `None` when its stage was skipped or not measured (e.g. no LLM call for a canned
    reply, no TTS for a text-only channel).
    """

    conversation_id: str
    """The conversation the turn belongs to."""
    turn_index: int
    """0-based turn number within the conversation (unique per conversation)."""
    end_of_turn_ms: float | None
    """End of the caller's speech -> the turn-taking decision that the turn is over."""
    stt_ms: float | None
    """Speech-to-text time for the caller's utterance."""
    llm_ttft_ms: float | None
    """LLM time to first token, from request to the first text chunk."""
    tts_ttfa_ms: float | None
    """TTS time to first audio, from the first text sent to the first audio frame out."""
    voice_to_voice_ms: float | None
    """End of the caller's speech -> the first reply audio sent to the caller."""
    input_tokens: int | None
    """LLM prompt tokens, when the provider reports usage."""
    output_tokens: int | None
    """LLM completion tokens, when the provider reports usage."""
    user_chars: int
    """Length of the caller's transcript, in characters."""
    reply_chars: int
    """Length of the reply text, in characters."""
    user_audio_s: float
    """Length of the caller's speech, in seconds."""
    reply_audio_s: float
    """Length of the reply audio sent (heard, if interrupted), in seconds."""
    interrupted: bool
    """True when the caller barged in on the reply."""
    created_at: float
    """When these metrics were recorded, unix seconds."""
    stt_provider: str | None = None
    """Name of the STT provider that transcribed the turn (with a fallback, the one that answered);
    None for a typed turn, or when unknown."""
    llm_provider: str | None = None
    """Name of the LLM provider that answered (the last one, for a reply of several LLM calls)."""
    tts_provider: str | None = None
    """Name of the TTS provider that spoke the reply (the last one, if it changed between sentences)."""
    preemptive: bool = False
    """The reply was started in the caller's pause, before the turn was known to be over
    (`Agent.preemptive_generation`): its transcript and first LLM call came from that work, so
    `stt_ms` and `llm_ttft_ms` partly or wholly precede the end of turn."""

    def __post_init__(self) -> None:
        if self.turn_index < 0:
            raise ValueError(f"turn_index must be >= 0, not {self.turn_index}")
        for name in METRIC_FLOATS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number or None, not {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TurnMetrics:
        """The inverse of `to_dict()`; unknown keys are ignored, missing ones raise `TypeError`."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for flag in ("interrupted", "preemptive"):
            if flag in values:
                values[flag] = bool(values[flag])
        return cls(**values)


METRIC_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TurnMetrics))
"""`TurnMetrics` field names in declaration order (the SQLite backend's column order)."""
METRIC_FLOATS: tuple[str, ...] = tuple(n for n in METRIC_COLUMNS if n.endswith(("_ms", "_s", "_at")))
"""The `TurnMetrics` fields that hold times (must be finite: JSON has no NaN or infinity)."""


@dataclass(frozen=True, slots=True)
class ToolCallRecord(_Record):
    """One tool call an agent made during a conversation, with its result."""

    conversation_id: str
    turn_index: int
    """The reply's turn (-1 for replies that answer no caller turn: `say`, `generate_reply`)."""
    call_id: str
    """The LLM provider's id for the call."""
    name: str
    """The tool's name."""
    arguments: str
    """The arguments as JSON text."""
    result: str
    """What the LLM read: the result, or the error message."""
    is_error: bool
    cancelled: bool
    """A barge-in cancelled it."""
    started_at: float
    """Unix seconds."""
    duration_ms: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCallRecord:
        values = {f.name: data[f.name] for f in fields(cls)}
        values["is_error"], values["cancelled"] = bool(values["is_error"]), bool(values["cancelled"])
        return cls(**values)


TOOL_CALL_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ToolCallRecord))
