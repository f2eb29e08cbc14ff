"""Sessions and handlers without a network: ReplyOnPause, barge-in, limits, inputs, handler kinds."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from conftest import EnergyVAD, speech

from agentkit import AdditionalOutputs, AsyncStreamHandler, AudioFrame, ReplyOnPause, Stream, StreamHandler
from agentkit._executor import run_audio_job
from agentkit.audio import float_to_pcm16, mulaw_encode
from agentkit.exceptions import CapacityError, ConfigError
from agentkit.stream import TurnTakingOptions
from agentkit.stream._handlers import EmitType
from agentkit.stream._turn_batch import vad_batch_stats
from agentkit.testing import open_recorded_session

FAST = TurnTakingOptions(end_of_turn_silence_ms=300)


async def feed(session: Any, samples: np.ndarray, frame: int = 320) -> None:
    """Push 16 kHz audio into a session as 20 ms PCM messages, as fast as it takes them."""
    for start in range(0, samples.shape[0], frame):
        await session.receive_audio(float_to_pcm16(samples[start : start + frame]))


def utterance(tail_s: float = 0.6) -> np.ndarray:
    lead = np.zeros(8000, dtype=np.float32)
    return np.concatenate([lead, speech("utt2").samples, np.zeros(round(tail_s * 16000), dtype=np.float32)])


async def test_echo_reply_is_paced_and_complete(models_dir: object) -> None:
    def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
        yield audio

    stream = Stream(ReplyOnPause(echo, options=FAST))
    session, transport = open_recorded_session(stream)
    await session.start()
    try:
        await feed(session, utterance())
        paused = await transport.wait_for("pause_detected")
        done = await transport.wait_for("response_done", timeout_s=10)
        types = transport.event_types()
        assert (
            types.index("started_talking") < types.index("pause_detected") < types.index("response_starting")
        )
        sent = sum(a.samples.shape[0] for a in transport.audio) / 24000
        turn_s = done.event.audio_ms / 1000  # type: ignore[union-attr]
        assert sent == pytest.approx(turn_s, abs=0.02)
        assert 2.5 < sent < 4.5
        # paced: audio went out over about its own duration, never ahead by more than the lead
        span = transport.audio[-1].t - transport.audio[0].t
        assert span > sent - 0.2
        assert transport.audio[0].t - paused.t < 0.2
    finally:
        await session.close()
    assert stream.sessions == {} and not session.tasks


async def test_phone_audio_reaches_an_8_khz_reply_on_pause_as_it_is(models_dir: object) -> None:
    """`input_sample_rate=8000`: 8 kHz caller audio is not resampled, Silero runs at 8 kHz, and the
    turn ends as it does at 16 kHz."""
    heard: list[AudioFrame] = []

    def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
        heard.append(audio)
        yield audio

    handler = ReplyOnPause(echo, options=FAST, input_sample_rate=8000)
    assert handler.input_sample_rate == 8000 and handler.copy().vad is handler.vad  # copies share batches
    with pytest.raises(ValueError, match="8000 or 16000"):
        ReplyOnPause(echo, input_sample_rate=44100)
    stream = Stream(handler)
    session, transport = open_recorded_session(stream, input_sample_rate=8000, output_sample_rate=8000)
    await session.start()
    try:
        audio = np.concatenate(
            [np.zeros(4000, np.float32), speech("utt2", 8000).samples, np.zeros(4800, np.float32)]
        )
        await feed(session, audio, frame=160)
        done = await transport.wait_for("response_done", timeout_s=10)
        assert len(heard) == 1 and heard[0].sample_rate == 8000
        assert 2.5 < heard[0].duration_s < 4.5
        assert done.event.audio_ms == pytest.approx(heard[0].duration_s * 1000, abs=20)  # type: ignore[union-attr]
    finally:
        await session.close()


async def test_reply_on_pause_at_the_call_rate_serves_phones_at_8_khz_and_the_web_at_16(
    models_dir: object,
) -> None:
    """`input_sample_rate="call"`: each session runs at its caller's rate where the VAD can (8 kHz on
    the phone), the VAD's own elsewhere; both turns end as early, one stream serving both."""
    heard: dict[int, AudioFrame] = {}

    def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
        heard[audio.sample_rate] = audio
        yield audio

    stream = Stream(ReplyOnPause(echo, options=FAST, input_sample_rate="call"))
    ends: dict[int, float] = {}
    for rate in (8000, 16000, 48000):
        session, transport = open_recorded_session(stream, input_sample_rate=rate, output_sample_rate=rate)
        assert session.handler.input_sample_rate == min(rate, 16000)
        await session.start()
        try:
            lead, tail = np.zeros(rate // 4, np.float32), np.zeros(rate * 3 // 5, np.float32)
            audio = np.concatenate([lead, speech("utt2", rate).samples, tail])
            await feed(session, audio, frame=rate // 50)
            paused = await transport.wait_for("pause_detected", timeout_s=10)
            await transport.wait_for("response_done", timeout_s=10)
        finally:
            await session.close()
        ends[rate] = paused.event.speech_end_ms / 1000  # type: ignore[union-attr]
    assert set(heard) == {8000, 16000}
    assert heard[8000].duration_s == pytest.approx(heard[16000].duration_s, abs=0.04)
    # Silero at 8 kHz holds on a chunk longer; its longer default tail still finds the same end
    assert ends[8000] == pytest.approx(ends[16000], abs=0.016)  # 32 ms later with a 96 ms tail at 8 kHz


async def test_input_converted_in_the_batch_gives_the_turn_a_subclass_sees_frame_by_frame(
    models_dir: object,
) -> None:
    """A turn-taking handler takes small messages undecoded (`receive_converting`: decoded and
    resampled in its audio-thread job, not on the event loop), and holds one that could decide
    nothing for the next (`input_can_wait`: no VAD chunk completed, no pause in progress); a subclass
    that overrides `receive` gets every frame through it instead. Both hear the same turn, at the
    same media positions."""
    turns: dict[str, AudioFrame] = {}
    jobs: dict[str, int] = {}
    frames: list[AudioFrame] = []

    class Watching(ReplyOnPause):
        async def receive(self, frame: AudioFrame) -> None:
            frames.append(frame)
            await super().receive(frame)

    def reply(name: str) -> Any:
        def fn(audio: AudioFrame) -> Iterator[AudioFrame]:
            turns[name] = audio
            yield audio

        return fn

    assert ReplyOnPause(reply("x")).converts_input and not Watching(reply("x")).converts_input
    audio = np.concatenate(
        [np.zeros(4000, np.float32), speech("utt2", 8000).samples, np.zeros(4800, np.float32)]
    )
    handlers = {
        "batch": ReplyOnPause(reply("batch"), options=FAST),
        "frames": Watching(reply("frames"), options=FAST),
    }
    for name, handler in handlers.items():
        session, transport = open_recorded_session(Stream(handler), input_sample_rate=8000)
        await session.start()
        before = vad_batch_stats().jobs
        try:
            await feed(session, audio, frame=160)
            await transport.wait_for("response_done", timeout_s=10)
        finally:
            jobs[name] = vad_batch_stats().jobs - before
            await session.close()
    messages = -(-audio.shape[0] // 160)
    assert len(frames) == jobs["frames"] == messages  # every message, as a frame at 16 kHz
    # 320 samples a message, 512 a chunk: outside the pause three messages in eight wait for the next
    assert 0.6 * messages < jobs["batch"] < 0.7 * messages
    assert all(
        b.timestamp_samples == a.timestamp_samples + a.num_samples for a, b in itertools.pairwise(frames)
    )
    batch, one_by_one = turns["batch"], turns["frames"]
    assert batch.sample_rate == one_by_one.sample_rate == 16000
    assert batch.timestamp_samples == one_by_one.timestamp_samples
    assert np.array_equal(batch.samples, one_by_one.samples)


async def test_held_input_goes_alone_when_the_codec_changes(models_dir: object) -> None:
    """A held message is decoded with its own codec: a message in another codec sends what is held
    first, on its own. Nothing is lost or decoded twice: the detector's position counts every sample."""

    def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
        yield audio

    session, transport = open_recorded_session(Stream(ReplyOnPause(echo, options=FAST)))
    await session.start()
    detector = session.handler.detector  # type: ignore[attr-defined]
    jobs = vad_batch_stats().jobs
    try:
        quiet = np.zeros(320, dtype=np.float32)
        await session.receive_audio(float_to_pcm16(quiet))  # 320 of 512: held
        await session.settle_input()
        assert vad_batch_stats().jobs == jobs and detector.position_samples == 0
        await session.receive_audio(mulaw_encode(np.zeros(160, dtype=np.int16)), "mulaw")
        await session.settle_input()
        # the PCM went alone (one job); the mu-law waits, 320 + 160 < 512
        assert vad_batch_stats().jobs == jobs + 1 and detector.position_samples == 320
        await session.receive_audio(mulaw_encode(np.zeros(160, dtype=np.int16)), "mulaw")
        await session.settle_input()
        assert vad_batch_stats().jobs == jobs + 2 and detector.position_samples == 640
    finally:
        await session.close()
    assert not transport.event_types().count("error")


async def test_the_reader_does_not_wait_for_the_batch_and_events_keep_their_order(models_dir: object) -> None:
    """A `ReplyOnPause` takes small messages without the session waiting for their batch
    (`receive_converting_nowait`): `receive_audio` returns before the job has run, the turn's events
    still come in order, and the turn is the one the waiting path gives."""

    def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
        yield audio

    session, transport = open_recorded_session(
        Stream(ReplyOnPause(echo, options=FAST)), input_sample_rate=8000
    )
    await session.start()
    try:
        jobs = vad_batch_stats().jobs
        await session.receive_audio(mulaw_encode(np.zeros(320, dtype=np.int16)), "mulaw")  # 640 at 16 kHz
        assert vad_batch_stats().jobs == jobs  # given to the batch, not waited for
        await session.settle_input()
        assert vad_batch_stats().jobs == jobs + 1  # (636 samples: soxr's first call keeps 4 back)
        audio = np.concatenate([speech("utt2", 8000).samples, np.zeros(4800, np.float32)])
        pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
        for start in range(0, pcm.shape[0], 160):
            await session.receive_audio(mulaw_encode(pcm[start : start + 160]), "mulaw")
        done = await transport.wait_for("response_done", timeout_s=10)
    finally:
        await session.close()
    types = transport.event_types()
    assert types.index("started_talking") < types.index("pause_detected") < types.index("response_starting")
    assert 2.5 < done.event.audio_ms / 1000 < 4.5  # type: ignore[union-attr]


async def test_an_input_that_failed_unwaited_fails_the_next(models_dir: object) -> None:
    """The error of an input taken without waiting is raised by the session's next input (or
    `settle_input`), once, and the session goes on."""

    class Failing(EnergyVAD):
        calls = 0

        def probability(self, chunk: np.ndarray) -> float:
            Failing.calls += 1
            if Failing.calls == 3:
                raise RuntimeError("the VAD broke")
            return super().probability(chunk)

    def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
        yield audio

    session, _ = open_recorded_session(Stream(ReplyOnPause(echo, options=FAST, vad=Failing())))
    await session.start()
    try:
        for _ in range(3):  # three chunks of 512, each message completes one
            await session.receive_audio(float_to_pcm16(np.zeros(512, np.float32)))
        with pytest.raises(RuntimeError, match="the VAD broke"):
            await session.settle_input()
        await session.receive_audio(float_to_pcm16(np.zeros(512, np.float32)))
        await session.settle_input()
        assert Failing.calls == 4
    finally:
        await session.close()


def test_a_subclass_keeps_its_class_in_every_session_or_is_told_to_override_copy() -> None:
    """`copy()` makes each session's handler of the subclass's own class (the test above relies on
    it: `Watching` does not override `copy`), with state of its own."""

    def echo(audio: AudioFrame) -> Iterator[AudioFrame]:
        yield audio

    class Quiet(ReplyOnPause):
        async def on_turn_ended(self, event: Any) -> None:
            pass

    handler = Quiet(echo, options=FAST, can_interrupt=False, output_sample_rate=16000)
    copy = handler.copy()
    assert type(copy) is Quiet and copy is not handler and copy._tasks is not handler._tasks
    assert (copy.options, copy.can_interrupt, copy.output_sample_rate) == (FAST, False, 16000)

    class Named(ReplyOnPause):
        def __init__(self, name: str) -> None:
            super().__init__(echo)
            self.name = name

    with pytest.raises(TypeError, match=r"Named.copy\(\).*override copy\(\)"):
        Named("ann").copy()


async def test_barge_in_stops_the_reply_and_flushes(models_dir: object) -> None:
    cancelled = asyncio.Event()

    async def long_reply(audio: AudioFrame) -> AsyncIterator[AudioFrame]:
        try:
            for _ in range(200):  # 100 s of tone in 0.5 s pieces: more than the queues hold
                t = np.arange(12000) / 24000
                yield AudioFrame((0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 24000)
        except GeneratorExit:  # closed by the interruption
            cancelled.set()
            raise

    stream = Stream(ReplyOnPause(long_reply, options=FAST))
    session, transport = open_recorded_session(stream)
    await session.start()
    try:
        await feed(session, utterance(tail_s=0.4))
        await transport.wait_for("response_starting")
        await asyncio.sleep(0.8)  # the caller hears part of the reply
        assert session.responding
        await feed(session, utterance(tail_s=0.0)[:16000])  # the caller talks over it
        interrupted = await transport.wait_for("interrupted", timeout_s=3)
        assert cancelled.is_set()
        heard_ms = interrupted.event.heard_ms  # type: ignore[union-attr]
        assert 700 <= heard_ms <= 1300
        assert interrupted.event.clear  # type: ignore[union-attr]
        await asyncio.sleep(0.3)
        after = [a for a in transport.audio if a.t > interrupted.t]
        assert after == []  # nothing queued survives the flush
        assert not session.responding
        talking = transport.events_of("started_talking")[-1]
        assert interrupted.t - talking.t < 0.1  # flushed on the onset, not at the end of the turn
    finally:
        await session.close()


async def test_without_can_interrupt_speech_during_reply_is_ignored(models_dir: object) -> None:
    async def reply(audio: AudioFrame) -> AsyncIterator[AudioFrame]:
        yield AudioFrame(np.full(24000, 0.1, dtype=np.float32), 24000)

    stream = Stream(ReplyOnPause(reply, options=FAST, can_interrupt=False))
    session, transport = open_recorded_session(stream)
    await session.start()
    try:
        await feed(session, utterance(tail_s=0.4))
        await transport.wait_for("response_starting")
        await feed(session, utterance(tail_s=0.4))
        await transport.wait_for("response_done", timeout_s=5)
        assert transport.events_of("interrupted") == []
        assert len(transport.events_of("response_starting")) == 1
    finally:
        await session.close()


async def test_sync_generator_inputs_and_additional_outputs(models_dir: object) -> None:
    seen: list[tuple[Any, ...]] = []

    def reply(audio: AudioFrame, *inputs: Any) -> Iterator[Any]:
        seen.append(inputs)
        yield AdditionalOutputs({"turn_s": round(audio.duration_s, 1)})
        yield (16000, np.zeros(1600, dtype=np.int16))  # FastRTC-style (rate, samples)

    stream = Stream(ReplyOnPause(reply, options=FAST))
    session, transport = open_recorded_session(stream)
    await session.start()
    outputs: list[AdditionalOutputs] = []

    async def collect() -> None:
        async for item in stream.output_stream(session.id):
            outputs.append(item)
            return

    collector = asyncio.create_task(collect())
    try:
        await asyncio.sleep(0)
        stream.set_input(session.id, "voice-a", 3)
        await feed(session, utterance())
        await transport.wait_for("response_done")
        await asyncio.wait_for(collector, 2)
        assert seen == [("voice-a", 3)]
        assert outputs and outputs[0].args[0]["turn_s"] > 2.5
        extra = transport.events_of("additional_outputs")[0].event
        assert extra.data[0]["turn_s"] > 2.5  # type: ignore[union-attr]
        assert sum(a.samples.shape[0] for a in transport.audio) == pytest.approx(2400, abs=2)
    finally:
        collector.cancel()
        await session.close()
    with pytest.raises(KeyError):
        stream.set_input(session.id, "late")


class Doubler(StreamHandler):
    """A blocking handler: returns each frame twice as loud, on worker threads."""

    def __init__(self) -> None:
        self.queue: list[AudioFrame] = []
        self.started = self.stopped = False

    def copy(self) -> Doubler:
        return Doubler()

    def start_up(self) -> None:
        self.started = True

    def shutdown(self) -> None:
        self.stopped = True

    def receive(self, frame: AudioFrame) -> None:
        self.queue.append(AudioFrame(frame.samples * 2, frame.sample_rate))

    def emit(self) -> EmitType:
        return self.queue.pop(0) if self.queue else None


async def test_sync_stream_handler_runs_and_shuts_down() -> None:
    stream = Stream(Doubler(), concurrency_limit=2)
    session, transport = open_recorded_session(stream, output_sample_rate=16000)
    await session.start()
    handler = session.handler
    assert isinstance(handler, Doubler) and handler.started and handler is not stream.handler
    await session.receive_audio(float_to_pcm16(np.full(1600, 0.1, dtype=np.float32)))
    async with asyncio.timeout(2):
        while sum(a.samples.shape[0] for a in transport.audio) < 1500:
            await transport.changed()
    assert np.allclose(np.concatenate([a.samples for a in transport.audio])[:1000], 0.2, atol=0.01)
    await session.close()
    assert handler.stopped


class Silent(AsyncStreamHandler):
    def copy(self) -> Silent:
        return Silent()

    async def receive(self, frame: AudioFrame) -> None:
        pass

    async def emit(self) -> EmitType:
        await asyncio.sleep(3600)
        return None


async def test_concurrency_limit_refuses_clearly_and_frees_on_close() -> None:
    stream = Stream(Silent(), concurrency_limit=2)
    first, _ = open_recorded_session(stream)
    second, _ = open_recorded_session(stream)
    with pytest.raises(CapacityError) as refused:
        open_recorded_session(stream)
    assert refused.value.retryable and "capacity" in str(refused.value)
    await first.start()
    await first.close()
    third, _ = open_recorded_session(stream)  # a slot is free again
    assert set(stream.sessions) == {second.id, third.id}


async def test_time_limit_ends_the_session_with_a_reason() -> None:
    stream = Stream(Silent(), time_limit=0.2)
    session, transport = open_recorded_session(stream)
    await session.start()
    await transport.wait_for("stopped", timeout_s=2)
    assert transport.event_types()[-2:] == ["error", "stopped"]
    assert transport.closed is not None and transport.closed[0] == 1008
    await session.close()
    assert session.stop_reason == "time_limit"


def test_stream_arguments_are_validated() -> None:
    with pytest.raises(ConfigError):
        Stream(Silent(), modality="video")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Stream(Silent(), mode="both")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Stream(Silent(), concurrency_limit=0)
    with pytest.raises(ConfigError):
        Stream(object())  # type: ignore[arg-type]


class Replies(AsyncStreamHandler):
    """Speaks whatever the test queues."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[AudioFrame] = asyncio.Queue()

    def copy(self) -> Replies:
        return Replies()

    async def receive(self, frame: AudioFrame) -> None:
        pass

    async def emit(self) -> EmitType:
        return await self.queue.get()


async def sent_samples(transport: Any, at_least: int, timeout_s: float = 3.0) -> int:
    async with asyncio.timeout(timeout_s):
        while (total := sum(a.samples.shape[0] for a in transport.audio)) < at_least:
            await transport.changed()
    return total


async def test_a_reply_starts_while_the_audio_thread_is_busy() -> None:
    """The first output frame of a reply at the output rate is encoded and sent at once; the rest,
    and a piece queued while the caller still hears audio, wait for the audio thread; nothing is
    lost or reordered."""
    stream = Stream(Replies())
    session, transport = open_recorded_session(stream, output_sample_rate=24000)
    await session.start()
    handler = session.handler
    assert isinstance(handler, Replies)
    t = np.arange(24000, dtype=np.float32) / 24000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    release = threading.Event()
    busy = asyncio.ensure_future(run_audio_job(release.wait, 5.0))
    try:
        await asyncio.sleep(0.05)  # the audio thread is now inside the blocking job
        handler.queue.put_nowait(AudioFrame(tone, 24000))
        await asyncio.sleep(0)  # one loop turn: the session's emit loop takes the piece and sends
        first = sum(a.samples.shape[0] for a in transport.audio)  # its first frame itself (the
        assert first == 480  # pacer, woken, would send it a turn later): one 20 ms frame
        await asyncio.sleep(0.15)
        assert sum(a.samples.shape[0] for a in transport.audio) == first  # the rest waits
        release.set()
        await busy
        await sent_samples(transport, 6000)

        release.clear()  # while the first piece plays, a second is queued behind a busy thread
        busy = asyncio.ensure_future(run_audio_job(release.wait, 5.0))
        await asyncio.sleep(0.05)
        handler.queue.put_nowait(AudioFrame(tone, 24000))
        await asyncio.sleep(1.0)  # the first piece has played out by now; nothing of the second went
        assert sum(a.samples.shape[0] for a in transport.audio) == 24000
        release.set()
        await busy
        await sent_samples(transport, 48000)
    finally:
        release.set()
        await session.close()
    heard = np.concatenate([a.samples for a in transport.audio])
    assert np.allclose(heard, np.concatenate([tone, tone]), atol=1 / 32768)  # 16-bit PCM on the wire


def _raises(audio: AudioFrame) -> Iterator[AudioFrame]:
    raise RuntimeError("broken reply")


def _fails_at_first_item(audio: AudioFrame) -> Iterator[AudioFrame]:
    raise RuntimeError("broken reply")
    yield audio


@pytest.mark.parametrize(
    ("fn", "error"),
    [
        (_raises, "broken reply"),  # raises when called, on the loop
        (_fails_at_first_item, "broken reply"),  # the first item is asked for on a worker thread
        (lambda audio: [audio], "must be a generator"),
    ],
    ids=["call", "first-item", "not-a-generator"],
)
async def test_a_failing_reply_function_is_logged_and_the_session_goes_on(
    fn: Any, error: str, caplog: pytest.LogCaptureFixture, models_dir: object
) -> None:
    stream = Stream(ReplyOnPause(fn, options=FAST))
    session, transport = open_recorded_session(stream)
    await session.start()
    try:
        with caplog.at_level("ERROR", logger="agentkit"):
            await feed(session, utterance())
            await transport.wait_for("response_done", timeout_s=10)
            await feed(session, utterance())
            await transport.wait_for("response_done", timeout_s=10, count=2)
        failures = [r for r in caplog.records if r.getMessage().startswith("reply function failed")]
        assert len(failures) == 2 and all(r.exc_info and error in str(r.exc_info[1]) for r in failures)
        assert not transport.audio and transport.closed is None
    finally:
        await session.close()
