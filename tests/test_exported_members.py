"""The public facade exports exactly the intended names, and each of them resolves."""

from __future__ import annotations

import agentkit
import agentkit.audio
import agentkit.stream

INTENDED = {
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
}


def test_top_level_exports_are_exactly_the_intended_ones() -> None:
    assert set(agentkit.__all__) == INTENDED
    for name in agentkit.__all__:
        assert hasattr(agentkit, name), name


def test_subpackage_exports_resolve_and_are_public() -> None:
    for module in (agentkit.audio, agentkit.stream):
        for name in module.__all__:
            assert not name.startswith("_")
            assert getattr(module, name) is not None
