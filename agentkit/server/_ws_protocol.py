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

The extension sends the same way: `...["send_text"](text)` writes a text message at once and says
True, where uvicorn's `send` would have written it without waiting (the handshake done, the
connection open, the transport not paused for writing); False leaves it to the ASGI `send`. Twilio's
reply audio goes out ten messages a second per call, and each one through Starlette's and uvicorn's
`send` coroutines costs more than the framing and the write.

The common message also skips websockets' parser. That parser is a chain of generators, and with
uvicorn's dispatch of its events it costs about a third of the loop's time per media message. So
after the opening handshake the protocol splits the bytes it receives into frames itself. A frame
that is a whole text message (FIN set, no reserved bits, masked, a length of at most 65535 bytes
and `ws_max_size`) is unmasked with websockets' own `apply_mask` (its C speedup), decoded and
offered to the sink directly, under the conditions above plus two of websockets' own: the
connection is open, and no fragmented message is in progress. Every other frame, and every text
frame the sink leaves, goes to websockets whole and in order, so uvicorn handles it as before: the
queue, pings and pongs, the closing handshake, 1007 for bad UTF-8. A text message websockets
parses (fragmented, compressed) is still offered from uvicorn's event, but never a second time.
Skipping a whole text frame leaves websockets' state as parsing it would: it records nothing for
one (nor does permessage-deflate, for a frame without RSV1).

This needs websockets' parser to be between frames whenever it is fed, which holds by induction: it
is fed whole frames only, and the splitting starts only where that parser waits for a frame's first
byte with nothing buffered. A client must not send frames before the handshake's response (RFC
6455, 4.1), so that is normally right after the request; a client that sent part of a frame with
its request gets plain uvicorn. A partial frame waits here until the rest arrives. A frame that
would be neither taken nor held here (a 64-bit length, over the limits, unmasked, an unknown
opcode) ends the splitting for the connection: websockets gets everything from that frame on, and
refuses it at once as before (1009, 1002) or reads it. Once a text frame could not be offered (the
queue holds a message, no sink), the whole frames after it in the same data go to websockets in one
piece: none of them could be offered either.
"""

from __future__ import annotations

import logging
from types import CodeType
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from agentkit.transports._ws_common import DIRECT_TEXT, TextSink

try:  # websockets' own choice: its C speedup where built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

__all__ = ["DirectTextProtocol"]

logger = logging.getLogger(__name__)

_FIN_TEXT = 0x81
"""A frame's first byte for a whole text message: FIN set, RSV1-3 clear, opcode 1 (text)."""

_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})
"""Continuation, text, binary, close, ping, pong: websockets refuses the others on sight."""

_LONGEST = 0xFFFF
"""The longest payload taken: a 16-bit length; a frame needing the 64-bit form ends the splitting."""

_BETWEEN_FRAMES = (ServerProtocol.parse.__code__, Protocol.parse.__code__, StreamReader.at_eof.__code__)
"""Where websockets' server parser waits for a frame's first byte: `ServerProtocol.parse`, past the
request, in `Protocol.parse`'s loop, in `StreamReader.at_eof`, which waits only with nothing
buffered. Inside a frame it waits in `Frame.parse` instead."""


def _between_frames(conn: ServerProtocol) -> bool:
    """Whether `conn`'s parser waits for the first byte of a frame with nothing buffered.

    An empty buffer alone does not say so: `Frame.parse` takes a frame's first two bytes out of the
    buffer before it waits for the rest. The generators it waits in do. With a websockets whose
    parser is laid out otherwise this is False, and the connection gets plain uvicorn."""
    codes: list[CodeType | None] = []
    generator: Any = conn.parser
    while generator is not None:
        codes.append(getattr(generator, "gi_code", None))
        generator = getattr(generator, "gi_yieldfrom", None)
    return tuple(codes) == _BETWEEN_FRAMES and not conn.reader.buffer


class DirectTextProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol, plus the `agentkit.direct_text` extension."""

    _sink: TextSink | None = None
    _splitting = False
    """Whether this protocol splits received bytes into frames (from the handshake on, see above)."""
    _declined = False
    """While the frame being handed to websockets was offered already: not to offer it twice."""
    _tail: bytearray
    """The start of a frame whose end has not arrived yet (while splitting)."""
    _longest: int
    """The longest payload taken: 65535 bytes, or websockets' limit if lower (while splitting)."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope: dict[str, Any] | None = getattr(self, "scope", None)  # none for a refused handshake
        if scope is None:
            return
        # the app's task has not run yet: it will find these
        scope["extensions"][DIRECT_TEXT] = {"set_sink": self._set_sink, "send_text": self._send_text_now}
        conn = self.conn
        known = all(hasattr(conn, name) for name in ("current_size", "max_message_size", "max_fragment_size"))
        if known and _between_frames(conn):  # else (another websockets, a pipelining client): plain uvicorn
            limits = [conn.max_message_size, conn.max_fragment_size, _LONGEST]
            self._longest = min(limit for limit in limits if limit is not None)
            self._tail = bytearray()
            self._splitting = True

    def _set_sink(self, sink: TextSink | None) -> None:
        self._sink = sink

    def _send_text_now(self, text: str) -> bool:
        """Send one text message at once, as uvicorn's `send` would for `websocket.send`, when that
        needs no waiting: the handshake is done, the connection open and the transport writable.
        False, with nothing sent, leaves the message to the ASGI `send` (which waits, or raises)."""
        conn = self.conn
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or conn.state is not State.OPEN
        ):
            return False
        conn.send_text(text.encode())
        self.transport.write(b"".join(conn.data_to_send()))
        return True

    def data_received(self, data: bytes) -> None:
        if not self._splitting:
            super().data_received(data)
            return
        buf: bytes | bytearray = data
        if self._tail:
            self._tail += data
            buf = self._tail
        # buf[:done] is handled; buf[done:pos] are whole frames websockets has not seen yet.
        done = pos = 0
        offering = True  # False once a text frame could not be offered: none after it can be either
        while (end := self._frame_end(buf, pos)) > 0:
            if offering and buf[pos] == _FIN_TEXT:
                if done < pos:  # the frames before it first: they may queue a message, or close
                    self._to_websockets(buf[done:pos])
                    done = pos
                if self.conn.parser_exc is not None:
                    break
                if self._take_text(buf, pos, end):
                    done = end
                else:
                    offering = False
            pos = end
        else:
            if end < 0:  # a frame not to split: websockets gets all from it on, as plain uvicorn would
                pos = len(buf)
            if done < pos:
                self._to_websockets(buf[done:pos])
            if end == 0 and self.conn.parser_exc is None:  # the rest is a partial frame
                self._keep_tail(buf, pos)
                return
        # Not splitting from here. If websockets failed the connection, it discards the rest anyway
        # (`Protocol.discard`), and uvicorn has closed the transport.
        self._splitting = False
        self._tail = bytearray()

    def _keep_tail(self, buf: bytes | bytearray, pos: int) -> None:
        """Keep buf[pos:], the start of a frame, for the next `data_received`."""
        if buf is self._tail:
            del buf[:pos]
        elif pos < len(buf):
            self._tail = bytearray(buf[pos:])

    def _frame_end(self, buf: bytes | bytearray, pos: int) -> int:
        """The end of the whole frame at `pos`, 0 if it has not all arrived, -1 for a frame not to
        split: a 64-bit length, longer than `_longest`, no mask, or an unknown opcode."""
        size = len(buf) - pos
        if size < 2:
            return 0
        head2 = buf[pos + 1]
        length = head2 & 0x7F
        start = pos + 6  # two bytes of header, four of mask
        if length == 126:
            if size < 4:
                return 0
            length = buf[pos + 2] << 8 | buf[pos + 3]
            start = pos + 8
        elif length == 127:
            return -1
        if length > self._longest or not head2 & 0x80 or buf[pos] & 0x0F not in _OPCODES:
            return -1
        end = start + length
        return end if end <= len(buf) else 0

    def _take_text(self, buf: bytes | bytearray, pos: int, end: int) -> bool:
        """Offer the whole masked text frame buf[pos:end], which websockets is next to read. True:
        the sink took it, or it went to websockets after the sink declined it; False: it may not be
        offered (no sink, the state) or is not UTF-8, and stays for websockets."""
        sink = self._sink
        conn = self.conn
        if (
            sink is None
            or self.close_sent
            or not self.queue.empty()
            or conn.state is not State.OPEN
            or conn.current_size is not None  # a fragmented message in progress
        ):
            return False
        start = pos + (8 if buf[pos + 1] & 0x7F == 126 else 6)  # after the header and the mask
        try:
            text = apply_mask(buf[start:end], buf[start - 4 : start]).decode()
        except UnicodeDecodeError:  # uvicorn's own path closes with 1007
            return False
        if not self._offer(sink, text):
            self._declined = True
            try:
                self._to_websockets(buf[pos:end])
            finally:
                self._declined = False
        return True

    def _to_websockets(self, frames: bytes | bytearray) -> None:
        """Hand whole frames to websockets and uvicorn, as uvicorn's `data_received` does, unless
        websockets has failed the connection: it would discard them (`Protocol.discard`)."""
        if self.conn.parser_exc is None:
            super().data_received(bytes(frames))

    def _offer(self, sink: TextSink, text: str) -> bool:
        try:
            return sink(text)
        except Exception:
            logger.exception("websocket: the direct text sink failed; messages go to the queue")
            self._sink = None
            return False

    def send_receive_event_to_app(self) -> None:
        sink = self._sink
        text_now = self.curr_msg_data_type == "text" and not self.close_sent and self.queue.empty()
        if sink is not None and text_now and not self._declined:
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                text = data.decode()
            except UnicodeDecodeError:  # uvicorn's own path closes with 1007
                text = None
            if text is not None and self._offer(sink, text):
                self.frames = []
                return
        super().send_receive_event_to_app()
