"""`LoadMonitor`: is this process too busy to take another call?

One event loop carries every call of a process. Past its capacity, each callback waits for the ones
queued before it, so *every* call's audio arrives late, not just the newest one's. The monitor
measures that directly and says when to turn new callers away (`SessionHost` refuses them with
`busy`), so that the calls already in progress keep their quality.

Two figures, each a moving average over about the last `smoothing_samples` probes (20: two seconds
on an idle loop; an exponentially weighted mean in which each probe weighs 1/20). Each probe counts
once however long it took, so one long stall is one bad sample among twenty: overload is lag that
persists, not a hiccup.

- `lag_ms`: how late the loop wakes up. A task sleeps `interval_ms` on the injected clock, again and
  again, and records by how much each sleep overshot its deadline. An idle loop wakes within a
  millisecond; a saturated one wakes late by whatever is queued ahead of it, and that grows without
  bound as work arrives faster than the loop runs it.
- `cpu_cores`: the process's CPU time (`time.process_time`, every thread: model inference in the
  executor counts) over the same wall time, in cores.

```
              lag_ms > max_loop_lag_ms  or  cpu_cores > max_cpu_cores
   ┌────────┐ ───────────────────────────────────────────────────────► ┌────────────┐
   │ normal │                                                          │ overloaded │
   └────────┘ ◄─────────────────────────────────────────────────────── └────────────┘
              lag_ms < max_loop_lag_ms x 0.5  and  cpu_cores < max_cpu_cores x 0.8
```

The gap between the two thresholds is the hysteresis: admitting calls again must not push the
process straight back over. Lag recovers at half its threshold because it grows steeply near
saturation (so half the lag is only a little less load); CPU grows in proportion to load, so 80 %
of its threshold leaves room for a few calls.

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
import time
from collections.abc import Callable
from typing import Literal

from agentkit._tasks import TaskSet
from agentkit.clock import Clock, MonotonicClock
from agentkit.exceptions import ConfigError

__all__ = ["DEFAULT_MAX_LOOP_LAG_MS", "LoadMonitor", "OverloadCause"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_LOOP_LAG_MS = 150.0
"""Smoothed event-loop lag above which a process takes no new sessions (see the module docstring)."""

LAG_RECOVERY_FRACTION = 0.5
"""An overloaded monitor recovers once `lag_ms` is under this fraction of `max_loop_lag_ms`..."""
CPU_RECOVERY_FRACTION = 0.8
"""... and `cpu_cores` is under this fraction of `max_cpu_cores`."""

OverloadCause = Literal["loop_lag", "cpu"]
"""What made a monitor overloaded: the event loop's lag, or the process's CPU use."""


class LoadMonitor:
    """Measures the event loop's lag and the process's CPU use; says when the process is overloaded.

    `max_loop_lag_ms`: smoothed lag above which it is overloaded (None: lag never makes it so; the
    figure is still measured). `max_cpu_cores`: the same for CPU use, in cores (None: CPU never makes
    it so). `interval_ms`: how long each probing sleep is. `smoothing_samples`: how many recent
    probes both figures' moving average spans (each probe weighs `1 / smoothing_samples`). `clock`:
    where the sleeps happen and wall time is read (default: the monotonic clock, which the event loop
    itself uses); `cpu_time`: the process's CPU seconds so far (default `time.process_time`). Both
    are injected so that tests can run on virtual time.

    `start()` runs the probe in a task of its own (named `load-monitor`); `aclose()` stops it.
    `observe()` folds in one measurement; the probe calls it, and so can a test.
    """

    def __init__(
        self,
        *,
        max_loop_lag_ms: float | None = DEFAULT_MAX_LOOP_LAG_MS,
        max_cpu_cores: float | None = None,
        interval_ms: float = 100.0,
        smoothing_samples: int = 20,
        clock: Clock | None = None,
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        if max_loop_lag_ms is not None and max_loop_lag_ms <= 0:
            raise ConfigError("max_loop_lag_ms must be positive (or None)", max_loop_lag_ms=max_loop_lag_ms)
        if max_cpu_cores is not None and max_cpu_cores <= 0:
            raise ConfigError("max_cpu_cores must be positive (or None)", max_cpu_cores=max_cpu_cores)
        if interval_ms <= 0 or smoothing_samples < 1:
            raise ConfigError("interval_ms must be positive and smoothing_samples at least 1")
        self.max_loop_lag_ms = max_loop_lag_ms
        self.max_cpu_cores = max_cpu_cores
        self.interval_ms = interval_ms
        self.smoothing_samples = smoothing_samples
        self._clock: Clock = clock or MonotonicClock()
        self._cpu_time = cpu_time
        self._tasks = TaskSet("load")
        self.lag_ms = 0.0
        """Event-loop lag: how late a sleep wakes up, averaged over recent probes, in ms."""
        self.last_lag_ms = 0.0
        """The lag of the latest probe alone, in ms."""
        self.cpu_cores = 0.0
        """The process's CPU use (all threads), smoothed like `lag_ms`, in cores (1.0: one core busy)."""
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
        woke_s, cpu_s = self._clock.now(), self._cpu_time()
        while True:
            deadline_s = woke_s + interval_s
            await self._clock.sleep_until(deadline_s)
            now_s, cpu_now_s = self._clock.now(), self._cpu_time()
            self.observe(lag_s=now_s - deadline_s, elapsed_s=now_s - woke_s, cpu_s=cpu_now_s - cpu_s)
            woke_s, cpu_s = now_s, cpu_now_s

    def observe(self, *, lag_s: float, elapsed_s: float, cpu_s: float) -> None:
        """Fold in one probe: a sleep that covered `elapsed_s` of wall time (the wait and its lag),
        woke `lag_s` after its deadline, while the process used `cpu_s` of CPU time."""
        if elapsed_s <= 0:
            return
        weight = 1.0 / self.smoothing_samples
        self.last_lag_ms = max(lag_s, 0.0) * 1000  # asyncio may wake a timer a hair early
        self.lag_ms += weight * (self.last_lag_ms - self.lag_ms)
        self.cpu_cores += weight * (max(cpu_s, 0.0) / elapsed_s - self.cpu_cores)
        self.samples += 1
        self._judge()

    def _judge(self) -> None:
        lag_over = self.max_loop_lag_ms is not None and self.lag_ms > self.max_loop_lag_ms
        cpu_over = self.max_cpu_cores is not None and self.cpu_cores > self.max_cpu_cores
        if not self.overloaded:
            if lag_over or cpu_over:
                self.overloaded, self.cause = True, "loop_lag" if lag_over else "cpu"
                self.episodes += 1
                logger.warning(
                    "overloaded (event-loop lag %.0f ms, CPU %.2f cores): new sessions are refused "
                    "until the load eases; open ones go on",
                    self.lag_ms,
                    self.cpu_cores,
                )
            return
        lag_high = (
            self.max_loop_lag_ms is not None and self.lag_ms >= self.max_loop_lag_ms * LAG_RECOVERY_FRACTION
        )
        cpu_high = (
            self.max_cpu_cores is not None and self.cpu_cores >= self.max_cpu_cores * CPU_RECOVERY_FRACTION
        )
        if lag_high or cpu_high:
            self.cause = "loop_lag" if lag_high else "cpu"
            return
        self.overloaded, self.cause = False, None
        logger.warning(
            "load eased (event-loop lag %.0f ms, CPU %.2f cores): new sessions are admitted again",
            self.lag_ms,
            self.cpu_cores,
        )
