"""`WebRTCConnection`: one browser peer (aiortc `RTCPeerConnection`) carrying one `Session`.

The connection is the session's `Transport`. Its `run()` task owns the lifecycle: wait for the peer
to connect (closed after `connect_timeout_s` otherwise), start the session and the receive loop, then
wait for the end: the peer fails, closes, stays disconnected past `disconnect_grace_s`, sends `stop`,
the session hits its time limit or receives no audio for its `no_audio_timeout_s`, or the server
shuts down. Whatever the end, the session is closed,
the tasks are cancelled, the tracks stopped and the peer connection closed.

Events travel as JSON on the data channel the client opens; until it is open they wait in a bounded
queue (oldest dropped and counted).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from typing import Any, Literal

import av
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from agentkit._tasks import cancel_and_wait
from agentkit.audio import Samples, float_to_pcm16
from agentkit.exceptions import AudioFormatError, ProtocolError, TransportClosedError
from agentkit.stream import CloseReason, Session, SessionHost
from agentkit.stream._events import (
    ErrorEvent,
    Event,
    Interrupted,
    PauseDetected,
    PlaybackPaused,
    ResponseDone,
    ResponseStarting,
    Stopped,
)
from agentkit.transports._admission import AddressSlot
from agentkit.transports._untrusted import loads_untrusted
from agentkit.transports._webrtc_media import OutgoingAudioTrack, frame_to_mono_pcm16
from agentkit.transports._webrtc_receive import PromptJitterBuffer

__all__ = ["CallState", "WebRTCConnection", "close_peer_connection"]

logger = logging.getLogger(__name__)

CallState = Literal["listening", "thinking", "speaking"]
_DRAIN_TIMEOUT_S = 0.5
_RECEIVE_STOP_TIMEOUT_S = 2.0
_MAX_PENDING_EVENTS = 64
_MAX_PENDING_TEXTS = 8  # typed messages waiting for the session; more at once are refused (`busy`)
_END_REASONS: dict[CloseReason, str] = {
    "normal": "server_close",
    "hang_up": "server_close",
    "time_limit": "time_limit",
    "no_audio": "no_audio",
    "server_shutdown": "server_shutdown",
}
"""The connection's `end_reason` for each reason the server closes it for."""


class WebRTCConnection:
    """The `Transport` of one WebRTC session; see the module docstring for its lifecycle."""

    protocol = "webrtc"
    bytes_per_sample = 2

    def __init__(
        self,
        stream: SessionHost,
        *,
        connect_timeout_s: float = 5.0,
        disconnect_grace_s: float = 5.0,
        outgoing: OutgoingAudioTrack | None = None,
        pending_slot: AddressSlot | None = None,
        session_slot: AddressSlot | None = None,
    ) -> None:
        """`pending_slot` / `session_slot`: the caller's places under the per-address caps on pending
        offers and on sessions; the first is given back once the peer connects, both when it ends."""
        self.stream = stream
        self._pending_slot = pending_slot
        self._session_slot = session_slot
        self.pc: RTCPeerConnection | None = None
        self.session: Session | None = None
        self.outgoing = outgoing or OutgoingAudioTrack()
        self.channel: RTCDataChannel | None = None
        self.end_reason: str | None = None
        """Why the connection ended (`client_stop`, `connect_timeout`, `failed`, ...); None while live."""
        self.state: CallState | None = None
        self.dropped_events = 0
        self.receive_buffers: list[PromptJitterBuffer] = []
        """What hands the caller's audio packets to the decoder (`hand_on_promptly`), with its counts
        of concealed and late packets."""
        self._connect_timeout_s = connect_timeout_s
        self._disconnect_grace_s = disconnect_grace_s
        self._remote_track: MediaStreamTrack | None = None
        self._pending: collections.deque[str] = collections.deque()
        self._wake = asyncio.Event()
        self._connected = False
        self._closing = False
        self._receive_task: asyncio.Task[None] | None = None
        self._texts: asyncio.Queue[object] = asyncio.Queue(_MAX_PENDING_TEXTS)  # `text` messages, in order
        self._text_task: asyncio.Task[None] | None = None

    def attach(self, pc: RTCPeerConnection, session: Session) -> None:
        """Listen to the peer connection's events; call before `setRemoteDescription`."""
        self.pc, self.session = pc, session
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)

    @property
    def dropped_frames(self) -> int:
        """Reply audio the outgoing track dropped because aiortc's sender fell behind (`DropCounter`)."""
        return self.outgoing.dropped_frames

    # -- Transport (used by the session) ---------------------------------------------------------
    def encode_audio(self, samples: Samples) -> bytes:
        return float_to_pcm16(samples)

    async def send_audio(self, payload: bytes) -> None:
        if self._closing:
            raise TransportClosedError("the peer connection is closing")
        self.outgoing.put(payload)
        self._set_state("speaking")

    async def send_event(self, event: Event) -> None:
        if isinstance(event, Interrupted | PlaybackPaused):
            self.outgoing.clear()  # barge-in or pause: nothing queued may still reach the caller's ear
        self._send_json(event.to_json())
        if isinstance(event, ResponseDone | Interrupted | PlaybackPaused):
            self._set_state("listening")
        elif isinstance(event, PauseDetected | ResponseStarting):
            self._set_state("thinking")

    async def close(self, reason: CloseReason, detail: str | None = None) -> None:
        """End from the server side (the session's time limit, a hang-up); `run()` does the cleanup.

        The peer connection has no close code: the reason becomes the connection's `end_reason`.
        """
        logger.debug("webrtc: server-side close (%s)", detail or reason)
        self.end(_END_REASONS[reason])

    # -- events on the data channel --------------------------------------------------------------
    def _set_state(self, state: CallState) -> None:
        if state != self.state:
            self.state = state
            self._send_json({"type": "state", "state": state})

    def _send_json(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
            return
        if len(self._pending) >= _MAX_PENDING_EVENTS:
            self._pending.popleft()
            self.dropped_events += 1
        self._pending.append(text)

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.channel is not None:
            logger.debug("webrtc: ignoring extra data channel")
            return
        self.channel = channel
        channel.on("message", self._on_channel_message)
        if channel.readyState == "open":
            self._flush_pending()
        else:
            channel.on("open", self._flush_pending)

    def _flush_pending(self) -> None:
        channel = self.channel
        while self._pending and channel is not None and channel.readyState == "open":
            channel.send(self._pending.popleft())

    def _on_channel_message(self, message: str | bytes) -> None:
        # called by aiortc: whatever escapes from here would tear the call down, so it must not
        try:
            self._on_message(message)
        except Exception:
            logger.exception("webrtc: a data channel message could not be handled")
            self._report("internal", "internal server error")

    def _on_message(self, message: str | bytes) -> None:
        size = len(message.encode() if isinstance(message, str) else message)
        if size > self.stream.max_message_bytes:
            limit = self.stream.max_message_bytes
            self.stream.refused.note("message_too_large", f"a message of {size} bytes (limit {limit})")
            self._report("message_too_large", f"message of {size} bytes is over the limit")
            return
        try:
            parsed = loads_untrusted(message, max_bytes=self.stream.max_message_bytes)
        except ProtocolError as exc:  # not JSON, or nested too deeply
            self._report("bad_json", exc.message)
            return
        kind = parsed.get("type") if isinstance(parsed, dict) else None
        if kind == "input":
            args = parsed.get("args", [])
            if not isinstance(args, list):
                self._report("bad_input", "input args must be a list")
            elif self.session is not None:
                self.session.set_args(tuple(args))
        elif kind == "stop":
            self._send_json(Stopped(reason="client_stop").to_json())
            self.end("client_stop")
        elif kind == "ping":
            self._send_json({"type": "pong", "id": parsed.get("id")})
        elif kind == "text":
            try:
                self._texts.put_nowait(parsed.get("text"))  # taken in order once the session runs
            except asyncio.QueueFull:
                self._report("busy", "too many text messages at once; this one was dropped")
        else:
            self._report("unknown_message", f"unknown message type {str(kind)[:40]!r}")

    def _report(self, code: str, message: str) -> None:
        logger.info("webrtc: %s error (%s)", code, message)
        self._send_json(ErrorEvent(code=code, message=message).to_json())

    async def _read_texts(self, session: Session) -> None:
        """Hand the caller's `text` messages to the session one at a time, in order."""
        while True:
            text = await self._texts.get()
            try:
                await session.receive_text(text)
            except ProtocolError as exc:  # blank, too long, control characters: the call goes on
                self._report("bad_text", exc.message)

    # -- peer connection events ------------------------------------------------------------------
    def _on_connection_state(self) -> None:
        assert self.pc is not None
        state = self.pc.connectionState
        logger.debug("webrtc: connection state %s", state)
        if state == "connected":
            self._connected = True
        elif state in ("failed", "closed"):
            self.end(state)
        self._wake.set()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._remote_track is None:
            self._remote_track = track

    def end(self, reason: str) -> None:
        """Ask `run()` to finish (the first reason given is kept)."""
        if self.end_reason is None:
            self.end_reason = reason
        self._wake.set()

    # -- the connection's life -------------------------------------------------------------------
    async def run(self) -> None:
        """The whole life of the connection; returns once everything it owned is closed."""
        try:
            if await self._wait_connected():
                assert self.session is not None
                await self.session.start()
                self._set_state("listening")
                if self._remote_track is not None:
                    self._receive_task = asyncio.create_task(
                        self._receive(self._remote_track), name=f"webrtc-{self.session.id[:8]}-receive"
                    )
                self._text_task = asyncio.create_task(
                    self._read_texts(self.session), name=f"webrtc-{self.session.id[:8]}-texts"
                )
                logger.info("webrtc: session %s connected", self.session.id)
                await self._wait_end()
        finally:
            await self._cleanup()

    async def _wait_connected(self) -> bool:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                while not self._connected and self.end_reason is None:
                    self._wake.clear()
                    await self._wake.wait()
        except TimeoutError:
            detail = f"an answered offer did not connect within {self._connect_timeout_s:g} s"
            self.stream.refused.note("connect_timeout", detail)
            self.end("connect_timeout")
        if self._pending_slot is not None:  # connected (or ended): no longer a pending offer
            self._pending_slot.release()
        return self.end_reason is None

    async def _wait_end(self) -> None:
        assert self.pc is not None
        while self.end_reason is None:
            self._wake.clear()
            grace = self._disconnect_grace_s if self.pc.connectionState == "disconnected" else None
            try:
                await asyncio.wait_for(self._wake.wait(), grace)
            except TimeoutError:
                self.end("disconnected")

    async def _receive(self, track: MediaStreamTrack) -> None:
        assert self.session is not None
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                logger.debug("webrtc: the caller's track ended")
                return
            if self.stream.mode == "receive":
                continue  # the caller only listens
            try:
                if not isinstance(frame, av.AudioFrame):
                    raise AudioFormatError("expected decoded audio frames")
                if frame.sample_rate != self.session.input_sample_rate:
                    raise AudioFormatError("unexpected sample rate", sample_rate=frame.sample_rate)
                await self.session.receive_audio(frame_to_mono_pcm16(frame), "pcm_s16le")
            except AudioFormatError as exc:
                self._report(exc.code, exc.message)
                return

    async def _cleanup(self) -> None:
        self._closing = True
        task, self._receive_task = self._receive_task, None
        if task is not None:
            await cancel_and_wait(task, _RECEIVE_STOP_TIMEOUT_S)
        task, self._text_task = self._text_task, None
        if task is not None:
            await cancel_and_wait(task, _RECEIVE_STOP_TIMEOUT_S)
        if self.session is not None:
            await self.session.close(self.end_reason or "client_stop")
        for slot in (self._pending_slot, self._session_slot):
            if slot is not None:
                slot.release()
        self.outgoing.stop()
        if self.end_reason == "server_shutdown":
            self._send_json(Stopped(reason="server_shutdown").to_json())
        await self._drain_channel()
        if self.pc is not None:
            await close_peer_connection(self.pc)
        for buffer in self.receive_buffers:
            if buffer.concealed_packets or buffer.late_packets or buffer.unconcealed_packets:
                logger.info(
                    "webrtc: caller audio: %d lost packets concealed, %d not, %d late ones dropped",
                    buffer.concealed_packets,
                    buffer.unconcealed_packets,
                    buffer.late_packets,
                )
        logger.info("webrtc: connection closed (%s)", self.end_reason)

    async def _drain_channel(self) -> None:
        """Give the last events (`stopped`, `error`) a moment to leave before the transport goes."""
        channel = self.channel
        if channel is None or channel.readyState != "open" or self.end_reason in ("failed", "closed"):
            return
        if channel.bufferedAmount == 0:
            return
        drained = asyncio.Event()
        channel.bufferedAmountLowThreshold = 0
        channel.on("bufferedamountlow", drained.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drained.wait(), _DRAIN_TIMEOUT_S)


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """`pc.close()`; when aiortc raises inside it (a half-negotiated connection can make it), every
    transport the peer connection made is stopped by hand, so that none of its sockets stays open.
    (`pc.close()` must not be called twice then: its second call would wait forever.)"""
    try:
        await pc.close()
        return
    except Exception as exc:
        failure = type(exc).__name__
        logger.info("webrtc: closing a peer connection failed (%s); stopping its transports", failure)
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    for dtls in transports:
        for stop in (dtls.stop, dtls.transport.stop):  # DTLS, then the ICE transport and its sockets
            with contextlib.suppress(Exception):
                await stop()
