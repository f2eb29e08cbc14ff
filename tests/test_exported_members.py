"""The public facade exports exactly the intended names, and each of them resolves."""

from __future__ import annotations

import agentkit
import agentkit.agent
import agentkit.audio
import agentkit.providers
import agentkit.server
import agentkit.store
import agentkit.stream
import agentkit.transports

INTENDED = {
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
}


def test_top_level_exports_are_exactly_the_intended_ones() -> None:
    assert set(agentkit.__all__) == INTENDED
    for name in agentkit.__all__:
        assert hasattr(agentkit, name), name


def test_subpackage_exports_resolve_and_are_public() -> None:
    modules = (
        agentkit.agent,
        agentkit.audio,
        agentkit.providers,
        agentkit.server,
        agentkit.store,
        agentkit.stream,
        agentkit.transports,
    )
    for module in modules:
        for name in module.__all__:
            assert not name.startswith("_")
            assert getattr(module, name) is not None


def test_stream_is_the_core_with_endpoints() -> None:
    assert agentkit.Stream is agentkit.transports.Stream
    assert issubclass(agentkit.Stream, agentkit.stream.SessionHost)
    assert "Stream" not in agentkit.stream.__all__ and "SessionHost" in agentkit.stream.__all__
    assert not hasattr(agentkit.stream.SessionHost, "mount")
    assert set(agentkit.transports.__all__) == {"MountedTransports", "Stream", "mount"}


def test_interruption_events_are_exported() -> None:
    """False interruptions: the wire events in `agentkit.stream`, the agent's typed ones in
    `agentkit.agent` (and in the `AgentEvent` union); the gate itself stays private."""
    import typing

    from agentkit.agent import AgentEvent

    assert {"PlaybackPaused", "PlaybackResumed", "FalseInterruptionReason"} <= set(agentkit.stream.__all__)
    agent_events = {"InterruptionSuspected", "InterruptionConfirmed", "FalseInterruption"}
    assert agent_events <= set(agentkit.agent.__all__)
    assert agent_events <= {t.__name__ for t in typing.get_args(AgentEvent)}
    assert not {"InterruptionGate", "InterruptionDecision"} & set(agentkit.stream.__all__)


def test_the_conversation_api_is_served_by_the_server_not_the_store() -> None:
    served = {"add_web_routes", "conversation_api", "create_app", "session_api", "uvicorn_options"}
    assert set(agentkit.server.__all__) == served
    assert "conversation_api" not in agentkit.store.__all__


def test_providers_exports() -> None:
    assert set(agentkit.providers.__all__) == {
        "LLM",
        "STT",
        "TTS",
        "VAD",
        "AnthropicLLM",
        "ChatMessage",
        "ElevenLabsTTS",
        "EndOfTurnModel",
        "FallbackLLM",
        "FallbackSTT",
        "FallbackTTS",
        "GroqLLM",
        "GroqSTT",
        "KokoroTTS",
        "LLMChunk",
        "LLMUsage",
        "LocalLLM",
        "MoonshineSTT",
        "SileroVAD",
        "SmartTurn",
        "Transcript",
        "VADStream",
        "resolve_llm",
        "resolve_stt",
        "resolve_tts",
    }


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
    }
    for name in agentkit.testing.__all__:
        assert hasattr(agentkit.testing, name), name


def test_testing_kit_loads_aiortc_only_when_a_webrtc_helper_is_used() -> None:
    import subprocess
    import sys

    script = (
        "import sys, agentkit.testing as t; "
        "assert 'aiortc' not in sys.modules and 'av' not in sys.modules, 'eager'; "
        "assert 'WebRTCCaller' in dir(t); "
        "t.loopback_ice; assert 'aiortc' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
