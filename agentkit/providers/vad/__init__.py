"""Voice activity detection: the `VAD` Protocol and the Silero implementation."""

from agentkit.providers.vad._base import VAD, BatchedVAD, MultiRateVAD, VADStream
from agentkit.providers.vad._silero import SileroVAD

__all__ = ["VAD", "BatchedVAD", "MultiRateVAD", "SileroVAD", "VADStream"]
