"""WebSocket close codes (RFC 6455 §7.4.1) and the one each of the core's `CloseReason`s becomes.

The core says why a connection ends (`CloseReason`); the WebSocket transports (agentkit's protocol,
FastRTC's and Twilio Media Streams) say it on the wire with these codes and texts.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from agentkit.stream import CloseReason

__all__ = ["WEBSOCKET_CLOSE", "websocket_close"]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutdown
CLOSE_UNSUPPORTED = 1003  # e.g. binary frames where only text is allowed
CLOSE_POLICY = 1008  # time limit, no audio, a missing or invalid token
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013  # over capacity, or too many sessions from one address

WEBSOCKET_CLOSE: Mapping[CloseReason, tuple[int, str]] = MappingProxyType(
    {
        "normal": (CLOSE_NORMAL, "normal"),
        "hang_up": (CLOSE_NORMAL, "hang_up"),
        "time_limit": (CLOSE_POLICY, "time limit reached"),
        "no_audio": (CLOSE_POLICY, "no audio"),
        "server_shutdown": (CLOSE_GOING_AWAY, "server shutdown"),
    }
)
"""Close code and default close text for each reason."""


def websocket_close(reason: CloseReason, detail: str | None = None) -> tuple[int, str]:
    """The close code and text that end a WebSocket for `reason` (`detail` replaces the default text)."""
    code, text = WEBSOCKET_CLOSE[reason]
    return code, detail or text
