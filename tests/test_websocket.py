"""agentkit's native WebSocket protocol at `/ws` (docs/websocket-protocol.md), end to end.

Every test runs a real uvicorn server on loopback inside its own event loop and talks to it with
`WebSocketCaller` in real time: real speech, the real Silero VAD, no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from _server import (
    FAST,
    LiveServer,
    Silent,
    echo_stream,
    envelope_correlation,
    expected_echo_s,
    live_server,
    wait_for,
)
from conftest import speech, speech_bounds_s

from agentkit import AdditionalOutputs, AsyncStreamHandler, AudioFrame, ReplyOnPause, Stream
from agentkit.stream import EmitType, ReplyEnd
from agentkit.testing import CallRefusedError, ReceivedEvent, WebSocketCaller, tone

pytestmark = pytest.mark.slow

Serve = Callable[..., Awaitable[LiveServer]]

RATE = 16000
FRAME_BYTES = 2 * RATE // 50  # 20 ms of 16-bit PCM at 16 kHz


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """`await serve(stream)` starts a live server; every one started is shut down after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(stream: Stream, **app_options: Any) -> LiveServer:
            return await stack.enter_async_context(live_server(stream, **app_options))

        yield start


class EndlessTone(AsyncStreamHandler):
    """Answers the caller's first audio with a tone that never ends (the session paces it out)."""

    def __init__(self) -> None:
        self.heard = asyncio.Event()
        self.shut_down = False

    def copy(self) -> EndlessTone:
        return EndlessTone()

    async def receive(self, frame: AudioFrame) -> None:
        self.heard.set()

    async def emit(self) -> EmitType:
        await self.heard.wait()
        return tone(440, 0.5, 24000, amplitude=0.3)

    async def shutdown(self) -> None:
        self.shut_down = True


class Greeter(AsyncStreamHandler):
    """Speaks first (0.3 s of tone as soon as the session starts) and records what it hears."""

    def __init__(self) -> None:
        self.greeted = False
        self.frames_heard = 0

    def copy(self) -> Greeter:
        return Greeter()

    async def receive(self, frame: AudioFrame) -> None:
        self.frames_heard += 1

    async def emit(self) -> EmitType:
        if not self.greeted:
            self.greeted = True
            return tone(500, 0.3, 24000)
        await asyncio.sleep(3600)
        return None


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


async def wait_for_reply_audio(caller: WebSocketCaller, seconds: float, timeout_s: float = 10.0) -> None:
    """Wait until at least `seconds` of reply audio has arrived."""
    async with asyncio.timeout(timeout_s):
        while sum(c.duration_s for c in caller.audio_chunks) < seconds:
            await caller.wait_for_audio(timeout_s, since=len(caller.audio_chunks))


async def expect_error(caller: WebSocketCaller, message: str | bytes, code: str) -> ReceivedEvent:
    """Send `message`: it must get a non-fatal `code` error, and the connection must still answer a ping."""
    since = len(caller.events)
    await caller.send_raw(message)
    error = await caller.wait_for_event("error", since=since)
    assert (error.data["code"], error.data["fatal"]) == (code, False), (message, error.data)
    assert isinstance(error.data["message"], str) and error.data["message"]
    await caller.ping()
    assert not caller.closed
    return error


def stall_event_loop(seconds: float) -> None:
    """Block the event loop (shared by client and server here), as a heavily loaded server would."""
    time.sleep(seconds)


# -- a conversation ------------------------------------------------------------------------------


async def test_echo_end_to_end(serve: Serve) -> None:
    """A real-time caller's utterance comes back whole at 24 kHz, after its turn ends, paced, with
    every event in order and media times that match the audio sent."""
    server = await serve(echo_stream())
    utterance = speech("utt2")
    start_s, end_s = speech_bounds_s(utterance.samples, RATE)
    async with WebSocketCaller(server.ws_url()) as caller:
        assert caller.started is not None
        assert caller.started.data["output_sample_rate"] == 24000
        assert caller.started.data["input_sample_rate"] == RATE
        assert caller.started.data["frame_ms"] == 20
        played = await caller.play(utterance, lead_silence_s=0.5, tail_silence_s=0.8)
        done = await caller.wait_for_event("response_done", timeout_s=10)
        await caller.stop()

    assert [e.type for e in caller.events] == [
        "started",
        "started_talking",
        "pause_detected",
        "response_starting",
        "response_done",
        "stopped",
    ]
    assert caller.protocol_violations == []
    assert caller.close_code == 1000
    assert server.stream.sessions == {}

    # media times are exact with respect to the audio sent (0.5 s of lead silence)
    talking = caller.events_of("started_talking")[0].data
    paused = caller.events_of("pause_detected")[0].data
    assert abs(talking["t_ms"] - (500 + 1000 * start_s)) < 200
    assert abs(paused["speech_end_ms"] - (500 + 1000 * end_s)) < 150
    assert FAST.end_of_turn_silence_ms <= paused["t_ms"] - paused["speech_end_ms"] <= 400

    # the reply is the utterance: its length, and its envelope
    received = caller.received_audio()
    assert received.sample_rate == 24000
    assert received.duration_s == pytest.approx(expected_echo_s(end_s - start_s), abs=0.3)
    assert done.data["audio_ms"] == pytest.approx(1000 * received.duration_s, abs=1)
    assert envelope_correlation(utterance, received) > 0.8

    # no early reply: it starts after the caller stopped speaking (sanity bound on how long after)
    first = caller.audio_chunks[0]
    assert played.speech_end_t is not None
    assert first.t > played.speech_end_t
    assert first.t - played.speech_end_t < FAST.end_of_turn_silence_ms / 1000 + 1.0
    # paced in real time: never far ahead of the caller's ear (~60 ms by design)
    assert max(c.play_start_t + c.duration_s - c.t for c in caller.audio_chunks) < 0.15
    assert caller.audio_chunks[-1].t - first.t > received.duration_s - 0.2
    assert done.t >= caller.audio_chunks[-1].t


async def test_barge_in_over_the_wire(serve: Serve) -> None:
    """Talking over a long reply stops it: `interrupted` (clear) comes on the onset, no audio of the
    old reply follows, and `heard_ms` matches what the caller's player actually played."""
    replies: list[float] = []

    async def long_tone(audio: AudioFrame) -> AsyncIterator[AudioFrame]:
        replies.append(audio.duration_s)
        if len(replies) > 1:
            return  # the barge-in turn gets an empty reply
        for _ in range(48):  # 24 s in 0.5 s pieces: far longer than the test
            yield tone(300, 0.5, 24000, amplitude=0.3)

    server = await serve(Stream(ReplyOnPause(long_tone, options=FAST)))
    utterance = speech("utt2")
    async with WebSocketCaller(server.ws_url()) as caller:
        await caller.play(utterance, tail_silence_s=0.4)
        await caller.wait_for_event("response_starting", timeout_s=5)
        await wait_for_reply_audio(caller, 1.0)
        barge_in = AudioFrame(utterance.samples[: round(1.5 * RATE)], RATE)
        barge = await caller.play(barge_in, lead_silence_s=0.0, tail_silence_s=0.6)
        interrupted = await caller.wait_for_event("interrupted", timeout_s=5)
        done = await caller.wait_for_event("response_done", timeout_s=10)  # of the empty second reply
        await caller.stop()

    assert interrupted.data["clear"] is True
    talking = caller.events_of("started_talking")
    assert len(talking) == 2 and talking[1].t <= interrupted.t
    assert barge.speech_end_t is not None and interrupted.t < barge.speech_end_t  # on the onset
    assert len(replies) == 2 and done.t > interrupted.t and done.data["audio_ms"] == 0
    assert caller.events_of("response_done") == [done]  # the interrupted reply never "finished"

    # nothing of the old reply arrives after the interruption
    assert [c.t for c in caller.audio_chunks if c.t > interrupted.t] == []
    # heard_ms: what the caller received, less the little the server knows was still buffered
    received_ms = 1000 * sum(c.duration_s for c in caller.audio_chunks)
    heard_ms = interrupted.data["heard_ms"]
    assert received_ms - 100 <= heard_ms <= received_ms
    # the caller's player dropped only its small buffer, and played nothing after the clear
    assert 0.0 <= caller.dropped_audio_s <= 0.1
    heard_s = caller.heard_audio().duration_s
    assert heard_s == pytest.approx(caller.heard_audio(at_t=interrupted.t).duration_s, abs=1e-3)
    assert abs(1000 * heard_s - heard_ms) <= 100


# -- bad input ----------------------------------------------------------------------------------


async def test_malformed_messages_get_non_fatal_errors(serve: Serve) -> None:
    """Messages that are not JSON objects, unknown types, and audio or input before `start` are each
    answered with their error code, and the connection keeps working (a ping gets its pong)."""
    server = await serve(Stream(Silent()))
    async with WebSocketCaller(server.ws_url(), auto_start=False) as caller:
        await expect_error(caller, "{not json", "bad_json")
        await expect_error(caller, "", "bad_json")
        await expect_error(caller, "[1, 2]", "unknown_message")
        await expect_error(caller, '"start"', "unknown_message")
        await expect_error(caller, '{"type": "dance"}', "unknown_message")
        await expect_error(caller, '{"kind": "start"}', "unknown_message")
        await expect_error(caller, bytes(FRAME_BYTES), "not_started")
        await expect_error(caller, '{"type": "input", "args": [1]}', "not_started")
        assert server.stream.sessions == {}
        await caller.start()  # still usable
        await caller.stop()
    assert caller.protocol_violations == []


async def test_bad_start_is_non_fatal_and_a_valid_start_follows(serve: Serve) -> None:
    """Each invalid `start` gets `bad_start` and opens no session; a corrected `start` then works."""
    server = await serve(Stream(Silent()))
    bad_starts: list[dict[str, Any]] = [
        {},
        {"sample_rate": "16000"},
        {"sample_rate": 16000.0},
        {"sample_rate": True},
        {"sample_rate": 100},
        {"sample_rate": 192000},
        {"sample_rate": 96000},  # a valid audio rate, but over the wire's 48 kHz
        {"sample_rate": 16000, "encoding": "opus"},
        {"sample_rate": 16000, "output_sample_rate": 100},
        {"sample_rate": 16000, "output_sample_rate": "24000"},
        {"sample_rate": 16000, "output_sample_rate": 96000},
        {"sample_rate": 16000, "session_id": ""},
        {"sample_rate": 16000, "session_id": "x" * 129},
        {"sample_rate": 16000, "session_id": 42},
        {"sample_rate": 16000, "args": "not a list"},
    ]
    async with WebSocketCaller(server.ws_url(), auto_start=False, output_sample_rate=16000) as caller:
        for fields in bad_starts:
            await expect_error(caller, json.dumps({"type": "start", **fields}), "bad_start")
            assert server.stream.sessions == {}, fields
        started = await caller.start()
        assert started.data["output_sample_rate"] == 16000
        assert list(server.stream.sessions) == [caller.session_id]
        await caller.stop()


async def test_started_session_rejects_bad_messages_and_keeps_going(serve: Serve) -> None:
    """After `start`: a second `start`, odd-length PCM and non-list input args are refused without
    harm, and the next even frame and valid input are accepted."""
    server = await serve(Stream(Silent()))
    async with WebSocketCaller(server.ws_url()) as caller:
        session = server.stream.sessions[caller.session_id or ""]
        await expect_error(caller, json.dumps({"type": "start", "sample_rate": RATE}), "already_started")
        await expect_error(caller, bytes(FRAME_BYTES + 1), "odd_length_pcm")
        await expect_error(caller, '{"type": "input", "args": "x"}', "bad_input")
        await expect_error(caller, '{"type": "input", "args": {"a": 1}}', "bad_input")
        since = len(caller.events)
        await caller.send_raw(bytes(FRAME_BYTES))
        await caller.send_input("prompt", 0.7)
        await caller.ping()
        assert [e.type for e in caller.events[since:]] == ["pong"]  # accepted without complaint
        assert session.latest_args == ("prompt", 0.7)
        assert session.handler.input_sample_rate == RATE
        await caller.stop()
    assert [e.type for e in caller.events].count("started") == 1


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_message_over_the_size_limit_is_fatal(serve: Serve, kind: str) -> None:
    """A message over `max_message_bytes` (text counted as UTF-8 bytes) ends the session with
    `message_too_large` and close 1009; one exactly at the limit is fine."""
    stream = Stream(Silent(), max_message_bytes=4096)
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url()) as caller:
        since = len(caller.events)
        await caller.send_raw(bytes(4096))  # at the limit
        await caller.ping()
        assert [e.type for e in caller.events[since:]] == ["pong"]
        if kind == "binary":
            await caller.send_raw(bytes(4098))
        else:  # 2,100 characters, but 4,200+ bytes in UTF-8
            await caller.send_raw(json.dumps({"type": "ping", "id": "é" * 2100}, ensure_ascii=False))
        error = await caller.wait_for_event("error", since=since)
        code = await caller.wait_closed()
    assert (error.data["code"], error.data["fatal"]) == ("message_too_large", True)
    assert code == 1009
    await wait_for(lambda: not stream.sessions, what="the session to end")


async def test_ping_pong_and_stop(serve: Serve) -> None:
    """`ping` is answered at once with its `id` echoed (also before `start`); `stop` ends the session
    with `stopped` (client_stop) and close 1000."""
    stream = Stream(Silent())
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url(), auto_start=False) as caller:
        for ping_id in (7, "abc", {"n": [1, 2]}, None):
            since = len(caller.events)
            await caller.send_json({"type": "ping", "id": ping_id})
            pong = await caller.wait_for_event("pong", since=since)
            assert pong.data == {"type": "pong", "id": ping_id}
        since = len(caller.events)
        await caller.send_json({"type": "ping"})
        assert (await caller.wait_for_event("pong", since=since)).data["id"] is None
        await caller.start()
        session = stream.sessions[caller.session_id or ""]
        assert await caller.ping() < 1.0
        stopped = await caller.stop()
    assert stopped.data == {"type": "stopped", "reason": "client_stop"}
    assert caller.close_code == 1000
    await wait_for(lambda: not stream.sessions, what="the session to end")
    assert session.closed and not session.tasks


# -- the connection and the session's life ------------------------------------------------------


async def test_abrupt_disconnect_mid_reply_cleans_up(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """A caller whose connection drops without a close frame, mid-reply, on a busy server: its session
    and all its tasks end, nothing is logged as an error, and the server serves the next caller."""
    stream = Stream(EndlessTone())
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url()) as caller:
        await caller.send_silence(0.04)
        await wait_for_reply_audio(caller, 0.3)  # steady state: a frame goes out every 20 ms
        session = stream.sessions[caller.session_id or ""]
        tasks = session.tasks
        handler = session.handler
        assert isinstance(handler, EndlessTone)
        assert tasks and not any(t.done() for t in tasks)
        assert caller._ws is not None
        caller._ws.transport.abort()  # drop the TCP connection: no close frame
        await asyncio.sleep(0)  # the socket closes
        stall_event_loop(0.05)  # the lost connection and the next frame now come due together
        await caller.wait_closed()

    await wait_for(lambda: not stream.sessions, what="the session to end")
    assert session.closed and not session.tasks
    assert all(t.done() for t in tasks)
    assert handler.shut_down
    assert errors_logged(caplog) == []

    async with WebSocketCaller(server.ws_url()) as next_caller:
        await next_caller.ping()
        await next_caller.stop()


async def test_concurrency_limit_over_the_wire(serve: Serve) -> None:
    """At `concurrency_limit` a new caller gets a fatal `over_capacity` and close 1013, the caller in
    the call is unaffected, and once it stops a new caller is accepted."""
    stream = Stream(Silent(), concurrency_limit=1)
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url()) as first:
        with pytest.raises(CallRefusedError) as refused:
            async with WebSocketCaller(server.ws_url()):
                pass
        assert (refused.value.error_code, refused.value.close_code) == ("over_capacity", 1013)
        assert refused.value.retryable
        assert list(stream.sessions) == [first.session_id]
        await first.ping()
        await first.stop()
    async with WebSocketCaller(server.ws_url()) as third:
        assert list(stream.sessions) == [third.session_id]
        await third.stop()


async def test_time_limit_over_the_wire(serve: Serve) -> None:
    """A session past `time_limit` gets a fatal `time_limit` error, `stopped` (time_limit), close 1008,
    and is cleaned up."""
    stream = Stream(Silent(), time_limit=0.5)
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url()) as caller:
        session = stream.sessions[caller.session_id or ""]
        code = await caller.wait_closed(timeout_s=5)
    assert code == 1008
    assert [e.type for e in caller.events] == ["started", "error", "stopped"]
    error, stopped = caller.events[1:]
    assert (error.data["code"], error.data["fatal"]) == ("time_limit", True)
    assert stopped.data["reason"] == "time_limit"
    assert caller.started is not None and 0.45 <= stopped.t - caller.started.t < 2.0
    await wait_for(lambda: not stream.sessions, what="the session to end")
    assert session.closed and session.stop_reason == "time_limit" and not session.tasks


async def test_session_id_is_used_and_one_in_use_is_a_bad_start(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    """`start` with a `session_id` names the session; a second caller asking for an id that is already
    open gets a non-fatal `bad_start` (not an internal error) and can start with another id."""
    stream = Stream(Silent())
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url(), session_id="caller-42") as first:
        assert first.session_id == "caller-42" and list(stream.sessions) == ["caller-42"]
        async with WebSocketCaller(server.ws_url(), auto_start=False) as second:
            start = {"type": "start", "sample_rate": RATE, "session_id": "caller-42"}
            await expect_error(second, json.dumps(start), "bad_start")
            await second.send_json({**start, "session_id": "caller-43"})
            await second.wait_for_event("started")
            assert second.session_id == "caller-43"
            await second.stop()
        await first.stop()
    assert errors_logged(caplog) == []


async def test_server_shutdown_closes_sessions(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """Stopping the server while a caller is mid-reply closes the caller's connection cleanly and ends
    the session (handler shut down, nothing logged as an error)."""
    stream = Stream(EndlessTone())
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url()) as caller:
        await caller.send_silence(0.04)
        await wait_for_reply_audio(caller, 0.2)
        session = stream.sessions[caller.session_id or ""]
        await server.stop()
        code = await caller.wait_closed()
    assert code in (1001, 1012)  # going away / service restart
    assert stream.sessions == {}
    assert session.closed and not session.tasks
    assert isinstance(session.handler, EndlessTone) and session.handler.shut_down
    assert errors_logged(caplog) == []


# -- stream modes, inputs, sample rates ---------------------------------------------------------


async def test_receive_mode_refuses_caller_audio(serve: Serve) -> None:
    """mode="receive": the caller only listens: its audio gets a non-fatal `receive_only` and never
    reaches the handler, while the handler's audio still reaches the caller."""
    stream = Stream(Greeter(), mode="receive")
    server = await serve(stream)
    async with WebSocketCaller(server.ws_url()) as caller:
        handler = stream.sessions[caller.session_id or ""].handler
        await wait_for_reply_audio(caller, 0.3)
        await expect_error(caller, bytes(FRAME_BYTES), "receive_only")
        await caller.stop()
    assert isinstance(handler, Greeter) and handler.frames_heard == 0
    assert caller.received_audio().duration_s == pytest.approx(0.3, abs=0.001)


def echo_then_note(audio: AudioFrame) -> Iterator[Any]:
    yield audio
    yield AdditionalOutputs("reply finished")


async def test_send_mode_gets_events_but_no_audio(serve: Serve) -> None:
    """mode="send": the caller's speech is heard (turn events, additional outputs) but no audio is
    sent back."""
    server = await serve(Stream(ReplyOnPause(echo_then_note, options=FAST), mode="send"))
    async with WebSocketCaller(server.ws_url()) as caller:
        await caller.play(speech("utt2"), tail_silence_s=0.6, realtime=False)
        await caller.wait_for_event("additional_outputs", timeout_s=10)
        await caller.send_silence(0.3)  # a reply would be well under way by now
        await caller.ping()
        await caller.stop()
    types = [e.type for e in caller.events]
    assert types[:5] == [
        "started",
        "started_talking",
        "pause_detected",
        "response_starting",
        "additional_outputs",
    ]
    assert caller.audio_chunks == []


@pytest.mark.parametrize("can_interrupt", [True, False])
async def test_send_mode_later_turns_are_new_turns(serve: Serve, can_interrupt: bool) -> None:
    """mode="send": nothing plays back, so the caller's next turn is neither a barge-in (no
    `interrupted`) nor talking over a reply (it is not ignored): every turn gets its reply."""
    handler = ReplyOnPause(echo_then_note, options=FAST, can_interrupt=can_interrupt)
    server = await serve(Stream(handler, mode="send"))
    async with WebSocketCaller(server.ws_url()) as caller:
        for turn in range(3):
            since = len(caller.events)
            await caller.send_silence(0.3)  # real time: the previous reply has long finished
            await caller.play(speech("utt2"), lead_silence_s=0.2, tail_silence_s=0.6, realtime=False)
            await caller.wait_for_event("additional_outputs", timeout_s=10, since=since)
            assert [e.type for e in caller.events[since:]].count("interrupted") == 0, turn
        await caller.stop()
    assert len(caller.events_of("pause_detected")) == 3


async def test_start_args_and_input_reach_the_reply_function(serve: Serve) -> None:
    """`start` args are the initial inputs and an `input` message replaces them: the reply function
    gets them after the audio, and its `AdditionalOutputs` come back as `additional_outputs`."""

    def reply(audio: AudioFrame, *args: Any) -> Iterator[Any]:
        yield AdditionalOutputs(list(args))

    server = await serve(Stream(ReplyOnPause(reply, options=FAST)))
    utterance = speech("utt2")
    async with WebSocketCaller(server.ws_url(), start_args=["voice-a", 1]) as caller:
        await caller.play(utterance, tail_silence_s=0.6, realtime=False)
        first = await caller.wait_for_event("additional_outputs", timeout_s=10)
        await caller.wait_for_event("response_done", timeout_s=5)
        await caller.send_input("voice-b", {"speed": 0.7}, None)
        since = len(caller.events)
        await caller.play(utterance, tail_silence_s=0.6, realtime=False)
        second = await caller.wait_for_event("additional_outputs", timeout_s=10, since=since)
        await caller.stop()
    assert first.data["data"] == [["voice-a", 1]]
    assert second.data["data"] == [["voice-b", {"speed": 0.7}, None]]


@pytest.mark.parametrize(("input_rate", "output_rate"), [(48000, None), (8000, 16000)])
async def test_echo_at_other_sample_rates(serve: Serve, input_rate: int, output_rate: int | None) -> None:
    """Audio in at 48 or 8 kHz is resampled for the VAD; the reply comes at the rate the caller asked
    for (or the handler's 24 kHz), announced in `started`, with the utterance's length and shape."""
    server = await serve(echo_stream())
    utterance = speech("utt2", input_rate)
    start_s, end_s = speech_bounds_s(utterance.samples, input_rate)
    url = server.ws_url()
    async with WebSocketCaller(url, sample_rate=input_rate, output_sample_rate=output_rate) as caller:
        assert caller.started is not None
        assert caller.started.data["input_sample_rate"] == input_rate
        assert caller.started.data["output_sample_rate"] == (output_rate or 24000)
        await caller.play(utterance, tail_silence_s=0.8)
        done = await caller.wait_for_event("response_done", timeout_s=10)
        await caller.stop()
    assert caller.events_of("pause_detected") and caller.events_of("response_starting")
    received = caller.received_audio()
    assert received.sample_rate == (output_rate or 24000)
    assert received.duration_s == pytest.approx(expected_echo_s(end_s - start_s), abs=0.3)
    assert done.data["audio_ms"] == pytest.approx(1000 * received.duration_s, abs=1)
    assert envelope_correlation(utterance, received) > 0.8


class Pieces(AsyncStreamHandler):
    """Answers the caller's first audio with one reply made of four 0.37 s pieces (like TTS chunks)."""

    def __init__(self) -> None:
        self.heard = asyncio.Event()
        self.outputs: list[EmitType] = [tone(300 + 100 * i, 0.37, 24000) for i in range(4)]
        self.outputs.append(ReplyEnd())

    def copy(self) -> Pieces:
        return Pieces()

    async def receive(self, frame: AudioFrame) -> None:
        self.heard.set()

    async def emit(self) -> EmitType:
        await self.heard.wait()
        if self.outputs:
            return self.outputs.pop(0)
        await asyncio.sleep(3600)
        return None


async def test_reply_audio_comes_in_whole_frames(serve: Serve) -> None:
    """Reply audio goes out as `frame_ms` messages whatever the size of the handler's pieces: only
    the last message of a reply may be shorter."""
    server = await serve(Stream(Pieces()))
    async with WebSocketCaller(server.ws_url()) as caller:
        await caller.send_silence(0.02)
        done = await caller.wait_for_event("response_done", timeout_s=5)
        await caller.stop()
    sizes = [c.samples.shape[0] for c in caller.audio_chunks]
    assert sum(sizes) == 4 * round(0.37 * 24000)
    assert done.data["audio_ms"] == 1480
    frame = 24000 * 20 // 1000
    assert [(i, n) for i, n in enumerate(sizes[:-1]) if n != frame] == []
    assert 0 < sizes[-1] <= frame
