"""The transports that need an optional extra: WebRTC (`agentkit[webrtc]`: aiortc, PyAV) and Twilio
(`agentkit[twilio]`: the twilio SDK). `scripts/install` installs both.

Without its extra, `mount` still adds every other transport and, in place of the missing one, routes
that answer 501 with `{"error": "missing_extra", "message": "WebRTC needs: pip install
'agentkit[webrtc]'"}`, so a client learns at once what the server lacks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["EXTRA_MODULES", "add_missing_extra_routes", "extra_message", "missing_extra"]

logger = logging.getLogger(__name__)

EXTRA_MODULES: dict[str, tuple[str, ...]] = {"webrtc": ("aiortc", "av"), "twilio": ("twilio",)}
"""extra -> the top-level modules it installs."""

_WHAT = {"webrtc": "WebRTC", "twilio": "Twilio"}


def missing_extra(error: ImportError, extra: str) -> bool:
    """Whether `error` says that a module of `extra` is not installed (any other failure is a bug)."""
    name = error.name if isinstance(error, ModuleNotFoundError) else None
    return name is not None and name.partition(".")[0] in EXTRA_MODULES[extra]


def extra_message(extra: str, what: str | None = None) -> str:
    """`WebRTC needs: pip install 'agentkit[webrtc]'`."""
    return f"{what or _WHAT[extra]} needs: pip install 'agentkit[{extra}]'"


def add_missing_extra_routes(
    app: FastAPI, base: str, extra: str, *, websocket_paths: Sequence[str] = ()
) -> None:
    """Answer 501 `missing_extra` at every path under `base` and refuse WebSockets at
    `websocket_paths` the same way (with a 501 denial response where the server supports one)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.websockets import WebSocket

    body = {"error": "missing_extra", "message": extra_message(extra)}
    logger.info("%s/... answers 501 missing_extra: %s", base, body["message"])

    async def refuse(request: Request) -> JSONResponse:
        return JSONResponse(body, status_code=501)

    async def refuse_websocket(websocket: WebSocket) -> None:
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(JSONResponse(body, status_code=501))
        else:
            await websocket.close()  # before accepting: the server answers HTTP 403

    # Starlette's plain routes: FastAPI would read the endpoints' parameters as query parameters
    for path in websocket_paths:
        app.router.add_websocket_route(path, refuse_websocket)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app.add_route(f"{base}/{{path:path}}", refuse, methods=methods, include_in_schema=False)
