"""No unauthenticated exhaustion: what one client can hold of a server, and what it costs the server.

- per client address: at most `max_sessions_per_address` sessions (WebSocket and WebRTC together)
  and `max_pending_offers_per_address` answered WebRTC offers that have not connected;
- a session that sends no audio for `no_audio_timeout_s` is closed (`no_audio`, close 1008), and an
  answered offer that never connects is dropped after the WebRTC connect timeout;
- uvicorn caps a WebSocket message at the stream's limit while inflating it (`uvicorn_options`), so a
  compressed 16 MiB message costs the server no more than the limit;
- every refusal is counted by reason in `/healthz`.

Every server here is on 127.0.0.1 (loopback is not exempt from the caps: the tests set them), the
timeouts are shortened, and the load is a handful of connections.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _server import LiveServer, Silent, live_server, offer_sdp, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agentkit import Stream
from agentkit.server import uvicorn_options
from agentkit.testing import CallRefusedError, WebRTCCaller, WebSocketCaller, loopback_ice
from agentkit.transports.webrtc import WebRTCConnection

pytestmark = pytest.mark.slow

LIMIT_BYTES = 64 * 1024  # the default `max_message_bytes`


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    with loopback_ice():  # WebRTC peers here gather 127.0.0.1 only
        yield


async def refused(server: LiveServer) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        health = (await http.get("/healthz")).json()
    counts: dict[str, int] = health["refused"]
    return counts


# -- per-address caps ----------------------------------------------------------------------------


async def test_the_per_address_cap_refuses_beyond_n_and_accepts_again_once_one_ends() -> None:
    """With 2 sessions per address, a third from the same address is refused on every endpoint: a fatal
    `too_many_sessions` error and close 1013 on the WebSockets, 429 on WebRTC. Once one session ends,
    the address may open another. The refusals are counted in `/healthz`."""
    stream = Stream(Silent())
    async with (
        live_server(stream, max_sessions_per_address=2) as server,
        WebSocketCaller(server.ws_url()) as first,
        WebSocketCaller(server.ws_url()),
    ):
        with pytest.raises(CallRefusedError) as native:
            async with WebSocketCaller(server.ws_url()):
                pass
        assert (native.value.error_code, native.value.close_code) == ("too_many_sessions", 1013)
        assert native.value.retryable
        async with connect(server.ws_url("/websocket/offer")) as fastrtc:
            await fastrtc.send(json.dumps({"event": "start"}))
            failed, error = json.loads(await fastrtc.recv()), json.loads(await fastrtc.recv())
            assert failed["meta"]["error"] == "concurrency_limit_reached"  # as FastRTC says it
            assert error["code"] == "too_many_sessions"
            with pytest.raises(ConnectionClosed) as closed:
                await fastrtc.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            offer = await http.post("/webrtc/offer", json={"type": "offer", "sdp": await offer_sdp()})
        assert (offer.status_code, offer.json()["error"]) == (429, "too_many_sessions")
        assert len(stream.sessions) == 2
        assert (await refused(server))["too_many_sessions"] == 3

        await first.stop()
        await wait_for(lambda: len(stream.sessions) == 1, what="the first session to end")
        async with WebSocketCaller(server.ws_url()) as again:
            assert again.session_id in stream.sessions
            await again.stop()
        counts = await refused(server)
    assert counts["too_many_sessions"] == 3 and counts["over_capacity"] == 0


async def test_unconnected_offers_are_capped_per_address_and_free_their_slot_at_the_connect_timeout() -> None:
    """Offers whose peer never connects: beyond 2 pending from one address the next gets 429
    `too_many_pending_offers` (JSON); each answered one is dropped after the (shortened) connect
    timeout, which frees both its pending-offer and its session slot."""
    stream = Stream(Silent())
    options: dict[str, Any] = {"max_pending_offers_per_address": 2, "webrtc_connect_timeout_s": 1.5}
    sdps = [await offer_sdp() for _ in range(4)]
    async with live_server(stream, **options) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        answers = [await http.post("/webrtc/offer", json={"type": "offer", "sdp": sdp}) for sdp in sdps[:3]]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[2].json()["error"] == "too_many_pending_offers"
        assert "at most 2" in answers[2].json()["message"]
        assert len(stream.sessions) == 2

        await wait_for(lambda: not stream.sessions, timeout_s=5, what="the unconnected offers to time out")
        late = await http.post("/webrtc/offer", json={"type": "offer", "sdp": sdps[3]})
        assert late.status_code == 200
        counts = await refused(server)
        assert (counts["too_many_pending_offers"], counts["connect_timeout"]) == (1, 2)


# -- sessions that send no audio -----------------------------------------------------------------


async def test_an_idle_websocket_session_is_closed_after_the_no_audio_timeout() -> None:
    """`start` and then nothing: a fatal `no_audio` error, `stopped` (no_audio) and close 1008 after
    the (shortened) timeout. A caller that keeps sending audio, silence included, stays."""
    stream = Stream(Silent(), no_audio_timeout_s=0.6)
    async with live_server(stream) as server:
        async with WebSocketCaller(server.ws_url()) as idle, WebSocketCaller(server.ws_url()) as talking:
            await talking.send_silence(1.5)  # well past the timeout, in 20 ms frames
            await talking.ping()
            await talking.stop()
            assert await idle.wait_closed(timeout_s=1) == 1008  # closed while the other one talked
        assert [e.type for e in idle.events] == ["started", "error", "stopped"]
        error, stopped = idle.events[1:]
        assert (error.data["code"], error.data["fatal"], stopped.data["reason"]) == (
            "no_audio",
            True,
            "no_audio",
        )
        assert idle.started is not None and 0.5 <= error.t - idle.started.t < 2.0
        await wait_for(lambda: not stream.sessions, what="the sessions to end")
        assert (await refused(server))["no_audio"] == 1


async def test_a_connected_webrtc_peer_that_sends_no_audio_is_closed() -> None:
    """The same watchdog serves WebRTC: once the caller's microphone stops, the server sends `error`
    (no_audio) and `stopped` (no_audio) on the data channel and ends the peer connection."""
    stream = Stream(Silent(), no_audio_timeout_s=0.8)
    async with live_server(stream) as server, WebRTCCaller(server.http_url) as caller:
        (session,) = stream.sessions.values()
        connection = session.transport
        assert isinstance(connection, WebRTCConnection)
        caller.microphone.stop()  # no more RTP from the caller
        stopped = await caller.wait_for_event("stopped", timeout_s=5)
        assert stopped.data["reason"] == "no_audio"
        assert [e.data["code"] for e in caller.events_of("error")] == ["no_audio"]
        await wait_for(lambda: not stream.sessions, what="the session to end")
        assert connection.end_reason == "no_audio" and session.stop_reason == "no_audio"
        assert (await refused(server))["no_audio"] == 1


# -- a compressed message far over the limit -----------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _zeros_deflated(num_bytes: int, wbits: int) -> bytes:
    """`num_bytes` zeros as one permessage-deflate payload (RFC 7692), built 1 MiB at a time."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    block = bytes(1 << 20)
    parts = [compressor.compress(block) for _ in range(num_bytes >> 20)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    payload = b"".join(parts)
    assert payload.endswith(b"\x00\x00\xff\xff")
    return payload[:-4]


async def _send_bomb(port: int, payload: bytes) -> int:
    """Open `/ws` with permessage-deflate by hand, send `payload` as one compressed binary message and
    return the close code the server answers with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
            ).encode()
        )
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode().lower()
        assert head.startswith("http/1.1 101") and "permessage-deflate" in head, head
        # FIN + RSV1 (compressed) + binary; masked with a zero key (valid, and the payload stays as is)
        header = bytes([0xC2, 0x80 | 127]) + len(payload).to_bytes(8, "big") + bytes(4)
        writer.write(header + payload)
        await writer.drain()
        while True:  # the server's frames are unmasked and short; skip any before its close frame
            first, second = await asyncio.wait_for(reader.readexactly(2), 5)
            size = second & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2), "big")
            body = await reader.readexactly(size)
            if first & 0x0F == 0x8:
                return int.from_bytes(body[:2], "big")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the RSS from /proc")
async def test_a_compressed_16_mib_message_is_refused_at_the_limit_without_being_inflated() -> None:
    """16 MiB of zeros are 16 KB on the wire with permessage-deflate. The live server (served with
    `uvicorn_options`, as `agentkit run` serves) stops inflating at the stream's limit and closes with
    1009: twelve such messages at once cost it no more than a few MB, not 12 x 16 MiB."""
    stream = Stream(Silent())
    payload = _zeros_deflated(16 << 20, wbits=12)  # the server offers client_max_window_bits=12
    assert len(payload) < 20_000
    async with live_server(stream) as server:
        assert server.server.config.ws_max_size == uvicorn_options(server.server.config.app)["ws_max_size"]
        assert LIMIT_BYTES < server.server.config.ws_max_size <= LIMIT_BYTES + 4096
        assert await _send_bomb(server.port, payload) == 1009  # warms up the code paths
        before = _rss_bytes()
        codes = await asyncio.gather(*(_send_bomb(server.port, payload) for _ in range(12)))
        grown_mb = (_rss_bytes() - before) / 1e6
        assert codes == [1009] * 12
        assert grown_mb < 8, f"RSS grew by {grown_mb:.1f} MB"
        # each connection's handler learns of the 1009 close after uvicorn sent it
        await wait_for(lambda: stream.refused["message_too_large"] == 13, what="the refusals counted")
        assert (await refused(server))["message_too_large"] == 13
        assert not stream.sessions


# -- `agentkit run` serves with the same options -------------------------------------------------


_AGENT_FILE = """
from agentkit import AsyncStreamHandler, Stream


class Quiet(AsyncStreamHandler):
    def copy(self):
        return Quiet()

    async def receive(self, frame):
        pass

    async def emit(self):
        return None


stream = Stream(Quiet(), max_message_bytes=8192)
"""


def test_agentkit_run_passes_the_streams_message_limit_to_uvicorn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Served directly, uvicorn gets `ws_max_size` from the app's stream (8 KiB + slack) and no proxy
    headers; under --reload (the app is built in the worker) the default limit, and the worker warns
    when the app's streams accept more than that."""
    import uvicorn

    from agentkit import _serve
    from agentkit.cli import _factory, main

    agent = tmp_path / "small_messages.py"
    agent.write_text(_AGENT_FILE)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))  # --reload
    monkeypatch.setattr(_serve, "serve", lambda app, sock, on_started, **options: calls.append(options))
    monkeypatch.setenv("AGENTKIT_RUN_FILE", "")  # `--reload` sets it; restored after the test
    assert main(["run", str(agent), "--port", "0"]) == 0
    assert main(["run", str(agent), "--reload", "--port", "0"]) == 0
    direct, reloading = calls
    assert (direct["ws_max_size"], direct["proxy_headers"]) == (8192 + 1024, False)
    assert (reloading["ws_max_size"], reloading["proxy_headers"]) == (LIMIT_BYTES + 1024, False)

    big = tmp_path / "big_messages.py"
    big.write_text(_AGENT_FILE.replace("8192", "1 << 20"))
    monkeypatch.setenv("AGENTKIT_RUN_FILE", str(big))
    _factory()
    assert any("--reload" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
