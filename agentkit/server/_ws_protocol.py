"""uvicorn's WebSocket protocol with one addition: text messages handed to the app as they are parsed.

Under uvicorn, each message a WebSocket receives goes through the ASGI receive queue: uvicorn puts
it there and pauses reading, the connection's task wakes up for it, takes it through Starlette's
`receive` and resumes reading. For a phone call that is fifty wake-ups a second for media messages
whose handling needs no waiting at all (`Session.receive_audio_nowait`).

`DirectTextProtocol` is uvicorn's own sans-I/O WebSocket protocol (`websockets-sansio`, what
`--ws auto` picks with the `websockets` package installed) plus an ASGI extension, named by
`DIRECT_TEXT`: `scope["extensions"]["agentkit.direct_text"]["set_sink"](sink)` makes uvicorn offer
each complete text message to `sink(text)` first, on the event loop, from the parser. A sink that
returns True has taken the message; False leaves it to the receive queue as usual. A message is
offered only while the queue is empty and the app has not closed, so it never overtakes one
already queued; a sink that raises is dropped (logged once), and `set_sink(None)` drops it too.
A server without the extension (another ASGI server, another `--ws`) simply never offers; the app
reads everything from its receive queue as before.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from agentkit.transports._ws_common import DIRECT_TEXT, TextSink

__all__ = ["DirectTextProtocol"]

logger = logging.getLogger(__name__)


class DirectTextProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol, plus the `agentkit.direct_text` extension."""

    _sink: TextSink | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)  # none for a refused handshake
        if scope is not None:  # the app's task is created but has not run: it will see this
            scope["extensions"][DIRECT_TEXT] = {"set_sink": self._set_sink}

    def _set_sink(self, sink: TextSink | None) -> None:
        self._sink = sink

    def send_receive_event_to_app(self) -> None:
        sink = self._sink
        text_now = self.curr_msg_data_type == "text" and not self.close_sent and self.queue.empty()
        if sink is not None and text_now:
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                text = data.decode()
            except UnicodeDecodeError:  # uvicorn's own path closes with 1007
                text = None
            if text is not None:
                try:
                    taken = sink(text)
                except Exception:
                    logger.exception("websocket: the direct text sink failed; messages go to the queue")
                    self._sink, taken = None, False
                if taken:
                    self.frames = []
                    return
        super().send_receive_event_to_app()
