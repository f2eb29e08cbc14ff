"""agentkit: real-time voice agents.

The public names are re-exported here; everything in a `_module` is private.
"""

from agentkit.audio import AudioFrame, StreamingResampler, read_wav, write_wav
from agentkit.exceptions import (
    AgentkitError,
    AudioFormatError,
    CapacityError,
    ConfigError,
    ModelNotFoundError,
    ProtocolError,
    ProviderError,
    TimeLimitError,
)
from agentkit.stream import (
    AdditionalOutputs,
    AsyncStreamHandler,
    ReplyOnPause,
    Stream,
    StreamHandler,
    TurnTakingOptions,
)

__version__ = "0.1.0"

__all__ = [
    "AdditionalOutputs",
    "AgentkitError",
    "AsyncStreamHandler",
    "AudioFormatError",
    "AudioFrame",
    "CapacityError",
    "ConfigError",
    "ModelNotFoundError",
    "ProtocolError",
    "ProviderError",
    "ReplyOnPause",
    "Stream",
    "StreamHandler",
    "StreamingResampler",
    "TimeLimitError",
    "TurnTakingOptions",
    "__version__",
    "read_wav",
    "write_wav",
]
