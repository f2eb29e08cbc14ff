"""Streaming resampling on python-soxr.

One `StreamingResampler` per direction per session: it keeps the filter state between chunks, so
20 ms frames join without clicks and without the edge effects of resampling each frame from scratch.
"""

from __future__ import annotations

import numpy as np
import soxr

from agentkit.audio._frame import AudioFrame, Samples, check_sample_rate

__all__ = ["StreamingResampler", "resample"]


class StreamingResampler:
    """Converts a continuous stream of mono float32 audio from `in_rate` to `out_rate`.

    Not thread-safe: one stream per instance, fed from one thread at a time. The output of each call
    is as long as the filter allows so far; `flush()` returns what is left at the end of the stream.
    `quality` is soxr's ("QQ", "LQ", "MQ", "HQ", "VHQ"); "HQ" adds about 1 ms of delay at 16 kHz.
    """

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ") -> None:
        self.in_rate = check_sample_rate(in_rate)
        self.out_rate = check_sample_rate(out_rate)
        self._quality = quality
        self._stream: soxr.ResampleStream | None = None
        self._reset()
        self._out_position = 0  # samples produced so far, for output timestamps

    def _reset(self) -> None:
        if self.in_rate != self.out_rate:
            self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, "float32", self._quality)

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    def process(self, samples: Samples, *, last: bool = False) -> Samples:
        """Resample the next chunk of the stream; `last=True` also drains the filter."""
        if self._stream is None:
            out = samples
        else:
            out = self._stream.resample_chunk(np.ascontiguousarray(samples, dtype=np.float32), last=last)
            if last:
                self._reset()
        self._out_position += int(out.shape[0])
        return out

    def flush(self) -> Samples:
        """End the stream: return the samples still inside the filter and start afresh."""
        return self.process(np.zeros(0, dtype=np.float32), last=True)

    def process_frame(self, frame: AudioFrame) -> AudioFrame:
        """Resample a frame of the stream; the output frame's timestamp is on the output rate's clock."""
        if frame.sample_rate != self.in_rate:
            raise ValueError(f"frame is {frame.sample_rate} Hz, this resampler takes {self.in_rate} Hz")
        start = self._out_position
        out = self.process(frame.samples)
        return AudioFrame(out, self.out_rate, start)


def resample(frame: AudioFrame, sample_rate: int) -> AudioFrame:
    """A whole piece of audio (a turn) at `sample_rate`, its end included: the filter is drained,
    where `StreamingResampler.process_frame` keeps the last few milliseconds for the next frame.
    CPU work: run it off the event loop (`agentkit._executor.run_turn_job`)."""
    if frame.sample_rate == sample_rate:
        return frame
    samples = StreamingResampler(frame.sample_rate, sample_rate).process(frame.samples, last=True)
    return AudioFrame(samples, sample_rate)
