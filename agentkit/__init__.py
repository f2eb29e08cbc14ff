"""agentkit: real-time voice agents.

The public names are re-exported here; everything in a `_module` is private.
"""

from agentkit.agent import Agent, StageTimeouts, prompt
from agentkit.audio import AudioFrame, StreamingResampler, read_wav, write_wav
from agentkit.exceptions import (
    AgentkitError,
    AudioFormatError,
    CapacityError,
    ConfigError,
    ModelNotFoundError,
    ProtocolError,
    ProviderError,
    ProviderTimeoutError,
    TimeLimitError,
    TransportClosedError,
)
from agentkit.stream import (
    AdditionalOutputs,
    AsyncStreamHandler,
    ReplyOnPause,
    StreamHandler,
    TurnTakingOptions,
)
from agentkit.transports import Stream

__version__ = "0.1.0"

__all__ = [
    "AdditionalOutputs",
    "Agent",
    "AgentkitError",
    "AsyncStreamHandler",
    "AudioFormatError",
    "AudioFrame",
    "CapacityError",
    "ConfigError",
    "ModelNotFoundError",
    "ProtocolError",
    "ProviderError",
    "ProviderTimeoutError",
    "ReplyOnPause",
    "StageTimeouts",
    "Stream",
    "StreamHandler",
    "StreamingResampler",
    "TimeLimitError",
    "TransportClosedError",
    "TurnTakingOptions",
    "__version__",
    "prompt",
    "read_wav",
    "write_wav",
]
