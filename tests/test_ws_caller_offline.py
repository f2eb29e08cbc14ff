"""`agentkit.testing.WebSocketCaller` against a tiny scripted server that speaks the native protocol.

Pacing is checked on a virtual clock (exact schedule); one real-time test only uses generous bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agentkit.audio import AudioFrame, float_to_pcm16, pcm16_to_float, read_wav, write_wav
from agentkit.testing import (
    CallRefusedError,
    WebSocketCaller,
    concat,
    rms_dbfs,
    silence,
    speech_bounds,
    tone,
)

RATE = 16000
FRAME_BYTES = 2 * RATE // 50  # 20 ms of s16le


class VirtualClock:
    """A clock that only moves when slept on or set; sleeping never waits for real."""

    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep_until(self, deadline: float) -> None:
        self.t = max(self.t, deadline)
        await asyncio.sleep(0)


@dataclass
class ScriptedServer:
    """The server side of the protocol, reduced to what the caller's tests need."""

    url: str = ""
    echo: bool = True
    received_frames: list[bytes] = field(default_factory=list)

    async def handle(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._serve(ws)

    async def _serve(self, ws: ServerConnection) -> None:
        rate = 0
        async for message in ws:
            if isinstance(message, bytes):
                self.received_frames.append(message)
                if self.echo:
                    await ws.send(message)
                continue
            try:
                msg: dict[str, Any] = json.loads(message)
            except ValueError:
                await ws.send(
                    json.dumps({"type": "error", "code": "bad_json", "message": "x", "fatal": False})
                )
                continue
            kind = msg.get("type")
            if kind == "start":
                if msg.get("args") == ["refuse"]:
                    await ws.send(
                        json.dumps({"type": "error", "code": "over_capacity", "message": "x", "fatal": True})
                    )
                    await ws.close(1013, "over capacity")
                    return
                rate = int(msg["sample_rate"])
                started = {
                    "type": "started",
                    "session_id": msg.get("session_id", "s-1"),
                    "input_sample_rate": rate,
                    "output_sample_rate": rate,
                    "encoding": "pcm_s16le",
                    "frame_ms": 20,
                }
                await ws.send(json.dumps(started))
            elif kind == "ping":
                await ws.send(json.dumps({"type": "pong", "id": msg.get("id")}))
            elif kind == "input" and msg["args"][0] == "burst":  # reply audio far ahead of real time
                samples = tone(440.0, float(msg["args"][1]), rate).samples
                for i in range(0, samples.shape[0], rate // 50):
                    await ws.send(float_to_pcm16(samples[i : i + rate // 50]))
                await ws.send(json.dumps({"type": "response_done"}))
            elif kind == "input" and msg["args"][0] == "interrupt":
                await ws.send(json.dumps({"type": "interrupted", "clear": True}))
            elif kind == "stop":
                await ws.send(json.dumps({"type": "stopped", "reason": "client_stop"}))
                await ws.close(1000)
                return


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    script = ScriptedServer()
    async with serve(script.handle, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        script.url = f"ws://127.0.0.1:{port}/ws"
        yield script


# ---------------------------------------------------------------------- signals


def test_speech_bounds_on_block_aligned_tone() -> None:
    frame = concat(silence(0.3, RATE), tone(440.0, 1.0, RATE), silence(0.5, RATE))
    assert frame.sample_rate == RATE
    assert frame.num_samples == round(1.8 * RATE)
    assert speech_bounds(frame.samples, RATE) == pytest.approx((0.3, 1.3))


def test_speech_bounds_round_outwards_to_10ms_blocks() -> None:
    frame = concat(silence(0.305, RATE), tone(440.0, 1.0, RATE), silence(0.5, RATE))
    assert speech_bounds(frame.samples, RATE) == pytest.approx((0.30, 1.31))


def test_speech_bounds_threshold() -> None:
    quiet = concat(silence(0.2, RATE), tone(440.0, 0.5, RATE, amplitude=0.001), silence(0.2, RATE))
    assert rms_dbfs(quiet.samples[round(0.2 * RATE) : round(0.7 * RATE)]) == pytest.approx(-63.0, abs=0.1)
    assert speech_bounds(quiet.samples, RATE) is None
    assert speech_bounds(quiet.samples, RATE, dbfs=-70.0) == pytest.approx((0.2, 0.7))


def test_rms_dbfs() -> None:
    assert rms_dbfs(tone(1000.0, 1.0, RATE, amplitude=0.5).samples) == pytest.approx(-9.03, abs=0.01)
    assert rms_dbfs(silence(0.1, RATE).samples) < -200.0
    assert rms_dbfs(np.zeros(0, dtype=np.float32)) < -200.0


# ---------------------------------------------------------------------- session lifecycle


async def test_start_ping_stop(server: ScriptedServer) -> None:
    async with WebSocketCaller(server.url, sample_rate=RATE, session_id="abc", open_timeout=5) as caller:
        assert caller.started is not None
        assert caller.session_id == "abc"
        assert caller.output_sample_rate == RATE
        rtt_s = await caller.ping()
        assert 0.0 <= rtt_s < 5.0
        stopped = await caller.stop()
        assert stopped.data == {"type": "stopped", "reason": "client_stop"}
        assert caller.close_code == 1000
        assert caller.closed
        assert [e.type for e in caller.events] == ["started", "pong", "stopped"]
        assert caller.protocol_violations == []


async def test_refused_start_raises_with_codes(server: ScriptedServer) -> None:
    with pytest.raises(CallRefusedError) as refused:
        async with WebSocketCaller(server.url, start_args=["refuse"], open_timeout=5):
            pytest.fail("the session should not start")
    assert refused.value.error_code == "over_capacity"
    assert refused.value.close_code == 1013
    assert refused.value.retryable


async def test_bad_input_is_recorded_and_session_stays_usable(server: ScriptedServer) -> None:
    async with WebSocketCaller(server.url, open_timeout=5) as caller:
        await caller.send_raw("{not json")
        error = await caller.wait_for_event("error", 5.0)
        assert error.data["code"] == "bad_json"
        assert error.data["fatal"] is False
        await caller.ping()
        with pytest.raises(TimeoutError):
            await caller.wait_for_event("never_sent", 0.05)


async def test_wait_fails_fast_once_closed(server: ScriptedServer) -> None:
    async with WebSocketCaller(server.url, open_timeout=5) as caller:
        await caller.stop()
        with pytest.raises(ConnectionError):
            await caller.wait_for_audio(5.0)


# ---------------------------------------------------------------------- pacing


async def test_play_follows_the_absolute_schedule(server: ScriptedServer) -> None:
    clock = VirtualClock(100.0)
    audio = tone(440.0, 0.5, RATE)
    async with WebSocketCaller(server.url, sample_rate=RATE, clock=clock, open_timeout=5) as caller:
        result = await caller.play(audio, lead_silence_s=0.2, tail_silence_s=0.3)
        await caller.ping()  # the server has answered everything sent before it

        assert result.completed
        assert result.frames_sent == 50
        assert result.frame_sent_t == pytest.approx([100.0 + 0.02 * (i + 1) for i in range(50)])
        assert result.start_t == pytest.approx(100.0)
        assert result.end_t == pytest.approx(101.0)
        assert result.speech_start_t == pytest.approx(100.2)
        assert result.speech_end_t == pytest.approx(100.7)
        assert result.max_lateness_s == 0.0
        assert [len(f) for f in server.received_frames] == [FRAME_BYTES] * 50

        # the echo is recorded in order, at the clock's time of receipt, and decodes to what was sent
        assert len(caller.audio_chunks) == 50
        sent = pcm16_to_float(float_to_pcm16(concat(silence(0.2, RATE), audio, silence(0.3, RATE)).samples))
        np.testing.assert_array_equal(caller.received_audio().samples, sent)
        assert all(100.0 < c.t <= 101.0 for c in caller.audio_chunks)
        assert caller.first_audio_after(100.5) == pytest.approx(100.5, abs=0.021)

        # back to back: the schedule carries on where it stopped
        more = await caller.send_silence(0.1)
        assert more.frame_sent_t == pytest.approx([101.02, 101.04, 101.06, 101.08, 101.10])
        assert more.speech_start_t is None

        # after idling, the schedule restarts from now instead of bursting to catch up
        clock.t = 105.0
        later = await caller.send_silence(0.04)
        assert later.frame_sent_t == pytest.approx([105.02, 105.04])


async def test_play_pads_the_last_frame_and_resamples(server: ScriptedServer, tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    write_wav(path, concat(silence(0.1, 22050), tone(300.0, 0.4, 22050)))
    wav = read_wav(path)
    assert wav.sample_rate == 22050
    clock = VirtualClock(0.0)
    async with WebSocketCaller(server.url, sample_rate=RATE, clock=clock, open_timeout=5) as caller:
        result = await caller.play(wav, lead_silence_s=0.0, tail_silence_s=0.01)
        await caller.ping()
    # 0.5 s at 16 kHz plus 10 ms of tail: 26 frames, the last one zero-padded
    assert result.frames_sent == 26
    assert [len(f) for f in server.received_frames] == [FRAME_BYTES] * 26
    assert result.speech_start_t == pytest.approx(0.1, abs=0.011)
    assert result.speech_end_t == pytest.approx(0.5, abs=0.011)


async def test_play_not_realtime_sends_back_to_back(server: ScriptedServer) -> None:
    clock = VirtualClock(7.0)
    async with WebSocketCaller(server.url, sample_rate=RATE, clock=clock, open_timeout=5) as caller:
        result = await caller.play(
            tone(440.0, 0.2, RATE), lead_silence_s=0.1, tail_silence_s=0.0, realtime=False
        )
    assert result.frames_sent == 15
    assert set(result.frame_sent_t) == {7.0}
    assert result.speech_start_t == 7.0
    assert result.speech_end_t == 7.0


async def test_realtime_pacing_on_the_real_clock(server: ScriptedServer) -> None:
    server.echo = False
    async with WebSocketCaller(server.url, sample_rate=RATE, open_timeout=5) as caller:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await caller.play(silence(0.3, RATE), lead_silence_s=0.0, tail_silence_s=0.0)
        elapsed_s = loop.time() - t0
    assert result.frames_sent == 15
    assert 0.28 <= elapsed_s < 2.0  # generous: paced, not sent at once
    gaps = np.diff(np.asarray(result.frame_sent_t))
    assert (gaps > 0).all()
    assert result.max_lateness_s < 1.0


# ---------------------------------------------------------------------- playback emulation


async def test_clear_truncates_heard_audio(server: ScriptedServer) -> None:
    clock = VirtualClock(50.0)
    async with WebSocketCaller(server.url, sample_rate=RATE, clock=clock, open_timeout=5) as caller:
        await caller.send_input("burst", 1.0)
        await caller.wait_for_event("response_done", 5.0)
        assert len(caller.audio_chunks) == 50
        assert caller.playout_end_t == pytest.approx(51.0)
        assert caller.audio_chunks[10].play_start_t == pytest.approx(50.2)
        assert caller.heard_audio(at_t=50.1).num_samples == 1600

        clock.t = 50.3
        since = len(caller.events)
        await caller.send_input("interrupt")
        interrupted = await caller.wait_for_event("interrupted", 5.0, since=since)
        assert interrupted.t == 50.3

        heard = caller.heard_audio(at_t=1000.0)
        assert heard.num_samples == round(0.3 * RATE)
        np.testing.assert_array_equal(heard.samples, caller.received_audio().samples[: heard.num_samples])
        assert caller.heard_audio().num_samples == heard.num_samples
        assert caller.received_audio().num_samples == RATE
        assert caller.dropped_audio_s == pytest.approx(0.7)

        # a reply after the clear plays from its arrival
        since = len(caller.events)
        await caller.send_input("burst", 0.2)
        await caller.wait_for_event("response_done", 5.0, since=since)
        assert caller.playout_end_t == pytest.approx(50.5)
        assert caller.heard_audio(at_t=1000.0).num_samples == round(0.5 * RATE)
        assert caller.heard_audio(at_t=50.4).num_samples == round(0.4 * RATE)
        assert caller.protocol_violations == []


def test_signal_helpers_return_frames() -> None:
    assert math.isclose(tone(100.0, 0.25, 8000).duration_s, 0.25)
    assert isinstance(silence(0.01, 8000), AudioFrame)
    with pytest.raises(ValueError, match="amplitude"):
        tone(100.0, 0.1, 8000, amplitude=2.0)
