"""Conversions between float32 samples and 16-bit PCM bytes."""

from __future__ import annotations

import numpy as np

from agentkit.audio._frame import Samples
from agentkit.exceptions import AudioFormatError

__all__ = ["float_to_pcm16", "pcm16_to_float"]


def pcm16_to_float(data: bytes | bytearray | memoryview) -> Samples:
    """Little-endian signed 16-bit PCM bytes → float32 samples in [-1, 1)."""
    if len(data) % 2:
        raise AudioFormatError("16-bit PCM must have an even number of bytes", num_bytes=len(data))
    return np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(1.0 / 32768.0)


def float_to_pcm16(samples: Samples) -> bytes:
    """Float samples → little-endian signed 16-bit PCM bytes, clipping to the 16-bit range."""
    scaled = np.clip(samples * np.float32(32768.0), -32768.0, 32767.0)
    return bytes(np.rint(scaled).astype("<i2").tobytes())
