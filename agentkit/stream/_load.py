"""`LoadMonitor`: is this process too busy to take another call?

One event loop carries every call of a process. Past its capacity, each callback waits for the ones
queued before it, so *every* call's audio arrives late, not just the newest one's. The monitor
measures that directly and says when to turn new callers away (`SessionHost` refuses them with
`busy`), so that the calls already in progress keep their quality.

Three figures, each a moving average over recent probes (an exponentially weighted mean; lag and
CPU over about the last `smoothing_samples`, 20: two seconds on an idle loop, in which each probe
weighs 1/20; media threads over the last `media_smoothing_samples`, 10). Each probe counts once
however long it took, so one long stall is one bad sample among twenty: overload is lag that
persists, not a hiccup.

- `lag_ms`: how late the loop wakes up. A task sleeps `interval_ms` on the injected clock, again and
  again, and records by how much each sleep overshot its deadline. An idle loop wakes within a
  millisecond; a saturated one wakes late by whatever is queued ahead of it, and that grows without
  bound as work arrives faster than the loop runs it.
- `cpu_cores`: the process's CPU time (`time.process_time`, every thread: model inference in the
  executor counts) over the same wall time, in cores.
- `media_busy`: how much of the machine the two threads every frame passes through (the event
  loop and the audio thread, `agentkit._executor`) demand, in cores: their CPU time *plus the time
  they were ready to run but waited for a core* (Linux's per-thread schedstat; elsewhere CPU time
  alone), over wall time. This is the leading signal. It grows in proportion to the calls carried,
  before any lag shows: the two threads take turns on the GIL, so together they saturate near one
  core, and when other processes (another worker, a model) keep the cores busy, the wait for a core
  counts too. Lag, by contrast, only rises once the loop is already saturated, by which time a
  burst of callers has been let in and every call is late (measured: `docs/benchmarks.md`).

```
       lag_ms > max_loop_lag_ms  or  cpu_cores > max_cpu_cores  or  media_busy > max_media_busy
   ┌────────┐ ───────────────────────────────────────────────────────► ┌────────────┐
   │ normal │                                                          │ overloaded │
   └────────┘ ◄─────────────────────────────────────────────────────── └────────────┘
       lag_ms < max_loop_lag_ms x 0.5  and  cpu_cores < max_cpu_cores x 0.8
                                       and  media_busy < max_media_busy x 0.9
```

The gap between the two thresholds is the hysteresis: admitting calls again must not push the
process straight back over. Lag recovers at half its threshold because it grows steeply near
saturation (so half the lag is only a little less load); CPU and the media threads' demand grow in
proportion to load, so 80 % (CPU) and 90 % (media threads, a noisier figure held near the threshold
by the calls it admitted) of their thresholds leave room for a few calls.

The default `max_media_busy` (`DEFAULT_MAX_MEDIA_BUSY`, 1.0) says: the two threads want more than
the one core they can use between them. On the 2-core machine of docs/benchmarks.md that is where a
worker's calls start to get late: one worker at 0.85 kept its p95 end of speech to reply at 536 ms,
at 1.11 it was 599 ms; with two workers (and the load generator) on the two cores, 0.94 gave 526 ms
and 1.24 gave 557 ms. It is smoothed over ten probes (a second), which trails a burst of callers,
each of whom adds load from the first frame: so a new session is judged by the demand *projected*
onto the sessions open now (`refuses`: `media_busy` x sessions now / the sessions it reflects).
Measured with bursts of 150–400 calls within 8 s, admitted calls kept a p95 within 40 ms of the
bench's bar (550 ms) where, unrefused, every call's replies came seconds late.

The default `max_loop_lag_ms` (`DEFAULT_MAX_LOOP_LAG_MS`, 150 ms) is chosen so that an idle or
moderately loaded server is never refused: such a loop wakes within a few milliseconds (at 90 %
busy, queueing theory puts the wait near nine times a typical callback of a few ms: tens of ms).
150 ms of smoothed lag is a loop that is saturated, and 150 ms is also ITU-T G.114's limit for
one-way delay in a conversation that still feels natural: past it every call on this process is
audibly worse, which is exactly what refusing new ones prevents. A one-off stall does not trip it:
a 1 s pause (warming a model up on the loop, a garbage collection) moves the figure by 50 ms, and
it takes a single stall of over 3 s to reach 150. Lag that persists does: probes waking 300 ms late
trip it after 14 of them (about 6 s), 1 s late after 4; from 300 ms it recovers after 27 probes
of an idle loop (under 3 s).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from agentkit._executor import audio_thread_ids
from agentkit._tasks import TaskSet
from agentkit.clock import Clock, MonotonicClock
from agentkit.exceptions import ConfigError

__all__ = [
    "DEFAULT_MAX_LOOP_LAG_MS",
    "DEFAULT_MAX_MEDIA_BUSY",
    "LoadMonitor",
    "OverloadCause",
    "media_threads_time",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_LOOP_LAG_MS = 150.0
"""Smoothed event-loop lag above which a process takes no new sessions (see the module docstring)."""

DEFAULT_MAX_MEDIA_BUSY = 1.0
"""Smoothed demand of the event loop and audio threads (cores) above which a process takes no new
sessions (see the module docstring)."""

LAG_RECOVERY_FRACTION = 0.5
"""An overloaded monitor recovers once `lag_ms` is under this fraction of `max_loop_lag_ms`..."""
CPU_RECOVERY_FRACTION = 0.8
"""... and `cpu_cores` is under this fraction of `max_cpu_cores`..."""
MEDIA_RECOVERY_FRACTION = 0.9
"""... and `media_busy` under this fraction of `max_media_busy`."""

PROJECTION_FROM = 0.5
"""`media_busy` is projected onto the sessions open now (`LoadMonitor.projected_media_busy`) from
this fraction of `max_media_busy` up..."""
PROJECTION_MAX = 1.5
"""... by at most this factor."""

OverloadCause = Literal["loop_lag", "cpu", "media_threads"]
"""What made a monitor overloaded: the event loop's lag, the process's CPU use, or the demand of
the threads that carry the media (event loop and audio thread)."""


def _schedstat_s(native_id: int) -> float | None:
    """CPU time plus run-queue wait of one of this process's threads, in seconds (None where Linux's
    per-thread schedstat cannot be read)."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat", "rb") as f:
            on_cpu_ns, waiting_ns, _ = f.read().split()
    except (OSError, ValueError):
        return None
    return (int(on_cpu_ns) + int(waiting_ns)) / 1e9


def _thread_cpu_s(ident: int) -> float:
    """CPU time of one of this process's threads, where the platform can tell (else 0)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (AttributeError, OSError):  # no pthread_getcpuclockid (macOS), or the thread is gone
        return 0.0


def media_threads_time() -> float:
    """Seconds the calling thread (the event loop's, when the monitor's probe calls it) and the audio
    thread have run or waited to run; CPU time alone where schedstat is not available."""
    own = _schedstat_s(threading.get_native_id())
    total = time.thread_time() if own is None else own
    for ident, native_id in audio_thread_ids():
        demand = _schedstat_s(native_id)
        total += _thread_cpu_s(ident) if demand is None else demand
    return total


class LoadMonitor:
    """Measures the event loop's lag and the process's CPU use; says when the process is overloaded.

    `max_loop_lag_ms`: smoothed lag above which it is overloaded (None: lag never makes it so; the
    figure is still measured). `max_cpu_cores`: the same for CPU use, in cores (None: CPU never makes
    it so). `max_media_busy`: the same for the media threads' demand, in cores (None: never).
    `interval_ms`: how long each probing sleep is. `smoothing_samples`: how many recent probes the
    lag and CPU figures' moving average spans (each probe weighs `1 / smoothing_samples`);
    `media_smoothing_samples` the same for `media_busy`. `clock`: where the sleeps happen and wall
    time is read (default: the monotonic clock, which the event loop itself uses); `cpu_time`: the
    process's CPU seconds so far (default `time.process_time`); `media_time`: the media threads'
    seconds run or waited so far (default `media_threads_time`, called on the loop's thread). All
    three are injected so that tests can run on virtual time.

    `start()` runs the probe in a task of its own (named `load-monitor`); `aclose()` stops it.
    `observe()` folds in one measurement; the probe calls it, and so can a test.
    """

    def __init__(
        self,
        *,
        max_loop_lag_ms: float | None = DEFAULT_MAX_LOOP_LAG_MS,
        max_cpu_cores: float | None = None,
        max_media_busy: float | None = DEFAULT_MAX_MEDIA_BUSY,
        interval_ms: float = 100.0,
        smoothing_samples: int = 20,
        media_smoothing_samples: int = 10,
        clock: Clock | None = None,
        cpu_time: Callable[[], float] = time.process_time,
        media_time: Callable[[], float] = media_threads_time,
    ) -> None:
        if max_loop_lag_ms is not None and max_loop_lag_ms <= 0:
            raise ConfigError("max_loop_lag_ms must be positive (or None)", max_loop_lag_ms=max_loop_lag_ms)
        if max_cpu_cores is not None and max_cpu_cores <= 0:
            raise ConfigError("max_cpu_cores must be positive (or None)", max_cpu_cores=max_cpu_cores)
        if max_media_busy is not None and max_media_busy <= 0:
            raise ConfigError("max_media_busy must be positive (or None)", max_media_busy=max_media_busy)
        if interval_ms <= 0 or smoothing_samples < 1 or media_smoothing_samples < 1:
            raise ConfigError("interval_ms must be positive and the smoothing samples at least 1")
        self.max_loop_lag_ms = max_loop_lag_ms
        self.max_cpu_cores = max_cpu_cores
        self.max_media_busy = max_media_busy
        self.interval_ms = interval_ms
        self.smoothing_samples = smoothing_samples
        self.media_smoothing_samples = media_smoothing_samples
        self._clock: Clock = clock or MonotonicClock()
        self._cpu_time = cpu_time
        self._media_time = media_time
        self._tasks = TaskSet("load")
        self.lag_ms = 0.0
        """Event-loop lag: how late a sleep wakes up, averaged over recent probes, in ms."""
        self.last_lag_ms = 0.0
        """The lag of the latest probe alone, in ms."""
        self.cpu_cores = 0.0
        """The process's CPU use (all threads), smoothed like `lag_ms`, in cores (1.0: one core busy)."""
        self.media_busy = 0.0
        """The event loop's and audio thread's time run or waiting for a core, smoothed over
        `media_smoothing_samples` probes, in cores (see the module docstring)."""
        self.sessions_smoothed = 0.0
        """The sessions open, smoothed like `media_busy`: the load `media_busy` reflects."""
        self.count_sessions: Callable[[], int] | None = None
        """How many sessions are open now (the host that uses this monitor sets it); None: the
        demand is not projected onto sessions just admitted (`refuses`)."""
        self.overloaded = False
        """New sessions should be refused now (see the state diagram in the module docstring)."""
        self.cause: OverloadCause | None = None
        """Why it is overloaded (None while it is not)."""
        self.episodes = 0
        """How often it has become overloaded."""
        self.samples = 0
        """Measurements folded in so far."""

    @property
    def running(self) -> bool:
        """The probe task is running."""
        return len(self._tasks) > 0

    def figures(self) -> dict[str, object]:
        """The current figures, JSON-ready (what `/readyz` shows)."""
        return {
            "lag_ms": round(self.lag_ms, 1),
            "cpu_cores": round(self.cpu_cores, 2),
            "media_busy": round(self.media_busy, 2),
            "sessions_smoothed": round(self.sessions_smoothed, 1),
            "overloaded": self.overloaded,
            "cause": self.cause,
        }

    def start(self) -> None:
        """Start probing, from the running event loop (a second call does nothing)."""
        if not self.running:
            if self._tasks.closed:  # started again after `aclose()` (an app served twice)
                self._tasks = TaskSet("load")
            self._tasks.spawn(self._probe(), "monitor")

    async def aclose(self) -> None:
        """Stop probing; the figures keep their last values."""
        await self._tasks.aclose(1.0)

    async def _probe(self) -> None:
        interval_s = self.interval_ms / 1000
        woke_s, cpu_s, media_s = self._clock.now(), self._cpu_time(), self._media_time()
        while True:
            deadline_s = woke_s + interval_s
            await self._clock.sleep_until(deadline_s)
            now_s, cpu_now_s, media_now_s = self._clock.now(), self._cpu_time(), self._media_time()
            self.observe(
                lag_s=now_s - deadline_s,
                elapsed_s=now_s - woke_s,
                cpu_s=cpu_now_s - cpu_s,
                media_s=media_now_s - media_s,
                sessions=None if self.count_sessions is None else self.count_sessions(),
            )
            woke_s, cpu_s, media_s = now_s, cpu_now_s, media_now_s

    def observe(
        self,
        *,
        lag_s: float,
        elapsed_s: float,
        cpu_s: float,
        media_s: float = 0.0,
        sessions: int | None = None,
    ) -> None:
        """Fold in one probe: a sleep that covered `elapsed_s` of wall time (the wait and its lag),
        woke `lag_s` after its deadline, while the process used `cpu_s` of CPU time and the media
        threads ran or waited to run for `media_s`, with `sessions` open at its end."""
        if elapsed_s <= 0:
            return
        weight = 1.0 / self.smoothing_samples
        self.last_lag_ms = max(lag_s, 0.0) * 1000  # asyncio may wake a timer a hair early
        self.lag_ms += weight * (self.last_lag_ms - self.lag_ms)
        self.cpu_cores += weight * (max(cpu_s, 0.0) / elapsed_s - self.cpu_cores)
        media_weight = 1.0 / self.media_smoothing_samples
        self.media_busy += media_weight * (max(media_s, 0.0) / elapsed_s - self.media_busy)
        if sessions is not None:
            self.sessions_smoothed += media_weight * (sessions - self.sessions_smoothed)
        self.samples += 1
        self._judge()

    def projected_media_busy(self, sessions: int) -> float:
        """`media_busy` scaled to `sessions` open now: the smoothed figure trails a burst of
        callers by about a second, each of whom adds load from the first frame, so it is scaled by
        how many more sessions are open now than it reflects. Never scaled down, and only once the
        figure is half its threshold (below that, the loop's own fixed work would be scaled as if
        calls made it), by at most `PROJECTION_MAX` (a second's arrivals at a busy server)."""
        limit = self.max_media_busy
        if (
            limit is None
            or self.media_busy < limit * PROJECTION_FROM
            or self.sessions_smoothed < 1.0
            or sessions <= self.sessions_smoothed
        ):
            return self.media_busy
        return self.media_busy * min(sessions / self.sessions_smoothed, PROJECTION_MAX)

    def refuses(self, sessions: int) -> bool:
        """A new session should be turned away now, with `sessions` open: overloaded, or the one
        more would take the projected demand (`projected_media_busy`) over `max_media_busy`."""
        if self.overloaded:
            return True
        limit = self.max_media_busy
        return limit is not None and self.projected_media_busy(sessions + 1) > limit

    def _over(self, lag: float, cpu: float, media: float, *, strictly: bool) -> OverloadCause | None:
        """The first figure over (`strictly`) or at least at the given fraction of its threshold
        (None: all under, or unset)."""
        figures: tuple[tuple[OverloadCause, float, float | None, float], ...] = (
            ("loop_lag", self.lag_ms, self.max_loop_lag_ms, lag),
            ("cpu", self.cpu_cores, self.max_cpu_cores, cpu),
            ("media_threads", self.media_busy, self.max_media_busy, media),
        )
        for cause, value, limit, fraction in figures:
            if limit is not None and (value > limit * fraction if strictly else value >= limit * fraction):
                return cause
        return None

    def _judge(self) -> None:
        if not self.overloaded:
            cause = self._over(1.0, 1.0, 1.0, strictly=True)
            if cause is not None:
                self.overloaded, self.cause = True, cause
                self.episodes += 1
                logger.warning(
                    "overloaded (%s; event-loop lag %.0f ms, CPU %.2f cores, media threads %.2f): "
                    "new sessions are refused until the load eases; open ones go on",
                    cause,
                    self.lag_ms,
                    self.cpu_cores,
                    self.media_busy,
                )
            return
        still = self._over(
            LAG_RECOVERY_FRACTION, CPU_RECOVERY_FRACTION, MEDIA_RECOVERY_FRACTION, strictly=False
        )
        if still is not None:
            self.cause = still
            return
        self.overloaded, self.cause = False, None
        logger.warning(
            "load eased (event-loop lag %.0f ms, CPU %.2f cores, media threads %.2f): new sessions "
            "are admitted again",
            self.lag_ms,
            self.cpu_cores,
            self.media_busy,
        )
