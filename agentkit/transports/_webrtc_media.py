"""Audio between aiortc and a `Session`: the outgoing track and the incoming frames' conversion.

aiortc's Opus codec works at 48 kHz in 20 ms frames, so the session talks to a WebRTC peer at
48 kHz both ways and its streaming resamplers do the rest.
"""

from __future__ import annotations

import collections
import fractions
import logging

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agentkit.clock import Clock, MonotonicClock
from agentkit.exceptions import AudioFormatError

__all__ = ["FRAME_MS", "WEBRTC_SAMPLE_RATE", "OutgoingAudioTrack", "frame_to_mono_pcm16"]

logger = logging.getLogger(__name__)

WEBRTC_SAMPLE_RATE = 48000
FRAME_MS = 20
_SAMPLES_PER_FRAME = WEBRTC_SAMPLE_RATE * FRAME_MS // 1000
_FRAME_BYTES = _SAMPLES_PER_FRAME * 2
_SILENCE = bytes(_FRAME_BYTES)
_TIME_BASE = fractions.Fraction(1, WEBRTC_SAMPLE_RATE)


class OutgoingAudioTrack(MediaStreamTrack):
    """The agent's voice: 20 ms mono 16-bit frames at 48 kHz, handed to aiortc's RTP sender.

    `put()` queues frames that the session's pacer already sends in real time with a small lead, so
    the queue stays short; it is bounded (`max_frames`) and drops the oldest frame when full, counting
    it in `dropped_frames`. `recv()` paces itself on `clock` (aiortc's sender pulls as fast as it
    gets frames) and returns silence when nothing is queued, so RTP timestamps advance steadily.
    `clear()` empties the queue at once (barge-in).
    """

    kind = "audio"

    def __init__(self, *, max_frames: int = 10, clock: Clock | None = None) -> None:
        super().__init__()
        if max_frames < 1:
            raise ValueError("max_frames must be at least 1")
        self._queue: collections.deque[bytes] = collections.deque()
        self._max_frames = max_frames
        self._clock: Clock = clock or MonotonicClock()
        self._start_s: float | None = None
        self._pts = 0
        self.dropped_frames = 0
        """Frames dropped because the queue was full (the consumer fell behind)."""
        self.cleared_frames = 0
        """Frames dropped by `clear()` (barge-in)."""
        self.sent_frames = 0
        """Frames of queued audio handed to the sender (silence fill not counted)."""

    @property
    def queued_frames(self) -> int:
        return len(self._queue)

    def put(self, payload: bytes) -> None:
        """Queue 16-bit PCM of at most one frame; a short one is padded with silence."""
        if len(payload) > _FRAME_BYTES or len(payload) % 2:
            raise AudioFormatError("a WebRTC frame is at most 20 ms of 16-bit PCM", num_bytes=len(payload))
        if len(payload) < _FRAME_BYTES:
            payload += bytes(_FRAME_BYTES - len(payload))
        if len(self._queue) >= self._max_frames:
            self._queue.popleft()
            self.dropped_frames += 1
        self._queue.append(payload)

    def clear(self) -> int:
        """Drop every queued frame; returns how many."""
        count = len(self._queue)
        self._queue.clear()
        self.cleared_frames += count
        return count

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start_s is None:
            self._start_s = self._clock.now()
        else:
            self._pts += _SAMPLES_PER_FRAME
            await self._clock.sleep_until(self._start_s + self._pts / WEBRTC_SAMPLE_RATE)
        if self._queue:
            payload = self._queue.popleft()
            self.sent_frames += 1
        else:
            payload = _SILENCE
        frame = av.AudioFrame(format="s16", layout="mono", samples=_SAMPLES_PER_FRAME)
        frame.planes[0].update(payload)
        frame.pts = self._pts
        frame.sample_rate = WEBRTC_SAMPLE_RATE
        frame.time_base = _TIME_BASE
        return frame

    def stop(self) -> None:
        self._queue.clear()
        super().stop()


def frame_to_mono_pcm16(frame: av.AudioFrame) -> bytes:
    """Mono 16-bit little-endian PCM of a decoded 16-bit frame (packed or planar), channels averaged."""
    if frame.format.name not in ("s16", "s16p"):
        raise AudioFormatError("expected 16-bit audio from the decoder", format=frame.format.name)
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    planes = data if frame.format.is_planar else data.reshape(-1, channels).T
    mono = planes[0] if channels == 1 else planes.astype(np.int32).sum(axis=0) // channels
    return bytes(mono.astype("<i2").tobytes())
