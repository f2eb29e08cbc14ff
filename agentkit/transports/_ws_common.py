"""What both WebSocket protocols share: one connection's lifecycle around a `Session`."""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from agentkit.audio import Samples, mulaw_encode
from agentkit.exceptions import (
    AgentkitError,
    AudioFormatError,
    CapacityError,
    ProtocolError,
    TransportClosedError,
)
from agentkit.stream import CloseReason, Session, SessionHost
from agentkit.stream._events import ErrorEvent, Event, Stopped
from agentkit.transports._admission import AddressLimiter, AddressSlot, client_address
from agentkit.transports._close_codes import (
    CLOSE_INTERNAL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    websocket_close,
)
from agentkit.transports._untrusted import loads_untrusted

logger = logging.getLogger(__name__)


def samples_to_mulaw(samples: Samples) -> bytes:
    """Float samples in [-1, 1) as G.711 mu-law bytes (the base64 JSON protocols' audio)."""
    return mulaw_encode((samples.clip(-1.0, 32767 / 32768) * 32768).astype(np.int16))


def media_payload(message: dict[str, Any]) -> bytes | None:
    """The audio of a `{"media": {"payload": BASE64}}` message; None when it is missing or not base64."""
    try:
        return base64.b64decode(message["media"]["payload"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None


class WebSocketConnection(abc.ABC):
    """One caller on one WebSocket: reads messages until the end, and closes its session whatever happens.

    Subclasses speak a protocol: they parse messages (`on_text`, `on_bytes`) and encode events.
    """

    protocol = "websocket"

    def __init__(
        self, websocket: WebSocket, stream: SessionHost, *, sessions: AddressLimiter | None = None
    ) -> None:
        """`sessions`: the stream's per-address session cap (None: none, e.g. Twilio's stream)."""
        self.websocket = websocket
        self.stream = stream
        self.session: Session | None = None
        self._sessions = sessions
        self._slot: AddressSlot | None = None  # the session's place under the per-address cap
        self._send_lock = asyncio.Lock()
        self._closing = False
        self._set_sink: Callable[[TextSink | None], None] | None = None  # the server's, once offered
        scope = getattr(websocket, "scope", None)  # a stand-in socket (tests, benchmarks) may have none
        extension = scope.get("extensions", {}).get(DIRECT_TEXT) if isinstance(scope, dict) else None
        self._direct: dict[str, Any] = extension if isinstance(extension, dict) else {}
        """The server's `DIRECT_TEXT` extension, where it offers one (else empty)."""
        send_now = self._direct.get("send_text")
        self._send_now: Callable[[str], bool] | None = send_now if callable(send_now) else None
        """The server's way to send a text message without waiting, where it offers one."""
        self.taken_now = 0
        """Messages taken as the server parsed them (`take_text_now`)."""

    # -- Transport (used by the session) ---------------------------------------------------------
    @abc.abstractmethod
    async def send_event(self, event: Event) -> None: ...

    async def close(self, reason: CloseReason, detail: str | None = None) -> None:
        """End the connection for one of the core's reasons (see `_close_codes` for the codes)."""
        await self.close_with_code(*websocket_close(reason, detail))

    async def close_with_code(self, code: int, reason: str) -> None:
        """End the connection with a WebSocket close code (the protocol's own refusals use this)."""
        if self._closing:
            return
        self._closing = True
        async with self._send_lock:
            if self.websocket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await self.websocket.close(code, reason)

    # -- sending ---------------------------------------------------------------------------------
    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        """Send text that is JSON already (a protocol's precomputed envelope around a payload)."""
        send_now = self._send_now
        # at once where the server can (nothing being sent, so nothing is overtaken), else queued
        if send_now is not None and not self._closing and not self._send_lock.locked() and send_now(text):
            return
        await self._send({"type": "websocket.send", "text": text})

    async def send_binary(self, payload: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": payload})

    async def _send(self, message: dict[str, Any]) -> None:
        """Send one message; a connection that is gone raises `TransportClosedError`."""
        async with self._send_lock:
            if self._closing:
                raise TransportClosedError("the connection is closing")
            try:
                await self.websocket.send(message)
            except (WebSocketDisconnect, OSError, RuntimeError) as exc:
                # Starlette raises WebSocketDisconnect (or RuntimeError once closed) for a peer that left.
                raise TransportClosedError("the caller disconnected") from exc

    async def report(
        self, error: AgentkitError | str, message: str | None = None, *, fatal: bool = False
    ) -> None:
        """Send an `error` event (logged without payloads)."""
        code = error if isinstance(error, str) else error.code
        text = message or (error.message if isinstance(error, AgentkitError) else code)
        logger.info("%s: %s error (%s)%s", self.protocol, code, text, " - closing" if fatal else "")
        with contextlib.suppress(Exception):
            await self.send_event(ErrorEvent(code=code, message=text, fatal=fatal))

    # -- the connection --------------------------------------------------------------------------
    async def run(self) -> None:
        """Read the connection until it ends, then close the session. The reading runs in a task of
        its own, awaited here (cancelling this cancels it): each message suspends the reader once or
        twice (for the next message, for its turn-taking batch), and every suspension and resumption
        walks all the coroutine frames of its task, which in the server's task include the ASGI
        application's routing and middleware, some twenty frames that then wait once per call."""
        await self.websocket.accept()
        await asyncio.create_task(self._read(), name=f"{self.protocol}-reader")

    async def _read(self) -> None:
        try:
            while not self._closing:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    if message.get("code") == CLOSE_TOO_BIG:  # uvicorn's own cap (`ws_max_size`)
                        self.stream.refused.note("message_too_large", "a message over ws_max_size")
                    break
                text, data = message.get("text"), message.get("bytes")
                size = _wire_size(text) if text is not None else len(data or b"")
                if size > self.stream.max_message_bytes:
                    detail = f"a message of {size} bytes (limit {self.stream.max_message_bytes})"
                    self.stream.refused.note("message_too_large", detail)
                    await self.report(
                        "message_too_large",
                        f"message of {size} bytes is over the limit of {self.stream.max_message_bytes}",
                        fatal=True,
                    )
                    await self.close_with_code(CLOSE_TOO_BIG, "message too large")
                    break
                if text is not None:
                    await self._on_text(text)
                elif data is not None:
                    await self.on_bytes(data)
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("%s: connection failed", self.protocol)
            await self.report("internal", "internal server error", fatal=True)
            await self.close_with_code(CLOSE_INTERNAL, "internal error")
        finally:
            if self._set_sink is not None:
                self._set_sink(None)
                logger.debug("%s: %d messages taken as parsed", self.protocol, self.taken_now)
            if self.session is not None:
                await self.session.close(self.end_reason())
            if self._slot is not None:
                self._slot.release()

    def end_reason(self) -> str:
        """The session's stop reason when the connection ends without the server having chosen one
        (the caller left or stopped)."""
        return "client_stop"

    async def _on_text(self, text: str) -> None:
        try:
            message = loads_untrusted(text, max_bytes=self.stream.max_message_bytes)
        except ProtocolError as exc:  # not JSON, or nested too deeply: the message is ignored
            await self.reject("bad_json", exc.message)
            return
        if not isinstance(message, dict):
            await self.reject("unknown_message", "message must be a JSON object")
            return
        await self.on_message(message)

    async def reject(self, code: str, message: str) -> None:
        """Tell the caller a message was ignored (a non-fatal `error` event; Twilio only logs it)."""
        await self.report(code, message)

    @abc.abstractmethod
    async def on_message(self, message: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def on_bytes(self, data: bytes) -> None: ...

    # -- helpers for subclasses ------------------------------------------------------------------
    async def open_session(
        self,
        *,
        input_sample_rate: int,
        output_sample_rate: int | None,
        session_id: str | None,
        caller: str | None = None,
        call_info: Mapping[str, str] | None = None,
        resuming: bool = False,
    ) -> Session | None:
        """Open and start the session; on refusal, tell the caller and close. None if refused."""
        slot: AddressSlot | None = None
        try:
            if self._sessions is not None:
                slot = self._sessions.acquire(client_address(self.websocket.client))
            session = self.stream.open_session(
                self,  # type: ignore[arg-type]  # subclasses implement the audio half of Transport
                input_sample_rate=input_sample_rate,
                output_sample_rate=output_sample_rate,
                session_id=session_id,
                channel=self.protocol,
                caller=caller,
                call_info=call_info,
                resuming=resuming,
            )
        except CapacityError as exc:  # the stream's limit or load, or this address's cap
            if slot is not None:
                slot.release()
            await self.refuse_capacity(exc)
            return None
        except ProtocolError as exc:
            if slot is not None:
                slot.release()
            await self.report("bad_start", exc.message)
            return None
        self._slot = slot
        self.session = session
        await session.start()
        logger.info("%s: session %s started", self.protocol, session.id)
        self._offer_sink()
        return session

    def take_text_now(self, text: str) -> bool:
        """Take a text message as the server parses it, before it reaches the receive queue (see
        `DIRECT_TEXT`), when that needs no waiting; False leaves it to `_read`. The default takes
        none; Twilio takes media messages."""
        del text
        return False

    def _offer_sink(self) -> None:
        """Ask the server, where it offers it, to hand text messages to `take_text_now` first."""
        if type(self).take_text_now is WebSocketConnection.take_text_now:
            return
        set_sink = self._direct.get("set_sink")
        if callable(set_sink):
            set_sink(self.take_text_now)
            self._set_sink = set_sink

    async def refuse_capacity(self, exc: CapacityError) -> None:
        await self.report(exc, fatal=True)
        reason = exc.code.replace("_", " ")  # "over capacity", "too many sessions", "busy", ...
        await self.close_with_code(CLOSE_TRY_LATER, reason)

    async def feed(self, payload: bytes, codec: str) -> None:
        assert self.session is not None
        try:
            await self.session.receive_audio(payload, codec)  # type: ignore[arg-type]
        except AudioFormatError as exc:
            await self.report("odd_length_pcm" if "even" in exc.message else exc.code, exc.message)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.send_event(Stopped(reason="client_stop"))
        await self.close("normal", "stopped")


DIRECT_TEXT = "agentkit.direct_text"
"""The ASGI scope extension through which a server hands text messages over as they are parsed
(`agentkit.server._ws_protocol`: `scope["extensions"][DIRECT_TEXT]["set_sink"](sink)`)."""

TextSink = Callable[[str], bool]
"""Takes one text message (True) or leaves it to the receive queue (False); called on the event loop
from the server's parser, so it must not block or raise."""


def _wire_size(text: str) -> int:
    """Bytes of a text message on the wire; ASCII text (every media message) needs no encoding."""
    return len(text) if text.isascii() else len(text.encode())
