"""`Stream`: a handler served to many callers over every transport, FastRTC-style; and `mount`.

`Stream` is the core's `SessionHost` plus `Stream.mount(app)`. `mount(app, stream, ...)` is the one
place that adds every transport's endpoints to a FastAPI app; `Stream.mount` and
`agentkit.server.create_app` both go through it. The transports (FastAPI, Starlette, aiortc) are
imported only when `mount` runs, so `import agentkit` stays light. WebRTC and Twilio are optional
extras (`agentkit[webrtc]`, `agentkit[twilio]`): without one, its paths answer 501 `missing_extra`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentkit.stream import SessionHost
from agentkit.stream._stream import DEFAULT_MAX_MESSAGE_BYTES
from agentkit.transports._admission import AddressLimiter
from agentkit.transports._extras import add_missing_extra_routes, missing_extra

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentkit.store import ConversationStore
    from agentkit.transports._twilio_webhook import CallTokens
    from agentkit.transports.webrtc import RTCConfigSource, WebRTCPeers

__all__ = ["MountedTransports", "Stream", "app_max_message_bytes", "mount"]

_MAX_MESSAGE_BYTES_STATE = "agentkit_max_message_bytes"
"""The `app.state` attribute where `mount` records the largest message its streams accept."""


@dataclass(frozen=True, slots=True)
class MountedTransports:
    """What `mount` added that its caller may need later."""

    webrtc_peers: WebRTCPeers | None
    """Every WebRTC peer connection; the stream's `aclose()` closes them (`mount` registers that).
    None without the `webrtc` extra."""
    twilio_tokens: CallTokens | None
    """The one-time tokens the Twilio webhook issues and its media stream redeems. None without the
    `twilio` extra."""
    sessions: AddressLimiter
    """The per-client-address session cap shared by the WebSocket and WebRTC endpoints."""
    pending_offers: AddressLimiter
    """The per-client-address cap on answered WebRTC offers not yet connected."""


def app_max_message_bytes(app: object) -> int:
    """The largest `max_message_bytes` of the streams `mount` added to `app`; the default one for an
    app it added none to. The ASGI server's own WebSocket message cap (uvicorn `ws_max_size`) should
    be this plus a little, so that a compressed message is not inflated beyond it (see
    `agentkit.server.uvicorn_options`)."""
    recorded = getattr(getattr(app, "state", None), _MAX_MESSAGE_BYTES_STATE, None)
    return recorded if isinstance(recorded, int) else DEFAULT_MAX_MESSAGE_BYTES


def _address_cap(value: int | None, setting: int) -> int | None:
    """A per-address cap from its option (None: the setting) where 0 means none."""
    cap = setting if value is None else value
    return cap or None


def mount(
    app: FastAPI,
    stream: SessionHost,
    *,
    prefix: str = "",
    fastrtc_input_sample_rate: int = 48000,
    fastrtc_output_sample_rate: int = 24000,
    allowed_origins: Sequence[str] | None = None,
    rtc_configuration: RTCConfigSource = None,
    client_rtc_configuration: RTCConfigSource = None,
    public_url: str | None = None,
    validate_twilio_signatures: bool = True,
    max_sessions_per_address: int | None = None,
    max_pending_offers_per_address: int | None = None,
    webrtc_connect_timeout_s: float = 5.0,
    store: ConversationStore | None = None,
) -> MountedTransports:
    """Add every transport's endpoints for `stream` to `app` under `prefix`.

    One client address (see `agentkit.transports._admission`) may hold at most
    `max_sessions_per_address` sessions over the WebSocket and WebRTC endpoints together, and at most
    `max_pending_offers_per_address` answered WebRTC offers that have not connected yet (None: the
    `AGENTKIT_MAX_SESSIONS_PER_ADDRESS` / `AGENTKIT_MAX_PENDING_OFFERS_PER_ADDRESS` settings, 4 and 2
    by default; 0: no cap). Twilio's media stream is exempt: its peer is always Twilio. An answered
    offer whose peer has not connected within `webrtc_connect_timeout_s` is closed. `mount` also
    records `stream.max_message_bytes` on `app.state` for `app_max_message_bytes`.

    `{prefix}/ws` speaks agentkit's WebSocket protocol (docs/websocket-protocol.md) and
    `{prefix}/websocket/offer` the FastRTC-compatible one at the `fastrtc_*` wire rates;
    `{prefix}/webrtc/...` is WebRTC (docs/webrtc.md) with the server's and the browser's ICE servers
    (`rtc_configuration`, `client_rtc_configuration`; see `agentkit.transports.webrtc`);
    `{prefix}/telephone/...` is Twilio's webhook and Media Streams (docs/telephony.md; `public_url`
    and `validate_twilio_signatures` as in `agentkit.transports.twilio`; `public_url`'s host also
    counts as the server's own for the origin check). `allowed_origins`: the other sites whose pages
    may connect (None: no origin checks). `stream.aclose()` closes the WebRTC
    peer connections too. Without the `webrtc` or `twilio` extra, that transport's paths answer 501
    with `{"error": "missing_extra", ...}` naming the extra to install. `store`: the conversation
    store of the stream's agent, with which a Twilio call whose media stream dropped reconnects and
    goes on (see `agentkit.transports.twilio`).
    """
    from agentkit.config import load_settings
    from agentkit.transports.websocket import add_websocket_routes

    settings = load_settings()
    sessions = AddressLimiter(
        _address_cap(max_sessions_per_address, settings.max_sessions_per_address),
        reason="too_many_sessions",
        what="sessions",
        refused=stream.refused,
    )
    pending_offers = AddressLimiter(
        _address_cap(max_pending_offers_per_address, settings.max_pending_offers_per_address),
        reason="too_many_pending_offers",
        what="pending WebRTC offers",
        refused=stream.refused,
    )
    largest = max(getattr(app.state, _MAX_MESSAGE_BYTES_STATE, 0), stream.max_message_bytes)
    setattr(app.state, _MAX_MESSAGE_BYTES_STATE, largest)
    prefix = prefix.rstrip("/")
    add_websocket_routes(
        app,
        stream,
        prefix=prefix,
        fastrtc_input_sample_rate=fastrtc_input_sample_rate,
        fastrtc_output_sample_rate=fastrtc_output_sample_rate,
        allowed_origins=allowed_origins,
        public_url=public_url,
        sessions=sessions,
    )
    peers: WebRTCPeers | None = None
    try:
        from agentkit.transports.webrtc import add_webrtc_routes
    except ModuleNotFoundError as error:
        if not missing_extra(error, "webrtc"):
            raise
        add_missing_extra_routes(app, f"{prefix}/webrtc", "webrtc")
    else:
        peers = add_webrtc_routes(
            app,
            stream,
            prefix=prefix,
            rtc_configuration=rtc_configuration,
            client_rtc_configuration=client_rtc_configuration,
            allowed_origins=allowed_origins,
            public_url=public_url,
            connect_timeout_s=webrtc_connect_timeout_s,
            sessions=sessions,
            pending_offers=pending_offers,
        )
        stream.on_close(peers.aclose)
    tokens: CallTokens | None = None
    try:
        from agentkit.transports.twilio import add_twilio_routes
    except ModuleNotFoundError as error:
        if not missing_extra(error, "twilio"):
            raise
        add_missing_extra_routes(
            app, f"{prefix}/telephone", "twilio", websocket_paths=[f"{prefix}/telephone/media"]
        )
    else:
        # no per-address cap: the media stream's peer is always Twilio (one address for every call),
        # and each stream must redeem a signed, single-use token that only Twilio's signed webhook obtains
        tokens = add_twilio_routes(
            app,
            stream,
            public_url=public_url,
            validate_signatures=validate_twilio_signatures,
            prefix=f"{prefix}/telephone",
            store=store,
        )
    return MountedTransports(
        webrtc_peers=peers, twilio_tokens=tokens, sessions=sessions, pending_offers=pending_offers
    )


class Stream(SessionHost):
    """Serve `handler` to callers over every transport; each session gets its own `handler.copy()`.

    See `SessionHost` for `mode`, `concurrency_limit` and `time_limit`; `mount` adds the endpoints.
    """

    def mount(self, app: FastAPI, path: str = "") -> None:
        """Add this stream's endpoints to a FastAPI app under `path`.

        `{path}/ws` speaks agentkit's WebSocket protocol (docs/websocket-protocol.md),
        `{path}/websocket/offer` the FastRTC-compatible one, `{path}/webrtc/offer` WebRTC
        (docs/webrtc.md) and `{path}/telephone/...` Twilio Media Streams (docs/telephony.md), all with
        their default settings; `agentkit.transports.mount` and `agentkit.server.create_app` expose
        their options. Call `await stream.aclose()` when the app shuts down: it also closes WebRTC
        peer connections.
        """
        mount(app, self, prefix=path)
