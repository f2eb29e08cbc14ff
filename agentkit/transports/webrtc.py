"""WebRTC transport on aiortc: `POST {prefix}/webrtc/offer` and `GET {prefix}/webrtc/config`.

The browser posts its SDP offer and gets the answer once the server's ICE candidates are gathered
(no trickle ICE: the answer holds every candidate). Audio is Opus both ways; events travel as JSON
on a data channel the client opens (docs/webrtc.md). `WebRTCPeers` owns every peer connection and
closes them all on server shutdown.

ICE servers: the server's own come from `rtc_configuration`, the browser's from
`client_rtc_configuration`. Each may be an `RTCConfiguration`, a dict in the browser's shape
(`{"iceServers": [{"urls": ..., "username": ..., "credential": ...}]}`) or a callable (sync or async)
returning either, called for every offer (short-lived TURN credentials). None means no STUN or TURN
server at all: host candidates only (aiortc itself would default to a public STUN server).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.sdp import MediaDescription, SessionDescription
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from agentkit._identity import CallerTokenError, configured_caller_secret, identify_caller
from agentkit._tasks import TaskSet
from agentkit.exceptions import (
    AddressLimitError,
    CapacityError,
    ConfigError,
    MessageTooLargeError,
    ProtocolError,
)
from agentkit.stream._stream import RETRY_AFTER_S
from agentkit.transports._admission import AddressLimiter, AddressSlot, client_address
from agentkit.transports._origin import OriginPolicy
from agentkit.transports._untrusted import is_id, loads_untrusted, optional_id, optional_text
from agentkit.transports._webrtc_connection import CallState, WebRTCConnection
from agentkit.transports._webrtc_media import WEBRTC_SAMPLE_RATE, OutgoingAudioTrack, frame_to_mono_pcm16
from agentkit.transports._webrtc_receive import hand_on_promptly

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentkit.stream import SessionHost

__all__ = [
    "CallState",
    "OutgoingAudioTrack",
    "RTCConfigSource",
    "WebRTCConnection",
    "WebRTCPeers",
    "add_webrtc_routes",
    "frame_to_mono_pcm16",
    "resolve_rtc_configuration",
]

logger = logging.getLogger(__name__)

_ConfigValue: TypeAlias = RTCConfiguration | dict[str, Any] | None
RTCConfigSource: TypeAlias = _ConfigValue | Callable[[], _ConfigValue] | Callable[[], Awaitable[_ConfigValue]]
"""Where ICE servers come from: a value, or a (sync or async) callable returning one per offer."""

MAX_SDP_CHARS = 32 * 1024
MAX_OFFER_BYTES = 4 * MAX_SDP_CHARS
"""An offer body is the SDP (JSON-escaped: `\\r\\n` doubles line ends) and a few short fields; a
larger one is refused unread (413)."""
_SDP_TEXT = re.compile(r"[\x20-\x7e\r\n\t]*")
_CLOSE_TIMEOUT_S = 5.0


async def resolve_rtc_configuration(source: RTCConfigSource) -> RTCConfiguration:
    """The `RTCConfiguration` that `source` stands for; no ICE servers unless it names some."""
    value: Any = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    if value is None:
        return RTCConfiguration(iceServers=[])
    if isinstance(value, RTCConfiguration):
        if value.iceServers is None:  # aiortc would fall back to a public STUN server
            return RTCConfiguration(
                iceServers=[], iceTransportPolicy=value.iceTransportPolicy, bundlePolicy=value.bundlePolicy
            )
        return value
    if isinstance(value, dict):
        servers = value.get("iceServers", [])
        if not isinstance(servers, list):
            raise ConfigError("iceServers must be a list")
        return RTCConfiguration(iceServers=[_ice_server(s) for s in servers])
    raise ConfigError("an RTC configuration must be an RTCConfiguration, a dict or None")


def _ice_server(entry: Any) -> RTCIceServer:
    if isinstance(entry, RTCIceServer):
        return entry
    if not isinstance(entry, dict) or not isinstance(entry.get("urls"), str | list):
        raise ConfigError("each ICE server needs `urls` (a string or a list of strings)")
    return RTCIceServer(
        urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential")
    )


def ice_servers_json(config: RTCConfiguration) -> list[dict[str, Any]]:
    """ICE servers in the browser's `RTCConfiguration.iceServers` shape."""
    servers = []
    for server in config.iceServers or []:
        entry: dict[str, Any] = {"urls": server.urls}
        if server.username is not None:
            entry["username"] = server.username
        if server.credential is not None:
            entry["credential"] = server.credential
        servers.append(entry)
    return servers


class OfferRefused(Exception):
    """An offer answered with an HTTP error instead of an SDP answer (with `Retry-After` when
    `retry_after_s` is given: a refusal for capacity or load)."""

    def __init__(self, status: int, code: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after_s = retry_after_s

    @classmethod
    def for_capacity(cls, exc: CapacityError) -> OfferRefused:
        """503 for the stream's refusal (`over_capacity`, `busy`, `shutting_down`), retry later."""
        return cls(503, exc.code, exc.message, retry_after_s=RETRY_AFTER_S)

    def response(self) -> JSONResponse:
        headers = None if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
        body = {"error": self.code, "message": self.message}
        return JSONResponse(body, status_code=self.status, headers=headers)


def _optional_id(body: dict[str, Any], key: str) -> str | None:
    """`body[key]`: an id (`session_id`) or, for `caller`, short printable text; None if absent."""
    try:
        if key == "caller":
            return optional_text(body.get(key), key)
        return optional_id(body.get(key), key)
    except ProtocolError as exc:
        raise OfferRefused(400, "bad_offer", exc.message) from None


def _check_offer_sdp(sdp: Any) -> str:
    """Refuse what cannot become a voice call before any peer connection exists."""
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise OfferRefused(400, "bad_sdp", "sdp must be an SDP offer (starting with v=0)")
    if len(sdp) > MAX_SDP_CHARS:
        raise OfferRefused(400, "bad_sdp", f"sdp is over {MAX_SDP_CHARS} characters")
    if not _SDP_TEXT.fullmatch(sdp):  # what browsers send; aiortc logs offers, so no control characters
        raise OfferRefused(400, "bad_sdp", "sdp must be printable ASCII lines")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted errors for malformed lines
        raise OfferRefused(400, "bad_sdp", "sdp could not be parsed") from exc
    audio = [m for m in parsed.media if m.kind == "audio"]
    if not audio:
        raise OfferRefused(400, "no_audio", "the offer has no audio m-line")
    if not any(c.mimeType.lower() == "audio/opus" for m in audio for c in m.rtp.codecs):
        raise OfferRefused(400, "no_opus", "the offer's audio does not include the Opus codec")
    problem = _offer_problem(parsed)
    if problem is not None:
        raise OfferRefused(400, "bad_sdp", problem)
    return sdp


def _offer_problem(parsed: SessionDescription) -> str | None:
    """What aiortc would trip over later (some of it inside `pc.close()`), or None: every media
    section needs a unique `a=mid`, ICE credentials, `a=setup:actpass` with a fingerprint (RFC 8842
    for offers) and, for RTP, `a=rtcp-mux`; a data channel needs its SCTP port; BUNDLE names mids."""
    mids = [media.rtp.muxId for media in parsed.media]
    if not all(mids) or len(set(mids)) != len(mids):
        return "every media section needs its own a=mid"
    for media in parsed.media:
        problem = _media_problem(media)
        if problem is not None:
            return problem
    bundles = [group for group in parsed.group if group.semantic == "BUNDLE"]
    if any(str(item) not in mids for group in bundles for item in group.items):
        return "a=group:BUNDLE names a media section that does not exist"
    return None


def _media_problem(media: MediaDescription) -> str | None:
    if media.kind == "application" and media.profile == "DTLS/SCTP":  # the legacy form: port in fmt
        port = str(media.fmt[0]) if media.fmt else ""
        has_port = port.isascii() and port.isdigit()
    else:
        has_port = media.sctp_port is not None
    checks = (
        (bool(media.ice and media.ice.usernameFragment and media.ice.password), "a=ice-ufrag and a=ice-pwd"),
        (
            media.dtls is not None and media.dtls.role == "auto" and bool(media.dtls.fingerprints),
            "a=setup:actpass and a=fingerprint",
        ),
        (media.kind not in ("audio", "video") or media.rtcp_mux, "a=rtcp-mux"),
        (media.kind != "application" or has_port, "an SCTP port"),
    )
    missing = next((what for ok, what in checks if not ok), None)
    return None if missing is None else f"the {media.kind} section needs {missing}"


class WebRTCPeers:
    """Every WebRTC connection of one stream, each with its `run()` task; `aclose()` ends them all."""

    def __init__(
        self,
        stream: SessionHost,
        *,
        rtc_configuration: RTCConfigSource = None,
        connect_timeout_s: float = 5.0,
        disconnect_grace_s: float = 5.0,
        caller_secret: str | None = None,
        sessions: AddressLimiter | None = None,
        pending_offers: AddressLimiter | None = None,
    ) -> None:
        """`sessions` / `pending_offers`: per-client-address caps (see `_admission`; None: none)."""
        self.stream = stream
        self._sessions = sessions
        self._pending_offers = pending_offers
        self._caller_secret = caller_secret  # checks `caller_token`s; None: every token is refused
        self._rtc_configuration = rtc_configuration
        self._connect_timeout_s = connect_timeout_s
        self._disconnect_grace_s = disconnect_grace_s
        self._tasks = TaskSet("webrtc")
        self._connections: dict[asyncio.Task[None], WebRTCConnection] = {}  # by their `run()` task
        self._closed = False

    @property
    def connections(self) -> list[WebRTCConnection]:
        return list(self._connections.values())

    def _admit(self, address: str) -> tuple[AddressSlot | None, AddressSlot | None]:
        """The client's places under the per-address caps (pending offers, sessions); `OfferRefused`
        (429) when it holds its share of either already."""
        pending: AddressSlot | None = None
        try:
            if self._pending_offers is not None:
                pending = self._pending_offers.acquire(address)
            session = self._sessions.acquire(address) if self._sessions is not None else None
        except AddressLimitError as exc:
            if pending is not None:
                pending.release()
            raise OfferRefused(429, exc.code, exc.message) from None
        return pending, session

    async def answer(self, body: dict[str, Any], *, address: str = "") -> dict[str, Any]:
        """Answer an offer body (see `add_webrtc_routes`) from the client at `address` (its key for
        the per-address caps, see `_admission.client_address`); raises `OfferRefused`."""
        if self._closed:
            raise OfferRefused(
                503, "shutting_down", "the server is shutting down", retry_after_s=RETRY_AFTER_S
            )
        try:  # before any work on the offer: an overloaded server refuses cheaply
            self.stream.check_admission()
        except CapacityError as exc:
            raise OfferRefused.for_capacity(exc) from None
        if body.get("type") != "offer":
            raise OfferRefused(400, "bad_offer", "type must be 'offer'")
        sdp = _check_offer_sdp(body.get("sdp"))
        session_id, caller = _optional_id(body, "session_id"), _optional_id(body, "caller")
        try:  # only a signed token names the caller; a plain `caller` is a label
            identity = identify_caller(body.get("caller_token"), caller, self._caller_secret)
        except CallerTokenError as exc:  # never downgraded to an anonymous session
            raise OfferRefused(401, exc.code, exc.message) from None
        pending_slot, session_slot = self._admit(address)
        connection = WebRTCConnection(
            self.stream,
            connect_timeout_s=self._connect_timeout_s,
            disconnect_grace_s=self._disconnect_grace_s,
            pending_slot=pending_slot,
            session_slot=session_slot,
        )
        try:  # until `connection.run()` owns them, the slots are given back here on failure
            session = self.stream.open_session(
                connection,
                input_sample_rate=WEBRTC_SAMPLE_RATE,
                output_sample_rate=WEBRTC_SAMPLE_RATE,
                session_id=session_id,
                channel=connection.protocol,
                caller=identity.caller,
                call_info=identity.call_info(),
            )
        except CapacityError as exc:
            _release(pending_slot, session_slot)
            raise OfferRefused.for_capacity(exc) from None
        except ProtocolError as exc:
            _release(pending_slot, session_slot)
            raise OfferRefused(409, "session_exists", exc.message) from None
        try:
            pc = RTCPeerConnection(await resolve_rtc_configuration(self._rtc_configuration))
        except BaseException:
            _release(pending_slot, session_slot)
            await session.close("error")
            raise
        connection.attach(pc, session)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            _set_up_audio(pc, connection)
            pc.addTrack(connection.outgoing)
            await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate first
        except BaseException as exc:
            connection.end("bad_offer")
            await connection.run()  # closes the session and the peer connection (and its sockets)
            if not isinstance(exc, Exception):  # cancelled: not the offer's fault
                raise
            # whatever aiortc raises for an offer it cannot take (ValueError, KeyError, ...) is a 400
            logger.info("webrtc: aiortc did not accept an offer (%s)", type(exc).__name__)
            reason = f"the offer was not accepted: {exc}"[:200].encode("ascii", "replace").decode()
            raise OfferRefused(400, "bad_sdp", reason) from None
        task = self._tasks.spawn(connection.run(), session.id[:8])
        self._connections[task] = connection
        task.add_done_callback(self._forget)
        logger.info("webrtc: answered an offer for session %s", session.id)
        return {"sdp": pc.localDescription.sdp, "type": "answer", "session_id": session.id}

    def cancel(self, session_id: str) -> bool:
        """End the connection of `session_id`, connected or not (the client gave up on it, e.g. to
        fall back to the WebSocket, whose session must not wait for this one's connect timeout).
        False when no live connection has that session."""
        for connection in self._connections.values():
            session = connection.session
            if session is not None and session.id == session_id and connection.end_reason is None:
                connection.end("client_cancel")
                return True
        return False

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)  # a failure is logged by the task set

    async def aclose(self) -> None:
        """Close every peer connection (server shutdown); later offers are refused."""
        self._closed = True
        for connection in self._connections.values():
            connection.end("server_shutdown")
        tasks = list(self._tasks)
        if tasks:  # each ends its call cleanly; the task set cancels whatever does not in time
            await asyncio.wait(tasks, timeout=_CLOSE_TIMEOUT_S)
        await self._tasks.aclose(_CLOSE_TIMEOUT_S)


async def _read_offer(request: Request) -> bytes:
    """The offer body; stops reading past `MAX_OFFER_BYTES` (`MessageTooLargeError`)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_OFFER_BYTES:
                raise MessageTooLargeError(f"the offer is over {MAX_OFFER_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect:  # no one left to answer; the refusal goes nowhere
        raise ProtocolError("the client disconnected before the body ended") from None
    return b"".join(chunks)


def _release(*slots: AddressSlot | None) -> None:
    for slot in slots:
        if slot is not None:
            slot.release()


def _set_up_audio(pc: RTCPeerConnection, connection: WebRTCConnection) -> None:
    """Opus only, and the caller's audio handed to the session as it arrives (no playout delay)."""
    _prefer_opus(pc)
    connection.receive_buffers = hand_on_promptly(pc)


def _prefer_opus(pc: RTCPeerConnection) -> None:
    """Answer with Opus only: the session is opened at its 48 kHz."""
    opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            transceiver.setCodecPreferences(opus)


async def _cancel_elsewhere(stream: SessionHost, session_id: str) -> bool:
    """End a WebRTC session another worker holds (with a Redis store, the session bus reaches it; the
    DELETE may land on any worker sharing the port). False when none does, or for a malformed id."""
    if not is_id(session_id) or session_id in stream.sessions:
        return False  # held here but not a live WebRTC connection: not ours to end
    try:
        await stream.hang_up(session_id, reason="client_cancel")
    except KeyError:
        return False
    return True


def add_webrtc_routes(
    app: FastAPI,
    stream: SessionHost,
    *,
    prefix: str = "",
    rtc_configuration: RTCConfigSource = None,
    client_rtc_configuration: RTCConfigSource = None,
    connect_timeout_s: float = 5.0,
    disconnect_grace_s: float = 5.0,
    allowed_origins: Sequence[str] | None = None,
    public_url: str | None = None,
    caller_secret: str | None = None,
    sessions: AddressLimiter | None = None,
    pending_offers: AddressLimiter | None = None,
) -> WebRTCPeers:
    """Mount `POST {prefix}/webrtc/offer`, `GET {prefix}/webrtc/config` and
    `DELETE {prefix}/webrtc/sessions/{session_id}`; returns the peer registry.

    Call `await peers.aclose()` on shutdown (`create_app` does). The offer body is
    `{"sdp", "type": "offer", "session_id"?, "caller"?, "caller_token"?}`; the answer `{"sdp", "type":
    "answer", "session_id"}`. A `caller_token` is checked with `caller_secret` (default
    `AGENTKIT_CALLER_SECRET`; see `agentkit.caller_token`) and its `sub` becomes the session's caller;
    a `caller` alone is only a label (`call_info["caller_label"]`). Refusals are JSON
    `{"error": code, "message"}`: 400 (`bad_json`, `bad_offer`, `bad_sdp`, `no_audio`, `no_opus`), 401
    (`bad_caller_token`), 403 (`origin_not_allowed`: with `allowed_origins`, a browser page from another
    origin than the server's own or a listed one; the server's own origins are those on a loopback
    name, the host of `public_url` or `AGENTKIT_ALLOWED_HOSTS`), 409 (`session_exists`), 413
    (`too_large`: a body over `MAX_OFFER_BYTES`), 429 (`too_many_pending_offers`,
    `too_many_sessions`: the client's address already holds its share under the `pending_offers` or
    `sessions` cap; see `_admission`), 503 with `Retry-After` (`over_capacity`, `busy`: the process is
    overloaded, see `agentkit.stream.LoadMonitor`; `shutting_down`). An answered offer whose
    peer does not connect within `connect_timeout_s` is closed and frees its slots. The DELETE ends
    that session's peer connection, connected or not (204; 404 `unknown_session`): the web client
    sends it when it gives up on WebRTC, so that its WebSocket fallback does not find the session
    slot still held until the connect timeout.
    """
    policy = OriginPolicy.of(allowed_origins, public_url=public_url)
    peers = WebRTCPeers(
        stream,
        rtc_configuration=rtc_configuration,
        connect_timeout_s=connect_timeout_s,
        disconnect_grace_s=disconnect_grace_s,
        caller_secret=configured_caller_secret(caller_secret),
        sessions=sessions,
        pending_offers=pending_offers,
    )

    def cors(request: Request, response: Response, *, preflight: bool = False) -> Response:
        # pages of listed origins (the embedded widget) call these endpoints cross-origin
        if policy is not None:
            response.headers.update(policy.cors_headers(request.headers.get("origin"), preflight=preflight))
        return response

    async def offer(request: Request) -> Response:
        return cors(request, await answer_offer(request))

    async def answer_offer(request: Request) -> JSONResponse:
        origin = request.headers.get("origin")
        if policy is not None and not policy.allows(origin, request.headers.get("host")):
            logger.info("webrtc: refused an offer from origin %.100s", origin)
            return OfferRefused(403, "origin_not_allowed", "this page may not open a session").response()
        try:
            body = loads_untrusted(await _read_offer(request), max_bytes=MAX_OFFER_BYTES)
        except MessageTooLargeError as exc:
            return OfferRefused(413, "too_large", exc.message).response()
        except ProtocolError as exc:  # not JSON, or nested too deeply
            return OfferRefused(400, "bad_json", f"the body must be a JSON object ({exc.message})").response()
        if not isinstance(body, dict):
            return OfferRefused(400, "bad_json", "the body must be a JSON object").response()
        try:
            return JSONResponse(await peers.answer(body, address=client_address(request.client)))
        except OfferRefused as refusal:
            logger.info("webrtc: offer refused (%s)", refusal.code)
            return refusal.response()

    async def cancel(request: Request) -> Response:
        origin = request.headers.get("origin")
        if policy is not None and not policy.allows(origin, request.headers.get("host")):
            refused = OfferRefused(403, "origin_not_allowed", "this page may not end sessions")
            return cors(request, refused.response())
        session_id = request.path_params["session_id"]
        if not peers.cancel(session_id) and not await _cancel_elsewhere(stream, session_id):
            unknown = OfferRefused(404, "unknown_session", "no live WebRTC session has that id")
            return cors(request, unknown.response())
        return cors(request, Response(status_code=204))

    async def config(request: Request) -> Response:
        resolved = await resolve_rtc_configuration(client_rtc_configuration)
        return cors(request, JSONResponse({"iceServers": ice_servers_json(resolved)}))

    async def preflight(request: Request) -> Response:
        listed = policy is not None and policy.is_listed(request.headers.get("origin"))
        return cors(request, Response(status_code=204 if listed else 403), preflight=True)

    app.add_api_route(f"{prefix}/webrtc/offer", offer, methods=["POST"])
    app.add_api_route(f"{prefix}/webrtc/config", config, methods=["GET"])
    app.add_api_route(f"{prefix}/webrtc/offer", preflight, methods=["OPTIONS"])
    app.add_api_route(f"{prefix}/webrtc/config", preflight, methods=["OPTIONS"])
    app.add_api_route(f"{prefix}/webrtc/sessions/{{session_id}}", cancel, methods=["DELETE"])
    app.add_api_route(f"{prefix}/webrtc/sessions/{{session_id}}", preflight, methods=["OPTIONS"])
    return peers
