"""One Twilio Media Stream (`<Connect><Stream>`, bidirectional) around a `Session`.

In: `connected`, `start` (must carry the one-time token from the TwiML), `media` (base64 mu-law
8 kHz, any length), `dtmf`, `mark` (Twilio played our audio up to that mark), `stop`.
Out: `media` (mu-law 8 kHz, `output_frame_ms` per message, paced in real time by the session), a `mark`
every `mark_interval_ms` of reply audio and at the end of each reply, and `clear` on barge-in.

A paused reply (`playback_paused`, a suspected interruption) is a `clear` too: Twilio drops what it
has buffered, the session takes that audio back by the marks' count of what was heard, and re-sends
it if the reply resumes; marks then count on from the pause. A barge-in confirmed during the pause
sends no second `clear` when nothing was sent since the first.

The echoed marks are the playout clock: on barge-in the session asks `heard_reply_ms()` (the last
echoed mark's position plus the time since, never past the next unechoed mark) rather than trusting
its own pacing. `hang_up()` ends the call through Twilio's REST API when call control is configured
(`TwilioCalls`), then closes the stream; without it, closing the stream ends a `<Connect>` call.

Twilio does not understand agentkit's own events (errors, transcripts), so those stay server-side:
problems are logged (without numbers or audio) and fatal ones close the socket with a code.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, Any

from agentkit._tasks import cancel_and_wait
from agentkit.audio import Samples
from agentkit.exceptions import ProtocolError, ProviderError
from agentkit.stream._events import Event, Interrupted, PlaybackPaused, ResponseDone
from agentkit.transports._close_codes import CLOSE_POLICY, CLOSE_UNSUPPORTED
from agentkit.transports._twilio_rest import TwilioCalls
from agentkit.transports._twilio_webhook import TOKEN_PARAMETER, CallGrant, CallTokens
from agentkit.transports._untrusted import is_id
from agentkit.transports._ws_common import WebSocketConnection, media_payload, samples_to_mulaw

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from agentkit.stream import SessionHost

__all__ = ["TwilioConnection"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
_MAX_PENDING_MARKS = 256
_MEDIA_TAIL = '"}}'
_WS = "[ \t\n\r]*"  # JSON's whitespace (not `\s`, which also matches what JSON refuses)


def _object_pattern(**members: str) -> str:
    """A pattern for a JSON object of exactly these members, in this order (values are patterns)."""
    body = f"{_WS},{_WS}".join(f'"{name}"{_WS}:{_WS}{value}' for name, value in members.items())
    return f"\\{{{_WS}{body}{_WS}\\}}"


_NUMBER_STRING = '"[0-9]{1,20}"'
_PAYLOAD_MARK = "\x00"  # stands for the payload's characters while the pattern is split around them
_MEDIA_HEAD, _MEDIA_END = (
    re.compile(part)
    for part in (
        _object_pattern(
            event='"media"',
            sequenceNumber=_NUMBER_STRING,
            media=_object_pattern(
                track='"inbound"',
                chunk=_NUMBER_STRING,
                timestamp=_NUMBER_STRING,
                payload=f'"{_PAYLOAD_MARK}"',
            ),
            streamSid='"[A-Za-z0-9]{1,64}"',
        )
        + _WS
    ).split(_PAYLOAD_MARK)
)
"""Twilio's inbound `media` message, exactly as Twilio writes it (keys in its order, ASCII only),
in two parts: up to the payload's opening quote (`match`), and from its closing quote to the end
(`fullmatch` from there). See `_media_payload`."""


def _media_payload(text: str) -> bytes | None:
    """The audio of `text` when it is Twilio's inbound `media` message exactly as Twilio writes it;
    None for anything else (any other message, order or spacing of keys, an escaped character,
    payload that is not canonical base64), which the generic parse then judges with every check it
    makes. Fifty arrive a second per call: one that passes is valid JSON of the shape `_on_media`
    checks (depth 2, the caller's track, base64 audio), and skips the generic parse. The payload's
    alphabet is checked by the strict base64 decoder, not by the pattern: one pass over it, in C."""
    head = _MEDIA_HEAD.match(text)
    if head is None:
        return None
    start = head.end()
    end = text.find('"', start)
    if end < 0 or _MEDIA_END.fullmatch(text, end) is None:
        return None
    try:  # what `base64.b64decode(validate=True)` accepts, and nothing else (no escapes, no spaces)
        return binascii.a2b_base64(text[start:end], strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: a character outside ASCII
        return None


class TwilioConnection(WebSocketConnection):
    """Twilio's Media Streams protocol on one WebSocket."""

    protocol = "twilio"
    bytes_per_sample = 1
    output_frame_ms = 100
    """Reply audio per outbound `media` message (the session's `OutputFraming`). Twilio buffers what
    it is sent and drops its buffer on `clear`, and its marks say what was played, so 100 ms messages
    cost a fifth of the sends and timers of 20 ms ones for the same audio and the same barge-in."""
    start_timeout_s = 10.0
    """A stream that has not sent a valid `start` by then is closed (1008): no idle sockets pile up."""

    def __init__(
        self,
        websocket: WebSocket,
        stream: SessionHost,
        tokens: CallTokens,
        *,
        mark_interval_ms: int = 500,
        calls: TwilioCalls | None = None,
        require_token: bool = True,
    ) -> None:
        super().__init__(websocket, stream)
        self._tokens = tokens
        self._calls = calls
        self._require_token = require_token  # False only for loopback benchmarks (see add_twilio_routes)
        self._heard_at: tuple[int, float] | None = None  # (reply ms confirmed, clock reading then)
        self._resume_ms = 0  # where the reply's audio starts again after a pause
        self._cleared = False  # a pause's `clear` went out and no audio since
        self._mark_interval_ms = mark_interval_ms
        self.stream_sid: str | None = None
        self._media_head = ""  # the outbound `media` message up to its payload (set by `start`)
        self.call_sid: str | None = None
        self._reply_ms = 0.0  # reply audio sent since the reply began
        self._unmarked_ms = 0.0  # reply audio sent since the last mark
        self._mark_count = 0
        self._all_played = asyncio.Event()  # set while no mark waits for its echo
        self._all_played.set()
        self._pending_marks: deque[tuple[str, int]] = deque()  # (name, reply ms up to it), oldest first
        self.heard_ms = 0
        """Reply audio Twilio confirmed as played (by its `mark` echoes), for the current reply."""
        self.complaints: dict[str, int] = {}
        """How often each kind of bad input was seen (only the first of each kind is logged)."""

    async def run(self) -> None:
        watchdog = asyncio.create_task(self._require_start(), name="twilio-start-timeout")
        try:
            await super().run()
        finally:
            await cancel_and_wait(watchdog, 1.0)

    def end_reason(self) -> str:
        """`dropped` when the socket ended with neither Twilio's `stop` nor the server closing it: the
        call may go on, and reconnects through the `<Connect action>` (see `_twilio_resume`)."""
        return "client_stop" if self._closing else "dropped"

    async def _require_start(self) -> None:
        await asyncio.sleep(self.start_timeout_s)
        if self.session is None:
            await self.report("no_start", "no valid start message in time", fatal=True)
            await self.close_with_code(CLOSE_POLICY, "no start message")

    # -- Transport -------------------------------------------------------------------------------
    def encode_audio(self, samples: Samples) -> bytes:
        return samples_to_mulaw(samples)

    async def send_audio(self, payload: bytes) -> None:
        # json.dumps of {"event": "media", "streamSid": ..., "media": {"payload": ...}}, 10 times a second
        await self.send_text(f"{self._media_head}{_b64(payload)}{_MEDIA_TAIL}")
        self._cleared = False
        if self._heard_at is None and self.session is not None:
            self._heard_at = (self._resume_ms, self.session.clock.now())  # Twilio starts playing about now
        duration_ms = len(payload) * 1000 / SAMPLE_RATE
        self._reply_ms += duration_ms
        self._unmarked_ms += duration_ms
        if self._unmarked_ms >= self._mark_interval_ms:
            await self._send_mark()

    async def send_event(self, event: Event) -> None:
        if isinstance(event, Interrupted | PlaybackPaused):
            # control beats data: Twilio drops its buffered audio; marks of that audio no longer count
            self._pending_marks.clear()
            self._all_played.set()
            paused = isinstance(event, PlaybackPaused)
            self.heard_ms = self._resume_ms = event.heard_ms if paused else 0
            self._reply_ms, self._unmarked_ms = float(self._resume_ms), 0.0
            self._heard_at = None
            cleared, self._cleared = self._cleared, paused
            if self.stream_sid is not None and (paused or not cleared):
                await self.send_json({"event": "clear", "streamSid": self.stream_sid})
        elif isinstance(event, ResponseDone):
            await self._send_mark(end=True)
            self._reply_ms = self._unmarked_ms = 0.0
            self._resume_ms = 0
        # everything else is agentkit's own vocabulary, which Twilio would reject

    async def _send_mark(self, *, end: bool = False) -> None:
        if self.stream_sid is None:
            return
        self._mark_count += 1
        name = f"{'end' if end else 'm'}-{self._mark_count}"
        if len(self._pending_marks) >= _MAX_PENDING_MARKS:
            self._pending_marks.popleft()
        self._pending_marks.append((name, round(self._reply_ms)))
        self._unmarked_ms = 0.0
        self._all_played.clear()
        await self.send_json({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    # -- messages from Twilio --------------------------------------------------------------------
    async def _on_text(self, text: str) -> None:
        payload = _media_payload(text) if len(text) <= self.stream.max_message_bytes else None
        if payload is None:
            await super()._on_text(text)
        elif self.session is None:
            await self.complain("not_started", "media before a valid start message was dropped")
        else:
            await self.feed(payload, "mulaw")

    def take_text_now(self, text: str) -> bool:
        """A media message of Twilio's own shape, taken as it is parsed where the session can take
        it without waiting (`Session.receive_audio_nowait`): no wake-up of the reader for it."""
        session = self.session
        if session is None or self._closing or len(text) > self.stream.max_message_bytes:
            return False
        payload = _media_payload(text)
        if payload is None or not session.receive_audio_nowait(payload, "mulaw"):
            return False
        self.taken_now += 1
        return True

    async def on_bytes(self, data: bytes) -> None:
        await self.report("binary_frame", "Twilio sends JSON text messages only", fatal=True)
        await self.close_with_code(CLOSE_UNSUPPORTED, "binary frames are not part of the protocol")

    async def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if kind == "media":
            await self._on_media(message)
        elif kind == "mark":
            self._on_mark(message)
        elif kind == "start":
            await self._on_start(message)
        elif kind == "dtmf":
            await self._on_dtmf(message)
        elif kind == "stop":
            logger.info("twilio: stream stopped by Twilio (call %s)", self.call_sid)
            await self.close("normal", "stopped")
        elif kind != "connected":
            await self.complain("unknown_event", f"unknown event {str(kind)[:40]!r}")

    async def complain(self, code: str, message: str) -> None:
        """Log bad input once per kind (Twilio sends 50 messages a second) and count every one."""
        seen = self.complaints.get(code, 0)
        self.complaints[code] = seen + 1
        if not seen:
            await self.report(code, message)

    async def reject(self, code: str, message: str) -> None:
        await self.complain(code, message)  # bad JSON too: logged once per kind, never a flood

    async def _on_start(self, message: dict[str, Any]) -> None:
        if self.session is not None:
            await self.complain("already_started", "a second start message was ignored")
            return
        start = message.get("start")
        start = start if isinstance(start, dict) else {}
        params = start.get("customParameters")
        params = params if isinstance(params, dict) else {}
        stream_sid, call_sid = message.get("streamSid") or start.get("streamSid"), start.get("callSid")
        if not is_id(stream_sid) or (call_sid is not None and not is_id(call_sid)):
            # they go into logs and every message back: nothing but a short id may pass
            await self.report(
                "bad_start", "start needs a streamSid (and callSid) of id characters", fatal=True
            )
            await self.close_with_code(CLOSE_POLICY, "no valid streamSid")
            return
        grant = self._tokens.redeem(params.get(TOKEN_PARAMETER))
        admitted = grant is not None  # by the webhook that issued the token
        if grant is None and not self._require_token:
            grant = CallGrant(caller=None, called=None, call_sid=None, expires_at_s=0.0)
        if grant is None:
            await self.report("bad_token", "the session token is missing, wrong, expired or used", fatal=True)
            await self.close_with_code(CLOSE_POLICY, "invalid session token")
            return
        media_format = start.get("mediaFormat")
        if isinstance(media_format, dict) and (
            media_format.get("encoding", "audio/x-mulaw") != "audio/x-mulaw"
            or str(media_format.get("sampleRate", SAMPLE_RATE)) != str(SAMPLE_RATE)
        ):
            await self.report("bad_media_format", "only audio/x-mulaw at 8000 Hz is supported", fatal=True)
            await self.close_with_code(CLOSE_UNSUPPORTED, "unsupported media format")
            return
        if grant.call_sid is not None and call_sid != grant.call_sid:  # a token is for its own call
            await self.report("bad_token", "the session token was issued for another call", fatal=True)
            await self.close_with_code(CLOSE_POLICY, "invalid session token")
            return
        self.stream_sid = stream_sid
        self._media_head = (
            f'{{"event": "media", "streamSid": {json.dumps(stream_sid)}, "media": {{"payload": "'
        )
        self.call_sid = call_sid or grant.call_sid
        await self.open_session(
            input_sample_rate=SAMPLE_RATE,
            output_sample_rate=SAMPLE_RATE,
            session_id=None,
            caller=grant.caller,
            call_info=grant.call_info(),
            # Not turned away for load: the webhook that issued this single-use token admitted the
            # call moments ago (and a reconnecting call is one in progress). With several workers
            # the stream may land on a busier one than the webhook did; refusing it now would drop
            # a caller already on the line. The hard `concurrency_limit` still applies.
            resuming=admitted or grant.resuming,
        )

    async def _on_media(self, message: dict[str, Any]) -> None:
        if self.session is None:
            await self.complain("not_started", "media before a valid start message was dropped")
            return
        media = message.get("media")
        if isinstance(media, dict) and media.get("track", "inbound") != "inbound":
            return  # only the caller's side is ours to hear
        payload = media_payload(message)
        if payload is None:
            await self.complain("bad_media", "media.payload must be base64 mu-law audio")
            return
        await self.feed(payload, "mulaw")

    async def _on_dtmf(self, message: dict[str, Any]) -> None:
        dtmf = message.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if self.session is None:
            await self.complain("not_started", "dtmf before a valid start message was dropped")
            return
        try:
            await self.session.receive_dtmf(digit if isinstance(digit, str) else "")
        except ProtocolError:
            await self.complain("bad_dtmf", "dtmf.digit must be one phone key")

    def _on_mark(self, message: dict[str, Any]) -> None:
        mark = message.get("mark")
        name = mark.get("name") if isinstance(mark, dict) else None
        names = [n for n, _ in self._pending_marks]
        if name not in names:
            return  # a mark of audio dropped by `clear` (Twilio echoes those too), or not ours
        for _ in range(names.index(name) + 1):
            _, self.heard_ms = self._pending_marks.popleft()
        if not self._pending_marks:
            self._all_played.set()
        if name.startswith("end-"):
            self.heard_ms = 0  # the next reply starts from zero
            self._heard_at = None
        elif self.session is not None:
            self._heard_at = (self.heard_ms, self.session.clock.now())

    # -- optional session hooks (PlayoutReporter, CallControl) -------------------------------------
    def heard_reply_ms(self) -> int | None:
        """Reply audio played by now according to Twilio's mark echoes; None before any reply audio."""
        if self._heard_at is None or self.session is None:
            return None
        confirmed_ms, since = self._heard_at
        # the audio after the last echoed mark is playing now, but cannot have passed the next mark
        limit_ms = self._pending_marks[0][1] if self._pending_marks else self._reply_ms
        elapsed_ms = (self.session.clock.now() - since) * 1000
        return round(max(confirmed_ms, min(confirmed_ms + elapsed_ms, limit_ms)))

    async def wait_played(self, timeout_s: float) -> bool:
        """Until Twilio has echoed every mark sent (so it has played all our audio); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._all_played.wait()
        except TimeoutError:
            return False
        return True

    async def transfer(self, to: str) -> None:
        """Transfer through the REST API (the call leaves this stream for a `<Dial>`); then close."""
        if self._calls is None or self.call_sid is None:
            raise ProviderError(
                "twilio: transferring needs call control (TWILIO_ACCOUNT_SID)", retryable=False
            )
        await self._calls.transfer(self.call_sid, to)
        await self.close("hang_up")

    async def hang_up(self) -> None:
        """End the call: REST `Status=completed` when call control is set up, then close the stream."""
        if self._calls is not None and self.call_sid is not None:
            try:
                await self._calls.hang_up(self.call_sid)
            except ProviderError as exc:  # closing the stream still ends a <Connect> call
                logger.warning("twilio: REST hang-up failed (%s); closing the stream", exc.message)
        elif self._calls is None:
            logger.info("twilio: no call control configured; hanging up by closing the stream")
        await self.close("hang_up")


def _b64(payload: bytes) -> str:
    return binascii.b2a_base64(payload, newline=False).decode("ascii")
