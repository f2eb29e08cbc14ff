"""Test and benchmark helpers: a real-time WebSocket caller, a Twilio phone-call simulator
(`TwilioCaller`), synthetic signals, in-process provider
fakes (`ScriptedSTT`, `ScriptedLLM`, `ToneTTS`) and local fake servers for the cloud APIs.

Fakes, not mocks: these speak the real wire protocols over real sockets on loopback.
"""

from agentkit.testing._providers import LLMCall, ScriptedLLM, ScriptedSTT, ToneTTS
from agentkit.testing._signals import concat, rms_dbfs, silence, speech_bounds, tone
from agentkit.testing._twilio_caller import TwilioCaller, WebhookAnswer, sign_twilio_request
from agentkit.testing._ws_caller import (
    CallRefusedError,
    PlayResult,
    ReceivedAudio,
    ReceivedEvent,
    WebSocketCaller,
)
from agentkit.testing.fakes import FakeAnthropic, FakeElevenLabs, FakeGroq, FakeRequest, FakeTwilio, Reply

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
    "Reply",
    "ScriptedLLM",
    "ScriptedSTT",
    "ToneTTS",
    "TwilioCaller",
    "WebSocketCaller",
    "WebhookAnswer",
    "concat",
    "rms_dbfs",
    "sign_twilio_request",
    "silence",
    "speech_bounds",
    "tone",
]
