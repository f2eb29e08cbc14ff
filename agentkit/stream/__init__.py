"""The stream core: sessions and their host, handler kinds, turn-taking and barge-in.

No wire here: `agentkit.transports` carries sessions, and its `Stream` is the `SessionHost` with endpoints.
"""

from agentkit.stream._events import (
    AdditionalOutputsEvent,
    ErrorEvent,
    Event,
    FalseInterruptionReason,
    Interrupted,
    PauseDetected,
    PlaybackPaused,
    PlaybackResumed,
    ResponseDone,
    ResponseStarting,
    StartedTalking,
    Stopped,
    StopWordDetected,
)
from agentkit.stream._handlers import (
    AdditionalOutputs,
    AsyncStreamHandler,
    EmitType,
    HandlerContext,
    ReplyEnd,
    StreamHandler,
)
from agentkit.stream._load import LoadMonitor
from agentkit.stream._reply_on_pause import ReplyFn, ReplyOnPause
from agentkit.stream._session import (
    CallControl,
    CloseReason,
    Codec,
    Mode,
    OutputFraming,
    PlayoutReporter,
    Session,
    Transport,
)
from agentkit.stream._stop_words import ReplyOnStopWords
from agentkit.stream._stream import SessionHost
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
    "CloseReason",
    "Codec",
    "EmitType",
    "ErrorEvent",
    "Event",
    "FalseInterruptionReason",
    "HandlerContext",
    "Interrupted",
    "LoadMonitor",
    "Mode",
    "OutputFraming",
    "PauseDetected",
    "PlaybackPaused",
    "PlaybackResumed",
    "PlayoutReporter",
    "ReplyEnd",
    "ReplyFn",
    "ReplyOnPause",
    "ReplyOnStopWords",
    "ResponseDone",
    "ResponseStarting",
    "Session",
    "SessionHost",
    "StartedTalking",
    "StopWordDetected",
    "Stopped",
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
