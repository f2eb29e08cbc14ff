"""`TurnBatcher`: every session's turn detection in one audio-thread job, one VAD call per round.

Why: with one executor hop and one model call per session per frame, a process serving 150 phone
calls makes 7,500 hops and 4,700 Silero calls a second. Each hop costs the event loop a future, a
thread wake-up and a callback, and each call costs the model a fixed overhead that dwarfs the
arithmetic on 512 samples. Batched, the loop pays one hop for all the sessions whose audio arrived
meanwhile, and the model scores their chunks together (`BatchedVAD.probabilities`).

```
session A ─► process(vad, detector, samples) ─┐          ┌─ one audio-thread job ──────────────────┐
session B ─► process(...) ────────────────────┼─► jobs ─►│ split each input into whole chunks       │
session C ─► process(...) ────────────────────┘          │ round k: the k-th chunk of every session │
                                                          │   → one VAD call per model → step each   │
   each awaits its own events ◄──── results ◄─────────────│ check_partial per session                │
                                                          └──────────────────────────────────────────┘
```

No tick: a job submitted while nothing runs starts at once (a lone call adds no latency); jobs that
arrive while a batch runs wait for it and then go together, so batches grow with the load by
themselves. Under load, though, one batch's start is at least `MIN_BATCH_INTERVAL_S` (4 ms) after the
last one's: phone calls that began at random times send their 20 ms frames at every phase of the
tick, and a batch started the moment the last one ended took the few frames that came during it, so
the fixed costs per batch (the hand-over to the audio thread and back, a model call, the GIL passing
between the threads) were paid hundreds of times a second. At 300 echo calls on two workers the
spacing took 9 % less CPU with frames spread over the tick, and 13 % less with every call's frame on
the same tick (docs/benchmarks.md). Inputs wait at most 4 ms more, and only while batches run back
to back at `SPACED_FROM_INPUTS_PER_S` inputs a second or more (about 30 calls): below that rate the
fixed costs are small, and ten calls whose frames came together waited 3 ms more at the median.

A session's k-th chunk goes in round k because its recurrent VAD state must advance in order;
sessions with fewer chunks drop out of the later rounds.

The job queue is bounded by the sessions: each session awaits its events before it sends its next
input (`TurnTakingHandler.receive`), or, where nothing after an input needs awaiting, gives it with a
callback instead (`convert_and_process_soon`; `TurnTakingHandler.receive_converting_nowait`, which
has at most a few inputs in flight and then waits); a second input of a detector already in a batch
waits for the next one, and a detector's results come back in the order it gave them.

One session's failure (its input, its VAD stream, its state machine) fails only its own await (or
callback); a failed batched VAD call is retried stream by stream, so the culprit alone gets the error.
A cancelled await is dropped if its job has not started, and its events are dropped if it has.

The batcher belongs to the event loop it runs on (`turn_batcher()`): its futures are that loop's,
and it binds to that loop on first use (Python 3.11 asks the OS for its process id each time the
running loop is looked up, a system call per input message saved).
`stats` says how well batching works (`vad_batch_stats()` for the running loop's, e.g. for metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from agentkit._executor import audio_executor
from agentkit.audio import Samples
from agentkit.providers.vad import VAD, VADStream
from agentkit.stream._turn import TurnDetector, TurnEvent, _block_db

__all__ = ["TurnBatcher", "VADBatchStats", "turn_batcher", "vad_batch_stats"]

logger = logging.getLogger(__name__)

MIN_BATCH_INTERVAL_S = 0.004
"""Under load, the least time from one batch's start to the next's (see the module docstring)."""

SPACED_FROM_INPUTS_PER_S = 1000.0
"""The input rate (session inputs scored a second, over the last second or more) from which batches
are spaced: about 30 phone calls on one event loop. Below it a batch's fixed costs are small, and
spacing would only make inputs wait."""


@dataclass(frozen=True, slots=True)
class VADBatchStats:
    """Counters of one `TurnBatcher` since it was created (a snapshot)."""

    batches: int = 0
    """Audio-thread jobs run, each for every session that had input waiting."""
    jobs: int = 0
    """Session inputs handled in them (one input frame each, usually)."""
    sessions_last: int = 0
    """Sessions in the latest batch."""
    sessions_max: int = 0
    """Most sessions in one batch."""
    vad_calls: int = 0
    """Model calls made (one per round and VAD model, more when a batched call failed)."""
    chunks: int = 0
    """Chunks scored; `chunks / vad_calls` is the mean VAD batch size."""
    failed_jobs: int = 0
    """Inputs whose processing raised (their sessions got the error)."""

    @property
    def mean_sessions(self) -> float:
        """Sessions per batch on average (0 before the first batch)."""
        return self.jobs / self.batches if self.batches else 0.0


class _Job:
    """One session input in a batch. A plain class with slots: one is made per input message, and a
    dataclass's default factories cost more than the rest of its making."""

    __slots__ = ("chunks", "convert", "detector", "done", "error", "events", "future", "samples", "vad")

    def __init__(
        self,
        vad: VAD,
        detector: TurnDetector,
        samples: Samples,
        future: asyncio.Future[list[TurnEvent]] | None,  # None: `done` is called instead
        *,
        convert: Callable[[], Samples] | None = None,  # gives `samples`, on the audio thread
        done: Callable[[list[TurnEvent] | BaseException, int], None] | None = None,  # on the loop, once run
    ) -> None:
        self.vad = vad
        self.detector = detector
        self.samples = samples
        self.future = future
        self.convert = convert
        self.done = done
        # filled in on the audio thread:
        self.chunks: list[Samples] = []
        self.events: list[TurnEvent] = []
        self.error: BaseException | None = None


@dataclass(slots=True)
class _Counts:
    vad_calls: int = 0
    chunks: int = 0


class TurnBatcher:
    """Runs `TurnDetector.process` for many sessions at once on the audio thread (module docstring)."""

    def __init__(self, *, spaced_from_per_s: float = SPACED_FROM_INPUTS_PER_S) -> None:
        """`spaced_from_per_s`: the input rate from which batches are spaced (see the module
        docstring); 0 spaces them always."""
        self._waiting: deque[_Job] = deque()
        self._running = False  # a batch is on the audio thread
        self._batches = self._jobs = self._sessions_last = self._sessions_max = 0
        self._vad_calls = self._chunks = self._failed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: set[int] = set()  # ids of detectors whose inputs wait (`hold`)
        self._last_start = float("-inf")  # loop time of the latest batch's start
        self._timer: asyncio.TimerHandle | None = None  # a start put off (`_kick`)
        self._spaced_from_per_s = spaced_from_per_s
        self._spaced = spaced_from_per_s <= 0  # the input rate calls for spacing (measured each second)
        self._rate_since = 0.0  # loop time from which the input rate is being measured
        self._rate_jobs = 0  # `_jobs` then

    @property
    def stats(self) -> VADBatchStats:
        return VADBatchStats(
            batches=self._batches,
            jobs=self._jobs,
            sessions_last=self._sessions_last,
            sessions_max=self._sessions_max,
            vad_calls=self._vad_calls,
            chunks=self._chunks,
            failed_jobs=self._failed,
        )

    async def process(self, vad: VAD, detector: TurnDetector, samples: Samples) -> list[TurnEvent]:
        """`detector.process(samples)`, run with the other sessions' waiting inputs; `detector`'s VAD
        stream must come from `vad`. Raises what processing this input raised."""
        return await self._submit(_Job(vad, detector, samples, self._future()))

    async def convert_and_process(
        self, vad: VAD, detector: TurnDetector, convert: Callable[[], Samples]
    ) -> tuple[list[TurnEvent], int]:
        """`process(vad, detector, convert())`, with `convert` (the session's decoding and
        resampling of one input message) run in the same audio-thread job: the event loop neither
        does that work nor gives up the GIL for it (numpy's table look-up and soxr release it even
        for 160 samples, and getting it back waits for the audio thread's Python). Returns the
        events and the number of samples `convert` gave."""
        job = _Job(vad, detector, _NO_SAMPLES, self._future(), convert=convert)
        events = await self._submit(job)
        return events, job.samples.shape[0]

    def convert_and_process_soon(
        self,
        vad: VAD,
        detector: TurnDetector,
        convert: Callable[[], Samples],
        done: Callable[[list[TurnEvent] | BaseException, int], None],
    ) -> None:
        """`convert_and_process` without waiting for it: `done(events, num_samples)` (or
        `done(error, 0)`) is called on the event loop once the job has run, in the order the jobs of
        one detector were given, and is not called if the loop shuts down first. Nothing is
        suspended or woken up per input, so a caller that needs nothing from the events before its
        next input (`TurnTakingHandler.receive_converting_nowait`) saves a task switch per message."""

        self._loop_now()
        self._waiting.append(_Job(vad, detector, _NO_SAMPLES, None, convert=convert, done=done))
        if not self._running:
            self._kick()

    def hold(self, detector: TurnDetector) -> None:
        """Keep `detector`'s waiting inputs out of the batches until `release`: its state stays
        as its last job left it while the loop works on that job's events."""
        self._held.add(id(detector))

    def release(self, detector: TurnDetector) -> None:
        """Let `detector`'s inputs into the batches again."""
        self._held.discard(id(detector))
        if self._waiting and not self._running:
            self._kick()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this batcher runs on (bound on first use)."""
        return self._loop_now()

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _future(self) -> asyncio.Future[list[TurnEvent]]:
        return self._loop_now().create_future()

    async def _submit(self, job: _Job) -> list[TurnEvent]:
        assert job.future is not None
        self._waiting.append(job)
        if not self._running:
            self._kick()
        return await job.future

    def _kick(self) -> None:
        """Start a batch now, or, under load (the last one started under `MIN_BATCH_INTERVAL_S`
        ago), once that interval is over: the inputs arriving meanwhile go in the same batch."""
        if self._timer is not None:
            return
        loop = self._loop_now()
        wait = self._last_start + MIN_BATCH_INTERVAL_S - loop.time() if self._spaced else 0.0
        if wait > 0:
            self._timer = loop.call_later(wait, self._timed_start)
        else:
            self._start_batch()

    def _timed_start(self) -> None:
        self._timer = None
        if self._waiting and not self._running:
            self._start_batch()

    def _start_batch(self) -> None:
        batch: list[_Job] = []
        later: list[_Job] = []
        in_batch: set[int] = set()
        while self._waiting:
            job = self._waiting.popleft()
            if job.future is not None and job.future.done():  # its session stopped waiting (cancelled)
                continue
            if id(job.detector) in in_batch or id(job.detector) in self._held:
                later.append(job)  # a detector's inputs go in order, one per batch
            else:
                in_batch.add(id(job.detector))
                batch.append(job)
        self._waiting.extend(later)
        if not batch:
            return
        self._running = True
        loop = self._loop_now()
        now = self._last_start = loop.time()
        if now - self._rate_since >= 1.0:  # the input rate over the last second or more
            rate = (self._jobs - self._rate_jobs) / (now - self._rate_since)
            self._spaced = rate >= self._spaced_from_per_s
            self._rate_since, self._rate_jobs = now, self._jobs
        audio_executor().call(loop, _run_batch, batch, partial(self._finish_batch, batch))

    def _finish_batch(self, batch: list[_Job], result: _Counts | None, error: BaseException | None) -> None:
        """On the loop, once `_run_batch` has run (not at all if the loop closed first: then nobody
        is left to wait)."""
        self._running = False
        counts = result if result is not None else _Counts()
        self._batches += 1
        self._jobs += len(batch)
        self._sessions_last = len(batch)
        self._sessions_max = max(self._sessions_max, len(batch))
        self._vad_calls += counts.vad_calls
        self._chunks += counts.chunks
        for job in batch:
            job_error = job.error or error
            if job_error is not None:
                self._failed += 1
            if job.done is not None:
                try:
                    if job_error is not None:
                        job.done(job_error, 0)
                    else:
                        job.done(job.events, job.samples.shape[0])
                except Exception:  # a caller's bug must not stop the other sessions' results
                    logger.exception("turn batch: a result callback failed")
                continue
            assert job.future is not None
            if job.future.done():
                continue  # cancelled while its job ran: the events go nowhere
            if job_error is not None:
                job.future.set_exception(job_error)
            else:
                job.future.set_result(job.events)
        if self._waiting and not self._running:
            self._kick()


def _run_batch(batch: list[_Job]) -> _Counts:
    """The audio-thread job: split, score round by round, step, then check partial chunks."""
    counts = _Counts()
    for job in batch:
        try:
            if job.convert is not None:
                job.samples = job.convert()
            job.chunks = job.detector.split(job.samples)
        except Exception as exc:
            job.error = exc
    for k in range(max((len(job.chunks) for job in batch), default=0)):
        round_jobs = [job for job in batch if job.error is None and k < len(job.chunks)]
        by_vad: dict[int, list[_Job]] = {}
        for job in round_jobs:
            by_vad.setdefault(id(job.vad), []).append(job)
        for jobs in by_vad.values():
            _score_and_step(jobs, k, counts)
    for job in batch:
        if job.error is None and job.samples.shape[0]:
            try:
                event = job.detector.check_partial()
            except Exception as exc:
                job.error = exc
            else:
                if event is not None:
                    job.events.append(event)
    return counts


def _score_and_step(jobs: list[_Job], k: int, counts: _Counts) -> None:
    """Round `k` for the sessions of one VAD model: one call for their k-th chunks, then each steps."""
    chunks = [job.chunks[k] for job in jobs]
    probabilities = _score(jobs, chunks, counts)
    if probabilities is None:
        return
    counts.chunks += len(chunks)
    levels = _levels(jobs, chunks)
    for i, (job, chunk, p) in enumerate(zip(jobs, chunks, probabilities, strict=True)):
        if p is None:
            continue
        detector = job.detector
        try:
            if levels is not None and type(detector).step is TurnDetector.step:
                event = detector.step(chunk, p, levels[i])
            else:  # a subclass's own `step(chunk, p)` gets the call it was written for
                event = detector.step(chunk, p)
        except Exception as exc:
            job.error = exc
        else:
            if event is not None:
                job.events.append(event)


def _score(jobs: list[_Job], chunks: list[Samples], counts: _Counts) -> list[float | None] | None:
    """Each chunk's VAD probability: one batched call, or one call per stream when the model has no
    batched entry point or the batched call failed (then a failing stream's job gets its error and a
    None). None when the batch scored the wrong number of chunks (every job gets the error)."""
    streams: list[VADStream] = [job.detector.vad_stream for job in jobs]
    batched = getattr(jobs[0].vad, "probabilities", None) if len(jobs) > 1 else None
    if batched is not None:  # a `BatchedVAD`
        counts.vad_calls += 1
        scores: list[float] | None = None
        with contextlib.suppress(Exception):  # a failed call changed no state: the loop below finds why
            scores = list(batched(streams, chunks))
        if scores is not None and len(scores) != len(jobs):
            for job in jobs:  # the states moved on, but to what: these sessions cannot go on
                job.error = ValueError(f"the VAD scored {len(scores)} of {len(jobs)} chunks")
            return None
        if scores is not None:
            return [float(p) for p in scores]
    probabilities: list[float | None] = []
    for job, stream, chunk in zip(jobs, streams, chunks, strict=True):
        counts.vad_calls += 1
        try:
            probabilities.append(stream.probability(chunk))
        except Exception as exc:
            job.error = exc
            probabilities.append(None)
    return probabilities


def _levels(jobs: list[_Job], chunks: list[Samples]) -> list[list[float]] | None:
    """Every chunk's block levels (one list per chunk) in one numpy call, where the detectors share
    a block size (they do when they share a VAD; a chunk is four blocks, so their chunks are the same
    size too); None leaves each detector to measure its own."""
    block = jobs[0].detector.block_samples
    if len(jobs) == 1 or any(job.detector.block_samples != block for job in jobs):
        return None
    levels: list[list[float]] = _block_db(np.concatenate(chunks), block).reshape(len(chunks), -1).tolist()
    return levels


_NO_SAMPLES = np.zeros(0, dtype=np.float32)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TurnBatcher] = weakref.WeakKeyDictionary()


def turn_batcher() -> TurnBatcher:
    """The running event loop's batcher (created on first use)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = TurnBatcher()
    return batcher


def vad_batch_stats() -> VADBatchStats:
    """How turn detection has been batched on the running event loop so far (for metrics)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    return batcher.stats if batcher is not None else VADBatchStats()
