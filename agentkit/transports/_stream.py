"""`Stream`: a handler served to many callers over every transport, FastRTC-style; and `mount`.

`Stream` is the core's `SessionHost` plus `Stream.mount(app)`. `mount(app, stream, ...)` is the one
place that adds every transport's endpoints to a FastAPI app; `Stream.mount` and
`agentkit.server.create_app` both go through it. The transports (FastAPI, Starlette, aiortc) are
imported only when `mount` runs, so `import agentkit` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentkit.stream import SessionHost

if TYPE_CHECKING:
    from fastapi import FastAPI

    from agentkit.transports._twilio_webhook import CallTokens
    from agentkit.transports.webrtc import RTCConfigSource, WebRTCPeers

__all__ = ["MountedTransports", "Stream", "mount"]


@dataclass(frozen=True, slots=True)
class MountedTransports:
    """What `mount` added that its caller may need later."""

    webrtc_peers: WebRTCPeers
    """Every WebRTC peer connection; the stream's `aclose()` closes them (`mount` registers that)."""
    twilio_tokens: CallTokens
    """The one-time tokens the Twilio webhook issues and its media stream redeems."""


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
) -> MountedTransports:
    """Add every transport's endpoints for `stream` to `app` under `prefix`.

    `{prefix}/ws` speaks agentkit's WebSocket protocol (docs/websocket-protocol.md) and
    `{prefix}/websocket/offer` the FastRTC-compatible one at the `fastrtc_*` wire rates;
    `{prefix}/webrtc/...` is WebRTC (docs/webrtc.md) with the server's and the browser's ICE servers
    (`rtc_configuration`, `client_rtc_configuration`; see `agentkit.transports.webrtc`);
    `{prefix}/telephone/...` is Twilio's webhook and Media Streams (docs/telephony.md; `public_url`
    and `validate_twilio_signatures` as in `agentkit.transports.twilio`). `allowed_origins`: the
    other sites whose pages may connect (None: no origin checks). `stream.aclose()` closes the WebRTC
    peer connections too.
    """
    from agentkit.transports.twilio import add_twilio_routes
    from agentkit.transports.webrtc import add_webrtc_routes
    from agentkit.transports.websocket import add_websocket_routes

    prefix = prefix.rstrip("/")
    add_websocket_routes(
        app,
        stream,
        prefix=prefix,
        fastrtc_input_sample_rate=fastrtc_input_sample_rate,
        fastrtc_output_sample_rate=fastrtc_output_sample_rate,
        allowed_origins=allowed_origins,
    )
    peers = add_webrtc_routes(
        app,
        stream,
        prefix=prefix,
        rtc_configuration=rtc_configuration,
        client_rtc_configuration=client_rtc_configuration,
        allowed_origins=allowed_origins,
    )
    stream.on_close(peers.aclose)
    tokens = add_twilio_routes(
        app,
        stream,
        public_url=public_url,
        validate_signatures=validate_twilio_signatures,
        prefix=f"{prefix}/telephone",
    )
    return MountedTransports(webrtc_peers=peers, twilio_tokens=tokens)


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
