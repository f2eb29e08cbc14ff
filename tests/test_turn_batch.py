"""Turn detection batched across sessions (`TurnBatcher`) decides exactly as each session alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from conftest import speech

from agentkit.audio import Samples
from agentkit.providers.vad import SileroVAD, VADStream
from agentkit.stream import TurnDetector, TurnDiscarded, TurnEvent, TurnStarted, TurnState, TurnTakingOptions
from agentkit.stream._turn_batch import MIN_BATCH_INTERVAL_S, SPACED_FROM_INPUTS_PER_S, TurnBatcher

RATE = 16000
CHUNK = 512
OPTIONS = TurnTakingOptions(end_of_turn_silence_ms=400)


class RecordingDetector(TurnDetector):
    """A detector that notes the probability of every chunk it steps."""

    def __init__(self, stream: VADStream, *, rate: int = RATE) -> None:
        super().__init__(stream, sample_rate=rate, chunk_samples=CHUNK * rate // RATE, options=OPTIONS)
        self.probabilities: list[float] = []

    def step(self, chunk: Samples, p: float, levels: Samples | None = None) -> TurnEvent | None:
        self.probabilities.append(p)
        return super().step(chunk, p, levels)


def _silence(seconds: float, rate: int = RATE) -> Samples:
    return np.zeros(round(seconds * rate), dtype=np.float32)


def _callers(rate: int = RATE) -> list[tuple[Samples, int]]:
    """Six callers: (audio, input frame size). Frame sizes differ so that sessions complete different
    numbers of chunks per input (none, one or several) and meet the chunk grid at different phases."""
    utt1, utt2 = speech("utt1", rate).samples, speech("utt2", rate).samples
    rng = np.random.default_rng(7)
    noise = (0.003 * rng.standard_normal(rate)).astype(np.float32)
    return [
        (np.concatenate([_silence(0.5, rate), utt1, _silence(1.0, rate)]), 320),
        (np.concatenate([_silence(0.3, rate), utt2, _silence(0.9, rate), utt1, _silence(1.0, rate)]), 160),
        (np.concatenate([noise, utt2, _silence(1.2, rate)]), 480),
        (
            np.concatenate(
                [_silence(0.1, rate), utt1[: rate // 5], _silence(1.0, rate), utt2, _silence(1.0, rate)]
            ),
            1000,
        ),
        (np.concatenate([_silence(0.7, rate), utt2, noise]), 2048),
        (np.concatenate([utt1, utt2, _silence(0.8, rate)]), 96),
    ]


def _frames(audio: Samples, size: int) -> list[Samples]:
    return [audio[i : i + size] for i in range(0, audio.shape[0], size)]


def _summary(event: TurnEvent) -> tuple[object, ...]:
    if isinstance(event, TurnStarted):
        return ("started", event.onset_samples, event.decided_samples)
    if isinstance(event, TurnDiscarded):
        return ("discarded", event.speech_ms, event.decided_samples)
    audio = event.audio
    return (
        "ended",
        event.speech_end_samples,
        event.decided_samples,
        event.speech_ms,
        event.cut,
        audio.timestamp_samples,
        audio.num_samples,
        round(float(np.abs(audio.samples).sum()), 3),
    )


@pytest.mark.parametrize("rate", [16000, 8000])
async def test_batched_vad_decides_like_each_session_alone(silero: SileroVAD, rate: int) -> None:
    silero = silero.at_rate(rate)
    callers = _callers(rate)
    alone: list[tuple[list[tuple[object, ...]], list[float]]] = []
    for audio, size in callers:
        detector = RecordingDetector(silero.stream(), rate=rate)
        events = [_summary(e) for frame in _frames(audio, size) for e in detector.process(frame)]
        alone.append((events, detector.probabilities))

    batcher = TurnBatcher()

    async def call(audio: Samples, size: int) -> tuple[list[tuple[object, ...]], list[float]]:
        detector = RecordingDetector(silero.stream(), rate=rate)
        events = []
        for frame in _frames(audio, size):
            events += [_summary(e) for e in await batcher.process(silero, detector, frame)]
        return events, detector.probabilities

    together = await asyncio.gather(*(call(audio, size) for audio, size in callers))

    for (events_alone, p_alone), (events_together, p_together) in zip(alone, together, strict=True):
        assert any(e[0] == "ended" for e in events_alone)
        assert events_together == events_alone
        assert len(p_together) == len(p_alone)
        assert np.max(np.abs(np.array(p_together) - np.array(p_alone))) < 1e-4
    stats = batcher.stats
    assert stats.failed_jobs == 0
    assert stats.jobs == sum(len(_frames(audio, size)) for audio, size in callers)
    assert stats.sessions_max > 1  # the sessions did share batches...
    assert stats.chunks > stats.vad_calls  # ...and VAD calls


async def test_levels_measured_for_a_whole_round_decide_as_each_detector_alone(silero: SileroVAD) -> None:
    """Plain detectors get their chunk levels from the batcher (one numpy call per round): the same
    events, at the same samples, as each detector measuring its own."""
    callers = _callers()
    alone = []
    for audio, size in callers:
        detector = TurnDetector(silero.stream(), sample_rate=RATE, chunk_samples=CHUNK, options=OPTIONS)
        alone.append([_summary(e) for frame in _frames(audio, size) for e in detector.process(frame)])
    batcher = TurnBatcher()

    async def call(audio: Samples, size: int) -> list[tuple[object, ...]]:
        detector = TurnDetector(silero.stream(), sample_rate=RATE, chunk_samples=CHUNK, options=OPTIONS)
        events = []
        for frame in _frames(audio, size):
            events += [_summary(e) for e in await batcher.process(silero, detector, frame)]
        return events

    together = await asyncio.gather(*(call(audio, size) for audio, size in callers))
    assert together == alone
    assert sum(e[0] == "ended" for events in alone for e in events) >= len(callers)
    assert batcher.stats.chunks > batcher.stats.vad_calls  # rounds of several sessions did happen


def test_silero_batch_refuses_foreign_streams_before_changing_any_state(silero: SileroVAD) -> None:
    chunk = 0.1 * np.sin(np.arange(CHUNK, dtype=np.float32) / 5)
    mine, reference = silero.stream(), silero.stream()
    with pytest.raises(ValueError, match="one Silero model"):
        silero.probabilities([mine, FakeVAD().stream()], [chunk, chunk])
    phone = silero.at_rate(8000)
    with pytest.raises(ValueError, match="one sample rate"):
        silero.probabilities([mine, phone.stream()], [chunk, chunk[: CHUNK // 2]])
    assert mine.probability(chunk) == reference.probability(chunk)


def test_silero_at_8_khz_finds_the_same_turns_as_at_16_khz(silero: SileroVAD) -> None:
    """Phone audio needs no resampling: Silero's 8 kHz mode ends the same turns, at about the same
    place, as its 16 kHz mode on the same speech."""
    phone = silero.at_rate(8000)
    assert phone is silero.at_rate(8000) and phone.at_rate(16000) is silero  # one detector per rate
    assert (phone.sample_rate, phone.chunk_samples) == (8000, 256)
    with pytest.raises(ValueError, match="8000 or 16000"):
        silero.at_rate(22050)
    ends: dict[int, list[float]] = {}
    for rate, vad in ((16000, silero), (8000, phone)):
        for audio, size in _callers(rate)[:3]:
            detector = RecordingDetector(vad.stream(), rate=rate)
            for frame in _frames(audio, size * rate // RATE or 1):
                for event in detector.process(frame):
                    if not isinstance(event, TurnStarted | TurnDiscarded):
                        ends.setdefault(rate, []).append(event.speech_end_samples / rate)
    assert len(ends[8000]) == len(ends[16000]) >= 3
    assert np.max(np.abs(np.array(ends[8000]) - np.array(ends[16000]))) <= 0.1  # three chunks at most


class FakeStream:
    """Probability from loudness; `fail_on` chunks (by count) raise instead."""

    def __init__(self, owner: FakeVAD, fail_on: int | None) -> None:
        self.owner = owner
        self.fail_on = fail_on
        self.chunks = 0

    def probability(self, chunk: Samples) -> float:
        self.owner.wait()
        self.chunks += 1
        if self.chunks == self.fail_on:
            raise RuntimeError("this stream's VAD broke")
        self.owner.calls.append(1)
        return min(1.0, float(np.sqrt(np.mean(chunk * chunk))) * 20)

    def reset(self) -> None:
        self.chunks = 0


class FakeVAD:
    """A VAD without the batched entry point (the per-stream fallback); `gate` can hold the audio thread."""

    sample_rate = RATE
    chunk_samples = CHUNK

    def __init__(self) -> None:
        self.calls: list[int] = []  # streams scored per model call
        self.gate: threading.Event | None = None
        self.failures: dict[int, int] = {}  # stream number -> chunk count it fails at
        self.made = 0

    def wait(self) -> None:
        if self.gate is not None:
            assert self.gate.wait(10.0)

    def stream(self) -> FakeStream:
        self.made += 1
        return FakeStream(self, self.failures.get(self.made))

    async def aclose(self) -> None:
        pass


class FakeBatchedVAD(FakeVAD):
    """The same, with `probabilities`; `broken_batches` makes every batched call fail."""

    broken_batches = False

    def probabilities(self, streams: Sequence[VADStream], chunks: Sequence[Samples]) -> list[float]:
        if self.broken_batches or any(
            isinstance(s, FakeStream) and s.fail_on == s.chunks + 1 for s in streams
        ):
            raise RuntimeError("the batch failed")
        self.wait()
        self.calls.append(len(streams))
        scores = [min(1.0, float(np.sqrt(np.mean(c * c))) * 20) for c in chunks]
        for stream in streams:
            assert isinstance(stream, FakeStream)
            stream.chunks += 1
        return scores


def _detector(vad: FakeVAD) -> TurnDetector:
    return TurnDetector(vad.stream(), sample_rate=RATE, chunk_samples=CHUNK, options=OPTIONS)


def _tone(samples: int) -> Samples:
    return (0.3 * np.sin(np.arange(samples) / 3)).astype(np.float32)


async def _hold(batcher: TurnBatcher, vad: FakeVAD) -> tuple[threading.Event, asyncio.Task[list[TurnEvent]]]:
    """Keep the audio thread busy with one job until the returned gate opens."""
    gate = vad.gate = threading.Event()
    task = asyncio.create_task(batcher.process(vad, _detector(vad), _tone(CHUNK)))
    await asyncio.sleep(0.05)  # the job has started and waits at the gate
    return gate, task


async def test_sessions_with_different_numbers_of_chunks_share_rounds() -> None:
    vad = FakeBatchedVAD()
    batcher = TurnBatcher()
    gate, first = await _hold(batcher, vad)
    detectors = [_detector(vad) for _ in range(4)]
    sizes = [0, 100, 4 * CHUNK, CHUNK + 10]  # 0, 0, 4 and 1 whole chunks
    waiting = [
        asyncio.create_task(batcher.process(vad, d, _tone(n))) for d, n in zip(detectors, sizes, strict=True)
    ]
    await asyncio.sleep(0.01)
    gate.set()
    await first
    await asyncio.gather(*waiting)
    # the held job, then one batch: round 0 scores two streams together, rounds 1-3 one each
    assert vad.calls == [1, 2, 1, 1, 1]
    assert [d.position_samples for d in detectors] == sizes
    assert batcher.stats.sessions_last == 4 and batcher.stats.chunks == 1 + 5


@pytest.mark.parametrize("vad_kind", [FakeVAD, FakeBatchedVAD])
async def test_a_failing_session_does_not_fail_the_others(vad_kind: type[FakeVAD]) -> None:
    vad = vad_kind()
    vad.failures = {3: 2}  # the third stream made breaks on its second chunk
    batcher = TurnBatcher()
    gate, first = await _hold(batcher, vad)  # stream 1
    detectors = [_detector(vad) for _ in range(3)]  # streams 2, 3 and 4
    jobs = [asyncio.create_task(batcher.process(vad, d, _tone(3 * CHUNK))) for d in detectors]
    await asyncio.sleep(0.01)
    gate.set()
    await first
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    for ok in (results[0], results[2]):
        assert [type(e) for e in ok] == [TurnStarted]  # 96 ms of tone: the onset, decided
    assert detectors[0].position_samples == detectors[2].position_samples == 3 * CHUNK
    assert batcher.stats.failed_jobs == 1
    again = await batcher.process(vad, detectors[0], _tone(CHUNK))  # the batcher carries on
    assert again == [] and detectors[0].position_samples == 4 * CHUNK


async def test_a_failing_state_machine_fails_only_its_session() -> None:
    class Broken(TurnDetector):  # an override written before `step` took levels: called without
        def step(self, chunk: Samples, p: float) -> TurnEvent | None:  # type: ignore[override]
            raise ZeroDivisionError("state machine bug")

    vad = FakeBatchedVAD()
    batcher = TurnBatcher()
    gate, first = await _hold(batcher, vad)
    broken = Broken(vad.stream(), sample_rate=RATE, chunk_samples=CHUNK, options=OPTIONS)
    fine = _detector(vad)
    jobs = [asyncio.create_task(batcher.process(vad, d, _tone(2 * CHUNK))) for d in (broken, fine)]
    await asyncio.sleep(0.01)
    gate.set()
    await first
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert isinstance(results[0], ZeroDivisionError)
    assert [type(e) for e in results[1]] == [TurnStarted] and fine.position_samples == 2 * CHUNK


async def test_a_broken_batched_call_is_retried_stream_by_stream() -> None:
    vad = FakeBatchedVAD()
    vad.broken_batches = True
    batcher = TurnBatcher()
    detectors = [_detector(vad) for _ in range(3)]
    results = await asyncio.gather(*(batcher.process(vad, d, _tone(3 * CHUNK)) for d in detectors))
    assert all([type(e) for e in events] == [TurnStarted] for events in results)
    assert batcher.stats.failed_jobs == 0


async def test_cancelled_waits_are_harmless() -> None:
    vad = FakeBatchedVAD()
    batcher = TurnBatcher()
    gate, first = await _hold(batcher, vad)
    queued, running_then_cancelled, other = (_detector(vad) for _ in range(3))
    never = asyncio.create_task(batcher.process(vad, queued, _tone(CHUNK)))
    await asyncio.sleep(0.01)
    never.cancel()  # cancelled before its job began: its audio is never analysed
    gate.set()
    await first
    assert never.cancelled() and queued.position_samples == 0

    gate.clear()
    late = asyncio.create_task(batcher.process(vad, running_then_cancelled, _tone(2 * CHUNK)))
    bystander = asyncio.create_task(batcher.process(vad, other, _tone(2 * CHUNK)))
    await asyncio.sleep(0.05)  # their batch has started and waits at the gate
    late.cancel()  # cancelled while its job runs: the job finishes, its events go nowhere
    gate.set()
    assert [type(e) for e in await bystander] == [TurnStarted] and other.position_samples == 2 * CHUNK
    with pytest.raises(asyncio.CancelledError):
        await late
    assert running_then_cancelled.position_samples == 2 * CHUNK
    assert await batcher.process(vad, queued, _tone(CHUNK)) == []  # later inputs still work
    assert queued.position_samples == CHUNK


async def test_a_second_input_of_one_detector_waits_for_the_next_batch() -> None:
    vad = FakeBatchedVAD()
    batcher = TurnBatcher()
    gate, first = await _hold(batcher, vad)
    detector = _detector(vad)
    a = asyncio.create_task(batcher.process(vad, detector, _tone(CHUNK)))
    b = asyncio.create_task(batcher.process(vad, detector, _tone(CHUNK)))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(first, a, b)
    assert detector.position_samples == 2 * CHUNK
    assert batcher.stats.batches == 3  # held job, then a, then b: never both in one batch


def test_a_detector_says_which_input_could_move_it() -> None:
    """`TurnDetector.decides_on` (what lets a session hold a small message for the next): outside a
    pause only input that completes a chunk could change anything; in a pause any input could (the
    partial-chunk check ends turns between chunks)."""
    detector = _detector(FakeVAD())
    assert not detector.decides_on(CHUNK - 1) and detector.decides_on(CHUNK)
    detector.process(np.zeros(200, dtype=np.float32))
    assert not detector.decides_on(CHUNK - 201) and detector.decides_on(CHUNK - 200)
    events = detector.process(_tone(CHUNK * 12 - 200))  # speech, ending on a chunk boundary
    assert any(isinstance(e, TurnStarted) for e in events) and detector.state is TurnState.SPEAKING
    assert not detector.decides_on(CHUNK - 1) and detector.decides_on(CHUNK)
    detector.process(np.zeros(CHUNK * 3, dtype=np.float32))  # a pause, shorter than the turn's end
    assert detector.state is TurnState.PAUSED and detector.decides_on(1)


async def test_inputs_given_with_a_callback_come_back_in_order_and_a_held_detector_waits() -> None:
    """`convert_and_process_soon`: no await, the callback gets each input's events and samples in
    order; `hold` keeps a detector's inputs out of the batches (another's go on) until `release`."""
    vad = FakeBatchedVAD()
    batcher = TurnBatcher()
    held, other = _detector(vad), _detector(vad)
    done: list[tuple[str, int]] = []

    def give(detector: TurnDetector, name: str) -> None:
        def finished(result: list[TurnEvent] | BaseException, n: int) -> None:
            assert not isinstance(result, BaseException)
            done.append((name, n))

        batcher.convert_and_process_soon(vad, detector, lambda: _tone(CHUNK), finished)

    batcher.hold(held)
    give(held, "h1")
    give(other, "o1")
    give(held, "h2")
    for _ in range(50):
        await asyncio.sleep(0.005)
        if done == [("o1", CHUNK)]:
            break
    assert done == [("o1", CHUNK)] and held.position_samples == 0  # held back, the other scored
    batcher.release(held)
    for _ in range(100):
        await asyncio.sleep(0.005)
        if len(done) == 3:
            break
    assert done == [("o1", CHUNK), ("h1", CHUNK), ("h2", CHUNK)]  # in order, one per batch
    assert held.position_samples == 2 * CHUNK


async def _batch_starts(
    batcher: TurnBatcher, *, rounds: int, gap_s: float
) -> tuple[list[float], list[float]]:
    """Give three detectors' inputs: one, then two together right after it has run, `rounds` times,
    `gap_s` apart. Returns the loop times at which batches started, and those at which each round's
    first input was given."""
    vad = FakeBatchedVAD()
    loop = asyncio.get_running_loop()
    detectors = [_detector(vad) for _ in range(3)]
    starts: list[float] = []
    asked: list[float] = []
    original = batcher._start_batch

    def noted() -> None:
        starts.append(loop.time())
        original()

    batcher._start_batch = noted  # type: ignore[method-assign]
    done: list[int] = []

    def give(detector: TurnDetector) -> None:
        batcher.convert_and_process_soon(vad, detector, lambda: _tone(CHUNK), lambda r, n: done.append(n))

    async def until(count: int) -> None:
        async with asyncio.timeout(2.0):
            while len(done) < count:  # noqa: ASYNC110 (polled: the callback is the batcher's)
                await asyncio.sleep(0.0005)

    for k in range(rounds):
        asked.append(loop.time())
        give(detectors[0])
        await until(3 * k + 1)
        give(detectors[1])
        give(detectors[2])
        await until(3 * k + 3)
        await asyncio.sleep(gap_s)
    return starts, asked


async def test_batches_start_at_once_below_the_input_rate_that_calls_for_spacing() -> None:
    """Little input (here about 30 a second, far below `SPACED_FROM_INPUTS_PER_S`) is never put off:
    a batch asked for while one runs starts as soon as that one has run, however soon after its
    start."""
    assert SPACED_FROM_INPUTS_PER_S > 100
    batcher = TurnBatcher()
    starts, _ = await _batch_starts(batcher, rounds=12, gap_s=0.1)  # over 1.2 s: the rate is measured
    # each round: the first input's batch, the second's at once (nothing runs), the third's after it
    assert batcher.stats.batches == 36 and len(starts) == 36
    third, second = starts[2::3], starts[1::3]
    assert max(c - b for c, b in zip(third, second, strict=True)) < MIN_BATCH_INTERVAL_S / 2


async def test_batches_under_load_start_at_least_the_interval_apart_and_a_lone_input_at_once() -> None:
    """A batch asked for within `MIN_BATCH_INTERVAL_S` of the last one's start waits for the interval
    (inputs that come meanwhile join it); one asked for later, as a lone call's next frame is,
    starts at once."""
    batcher = TurnBatcher(spaced_from_per_s=0)  # as at any rate above SPACED_FROM_INPUTS_PER_S
    # each round: the first input at once (nothing ran just before), then the two given right after
    # it put off to the interval's end, in one batch; the rounds 12 ms apart, as a lone caller's
    # frames are 20 ms apart
    starts, asked = await _batch_starts(batcher, rounds=2, gap_s=MIN_BATCH_INTERVAL_S * 3)
    assert len(starts) == 4 and batcher.stats.batches == 4 and batcher.stats.sessions_last == 2
    for first, put_off in (starts[0:2], starts[2:4]):
        assert put_off - first >= MIN_BATCH_INTERVAL_S * 0.9
    assert starts[2] - asked[1] < MIN_BATCH_INTERVAL_S / 2  # not put off
