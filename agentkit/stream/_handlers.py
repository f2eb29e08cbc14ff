"""Handler kinds a `Stream` serves, and the context a session gives each handler copy.

- `AsyncStreamHandler`: `async receive(frame)` and `async emit()`; the natural choice.
- `StreamHandler`: the same with plain methods, run on worker threads (for blocking code).
- `ReplyOnPause(fn)` (in `_reply_on_pause`): turn-taking around a generator function.

A `Stream` keeps one prototype handler and gives every session its own `copy()`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np

from agentkit.audio import AudioFrame

if TYPE_CHECKING:
    from typing import Self

    from agentkit.clock import Clock
    from agentkit.stream._events import Event, FalseInterruptionReason

__all__ = [
    "AdditionalOutputs",
    "AsyncStreamHandler",
    "EmitType",
    "HandlerContext",
    "PlayoutEvent",
    "PlayoutFinished",
    "PlayoutStarted",
    "ReplyEnd",
    "StreamHandler",
    "to_audio_frame",
]


class AdditionalOutputs:
    """Non-audio values a handler emits (a transcript, a chart, a status).

    They reach the caller as an `additional_outputs` event (when JSON-able) and reach server-side
    code through `Stream.output_stream(session_id)`.
    """

    def __init__(self, *args: Any) -> None:
        self.args: tuple[Any, ...] = args

    def __repr__(self) -> str:
        return f"AdditionalOutputs(<{len(self.args)} values>)"


class ReplyEnd:
    """Emitted after the last audio of a reply: the session flushes its resampler, and sends
    `response_done` once that audio has gone out."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ReplyEnd()"


EmitType: TypeAlias = AudioFrame | tuple[int, np.ndarray] | AdditionalOutputs | ReplyEnd | None
"""What `emit()` may return: audio (a frame, or FastRTC-style `(sample_rate, samples)`), other
outputs, the end of a reply, or None for nothing this time."""


def to_audio_frame(item: AudioFrame | tuple[int, np.ndarray]) -> AudioFrame:
    """Accept a frame or a `(sample_rate, samples)` pair (int16 or float, mono or (1, n))."""
    if isinstance(item, AudioFrame):
        return item
    sample_rate, samples = item
    return AudioFrame(np.asarray(samples), int(sample_rate))


@dataclass(frozen=True, slots=True)
class PlayoutStarted:
    """The first audio of a reply went out to the caller."""

    at_s: float
    """Session clock time at which it was sent."""


@dataclass(frozen=True, slots=True)
class PlayoutFinished:
    """The last audio of a reply (the one ended by `ReplyEnd`) went out to the caller."""

    at_s: float
    """Session clock time at which it was sent (the caller hears its end up to `max_lead_ms` later)."""
    audio_ms: int
    """Length of the reply audio sent, in milliseconds."""


PlayoutEvent: TypeAlias = PlayoutStarted | PlayoutFinished


class HandlerContext(Protocol):
    """What a session offers the handler copy it owns."""

    @property
    def session_id(self) -> str: ...

    @property
    def channel(self) -> str:
        """The transport's protocol name, e.g. `websocket`, `fastrtc-ws`, `twilio`."""
        ...

    @property
    def caller(self) -> str | None:
        """The caller's id when the transport knows it: Twilio's signed phone number, or on the web the
        `sub` of a valid caller token (`agentkit.caller_token`). A returning caller's earlier
        conversations are loaded by it, so it is never a string the client merely claims."""
        ...

    @property
    def call_info(self) -> Mapping[str, str]:
        """What else the transport knows of the call. Twilio: `direction` (`inbound`, or `outbound`
        for a call the agent placed), `called` (the number dialled), `call_id` (Twilio's `CallSid`:
        a call whose media stream reconnects keeps it, and its conversation) and, when `agentkit call
        --purpose` gave one, `purpose`. Web transports (`/ws`, WebRTC): `caller_label`, the
        unverified `caller` the client sent, if any (a label to show, never an identity)."""
        ...

    @property
    def clock(self) -> Clock:
        """The session's clock, the one its playout is timed on."""
        ...

    @property
    def output_sample_rate(self) -> int:
        """The rate the caller's transport plays (8000 on the phone); frames of any rate are
        resampled to it, so a handler that can produce this rate directly saves that work."""
        ...

    @property
    def stop_reason(self) -> str | None:
        """Why the session ended (`client_stop`, `hang_up`, `time_limit`, ...), once it is closing
        (set before the handler's `shutdown`); None while it runs."""
        ...

    @property
    def latest_args(self) -> Sequence[Any]:
        """The values last given to `Stream.set_input` for this session."""
        ...

    @property
    def responding(self) -> bool:
        """True while reply audio is queued or still playing to the caller."""
        ...

    async def send_event(self, event: Event) -> None:
        """Send a control event to the caller at once (ahead of queued audio)."""
        ...

    async def interrupt(self) -> int:
        """Barge-in: drop all queued reply audio and tell the caller to clear its buffer.

        Returns how much of the reply the caller had heard, in milliseconds of reply audio.
        """
        ...

    async def pause_output(self) -> int:
        """A suspected interruption: stop the reply's audio at once but keep it. The caller's player
        drops what it has buffered (`playback_paused`; Twilio: `clear`) and the audio sent but not
        heard is taken back, to be sent again by `resume_output`. `interrupt()` ends a pause too.

        Returns how much of the reply the caller had heard, in milliseconds of reply audio.
        """
        ...

    async def resume_output(self, reason: FalseInterruptionReason) -> int:
        """A false interruption: play the paused reply on from where the caller stopped hearing it
        (`playback_resumed` with `reason`). Returns the milliseconds of taken-back audio sent again;
        0 when the output was not paused."""
        ...

    @property
    def can_transfer(self) -> bool:
        """The transport can hand the call to another number (Twilio)."""
        ...

    async def transfer(self, to: str) -> None:
        """Hand the call to `to` (Twilio: a `<Dial>`); the session then ends. Raises `ProtocolError`
        where the transport cannot (see `can_transfer`), `ProviderError` when the provider fails."""
        ...

    async def wait_heard(self, timeout_s: float) -> bool:
        """Wait until the caller has heard all reply audio sent so far (Twilio: its marks; elsewhere
        the playout clock); False when `timeout_s` passed first."""
        ...

    async def hang_up(self) -> None:
        """End the call: on Twilio through its REST API (an already-ended call is fine), on other
        transports by closing the connection. The session then closes and the conversation is saved."""
        ...


class _HandlerBase(abc.ABC):
    input_sample_rate: int = 16000
    """Rate of the frames `receive` gets; the session resamples the caller's audio to it."""
    output_sample_rate: int = 24000
    """Default rate of emitted audio when an emitted item does not say (frames always say)."""

    _context: HandlerContext | None = None

    @property
    def context(self) -> HandlerContext:
        if self._context is None:
            raise RuntimeError("this handler is not attached to a session yet")
        return self._context

    def attach(self, context: HandlerContext) -> None:
        """Called by the session before `start_up`."""
        self._context = context

    def match_call_rate(self, sample_rate: int) -> None:
        """Called on a new session's handler copy, before the session is set up, with the rate the
        caller's audio arrives at. A handler that can take that audio as it comes may set
        `input_sample_rate` to it, and the session then passes it on without resampling; the default
        keeps the handler's own rate."""
        del sample_rate

    def on_playout(self, event: PlayoutEvent) -> None:
        """Called by the session as reply audio goes out; override to time or track replies.

        Runs on the event loop and must not block.
        """
        del event  # the default ignores playout

    def on_dtmf(self, digit: str) -> None:
        """Called by the session when the caller presses a phone key (`0`-`9`, `*`, `#`, `A`-`D`).

        Only telephone transports (Twilio) deliver keys. Runs on the event loop and must not block;
        the default ignores keys.
        """
        del digit

    async def on_text(self, text: str) -> None:
        """Called by the session when the caller sends a text message (the web transports' `text`
        message): a turn typed instead of spoken. `Agent` takes it as a turn like a spoken one.

        `text` is checked first (1 to `MAX_TEXT_MESSAGE_CHARS`, 2,000, characters, no control characters but
        newline and tab). Awaited in the order messages arrive, so it should return soon (start
        longer work in a task the handler owns); the default ignores text.
        """
        del text

    @abc.abstractmethod
    def copy(self) -> Self:
        """A fresh handler for a new session (state must not be shared between callers)."""


class AsyncStreamHandler(_HandlerBase):
    """A handler written with coroutines: the session awaits `receive` per frame and `emit` in a loop."""

    async def start_up(self) -> None:
        """Called once when the session starts, before any audio."""

    async def shutdown(self) -> None:
        """Called once when the session ends, whatever the reason."""

    async def settle_input(self) -> None:
        """Wait until the caller's input received so far has been taken in (a handler that takes
        input without the session waiting for it, as a turn-taking one does, finishes it here);
        raise what taking it raised. The default takes input as it is received."""

    async def stop_input(self) -> None:
        """Called when the session closes, before `shutdown`, once no more audio will come: drop
        whatever of the caller's input is still being worked on (the default has none)."""

    @abc.abstractmethod
    async def receive(self, frame: AudioFrame) -> None:
        """Take the next frame of the caller's audio (at `input_sample_rate`)."""

    @abc.abstractmethod
    async def emit(self) -> EmitType:
        """Wait for and return the next output. Returning None means nothing for now."""


class StreamHandler(_HandlerBase):
    """A handler written with blocking code: `receive` and `emit` run on worker threads.

    `emit` should block until it has something (or return None after a short wait); the session
    calls it again at once after each output and after 20 ms when it returned None.
    """

    def start_up(self) -> None:
        """Called once (on a worker thread) when the session starts."""

    def shutdown(self) -> None:
        """Called once (on a worker thread) when the session ends."""

    @abc.abstractmethod
    def receive(self, frame: AudioFrame) -> None: ...

    @abc.abstractmethod
    def emit(self) -> EmitType: ...


Handler: TypeAlias = AsyncStreamHandler | StreamHandler
