"""`GET /metrics`: the server's figures in Prometheus' text format, as a FastAPI router.

Series (each app has its own registry, so several apps in one process do not collide):

- `agentkit_sessions_active{channel}` gauge: open sessions by channel, read from the stream at
  scrape time (a channel seen once stays listed, at 0 when idle);
- `agentkit_sessions_refused_total{reason}` counter: callers refused or cut off, by reason (the
  stream's own `Refusals`, read at scrape time);
- `agentkit_turn_end_of_turn_seconds`, `agentkit_turn_stt_seconds`,
  `agentkit_turn_llm_first_token_seconds`, `agentkit_turn_tts_first_audio_seconds`,
  `agentkit_turn_voice_to_voice_seconds` histograms: an Agent's per-turn latencies (from its
  `TurnMetricsReady` events; a figure a turn did not have is not observed);
- `agentkit_tool_calls_total{tool,outcome}` counter: tool calls by name and outcome (`finished`,
  `failed`, `cancelled`; from `ToolCallFinished`).

Labels carry our own names only (channels, reasons, tool names), never a caller's id or words. The
router is guarded like the conversation API (`agentkit.server._api`): a bearer token, or this
machine only with `AGENTKIT_API_LOCAL=1`; otherwise 403.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentkit.agent import AgentEvent, ToolCallFinished, TurnMetricsReady
from agentkit.server._api import _guard
from agentkit.stream import SessionHost

__all__ = ["LATENCY_BUCKETS_S", "ServerMetrics", "metrics_api"]

LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
"""Histogram buckets for turn latencies: a snappy voice turn is well under a second, 5 s is lost."""

_TURN_FIGURES = {  # TurnMetrics field (ms) -> histogram name (s)
    "end_of_turn_ms": ("agentkit_turn_end_of_turn_seconds", "Caller's speech end to end-of-turn decision."),
    "stt_ms": ("agentkit_turn_stt_seconds", "Speech-to-text time of a turn."),
    "llm_ttft_ms": ("agentkit_turn_llm_first_token_seconds", "LLM call to its first token."),
    "tts_ttfa_ms": ("agentkit_turn_tts_first_audio_seconds", "TTS call to its first audio."),
    "voice_to_voice_ms": ("agentkit_turn_voice_to_voice_seconds", "Caller's speech end to reply audio."),
}


class ServerMetrics:
    """One app's registry: the stream's figures read at scrape time, an Agent's fed by `observe`."""

    def __init__(self, stream: SessionHost) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_StreamCollector(stream))
        self._turns = {
            field: Histogram(name, doc, buckets=LATENCY_BUCKETS_S, registry=self.registry)
            for field, (name, doc) in _TURN_FIGURES.items()
        }
        self._tool_calls = Counter(
            "agentkit_tool_calls", "Tool calls by outcome.", ["tool", "outcome"], registry=self.registry
        )

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

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


def metrics_api(metrics: ServerMetrics, *, token: str | None = None, local: bool = False) -> APIRouter:
    """A router serving `GET /metrics`, guarded like `conversation_api` (same `token` and `local`)."""
    router = APIRouter(tags=["metrics"], dependencies=[Depends(_guard(token, local))])

    @router.get("/metrics", response_class=Response)
    async def scrape() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


class _StreamCollector(Collector):
    """Open sessions by channel and refusals by reason, read from the stream when scraped."""

    def __init__(self, stream: SessionHost) -> None:
        self._stream = stream
        self._channels: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        open_now = Tally(session.channel for session in list(self._stream.sessions.values()))
        self._channels.update(open_now)
        active = GaugeMetricFamily("agentkit_sessions_active", "Open sessions.", labels=["channel"])
        for channel in sorted(self._channels):
            active.add_metric([channel], open_now[channel])
        yield active
        refused = CounterMetricFamily(
            "agentkit_sessions_refused", "Callers refused or cut off, by reason.", labels=["reason"]
        )
        for reason, count in self._stream.refused.counts().items():
            refused.add_metric([reason], count)
        yield refused
