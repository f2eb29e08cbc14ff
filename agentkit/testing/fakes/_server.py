"""The loopback HTTP/1.1 server under every cloud fake: h11 on asyncio streams, scripted faults.

A plain asyncio server (rather than uvicorn) gives the fakes exact control of the wire: they can
stay silent before the status line, stop between two chunks, drop the TCP connection in the middle
of a chunked body, and notice the moment the client hangs up.

Each fake is an async context manager (it serves on the running loop) and a plain context manager
(it serves from a thread of its own, for synchronous code).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import h11

from agentkit.testing.fakes._script import FakeRequest, Reply, ReplySource, parse_multipart

__all__ = ["ClientGone", "EndedWithError", "Exchange", "FakeServer"]

logger = logging.getLogger(__name__)

_HOST = "127.0.0.1"
_READ_BYTES = 65536
_MAX_BODY_BYTES = 64 * 1024 * 1024


class ClientGone(Exception):
    """The client closed the connection (or the fake cut it) before the exchange ended."""


class EndedWithError(Exception):
    """The fake ended a streamed body early on purpose, with its API's error event
    (`Reply.error_after`); the body is complete and the connection stays usable."""


class Exchange:
    """The answer to one request: status, headers, content chunks, with the reply's faults applied."""

    def __init__(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: FakeRequest,
        reply: Reply,
        *,
        error_event: Callable[[int], bytes | None] | None = None,
    ) -> None:
        self.request = request
        self.reply = reply
        self._error_event = error_event
        """Frames the API's mid-stream error event for a status (None: the API has none)."""
        self._conn = conn
        self._writer = writer
        self._eof = asyncio.create_task(reader.read(_READ_BYTES), name="fake-eof-watch")

    async def pause(self, seconds: float) -> None:
        """Wait `seconds`, or raise `ClientGone` as soon as the client hangs up."""
        if self._eof.done():
            self._gone()
        if seconds > 0:
            await asyncio.wait({self._eof}, timeout=seconds)
            if self._eof.done():
                self._gone()

    def _gone(self) -> None:
        self.request.outcome = "disconnected"
        raise ClientGone

    async def _write(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if data:
            try:
                self._writer.write(data)
                await self._writer.drain()
            except ConnectionError:
                self._gone()

    async def start(
        self, status: int, headers: Iterable[tuple[str, str]], *, length: int | None = None
    ) -> None:
        """Send the status line and headers (after `stall_before_s`); no length means chunked."""
        await self.pause(self.reply.stall_before_s)
        all_headers = [*headers, ("server", "agentkit-fake")]
        if length is not None:
            all_headers.append(("content-length", str(length)))
        self.request.status = status
        await self._write(h11.Response(status_code=status, headers=all_headers))

    async def send(self, data: bytes) -> None:
        """Send framing bytes (an SSE `ping`, `message_start`...): no faults, no count."""
        await self.pause(0)
        if data:
            await self._write(h11.Data(data=data))

    async def send_chunk(self, data: bytes) -> None:
        """Send one content chunk, applying the reply's error event, cut, stall and pacing."""
        reply, index = self.reply, self.request.chunks_sent
        await self._error_if_due()
        if reply.cut_after is not None and index >= reply.cut_after:
            self.cut()
        if reply.stall_after is not None and index == reply.stall_after:
            await self.pause(reply.stall_s)
        if index > 0:
            await self.pause(reply.chunk_delay_s)
        await self.send(data)
        self.request.chunks_sent += 1

    def cut(self) -> None:
        """Drop the TCP connection now, mid-body (the client sees an incomplete response)."""
        self.request.outcome = "cut"
        self._writer.transport.abort()
        raise ClientGone

    async def end_content(self) -> None:
        """Mark the end of the content chunks: an `error_after` or `cut_after` at or past their
        number takes effect here."""
        await self._error_if_due()
        cut_after = self.reply.cut_after
        if cut_after is not None and self.request.chunks_sent >= cut_after:
            self.cut()

    async def _error_if_due(self) -> None:
        """After `error_after` content chunks: send the API's error event, end the body, stop."""
        error_after = self.reply.error_after
        if error_after is None or self._error_event is None or self.request.chunks_sent < error_after:
            return
        event = self._error_event(self.reply.error_status)
        if event is None:
            return
        await self.send(event)
        await self.finish()
        raise EndedWithError

    async def finish(self) -> None:
        """End the body."""
        await self.pause(0)
        await self._stop_watching()
        await self._write(h11.EndOfMessage())
        self.request.outcome = "completed"

    async def send_json(self, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        """A whole JSON answer (cut in half when the reply says `cut_after`)."""
        body = json.dumps(payload).encode()
        await self.send_body(status, body, [("content-type", "application/json"), *headers])

    async def send_body(self, status: int, body: bytes, headers: Iterable[tuple[str, str]]) -> None:
        await self.start(status, headers, length=len(body))
        if self.reply.cut_after is not None:
            await self._write(h11.Data(data=body[: len(body) // 2]))
            self.cut()
        await self._write(h11.Data(data=body))
        await self.finish()

    async def _stop_watching(self) -> None:
        """Stop the hang-up watch before the last bytes, so it cannot eat the next request."""
        if not self._eof.done():
            self._eof.cancel()
        await asyncio.wait({self._eof})
        if not self._eof.cancelled():
            data = self._eof.result() if self._eof.exception() is None else b""
            if not data:
                self._gone()
            self._conn.receive_data(data)  # an early byte of the next request: keep it

    async def close(self) -> None:
        if not self._eof.done():
            self._eof.cancel()
        await asyncio.wait({self._eof})
        if not self._eof.cancelled():
            self._eof.exception()  # retrieved, so asyncio does not log it


class FakeServer:
    """Base of the cloud fakes: serving, recording requests, and the queue of scripted replies.

    Subclasses implement `handle(exchange)` and `error_body(status)`, and set `auth_header`.
    """

    auth_header = "authorization"
    auth_prefix = ""

    def __init__(self, *, api_key: str | None = "test-key", default: ReplySource | None = None) -> None:
        self.api_key = api_key
        """The key the fake accepts (`None`: any key); another key gets HTTP 401."""
        self.default: ReplySource = default if default is not None else Reply()
        """The reply used when the queue is empty."""
        self.requests: list[FakeRequest] = []
        """Every request received, oldest first."""
        self._replies: deque[ReplySource] = deque()
        self._server: asyncio.Server | None = None
        self._port = 0
        self._connections: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0
        """TCP connections accepted so far: a client that keeps its connections between requests
        (as it should: a new one to a real API costs a TLS handshake) adds one per concurrent request."""
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # -- scripting ------------------------------------------------------------------------------------

    def push(self, *replies: ReplySource) -> None:
        """Queue replies for the next requests, in order."""
        self._replies.extend(replies)

    def _next_reply(self, request: FakeRequest) -> Reply:
        source = self._replies.popleft() if self._replies else self.default
        return source if isinstance(source, Reply) else source(request)

    @property
    def open_connections(self) -> int:
        """TCP connections open now: a client that was closed (`aclose()`) leaves none behind."""
        return len(self._connections)

    async def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Wait until no exchange is pending (e.g. until the fake has seen a client hang up)."""
        async with asyncio.timeout(timeout_s):
            # Polls: the fake may be serving from its own thread, where an asyncio.Event cannot reach.
            while any(r.outcome == "pending" for r in self.requests):  # noqa: ASYNC110
                await asyncio.sleep(0.01)

    # -- subclass hooks -------------------------------------------------------------------------------

    async def handle(self, exchange: Exchange) -> None:
        raise NotImplementedError

    def error_body(self, status: int) -> Any:
        raise NotImplementedError

    def stream_error_event(self, status: int) -> bytes | None:
        """The API's error event inside a streamed body, for `Reply.error_after` (the LLM fakes
        frame one; None: the API has no such event and `error_after` does nothing)."""
        return None

    def authorized(self, request: FakeRequest) -> bool:
        sent = request.headers.get(self.auth_header)
        if sent is None:
            return False
        return self.api_key is None or sent == self.auth_prefix + self.api_key

    async def send_error(self, exchange: Exchange, status: int) -> None:
        await exchange.send_json(status, self.error_body(status))

    async def read_json(self, exchange: Exchange, *required: str) -> dict[str, Any] | None:
        """The request's JSON object, or `None` after answering 400 (not JSON, or a field missing)."""
        try:
            body = exchange.request.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and all(name in body for name in required):
            return body
        await self.send_error(exchange, 400)
        return None

    # -- serving --------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`, to pass as a provider's `base_url`."""
        if not self._port:
            raise RuntimeError("the fake is not serving; use it as a context manager or call start()")
        return f"http://{_HOST}:{self._port}"

    async def start(self) -> None:
        """Listen on a free loopback port of the running loop."""
        self._server = await asyncio.start_server(self._on_connect, _HOST, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections)
        if self._server is not None:
            await self._server.wait_closed()
        self._server, self._port = None, 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve_in_thread(ready),), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        if not ready.wait(5.0) or not self._port:
            raise RuntimeError("the fake server did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread_loop is not None and self._thread_stop is not None:
            self._thread_loop.call_soon_threadsafe(self._thread_stop.set)
        if self._thread is not None:
            self._thread.join(5.0)
        self._thread = self._thread_loop = self._thread_stop = None

    async def _serve_in_thread(self, ready: threading.Event) -> None:
        self._thread_loop = asyncio.get_running_loop()
        self._thread_stop = asyncio.Event()
        try:
            await self.start()
        finally:
            ready.set()
        try:
            await self._thread_stop.wait()
        finally:
            await self.stop()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection runs in a task of its own that `stop()` may cancel: Python 3.11's stream
        # server logs an error when the task it made for this callback ends cancelled.
        task = asyncio.create_task(self._serve_connection(reader, writer), name=f"{type(self).__name__}-conn")
        self._connections.add(task)
        self.connections_accepted += 1
        try:
            await asyncio.wait({task})
        finally:
            self._connections.discard(task)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while (request := await self._read_request(conn, reader)) is not None:
                await self._answer(conn, reader, writer, request)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ClientGone, ConnectionError, h11.ProtocolError):
            pass
        except Exception:
            logger.exception("%s failed to answer a request", type(self).__name__)
        finally:
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader) -> FakeRequest | None:
        start: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_BYTES))
            elif isinstance(event, h11.Request):
                start = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY_BYTES:
                    raise ClientGone
            elif isinstance(event, h11.EndOfMessage) and start is not None:
                return _make_request(start, bytes(body))
            else:  # ConnectionClosed, PAUSED
                return None

    async def _answer(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: FakeRequest,
    ) -> None:
        self.requests.append(request)
        reply = self._next_reply(request)
        exchange = Exchange(conn, reader, writer, request, reply, error_event=self.stream_error_event)
        try:
            if not self.authorized(request):
                await self.send_error(exchange, 401)
            elif reply.status >= 400:
                await self.send_error(exchange, reply.status)
            else:
                await self.handle(exchange)
        except EndedWithError:
            pass  # the body is complete: the connection can serve the next request
        finally:
            await exchange.close()
            if request.outcome == "pending":  # the handler failed: a bug in the fake, or a bad request
                request.outcome = "disconnected"


def _make_request(start: h11.Request, body: bytes) -> FakeRequest:
    target = urlsplit(start.target.decode("latin-1"))
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in start.headers}
    request = FakeRequest(
        method=start.method.decode("ascii"),
        path=target.path,
        query=dict(parse_qsl(target.query)),
        headers=headers,
        body=body,
    )
    content_type = headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            request.form, request.files = parse_multipart(body, content_type)
    elif content_type.startswith("application/x-www-form-urlencoded"):
        request.form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return request
