"""Synthetic test signals and the speech-activity measure the latency benchmarks share.

Tones and silences stand in for speech where a test needs exact, reproducible audio; `speech_bounds`
is the definition of "when the caller spoke" used on the client's send schedule: the first and last
10 ms block whose RMS is above a threshold (-45 dBFS by default).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from agentkit.audio import AudioFrame, Samples

__all__ = ["concat", "rms_dbfs", "silence", "speech_bounds", "tone"]

SPEECH_DBFS = -45.0
"""Default threshold of `speech_bounds`: a 10 ms block louder than this counts as speech."""

_BLOCK_S = 0.01
_FLOOR = 1e-12  # keeps log10 finite on digital silence (-240 dBFS)


def tone(freq_hz: float, duration_s: float, sample_rate: int = 16000, amplitude: float = 0.5) -> AudioFrame:
    """A sine of `freq_hz` lasting `duration_s` seconds, with peak `amplitude` (0..1 of full scale).

    Its RMS is `20*log10(amplitude/sqrt(2))` dBFS: -9 dBFS at the default amplitude.
    """
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError("amplitude must be within [0, 1]")
    n = round(duration_s * sample_rate)
    t = np.arange(n, dtype=np.float64) / sample_rate
    samples = (amplitude * np.sin(2.0 * np.pi * freq_hz * t)).astype(np.float32)
    return AudioFrame(samples, sample_rate)


def silence(duration_s: float, sample_rate: int = 16000) -> AudioFrame:
    """Digital silence lasting `duration_s` seconds."""
    return AudioFrame.silence(duration_s, sample_rate)


def concat(*frames: AudioFrame) -> AudioFrame:
    """Join frames of one sample rate end to end (timestamp 0)."""
    if not frames:
        raise ValueError("concat needs at least one frame")
    joined = AudioFrame.concat(list(frames))
    return AudioFrame(joined.samples, joined.sample_rate)


def rms_dbfs(samples: npt.NDArray[Any]) -> float:
    """RMS level of float samples (full scale = 1.0) in dBFS; about -240 for digital silence."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return 20.0 * float(np.log10(_FLOOR))
    return 20.0 * float(np.log10(np.sqrt(np.mean(x * x)) + _FLOOR))


def _block_dbfs(samples: Samples, sample_rate: int) -> npt.NDArray[np.float64]:
    """RMS level in dBFS of each whole 10 ms block of `samples` (a trailing partial block is ignored)."""
    hop = max(1, sample_rate // round(1 / _BLOCK_S))
    n = samples.shape[0] // hop
    blocks = np.asarray(samples[: n * hop], dtype=np.float64).reshape(n, hop)
    rms: npt.NDArray[np.float64] = np.sqrt(np.mean(blocks * blocks, axis=1))
    return 20.0 * np.log10(rms + _FLOOR)


def speech_bounds(
    samples: Samples, sample_rate: int, dbfs: float = SPEECH_DBFS
) -> tuple[float, float] | None:
    """`(start_s, end_s)` of the audible part of `samples`, or `None` if no block is louder than `dbfs`.

    `start_s` is the start of the first 10 ms block whose RMS exceeds `dbfs`; `end_s` is the end of the
    last such block, so both are multiples of 10 ms.
    """
    hop = max(1, sample_rate // round(1 / _BLOCK_S))
    loud = np.nonzero(_block_dbfs(samples, sample_rate) > dbfs)[0]
    if loud.size == 0:
        return None
    return int(loud[0]) * hop / sample_rate, (int(loud[-1]) + 1) * hop / sample_rate
