"""`WebSocketCaller`: a real-time caller speaking agentkit's native WebSocket protocol.

It behaves like a live microphone and loudspeaker (see docs/websocket-protocol.md):

- audio goes out in `frame_ms` frames on an absolute schedule; frame i of a run is sent at
  `t0 + (i + 1) * frame`, after the audio it holds has "happened", so measured latencies include the
  capture granularity a real client has;
- everything the server sends is recorded with the caller's clock reading at receipt;
- reply audio is "played" by a virtual player from the moment it arrives, at real time; an
  `interrupted` or `playback_paused` message with `clear: true` drops whatever was received but not
  yet played, and `heard_audio()` is what the caller heard.

Times called `t` or `*_t` are readings of the injected clock (`time.perf_counter` by default), in seconds.
Waits (`timeout_s`) are real-time bounds enforced by asyncio, whatever the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agentkit.audio import AudioFrame, Samples, StreamingResampler, float_to_pcm16, pcm16_to_float
from agentkit.clock import Clock
from agentkit.exceptions import AgentkitError
from agentkit.testing._signals import SPEECH_DBFS, speech_bounds

__all__ = ["CallRefusedError", "PlayResult", "ReceivedAudio", "ReceivedEvent", "WebSocketCaller"]

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0
_T = TypeVar("_T")


class _FunctionClock:
    """Adapts a bare time function (like `time.perf_counter`) to the `Clock` protocol."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self._now()
        if delay > 0:
            await asyncio.sleep(delay)


class CallRefusedError(AgentkitError):
    """The server did not start the session: it answered `start` with an error, or closed the socket."""

    code = "call_refused"

    def __init__(self, message: str, *, error_code: str | None, close_code: int | None) -> None:
        super().__init__(
            message,
            retryable=error_code in ("over_capacity", "busy", "too_many_sessions"),
            error_code=error_code,
            close_code=close_code,
        )
        self.error_code = error_code
        """The `code` of the server's `error` message, if it sent one."""
        self.close_code = close_code
        """The WebSocket close code, if the connection closed."""


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """One JSON message from the server."""

    type: str
    """The message's `type` field."""
    data: dict[str, Any]
    """The whole decoded message, `type` included."""
    t: float
    """Clock reading at receipt, in seconds."""


@dataclass(frozen=True, slots=True)
class ReceivedAudio:
    """One binary message of reply audio, decoded."""

    t: float
    """Clock reading at receipt, in seconds."""
    samples: Samples = field(repr=False)
    """Mono float32 samples in [-1, 1)."""
    sample_rate: int
    """The session's output sample rate, in Hz."""
    play_start_t: float
    """When the virtual player starts playing it: at receipt, or when the audio queued before it ends."""

    @property
    def duration_s(self) -> float:
        return int(self.samples.shape[0]) / self.sample_rate


@dataclass(frozen=True, slots=True)
class PlayResult:
    """What `play` sent, and when, on the caller's clock.

    In real-time mode a sample "happens" at its place on the send schedule. With `realtime=False`
    frames go out back to back and a sample happens when the frame holding it is sent.
    """

    start_t: float
    """When the first sample (of the lead silence, if any) happened, in seconds."""
    end_t: float
    """When the last frame was due (real time) or sent (`realtime=False`), in seconds."""
    speech_start_t: float | None
    """When speech started: the first 10 ms block above `speech_dbfs`; `None` if the audio has none."""
    speech_end_t: float | None
    """When speech ended: the end of the last 10 ms block above `speech_dbfs`; `None` if none."""
    sample_rate: int
    """Rate of the audio as sent, in Hz."""
    frames_sent: int
    """Number of binary frames sent."""
    frame_sent_t: tuple[float, ...] = field(repr=False)
    """Clock reading just before each frame was handed to the socket, in seconds."""
    max_lateness_s: float
    """Largest delay of a send past its scheduled time (0 with `realtime=False`)."""
    completed: bool
    """False if the connection closed before every frame was sent."""

    @property
    def duration_s(self) -> float:
        """Length of the audio sent (whole frames, lead and tail silence included)."""
        return self.end_t - self.start_t if self.frames_sent else 0.0


class WebSocketCaller:
    """A real-time caller for tests and benchmarks; use as `async with WebSocketCaller(url) as caller:`.

    Entering connects, sends `start` (unless `auto_start=False`; then call `start()`) and waits for
    `started`, raising `CallRefusedError` if the server answers with an error or closes instead.
    Leaving closes the socket and ends the receiving task; it does not send `stop` (call `stop()`).
    `caller` is sent as the unverified caller label, `caller_token` (`agentkit.caller_token`) as the
    verified caller id.

    `clock` is an `agentkit.clock.Clock` (a virtual one makes pacing deterministic in tests) or a bare
    time function; the default, `time.perf_counter`, is the clock of the shared FastRTC benchmark client
    (and on Linux the same clock as `time.monotonic`). Sends are paced with `clock.sleep_until`.
    """

    def __init__(
        self,
        url: str,
        *,
        sample_rate: int = 16000,
        output_sample_rate: int | None = None,
        frame_ms: int = 20,
        start_args: Sequence[Any] | None = None,
        session_id: str | None = None,
        caller: str | None = None,
        caller_token: str | None = None,
        open_timeout: float = 10.0,
        auto_start: bool = True,
        clock: Clock | Callable[[], float] = time.perf_counter,
    ) -> None:
        frame_samples = sample_rate * frame_ms / 1000
        if frame_ms <= 0 or frame_samples != int(frame_samples):
            raise ValueError(f"{frame_ms} ms is not a whole number of samples at {sample_rate} Hz")
        self.url = url
        self.sample_rate = sample_rate
        """Rate of the audio the caller sends, in Hz."""
        self.requested_output_sample_rate = output_sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = int(frame_samples)
        self._frame_s = frame_ms / 1000
        self._start_args = None if start_args is None else list(start_args)
        self._session_id = session_id
        self._caller = caller
        self._caller_token = caller_token
        self._open_timeout_s = open_timeout
        self._auto_start = auto_start
        self._clock: Clock = _FunctionClock(clock) if callable(clock) else clock

        self.events: list[ReceivedEvent] = []
        """Every JSON message received, in order."""
        self.audio_chunks: list[ReceivedAudio] = []
        """Every binary message received, in order."""
        self.protocol_violations: list[str] = []
        """Messages the caller could not make sense of (should stay empty)."""
        self.started: ReceivedEvent | None = None
        """The server's `started` message, once received."""

        self._ws: ClientConnection | None = None
        self._rx_task: asyncio.Task[None] | None = None
        self._closed = False
        self._receiver_error: Exception | None = None
        self._close_code: int | None = None
        self._close_reason: str | None = None
        self._update = asyncio.Event()
        self._ping_ids = itertools.count(1)
        self._next_due_t: float | None = None  # send schedule: when the next frame is due
        self._kept_samples: list[int] = []  # per audio chunk: samples not dropped by a clear
        self._playout_end_t = float("-inf")  # when the virtual player runs out of audio

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        try:
            self._ws = await connect(
                self.url, open_timeout=self._open_timeout_s, close_timeout=_CLOSE_TIMEOUT_S
            )
            self._rx_task = asyncio.create_task(self._receive_loop(self._ws), name="ws-caller-receive")
            if self._auto_start:
                await self.start()
        except BaseException:
            await self._shutdown(raise_receiver_error=False)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._shutdown(raise_receiver_error=exc_type is None)

    async def start(self) -> ReceivedEvent:
        """Send `start` and wait for `started`; raise `CallRefusedError` on an error or a close."""
        message: dict[str, Any] = {"type": "start", "sample_rate": self.sample_rate, "encoding": "pcm_s16le"}
        if self.requested_output_sample_rate is not None:
            message["output_sample_rate"] = self.requested_output_sample_rate
        if self._session_id is not None:
            message["session_id"] = self._session_id
        if self._caller is not None:
            message["caller"] = self._caller
        if self._caller_token is not None:
            message["caller_token"] = self._caller_token
        if self._start_args is not None:
            message["args"] = self._start_args
        since = len(self.events)
        await self.send_json(message)
        try:
            event = await self._wait_until(
                lambda: next((e for e in self.events[since:] if e.type in ("started", "error")), None),
                self._open_timeout_s,
                "a 'started' message",
            )
        except ConnectionError:
            raise CallRefusedError(
                "connection closed before the session started", error_code=None, close_code=self._close_code
            ) from None
        if event.type == "error":
            code = str(event.data.get("code"))
            if event.data.get("fatal") is True:  # the close follows: report its code too
                with contextlib.suppress(TimeoutError):
                    await self.wait_closed(_CLOSE_TIMEOUT_S)
            raise CallRefusedError(
                f"server refused the session: {code}", error_code=code, close_code=self._close_code
            )
        return event

    async def stop(self, timeout_s: float = 5.0) -> ReceivedEvent:
        """Send `stop`, wait for `stopped` and for the server to close the connection."""
        stopped = self._find_event("stopped")
        if stopped is None:
            since = len(self.events)
            await self.send_json({"type": "stop"})
            stopped = await self.wait_for_event("stopped", timeout_s, since=since)
        await self.wait_closed(timeout_s)
        return stopped

    async def wait_closed(self, timeout_s: float = 5.0) -> int | None:
        """Wait until the server closes the connection; return the close code."""
        await self._wait_until(lambda: True if self._closed else None, timeout_s, "the close", closed_ok=True)
        return self._close_code

    async def _shutdown(self, *, raise_receiver_error: bool) -> None:
        if self._ws is not None:
            try:
                await self._ws.close()
            except Exception:  # the socket is being torn down anyway
                logger.debug("error while closing the caller's websocket", exc_info=True)
        task = self._rx_task
        if task is None:
            return
        try:
            if not task.done():  # closing the socket ends the loop by itself
                await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT_S)
        finally:
            if not task.done():
                task.cancel()
        if not task.done():
            await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT_S)
        if task.done() and not task.cancelled():
            error = task.exception()
            if error is not None and raise_receiver_error:
                raise error

    def _forget_connection(self) -> None:
        """After `_shutdown`: ready to connect again as the same caller (a telephone call whose media
        stream reconnects); what was received so far is kept."""
        self._ws, self._rx_task, self._closed = None, None, False
        self._receiver_error, self._close_code, self._close_reason = None, None, None
        self.started = None
        self._next_due_t = None

    # ------------------------------------------------------------------ receiving

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        """The WebSocket close code once the connection has closed."""
        return self._close_code

    @property
    def close_reason(self) -> str | None:
        """The WebSocket close reason once the connection has closed."""
        return self._close_reason

    @property
    def session_id(self) -> str | None:
        """The session id the server announced in `started`."""
        session_id = None if self.started is None else self.started.data.get("session_id")
        return session_id if isinstance(session_id, str) else None

    @property
    def output_sample_rate(self) -> int:
        """The rate of reply audio: the server's answer in `started`, else what was asked for."""
        if self.started is not None and isinstance(self.started.data.get("output_sample_rate"), int):
            return int(self.started.data["output_sample_rate"])
        return self.requested_output_sample_rate or self.sample_rate

    async def _receive_loop(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                t = self._clock.now()
                if isinstance(message, bytes):
                    self._on_audio(message, t)
                else:
                    self._on_text(message, t)
                self._notify()
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here: make waiters fail with it instead of timing out
            self._receiver_error = exc
            raise
        finally:
            self._closed = True
            self._close_code = ws.close_code
            self._close_reason = ws.close_reason
            self._notify()

    def _notify(self) -> None:
        waiters, self._update = self._update, asyncio.Event()
        waiters.set()

    def _violation(self, what: str) -> None:
        logger.debug("protocol violation from server: %s", what)
        self.protocol_violations.append(what)

    def _on_text(self, text: str, t: float) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            self._violation("text message that is not JSON")
            return
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            self._violation("JSON message without a string 'type'")
            return
        event = ReceivedEvent(type=data["type"], data=data, t=t)
        self.events.append(event)
        if event.type == "started" and self.started is None:
            self.started = event  # before any audio that follows it is decoded
        elif event.type in ("interrupted", "playback_paused") and data.get("clear") is True:
            self._clear_playout(t)

    def _on_audio(self, data: bytes, t: float) -> None:
        if self.started is None:
            self._violation("audio before 'started'")
        if len(data) % 2:
            self._violation(f"binary message of odd length {len(data)}")
            return
        rate = self.output_sample_rate
        samples = pcm16_to_float(data)
        play_start_t = max(t, self._playout_end_t)
        self._playout_end_t = play_start_t + samples.shape[0] / rate
        self.audio_chunks.append(
            ReceivedAudio(t=t, samples=samples, sample_rate=rate, play_start_t=play_start_t)
        )
        self._kept_samples.append(samples.shape[0])

    def _clear_playout(self, t: float) -> None:
        """Drop every received sample the virtual player has not played by `t`."""
        for i in range(len(self.audio_chunks) - 1, -1, -1):
            chunk = self.audio_chunks[i]
            if chunk.play_start_t + chunk.duration_s <= t:
                break  # this one and all before it were fully played
            played = max(0, round((t - chunk.play_start_t) * chunk.sample_rate))
            self._kept_samples[i] = min(self._kept_samples[i], played)
        self._playout_end_t = min(self._playout_end_t, t)

    # ------------------------------------------------------------------ queries

    def events_of(self, type: str) -> list[ReceivedEvent]:
        """The received events of one `type`, in order."""
        return [e for e in self.events if e.type == type]

    def received_audio(self) -> AudioFrame:
        """All reply audio received, concatenated (including any later cleared)."""
        return self._joined([c.samples for c in self.audio_chunks])

    def heard_audio(self, at_t: float | None = None) -> AudioFrame:
        """The reply audio the virtual player had played by `at_t` (default: now); cleared audio never plays.

        Audio plays at real time from its arrival, after whatever was queued before it.
        """
        at = self._clock.now() if at_t is None else at_t
        parts: list[Samples] = []
        for chunk, kept in zip(self.audio_chunks, self._kept_samples, strict=True):
            if kept == 0 or chunk.play_start_t >= at:
                continue  # (not in order: audio cleared unplayed was due later than what followed the clear)
            parts.append(chunk.samples[: min(kept, round((at - chunk.play_start_t) * chunk.sample_rate))])
        return self._joined(parts)

    @property
    def dropped_audio_s(self) -> float:
        """Seconds of received reply audio that clears dropped before it was played."""
        dropped = sum(
            int(c.samples.shape[0]) - k for c, k in zip(self.audio_chunks, self._kept_samples, strict=True)
        )
        return dropped / self.output_sample_rate

    @property
    def playout_end_t(self) -> float | None:
        """When the virtual player will have played all audio received so far; None before any audio."""
        return None if not self.audio_chunks else self._playout_end_t

    def first_audio_after(self, t: float) -> float | None:
        """Receipt time of the first audio chunk received at or after `t`, if any."""
        return next((c.t for c in self.audio_chunks if c.t >= t), None)

    async def wait_for_event(self, type: str, timeout_s: float = 5.0, *, since: int = 0) -> ReceivedEvent:
        """The first event of `type` among `events[since:]`, waiting for it up to `timeout_s` seconds.

        Raises `TimeoutError`, or `ConnectionError` if the connection closes first.
        """
        return await self._wait_until(lambda: self._find_event(type, since), timeout_s, f"a {type!r} message")

    async def wait_for_audio(self, timeout_s: float = 5.0, *, since: int = 0) -> ReceivedAudio:
        """The first audio chunk among `audio_chunks[since:]`, waiting for it up to `timeout_s` seconds."""
        return await self._wait_until(
            lambda: self.audio_chunks[since] if len(self.audio_chunks) > since else None, timeout_s, "audio"
        )

    def _find_event(self, type: str, since: int = 0) -> ReceivedEvent | None:
        return next((e for e in self.events[since:] if e.type == type), None)

    async def _wait_until(
        self, find: Callable[[], _T | None], timeout_s: float, what: str, *, closed_ok: bool = False
    ) -> _T:
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    update = self._update  # take it before looking, so no change is missed
                    found = find()
                    if found is not None:
                        return found
                    if self._receiver_error is not None:
                        raise RuntimeError("the caller's receiving task failed") from self._receiver_error
                    if self._closed and not closed_ok:
                        raise ConnectionError(
                            f"connection closed (code {self._close_code}) before {what} arrived"
                        )
                    await update.wait()
        except TimeoutError:
            raise TimeoutError(f"no {what} within {timeout_s} s") from None

    # ------------------------------------------------------------------ sending

    def _connection(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("WebSocketCaller is not connected; use it with 'async with'")
        return self._ws

    async def send_raw(self, data: bytes | str) -> None:
        """Send one message as is: `bytes` as a binary message, `str` as a text message."""
        await self._connection().send(data)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    async def send_input(self, *args: Any) -> None:
        """Send `{"type": "input", "args": [...]}` (the server calls `set_input(session_id, *args)`)."""
        await self.send_json({"type": "input", "args": list(args)})

    async def ping(self, timeout_s: float = 5.0) -> float:
        """Send `ping`, wait for the matching `pong`; return the round trip in seconds of the clock."""
        ping_id = next(self._ping_ids)
        since = len(self.events)
        sent_t = self._clock.now()
        await self.send_json({"type": "ping", "id": ping_id})
        pong = await self._wait_until(
            lambda: next(
                (e for e in self.events[since:] if e.type == "pong" and e.data.get("id") == ping_id), None
            ),
            timeout_s,
            "the 'pong'",
        )
        return pong.t - sent_t

    async def send_silence(self, seconds: float, *, realtime: bool = True) -> PlayResult:
        """Stream `seconds` of digital silence on the send schedule."""
        return await self.play(
            np.zeros(round(seconds * self.sample_rate), dtype=np.float32),
            lead_silence_s=0.0,
            tail_silence_s=0.0,
            realtime=realtime,
        )

    async def play(
        self,
        audio: AudioFrame | npt.NDArray[Any],
        *,
        lead_silence_s: float = 0.5,
        tail_silence_s: float = 2.0,
        realtime: bool = True,
        speech_dbfs: float = SPEECH_DBFS,
    ) -> PlayResult:
        """Stream `audio` like a microphone: lead silence, the audio, tail silence, in whole frames.

        An `AudioFrame` at another rate is resampled to `sample_rate`; a bare array is taken to be at
        `sample_rate` already (int16, or float in [-1, 1]). Stops early, with `completed=False`, if the
        connection closes.
        """
        samples = await self._to_send_rate(audio)
        lead = np.zeros(round(lead_silence_s * self.sample_rate), dtype=np.float32)
        tail = np.zeros(round(tail_silence_s * self.sample_rate), dtype=np.float32)
        buffer = np.concatenate([lead, samples, tail])
        frames = -(-buffer.shape[0] // self.frame_samples)
        buffer = np.pad(buffer, (0, frames * self.frame_samples - buffer.shape[0]))
        pcm = float_to_pcm16(buffer)
        frame_bytes = 2 * self.frame_samples
        bounds = speech_bounds(samples, self.sample_rate, speech_dbfs)

        now = self._clock.now()
        if not realtime or self._next_due_t is None or self._next_due_t < now:
            self._next_due_t = now + self._frame_s  # (re)anchor after idling: no catch-up burst
        origin_t = self._next_due_t - self._frame_s
        sent_t: list[float] = []
        max_lateness_s = 0.0
        completed = True
        for i in range(frames):
            if realtime:
                due_t = origin_t + (i + 1) * self._frame_s
                if due_t > self._clock.now():
                    await self._clock.sleep_until(due_t)
                t = self._clock.now()
                max_lateness_s = max(max_lateness_s, t - due_t)
            else:
                t = self._clock.now()
            sent_t.append(t)
            try:
                await self._connection().send(pcm[i * frame_bytes : (i + 1) * frame_bytes])
            except ConnectionClosed:
                sent_t.pop()
                completed = False
                break
        sent = len(sent_t)
        if realtime:
            end_t = origin_t + sent * self._frame_s
            self._next_due_t = end_t + self._frame_s
        else:
            origin_t = sent_t[0] if sent_t else now
            end_t = sent_t[-1] if sent_t else now
            self._next_due_t = None
        speech_start_t = speech_end_t = None
        if bounds is not None:
            first = lead.shape[0] + round(bounds[0] * self.sample_rate)  # first speech sample
            stop = lead.shape[0] + round(bounds[1] * self.sample_rate)  # one past the last
            if realtime:
                speech_start_t = origin_t + first / self.sample_rate
                speech_end_t = origin_t + stop / self.sample_rate
            else:  # a sample happened when the frame holding it went out
                speech_start_t = self._sent_t_of(first, sent_t)
                speech_end_t = self._sent_t_of(stop - 1, sent_t)
        return PlayResult(
            start_t=origin_t,
            end_t=end_t,
            speech_start_t=speech_start_t,
            speech_end_t=speech_end_t,
            sample_rate=self.sample_rate,
            frames_sent=sent,
            frame_sent_t=tuple(sent_t),
            max_lateness_s=max_lateness_s,
            completed=completed,
        )

    def _sent_t_of(self, sample_index: int, sent_t: list[float]) -> float | None:
        frame = sample_index // self.frame_samples
        return sent_t[frame] if frame < len(sent_t) else None

    async def _to_send_rate(self, audio: AudioFrame | npt.NDArray[Any]) -> Samples:
        if isinstance(audio, AudioFrame):
            if audio.sample_rate == self.sample_rate:
                return audio.samples
            resampler = StreamingResampler(audio.sample_rate, self.sample_rate)
            # the default executor, not agentkit's audio worker: an in-process server under test keeps its own
            return await asyncio.to_thread(resampler.process, audio.samples, last=True)
        array = np.asarray(audio)
        if array.ndim != 1:
            raise ValueError("play() takes mono audio: a one-dimensional array")
        if array.dtype == np.int16:
            return array.astype(np.float32) / np.float32(32768.0)
        return array.astype(np.float32)

    def _joined(self, parts: list[Samples]) -> AudioFrame:
        joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return AudioFrame(joined, self.output_sample_rate)
