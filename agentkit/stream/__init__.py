"""The Stream core: sessions, handler kinds, turn-taking and barge-in."""

from agentkit.stream._events import (
    AdditionalOutputsEvent,
    ErrorEvent,
    Event,
    Interrupted,
    PauseDetected,
    ResponseDone,
    ResponseStarting,
    StartedTalking,
    Stopped,
)
from agentkit.stream._handlers import (
    AdditionalOutputs,
    AsyncStreamHandler,
    EmitType,
    HandlerContext,
    ReplyEnd,
    StreamHandler,
)
from agentkit.stream._reply_on_pause import ReplyFn, ReplyOnPause
from agentkit.stream._session import CallControl, Codec, PlayoutReporter, Session, Transport
from agentkit.stream._stream import Mode, Stream
from agentkit.stream._turn import (
    TurnDetector,
    TurnDiscarded,
    TurnEnded,
    TurnEvent,
    TurnStarted,
    TurnState,
    TurnTakingOptions,
)

__all__ = [
    "AdditionalOutputs",
    "AdditionalOutputsEvent",
    "AsyncStreamHandler",
    "CallControl",
    "Codec",
    "EmitType",
    "ErrorEvent",
    "Event",
    "HandlerContext",
    "Interrupted",
    "Mode",
    "PauseDetected",
    "PlayoutReporter",
    "ReplyEnd",
    "ReplyFn",
    "ReplyOnPause",
    "ResponseDone",
    "ResponseStarting",
    "Session",
    "StartedTalking",
    "Stopped",
    "Stream",
    "StreamHandler",
    "Transport",
    "TurnDetector",
    "TurnDiscarded",
    "TurnEnded",
    "TurnEvent",
    "TurnStarted",
    "TurnState",
    "TurnTakingOptions",
]
