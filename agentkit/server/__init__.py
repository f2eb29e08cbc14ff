"""The FastAPI app that serves a stream: its transports, `/healthz`, `/readyz`, and clean shutdown.

`/healthz` is liveness and `/readyz` readiness, for load balancers (see `agentkit.server._probes`):
the app runs a `LoadMonitor` and refuses new calls (`busy`) while it says the process is overloaded.

When the stream's handler is an `Agent`, the app also warms its providers up before the first
caller, gives it a conversation store (from `AGENTKIT_STORE` unless it has one) and serves that
store read-only under `/api/conversations` (`conversation_api`: with `AGENTKIT_API_TOKEN`, or to
this machine only with `AGENTKIT_API_LOCAL=1`; otherwise off). `/metrics` serves the stream's and
the agent's figures in Prometheus' format behind the same guard (see `agentkit.server._metrics`).

With a `redis://` `AGENTKIT_STORE`, the app also opens a Redis `SessionBus` for the stream (unless it
was given one), so that every worker reaches every worker's sessions (`aset_input`, `output_stream`,
and `POST /api/sessions/{id}/hang-up`, guarded like the conversation API: `session_api`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from fastapi import FastAPI

from agentkit.agent import Agent
from agentkit.config import load_settings
from agentkit.server._api import conversation_api, session_api
from agentkit.server._metrics import ServerMetrics, metrics_api
from agentkit.server._probes import Probes
from agentkit.server._serving import uvicorn_options
from agentkit.server._web import add_web_routes
from agentkit.store import ConversationStore, LeaseKeeper, LocalSessionBus, open_session_bus, open_store
from agentkit.stream import LoadMonitor, SessionHost
from agentkit.transports import mount

if TYPE_CHECKING:
    from agentkit.transports.webrtc import RTCConfigSource  # aiortc: the optional `webrtc` extra

__all__ = ["add_web_routes", "conversation_api", "create_app", "session_api", "uvicorn_options"]

logger = logging.getLogger(__name__)


def create_app(
    stream: SessionHost,
    *,
    path: str = "",
    fastrtc_input_sample_rate: int = 48000,
    fastrtc_output_sample_rate: int = 24000,
    title: str = "agentkit",
    allowed_origins: Sequence[str] | None = None,
    rtc_configuration: RTCConfigSource = None,
    client_rtc_configuration: RTCConfigSource = None,
    public_url: str | None = None,
    validate_twilio_signatures: bool = True,
    max_sessions_per_address: int | None = None,
    max_pending_offers_per_address: int | None = None,
    webrtc_connect_timeout_s: float = 5.0,
    load_monitor: LoadMonitor | None = None,
) -> FastAPI:
    """A FastAPI app with `stream` mounted under `path`, the web client, `/healthz` and `/readyz`.

    `max_sessions_per_address`, `max_pending_offers_per_address` (default: the
    `AGENTKIT_MAX_SESSIONS_PER_ADDRESS` / `AGENTKIT_MAX_PENDING_OFFERS_PER_ADDRESS` settings; 0: no
    cap) and `webrtc_connect_timeout_s`: see `agentkit.transports.mount`. Serve the app with
    `uvicorn_options(app)` (as `agentkit run` does) so that uvicorn caps WebSocket messages too.

    `allowed_origins`: other sites whose pages may embed the widget and connect (default:
    `AGENTKIT_ALLOWED_ORIGINS`); the server's own pages and non-browser clients are always allowed.
    `rtc_configuration` / `client_rtc_configuration`: the server's and the browser's ICE servers for
    WebRTC (see `agentkit.transports.webrtc`; None: no STUN/TURN, host candidates only).
    `public_url` / `validate_twilio_signatures`: for the Twilio webhook and media stream under
    `/telephone` (see `agentkit.transports.twilio`; default `AGENTKIT_PUBLIC_URL`, checks on).
    `load_monitor`: measures the process's load (default: one with `AGENTKIT_MAX_LOOP_LAG_MS`,
    `AGENTKIT_MAX_CPU_CORES` and `AGENTKIT_MAX_MEDIA_BUSY`); it becomes `stream.load`, so new calls
    are refused (`busy`) while it says the process is overloaded, and the app runs it from start-up
    to shutdown.
    The app closes every open session and WebRTC peer connection on shutdown.
    """
    settings = load_settings()
    if allowed_origins is None:
        allowed_origins = settings.allowed_origins
    probes = Probes(  # its load monitor becomes `stream.load`
        stream,
        load_monitor
        or LoadMonitor(
            max_loop_lag_ms=settings.max_loop_lag_ms or None,
            max_cpu_cores=settings.max_cpu_cores,
            max_media_busy=settings.max_media_busy or None,
        ),
        input_sample_rate=fastrtc_input_sample_rate,
        output_sample_rate=fastrtc_output_sample_rate,
    )

    agent = stream.handler if isinstance(stream.handler, Agent) else None
    owned_store: ConversationStore | None = None
    if agent is not None and agent.store is None:
        owned_store = agent.store = open_store()
        where = getattr(owned_store, "path", None) or type(owned_store).__name__  # no URL: passwords
        logger.info("conversations are kept in %s (AGENTKIT_STORE changes this)", where)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        lease: LeaseKeeper | None = None
        if agent is not None:
            await agent.warm_up()  # a missing key or model fails here, not on the first call
            if agent.store is not None:
                await agent.store.ping()  # and so does a store URL that leads nowhere
                lease = LeaseKeeper(agent.store, ttl_s=load_settings().store_lease_s)
                await lease.start()  # and what a killed predecessor left open is ended now
        await stream.bus.start()  # connects a Redis one (`_control_sessions`); the stream closes it
        try:  # the load monitor starts after warming up, whose stalls say nothing about serving calls
            async with probes.serving(), metrics.serving(agent):  # metrics: the agent's events, workers'
                yield
        finally:
            if lease is not None:
                await lease.aclose()
            await stream.aclose()  # the WebRTC peer connections first (`mount` registered that)
            if agent is not None:
                await agent.aclose()  # its providers' clients and threads
            if owned_store is not None:
                await owned_store.aclose()

    app = FastAPI(title=title, lifespan=lifespan)
    api_token = settings.api_token
    token = api_token.get_secret_value() or None if api_token is not None else None
    # without a token the API is off, unless AGENTKIT_API_LOCAL opens it to this machine
    if agent is not None and agent.store is not None:
        app.include_router(conversation_api(agent.store, token=token, local=settings.api_local))
    _control_sessions(app, stream, settings.store, token=token, local=settings.api_local)
    metrics = app.state.metrics = ServerMetrics(stream)
    app.include_router(metrics_api(metrics, token=token, local=settings.api_local))
    mounted = mount(
        app,
        stream,
        prefix=path,
        fastrtc_input_sample_rate=fastrtc_input_sample_rate,
        fastrtc_output_sample_rate=fastrtc_output_sample_rate,
        allowed_origins=allowed_origins,
        rtc_configuration=rtc_configuration,
        client_rtc_configuration=client_rtc_configuration,
        public_url=public_url,
        validate_twilio_signatures=validate_twilio_signatures,
        max_sessions_per_address=max_sessions_per_address,
        max_pending_offers_per_address=max_pending_offers_per_address,
        webrtc_connect_timeout_s=webrtc_connect_timeout_s,
        store=agent.store if agent is not None else None,  # Twilio calls whose stream drops go on
    )
    app.state.webrtc_peers = mounted.webrtc_peers
    add_web_routes(app, allowed_origins=allowed_origins, prefix=path.rstrip("/"))
    app.include_router(probes.router())

    return app


def _control_sessions(
    app: FastAPI, stream: SessionHost, store_url: str, *, token: str | None, local: bool
) -> None:
    """Serve `session_api`, and give `stream` a Redis session bus when the store is Redis (unless it
    has a bus of its own), which the stream closes: every worker reaches every worker's sessions."""
    if isinstance(stream.bus, LocalSessionBus) and store_url.lower().startswith(("redis:", "rediss:")):
        stream.use_bus(open_session_bus(store_url), close_with_host=True)
    app.include_router(session_api(stream, token=token, local=local))
