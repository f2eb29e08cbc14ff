"""Test and benchmark helpers: a real-time WebSocket caller, a WebRTC caller (`WebRTCCaller`, with
`loopback_ice`), a Twilio phone-call simulator (`TwilioCaller`), an in-memory session transport
(`RecordingTransport`, `open_recorded_session`), synthetic signals, in-process provider fakes
(`ScriptedSTT`, `ScriptedLLM`, `ToneTTS`) and local fake servers for the cloud APIs.

Fakes, not mocks: these speak the real wire protocols over real sockets on loopback.

`WebRTCCaller` and `loopback_ice` need aiortc; they are imported on first use, so importing this
package does not load aiortc (or PyAV).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentkit.testing._providers import LLMCall, ScriptedLLM, ScriptedReply, ScriptedSTT, ToneTTS
from agentkit.testing._signals import concat, rms_dbfs, silence, speech_bounds, tone
from agentkit.testing._transport import RecordingTransport, open_recorded_session
from agentkit.testing._twilio_caller import TwilioCaller, WebhookAnswer, sign_twilio_request
from agentkit.testing._ws_caller import (
    CallRefusedError,
    PlayResult,
    ReceivedAudio,
    ReceivedEvent,
    WebSocketCaller,
)
from agentkit.testing.fakes import FakeAnthropic, FakeElevenLabs, FakeGroq, FakeRequest, FakeTwilio, Reply

if TYPE_CHECKING:
    from agentkit.testing._webrtc_caller import WebRTCCaller, loopback_ice

__all__ = [
    "CallRefusedError",
    "FakeAnthropic",
    "FakeElevenLabs",
    "FakeGroq",
    "FakeRequest",
    "FakeTwilio",
    "LLMCall",
    "PlayResult",
    "ReceivedAudio",
    "ReceivedEvent",
    "RecordingTransport",
    "Reply",
    "ScriptedLLM",
    "ScriptedReply",
    "ScriptedSTT",
    "ToneTTS",
    "TwilioCaller",
    "WebRTCCaller",
    "WebSocketCaller",
    "WebhookAnswer",
    "concat",
    "loopback_ice",
    "open_recorded_session",
    "rms_dbfs",
    "sign_twilio_request",
    "silence",
    "speech_bounds",
    "tone",
]

_LAZY = {"WebRTCCaller": "agentkit.testing._webrtc_caller", "loopback_ice": "agentkit.testing._webrtc_caller"}
"""Names imported on first access (module `__getattr__`), with the module that defines them."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
