"""A minimal RFC 6455 WebSocket client for the load generator: one asyncio Protocol per call.

`bench/concurrent_calls.py` holds hundreds of calls open in one process, and every core it uses is
taken from the server it measures. With the `websockets` client each received message went
through its sans-I/O parser (a chain of generators), a queue and a wake-up of the call's reading
task. Here the frames are split in `data_received` and each whole message is handed at once to the
owner's `on_message(text, payload)`, on the event loop, with no task or coroutine per message; the
owner's `send` frames and writes at once, with no lock and no task switch either.

What it does: the opening handshake (a random `Sec-WebSocket-Key`, 101 and `Sec-WebSocket-Accept`
checked), masked client frames (one random mask key per connection: the server unmasks any key the
same way, and a fresh one per frame would cost a `getrandom` call per frame), server frames with
7/16/64-bit lengths, fragmented messages, ping answered with pong, the closing handshake either way.
What it does not, on purpose: TLS and proxies (it connects to 127.0.0.1 only), extensions (none is
requested, so a server may answer none: no compression), subprotocols, UTF-8 validation of text
(the owner looks for ASCII markers and parses JSON where it needs to), size limits (the server is
the one under test, not an adversary), and flow control (a frame goes out on its tick or not at all,
as before: the generator never waits for a slow server), and keepalive pings of its own.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable
from enum import Enum
from typing import cast
from urllib.parse import urlsplit

try:  # websockets' C helper where it is built (it is, in agentkit's venv): XOR at memory speed
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

__all__ = ["HandshakeError", "OnClose", "OnMessage", "WebSocketClient"]

OnMessage = Callable[[bool, bytes], None]
"""Called with (is_text, payload) for each whole message, from `data_received`. Text is not decoded."""

OnClose = Callable[[str | None], None]
"""Called once when the connection ends by the server's doing or an error, never after `close()`:
None for a clean close (a close frame with 1000, 1001 or no code), else what went wrong."""

_ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEAD_BYTES = 65536
_CONTINUATION, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_FIN = 0x80
_FIN_TEXT = _FIN | _TEXT
_WHOLE_MESSAGE = frozenset({_FIN_TEXT, _FIN | _BINARY})
"""First bytes of a frame that is a whole message: FIN, no reserved bits, text or binary."""
_CLEAN_CODES = (1000, 1001)


class _State(Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"  # a close frame went out (ours, or our answer to the server's)
    CLOSED = "closed"  # nothing more is read or written


# module-level names: one lookup each on the hot path
_CONNECTING, _OPEN, _CLOSING, _CLOSED = _State.CONNECTING, _State.OPEN, _State.CLOSING, _State.CLOSED

# a client frame's header with its mask key: FIN + opcode, MASK + length (7, 16 or 64 bits), key
_HEAD_7 = struct.Struct("!BB4s").pack
_HEAD_16 = struct.Struct("!BBH4s").pack
_HEAD_64 = struct.Struct("!BBQ4s").pack


class HandshakeError(ConnectionError):
    """The server did not answer the opening handshake as RFC 6455 says (status, accept key, ...)."""


class WebSocketClient(asyncio.Protocol):
    """One client connection. Create it, then `await open(url)`; `send` writes a message at once.

    The owner's callbacks run inside `data_received` and `connection_lost`, so they must not block
    and should not raise: an exception from `on_message` fails the connection (close 1011) and is
    reported through `on_close` with its type name, as a failed read would be.
    """

    def __init__(self, on_message: OnMessage, on_close: OnClose) -> None:
        self._on_message = on_message
        self._on_close = on_close
        self._mask = os.urandom(4)
        self._key = base64.b64encode(os.urandom(16)).decode()  # Sec-WebSocket-Key
        self._state = _CONNECTING
        self._transport: asyncio.Transport | None = None
        self._head = bytearray()  # the handshake response, until its blank line
        self._request = b""
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = loop.create_future()
        self._lost: asyncio.Future[None] = loop.create_future()
        # a frame split across reads: its pieces, their size, and the size needed to go on
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._need_bytes = 0
        # a fragmented message in progress: its opcode and pieces
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = _TEXT

    # -- opening ------------------------------------------------------------------------------------
    async def open(self, url: str, timeout_s: float = 10.0) -> None:
        """Connect to 127.0.0.1 at `url`'s port and complete the opening handshake, within
        `timeout_s`. Raises (OSError, HandshakeError, TimeoutError) and leaves nothing open."""
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"only ws:// URLs are supported, not {parts.scheme}://")
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._request = (
            f"GET {resource} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                await loop.create_connection(lambda: self, "127.0.0.1", parts.port or 80)
                await self._opened
        except BaseException:
            self._state = _CLOSED
            if not self._opened.done():  # cancelled before it was awaited: nobody will read it
                self._opened.cancel()
            if self._transport is not None:
                self._transport.abort()
            if not self._lost.done():
                self._lost.set_result(None)
            raise

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance)
        self._transport = cast(asyncio.Transport, transport)
        transport.write(self._request)

    def _handshake(self, data: bytes) -> bytes:
        """Take the response's head; return what follows it (frames), once it checked out."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD_BYTES:
                self._refuse(HandshakeError("the handshake response has no end"))
            return b""
        head, rest = bytes(self._head[:end]), bytes(self._head[end + 4 :])
        self._head.clear()
        try:
            self._check_response(head)
        except HandshakeError as exc:
            self._refuse(exc)
            return b""
        self._state = _OPEN
        if not self._opened.done():
            self._opened.set_result(None)
        return rest

    def _check_response(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            code = status[1] if len(status) > 1 else "?"
            raise HandshakeError(f"server rejected WebSocket connection: HTTP {code}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1((self._key + _ACCEPT_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise HandshakeError("wrong or missing Sec-WebSocket-Accept")
        if headers.get("upgrade", "").lower() != "websocket":
            raise HandshakeError("no Upgrade: websocket")
        if "upgrade" not in (t.strip() for t in headers.get("connection", "").lower().split(",")):
            raise HandshakeError("no Connection: Upgrade")
        for unasked in ("sec-websocket-extensions", "sec-websocket-protocol"):
            if unasked in headers:
                raise HandshakeError(f"the server answered {unasked}, which was not requested")

    def _refuse(self, exc: HandshakeError) -> None:
        self._state = _CLOSED
        if not self._opened.done():
            self._opened.set_exception(exc)
        assert self._transport is not None
        self._transport.close()

    # -- sending ------------------------------------------------------------------------------------
    def send(self, message: str | bytes) -> None:
        """Write one message at once: text for str, binary for bytes. Raises ConnectionError when
        the connection is not open (the server closed it, or it never opened)."""
        if self._state is not _OPEN:
            raise ConnectionError("the connection is not open")
        if isinstance(message, str):
            self._write(_FIN_TEXT, message.encode())
        else:
            self._write(_FIN | _BINARY, message)

    def _write(self, first: int, data: bytes) -> None:
        """One frame, masked as a client's must be, in one write."""
        n, mask = len(data), self._mask
        if n < 126:
            header = _HEAD_7(first, 0x80 | n, mask)
        elif n < 65536:
            header = _HEAD_16(first, 0x80 | 126, n, mask)
        else:
            header = _HEAD_64(first, 0x80 | 127, n, mask)
        assert self._transport is not None
        self._transport.write(header + apply_mask(data, mask))

    def _write_control(self, opcode: int, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._write(_FIN | opcode, payload)

    # -- receiving ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._state is _CONNECTING:
            data = self._handshake(data)
            if not data:
                return
        if self._state is _CLOSED:
            return
        if self._pending:  # the rest of a split frame: wait until it is all here, then join once
            self._pending.append(data)
            self._pending_bytes += len(data)
            if self._pending_bytes < self._need_bytes:
                return
            data = b"".join(self._pending)
            self._pending.clear()
        self._frames(data)

    def _frames(self, data: bytes) -> None:
        """Split `data` into frames and handle each; keep an incomplete last one for later."""
        pos, end = 0, len(data)
        while pos < end:
            if end - pos < 2:
                self._hold(data, pos, 2)
                return
            first, second = data[pos], data[pos + 1]
            n = second & 0x7F
            start = pos + 2
            if n >= 126:
                size = 2 if n == 126 else 8
                if end - start < size:
                    self._hold(data, pos, 2 + size)
                    return
                n = int.from_bytes(data[start : start + size], "big")
                start += size
            stop = start + n
            if stop > end:
                self._hold(data, pos, stop - pos)
                return
            if second & 0x80 or first & 0x70:
                self._fail(1002, "protocol error: a masked frame or reserved bits from the server")
                return
            pos = stop
            if first in _WHOLE_MESSAGE:  # the common case: a whole message
                if self._fragments is not None:
                    self._fail(1002, "protocol error: a new message inside a fragmented one")
                    return
                self._deliver(first == _FIN_TEXT, data[start:stop])
            else:
                self._frame(first, data[start:stop])
            if self._state is _CLOSED:
                return

    def _hold(self, data: bytes, pos: int, need_bytes: int) -> None:
        self._pending = [data[pos:]]
        self._pending_bytes = len(data) - pos
        self._need_bytes = need_bytes

    def _frame(self, first: int, payload: bytes) -> None:
        """Every frame but a whole text or binary message: control frames and fragments."""
        opcode, fin = first & 0x0F, first & _FIN
        if opcode >= _CLOSE:
            if not fin or len(payload) > 125:
                self._fail(1002, "protocol error: a fragmented or long control frame")
            elif opcode == _PING:
                self._write_control(_PONG, payload)
            elif opcode == _CLOSE:
                self._closed_by_server(payload)
            elif opcode != _PONG:
                self._fail(1002, f"protocol error: opcode {opcode}")
        elif opcode == _CONTINUATION:
            if self._fragments is None:
                self._fail(1002, "protocol error: a continuation with no message")
                return
            self._fragments.append(payload)
            if fin:
                message, self._fragments = b"".join(self._fragments), None
                self._deliver(self._fragment_opcode == _TEXT, message)
        elif opcode in (_TEXT, _BINARY) and self._fragments is None:
            self._fragments, self._fragment_opcode = [payload], opcode  # not fin: the first piece
        else:
            self._fail(1002, f"protocol error: opcode {opcode} here")

    def _deliver(self, text: bool, payload: bytes) -> None:
        if self._state is not _OPEN:  # after our close frame: nobody listens any more
            return
        try:
            self._on_message(text, payload)
        except Exception as exc:  # the owner's failure ends this call, as a failed read would
            self._fail(1011, type(exc).__name__)

    def _closed_by_server(self, payload: bytes) -> None:
        """Answer the server's close with the same code (RFC 6455, 5.5.1), unless it answers ours,
        and end the connection."""
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        if self._state is _OPEN:  # else our close frame went out already: one is all there is
            self._write_control(_CLOSE, payload[:2])
        self._ended(None if code is None or code in _CLEAN_CODES else f"close code {code}")
        self._drop()

    def _fail(self, code: int, reason: str) -> None:
        self._write_control(_CLOSE, code.to_bytes(2, "big"))
        self._ended(reason)
        self._drop()

    def _drop(self) -> None:
        """Read and write nothing more; the transport sends what it holds and closes."""
        self._state = _CLOSED
        assert self._transport is not None
        self._transport.close()

    def _ended(self, reason: str | None) -> None:
        """Tell the owner, once, that the connection ended without `close()`."""
        if self._state is _OPEN:
            self._state = _CLOSING
            self._on_close(reason)

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended("connection lost" if exc is None else f"connection lost: {type(exc).__name__}")
        self._state = _CLOSED
        if not self._opened.done():
            self._opened.set_exception(ConnectionError("the connection closed during the handshake"))
        if not self._lost.done():
            self._lost.set_result(None)

    # -- closing ------------------------------------------------------------------------------------
    async def wait_closed(self) -> None:
        """Until the connection is gone (at once if it never opened)."""
        await asyncio.shield(self._lost)

    async def close(self, timeout_s: float = 2.0) -> None:
        """Send a close frame (1000) if open, wait up to `timeout_s` for the server to end the
        connection, then drop it if it has not. Never reported through `on_close`."""
        if self._state is _OPEN:
            self._state = _CLOSING
            self._write_control(_CLOSE, (1000).to_bytes(2, "big"))
        if self._transport is None or self._lost.done():
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.wait_closed()
        except TimeoutError:
            self._transport.abort()
