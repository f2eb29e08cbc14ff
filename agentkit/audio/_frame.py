"""`AudioFrame`: the unit of audio that moves between transports, sessions and handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from agentkit.exceptions import AudioFormatError

__all__ = ["AudioFrame", "Samples"]

Samples = npt.NDArray[np.float32]
"""Mono float32 samples, nominally in [-1.0, 1.0]."""

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 96000


def check_sample_rate(sample_rate: object) -> int:
    """Return `sample_rate` as an int, or raise `AudioFormatError` if it is not a usable rate."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int):
        raise AudioFormatError("sample rate must be an integer number of Hz", sample_rate=repr(sample_rate))
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            f"sample rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz",
            sample_rate=sample_rate,
        )
    return sample_rate


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """A span of mono audio.

    Frames are immutable values: a stage that changes audio makes a new frame.
    """

    samples: Samples = field(repr=False)
    """Mono float32 samples in [-1.0, 1.0]; one-dimensional."""
    sample_rate: int
    """Samples per second."""
    timestamp_samples: int = 0
    """Position of the first sample on the session's media clock, counted in samples at `sample_rate`."""

    def __post_init__(self) -> None:
        check_sample_rate(self.sample_rate)
        samples = np.asarray(self.samples)
        if samples.ndim == 2 and 1 in samples.shape:
            samples = samples.reshape(-1)
        if samples.ndim != 1:
            raise AudioFormatError("AudioFrame holds mono audio: samples must be one-dimensional")
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        elif samples.dtype != np.float32:
            samples = samples.astype(np.float32)
        object.__setattr__(self, "samples", samples)

    @classmethod
    def silence(cls, duration_s: float, sample_rate: int, timestamp_samples: int = 0) -> AudioFrame:
        """A frame of digital silence lasting `duration_s` seconds."""
        n = round(duration_s * sample_rate)
        return cls(np.zeros(n, dtype=np.float32), sample_rate, timestamp_samples)

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def timestamp_s(self) -> float:
        return self.timestamp_samples / self.sample_rate

    @property
    def end_samples(self) -> int:
        """Media-clock position just after the last sample."""
        return self.timestamp_samples + self.num_samples

    def slice_samples(self, start: int, stop: int | None = None) -> AudioFrame:
        """The sub-frame `samples[start:stop]`, with its timestamp moved along."""
        sub = self.samples[start:stop]
        first = min(max(start, 0), self.num_samples) if start >= 0 else max(self.num_samples + start, 0)
        return AudioFrame(sub, self.sample_rate, self.timestamp_samples + first)

    @staticmethod
    def concat(frames: list[AudioFrame]) -> AudioFrame:
        """Join frames of one sample rate end to end; the result starts at the first frame's timestamp."""
        if not frames:
            raise ValueError("concat needs at least one frame")
        rate = frames[0].sample_rate
        if any(f.sample_rate != rate for f in frames):
            raise AudioFormatError("cannot concatenate frames of different sample rates")
        return AudioFrame(np.concatenate([f.samples for f in frames]), rate, frames[0].timestamp_samples)
