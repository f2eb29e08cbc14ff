"""Voice activity detection: the `VAD` Protocol and the Silero implementation."""

from agentkit.providers.vad._base import VAD, BatchedVAD, VADStream
from agentkit.providers.vad._silero import SileroVAD

__all__ = ["VAD", "BatchedVAD", "SileroVAD", "VADStream"]
