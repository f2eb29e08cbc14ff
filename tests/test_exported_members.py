"""The public facade exports exactly the intended names, and each of them resolves."""

from __future__ import annotations

import agentkit
import agentkit.agent
import agentkit.audio
import agentkit.providers
import agentkit.store
import agentkit.stream

INTENDED = {
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
}


def test_top_level_exports_are_exactly_the_intended_ones() -> None:
    assert set(agentkit.__all__) == INTENDED
    for name in agentkit.__all__:
        assert hasattr(agentkit, name), name


def test_subpackage_exports_resolve_and_are_public() -> None:
    for module in (agentkit.agent, agentkit.audio, agentkit.providers, agentkit.store, agentkit.stream):
        for name in module.__all__:
            assert not name.startswith("_")
            assert getattr(module, name) is not None


def test_testing_kit_exports() -> None:
    import agentkit.testing

    assert set(agentkit.testing.__all__) == {
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
    }
    for name in agentkit.testing.__all__:
        assert hasattr(agentkit.testing, name), name
