"""`GET /metrics`: the server's figures in Prometheus' text format, as a FastAPI router.

Series:

- `agentkit_sessions_active{channel}` gauge: open sessions by channel (a channel seen once stays
  listed, at 0 when idle);
- `agentkit_sessions_refused_total{reason}` counter: callers refused or cut off, by reason (the
  stream's `Refusals`: `busy`, `over_capacity`, `too_many_sessions`, `no_audio`, ...);
- `agentkit_turn_end_of_turn_seconds`, `agentkit_turn_stt_seconds`,
  `agentkit_turn_llm_first_token_seconds`, `agentkit_turn_tts_first_audio_seconds`,
  `agentkit_turn_voice_to_voice_seconds` histograms: an Agent's per-turn latencies (from its
  `TurnMetricsReady` events; a figure a turn did not have is not observed);
- `agentkit_tool_calls_total{tool,outcome}` counter: tool calls by name and outcome (`finished`,
  `failed`, `cancelled`; from `ToolCallFinished`);
- `agentkit_provider_errors_total{provider,stage,kind}` counter: failed provider calls that cost a
  turn its stage (from `ProviderFailed`; `kind` is `timeout`, `http_<status>`, `error` or
  `internal`);
- `agentkit_event_loop_lag_seconds`, `agentkit_process_cpu_cores`, `agentkit_media_threads_busy`,
  `agentkit_overloaded` gauges: the process's `LoadMonitor` (the signals load-aware admission and
  `/readyz` act on; with several workers, the worst worker's lag and media threads' demand, the
  workers' CPU summed, 1 if any worker is overloaded);
- `agentkit_vad_batches_total` / `agentkit_vad_batch_sessions_total` counters: batched VAD runs and
  the session chunks they carried (their ratio is the mean batch size), and
  `agentkit_vad_batch_sessions_max` gauge: the largest batch so far;
- `agentkit_frames_dropped_total{what}` counter: output dropped on the way to callers
  (`reply_audio`: queued reply audio a barge-in or a full queue dropped; `additional_outputs`:
  outputs a slow `output_stream` reader missed).

Figures kept by live objects (sessions, refusals, load, VAD batches, drops) are copied into the
series by `refresh()`, at each scrape and, with several workers, every second. With several
workers (`agentkit run --workers N` sets `PROMETHEUS_MULTIPROC_DIR`), prometheus-client's
multi-process mode keeps each worker's values in files there and a scrape on any worker sums them
(gauges as said above), so a load balancer's scrape sees the whole server.

Labels carry our own names only (channels, reasons, tool and provider names), never a caller's id or
words. The router is guarded like the conversation API (`agentkit.server._api`): a bearer token, or
this machine only with `AGENTKIT_API_LOCAL=1`; otherwise 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter as Tally
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Depends, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from agentkit._tasks import TaskSet
from agentkit.agent import Agent, AgentEvent, ProviderFailed, ToolCallFinished, TurnMetricsReady
from agentkit.server._api import _guard
from agentkit.stream import SessionHost
from agentkit.stream._turn_batch import VADBatchStats, vad_batch_stats

__all__ = ["LATENCY_BUCKETS_S", "ServerMetrics", "metrics_api", "multiprocess_dir"]

LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""Histogram buckets for turn latencies: a snappy voice turn is well under a second, 5 s is lost."""

REFRESH_INTERVAL_S = 1.0
"""With several workers, how often each copies its live figures into the shared files."""

_TURN_FIGURES = {  # TurnMetrics field (ms) -> histogram name (s)
    "end_of_turn_ms": ("agentkit_turn_end_of_turn_seconds", "Caller's speech end to end-of-turn decision."),
    "stt_ms": ("agentkit_turn_stt_seconds", "Speech-to-text time of a turn."),
    "llm_ttft_ms": ("agentkit_turn_llm_first_token_seconds", "LLM call to its first token."),
    "tts_ttfa_ms": ("agentkit_turn_tts_first_audio_seconds", "TTS call to its first audio."),
    "voice_to_voice_ms": ("agentkit_turn_voice_to_voice_seconds", "Caller's speech end to reply audio."),
}


def multiprocess_dir() -> Path | None:
    """prometheus-client's multi-process directory (`PROMETHEUS_MULTIPROC_DIR`), if set and there."""
    where = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(where) if where and Path(where).is_dir() else None


class ServerMetrics:
    """One app's series: the stream's live figures copied in by `refresh`, an Agent's events fed
    through `observe`. With `multiprocess` (default: when `PROMETHEUS_MULTIPROC_DIR` is set) a
    scrape sums every worker's values from that directory."""

    def __init__(self, stream: SessionHost, *, multiprocess: Path | None = None) -> None:
        self._stream = stream
        self._dir = multiprocess if multiprocess is not None else multiprocess_dir()
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._active = Gauge(
            "agentkit_sessions_active",
            "Open sessions.",
            ["channel"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._refused = Counter(
            "agentkit_sessions_refused",
            "Callers refused or cut off, by reason.",
            ["reason"],
            registry=registry,
        )
        self._turns = {
            field: Histogram(name, doc, buckets=LATENCY_BUCKETS_S, registry=registry)
            for field, (name, doc) in _TURN_FIGURES.items()
        }
        self._tool_calls = Counter(
            "agentkit_tool_calls", "Tool calls by outcome.", ["tool", "outcome"], registry=registry
        )
        self._provider_errors = Counter(
            "agentkit_provider_errors",
            "Provider failures that cost a turn its stage.",
            ["provider", "stage", "kind"],
            registry=registry,
        )
        self._lag = Gauge(
            "agentkit_event_loop_lag_seconds",
            "Smoothed event-loop lag (the worst worker's).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._cpu = Gauge(
            "agentkit_process_cpu_cores",
            "CPU used, in cores (all workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._media = Gauge(
            "agentkit_media_threads_busy",
            "Smoothed demand of the event loop and audio threads, in cores (the busiest worker's).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._overloaded = Gauge(
            "agentkit_overloaded",
            "1 while new sessions are refused for load (any worker).",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._vad_batches = Counter("agentkit_vad_batches", "Batched VAD model runs.", registry=registry)
        self._vad_chunks = Counter(
            "agentkit_vad_batch_sessions", "Session chunks scored by batched VAD runs.", registry=registry
        )
        self._vad_max = Gauge(
            "agentkit_vad_batch_sessions_max",
            "Most sessions in one batched turn-detection job.",
            registry=registry,
            multiprocess_mode="livemax",
        )
        self._dropped = Counter(
            "agentkit_frames_dropped", "Output dropped on its way to callers.", ["what"], registry=registry
        )
        self._channels: set[str] = set()
        self._seen: dict[tuple[str, ...], float] = {}  # live totals already added to counters

    # -- fed by events -----------------------------------------------------------------------------
    def observe(self, event: AgentEvent) -> None:
        """An `Agent.event_sinks` entry: counts the events the series above are made of."""
        if isinstance(event, TurnMetricsReady):
            for field, histogram in self._turns.items():
                value_ms = getattr(event.metrics, field)
                if value_ms is not None:
                    histogram.observe(value_ms / 1000)
        elif isinstance(event, ToolCallFinished):
            outcome = "cancelled" if event.cancelled else "failed" if event.is_error else "finished"
            self._tool_calls.labels(tool=event.name, outcome=outcome).inc()
        elif isinstance(event, ProviderFailed):
            self._provider_errors.labels(provider=event.provider, stage=event.stage, kind=_kind(event)).inc()

    # -- copied from live objects ------------------------------------------------------------------
    def refresh(self) -> None:
        """Copy the stream's live figures into the series (cheap; call from the event loop)."""
        stream = self._stream
        open_now = Tally(session.channel for session in list(stream.sessions.values()))
        self._channels.update(open_now)
        for channel in self._channels:
            self._active.labels(channel=channel).set(open_now[channel])
        for reason, count in stream.refused.counts().items():
            self._advance(self._refused.labels(reason=reason), ("refused", reason), count)
        load = stream.load
        if load is not None:
            self._lag.set(load.lag_ms / 1000)
            self._cpu.set(load.cpu_cores)
            self._media.set(load.media_busy)
            self._overloaded.set(1 if load.overloaded else 0)
        try:
            vad = vad_batch_stats()  # the serving loop's batcher
        except RuntimeError:  # no running loop (a scrape from synchronous code): nothing batched here
            vad = VADBatchStats()
        self._advance(self._vad_batches, ("vad_calls",), vad.vad_calls)
        self._advance(self._vad_chunks, ("vad_chunks",), vad.chunks)
        self._vad_max.set(vad.sessions_max)
        for what, count in stream.dropped_frames().items():
            self._advance(self._dropped.labels(what=what), ("dropped", what), count)

    def _advance(self, counter: Counter, key: tuple[str, ...], total: float) -> None:
        """Bring `counter` up to a live running `total` (counters only go up: a lower total is a
        restarted source, counted from zero again)."""
        seen = self._seen.get(key, 0.0)
        if total < seen:
            seen = 0.0
        if total > seen:
            counter.inc(total - seen)
        self._seen[key] = total

    @contextlib.asynccontextmanager
    async def serving(self, agent: Agent | None) -> AsyncIterator[None]:
        """While the app serves: `agent`'s events feed the series (added to `agent.event_sinks`, and
        removed after, so an agent served by several apps in turn feeds the one serving it), and
        with several workers the live figures are refreshed every `REFRESH_INTERVAL_S` (a scrape
        lands on one worker but reports them all, so each keeps its files current)."""
        if agent is not None:
            agent.event_sinks.append(self.observe)  # every call's copy of the agent shares the list
        tasks = TaskSet("metrics")
        if self.multiprocess:
            tasks.spawn(self._refresh_forever(), "metrics-refresh")
        try:
            yield
        finally:
            await tasks.aclose()
            if agent is not None:
                with contextlib.suppress(ValueError):
                    agent.event_sinks.remove(self.observe)

    async def _refresh_forever(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(REFRESH_INTERVAL_S)

    @property
    def multiprocess(self) -> bool:
        return self._dir is not None

    def exposition(self) -> bytes:
        """The series in Prometheus' text format: this process's, or every worker's summed."""
        self.refresh()
        if self._dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self._dir))  # type: ignore[no-untyped-call]
        return generate_latest(merged)


def _kind(event: ProviderFailed) -> str:
    if event.code == "provider_timeout":
        return "timeout"
    if event.status is not None:
        return f"http_{event.status}"
    return "internal" if event.code == "internal" else "error"


def metrics_api(metrics: ServerMetrics, *, token: str | None = None, local: bool = False) -> APIRouter:
    """A router serving `GET /metrics`, guarded like `conversation_api` (same `token` and `local`)."""
    router = APIRouter(tags=["metrics"], dependencies=[Depends(_guard(token, local))])

    @router.get("/metrics", response_class=Response)
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
