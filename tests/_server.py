"""What the transport tests share: a real server on a free loopback port, and an echo to check.

`live_server(stream)` serves `create_app(stream)` with uvicorn inside the test's event loop for the
length of an `async with` block; `wait_for(condition)` waits for server-side state that sends no
message; `echo_stream()` and `envelope_correlation()` build and judge an end-to-end echo; `Silent` is a
handler that never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import uvicorn

from agentkit import AsyncStreamHandler, AudioFrame, ReplyOnPause, Stream
from agentkit._tasks import cancel_and_wait
from agentkit.server import create_app, uvicorn_options
from agentkit.stream import EmitType, TurnTakingOptions

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 15.0


@dataclass
class LiveServer:
    """One running uvicorn server with its stream; `stop()` shuts it down like Ctrl-C would."""

    stream: Stream
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        """Graceful shutdown: uvicorn closes open connections, then runs the app's lifespan shutdown."""
        self.server.should_exit = True
        if not self.task.done():
            await asyncio.wait_for(asyncio.shield(self.task), _STOP_TIMEOUT_S)
        self.task.result()  # re-raise a crash of the server itself


@contextlib.asynccontextmanager
async def live_server(
    stream: Stream, *, ws: str | None = None, **app_options: Any
) -> AsyncIterator[LiveServer]:
    """Serve `create_app(stream, **app_options)` on 127.0.0.1 (a free port) until the block ends;
    `ws`: uvicorn's WebSocket implementation, if not agentkit's (`uvicorn_options`)."""
    app = create_app(stream, **app_options)
    options = uvicorn_options(app)
    if ws is not None:
        options["ws"] = ws
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        log_config=None,  # leave global logging alone: records reach pytest's caplog through the root
        lifespan="on",
        **options,  # as `agentkit run` serves it: ws_max_size from the stream's limit
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        async with asyncio.timeout(_START_TIMEOUT_S):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.01)
        port = int(server.servers[0].sockets[0].getsockname()[1])
        live = LiveServer(stream=stream, server=server, task=task, port=port)
        yield live
    finally:
        server.should_exit = True
        if not task.done():
            try:
                await asyncio.wait_for(task, _STOP_TIMEOUT_S)
            except TimeoutError:
                server.force_exit = True
                await cancel_and_wait(task, _STOP_TIMEOUT_S)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 3.0, what: str = "condition") -> None:
    """Poll server-side state that has no event of its own (e.g. a session being forgotten)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not condition():  # noqa: ASYNC110 - server-side state, with no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {timeout_s} s") from None


class Silent(AsyncStreamHandler):
    """Takes the caller's audio and never answers: for protocol tests that need no model."""

    def copy(self) -> Silent:
        return Silent()

    async def receive(self, frame: AudioFrame) -> None:
        pass

    async def emit(self) -> EmitType:
        await asyncio.sleep(3600)  # cancelled when the session closes
        return None


FAST = TurnTakingOptions(end_of_turn_silence_ms=300)
"""Turn-taking for the echo tests: a short end-of-turn silence keeps them quick."""


def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
    """The caller's turn, played back."""
    yield audio


def echo_stream(**stream_options: Any) -> Stream:
    return Stream(ReplyOnPause(echo, options=FAST), **stream_options)


def expected_echo_s(speech_span_s: float) -> float:
    """Length of the echo of a turn whose speech lasts `speech_span_s`: the turn keeps pre-roll and tail."""
    return speech_span_s + (FAST.pre_roll_ms + FAST.trailing_ms) / 1000


def _envelope(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS per 10 ms block: a 100 Hz envelope, whatever the audio's own rate."""
    hop = sample_rate // 100
    n = samples.shape[0] // hop
    blocks = np.asarray(samples[: n * hop], dtype=np.float64).reshape(n, hop)
    return np.sqrt(np.mean(blocks * blocks, axis=1))


def envelope_correlation(sent: AudioFrame, received: AudioFrame, max_lag_s: float = 1.0) -> float:
    """Best Pearson correlation of the two signals' 100 Hz RMS envelopes over lags within `max_lag_s`."""
    a = _envelope(sent.samples, sent.sample_rate)
    b = _envelope(received.samples, received.sample_rate)
    best = -1.0
    for lag in range(-round(max_lag_s * 100), round(max_lag_s * 100) + 1):
        x, y = (a[lag:], b) if lag >= 0 else (a, b[-lag:])
        n = min(x.shape[0], y.shape[0])
        if n < 50 or np.std(x[:n]) == 0 or np.std(y[:n]) == 0:
            continue
        best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


async def offer_sdp(*, audio: bool = True) -> str:
    """A real aiortc offer (audio and a data channel, or a data channel only) from a peer closed at
    once: it never connects. Its candidates are what `loopback_ice` allows where that is on."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.createDataChannel("events")
        if audio:
            pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()
