"""agentkit's WebSocket protocol (`agentkit.server._ws_protocol`) driven without sockets: uvicorn's
protocol object on a recording transport, fed the bytes of a websockets client protocol in chunks
of every size. Each text message arrives once and in order, through the sink or the receive queue;
everything else reaches websockets and uvicorn as before (compared with plain uvicorn byte for
byte), and so do the frames it refuses. Last, the same over a socket, served by uvicorn."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn
from _server import wait_for
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from agentkit.server._ws_protocol import DirectTextProtocol
from agentkit.transports._ws_common import DIRECT_TEXT

Log = list[tuple[str, Any]]
SPLITS = ["whole", "bytes", "random"]
URI = parse_uri("ws://127.0.0.1:8000/media")
KINDS = ["media"] * 6 + ["decline", "big", "tiny", "unicode", "binary", "ping", "fragmented"]


class Transport:
    """What uvicorn's WebSocket protocol uses of an asyncio transport, recorded."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)


class RecordingQueue(asyncio.Queue[Any]):
    """uvicorn's receive queue, noting each message in the log as it is put."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    def put_nowait(self, item: Any) -> None:
        self.log.append(("queue", item))
        super().put_nowait(item)


class Peer:
    """A server protocol (agentkit's, or plain uvicorn's) on a `Transport`, a websockets client
    protocol writing to it, and an app that accepts and sets a sink following `rule`."""

    def __init__(
        self,
        protocol_class: type[WebSocketsSansIOProtocol],
        rule: Callable[[str], bool] | None,
        *,
        max_size: int,
        deflate: bool,
    ) -> None:
        self.log: Log = []
        self.rule = rule
        self.offered_while_queued = 0
        self.offers: list[str] = []
        self.to_websockets = 0  # bytes websockets read after the handshake
        self.done = asyncio.Event()
        self.extension: dict[str, Any] | None = None
        config = Config(
            app=self.app,
            interface="asgi3",
            ws_max_size=max_size,
            ws_ping_interval=None,
            proxy_headers=False,
            log_config=None,
            lifespan="off",
        )
        config.load()
        self.transport = Transport()
        self.server = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        self.server.queue = RecordingQueue(self.log)
        self.server.connection_made(self.transport)  # type: ignore[arg-type]
        extensions = [ClientPerMessageDeflateFactory()] if deflate else None
        self.client = ClientProtocol(URI, extensions=extensions, max_size=None)
        self.read = 0

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        extension = self.extension = scope["extensions"].get(DIRECT_TEXT)
        if extension is not None and self.rule is not None:
            extension["set_sink"](self.sink)
        await self.done.wait()

    def sink(self, text: str) -> bool:
        self.offers.append(text)
        if not self.server.queue.empty():
            self.offered_while_queued += 1
        assert self.rule is not None
        taken = self.rule(text)
        if taken:
            self.log.append(("sink", text))
        return taken

    async def open(self, pipelined: bytes = b"") -> None:
        self.client.send_request(self.client.connect())
        self.server.data_received(self.outgoing() + pipelined)
        for _ in range(20):
            await asyncio.sleep(0)
            if b"\r\n\r\n" in self.transport.written:
                break
        self.replies()
        assert self.client.state is State.OPEN
        receive_data = self.server.conn.receive_data

        def counting(data: bytes | bytearray) -> None:
            self.to_websockets += len(data)
            receive_data(data)

        self.server.conn.receive_data = counting  # type: ignore[method-assign]

    def outgoing(self) -> bytes:
        return b"".join(self.client.data_to_send())

    def replies(self) -> list[Frame]:
        """The frames the server wrote since the last call."""
        data = bytes(self.transport.written[self.read :])
        self.read = len(self.transport.written)
        self.client.receive_data(data)
        return [event for event in self.client.events_received() if isinstance(event, Frame)]

    def messages(self) -> list[tuple[str, Any]]:
        """What arrived, in order: ("sink", text), ("queue", text or bytes), ("disconnect", code)."""
        out: list[tuple[str, Any]] = []
        for channel, item in self.log:
            if channel == "sink":
                out.append((channel, item))
            elif item["type"] == "websocket.receive":
                out.append(("queue", item["text"] if item.get("text") is not None else item["bytes"]))
            elif item["type"] == "websocket.disconnect":
                out.append(("disconnect", item["code"]))
        return out

    async def drain(self) -> None:
        """Read the queue empty as the app would, which resumes reading."""
        while not self.server.queue.empty():
            await self.server.receive()

    async def feed(self, data: bytes, split: str, rng: random.Random, *, drain_every: int = 0) -> None:
        for n, chunk in enumerate(chunks(data, split, rng), 1):
            if self.transport.closed:  # as an asyncio transport: no reading after close()
                break
            self.server.data_received(chunk)
            if drain_every and n % drain_every == 0:
                await self.drain()

    async def close(self) -> None:
        self.done.set()
        if not self.server.disconnected:
            self.server.connection_lost(None)
        await asyncio.gather(*list(self.server.tasks))


PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def peer() -> AsyncIterator[PeerFactory]:
    peers: list[Peer] = []

    async def make(
        rule: Callable[[str], bool] | None = None,
        *,
        protocol_class: type[WebSocketsSansIOProtocol] = DirectTextProtocol,
        max_size: int = 2**20,
        deflate: bool = False,
        pipelined: bytes = b"",
    ) -> Peer:
        made = Peer(protocol_class, rule, max_size=max_size, deflate=deflate)
        peers.append(made)
        await made.open(pipelined)
        return made

    yield make
    for made in peers:
        await made.close()


def chunks(data: bytes, split: str, rng: random.Random) -> Iterator[bytes]:
    if split == "whole":
        yield data
    elif split == "bytes":
        yield from (data[i : i + 1] for i in range(len(data)))
    else:
        i = 0
        while i < len(data):
            n = rng.choice([1, 2, 3, 5, rng.randint(1, 400), rng.randint(1, 2000)])
            yield data[i : i + n]
            i += n


def media(n: int) -> str:
    """A Twilio Media Streams message: about 330 bytes of JSON."""
    payload = base64.b64encode(bytes((n + i) % 256 for i in range(160))).decode()
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(n),
            "media": {"track": "inbound", "chunk": str(n), "timestamp": str(n * 20), "payload": payload},
            "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
        }
    )


def takes_all(text: str) -> bool:
    return True


def declines_marked(text: str) -> bool:
    return "decline" not in text


def mixed_stream(client: ClientProtocol, rng: random.Random, count: int) -> tuple[bytes, list[Any], int]:
    """`count` messages of every kind from `client`: their bytes, the messages expected (text or
    bytes, in order) and the number of pings among them."""
    expected: list[Any] = []
    pings = 0
    for n in range(count):
        kind = rng.choice(
            ["media"] * 6 + ["decline", "big", "tiny", "unicode", "binary", "ping", "fragmented"]
        )
        text: str | None = None
        if kind == "media":
            text = media(n)
        elif kind == "decline":
            text = media(n).replace("media", "decline")
        elif kind == "big":
            text = "x" * rng.randint(126, 3000) + str(n)  # a 16-bit length
        elif kind == "tiny":
            text = str(n)
        elif kind == "unicode":
            text = f"héllo ☎ {n} 𝄞"
        elif kind == "binary":
            data = bytes([n % 256]) * rng.randint(1, 500)
            client.send_binary(data)
            expected.append(data)
        elif kind == "ping":
            client.send_ping(str(n).encode())
            pings += 1
        else:
            text = f"fragmented {n} " + "y" * rng.randint(0, 300)
            raw = text.encode()
            cut = rng.randint(0, len(raw))
            client.send_text(raw[:cut], fin=False)
            client.send_continuation(raw[cut:], fin=True)
            expected.append(text)
            text = None
        if text is not None:
            client.send_text(text.encode())
            expected.append(text)
    return b"".join(client.data_to_send()), expected, pings


def close_code(frames: list[Frame]) -> int | None:
    closes = [Close.parse(frame.data).code for frame in frames if frame.opcode is Opcode.CLOSE]
    return closes[-1] if closes else None


@pytest.mark.parametrize("split", SPLITS)
async def test_text_frames_taken_without_websockets(peer: PeerFactory, split: str) -> None:
    """A sink taking everything: each media message reaches it once, in order, and websockets reads
    none of their bytes; nothing is queued and reading never pauses."""
    p = await peer(takes_all)
    texts = [media(n) for n in range(200)] + ["", "é" * 5000, "z" * 65535]  # 7- and 16-bit lengths
    for text in texts:
        p.client.send_text(text.encode())
    await p.feed(p.outgoing(), split, random.Random(1))
    assert p.messages() == [("sink", text) for text in texts]
    assert p.to_websockets == 0
    assert not p.transport.paused
    assert not p.transport.written[p.read :]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("drain_every", [0, 1, 3])
@pytest.mark.parametrize("seed", [1, 2])
async def test_every_message_arrives_once_in_order(
    peer: PeerFactory, split: str, drain_every: int, seed: int
) -> None:
    """Text, binary, fragmented text and pings mixed, in chunks of every size, the queue read now and
    then or never: each message arrives once and in order, by the sink or by the queue; declined
    ones and binary ones by the queue; pings get their pongs; the sink is never offered a message
    while the queue holds one."""
    rng = random.Random(seed)
    p = await peer(declines_marked)
    data, expected, pings = mixed_stream(p.client, rng, 150)
    await p.feed(data, split, rng, drain_every=drain_every)
    arrived = p.messages()
    assert [message for _, message in arrived] == expected
    for channel, message in arrived:
        if isinstance(message, bytes) or "decline" in message:
            assert channel == "queue"
    assert p.offered_while_queued == 0
    assert len(set(p.offers)) == len(p.offers)  # none offered twice
    replies = p.replies()
    assert [frame.opcode for frame in replies] == [Opcode.PONG] * pings
    if drain_every == 1 and split != "whole":  # the queue read as the app would: the sink took most
        assert sum(channel == "sink" for channel, _ in arrived) > len(expected) // 2
        assert p.to_websockets < len(data) // 2
    assert p.server._splitting


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("rule", [None, "declines"])
async def test_same_as_plain_uvicorn_when_nothing_is_taken(
    peer: PeerFactory, split: str, rule: str | None
) -> None:
    """With no sink, or one declining every message, the protocol queues, answers and pauses exactly
    as uvicorn's own does, for the same bytes in the same chunks."""
    outcomes = []
    for protocol_class in (WebSocketsSansIOProtocol, DirectTextProtocol):
        rng = random.Random(7)
        p = await peer((lambda text: False) if rule else None, protocol_class=protocol_class)
        data, expected, _ = mixed_stream(p.client, rng, 120)
        p.client.send_close(1000, "bye")
        await p.feed(data + p.outgoing(), split, rng, drain_every=2)
        assert [message for _, message in p.messages()] == [*expected, 1000]
        answers = bytes(p.transport.written[p.read :])  # after the handshake, whose key differs
        outcomes.append((p.messages(), answers, p.transport.paused, p.transport.closed))
    assert outcomes[0] == outcomes[1]


async def test_permessage_deflate_frames_go_through_websockets(peer: PeerFactory) -> None:
    """Compressed frames (RSV1) are websockets' to inflate; their text still reaches the sink, from
    uvicorn's event."""
    p = await peer(takes_all, deflate=True)
    texts = [media(n) for n in range(20)]
    for text in texts:
        p.client.send_text(text.encode())
    await p.feed(p.outgoing(), "random", random.Random(3))
    assert p.messages() == [("sink", text) for text in texts]
    assert p.to_websockets > 0


@pytest.mark.parametrize("split", SPLITS)
async def test_queued_message_holds_the_rest_back_from_the_sink(peer: PeerFactory, split: str) -> None:
    """After a declined message is queued (and reading paused), the frames behind it in the same data
    go to the queue in order, a partial one waits; once the app reads the queue, the next message
    is offered again."""
    p = await peer(declines_marked)
    texts = [media(0).replace("media", "decline"), media(1), media(2), media(3)]
    for text in texts:
        p.client.send_text(text.encode())
    data = p.outgoing()
    cut = len(data) - 100  # media(3) arrives later, in two parts
    for chunk in chunks(data[:cut], split, random.Random(5)):
        p.server.data_received(chunk)
    assert p.messages() == [("queue", text) for text in texts[:3]]
    assert p.transport.paused
    p.server.data_received(data[cut:-50])
    await p.drain()
    assert not p.transport.paused
    p.server.data_received(data[-50:])
    assert p.messages() == [*(("queue", text) for text in texts[:3]), ("sink", texts[3])]
    assert p.offers == [texts[0], texts[3]]


async def test_sink_that_raises_is_dropped(peer: PeerFactory, caplog: pytest.LogCaptureFixture) -> None:
    """A sink that raises is logged once and dropped; its message and those after it are queued."""
    calls: list[str] = []

    def fails(text: str) -> bool:
        calls.append(text)
        raise RuntimeError("sink broke")

    p = await peer(fails)
    texts = [media(n) for n in range(5)]
    for text in texts:
        p.client.send_text(text.encode())
    with caplog.at_level(logging.ERROR, logger="agentkit.server._ws_protocol"):
        await p.feed(p.outgoing(), "random", random.Random(4), drain_every=1)
    assert calls == texts[:1]
    assert p.messages() == [("queue", text) for text in texts]
    assert len([r for r in caplog.records if "sink failed" in r.getMessage()]) == 1
    assert p.server._sink is None


@pytest.mark.parametrize("split", ["whole", "bytes"])
async def test_bad_utf8_closes_with_1007(peer: PeerFactory, split: str) -> None:
    """A text frame that is not UTF-8 is left to uvicorn, which closes with 1007 and drops what
    follows; the message before it was taken."""
    p = await peer(takes_all)
    p.client.send_text(media(0).encode())
    p.client.send_text(b"bad \xff\xfe text")
    p.client.send_text(media(1).encode())
    await p.feed(p.outgoing(), split, random.Random(0))
    assert p.messages() == [("sink", media(0)), ("disconnect", 1007)]
    assert close_code(p.replies()) == 1007
    assert p.transport.closed


@pytest.mark.parametrize("split", ["whole", "bytes"])
async def test_frame_over_max_size_closes_with_1009(peer: PeerFactory, split: str) -> None:
    """A frame longer than `ws_max_size` (here 1000) is websockets' to refuse, as without the sink:
    1009, even before its payload arrives."""
    p = await peer(takes_all, max_size=1000)
    p.client.send_text(media(0).encode())
    p.client.send_text(b"x" * 1001)
    data = p.outgoing()
    await p.feed(data[: len(data) - 1001], split, random.Random(0))  # the long frame's header only
    assert p.messages() == [("sink", media(0)), ("disconnect", 1009)]
    assert close_code(p.replies()) == 1009
    assert p.transport.closed
    assert not p.server._splitting


async def test_unmasked_frame_fails_the_connection(peer: PeerFactory) -> None:
    """A client frame without a mask fails the connection (1002) on its header, as before."""
    p = await peer(takes_all)
    p.client.send_text(media(0).encode())
    p.server.data_received(p.outgoing() + b"\x81\x05hel")  # "hello", unmasked, in part
    assert p.messages() == [("sink", media(0)), ("disconnect", 1002)]
    assert close_code(p.replies()) == 1002
    assert p.transport.closed


async def test_unknown_opcode_fails_the_connection(peer: PeerFactory) -> None:
    p = await peer(takes_all)
    p.server.data_received(b"\x83\x85" + bytes(4))  # opcode 3, masked, payload yet to come
    assert p.messages() == [("disconnect", 1002)]
    assert close_code(p.replies()) == 1002


@pytest.mark.parametrize("split", SPLITS)
async def test_64_bit_length_ends_the_splitting(peer: PeerFactory, split: str) -> None:
    """A frame with a 64-bit length (over 64 KiB) is never taken: websockets reads it and all after,
    and every message still arrives in order (the sink still gets uvicorn's text events)."""
    p = await peer(declines_marked)
    texts = [media(0), "w" * 70000, media(1), "decline", media(2)]
    for text in texts:
        p.client.send_text(text.encode())
    p.client.send_binary(b"\x00" * 70000)
    await p.feed(p.outgoing(), split, random.Random(6), drain_every=1)
    assert [message for _, message in p.messages()] == [*texts, b"\x00" * 70000]
    assert p.messages()[0] == ("sink", media(0))
    assert not p.server._splitting


async def test_fragmented_text_goes_through_websockets(peer: PeerFactory) -> None:
    """A fragmented message is websockets' to join (with a ping in the middle); a whole text frame in
    the middle of one is a protocol error, as without the sink."""
    p = await peer(takes_all)
    p.client.send_text(b"one ", fin=False)
    p.client.send_ping(b"p")
    p.client.send_continuation(b"two", fin=True)
    p.client.send_text(media(0).encode())
    await p.feed(p.outgoing(), "bytes", random.Random(0))
    assert p.messages() == [("sink", "one two"), ("sink", media(0))]
    assert [frame.opcode for frame in p.replies()] == [Opcode.PONG]

    p.client.send_text(b"three ", fin=False)
    data = p.outgoing()
    p.client = ClientProtocol(URI, state=State.OPEN)  # a rogue one
    p.client.send_text(media(1).encode())
    p.server.data_received(data + p.outgoing())
    assert p.messages()[-1] == ("disconnect", 1002)


async def test_text_is_sent_at_once_where_uvicorn_would_not_wait(peer: PeerFactory) -> None:
    """The extension's `send_text` writes the frame uvicorn's `send` would, and declines (sending
    nothing) while the transport is paused for writing and once the app has closed."""
    made = await peer(lambda text: True)
    assert made.extension is not None
    send_now = made.extension["send_text"]
    assert send_now('{"event":"mark"}') and send_now("h\u00e9")
    assert [(f.opcode, f.data) for f in made.replies()] == [
        (Opcode.TEXT, b'{"event":"mark"}'),
        (Opcode.TEXT, "h\u00e9".encode()),
    ]
    made.server.pause_writing()  # the peer reads slowly: uvicorn's `send` would wait
    assert not send_now("later")
    assert made.replies() == []
    made.server.resume_writing()
    assert send_now("now")
    await made.server.send({"type": "websocket.close", "code": 1000})
    assert not send_now("too late")
    frames = made.replies()
    assert [f.opcode for f in frames] == [Opcode.TEXT, Opcode.CLOSE] and frames[0].data == b"now"


async def test_close_handshake_as_before(peer: PeerFactory) -> None:
    """The client's close is echoed and queued; frames after it are discarded."""
    p = await peer(takes_all)
    p.client.send_text(media(0).encode())
    p.client.send_close(1000, "bye")
    data = p.outgoing()
    rogue = ClientProtocol(URI, state=State.OPEN)
    rogue.send_text(media(1).encode())
    p.server.data_received(data + b"".join(rogue.data_to_send()))
    assert p.messages() == [("sink", media(0)), ("disconnect", 1000)]
    assert close_code(p.replies()) == 1000
    assert p.transport.closed


async def test_nothing_offered_after_the_app_closed(peer: PeerFactory) -> None:
    """Once the app has sent its close, messages are neither offered nor queued (uvicorn drops them)
    until the client's close arrives."""
    p = await peer(takes_all)
    await p.server.send({"type": "websocket.close", "code": 1000})
    p.log.clear()
    p.client.send_text(media(0).encode())
    p.client.send_close(1000)
    p.server.data_received(p.outgoing())
    assert p.messages() == []
    assert p.transport.closed


async def test_frames_pipelined_with_the_handshake_leave_it_to_uvicorn(peer: PeerFactory) -> None:
    """A client that sends a frame with its handshake request (before the response) gets plain
    uvicorn. After the request, websockets has read that frame's first two bytes: its buffer is
    empty, but its parser is inside the frame, so splitting there would misread the rest."""
    head = ClientProtocol(URI, state=State.OPEN)
    head.send_text(media(0).encode())
    frame = b"".join(head.data_to_send())
    p = await peer(takes_all, pipelined=frame[:2])
    assert not p.server.conn.reader.buffer
    assert not p.server._splitting
    p.server.data_received(frame[2:])
    p.client.send_text(media(1).encode())
    data = p.outgoing()
    p.server.data_received(data)
    assert [message for _, message in p.messages()] == [media(0), media(1)]
    assert p.to_websockets == len(frame) - 2 + len(data)


async def test_whole_frames_pipelined_with_the_handshake(peer: PeerFactory) -> None:
    """Whole frames sent with the request leave websockets between frames: uvicorn queues them
    (before the app could set a sink), and splitting starts after them."""
    head = ClientProtocol(URI, state=State.OPEN)
    head.send_text(media(0).encode())
    head.send_binary(b"\x01\x02")
    p = await peer(takes_all, pipelined=b"".join(head.data_to_send()))
    assert p.server._splitting
    await p.drain()
    p.client.send_text(media(1).encode())
    p.server.data_received(p.outgoing())
    assert p.messages() == [("queue", media(0)), ("queue", b"\x01\x02"), ("sink", media(1))]


class CountingProtocol(DirectTextProtocol):
    """agentkit's protocol, counting the messages its sink took past websockets' parser."""

    taken_directly = 0

    def _take_text(self, buf: bytes | bytearray, pos: int, end: int) -> bool:
        queued = self.queue.qsize()
        taken = super()._take_text(buf, pos, end)
        if taken and self.queue.qsize() == queued:  # not declined into the queue
            CountingProtocol.taken_directly += 1
        return taken


@pytest.mark.slow
@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_over_loopback_with_uvicorn(compression: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Served by uvicorn over a socket: media messages reach the sink in order among the ones it
    declines (read from the queue), uncompressed ones past websockets' parser, compressed ones
    from uvicorn's event."""
    monkeypatch.setattr(CountingProtocol, "taken_directly", 0)
    log: list[tuple[str, str]] = []

    def sink(text: str) -> bool:
        if "decline" in text or text == "end":
            return False
        log.append(("sink", text))
        return True

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        scope["extensions"][DIRECT_TEXT]["set_sink"](sink)
        while (message := await receive())["type"] == "websocket.receive":
            log.append(("queue", message["text"]))
            if message["text"] == "end":
                await send({"type": "websocket.send", "text": "done"})

    config = uvicorn.Config(app, port=0, ws=CountingProtocol, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started, 10, "uvicorn started")
        port = server.servers[0].sockets[0].getsockname()[1]
        texts = [media(n).replace("media", "decline") if n % 10 == 0 else media(n) for n in range(300)]
        async with connect(f"ws://127.0.0.1:{port}/", compression=compression) as ws:
            for text in texts:
                await ws.send(text)
            await ws.send("end")
            assert await ws.recv() == "done"
    finally:
        server.should_exit = True
        await task
    assert [text for _, text in log] == [*texts, "end"]
    assert all(channel == "queue" for channel, text in log if "decline" in text)
    if compression is None:  # after a declined one is queued, the rest of its data follows it
        assert CountingProtocol.taken_directly > 0
    else:
        assert CountingProtocol.taken_directly == 0
