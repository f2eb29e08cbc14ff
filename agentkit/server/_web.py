"""The served web client: the talk page at `/`, `agentkit.js`, `widget.js` and `talk.css`.

The files live in the repository's `web/` folder and ship inside the wheel as `agentkit/_web/`; they
are read once, when the routes are added. Browsers revalidate them (`Cache-Control: no-cache` with an
`ETag`), so a new release is picked up at once and an unchanged file costs a 304.

Cross-origin use: `widget.js` is the embed stub and may be loaded by any page (it holds nothing
secret, and a page that is not allowed must still be able to show why it cannot talk); the client
`agentkit.js` and `talk.css` carry CORS headers only for origins on the allow-list, and the
WebSocket endpoint refuses pages from other origins (`agentkit.transports.websocket`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from agentkit.exceptions import ConfigError
from agentkit.transports._origin import OriginPolicy

__all__ = ["add_web_routes", "web_files_dir"]

_FILES = {  # route name -> (file, content type, who may load it cross-origin)
    "": ("index.html", "text/html; charset=utf-8", "none"),
    "agentkit.js": ("agentkit.js", "text/javascript; charset=utf-8", "listed"),
    "widget.js": ("widget.js", "text/javascript; charset=utf-8", "any"),
    "talk.css": ("talk.css", "text/css; charset=utf-8", "listed"),
}


@dataclass(frozen=True, slots=True)
class _WebFile:
    body: bytes
    """The file's content."""
    content_type: str
    """The `Content-Type` header."""
    etag: str
    """A strong validator: a hash of `body`, quoted."""
    cors: str
    """`none`, `listed` (allow-listed origins) or `any`."""


def web_files_dir() -> Traversable:
    """The web client's folder: `agentkit/_web` in an installed wheel, else `web/` of the checkout."""
    shipped = resources.files("agentkit").joinpath("_web")
    if shipped.is_dir():
        return shipped
    checkout = Path(__file__).resolve().parents[2] / "web"
    if not checkout.is_dir():
        raise ConfigError("the web client's files are missing (no agentkit/_web and no web/ folder)")
    return checkout


def _load(directory: Traversable) -> dict[str, _WebFile]:
    files = {}
    for route, (name, content_type, cors) in _FILES.items():
        body = directory.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[route] = _WebFile(body=body, content_type=content_type, etag=etag, cors=cors)
    return files


def add_web_routes(app: FastAPI, *, allowed_origins: Sequence[str], prefix: str = "") -> None:
    """Serve the talk page at `{prefix}/` and the client files beside it.

    `allowed_origins` are the other sites (e.g. `https://shop.example`) whose pages may embed the
    widget; `"*"` allows any.
    """
    policy = OriginPolicy(allowed_origins)
    files = _load(web_files_dir())

    def serve(file: _WebFile, request: Request) -> Response:
        headers = {"Cache-Control": "no-cache", "ETag": file.etag, "X-Content-Type-Options": "nosniff"}
        origin = request.headers.get("origin")
        if file.cors == "any":
            headers["Access-Control-Allow-Origin"] = "*"
        elif file.cors == "listed":
            headers["Vary"] = "Origin"
            if policy.is_listed(origin):
                headers["Access-Control-Allow-Origin"] = str(origin)
        if file.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(file.body, media_type=file.content_type, headers=headers)

    def endpoint_for(file: _WebFile) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return serve(file, request)

        return endpoint

    for route, file in files.items():
        app.add_api_route(
            f"{prefix}/{route}", endpoint_for(file), methods=["GET", "HEAD"], include_in_schema=False
        )
