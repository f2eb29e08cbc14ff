"""An in-process transport that records what a session sends: for tests of handlers and sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agentkit.audio import AudioFrame, Samples, float_to_pcm16, pcm16_to_float
from agentkit.stream import CloseReason, Event, Session, SessionHost
from agentkit.transports._close_codes import websocket_close

__all__ = ["RecordingTransport", "SentAudio", "SentEvent"]


@dataclass(frozen=True, slots=True)
class SentAudio:
    t: float
    """Clock time at which the session sent the frame."""
    samples: Samples = field(repr=False)


@dataclass(frozen=True, slots=True)
class SentEvent:
    t: float
    event: Event


class RecordingTransport:
    """Implements the session's `Transport` in memory (16-bit PCM, like the WebSocket protocol)."""

    bytes_per_sample = 2

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.audio: list[SentAudio] = []
        self.events: list[SentEvent] = []
        self.closed: tuple[int, str] | None = None
        """The WebSocket close code and text the session's close would have sent, once it closed."""
        self.close_reason: CloseReason | None = None
        self._changed = asyncio.Event()

    def encode_audio(self, samples: Samples) -> bytes:
        return float_to_pcm16(samples)

    async def send_audio(self, payload: bytes) -> None:
        self.audio.append(SentAudio(self._clock(), pcm16_to_float(payload)))
        self._changed.set()

    async def send_event(self, event: Event) -> None:
        self.events.append(SentEvent(self._clock(), event))
        self._changed.set()

    async def close(self, reason: CloseReason, detail: str | None = None) -> None:
        self.close_reason = reason
        self.closed = websocket_close(reason, detail)
        self._changed.set()

    async def changed(self) -> None:
        """Wait until the session sends or closes something."""
        self._changed.clear()
        await self._changed.wait()

    def event_types(self) -> list[str]:
        return [e.event.type for e in self.events]

    def events_of(self, type: str) -> list[SentEvent]:
        return [e for e in self.events if e.event.type == type]

    def audio_since(self, t: float) -> AudioFrame | None:
        chunks = [a.samples for a in self.audio if a.t >= t]
        return AudioFrame(np.concatenate(chunks), 24000) if chunks else None

    async def wait_for(self, type: str, timeout_s: float = 5.0, *, count: int = 1) -> SentEvent:
        """Wait until `count` events of `type` were sent; return the last of them."""
        async with asyncio.timeout(timeout_s):
            while len(self.events_of(type)) < count:
                await self.changed()
        return self.events_of(type)[count - 1]


def open_recorded_session(
    stream: SessionHost, *, input_sample_rate: int = 16000, output_sample_rate: int | None = None
) -> tuple[Session, RecordingTransport]:
    """Open a session of `stream` on a fresh `RecordingTransport` (start it yourself)."""
    transport = RecordingTransport()
    session = stream.open_session(
        transport, input_sample_rate=input_sample_rate, output_sample_rate=output_sample_rate
    )
    return session, transport
