"""agentkit: real-time voice agents.

The public names are re-exported here; everything in a `_module` is private.
"""

from agentkit._identity import caller_token
from agentkit.agent import (
    Agent,
    AgentSession,
    MCPServer,
    StageTimeouts,
    ToolError,
    end_call_tool,
    prompt,
    tool,
    transfer_call_tool,
)
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
    ReplyOnStopWords,
    StreamHandler,
    TurnTakingOptions,
)
from agentkit.transports import Stream

__version__ = "0.1.0"

__all__ = [
    "AdditionalOutputs",
    "Agent",
    "AgentSession",
    "AgentkitError",
    "AsyncStreamHandler",
    "AudioFormatError",
    "AudioFrame",
    "CapacityError",
    "ConfigError",
    "MCPServer",
    "ModelNotFoundError",
    "ProtocolError",
    "ProviderError",
    "ProviderTimeoutError",
    "ReplyOnPause",
    "ReplyOnStopWords",
    "StageTimeouts",
    "Stream",
    "StreamHandler",
    "StreamingResampler",
    "TimeLimitError",
    "ToolError",
    "TransportClosedError",
    "TurnTakingOptions",
    "__version__",
    "caller_token",
    "end_call_tool",
    "prompt",
    "read_wav",
    "tool",
    "transfer_call_tool",
    "write_wav",
]
