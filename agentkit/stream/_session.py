"""`Session`: one caller on one transport, owning its tasks, handler copy and playout clock.

Audio in: the transport hands over encoded payloads; decoding and resampling to the handler's rate
run on the audio worker thread, then the handler receives a frame.

Audio out: the handler's output is resampled to the transport's rate and queued; the pacer sends it
in frames of `FRAME_MS` (or the transport's `OutputFraming.output_frame_ms`) in real time, keeping
at most `max_lead_ms` ahead of what the caller has heard, so barge-in can still take back everything
else. Events skip the queue (control beats data).

Pausing (a suspected interruption) stops the output at once but keeps the reply:

```
            pause_output(): stop sending, take back what was sent but not heard, client clears
  PLAYING ────────────────────────────────────────────────────────────────────────────► PAUSED
     ▲  ◄──────────────────────────────────────────────────────────────────────────────  │
     │    resume_output(): the taken-back audio is sent again first, then the rest       │
     └──────────────────────── interrupt(): flush everything (barge-in) ◄────────────────┘
```

What was sent but not heard is found on the playout clock (or the transport's `PlayoutReporter`,
Twilio's marks) and cut from the last `REPLAY_WINDOW_MS` of sent frames, which the session keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from agentkit._executor import run_audio_job
from agentkit._tasks import TaskSet
from agentkit.audio import AudioFrame, Samples, StreamingResampler, mulaw_to_float, pcm16_to_float
from agentkit.clock import Clock, MonotonicClock
from agentkit.exceptions import AudioFormatError, ProtocolError, TransportClosedError
from agentkit.stream._events import (
    AdditionalOutputsEvent,
    ErrorEvent,
    Event,
    FalseInterruptionReason,
    Interrupted,
    PlaybackPaused,
    PlaybackResumed,
    ResponseDone,
    Stopped,
)
from agentkit.stream._handlers import (
    AdditionalOutputs,
    AsyncStreamHandler,
    EmitType,
    PlayoutEvent,
    PlayoutFinished,
    PlayoutStarted,
    ReplyEnd,
    StreamHandler,
    to_audio_frame,
)
from agentkit.stream._outbox import Outbox

__all__ = [
    "CallControl",
    "CallTransfer",
    "CloseReason",
    "Codec",
    "DropCounter",
    "Mode",
    "PlayoutConfirmer",
    "PlayoutReporter",
    "Session",
    "Transport",
]

logger = logging.getLogger(__name__)

Codec = Literal["pcm_s16le", "mulaw"]
Mode = Literal["send-receive", "send", "receive"]
"""Seen from the caller: talk and listen, only send audio (nothing is played back), or only listen."""
CloseReason = Literal["normal", "hang_up", "time_limit", "no_audio", "server_shutdown"]
"""Why the server ends a connection; each transport turns it into its own wire signal (a WebSocket
close code, a WebRTC end reason):

- `normal`: the conversation is over (the caller asked to stop, the far end stopped the call);
- `hang_up`: the handler ended the call (`Session.hang_up`);
- `time_limit`: the session reached its host's `time_limit`;
- `no_audio`: no audio arrived from the caller for the host's `no_audio_timeout_s`;
- `server_shutdown`: the server is going away.
"""
FRAME_MS = 20
REPLAY_WINDOW_MS = 2000
"""Sent reply audio the session keeps, so that a pause can take back what was not heard yet."""
DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""The keys of a phone keypad (A-D exist on some), as `Session.receive_dtmf` accepts them."""
MAX_TEXT_MESSAGE_CHARS = 2000
"""The longest text message `Session.receive_text` takes, in characters."""
# control characters but tab and newline; surrogates; line/paragraph separators; bidi overrides
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CLOSE_TIMEOUT_S = 2.0
_INLINE_INPUT_MAX_BYTES = 2048
"""Input messages up to this size (a 20 ms frame on every transport, 48 kHz PCM included) are decoded
and resampled on the event loop: that takes 3-10 us, where a hop to the audio thread costs the loop
about 30 us (a future, a thread wake-up, a callback). Larger messages go to the audio thread. A
turn-taking handler (`converts_input`) takes small messages undecoded instead and converts them in the
audio-thread job it runs for them anyway: numpy's table look-up and soxr release the GIL even for
160 samples, and the loop then waits for the audio thread's Python to get it back."""
_POLL_S = 0.02


class Transport(Protocol):
    """What a session needs from the wire it is carried on."""

    bytes_per_sample: int
    """Size of one encoded output sample (2 for 16-bit PCM, 1 for mu-law)."""

    def encode_audio(self, samples: Samples) -> bytes:
        """Encode output samples for the wire; called on the audio worker thread."""
        ...

    async def send_audio(self, payload: bytes) -> None:
        """Send one encoded frame (at most `FRAME_MS` long, or the transport's `output_frame_ms`) at
        the session's output rate."""
        ...

    async def send_event(self, event: Event) -> None: ...

    async def close(self, reason: CloseReason, detail: str | None = None) -> None:
        """End the connection from the server side; `detail` is a short human text for the wire."""
        ...


@runtime_checkable
class OutputFraming(Protocol):
    """Optional for a transport whose far end buffers and can drop what it has buffered (Twilio's
    `clear`): the pacer sends it frames of `output_frame_ms` instead of `FRAME_MS`. Fewer, larger
    messages cost the server less per call (a send, a timer and a wake-up per message); what the
    caller hears, and what an interruption can take back, stay the same."""

    output_frame_ms: int


@runtime_checkable
class CallControl(Protocol):
    """Optional for a transport: end the call at its source (Twilio: the REST API), not just the socket."""

    async def hang_up(self) -> None:
        """End the call; one that has already ended is not an error."""
        ...


@runtime_checkable
class CallTransfer(Protocol):
    """Optional for a transport: hand the call to another number (Twilio: the call leaves the media
    stream for a `<Dial>`); the session then ends."""

    async def transfer(self, to: str) -> None:
        """Transfer the call to `to` (a phone number or SIP address); raises `ProviderError`."""
        ...


@runtime_checkable
class PlayoutConfirmer(Protocol):
    """Optional for a transport whose far end confirms what it has played (Twilio's marks)."""

    async def wait_played(self, timeout_s: float) -> bool:
        """Wait until the far end confirms all audio sent so far has played; False on timeout."""
        ...


@runtime_checkable
class DropCounter(Protocol):
    """Optional for a transport with an output queue of its own that drops audio when the caller's
    side falls behind (WebRTC's track); read for `/metrics`."""

    @property
    def dropped_frames(self) -> int:
        """Frames of reply audio dropped so far because the far end was not taking them."""
        ...


@runtime_checkable
class PlayoutReporter(Protocol):
    """Optional for a transport that learns from the far end what has been played (Twilio's marks)."""

    def heard_reply_ms(self) -> int | None:
        """Milliseconds of the current reply the caller has heard by now; None: unknown (the session
        falls back on its own pacing estimate). Asked by `Session.interrupt` before it clears."""
        ...


def _decode(payload: bytes, codec: Codec) -> Samples:
    if codec == "mulaw":
        return mulaw_to_float(payload)
    return pcm16_to_float(payload)


class _Marker:
    """End of a reply, travelling through the audio queue behind the reply's last frame."""

    __slots__ = ()


class _Wake:
    """Tells a pacer that waits for audio that a resumed reply has taken-back audio to send."""

    __slots__ = ()


class _Encoded:
    """Reply audio resampled and encoded for the wire, waiting for the pacer."""

    __slots__ = ("num_samples", "payload")

    def __init__(self, payload: bytes, num_samples: int) -> None:
        self.payload = payload
        self.num_samples = num_samples


class Session:
    """One caller's conversation with one handler copy over one transport."""

    def __init__(
        self,
        handler: AsyncStreamHandler | StreamHandler,
        transport: Transport,
        *,
        input_sample_rate: int,
        output_sample_rate: int,
        session_id: str | None = None,
        clock: Clock | None = None,
        max_lead_ms: int = 60,
        channel: str = "websocket",
        caller: str | None = None,
        call_info: Mapping[str, str] | None = None,
        mode: Mode = "send-receive",
        time_limit: float | None = None,
        no_audio_timeout_s: float | None = None,
        on_closed: Callable[[Session], None] | None = None,
        on_outputs: Callable[[Session, AdditionalOutputs], None] | None = None,
    ) -> None:
        """`mode` and `time_limit` (seconds, None: no limit) come from the host that opened the session,
        and so does `no_audio_timeout_s`: a started session that receives no audio for that long (from
        its start, or since the last audio) is closed with reason `no_audio` (None: never; a session in
        `receive` mode, whose caller only listens, is never closed for it). `on_closed` is called once
        the session has closed (the host forgets it), and `on_outputs` with every `AdditionalOutputs`
        the handler emits (the host passes them on to other processes)."""
        self.id = session_id or uuid.uuid4().hex
        self.channel = channel
        self.caller = caller
        self.call_info: Mapping[str, str] = MappingProxyType(dict(call_info or {}))
        """What else the transport knows of the call (see `HandlerContext.call_info`)."""
        self.mode: Mode = mode
        self.time_limit = time_limit
        self.no_audio_timeout_s = no_audio_timeout_s
        self._on_closed = on_closed
        self._on_outputs = on_outputs
        self.handler = handler
        self.transport = transport
        self.input_sample_rate = input_sample_rate
        self.output_sample_rate = output_sample_rate
        self._clock: Clock = clock or MonotonicClock()
        self._max_lead_s = max_lead_ms / 1000
        frame_ms = transport.output_frame_ms if isinstance(transport, OutputFraming) else FRAME_MS
        if not FRAME_MS <= frame_ms <= 1000:
            raise ValueError(f"output_frame_ms must be {FRAME_MS} to 1000 (got {frame_ms})")
        self._frame_bytes = output_sample_rate * frame_ms // 1000 * transport.bytes_per_sample
        """One output frame on the wire: the pacer sends reply audio in pieces of this size."""
        self._args: tuple[Any, ...] = ()
        self._set_up_input(handler, input_sample_rate)
        self._out_resampler: StreamingResampler | None = None
        self._in_position = 0
        # on its way to the caller; an interruption flushes it, and its epoch tells the pacer to stop
        self._audio: Outbox[_Encoded | _Marker | _Wake] = Outbox(64)
        self._play_end = 0.0  # clock time at which the caller will have heard everything sent
        self._reply_sent_s = 0.0  # seconds of the current reply sent so far (less what a pause took back)
        self._playing = asyncio.Event()  # clear while the output is paused
        self._playing.set()
        self._sent: deque[bytes] = deque(maxlen=REPLAY_WINDOW_MS // frame_ms)  # the reply's last frames
        self._replay: deque[bytes] = deque()  # frames a pause took back, sent first on resume
        self._wire = asyncio.Lock()  # a pause never falls between a frame's bookkeeping and its send
        self._pacer_waiting = False  # the pacer waits for the next item of `_audio`
        self._tasks = TaskSet(f"session-{self.id[:8]}")
        self._subscribers: list[asyncio.Queue[AdditionalOutputs]] = []
        self.dropped_outputs = 0
        """`AdditionalOutputs` a slow `output_stream` reader missed (the oldest are dropped)."""
        self._closed = False
        self._started = False
        self._last_audio_s = 0.0  # clock time at which the caller's latest audio arrived (or the start)
        self.stop_reason: str | None = None

    def _set_up_input(self, handler: AsyncStreamHandler | StreamHandler, input_sample_rate: int) -> None:
        """How the caller's audio reaches `handler` (`receive_audio`)."""
        # low-latency filter on the way in: soxr's HQ holds back 21-66 ms, which would delay every
        # end of turn; upsampling needs no anti-alias filter, downsampling gets the LQ one
        quality = "QQ" if handler.input_sample_rate > input_sample_rate else "LQ"
        self._in_resampler = StreamingResampler(input_sample_rate, handler.input_sample_rate, quality=quality)
        # a turn-taking handler converts small messages in its audio-thread job (`receive_converting`)
        self._receive_converting: Callable[[Callable[[], Samples]], Awaitable[int]] | None = (
            getattr(handler, "receive_converting", None)
            if getattr(handler, "converts_input", False)
            else None
        )
        # ...and may let a message that could decide nothing wait for the next (`input_can_wait`), where
        # the samples a message gives are known before it is converted: the same rate, or an upsampling
        # by a whole factor (soxr's QQ gives exactly that many after its first call, a few fewer then)
        rate_in, rate_out = input_sample_rate, handler.input_sample_rate
        self._held_per_sample = rate_out // rate_in if rate_out % rate_in == 0 else 0
        self._input_can_wait: Callable[[int], bool] | None = (
            getattr(handler, "input_can_wait", None) if self._held_per_sample else None
        )
        # ...and may take it without the reader waiting for its turn events (`receive_converting_nowait`)
        self._receive_nowait: Callable[[Callable[[], Samples], int, Callable[[int], None]], bool] | None = (
            getattr(handler, "receive_converting_nowait", None) if self._receive_converting else None
        )
        self._held: list[bytes] = []  # small messages held back, undecoded, all of `_held_codec`
        self._held_bytes = 0
        self._held_codec: Codec = "pcm_s16le"

    # -- HandlerContext --------------------------------------------------------------------------
    @property
    def session_id(self) -> str:
        return self.id

    @property
    def clock(self) -> Clock:
        return self._clock

    def dropped_counts(self) -> dict[str, int]:
        """What this session dropped on the way to its caller so far, by kind (for `/metrics`)."""
        # not `isinstance(..., DropCounter)`: a runtime protocol check walks the class's members on
        # every call, and `/metrics` asks every open session once a second
        audio = getattr(self.transport, "dropped_frames", 0)
        return {"additional_outputs": self.dropped_outputs, "transport_audio": audio}

    @property
    def latest_args(self) -> Sequence[Any]:
        return self._args

    def set_args(self, args: tuple[Any, ...]) -> None:
        self._args = args

    @property
    def responding(self) -> bool:
        return (
            not self._audio.empty()
            or self._play_end > self._clock.now()
            or not self._playing.is_set()
            or bool(self._replay)
        )

    async def send_event(self, event: Event) -> None:
        if self._closed:
            return
        try:
            await self.transport.send_event(event)
        except Exception as exc:  # the connection went away; the transport's reader will close us
            logger.debug("session %s: event not sent (%s)", self.id, type(exc).__name__)

    async def interrupt(self) -> int:
        self._audio.flush()
        if self._out_resampler is not None:
            self._out_resampler = None  # its filter holds audio of the reply being dropped
        heard_ms = self._heard_ms()
        self._play_end = self._clock.now()
        self._reply_sent_s = 0.0
        self._sent.clear()
        self._replay.clear()
        self._playing.set()  # a paused pacer wakes, sees the new epoch and drops what it held
        await self.send_event(Interrupted(heard_ms=heard_ms))
        return heard_ms

    @property
    def paused(self) -> bool:
        """The output is paused (`pause_output`) and not yet resumed or interrupted."""
        return not self._playing.is_set()

    async def pause_output(self) -> int:
        """Stop the reply's audio at once but keep it (see `HandlerContext.pause_output`)."""
        async with self._wire:
            if not self._playing.is_set():
                return round(self._reply_sent_s * 1000)
            self._playing.clear()
            width = self.transport.bytes_per_sample
            unheard_ms = max(0, round(self._reply_sent_s * 1000) - self._heard_ms())
            taken = self._take_back(unheard_ms * self.output_sample_rate // 1000 * width)
            self._reply_sent_s = max(0.0, self._reply_sent_s - len(taken) / width / self.output_sample_rate)
            step = self._frame_bytes
            head = len(taken) % step  # the short frame goes first: the rest stay whole frames
            frames = [taken[:head]] if head else []
            frames += [taken[i : i + step] for i in range(head, len(taken), step)]
            self._replay.extendleft(reversed(frames))  # before anything taken back by an earlier pause
            self._play_end = self._clock.now()
        heard_ms = round(self._reply_sent_s * 1000)
        await self.send_event(PlaybackPaused(heard_ms=heard_ms))
        return heard_ms

    async def resume_output(self, reason: FalseInterruptionReason) -> int:
        """Play the paused reply on from where it paused (see `HandlerContext.resume_output`)."""
        if self._playing.is_set():
            return 0
        width = self.transport.bytes_per_sample
        replay_ms = round(sum(len(f) for f in self._replay) / width * 1000 / self.output_sample_rate)
        await self.send_event(PlaybackResumed(reason=reason, replay_ms=replay_ms))
        self._playing.set()
        if self._replay and self._audio.empty():  # the pacer may be waiting for audio, not for us
            await self._audio.put(_Wake())
        return replay_ms

    def _heard_ms(self) -> int:
        """Milliseconds of the current reply the caller has heard by now."""
        unheard = max(0.0, self._play_end - self._clock.now())
        heard_ms = max(0, round((self._reply_sent_s - unheard) * 1000))
        if isinstance(self.transport, PlayoutReporter):  # the far end's word beats our estimate
            reported = self.transport.heard_reply_ms()
            if reported is not None:
                heard_ms = max(0, min(reported, round(self._reply_sent_s * 1000)))
        return heard_ms

    def _take_back(self, num_bytes: int) -> bytes:
        """The last `num_bytes` of the reply's sent frames (fewer if the window holds fewer),
        removed from them."""
        parts: list[bytes] = []
        taken = 0
        while self._sent and taken < num_bytes:
            frame = self._sent.pop()
            parts.append(frame)
            taken += len(frame)
        joined = b"".join(reversed(parts))
        if taken > num_bytes:  # the oldest frame was partly heard: that part stays sent
            self._sent.append(joined[: taken - num_bytes])
            joined = joined[taken - num_bytes :]
        return joined

    @property
    def can_transfer(self) -> bool:
        return isinstance(self.transport, CallTransfer)

    async def transfer(self, to: str) -> None:
        """Hand the call to `to` (see `HandlerContext.transfer`)."""
        if not isinstance(self.transport, CallTransfer):
            raise ProtocolError(f"calls on {self.channel} cannot be transferred")
        self.stop_reason = self.stop_reason or "transferred"
        logger.info("session %s: transferring the call", self.id)
        await self.transport.transfer(to)

    async def wait_heard(self, timeout_s: float) -> bool:
        """Wait until the caller has heard all the reply audio sent so far: by the far end's word
        where the transport has it (Twilio's marks), else by the session's playout clock."""
        deadline = self._clock.now() + timeout_s
        while not self._audio.empty() and self._clock.now() < deadline:  # noqa: ASYNC110 - pacer owns it
            await asyncio.sleep(_POLL_S)
        await self._clock.sleep_until(min(deadline, self._play_end))
        if isinstance(self.transport, PlayoutConfirmer):
            return await self.transport.wait_played(max(0.0, deadline - self._clock.now()))
        return self._clock.now() >= self._play_end

    async def hang_up(self, reason: str = "hang_up") -> None:
        """End the call from the server's side (the handler's choice, e.g. the agent said goodbye;
        or `SessionHost.hang_up`, whose `reason` is `api`): `reason` becomes the `stop_reason`.

        A transport with `CallControl` ends the call itself (Twilio: REST `Status=completed`); any
        other closes its connection. The session then closes as usual, so the conversation is saved.
        """
        if self._closed:
            return
        self.stop_reason = self.stop_reason or reason
        logger.info("session %s: hanging up", self.id)
        if isinstance(self.transport, CallControl):
            await self.transport.hang_up()
        else:
            await self.transport.close("hang_up")

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Attach and start the handler, then start the session's own tasks."""
        self.handler.attach(self)
        if isinstance(self.handler, AsyncStreamHandler):
            await self.handler.start_up()
        else:
            await asyncio.to_thread(self.handler.start_up)
        self._started = True
        self._tasks.spawn(self._emit_loop(), "emit")
        if self.mode != "send":
            self._tasks.spawn(self._pace(), "pace")
        if self.time_limit is not None:
            self._tasks.spawn(self._enforce_time_limit(self.time_limit), "time-limit")
        if self.no_audio_timeout_s is not None and self.mode != "receive":
            self._last_audio_s = self._clock.now()
            self._tasks.spawn(self._require_audio(self.no_audio_timeout_s), "no-audio")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    async def close(self, reason: str = "client_stop") -> None:
        """Cancel everything the session owns and shut the handler down. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stop_reason = self.stop_reason or reason
        await self._tasks.aclose(_CLOSE_TIMEOUT_S)
        if self._started:
            try:
                if isinstance(self.handler, AsyncStreamHandler):
                    await self.handler.stop_input()  # bounded by itself; no suspension when idle
                    await asyncio.wait_for(self.handler.shutdown(), _CLOSE_TIMEOUT_S)
                else:
                    await asyncio.wait_for(asyncio.to_thread(self.handler.shutdown), _CLOSE_TIMEOUT_S)
            except Exception:
                logger.exception("session %s: handler shutdown failed", self.id)
        if self._on_closed is not None:
            self._on_closed(self)
        logger.info("session %s closed (%s)", self.id, self.stop_reason)

    # -- audio in --------------------------------------------------------------------------------
    async def receive_audio(self, payload: bytes, codec: Codec = "pcm_s16le") -> None:
        """Take one message of the caller's audio; raises `AudioFormatError` for unusable data."""
        if codec == "pcm_s16le" and len(payload) % 2:
            raise AudioFormatError("16-bit PCM must have an even number of bytes", num_bytes=len(payload))
        self._last_audio_s = self._clock.now()
        if len(payload) <= _INLINE_INPUT_MAX_BYTES:
            if self._receive_converting is not None:
                if not self._take_small(payload, codec):
                    await self._receive_small(self._receive_converting, payload, codec)
                return
            samples = self._convert_input(payload, codec)
        else:
            samples = await run_audio_job(self._convert_input, payload, codec)
        if samples.shape[0] == 0:
            return
        frame = AudioFrame(samples, self.handler.input_sample_rate, self._in_position)
        self._in_position += frame.num_samples
        if isinstance(self.handler, AsyncStreamHandler):
            await self.handler.receive(frame)
        else:
            await asyncio.to_thread(self.handler.receive, frame)

    async def settle_input(self) -> None:
        """Wait until the caller's audio received so far has been taken in by the handler (scored and
        its turn events handled, for a turn-taking one), except a message held back for the next
        (`input_can_wait`); raises what taking it raised. For tests and tools: the transports need not."""
        if isinstance(self.handler, AsyncStreamHandler):
            await self.handler.settle_input()

    async def receive_dtmf(self, digit: str) -> None:
        """Take one key the caller pressed; raises `ProtocolError` for anything but a phone key."""
        if digit not in DTMF_DIGITS:
            raise ProtocolError("a DTMF digit is one of 0-9, *, #, A-D", num_chars=len(digit))
        try:
            self.handler.on_dtmf(digit)
        except Exception:
            logger.exception("session %s: handler on_dtmf failed", self.id)

    async def receive_text(self, text: object) -> None:
        """Take a message the caller typed (a turn in words: the handler's `on_text`). Raises
        `ProtocolError`, with a message fit for the caller, for one that is not a string, is blank,
        is over `MAX_TEXT_MESSAGE_CHARS` or holds control characters other than newline and tab."""
        if not isinstance(text, str) or not text.strip():
            raise ProtocolError("text must be a string that is not blank")
        if len(text) > MAX_TEXT_MESSAGE_CHARS:
            raise ProtocolError(
                f"text must be at most {MAX_TEXT_MESSAGE_CHARS} characters (this one has {len(text)})",
                num_chars=len(text),
            )
        if _BAD_TEXT.search(text):
            raise ProtocolError("text must not hold control characters (newline and tab are fine)")
        if self._closed:
            return
        try:
            await self.handler.on_text(text)
        except Exception:
            logger.exception("session %s: handler on_text failed", self.id)

    def receive_audio_nowait(self, payload: bytes, codec: Codec = "pcm_s16le") -> bool:
        """`receive_audio` when it needs no waiting: a small message, well formed, that the handler
        holds for the next or takes into its batch without the caller waiting for it (a turn-taking
        handler with nothing else to do; `TurnTakingHandler.receive_converting_nowait`). False, with
        nothing done, when the caller must `await receive_audio(...)` instead (which also raises for
        bad data). For a transport that can hand messages over as they are parsed."""
        if (
            self._receive_nowait is None
            or self._closed
            or len(payload) > _INLINE_INPUT_MAX_BYTES
            or (codec == "pcm_s16le" and len(payload) % 2)
        ):
            return False
        if not self._take_small(payload, codec):
            return False
        self._last_audio_s = self._clock.now()
        return True

    def _take_small(self, payload: bytes, codec: Codec) -> bool:
        """Hold a small message for the next, or hand it (with what is held) to the handler without
        waiting; False, with nothing changed, when that needs `_receive_small`."""
        nowait = self._receive_nowait
        if nowait is None or (self._held and codec != self._held_codec):
            return False
        held_bytes = self._held_bytes + len(payload)
        samples = held_bytes // (2 if codec == "pcm_s16le" else 1) * self._held_per_sample
        if self._input_can_wait is not None and self._input_can_wait(samples):
            self._held.append(payload)
            self._held_bytes = held_bytes
            self._held_codec = codec
            return True
        joined = b"".join([*self._held, payload]) if self._held else payload
        convert = partial(self._convert_input, joined, codec)
        if not nowait(convert, samples if self._held_per_sample else -1, self._advance_input):
            return False
        self._held.clear()
        self._held_bytes = 0
        return True

    async def _receive_small(
        self, receive: Callable[[Callable[[], Samples]], Awaitable[int]], payload: bytes, codec: Codec
    ) -> None:
        """Hand a small message to the turn-taking handler undecoded, or hold it for the next one
        when the handler says it could decide nothing yet (at most the rest of one VAD chunk)."""
        if self._held and codec != self._held_codec:  # a change of codec: what is held goes alone
            await self._pass_held(receive)
        self._held.append(payload)
        self._held_bytes += len(payload)
        self._held_codec = codec
        if self._input_can_wait is not None:
            samples = self._held_bytes // (2 if codec == "pcm_s16le" else 1) * self._held_per_sample
            if self._input_can_wait(samples):
                return
        await self._pass_held(receive)

    async def _pass_held(self, receive: Callable[[Callable[[], Samples]], Awaitable[int]]) -> None:
        """Hand what is held to the handler in one piece, decoded in its job."""
        held, self._held = self._held, []
        self._held_bytes = 0
        joined = held[0] if len(held) == 1 else b"".join(held)
        self._in_position += await receive(partial(self._convert_input, joined, self._held_codec))

    def _advance_input(self, num_samples: int) -> None:
        self._in_position += num_samples

    def _convert_input(self, payload: bytes, codec: Codec) -> Samples:
        return self._in_resampler.process(_decode(payload, codec))

    # -- audio and outputs out -------------------------------------------------------------------
    def subscribe(self) -> asyncio.Queue[AdditionalOutputs]:
        queue: asyncio.Queue[AdditionalOutputs] = asyncio.Queue(maxsize=64)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[AdditionalOutputs]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    async def _next_output(self) -> EmitType:
        if isinstance(self.handler, AsyncStreamHandler):
            return await self.handler.emit()
        item = await asyncio.to_thread(self.handler.emit)
        if item is None:
            await asyncio.sleep(_POLL_S)
        return item

    async def _emit_loop(self) -> None:
        while True:
            item = await self._next_output()
            if item is None:
                continue
            if isinstance(item, AdditionalOutputs):
                await self._publish(item)
            elif isinstance(item, ReplyEnd):
                await self._end_reply()
            elif self.mode != "send":
                await self._queue_audio(to_audio_frame(item))

    async def _publish(self, outputs: AdditionalOutputs) -> None:
        for queue in self._subscribers:
            if queue.full():  # keep the latest: drop the oldest and count it
                queue.get_nowait()
                self.dropped_outputs += 1
            queue.put_nowait(outputs)
        if self._on_outputs is not None:
            self._on_outputs(self, outputs)
        try:
            event = AdditionalOutputsEvent(data=list(outputs.args))
            await self.send_event(event)
        except (TypeError, ValueError):
            logger.debug("session %s: additional outputs are not JSON-able; kept server-side", self.id)

    def _convert_output(self, resampler: StreamingResampler, samples: Samples, last: bool) -> _Encoded:
        out = resampler.process(samples, last=last)
        return _Encoded(self.transport.encode_audio(out), int(out.shape[0]))

    async def _queue_audio(self, frame: AudioFrame) -> None:
        epoch = self._audio.epoch
        resampler = old = self._out_resampler
        if resampler is None or resampler.in_rate != frame.sample_rate:
            resampler = self._out_resampler = StreamingResampler(frame.sample_rate, self.output_sample_rate)
        if old is not None and old is not resampler:  # a new rate within a reply (a fallback TTS took
            # over): the old filter's last ~30 ms go out first
            tail = await run_audio_job(self._convert_output, old, np.zeros(0, dtype=np.float32), True)
            if tail.num_samples:
                await self._audio.put(tail, epoch=epoch)
        samples = frame.samples
        if resampler.passthrough and self._output_dry():  # the caller hears nothing now: the first
            # frame goes at once (soxr would hold a short head back: 37-116 ms of input come before
            # its first output, so a resampled reply keeps to the audio thread)
            head = self._frame_bytes // self.transport.bytes_per_sample
            encoded = self._convert_output(resampler, samples[:head], False)
            if encoded.num_samples and not await self._send_first(encoded.payload, epoch):
                await self._audio.put(encoded, epoch=epoch)
            samples = samples[head:]
            if not samples.shape[0]:
                return
        encoded = await run_audio_job(self._convert_output, resampler, samples, False)
        if encoded.num_samples:  # may wait for room; dropped if an interruption came meanwhile
            await self._audio.put(encoded, epoch=epoch)

    def _output_dry(self) -> bool:
        """Nothing is queued for the caller and what was sent has played: a reply's first audio, or
        audio after the reply ran dry. A reply at the output rate then has its first output frame
        encoded on the loop (a 100 ms mu-law frame: about 3 us) instead of waiting behind the audio
        thread's running job (32-35 ms at the 95th percentile with 300 calls on two workers); the
        rest of the piece goes to the audio thread as before."""
        return self._audio.empty() and self._clock.now() >= self._play_end

    async def _end_reply(self) -> None:
        if self.mode == "send":  # nothing is played back, so the reply is done at once
            self._notify(PlayoutFinished(at_s=self._clock.now(), audio_ms=0))
            await self.send_event(ResponseDone(audio_ms=0))
            return
        epoch = self._audio.epoch
        resampler, self._out_resampler = self._out_resampler, None
        if resampler is not None:
            tail = np.zeros(0, dtype=np.float32)
            encoded = await run_audio_job(self._convert_output, resampler, tail, True)
            if encoded.num_samples:
                await self._audio.put(encoded, epoch=epoch)
        await self._audio.put(_Marker(), epoch=epoch)

    async def _pace(self) -> None:
        """Send queued audio in real time, `max_lead_ms` ahead of the caller's ear at most.

        Audio goes out in whole frames (`FRAME_MS`, or the transport's `output_frame_ms`): the tail of
        a piece that does not fill a frame waits for the next piece of the same reply when that is
        already queued, and goes out short otherwise.
        """
        step = self._frame_bytes
        held, held_epoch = b"", -1
        while True:
            self._pacer_waiting = True
            try:
                item = await self._audio.get()  # only items of the current epoch come out
            finally:
                self._pacer_waiting = False
            epoch = self._audio.epoch
            if isinstance(item, _Wake):  # resumed while nothing was queued: the taken-back audio
                if not await self._send_paced(b"", epoch):
                    return
                continue
            pending = held if held_epoch == epoch else b""
            held = b""
            if isinstance(item, _Marker):
                if not await self._send_paced(pending, epoch):  # a paused reply is not over yet
                    return
                if epoch != self._audio.epoch:
                    continue  # interrupted while paused: no `response_done`
                sent_ms = round(self._reply_sent_s * 1000)
                self._reply_sent_s = 0.0
                self._sent.clear()
                self._notify(PlayoutFinished(at_s=self._clock.now(), audio_ms=sent_ms))
                await self.send_event(ResponseDone(audio_ms=sent_ms))
                continue
            payload = pending + item.payload
            whole = len(payload) - len(payload) % step
            if not await self._send_paced(payload[:whole], epoch):
                return
            tail = payload[whole:]
            if tail and epoch == self._audio.epoch:
                if self._audio.empty():  # nothing more yet: don't keep the caller waiting for it
                    if not await self._send_paced(tail, epoch):
                        return
                else:
                    held, held_epoch = tail, epoch

    def _notify(self, event: PlayoutEvent) -> None:
        try:
            self.handler.on_playout(event)
        except Exception:
            logger.exception("session %s: handler on_playout failed", self.id)

    async def _send_paced(self, payload: bytes, epoch: int) -> bool:
        """Send `payload` frame by frame in real time, after any audio a pause took back; waits
        while the output is paused. False once the caller is gone."""
        step = self._frame_bytes
        frames = deque(payload[start : start + step] for start in range(0, len(payload), step))
        while True:
            await self._playing.wait()
            if epoch != self._audio.epoch:
                return True  # interrupted: the rest is dropped
            if not self._replay and not frames:
                return True
            self._play_end = max(self._play_end, self._clock.now())  # a dry buffer restarts playout now
            await self._clock.sleep_until(self._play_end - self._max_lead_s)
            async with self._wire:
                if epoch != self._audio.epoch or not self._playing.is_set():
                    continue  # interrupted or paused while waiting
                if not await self._send_frame((self._replay or frames).popleft()):
                    return False  # the transport's reader sees the disconnect and closes the session

    async def _send_frame(self, chunk: bytes) -> bool:
        """Send one frame now and count it as played from `_play_end` on (the wire lock held);
        False once the caller is gone."""
        if self._reply_sent_s == 0.0:
            self._notify(PlayoutStarted(at_s=self._clock.now()))
        duration_s = len(chunk) // self.transport.bytes_per_sample / self.output_sample_rate
        self._play_end += duration_s
        self._reply_sent_s += duration_s
        self._sent.append(chunk)
        try:
            await self.transport.send_audio(chunk)
        except TransportClosedError:
            logger.debug("session %s: caller gone, pacer stops", self.id)
            return False
        return True

    async def _send_first(self, payload: bytes, epoch: int) -> bool:
        """Send a reply's first frame from here while the pacer waits for audio (woken, it would
        send it a loop turn later: 12-15 ms at the 95th percentile with 300 calls on two workers).
        False, with nothing sent, when the pacer must have it (it is busy, the output is paused,
        or audio a pause took back goes first)."""
        if not self._pacer_waiting or self._replay or not self._playing.is_set():
            return False
        async with self._wire:
            if epoch != self._audio.epoch:
                return True  # interrupted meanwhile: dropped, as the pacer would
            if not self._pacer_waiting or self._replay or not self._playing.is_set():
                return False
            self._play_end = max(self._play_end, self._clock.now())
            await self._send_frame(payload)
        return True

    async def _enforce_time_limit(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        logger.info("session %s reached its time limit of %.0f s", self.id, seconds)
        self.stop_reason = "time_limit"
        await self.send_event(ErrorEvent(code="time_limit", message="session time limit reached", fatal=True))
        await self.send_event(Stopped(reason="time_limit"))
        await self.transport.close("time_limit")

    async def _require_audio(self, timeout_s: float) -> None:
        """Close the session once no audio has arrived for `timeout_s`: a caller that says nothing,
        not even the silence a live microphone sends, is only holding a slot others could use."""
        while self._clock.now() < self._last_audio_s + timeout_s:
            await self._clock.sleep_until(self._last_audio_s + timeout_s)
        logger.info("session %s: no audio for %.1f s, closing", self.id, timeout_s)
        self.stop_reason = "no_audio"
        message = f"no audio received for {timeout_s:g} s"
        await self.send_event(ErrorEvent(code="no_audio", message=message, fatal=True))
        await self.send_event(Stopped(reason="no_audio"))
        await self.transport.close("no_audio")


SessionFactory = Callable[[Transport], Session]
