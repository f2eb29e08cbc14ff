"""WebSocket transports: agentkit's own protocol at `/ws`, and FastRTC's at `/websocket/offer`.

The native protocol (docs/websocket-protocol.md) carries 16-bit PCM as binary messages and events
as JSON text. The FastRTC-compatible one carries base64 mu-law in JSON, so FastRTC clients (and the
side-by-side benchmark) work unchanged.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from agentkit._identity import CallerTokenError, configured_caller_secret, identify_caller
from agentkit.audio import Samples, check_sample_rate, float_to_pcm16
from agentkit.exceptions import AudioFormatError, ProtocolError
from agentkit.stream._events import (
    ErrorEvent,
    Event,
    Interrupted,
    PauseDetected,
    PlaybackPaused,
    ResponseStarting,
    StartedTalking,
    Stopped,
)
from agentkit.transports._close_codes import CLOSE_POLICY
from agentkit.transports._origin import OriginPolicy
from agentkit.transports._untrusted import optional_id, optional_text
from agentkit.transports._ws_common import WebSocketConnection, media_payload, samples_to_mulaw

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentkit.exceptions import CapacityError
    from agentkit.stream import SessionHost
    from agentkit.transports._admission import AddressLimiter

__all__ = ["FastRTCConnection", "NativeConnection", "add_websocket_routes"]

logger = logging.getLogger(__name__)

FRAME_MS = 20
MAX_WIRE_SAMPLE_RATE = 48000


class NativeConnection(WebSocketConnection):
    """agentkit's WebSocket protocol: binary PCM s16le both ways, JSON events."""

    protocol = "ws"
    bytes_per_sample = 2

    def __init__(
        self,
        websocket: WebSocket,
        stream: SessionHost,
        *,
        caller_secret: str | None = None,
        sessions: AddressLimiter | None = None,
    ):
        super().__init__(websocket, stream, sessions=sessions)
        self._caller_secret = caller_secret  # checks `caller_token`s; None: every token is refused

    def encode_audio(self, samples: Samples) -> bytes:
        return float_to_pcm16(samples)

    async def send_audio(self, payload: bytes) -> None:
        await self.send_binary(payload)

    async def send_event(self, event: Event) -> None:
        await self.send_json(event.to_json())

    async def on_bytes(self, data: bytes) -> None:
        if self.session is None:
            await self.report("not_started", "send a start message before audio")
        elif self.stream.mode == "receive":
            await self.report("receive_only", "this stream only sends audio to the caller")
        else:
            await self.feed(data, "pcm_s16le")

    async def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "start":
            await self._start(message)
        elif kind == "ping":
            await self.send_json({"type": "pong", "id": message.get("id")})
        elif kind == "stop":
            await self.stop()
        elif kind == "input":
            if self.session is None:
                await self.report("not_started", "send a start message before input")
                return
            args = message.get("args", [])
            if not isinstance(args, list):
                await self.report("bad_input", "input args must be a list")
                return
            self.session.set_args(tuple(args))
        elif kind == "text":
            if self.session is None:
                await self.report("not_started", "send a start message before text")
                return
            try:
                await self.session.receive_text(message.get("text"))
            except ProtocolError as exc:  # blank, too long, control characters: the call goes on
                await self.report("bad_text", exc.message)
        else:
            await self.report("unknown_message", f"unknown message type {str(kind)[:40]!r}")

    async def _start(self, message: dict[str, Any]) -> None:
        if self.session is not None:
            await self.report("already_started", "this connection already has a session")
            return
        try:
            rate = check_sample_rate(message.get("sample_rate"))
            if rate > MAX_WIRE_SAMPLE_RATE:
                raise AudioFormatError(f"sample_rate must be at most {MAX_WIRE_SAMPLE_RATE} Hz")
            out = message.get("output_sample_rate")
            out_rate = None if out is None else check_sample_rate(out)
            if out_rate is not None and out_rate > MAX_WIRE_SAMPLE_RATE:
                raise AudioFormatError(f"output_sample_rate must be at most {MAX_WIRE_SAMPLE_RATE} Hz")
            encoding = message.get("encoding", "pcm_s16le")
            if encoding != "pcm_s16le":
                raise AudioFormatError("encoding must be 'pcm_s16le'")
            session_id = optional_id(message.get("session_id"), "session_id")
            caller = optional_text(message.get("caller"), "caller")
            args = message.get("args", [])
            if not isinstance(args, list):
                raise AudioFormatError("args must be a list")
        except (AudioFormatError, ProtocolError) as exc:
            await self.report("bad_start", exc.message)
            return
        try:  # only a signed token names the caller; a plain `caller` is a label
            identity = identify_caller(message.get("caller_token"), caller, self._caller_secret)
        except CallerTokenError as exc:  # never downgraded to an anonymous session
            await self.report(exc, fatal=True)
            await self.close_with_code(CLOSE_POLICY, "bad caller token")
            return
        session = await self.open_session(
            input_sample_rate=rate,
            output_sample_rate=out_rate,
            session_id=session_id,
            caller=identity.caller,
            call_info=identity.call_info(),
        )
        if session is None:
            return
        session.set_args(tuple(args))
        await self.send_json(
            {
                "type": "started",
                "session_id": session.id,
                "input_sample_rate": rate,
                "output_sample_rate": session.output_sample_rate,
                "encoding": "pcm_s16le",
                "frame_ms": FRAME_MS,
            }
        )


class FastRTCConnection(WebSocketConnection):
    """FastRTC 0.0.34's WebSocket protocol: base64 mu-law media in JSON, `log` events."""

    protocol = "fastrtc-ws"
    bytes_per_sample = 1

    def __init__(
        self,
        websocket: WebSocket,
        stream: SessionHost,
        *,
        input_sample_rate: int,
        output_sample_rate: int,
        sessions: AddressLimiter | None = None,
    ):
        super().__init__(websocket, stream, sessions=sessions)
        self._in_rate = input_sample_rate
        self._out_rate = output_sample_rate

    def encode_audio(self, samples: Samples) -> bytes:
        return samples_to_mulaw(samples)

    async def send_audio(self, payload: bytes) -> None:
        await self.send_json({"event": "media", "media": {"payload": base64.b64encode(payload).decode()}})

    async def send_event(self, event: Event) -> None:
        if isinstance(event, StartedTalking | PauseDetected | ResponseStarting):
            await self.send_json({"type": "log", "data": event.type})
        elif isinstance(event, Interrupted | PlaybackPaused):  # a pause drops the client's buffer too
            await self.send_json({"event": "clear"})
        elif isinstance(event, ErrorEvent):
            await self.send_json({"type": "error", "message": event.message, "code": event.code})
        elif isinstance(event, Stopped):
            await self.send_json({"type": "log", "data": "stopped"})

    async def refuse_capacity(self, exc: CapacityError) -> None:
        await self.send_json(
            {
                "status": "failed",
                "meta": {"error": "concurrency_limit_reached", "limit": exc.context.get("limit")},
            }
        )
        await super().refuse_capacity(exc)

    async def on_bytes(self, data: bytes) -> None:
        await self.report("unknown_message", "this protocol carries audio as JSON media messages")

    async def on_message(self, message: dict[str, Any]) -> None:
        kind = message.get("event")
        if kind == "start":
            if self.session is None:
                try:
                    ws_id = optional_id(message.get("websocket_id"), "websocket_id")
                except ProtocolError as exc:  # e.g. a newline that would forge log lines
                    await self.report("bad_start", exc.message)
                    return
                await self.open_session(
                    input_sample_rate=self._in_rate, output_sample_rate=self._out_rate, session_id=ws_id
                )
        elif kind == "media":
            if self.session is None:
                await self.report("not_started", "send a start message before media")
                return
            payload = media_payload(message)
            if payload is None:
                await self.report("bad_media", "media.payload must be base64 mu-law audio")
                return
            await self.feed(payload, "mulaw")
        elif kind == "stop":
            await self.stop()
        else:
            await self.report("unknown_message", f"unknown event {str(kind)[:40]!r}")


def add_websocket_routes(
    app: FastAPI,
    stream: SessionHost,
    *,
    prefix: str = "",
    fastrtc_input_sample_rate: int = 48000,
    fastrtc_output_sample_rate: int = 24000,
    allowed_origins: Sequence[str] | None = None,
    public_url: str | None = None,
    caller_secret: str | None = None,
    sessions: AddressLimiter | None = None,
) -> None:
    """Mount `{prefix}/ws` (native) and `{prefix}/websocket/offer` (FastRTC-compatible).

    `sessions`: the per-client-address session cap both share (`mount` passes the stream's, shared
    with WebRTC); a session beyond it is refused with a fatal `too_many_sessions` error and close 1013.

    With `allowed_origins` (a list, possibly empty), a browser page may connect only from the server's
    own origin or a listed one (`"*"`: any); others are refused before the handshake completes (HTTP
    403). The server's own origin is one whose host is a loopback name, the host of `public_url`
    (default `AGENTKIT_PUBLIC_URL`) or one of `AGENTKIT_ALLOWED_HOSTS` (see `_origin`: DNS
    rebinding). Connections without an `Origin` header (non-browser clients) are always allowed.
    `None` checks nothing. `caller_secret` (default `AGENTKIT_CALLER_SECRET`) verifies the
    `caller_token` of `/ws` start messages.
    """
    policy = OriginPolicy.of(allowed_origins, public_url=public_url)
    secret = configured_caller_secret(caller_secret)

    async def refused(websocket: WebSocket) -> bool:
        origin = websocket.headers.get("origin")
        if policy is None or policy.allows(origin, websocket.headers.get("host")):
            return False
        logger.info("websocket: refused a connection from origin %.100s", origin)
        await websocket.close(CLOSE_POLICY)  # before accept: the client's handshake fails with 403
        return True

    async def native(websocket: WebSocket) -> None:
        if not await refused(websocket):
            await NativeConnection(websocket, stream, caller_secret=secret, sessions=sessions).run()

    async def fastrtc(websocket: WebSocket) -> None:
        if await refused(websocket):
            return
        connection = FastRTCConnection(
            websocket,
            stream,
            input_sample_rate=fastrtc_input_sample_rate,
            output_sample_rate=fastrtc_output_sample_rate,
            sessions=sessions,
        )
        await connection.run()

    app.add_api_websocket_route(f"{prefix}/ws", native)
    app.add_api_websocket_route(f"{prefix}/websocket/offer", fastrtc)
