"""Test and benchmark helpers: a real-time WebSocket caller and synthetic signals.

Fakes, not mocks: these speak the real wire protocols over real sockets on loopback.
"""

from agentkit.testing._signals import concat, rms_dbfs, silence, speech_bounds, tone
from agentkit.testing._ws_caller import (
    CallRefusedError,
    PlayResult,
    ReceivedAudio,
    ReceivedEvent,
    WebSocketCaller,
)

__all__ = [
    "CallRefusedError",
    "PlayResult",
    "ReceivedAudio",
    "ReceivedEvent",
    "WebSocketCaller",
    "concat",
    "rms_dbfs",
    "silence",
    "speech_bounds",
    "tone",
]
