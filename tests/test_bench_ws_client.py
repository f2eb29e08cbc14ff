"""`bench/_ws_client.py`, the load generator's own WebSocket client, against real servers on
127.0.0.1: a `websockets` server for what a real peer decodes and answers, and a raw asyncio TCP
server writing hand-made frames where the test needs the bytes (lengths, fragments, control
frames, bad handshakes) and how they are split across reads. A split is real: the raw server
writes its next piece only once the client has read every byte before it, so one read never
spans two pieces. Last, the main exchanges again on uvloop, the loop the benchmark runs on."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

TIMEOUT_S = 3.0
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SIZES = [0, 1, 125, 126, 65535, 65536, 100_000]  # 7-, 16- and 64-bit lengths, at their edges
SPLITS = ["whole", "bytes"]


def _load_client_module() -> ModuleType:
    """The module the benchmark imports as `_ws_client` (with `bench/` on sys.path), loaded by
    its path here so that the test leaves sys.path alone."""
    path = Path(__file__).resolve().parent.parent / "bench" / "_ws_client.py"
    spec = importlib.util.spec_from_file_location("_ws_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ws_client = _load_client_module()
HandshakeError: type[ConnectionError] = ws_client.HandshakeError


class Client(ws_client.WebSocketClient):  # type: ignore[misc]
    """The real client, with what its owner's callbacks get recorded, and its reads counted."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[bool, bytes]] = asyncio.Queue()
        self.reasons: list[str | None] = []  # what on_close was called with
        self.read_sizes: list[int] = []
        self.bytes_read = 0
        self._some_read = asyncio.Event()
        super().__init__(lambda text, payload: self.messages.put_nowait((text, payload)), self.reasons.append)

    def data_received(self, data: bytes) -> None:
        self.read_sizes.append(len(data))
        self.bytes_read += len(data)
        super().data_received(data)
        self._some_read.set()

    async def read_through(self, n_bytes: int) -> None:
        """Until the client has read `n_bytes` in all, the handshake response included."""
        async with asyncio.timeout(TIMEOUT_S):
            while self.bytes_read < n_bytes:
                self._some_read.clear()
                await self._some_read.wait()

    async def take(self, n: int) -> list[tuple[bool, bytes]]:
        async with asyncio.timeout(TIMEOUT_S):
            return [await self.messages.get() for _ in range(n)]

    async def ended(self) -> None:
        await asyncio.wait_for(self.wait_closed(), TIMEOUT_S)


MakeClient = Callable[[], Client]


@asynccontextmanager
async def client_factory() -> AsyncIterator[MakeClient]:
    """Clients made inside are closed on the way out, whatever happened to them."""
    made: list[Client] = []

    def make() -> Client:
        made.append(Client())
        return made[-1]

    try:
        yield make
    finally:
        for client in made:
            await client.close(timeout_s=1.0)


@pytest.fixture
async def clients() -> AsyncIterator[MakeClient]:
    async with client_factory() as make:
        yield make


# -- a raw server and the frames it writes and reads --------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(script: Script) -> AsyncIterator[str]:
    """A TCP server on 127.0.0.1 that runs `script` on each connection; yields `ws://host:port`.
    On the way out it waits for the scripts (an assertion failing in one fails the test here),
    then closes their connections and the server."""
    scripts: list[asyncio.Task[None]] = []

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        scripts.append(asyncio.get_running_loop().create_task(run(reader, writer)))

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with asyncio.timeout(TIMEOUT_S):
            await asyncio.gather(*scripts)
    except BaseException as exc:  # the test failed: say what went wrong on the server's side too
        for task in scripts:
            if task.done() and not task.cancelled() and task.exception() not in (None, exc):
                exc.add_note(f"a server script failed: {task.exception()!r}")
        raise
    finally:
        for task in scripts:
            task.cancel()
        await asyncio.gather(*scripts, return_exceptions=True)
        server.close()
        await server.wait_closed()


def xor(data: bytes, mask: bytes) -> bytes:
    key = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(len(data), "big")


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes = b"") -> bytes:
    """A frame as a server writes it: the shortest length encoding, unmasked unless `mask`."""
    n = len(payload)
    length = n if n < 126 else 126 if n < 65536 else 127
    head = bytes([(0x80 if fin else 0) | rsv | opcode, (0x80 if mask else 0) | length])
    if length == 126:
        head += n.to_bytes(2, "big")
    elif length == 127:
        head += n.to_bytes(8, "big")
    return head + mask + xor(payload, mask) if mask else head + payload


def framed(opcode: int, payload: bytes, *, fin: bool = True) -> tuple[bytes, int]:
    """A frame with its payload's size, for `handshake_and_feed`."""
    return frame(opcode, payload, fin=fin), len(payload)


def code(number: int) -> bytes:
    return number.to_bytes(2, "big")


@dataclass(frozen=True)
class Sent:
    """A frame the client sent, unmasked with its key."""

    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes
    length_bits: int = field(default=7, compare=False)  # 7, 16 or 64


async def read_frame(reader: asyncio.StreamReader) -> Sent:
    first, second = await reader.readexactly(2)
    n, length_bits = second & 0x7F, 7
    if n >= 126:
        length_bits = 16 if n == 126 else 64
        n = int.from_bytes(await reader.readexactly(length_bits // 8), "big")
    mask = await reader.readexactly(4) if second & 0x80 else b""
    payload = await reader.readexactly(n)
    unmasked = xor(payload, mask) if mask else payload
    return Sent(bool(first & 0x80), first & 0x70, first & 0x0F, bool(mask), unmasked, length_bits)


def masked(opcode: int, payload: bytes) -> Sent:
    return Sent(fin=True, rsv=0, opcode=opcode, masked=True, payload=payload)


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The opening request: its request line and headers (names in lower case)."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def upgrade_headers(key: str) -> dict[str, str]:
    return {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept_for(key)}


def response_head(headers: dict[str, str], status: str = "101 Switching Protocols") -> bytes:
    return "".join(
        [f"HTTP/1.1 {status}\r\n", *(f"{k}: {v}\r\n" for k, v in headers.items()), "\r\n"]
    ).encode()


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _, headers = await read_request(reader)
    writer.write(response_head(upgrade_headers(headers["sec-websocket-key"])))


async def answer_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The closing handshake the client starts with `close()`: answered with the same code."""
    got = await read_frame(reader)
    assert got == masked(CLOSE, code(1000))
    writer.write(frame(CLOSE, got.payload))


def one_by_one(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def byte_pieces(data: bytes, payload_size: int) -> list[bytes]:
    """A frame in single bytes, but for the middle of a long payload, in one piece (a hundred
    thousand one-byte reads would take seconds): its header and the payload's ends come apart."""
    middle_from, middle_to = len(data) - payload_size + 1, len(data) - 1
    if middle_to - middle_from < 2:
        return list(one_by_one(data))
    return [*one_by_one(data[:middle_from]), data[middle_from:middle_to], data[middle_to:]]


async def feed(writer: asyncio.StreamWriter, client: Client, pieces: list[bytes]) -> None:
    """Write `pieces` one after another, each once the client has read all that came before."""
    sent = 0
    for piece in pieces:
        writer.write(piece)
        sent += len(piece)
        await client.read_through(sent)


async def handshake_and_feed(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    client: Client,
    frames: list[tuple[bytes, int]],
    split: str,
) -> None:
    """Answer the handshake and write `frames` (each with its payload's size) in one write with
    the response's head (`whole`), or all but long payloads' middles byte by byte (`bytes`)."""
    _, headers = await read_request(reader)
    head = response_head(upgrade_headers(headers["sec-websocket-key"]))
    if split == "whole":
        pieces = [head + b"".join(data for data, _ in frames)]
    else:
        pieces = list(one_by_one(head))
        for data, size in frames:
            pieces += byte_pieces(data, size)
    await feed(writer, client, pieces)
    assert len(client.read_sizes) >= len(pieces)


def text_payload(size: int) -> bytes:
    """`size` bytes of valid UTF-8, not all ASCII."""
    return ("ü" * (size // 2) + "a" * (size % 2)).encode()


def binary_payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


# -- with a websockets server -------------------------------------------------------------------------

Handler = Callable[[ServerConnection], Awaitable[None]]


def close_code_received(ws: ServerConnection) -> int | None:
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None


@asynccontextmanager
async def websockets_server(handler: Handler, **kwargs: Any) -> AsyncIterator[str]:
    """A `websockets` server on 127.0.0.1 running `handler`; yields `ws://host:port`. A closing
    handshake it starts waits at most a second for the client's answer."""
    async with serve(handler, "127.0.0.1", 0, close_timeout=1.0, **kwargs) as server:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}"


async def test_messages_reach_a_websockets_server_and_come_back_in_order_with_their_type(
    clients: MakeClient,
) -> None:
    """The server (which refuses unmasked client frames) decodes each text and binary message of
    every length class, and echoes it: the client hands each one over whole, in order, typed."""
    paths: list[str] = []
    received: list[str | bytes] = []
    closes: list[int | None] = []

    async def echo(ws: ServerConnection) -> None:
        paths.append(ws.request.path if ws.request else "")
        async for message in ws:
            received.append(message)
            await ws.send(message)
        closes.append(close_code_received(ws))

    sent: list[str | bytes] = []
    for size in SIZES:
        sent += [text_payload(size).decode(), binary_payload(size)]
    async with websockets_server(echo) as url:
        client = clients()
        await client.open(f"{url}/media?call=1", timeout_s=TIMEOUT_S)
        for message in sent:
            client.send(message)
        echoed = await client.take(len(sent))
        await client.close()
    assert paths == ["/media?call=1"]
    assert received == sent
    assert echoed == [(isinstance(m, str), m.encode() if isinstance(m, str) else m) for m in sent]
    assert closes == [1000]
    assert client.reasons == []  # close() is never reported to on_close


async def test_close_completes_the_closing_handshake_and_send_then_raises(clients: MakeClient) -> None:
    closes: list[int | None] = []

    async def wait(ws: ServerConnection) -> None:
        await ws.wait_closed()
        closes.append(close_code_received(ws))

    async with websockets_server(wait) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        await client.close(timeout_s=TIMEOUT_S)
        with pytest.raises(ConnectionError):
            client.send("late")
    assert closes == [1000]
    assert client.reasons == []


@pytest.mark.parametrize(("close_code", "reason"), [(1000, None), (1001, None), (4001, "close code 4001")])
async def test_a_close_from_a_websockets_server_is_answered_and_reported(
    clients: MakeClient, close_code: int, reason: str | None
) -> None:
    answers: list[int | None] = []

    async def close_at_once(ws: ServerConnection) -> None:
        await ws.close(close_code)  # returns once the client answered (or after its timeout)
        answers.append(close_code_received(ws))

    async with websockets_server(close_at_once) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        await client.ended()
        with pytest.raises(ConnectionError):
            client.send(b"late")
    assert answers == [close_code]  # the same code back (RFC 6455, 5.5.1)
    assert client.reasons == [reason]


async def test_a_websockets_server_ping_is_answered(clients: MakeClient) -> None:
    answered: list[bool] = []

    async def ping(ws: ServerConnection) -> None:
        pong = await ws.ping(b"are you there?")
        await asyncio.wait_for(pong, TIMEOUT_S)
        answered.append(True)
        await ws.send("pinged")
        await ws.wait_closed()

    async with websockets_server(ping) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        assert await client.take(1) == [(True, b"pinged")]
        await client.close()
    assert answered == [True]


async def test_a_websockets_server_refusing_the_upgrade_with_403_raises_handshake_error(
    clients: MakeClient,
) -> None:
    def refuse(ws: ServerConnection, request: Request) -> Response:
        return ws.respond(403, "not you\n")

    handled: list[ServerConnection] = []

    async def never(ws: ServerConnection) -> None:
        handled.append(ws)

    async with websockets_server(never, process_request=refuse) as url:
        client = clients()
        with pytest.raises(HandshakeError, match="HTTP 403"):
            await client.open(url, timeout_s=TIMEOUT_S)
        await client.ended()
    assert handled == []
    assert client.reasons == []  # open's exception is the one report


# -- the opening handshake, against a raw server -----------------------------------------------------


async def test_the_opening_request_asks_for_a_plain_websocket_upgrade(clients: MakeClient) -> None:
    requests: list[tuple[str, dict[str, str]]] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(response_head(upgrade_headers(requests[0][1]["sec-websocket-key"])))
        await answer_close(reader, writer)

    async with raw_server(script) as url:
        client = clients()
        await client.open(f"{url}/media?call=7&x=y", timeout_s=TIMEOUT_S)
        await client.close(timeout_s=TIMEOUT_S)
    [(line, headers)] = requests
    assert line == "GET /media?call=7&x=y HTTP/1.1"
    assert headers["host"] == url.removeprefix("ws://")
    assert headers["upgrade"].lower() == "websocket"
    assert "upgrade" in headers["connection"].lower()
    assert headers["sec-websocket-version"] == "13"
    assert len(base64.b64decode(headers["sec-websocket-key"], validate=True)) == 16
    assert "sec-websocket-extensions" not in headers and "sec-websocket-protocol" not in headers


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


BAD_RESPONSES: dict[str, tuple[Callable[[str], bytes], str]] = {
    "403": (lambda key: response_head({"Content-Length": "3"}, "403 Forbidden") + b"no\n", "HTTP 403"),
    "200 with upgrade headers": (lambda key: response_head(upgrade_headers(key), "200 OK"), "HTTP 200"),
    "wrong accept": (
        lambda key: response_head({**upgrade_headers(key), "Sec-WebSocket-Accept": accept_for(key + "x")}),
        "Sec-WebSocket-Accept",
    ),
    "accept without the GUID": (
        lambda key: response_head(
            {
                **upgrade_headers(key),
                "Sec-WebSocket-Accept": base64.b64encode(hashlib.sha1(key.encode()).digest()).decode(),
            }
        ),
        "Sec-WebSocket-Accept",
    ),
    "no accept": (
        lambda key: response_head(_without(upgrade_headers(key), "Sec-WebSocket-Accept")),
        "Sec-WebSocket-Accept",
    ),
    "no upgrade": (lambda key: response_head(_without(upgrade_headers(key), "Upgrade")), "Upgrade"),
    "unasked extension": (
        lambda key: response_head({**upgrade_headers(key), "Sec-WebSocket-Extensions": "permessage-deflate"}),
        "sec-websocket-extensions",
    ),
    "endless head": (lambda key: b"HTTP/1.1 101 Switching Protocols\r\nX-Long: " + b"a" * 70_000, "no end"),
}


@pytest.mark.parametrize("case", BAD_RESPONSES)
async def test_a_bad_upgrade_response_raises_handshake_error_and_hangs_up(
    clients: MakeClient, case: str
) -> None:
    respond, match = BAD_RESPONSES[case]
    after: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_request(reader)
        writer.write(respond(headers["sec-websocket-key"]))
        after.append(await reader.read())  # until the client hangs up

    async with raw_server(script) as url:
        client = clients()
        with pytest.raises(HandshakeError, match=match):
            await client.open(url, timeout_s=TIMEOUT_S)
        await client.ended()
        with pytest.raises(ConnectionError):
            client.send("no")
    assert after == [b""]
    assert client.reasons == []


async def test_a_connection_closed_during_the_handshake_raises_connection_error(clients: MakeClient) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # and hang up without an answer

    async with raw_server(script) as url:
        client = clients()
        with pytest.raises(ConnectionError, match="during the handshake"):
            await client.open(url, timeout_s=TIMEOUT_S)
        await client.ended()
    assert client.reasons == []


async def test_a_server_that_never_answers_times_out_and_is_hung_up_on(clients: MakeClient) -> None:
    after: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        after.append(await reader.read())  # no answer: until the client gives up

    loop = asyncio.get_running_loop()
    async with raw_server(script) as url:
        client = clients()
        start_s = loop.time()
        with pytest.raises(TimeoutError):
            await client.open(url, timeout_s=0.2)
        waited_s = loop.time() - start_s
        await client.ended()
    assert 0.15 <= waited_s < 2.0  # uvloop's timers fire on the millisecond, maybe a little early
    assert after == [b""]
    assert client.reasons == []


async def test_a_refused_connection_raises_connection_refused(clients: MakeClient) -> None:
    with socket.socket() as bound:  # a port that is taken but not listening: refused at once
        bound.bind(("127.0.0.1", 0))
        client = clients()
        with pytest.raises(ConnectionRefusedError):
            await client.open(f"ws://127.0.0.1:{bound.getsockname()[1]}/", timeout_s=TIMEOUT_S)
    await client.ended()
    with pytest.raises(ConnectionError):
        client.send("no")
    assert client.reasons == []


async def test_only_ws_urls_are_accepted(clients: MakeClient) -> None:
    with pytest.raises(ValueError, match="wss://"):
        await clients().open("wss://127.0.0.1:1/", timeout_s=TIMEOUT_S)


# -- receiving, against a raw server ------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
async def test_frames_of_every_length_class_arrive_whole_and_in_order(
    clients: MakeClient, split: str
) -> None:
    """Text and binary frames with 7-, 16- and 64-bit lengths, after the handshake response in
    the same write, or with their headers and the response split byte by byte across reads."""
    expected = []
    for size in SIZES:
        expected += [(True, text_payload(size)), (False, binary_payload(size))]
    frames = [framed(TEXT if text else BINARY, payload) for text, payload in expected]
    client = clients()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake_and_feed(reader, writer, client, frames, split)
        await answer_close(reader, writer)

    async with raw_server(script) as url:
        await client.open(url, timeout_s=TIMEOUT_S)
        assert await client.take(len(expected)) == expected
        await client.close(timeout_s=TIMEOUT_S)
    assert client.messages.empty() and client.reasons == []


@pytest.mark.parametrize("split", SPLITS)
async def test_fragmented_messages_are_joined_and_pings_between_fragments_answered(
    clients: MakeClient, split: str
) -> None:
    word = "hello wörld".encode()  # "ö" is cut between two fragments
    big = binary_payload(70_000)
    frames = [
        framed(TEXT, word[:3], fin=False),
        framed(PING, b"between"),
        framed(CONT, word[3:8], fin=False),
        framed(CONT, word[8:]),
        framed(BINARY, b"\x00\x01", fin=False),
        framed(CONT, b"", fin=False),
        framed(CONT, b"\x02"),
        framed(TEXT, b"whole"),
        framed(BINARY, big[:300], fin=False),  # a 16-bit length, then a 64-bit one
        framed(CONT, big[300:]),
        framed(TEXT, b"", fin=False),
        framed(CONT, b""),
    ]
    client = clients()
    pongs: list[Sent] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake_and_feed(reader, writer, client, frames, split)
        pongs.append(await read_frame(reader))
        await answer_close(reader, writer)

    async with raw_server(script) as url:
        await client.open(url, timeout_s=TIMEOUT_S)
        messages = await client.take(5)
        await client.close(timeout_s=TIMEOUT_S)
    assert messages == [(True, word), (False, b"\x00\x01\x02"), (True, b"whole"), (False, big), (True, b"")]
    assert pongs == [masked(PONG, b"between")]
    assert client.messages.empty() and client.reasons == []


async def test_pings_are_answered_with_the_same_payload_and_pongs_ignored(clients: MakeClient) -> None:
    payloads = [b"", b"hi", bytes(range(125))]  # up to the longest a control frame may be
    pongs: list[Sent] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        writer.write(
            b"".join(frame(PING, p) for p in payloads) + frame(PONG, b"unasked") + frame(TEXT, b"after")
        )
        pongs.extend([await read_frame(reader) for _ in payloads])
        await answer_close(reader, writer)

    async with raw_server(script) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        assert await client.take(1) == [(True, b"after")]  # no message for a ping or a pong
        await client.close(timeout_s=TIMEOUT_S)
    assert pongs == [masked(PONG, p) for p in payloads]  # and no answer to the pong either
    assert client.reasons == []


@pytest.mark.parametrize(
    ("payload", "answer", "reason"),
    [
        (b"", b"", None),
        (code(1000) + b"bye", code(1000), None),
        (code(1001), code(1001), None),
        (code(1011) + b"oops", code(1011), "close code 1011"),
    ],
    ids=["no code", "1000", "1001", "1011"],
)
async def test_a_server_close_is_answered_with_its_code_and_ends_the_connection(
    clients: MakeClient, payload: bytes, answer: bytes, reason: str | None
) -> None:
    answers: list[Sent] = []
    after: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        writer.write(frame(CLOSE, payload) + frame(TEXT, b"after the close"))
        answers.append(await read_frame(reader))
        after.append(await reader.read())

    async with raw_server(script) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        await client.ended()
        with pytest.raises(ConnectionError):
            client.send("late")
    assert answers == [masked(CLOSE, answer)]
    assert after == [b""]
    assert client.reasons == [reason]
    assert client.messages.empty()


async def test_close_sends_one_close_frame_and_takes_the_answer_quietly(clients: MakeClient) -> None:
    """The server sends a last message, answers the close, half-closes and reads on: the client's
    close frame was its only one, and what came after it was not handed over."""
    got: list[Sent] = []
    after: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        got.append(await read_frame(reader))
        writer.write(frame(TEXT, b"sent before the answer") + frame(CLOSE, code(1000)))
        writer.write_eof()
        after.append(await reader.read())

    async with raw_server(script) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        await client.close(timeout_s=TIMEOUT_S)
    assert got == [masked(CLOSE, code(1000))]
    assert after == [b""]
    assert client.reasons == []
    assert client.messages.empty()


async def test_close_drops_the_connection_when_the_server_does_not_answer(clients: MakeClient) -> None:
    got: list[Sent] = []
    after: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        got.append(await read_frame(reader))
        after.append(await reader.read())  # no answer: until the client gives up

    loop = asyncio.get_running_loop()
    async with raw_server(script) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        start_s = loop.time()
        await client.close(timeout_s=0.2)
        waited_s = loop.time() - start_s
    assert 0.15 <= waited_s < 2.0
    assert got == [masked(CLOSE, code(1000))]
    assert after == [b""]
    assert client.reasons == []


async def test_a_connection_dropped_without_a_close_frame_is_reported(clients: MakeClient) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        writer.write(frame(TEXT, b"last"))  # and hang up

    async with raw_server(script) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        assert await client.take(1) == [(True, b"last")]
        await client.ended()
        with pytest.raises(ConnectionError):
            client.send("late")
    assert client.reasons == ["connection lost"]


PROTOCOL_ERRORS: dict[str, tuple[bytes, str]] = {  # what the server writes, what on_close is told
    "masked": (frame(TEXT, b"hi", mask=b"abcd"), "masked frame"),
    "reserved bit": (frame(TEXT, b"hi", rsv=0x40), "reserved bits"),
    "continuation first": (frame(CONT, b"hi"), "continuation with no message"),
    "whole message inside a fragmented one": (
        frame(TEXT, b"a", fin=False) + frame(TEXT, b"b"),
        "new message inside a fragmented one",
    ),
    "fragment inside a fragmented one": (
        frame(TEXT, b"a", fin=False) + frame(BINARY, b"b", fin=False),
        "opcode 2 here",
    ),
    "fragmented ping": (frame(PING, b"p", fin=False), "fragmented or long control frame"),
    "long ping": (frame(PING, bytes(126)), "fragmented or long control frame"),
    "reserved data opcode": (frame(0x3, b"?"), "opcode 3 here"),
    "reserved control opcode": (frame(0xB, b"?"), "opcode 11"),
}


@pytest.mark.parametrize("case", PROTOCOL_ERRORS)
async def test_a_protocol_error_fails_the_connection_with_1002(clients: MakeClient, case: str) -> None:
    answers: list[Sent] = []
    after: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        writer.write(PROTOCOL_ERRORS[case][0] + frame(TEXT, b"after the error"))
        answers.append(await read_frame(reader))
        after.append(await reader.read())

    async with raw_server(script) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        await client.ended()
    assert answers == [masked(CLOSE, code(1002))]
    assert after == [b""]
    [reason] = client.reasons
    assert reason is not None and reason.startswith("protocol error")
    assert PROTOCOL_ERRORS[case][1] in reason
    assert client.messages.empty()


async def test_an_exception_from_on_message_fails_the_connection_with_1011() -> None:
    reasons: list[str | None] = []
    answers: list[Sent] = []

    def on_message(text: bool, payload: bytes) -> None:
        raise ValueError(payload)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        writer.write(frame(TEXT, b"boom") + frame(TEXT, b"after"))
        answers.append(await read_frame(reader))
        assert await reader.read() == b""

    async with raw_server(script) as url:
        client = ws_client.WebSocketClient(on_message, reasons.append)
        try:
            await client.open(url, timeout_s=TIMEOUT_S)
            await asyncio.wait_for(client.wait_closed(), TIMEOUT_S)
        finally:
            await client.close(timeout_s=1.0)
    assert answers == [masked(CLOSE, code(1011))]
    assert reasons == ["ValueError"]


# -- sending, against a raw server --------------------------------------------------------------------


async def test_sent_frames_are_masked_final_and_typed_with_the_shortest_length(clients: MakeClient) -> None:
    """What the client writes, read off the socket: every length class, both types. (The
    `websockets` server refusing unmasked frames checks the masking again, the other way.)"""
    sent: list[str | bytes] = []
    for size in SIZES:
        sent += [text_payload(size).decode(), binary_payload(size)]
    got: list[Sent] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer)
        got.extend([await read_frame(reader) for _ in sent])
        await answer_close(reader, writer)

    async with raw_server(script) as url:
        client = clients()
        await client.open(url, timeout_s=TIMEOUT_S)
        for message in sent:
            client.send(message)
        await client.close(timeout_s=TIMEOUT_S)
    assert got == [masked(TEXT, m.encode()) if isinstance(m, str) else masked(BINARY, m) for m in sent]
    shortest = [7 if n < 126 else 16 if n < 65536 else 64 for n in SIZES for _ in "tb"]
    assert [f.length_bits for f in got] == shortest


async def test_send_before_open_raises_connection_error(clients: MakeClient) -> None:
    with pytest.raises(ConnectionError):
        clients().send("too early")


# -- the same on uvloop, the loop the benchmark runs on -----------------------------------------------

ON_UVLOOP: list[tuple[Callable[..., Awaitable[None]], dict[str, Any]]] = [
    (test_messages_reach_a_websockets_server_and_come_back_in_order_with_their_type, {}),
    (
        test_a_close_from_a_websockets_server_is_answered_and_reported,
        {"close_code": 4001, "reason": "close code 4001"},
    ),
    (test_frames_of_every_length_class_arrive_whole_and_in_order, {"split": "bytes"}),
    (test_fragmented_messages_are_joined_and_pings_between_fragments_answered, {"split": "bytes"}),
    (test_a_bad_upgrade_response_raises_handshake_error_and_hangs_up, {"case": "wrong accept"}),
    (test_a_server_that_never_answers_times_out_and_is_hung_up_on, {}),
    (test_a_refused_connection_raises_connection_refused, {}),
    (test_close_sends_one_close_frame_and_takes_the_answer_quietly, {}),
    (test_close_drops_the_connection_when_the_server_does_not_answer, {}),
    (
        test_a_server_close_is_answered_with_its_code_and_ends_the_connection,
        {"payload": code(1000), "answer": code(1000), "reason": None},
    ),
    (test_a_protocol_error_fails_the_connection_with_1002, {"case": "masked"}),
    (test_sent_frames_are_masked_final_and_typed_with_the_shortest_length, {}),
]


@pytest.mark.parametrize(
    ("test", "kwargs"), ON_UVLOOP, ids=[test.__name__.removeprefix("test_") for test, _ in ON_UVLOOP]
)
def test_on_uvloop(test: Callable[..., Awaitable[None]], kwargs: dict[str, Any]) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> None:
        async with client_factory() as make:
            await test(make, **kwargs)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
