"""`WebRTCCaller`: an aiortc peer that calls agentkit's WebRTC endpoint, for tests and benchmarks.

It posts an offer to `{base_url}/webrtc/offer` with httpx, sends audio from a microphone track that
plays queued samples in real time (silence otherwise) and records everything it receives: the reply
audio track, frame by frame with the clock reading at receipt, and the JSON events of the `events`
data channel.

Networking: the caller uses no STUN or TURN server. aioice leaves loopback addresses out of its host
candidates, so a caller and a server on one machine find no path unless `loopback_ice()` is active:
it makes aioice offer 127.0.0.1 only, for every peer in this process (server included), which keeps
the call on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

import aioice.ice
import av
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agentkit.audio import AudioFrame, Samples, StreamingResampler, float_to_pcm16, pcm16_to_float
from agentkit.testing._signals import SPEECH_DBFS, rms_dbfs, speech_bounds
from agentkit.testing._ws_caller import CallRefusedError, ReceivedAudio, ReceivedEvent
from agentkit.transports._webrtc_media import frame_to_mono_pcm16

__all__ = ["MicrophoneTrack", "WebRTCCaller", "loopback_ice"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
_FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
_T = TypeVar("_T")


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """While active, aioice gathers a single host candidate: 127.0.0.1 (see the module docstring)."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


class MicrophoneTrack(MediaStreamTrack):
    """A 48 kHz mono microphone: plays what `play()` queued, in real time, and silence otherwise.

    Frame i is handed to the sender at `t0 + (i + 1) * 20 ms` (after its audio has "happened"), and the
    clock reading then is recorded per queued sample position, so a sample's send time is known.
    """

    kind = "audio"

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self._clock = clock
        self._pcm = bytearray()  # queued 16-bit PCM not yet sent
        self._start_t: float | None = None
        self._index = 0
        self.queued_total = 0
        """Samples ever queued by `play` (send-time positions count from 0 here)."""
        self.sent_total = 0
        """Queued samples handed to the sender so far."""
        self.sent_t: list[float] = []
        """Per 20 ms frame of queued audio, the clock reading when it went to the sender."""
        self.drained = asyncio.Event()

    def queue(self, samples: Samples) -> int:
        """Queue float samples at 48 kHz; returns the position of the first one."""
        first = self.queued_total
        padded = np.pad(samples, (0, -samples.shape[0] % FRAME_SAMPLES))  # frames stay aligned
        self._pcm += float_to_pcm16(padded)
        self.queued_total += int(padded.shape[0])
        self.drained.clear()
        return first

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start_t is None:
            self._start_t = self._clock()
        self._index += 1
        delay = self._start_t + self._index * _FRAME_S - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = bytes(self._pcm[: FRAME_SAMPLES * 2])
        del self._pcm[: FRAME_SAMPLES * 2]
        if chunk:
            self.sent_t.append(self._clock())
            self.sent_total += len(chunk) // 2
            if not self._pcm:
                self.drained.set()
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(chunk + bytes(FRAME_SAMPLES * 2 - len(chunk)))
        frame.pts = (self._index - 1) * FRAME_SAMPLES
        frame.sample_rate = SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


class WebRTCCaller:
    """Use as `async with WebRTCCaller(base_url) as caller:`; entering returns once the call is connected.

    Raises `CallRefusedError` (with the server's `error` code) when the offer is refused. Times are
    readings of `clock` (`time.perf_counter` by default), in seconds. `caller` goes with the offer as
    the unverified caller label, `caller_token` (`agentkit.caller_token`) as the verified caller id.
    """

    def __init__(
        self,
        base_url: str,
        *,
        session_id: str | None = None,
        caller: str | None = None,
        caller_token: str | None = None,
        connect_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._body: dict[str, Any] = {"type": "offer"}
        if session_id is not None:
            self._body["session_id"] = session_id
        if caller is not None:
            self._body["caller"] = caller
        if caller_token is not None:
            self._body["caller_token"] = caller_token
        self._connect_timeout_s = connect_timeout_s
        self._clock = clock
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = MicrophoneTrack(clock)
        self.channel = self.pc.createDataChannel("events")
        self.session_id: str | None = None
        self.events: list[ReceivedEvent] = []
        """Every JSON message of the data channel, in order."""
        self.audio_chunks: list[ReceivedAudio] = []
        """Every decoded frame of the server's track (silence included), in order."""
        self._update = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._channel_open = asyncio.Event()
        self.channel.on("open", self._channel_open.set)
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._update.set)

    async def __aenter__(self) -> Self:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def offer(self) -> dict[str, Any]:
        """Make the offer body (SDP with every local candidate) without sending it."""
        self.pc.addTrack(self.microphone)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {**self._body, "sdp": self.pc.localDescription.sdp}

    async def connect(self) -> None:
        body = await self.offer()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self._connect_timeout_s) as http:
            response = await http.post("/webrtc/offer", json=body)
        if response.status_code != 200:
            code = response.json().get("error")
            raise CallRefusedError(
                f"offer refused with HTTP {response.status_code}", error_code=code, close_code=None
            )
        answer = response.json()
        self.session_id = answer["session_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await self._wait_until(
            lambda: self._channel_open.is_set() or None, self._connect_timeout_s, "connection"
        )

    async def close(self) -> None:
        self.microphone.stop()
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    # ------------------------------------------------------------------ receiving

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            task = asyncio.create_task(self._receive(track), name="webrtc-caller-receive")
            self._tasks.add(task)

    async def _receive(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            assert isinstance(frame, av.AudioFrame)
            t = self._clock()
            samples = pcm16_to_float(frame_to_mono_pcm16(frame))
            self.audio_chunks.append(ReceivedAudio(t, samples, frame.sample_rate, t))
            self._update.set()

    def _on_message(self, message: str | bytes) -> None:
        data = json.loads(message)
        self.events.append(ReceivedEvent(str(data.get("type")), data, self._clock()))
        self._update.set()

    def events_of(self, type: str) -> list[ReceivedEvent]:
        return [e for e in self.events if e.type == type]

    def received_audio(self, since_t: float = float("-inf")) -> AudioFrame:
        """The server's track as received from `since_t` on, silence included, at 48 kHz."""
        parts = [c.samples for c in self.audio_chunks if c.t >= since_t]
        return AudioFrame(np.concatenate(parts) if parts else np.zeros(0, np.float32), SAMPLE_RATE)

    def first_audio_after(self, t: float, dbfs: float | None = SPEECH_DBFS) -> float | None:
        """Receipt time of the first received frame at or after `t` louder than `dbfs` (None: any)."""
        return next(
            (c.t for c in self.audio_chunks if c.t >= t and (dbfs is None or rms_dbfs(c.samples) > dbfs)),
            None,
        )

    async def wait_for_event(self, type: str, timeout_s: float = 5.0, *, since: int = 0) -> ReceivedEvent:
        find = lambda: next((e for e in self.events[since:] if e.type == type), None)  # noqa: E731
        return await self._wait_until(find, timeout_s, f"a {type!r} event")

    async def wait_for_audio_after(
        self, t: float, timeout_s: float = 5.0, *, dbfs: float | None = SPEECH_DBFS
    ) -> float:
        """Receipt time of the first frame at or after `t` louder than `dbfs` (None: any), waiting."""
        return await self._wait_until(lambda: self.first_audio_after(t, dbfs), timeout_s, "reply audio")

    async def _wait_until(self, find: Callable[[], _T | None], timeout_s: float, what: str) -> _T:
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    self._update.clear()
                    found = find()
                    if found is not None:
                        return found
                    if self.pc.connectionState in ("failed", "closed"):
                        raise ConnectionError(f"the call ended before {what} arrived")
                    await self._update.wait()
        except TimeoutError:
            raise TimeoutError(f"no {what} within {timeout_s} s") from None

    # ------------------------------------------------------------------ sending

    def send_json(self, message: dict[str, Any]) -> None:
        self.channel.send(json.dumps(message))

    async def play(self, audio: AudioFrame, *, tail_silence_s: float = 1.0) -> float | None:
        """Speak `audio` then `tail_silence_s` of silence in real time; returns when speech ended.

        The return value is the clock reading when the frame holding the last speech sample went to
        the sender (None if `audio` holds no speech).
        """
        resampler = StreamingResampler(audio.sample_rate, SAMPLE_RATE)
        samples = await asyncio.to_thread(resampler.process, audio.samples, last=True)
        tail = np.zeros(round(tail_silence_s * SAMPLE_RATE), dtype=np.float32)
        first = self.microphone.queue(np.concatenate([samples, tail]))
        await self.microphone.drained.wait()
        bounds = speech_bounds(samples, SAMPLE_RATE)
        if bounds is None:
            return None
        last = first + round(bounds[1] * SAMPLE_RATE) - 1
        return self.microphone.sent_t[last // FRAME_SAMPLES]
