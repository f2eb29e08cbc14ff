"""`TwilioCaller`: a simulated phone call through Twilio, for tests and benchmarks.

It does what Twilio does when someone dials the number:

1. POSTs the voice webhook (`/telephone/incoming`), signed with the account's auth token exactly as
   Twilio signs (`X-Twilio-Signature`: HMAC-SHA1 over the URL and the sorted form parameters);
2. reads the `<Connect><Stream url=...>` and its `<Parameter>`s from the TwiML answer;
3. opens the media WebSocket and sends `connected` and `start` (with the parameters, as Twilio's
   `customParameters`), then the caller's voice as 20 ms base64 mu-law 8 kHz `media` messages in real
   time, `dtmf` for keys pressed, and `stop` on hang-up;
4. plays the agent's `media` on a virtual loudspeaker (its own playout clock), answers each `mark`
   once the audio sent before it has played, and on `clear` drops what it has not played yet (and
   answers the pending marks at once, as Twilio does);
5. when the stream ends while the call goes on (the server closed it, or its worker died), requests
   the `<Connect action>` URL and follows the TwiML it answers (`follow_action`): another stream,
   or `<Hangup/>`.

Pacing, the playout clock and the audio queries (`heard_audio`, `dropped_audio_s`, `play` results) are
`WebSocketCaller`'s; only the wire differs. Every message received is in `events` (`type` is the
Twilio `event` name) with the caller's clock reading at receipt; `marks_answered` says when each
mark went back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import uuid
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

import httpx
import numpy as np

from agentkit._tasks import cancel_and_wait
from agentkit.audio import float_to_pcm16, mulaw_encode, mulaw_to_float
from agentkit.clock import Clock
from agentkit.testing._ws_caller import CallRefusedError, ReceivedEvent, WebSocketCaller

__all__ = ["TwilioCaller", "WebhookAnswer", "sign_twilio_request"]

SAMPLE_RATE = 8000


def sign_twilio_request(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The `X-Twilio-Signature` Twilio would send for a POST of `params` to `url`."""
    from twilio.request_validator import RequestValidator  # the optional `twilio` extra

    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """The server's answer to the voice webhook."""

    status_code: int
    text: str = field(repr=False)
    """The response body (TwiML when the status is 200)."""
    stream_url: str | None = None
    """`<Connect><Stream url=...>`, if the TwiML has one."""
    parameters: dict[str, str] = field(default_factory=dict)
    """The stream's `<Parameter name= value=/>`s."""
    action_url: str | None = None
    """`<Connect action=...>`: what Twilio requests when the stream ends while the call goes on."""
    hangs_up: bool = False
    """The TwiML ends the call (`<Hangup/>`)."""


def parse_twiml(status_code: int, text: str) -> WebhookAnswer:
    """Find `<Response><Connect><Stream>`, its parameters and the `<Connect action>` (an answer
    without them has None), and whether it says `<Hangup/>`."""
    if status_code != 200:
        return WebhookAnswer(status_code, text)
    root = ET.fromstring(text)
    hangs_up = root.find("./Hangup") is not None
    connect, stream = root.find("./Connect"), root.find("./Connect/Stream")
    if connect is None or stream is None:
        return WebhookAnswer(status_code, text, hangs_up=hangs_up)
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return WebhookAnswer(status_code, text, stream.get("url"), params, connect.get("action"), hangs_up)


class _TwilioWire:
    """What `WebSocketCaller.play` sends on: binary 16-bit PCM frames become Twilio `media` messages."""

    def __init__(self, caller: TwilioCaller) -> None:
        self._caller = caller

    async def send(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            data = self._caller.media_message(data)
        ws = self._caller._ws
        if ws is None:
            raise RuntimeError("TwilioCaller is not connected; use it with 'async with'")
        await ws.send(data)


class TwilioCaller(WebSocketCaller):
    """A phone call from `from_number` to `to_number`; use as `async with TwilioCaller(url) as call:`.

    `http_url` is the server's base URL (`http://127.0.0.1:PORT`). Entering posts the webhook (signed
    with `auth_token`; unsigned when it is None), raises `CallRefusedError` unless the answer is TwiML
    with a stream, connects to the stream URL (`ws_url` overrides it: a test server is not reachable
    at its public address) and sends `connected` and `start`. The server answers `start` with nothing:
    a refused token shows as a close (`wait_closed()`). Leaving closes the socket without `stop`.
    """

    def __init__(
        self,
        http_url: str,
        *,
        auth_token: str | None,
        from_number: str = "+15550100001",
        to_number: str = "+15550100002",
        webhook_path: str = "/telephone/incoming",
        public_url: str | None = None,
        ws_url: str | None = None,
        custom_parameters: Mapping[str, str] | None = None,
        clock: Clock | Callable[[], float] | None = None,
        open_timeout: float = 10.0,
        mark_delay_s: float = 0.0,
        call_sid: str | None = None,
        direction: str = "inbound",
    ) -> None:
        options: dict[str, Any] = {} if clock is None else {"clock": clock}
        super().__init__(
            ws_url or "", sample_rate=SAMPLE_RATE, frame_ms=20, open_timeout=open_timeout, **options
        )
        self.http_url = http_url.rstrip("/")
        self.auth_token = auth_token
        self.from_number = from_number
        self.to_number = to_number
        self.webhook_path = webhook_path
        self.webhook_url = (public_url or self.http_url).rstrip("/") + webhook_path
        """The URL Twilio "requested", which the signature covers."""
        self._ws_url_override = ws_url
        self._custom_parameters = custom_parameters
        self.call_sid = call_sid or "CA" + uuid.uuid4().hex
        self.direction = direction
        """`inbound`, or `outbound-api` for a call placed through the REST API (`agentkit call`):
        then `from_number` is the Twilio number and `to_number` the person answering."""
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.answer: WebhookAnswer | None = None
        """The webhook's answer, once posted."""
        self.marks_answered: list[tuple[str, float]] = []
        """(mark name, clock reading when the caller sent it back), in order."""
        self.clears_at_media_ms: list[int] = []
        """For each `clear`: how much audio (ms) the caller had sent when it arrived. That is the call's
        simulated time, the same media timeline the server's turn-taking counts in."""
        self.mark_delay_s = mark_delay_s
        """Answer each mark this long after its audio played (a slow or far-away Twilio edge)."""
        self._sequence = itertools.count(1)
        self._chunk = itertools.count(1)
        self._media_ms = 0
        self._marks: deque[tuple[float, str]] = deque()  # (when its audio has played, name)
        self._marks_changed = asyncio.Event()
        self._mark_task: asyncio.Task[None] | None = None

    # -- the webhook -----------------------------------------------------------------------------
    def webhook_params(self) -> dict[str, str]:
        """The form Twilio posts for an incoming call (the fields agentkit reads, and a few more)."""
        return {
            "AccountSid": "AC" + "0" * 32,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Direction": self.direction,
            "From": self.from_number,
            "To": self.to_number,
        }

    async def post_webhook(
        self, *, signature: str | None = None, params: Mapping[str, str] | None = None
    ) -> WebhookAnswer:
        """POST the voice webhook; `signature` overrides the one computed from `auth_token`."""
        form = dict(self.webhook_params() if params is None else params)
        return await self._request_twiml(self.http_url, self.webhook_url, form, signature)

    async def _request_twiml(
        self, http_url: str, signed_url: str, form: Mapping[str, str], signature: str | None = None
    ) -> WebhookAnswer:
        """POST `form` to `signed_url`'s path and query at `http_url`, signed over `signed_url`
        (the URL Twilio requests: public, while a test server listens on loopback)."""
        headers = {}
        if signature is None and self.auth_token is not None:
            signature = sign_twilio_request(self.auth_token, signed_url, form)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        where = urlsplit(signed_url)
        path = where.path + (f"?{where.query}" if where.query else "")
        async with httpx.AsyncClient(base_url=http_url, timeout=self._open_timeout_s) as http:
            response = await http.post(path, data=dict(form), headers=headers)
        self.answer = parse_twiml(response.status_code, response.text)
        return self.answer

    async def follow_action(self, *, http_url: str | None = None, ws_url: str | None = None) -> WebhookAnswer:
        """What Twilio does when `<Connect>` ends while the call goes on (the stream was closed by the
        server, or dropped with its worker): request the TwiML's `action` URL, signed, with the call's
        parameters (`CallStatus=in-progress`); when the answer is another `<Stream>`, connect to it
        and send `connected` and `start` again (a new `streamSid`, the same `callSid`). `http_url`:
        the server to ask (default: the call's own; behind a load balancer any worker may answer),
        `ws_url`: where its stream is (default: the TwiML's URL). The answer is returned: without a
        `stream_url` the call is over."""
        answer = self.answer
        if answer is None or answer.action_url is None:
            raise RuntimeError("the TwiML has no <Connect action> to follow")
        await self._shutdown(raise_receiver_error=False)  # Twilio is done with that stream
        form = {**self.webhook_params(), "CallStatus": "in-progress", "StreamSid": self.stream_sid}
        answer = await self._request_twiml(http_url or self.http_url, answer.action_url, form)
        if answer.stream_url is None:
            return answer
        self._ws_url_override = ws_url
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self._marks.clear()
        self._forget_connection()
        await self.__aenter__()
        return answer

    # -- the media stream ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        answer = self.answer or await self.post_webhook()
        if answer.stream_url is None:
            raise CallRefusedError(
                f"the webhook answered {answer.status_code} without a stream",
                error_code=None,
                close_code=None,
            )
        self.url = self._ws_url_override or answer.stream_url
        await super().__aenter__()
        self._mark_task = asyncio.create_task(self._answer_marks(), name="twilio-caller-marks")
        return self

    async def _shutdown(self, *, raise_receiver_error: bool) -> None:
        if self._mark_task is not None:
            await cancel_and_wait(self._mark_task, 2.0)
        await super()._shutdown(raise_receiver_error=raise_receiver_error)

    def _connection(self) -> Any:  # the base class's pacing sends through this
        return _TwilioWire(self)

    async def start(self) -> ReceivedEvent:
        """Send `connected` and `start` with the TwiML's parameters (or `custom_parameters`)."""
        params = self._custom_parameters
        if params is None:
            params = self.answer.parameters if self.answer is not None else {}
        await self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send_json(
            {
                "event": "start",
                "sequenceNumber": str(next(self._sequence)),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
                    "customParameters": dict(params),
                },
            }
        )
        # Twilio's server side answers nothing: the call is "started" once `start` is out
        self.started = ReceivedEvent(
            "started", {"type": "started", "output_sample_rate": SAMPLE_RATE}, self._clock.now()
        )
        return self.started

    def media_message(self, pcm16: bytes) -> str:
        """One frame of the caller's voice (16-bit PCM at 8 kHz) as a Twilio `media` message."""
        payload = mulaw_encode(np.frombuffer(pcm16, dtype="<i2"))
        timestamp = self._media_ms
        self._media_ms += len(payload) * 1000 // SAMPLE_RATE
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(next(self._sequence)),
                "media": {
                    "track": "inbound",
                    "chunk": str(next(self._chunk)),
                    "timestamp": str(timestamp),
                    "payload": base64.b64encode(payload).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
        )

    async def press(self, digit: str) -> None:
        """The caller presses a key."""
        await self.send_json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "sequenceNumber": str(next(self._sequence)),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def stop(self, timeout_s: float = 5.0) -> ReceivedEvent:
        """Hang up like Twilio: send `stop`, then wait for the server to close the socket."""
        if not self.closed:
            await self.send_json(
                {
                    "event": "stop",
                    "sequenceNumber": str(next(self._sequence)),
                    "streamSid": self.stream_sid,
                    "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
                }
            )
        await self.wait_closed(timeout_s)
        return ReceivedEvent("stop", {"type": "stop"}, self._clock.now())

    # -- what the server sends -------------------------------------------------------------------
    def _on_text(self, text: str, t: float) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            self._violation("text message that is not JSON")
            return
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            self._violation("JSON message without a string 'event'")
            return
        kind = data["event"]
        if data.get("streamSid") != self.stream_sid:
            self._violation(f"{kind} message without this call's streamSid")
        self.events.append(ReceivedEvent(type=kind, data=data, t=t))
        if kind == "media":
            try:
                mulaw = base64.b64decode(data["media"]["payload"], validate=True)
            except (KeyError, TypeError, ValueError):
                self._violation("media without a base64 payload")
                return
            samples = mulaw_to_float(mulaw)
            super()._on_audio(float_to_pcm16(samples), t)
        elif kind == "mark":
            name = data.get("mark", {}).get("name")
            if not isinstance(name, str):
                self._violation("mark without a name")
                return
            self._marks.append((max(t, self._playout_end_t) + self.mark_delay_s, name))
            self._marks_changed.set()
        elif kind == "clear":
            self.clears_at_media_ms.append(self._media_ms)
            self._clear_playout(t)
            self._marks = deque((t, name) for _, name in self._marks)  # answered at once
            self._marks_changed.set()
        else:
            self._violation(f"unknown event {kind!r}")

    def _on_audio(self, data: bytes, t: float) -> None:
        self._violation("binary message (Twilio speaks JSON only)")

    async def _answer_marks(self) -> None:
        """Send each mark back once the audio before it has played (by the virtual player)."""
        while True:
            if not self._marks:
                await self._marks_changed.wait()
                self._marks_changed.clear()
                continue
            due_t, name = self._marks[0]
            delay = due_t - self._clock.now()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._marks_changed.wait(), delay)
                self._marks_changed.clear()
                continue
            self._marks.popleft()
            message = {
                "event": "mark",
                "sequenceNumber": str(next(self._sequence)),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
            with contextlib.suppress(Exception):  # the call may have ended meanwhile
                await self.send_json(message)
                self.marks_answered.append((name, self._clock.now()))
