"""The WebRTC transport against real aiortc peers: offer/answer over HTTP, Opus audio both ways,
events on the data channel, barge-in, cleanup, refusals.

Networking: every peer here stays on loopback. aioice normally leaves 127.0.0.1 out of its host
candidates, so the autouse fixture `_loopback_only` (agentkit.testing's `loopback_ice`) makes aioice
gather 127.0.0.1 and nothing else, for the client and the in-process server alike, for the length of
each test. No STUN or TURN server is configured on either side (`iceServers: []`), so nothing outside
the machine is ever contacted.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Iterator
from typing import Any

import av
import httpx
import numpy as np
import pytest
from _server import (
    FAST,
    Silent,
    echo_stream,
    envelope_correlation,
    expected_echo_s,
    live_server,
    offer_sdp,
    wait_for,
)
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from conftest import speech

from agentkit import Agent, Stream
from agentkit.clock import FastForwardClock
from agentkit.exceptions import AudioFormatError
from agentkit.testing import (
    CallRefusedError,
    ScriptedLLM,
    ScriptedSTT,
    ToneTTS,
    WebRTCCaller,
    loopback_ice,
    rms_dbfs,
    speech_bounds,
)
from agentkit.transports.webrtc import (
    OutgoingAudioTrack,
    WebRTCConnection,
    WebRTCPeers,
    frame_to_mono_pcm16,
    resolve_rtc_configuration,
)

pytestmark = pytest.mark.slow

RATE = 48000


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    with loopback_ice():
        yield


def connection_of(stream: Stream) -> WebRTCConnection:
    (session,) = stream.sessions.values()
    assert isinstance(session.transport, WebRTCConnection)
    return session.transport


def peers_of(server: Any) -> WebRTCPeers:
    peers = server.server.config.app.state.webrtc_peers
    assert isinstance(peers, WebRTCPeers)
    return peers


async def post_offer(server: Any, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        if isinstance(body, str):
            return await http.post(
                "/webrtc/offer", content=body, headers={"content-type": "application/json"}
            )
        return await http.post("/webrtc/offer", json=body)


# -- a conversation ------------------------------------------------------------------------------


async def test_echo_over_webrtc() -> None:
    """The caller's utterance comes back whole over Opus, after its turn ends, with events and states."""
    utterance = speech("utt2", RATE)
    start_s, end_s = speech_bounds(utterance.samples, RATE) or (0.0, 0.0)
    async with live_server(echo_stream()) as server, WebRTCCaller(server.http_url) as caller:
        assert connection_of(server.stream).session is not None
        speech_end_t = await caller.play(utterance, tail_silence_s=0.6)
        assert speech_end_t is not None
        first_reply_t = await caller.wait_for_audio_after(speech_end_t, timeout_s=5)
        done = await caller.wait_for_event("response_done", timeout_s=10)
        await caller.wait_for_audio_after(done.t + 0.3, timeout_s=3, dbfs=None)  # the tail is through
        (buffer,) = connection_of(server.stream).receive_buffers  # aiortc's receiver hands packets to it
        assert buffer.received_packets > 50 and buffer.late_packets == 0
    reply = caller.received_audio(speech_end_t)
    bounds = speech_bounds(reply.samples, RATE)
    assert bounds is not None
    assert bounds[1] - bounds[0] == pytest.approx(end_s - start_s, abs=0.2)
    assert rms_dbfs(reply.samples) > -40
    assert envelope_correlation(utterance, reply, max_lag_s=3.0) > 0.8
    assert done.data["audio_ms"] / 1000 == pytest.approx(expected_echo_s(end_s - start_s), abs=0.3)
    assert first_reply_t > speech_end_t + FAST.end_of_turn_silence_ms / 1000
    kinds = [e.type for e in caller.events if e.type != "state"]
    assert kinds == ["started_talking", "pause_detected", "response_starting", "response_done"]
    states = [e.data["state"] for e in caller.events_of("state")]
    assert states[:4] == ["listening", "thinking", "speaking", "listening"]


class Served(Agent):
    turn_taking = FAST
    semantic_turn = None  # turns end on silence: these tests play short silent tails
    greeting = "Welcome."


async def test_agent_events_on_the_data_channel() -> None:
    """Transcripts and metrics of an Agent reach the caller; the greeting's events wait for the channel."""
    agent = Served(stt=ScriptedSTT("Book a table."), llm=ScriptedLLM("Booked."), tts=ToneTTS(ms_per_char=10))
    async with (
        live_server(Stream(agent)) as server,
        WebRTCCaller(server.http_url, caller="guest-7", session_id="call-7") as caller,
    ):
        assert caller.session_id == "call-7"
        session = server.stream.sessions["call-7"]
        assert (session.channel, session.caller) == ("webrtc", None)  # a plain `caller` is a label
        assert dict(session.call_info) == {"caller_label": "guest-7"}
        await caller.wait_for_event("response_done", timeout_s=10)  # the greeting
        await caller.play(speech("utt2", RATE), tail_silence_s=0.6)
        metrics = await caller.wait_for_event("metrics", timeout_s=10)
        caller.send_json({"type": "stop"})
        stopped = await caller.wait_for_event("stopped", timeout_s=5)
        await wait_for(lambda: not server.stream.sessions, what="the session closing")
    transcripts = [(e.data["role"], e.data["text"]) for e in caller.events_of("transcript")]
    assert transcripts == [("assistant", "Welcome."), ("user", "Book a table."), ("assistant", "Booked.")]
    assert metrics.data["turn_index"] == 0 and metrics.data["metrics"]["voice_to_voice_ms"] > 0
    assert stopped.data["reason"] == "client_stop"


async def test_barge_in_empties_the_outgoing_queue() -> None:
    """Speaking over the reply interrupts it: the track's queue is emptied at once and the reply stops."""
    async with live_server(echo_stream()) as server, WebRTCCaller(server.http_url) as caller:
        connection = connection_of(server.stream)
        await caller.play(speech("utt2", RATE), tail_silence_s=0.3)
        await caller.wait_for_event("response_starting", timeout_s=5)
        await asyncio.sleep(1.0)  # well into the 3 s reply
        assert connection.state == "speaking" and connection.outgoing.cleared_frames == 0
        since = len(caller.events)
        played = asyncio.create_task(caller.play(speech("utt2", RATE), tail_silence_s=0.4))
        interrupted = await caller.wait_for_event("interrupted", timeout_s=5, since=since)
        assert connection.outgoing.queued_frames == 0
        assert connection.outgoing.cleared_frames > 0
        await played
        quiet = [c for c in caller.audio_chunks if interrupted.t + 0.15 < c.t < interrupted.t + 0.6]
        next_reply = await caller.wait_for_event("response_starting", timeout_s=5, since=since)
    assert interrupted.data["clear"] is True and 800 < interrupted.data["heard_ms"] < 3000
    assert quiet and max(rms_dbfs(c.samples) for c in quiet) < -60
    assert next_reply.t > interrupted.t  # the turn that interrupted is answered


# -- lifecycle -----------------------------------------------------------------------------------


async def test_client_close_ends_the_session() -> None:
    async with live_server(Stream(Silent())) as server:
        peers = peers_of(server)
        async with WebRTCCaller(server.http_url):
            connection = connection_of(server.stream)
            assert len(peers.connections) == 1
        await wait_for(lambda: not server.stream.sessions, timeout_s=10, what="the session closing")
        await wait_for(lambda: not peers.connections, what="the connection task ending")
        assert connection.end_reason in ("closed", "failed", "disconnected")
        assert connection.outgoing.readyState == "ended"
        assert connection.session is not None and not connection.session.tasks


async def test_a_peer_that_never_connects_is_closed() -> None:
    """An offer whose answer is never applied: the server gives up after its connect timeout."""
    stream = Stream(Silent())
    peers = WebRTCPeers(stream, connect_timeout_s=0.5)
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("audio")
        await client.setLocalDescription(await client.createOffer())
        answer = await peers.answer({"type": "offer", "sdp": client.localDescription.sdp})
        assert answer["type"] == "answer" and answer["sdp"].startswith("v=0")
        (connection,) = peers.connections
        assert set(stream.sessions) == {answer["session_id"]}
        await wait_for(lambda: not peers.connections, what="the connect timeout")
        assert connection.end_reason == "connect_timeout" and not stream.sessions
        assert connection.pc is not None and connection.pc.connectionState == "closed"
    finally:
        await client.close()
        await peers.aclose()


async def test_a_client_that_gives_up_frees_the_slot_at_once() -> None:
    """`DELETE /webrtc/sessions/{id}`: the web client's way out of an offer that will not connect,
    before its WebSocket fallback asks for the one slot; unknown ids get 404, other sites 403."""
    allowed = ["https://shop.example"]
    async with live_server(Stream(Silent(), concurrency_limit=1), allowed_origins=allowed) as server:
        answered = await post_offer(server, {"type": "offer", "sdp": await offer_sdp()})
        session_id = answered.json()["session_id"]
        (connection,) = peers_of(server).connections
        assert set(server.stream.sessions) == {session_id}
        path = f"/webrtc/sessions/{session_id}"
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            foreign = await http.delete(path, headers={"origin": "https://evil.example"})
            preflight = await http.options(
                path, headers={"origin": allowed[0], "access-control-request-method": "DELETE"}
            )
            ended = await http.delete(path, headers={"origin": allowed[0]})
            await wait_for(lambda: not server.stream.sessions, what="the session to close")
            again = await http.delete(path)
            async with WebRTCCaller(server.http_url):  # the slot is free: no over_capacity
                pass
    assert (foreign.status_code, foreign.json()["error"]) == (403, "origin_not_allowed")
    assert preflight.status_code == 204 and "DELETE" in preflight.headers["access-control-allow-methods"]
    assert ended.status_code == 204 and ended.headers["access-control-allow-origin"] == allowed[0]
    assert connection.end_reason == "client_cancel"
    assert (again.status_code, again.json()["error"]) == (404, "unknown_session")


async def test_time_limit_and_server_shutdown() -> None:
    async with live_server(Stream(Silent(), time_limit=1.0)) as server:
        async with WebRTCCaller(server.http_url) as caller:
            error = await caller.wait_for_event("error", timeout_s=5)
            stopped = await caller.wait_for_event("stopped", timeout_s=5)
            await wait_for(lambda: not server.stream.sessions, what="the session closing")
        assert (error.data["code"], error.data["fatal"], stopped.data["reason"]) == (
            "time_limit",
            True,
            "time_limit",
        )
        async with WebRTCCaller(server.http_url) as caller:
            peers = peers_of(server)
            await server.stop()
            assert not peers.connections and not server.stream.sessions
        assert caller.events_of("stopped")[-1].data["reason"] == "server_shutdown"


# -- refusals and bad input ------------------------------------------------------------------------


async def test_bad_offers_get_400() -> None:
    async with live_server(Stream(Silent())) as server:
        good = await offer_sdp()
        cases: list[tuple[Any, str]] = [
            ("{not json", "bad_json"),
            ([1, 2], "bad_json"),
            ({"type": "offer"}, "bad_sdp"),
            ({"type": "offer", "sdp": "hello"}, "bad_sdp"),
            ({"type": "answer", "sdp": good}, "bad_offer"),
            ({"type": "offer", "sdp": await offer_sdp(audio=False)}, "no_audio"),
            ({"type": "offer", "sdp": good.replace("opus", "xpus")}, "no_opus"),
            ({"type": "offer", "sdp": good, "session_id": 42}, "bad_offer"),
            ({"type": "offer", "sdp": good, "caller": "x" * 200}, "bad_offer"),
            ({"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 10_000}, "bad_sdp"),
        ]
        for body, code in cases:
            response = await post_offer(server, body)
            assert (response.status_code, response.json()["error"]) == (400, code), body
            assert response.json()["message"]
        broken = good.replace("a=ice-ufrag", "a=ice-xfrag")  # parses, but aiortc refuses it
        response = await post_offer(server, {"type": "offer", "sdp": broken})
        assert (response.status_code, response.json()["error"]) == (400, "bad_sdp")
        assert not server.stream.sessions and not peers_of(server).connections


async def test_offers_from_other_origins_get_403() -> None:
    async with live_server(Stream(Silent()), allowed_origins=["https://shop.example"]) as server:
        body = {"type": "offer", "sdp": await offer_sdp()}
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            foreign = await http.post("/webrtc/offer", json=body, headers={"origin": "https://evil.example"})
            listed = await http.post("/webrtc/offer", json=body, headers={"origin": "https://shop.example"})
        assert (foreign.status_code, foreign.json()["error"]) == (403, "origin_not_allowed")
        assert listed.status_code == 200 and listed.json()["type"] == "answer"
        await peers_of(server).aclose()  # the listed offer's peer never connects
        assert not server.stream.sessions


async def test_over_capacity_gets_503_and_duplicate_id_409() -> None:
    async with live_server(Stream(Silent(), concurrency_limit=1)) as server:
        async with WebRTCCaller(server.http_url, session_id="only"):
            response = await post_offer(server, {"type": "offer", "sdp": await offer_sdp()})
            assert (response.status_code, response.json()["error"]) == (503, "over_capacity")
            with pytest.raises(CallRefusedError) as refused:
                async with WebRTCCaller(server.http_url):
                    pass
            assert refused.value.error_code == "over_capacity"
        await wait_for(lambda: not server.stream.sessions, timeout_s=10, what="the first session closing")
    async with live_server(Stream(Silent())) as server, WebRTCCaller(server.http_url, session_id="same"):
        response = await post_offer(server, {"type": "offer", "sdp": await offer_sdp(), "session_id": "same"})
        assert (response.status_code, response.json()["error"]) == (409, "session_exists")


async def test_ice_configuration_forms() -> None:
    turn = {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "secret"}

    async def short_lived() -> dict[str, Any]:
        return {"iceServers": [turn]}

    assert (await resolve_rtc_configuration(None)).iceServers == []
    assert (await resolve_rtc_configuration(RTCConfiguration())).iceServers == []  # not aiortc's public STUN
    resolved = await resolve_rtc_configuration(short_lived)
    assert resolved.iceServers == [RTCIceServer(urls=turn["urls"], username="u", credential="secret")]
    synced = await resolve_rtc_configuration(lambda: RTCConfiguration([RTCIceServer("stun:127.0.0.1:3478")]))
    assert synced.iceServers == [RTCIceServer("stun:127.0.0.1:3478")]
    async with (
        live_server(Stream(Silent()), client_rtc_configuration=short_lived) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        config = (await http.get("/webrtc/config")).json()
    assert config == {"iceServers": [turn]}
    async with live_server(Stream(Silent())) as server, httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/webrtc/config")).json() == {"iceServers": []}


# -- the media pieces, on virtual time -------------------------------------------------------------


async def test_outgoing_track_paces_fills_silence_and_clears() -> None:
    clock = FastForwardClock()
    track = OutgoingAudioTrack(max_frames=3, clock=clock)
    start_s = clock.now()
    loud = (np.full(960, 1000, dtype="<i2")).tobytes()
    track.put(loud)
    track.put(loud[:100])  # short: padded to a whole frame
    first, second, third = [await track.recv() for _ in range(3)]
    assert [f.pts for f in (first, second, third)] == [0, 960, 1920]
    assert clock.now() - start_s == pytest.approx(0.04, abs=0.01)  # paced on the clock: 20 ms a frame
    assert first.to_ndarray().max() == 1000 and second.to_ndarray()[0, 50:].max() == 0
    assert third.to_ndarray().max() == 0 and track.sent_frames == 2  # nothing queued: silence
    for _ in range(5):
        track.put(loud)
    assert (track.queued_frames, track.dropped_frames) == (3, 2)  # bounded: the oldest went
    assert track.clear() == 3 and track.cleared_frames == 3
    assert (await track.recv()).to_ndarray().max() == 0
    with pytest.raises(AudioFormatError):
        track.put(bytes(1922))
    track.stop()
    assert track.queued_frames == 0


def test_frames_are_downmixed_to_mono() -> None:
    left, right = np.arange(960, dtype=np.int16), np.full(960, -200, dtype=np.int16)
    packed = av.AudioFrame.from_ndarray(
        np.stack([left, right], axis=1).reshape(1, -1), format="s16", layout="stereo"
    )
    planar = av.AudioFrame.from_ndarray(np.stack([left, right]), format="s16p", layout="stereo")
    mono = av.AudioFrame.from_ndarray(left.reshape(1, -1), format="s16", layout="mono")
    expected = ((left.astype(np.int32) + right) // 2).astype("<i2").tobytes()
    assert frame_to_mono_pcm16(packed) == expected == frame_to_mono_pcm16(planar)
    assert frame_to_mono_pcm16(mono) == left.astype("<i2").tobytes()
    floats = av.AudioFrame(format="flt", layout="mono", samples=960)
    floats.time_base = fractions.Fraction(1, RATE)
    with pytest.raises(AudioFormatError):
        frame_to_mono_pcm16(floats)
