"""The FastRTC-compatible endpoint `/websocket/offer`: FastRTC 0.0.34's WebSocket protocol, as the
shared benchmark client (`../shared/baselines/fastrtc/ws_latency_client.py`) speaks it.

A real uvicorn server on loopback, real speech, and a small client written here with `websockets`:
base64 mu-law at 48 kHz in 20 ms `media` messages, `log` events and 24 kHz mu-law media back.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np
import pytest
from _server import FAST, LiveServer, Silent, echo_stream, envelope_correlation, expected_echo_s, live_server
from _server import wait_for as wait_for_server
from conftest import speech, speech_bounds_s
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from agentkit import AudioFrame, Stream
from agentkit.audio import float_to_pcm16, mulaw_decode, mulaw_encode, pcm16_to_float

pytestmark = pytest.mark.slow

Serve = Callable[..., Awaitable[LiveServer]]

IN_RATE = 48000  # FastRTC's defaults, which the endpoint uses unless configured otherwise
OUT_RATE = 24000
FRAME_S = 0.02
FRAME_SAMPLES = round(IN_RATE * FRAME_S)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """`await serve(stream)` starts a live server; every one started is shut down after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(stream: Stream, **app_options: Any) -> LiveServer:
            return await stack.enter_async_context(live_server(stream, **app_options))

        yield start


@dataclass
class FastRTCClient:
    """A FastRTC WebSocket client: sends `start` and paced `media`, records what comes back.

    `media` holds (receipt time on `time.perf_counter`, decoded 16-bit samples) per media message,
    `logs` the `data` of `log` messages, `other` every other message.
    """

    url: str
    websocket_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    media: list[tuple[float, np.ndarray]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    ws: ClientConnection | None = None
    _receiver: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _next_due: float | None = None

    async def __aenter__(self) -> Self:
        self.ws = await connect(self.url, max_size=None, open_timeout=10)
        self._receiver = asyncio.create_task(self._receive(self.ws), name="fastrtc-client-receive")
        await self.send({"event": "start", "websocket_id": self.websocket_id})
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.ws is not None and self._receiver is not None
        await self.ws.close()
        await asyncio.wait_for(self._receiver, 5)

    async def _receive(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                now = time.perf_counter()
                assert isinstance(raw, str), "this protocol is all JSON text"
                message = json.loads(raw)
                if message.get("event") == "media":
                    payload = base64.b64decode(message["media"]["payload"], validate=True)
                    self.media.append((now, mulaw_decode(payload)))
                elif message.get("type") == "log":
                    self.logs.append(message["data"])
                else:
                    self.other.append(message)
                self._changed.set()
        self._changed.set()

    @property
    def closed(self) -> bool:
        return self._receiver is not None and self._receiver.done()

    @property
    def close_code(self) -> int | None:
        return None if self.ws is None else self.ws.close_code

    def received_s(self) -> float:
        return sum(samples.shape[0] for _, samples in self.media) / OUT_RATE

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))

    async def send_media(self, pcm16: np.ndarray) -> None:
        payload = base64.b64encode(mulaw_encode(pcm16)).decode()
        await self.send({"event": "media", "media": {"payload": payload}})

    async def stream(self, samples: np.ndarray, until: Callable[[], bool] | None = None) -> float:
        """Send float samples at 48 kHz in real time, 20 ms a message, each once its audio has
        "happened"; stop early once `until()` holds. Returns when the first sample happened."""
        pcm = float_to_pcm16(samples)
        now = time.perf_counter()
        if self._next_due is None or self._next_due < now:
            self._next_due = now + FRAME_S
        origin = self._next_due - FRAME_S
        for start in range(0, samples.shape[0] - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            await asyncio.sleep(max(0.0, self._next_due - time.perf_counter()))
            await self.send_media(np.frombuffer(pcm[2 * start : 2 * (start + FRAME_SAMPLES)], dtype="<i2"))
            self._next_due += FRAME_S
            if until is not None and until():
                break
        return origin

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                self._changed.clear()  # before looking, so no message is missed
                if condition():
                    return
                if self.closed:
                    raise ConnectionError(f"connection closed (code {self.close_code})")
                await self._changed.wait()

    async def next_other(self, since: int, timeout_s: float = 5.0) -> dict[str, Any]:
        """The first message among `other[since:]` (neither media nor log), waiting for it."""
        await self.wait_until(lambda: len(self.other) > since, timeout_s)
        return self.other[since]


def silence_s(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * IN_RATE), dtype=np.float32)


async def test_echo_over_the_fastrtc_protocol(serve: Serve) -> None:
    """A FastRTC client's utterance is heard (`log` events in order) and echoed back as 24 kHz mu-law
    media, after the utterance ends, about as long as the utterance and shaped like it."""
    server = await serve(echo_stream())
    utterance = speech("utt2", IN_RATE)
    start_s, end_s = speech_bounds_s(utterance.samples, IN_RATE)
    async with FastRTCClient(server.ws_url("/websocket/offer")) as client:
        await wait_for_server(lambda: client.websocket_id in server.stream.sessions, what="the session")
        origin = await client.stream(np.concatenate([silence_s(0.5), utterance.samples]))
        speech_end_t = origin + 0.5 + end_s

        def reply_finished() -> bool:  # the benchmark client's rule: audio came, then none for a while
            return bool(client.media) and time.perf_counter() - client.media[-1][0] > 0.5

        await client.stream(silence_s(8.0), until=reply_finished)
        assert reply_finished(), "no complete reply within 8 s of silence"
        await client.send({"event": "stop"})
        await client.wait_until(lambda: client.closed)
    assert client.logs == ["started_talking", "pause_detected", "response_starting", "stopped"]
    assert client.other == []
    assert client.close_code == 1000

    first_t = client.media[0][0]
    assert first_t > speech_end_t
    assert first_t - speech_end_t < FAST.end_of_turn_silence_ms / 1000 + 1.0
    assert client.received_s() == pytest.approx(expected_echo_s(end_s - start_s), abs=0.3)
    received = AudioFrame(pcm16_to_float(np.concatenate([s for _, s in client.media]).tobytes()), OUT_RATE)
    assert envelope_correlation(utterance, received) > 0.8
    await wait_for_server(lambda: not server.stream.sessions, what="the session to end")


async def test_healthz_reports_what_the_benchmark_client_reads(serve: Serve) -> None:
    """`/healthz` gives the server's pid and the FastRTC endpoint's wire rates (48 kHz in, 24 kHz out)."""
    server = await serve(Stream(Silent(), concurrency_limit=3))
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.http_url}/healthz", timeout=5)
    assert response.status_code == 200
    health = response.json()
    assert health["ok"] is True
    assert health["pid"] == os.getpid()
    assert (health["input_sample_rate"], health["output_sample_rate"]) == (IN_RATE, OUT_RATE)
    assert (health["sessions"], health["concurrency_limit"]) == (0, 3)


async def test_bad_media_is_an_error_and_the_connection_stays_open(serve: Serve) -> None:
    """Media before `start`, a payload that is not base64, or no payload at all: each gets an error
    message with its code, and the connection goes on (valid media, then `stop`, still work)."""
    stream = Stream(Silent())
    server = await serve(stream)
    async with FastRTCClient(server.ws_url("/websocket/offer")) as client:
        await wait_for_server(lambda: client.websocket_id in stream.sessions, what="the session")
        bad = [
            {"event": "media", "media": {"payload": "not base64!!"}},
            {"event": "media", "media": {"payload": 42}},
            {"event": "media", "media": "AAAA"},
            {"event": "media"},
        ]
        for message in bad:
            since = len(client.other)
            await client.send(message)
            error = await client.next_other(since)
            assert (error["type"], error["code"]) == ("error", "bad_media"), message
        since = len(client.other)
        await client.send({"event": "dance"})
        assert (await client.next_other(since))["code"] == "unknown_message"
        await client.stream(silence_s(0.1))
        await client.send({"event": "stop"})
        await client.wait_until(lambda: client.closed)
    assert len(client.other) == len(bad) + 1  # the valid media drew no error
    assert client.logs == ["stopped"]
    assert client.close_code == 1000

    async with connect(server.ws_url("/websocket/offer")) as ws:  # media before start
        await ws.send(json.dumps({"event": "media", "media": {"payload": ""}}))
        error = json.loads(await ws.recv())
    assert (error["type"], error["code"]) == ("error", "not_started")


async def test_over_capacity_says_failed_as_fastrtc_does(serve: Serve) -> None:
    """At the concurrency limit a FastRTC client gets `{"status": "failed", ...}` and close 1013; once
    the first client stops, a new one gets a session."""
    stream = Stream(Silent(), concurrency_limit=1)
    server = await serve(stream)
    url = server.ws_url("/websocket/offer")
    async with FastRTCClient(url) as first:
        await wait_for_server(lambda: first.websocket_id in stream.sessions, what="the first session")
        async with FastRTCClient(url) as second:
            await second.wait_until(lambda: second.closed)
        assert second.other[0] == {
            "status": "failed",
            "meta": {"error": "concurrency_limit_reached", "limit": 1},
        }
        assert second.close_code == 1013
        assert list(stream.sessions) == [first.websocket_id]
        await first.send({"event": "stop"})
        await first.wait_until(lambda: first.closed)
    async with FastRTCClient(url) as third:
        await wait_for_server(lambda: list(stream.sessions) == [third.websocket_id], what="a new session")
